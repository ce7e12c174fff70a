//! Kernel timestamps are `CLOCK_MONOTONIC`; people and backends want wall-clock time. The offset
//! between the two is taken once at start (injected, so tests fix it).

/// Converts `CLOCK_MONOTONIC` nanoseconds to Unix-epoch nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// realtime − monotonic, in nanoseconds.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// `CLOCK_MONOTONIC` now, in the kernel timestamps' units.
#[must_use]
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

impl WallClock {
    /// The offset of the running system, now.
    #[must_use]
    pub fn system() -> Self {
        Self {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }

    #[must_use]
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// realtime − monotonic, in nanoseconds (what recordings store).
    #[must_use]
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    #[must_use]
    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns).max(0) as u64
    }

    /// `HH:MM:SS.micros` (UTC) of a monotonic timestamp, for the console.
    #[must_use]
    pub fn time_of_day(&self, monotonic_ns: u64) -> String {
        let unix = self.unix_ns(monotonic_ns);
        let secs_of_day = (unix / 1_000_000_000) % 86_400;
        let micros = (unix % 1_000_000_000) / 1_000;
        format!(
            "{:02}:{:02}:{:02}.{micros:06}",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_time_of_day() {
        // 2026-11-23T11:06:43.123456Z is 1_795_345_603.123456 s after the epoch.
        let clock = WallClock::with_offset(1_795_345_603_000_000_000);
        assert_eq!(clock.time_of_day(123_456_789), "11:06:43.123456");
        assert_eq!(clock.unix_ns(5), 1_795_345_603_000_000_005);
    }
}
