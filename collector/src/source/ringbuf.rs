//! The live source: the kernel's `EVENTS` ring buffer. Records are handed on raw (the recorder
//! writes them as they are; the pipeline decodes them).
//!
//! Wake-ups are batched. A reader woken for every record pays a context switch per record, so
//! while records keep coming the reader polls the ring on a short timer (`POLL_PERIOD`) and tells
//! the probes so (`READER_POLLING` = 1): they then submit without waking it, and a record waits
//! at most one period. After `IDLE_POLLS` empty polls the reader clears the flag, polls once
//! more (for records whose probe read the flag before it changed), and sleeps until the kernel
//! wakes it: the probes' default then wakes it for the first record in an empty ring, so an idle
//! agent costs no timer. A ring more than an eighth full wakes the reader in any case (see
//! `wake_flags` in probes-ebpf/src/maps.rs).

use std::time::Duration;

use aya::maps::{Array, MapData, RingBuf};
use tokio::{io::unix::AsyncFd, time::Instant};

/// Records handled per wake-up before control goes back to the caller, so that a producer that
/// never lets the buffer run empty cannot starve shutdown or the periodic logs.
const MAX_BATCH: usize = 4096;

/// The longest a record waits for a polling reader. Spans wait far longer than this for their
/// parents and the exporter's batch anyway, so shorter buys nothing a user sees; longer would
/// let a burst fill more of the ring between polls. At 4 ms a busy reader wakes at most 250
/// times a second (plus one per forced wake-up), however many requests it sees.
pub const POLL_PERIOD: Duration = Duration::from_millis(4);

/// Empty polls in a row (100 ms without a record) after which the reader sleeps until woken.
const IDLE_POLLS: u32 = 25;

/// How often the reader found records, by what made it look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// The kernel woke it (the ring became readable).
    pub wakeups: u64,
    /// Its own timer did.
    pub polls: u64,
}

impl ReaderStats {
    /// Times the reader ran and found records: what a run costs in reader wake-ups.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.wakeups + self.polls
    }
}

/// The ring buffer registered with the tokio reactor, and how the reader is pacing itself.
pub struct RingBufSource {
    fd: AsyncFd<RingBuf<MapData>>,
    /// `READER_POLLING`: slot 0 tells the probes whether this reader polls.
    polling_flag: Array<MapData, u32>,
    pacer: Pacer,
    next_poll: Instant,
}

impl RingBufSource {
    pub fn new(ring: RingBuf<MapData>, polling_flag: Array<MapData, u32>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd (MapData) and keeps it open, unchanged, until it is
        // dropped, which is only when this AsyncFd is.
        let fd = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        Ok(Self {
            fd,
            polling_flag,
            pacer: Pacer::default(),
            next_poll: Instant::now(),
        })
    }

    /// Wait until records are ready (woken, or the poll timer while polling), then pass each to
    /// `on_record`. Returns when the buffer is empty again (`false`) or `MAX_BATCH` records were
    /// handled (`true`: more are waiting), or with the first error of `on_record`. Cancel-safe:
    /// nothing changes before the wait ends.
    pub async fn next_batch<E>(
        &mut self,
        mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<bool, E>
    where
        E: From<std::io::Error>,
    {
        let woken = if self.pacer.polling() {
            match tokio::time::timeout_at(self.next_poll, self.fd.readable_mut()).await {
                Ok(guard) => Some(guard?),
                Err(_elapsed) => None,
            }
        } else {
            Some(self.fd.readable_mut().await?)
        };
        let by_kernel = woken.is_some();
        let handled = match woken {
            Some(mut guard) => {
                let handled = drain(guard.get_inner_mut(), MAX_BATCH, &mut on_record)?;
                if handled < MAX_BATCH {
                    // Empty: wait for the next wake-up. Otherwise the readiness stays set and
                    // the next call continues at once.
                    guard.clear_ready();
                }
                handled
            }
            None => drain(self.fd.get_mut(), MAX_BATCH, &mut on_record)?,
        };
        let more_waiting = handled == MAX_BATCH;
        self.next_poll = Instant::now()
            + if more_waiting {
                Duration::ZERO
            } else {
                POLL_PERIOD
            };
        if let Some(polling) = self.pacer.drained(by_kernel, handled) {
            self.set_polling_flag(polling);
        }
        Ok(more_waiting)
    }

    /// Read everything left without waiting (after the probes are detached).
    pub fn drain_now<E>(
        &mut self,
        mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        drain(self.fd.get_mut(), usize::MAX, &mut on_record).map(drop)
    }

    /// How often the reader found records so far.
    #[must_use]
    pub fn stats(&self) -> ReaderStats {
        self.pacer.stats
    }

    /// Tell the probes. A failed write to start polling only leaves them waking the reader as
    /// before; a failed write to stop must not leave them silent while it sleeps, so the reader
    /// keeps polling.
    fn set_polling_flag(&mut self, polling: bool) {
        if self.polling_flag.set(0, &u32::from(polling), 0).is_err() && !polling {
            self.pacer.keep_polling();
        }
    }
}

/// Hand on up to `limit` records; returns how many there were.
fn drain<E>(
    ring: &mut RingBuf<MapData>,
    limit: usize,
    on_record: &mut impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, E> {
    let mut handled = 0;
    while handled < limit {
        let Some(record) = ring.next() else { break };
        on_record(&record)?;
        handled += 1;
    }
    Ok(handled)
}

/// What the reader does between reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waits for the kernel's wake-up only (the probes' flag is 0).
    Sleeping,
    /// Polls every `POLL_PERIOD` (the flag is 1); `empty` polls in a row found nothing.
    Polling { empty: u32 },
    /// The flag is 0 again; one more poll takes what probes sent while it changed.
    Closing,
}

/// The reader's pacing, apart from the ring so it is testable without a kernel.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    mode: Mode,
    stats: ReaderStats,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            mode: Mode::Sleeping,
            stats: ReaderStats::default(),
        }
    }
}

impl Pacer {
    /// Whether the poll timer runs.
    fn polling(&self) -> bool {
        self.mode != Mode::Sleeping
    }

    /// A read, woken by the kernel or by the timer, handled `handled` records. Returns the
    /// probes' new flag when it changes.
    fn drained(&mut self, by_kernel: bool, handled: usize) -> Option<bool> {
        if handled > 0 {
            if by_kernel {
                self.stats.wakeups += 1;
            } else {
                self.stats.polls += 1;
            }
            let was = self.mode;
            self.mode = Mode::Polling { empty: 0 };
            return matches!(was, Mode::Sleeping | Mode::Closing).then_some(true);
        }
        if by_kernel {
            // A wake-up that found nothing (a record already taken by a poll): no news.
            return None;
        }
        match self.mode {
            Mode::Polling { empty } if empty + 1 >= IDLE_POLLS => {
                self.mode = Mode::Closing;
                Some(false)
            }
            Mode::Polling { empty } => {
                self.mode = Mode::Polling { empty: empty + 1 };
                None
            }
            Mode::Closing | Mode::Sleeping => {
                self.mode = Mode::Sleeping;
                None
            }
        }
    }

    /// The probes could not be told to wake the reader again: it must go on polling.
    fn keep_polling(&mut self) {
        self.mode = Mode::Polling { empty: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_with_records_starts_polling_and_empty_polls_end_it_after_one_more() {
        let mut pacer = Pacer::default();
        assert!(!pacer.polling());
        assert_eq!(pacer.drained(true, 3), Some(true));
        assert!(pacer.polling());
        assert_eq!(pacer.drained(false, 2), None);
        for _ in 1..IDLE_POLLS {
            assert_eq!(pacer.drained(false, 0), None);
        }
        // The last empty poll clears the flag; one more poll, then sleep.
        assert_eq!(pacer.drained(false, 0), Some(false));
        assert!(pacer.polling());
        assert_eq!(pacer.drained(false, 0), None);
        assert!(!pacer.polling());
        assert_eq!(
            pacer.stats,
            ReaderStats {
                wakeups: 1,
                polls: 1
            }
        );
    }

    #[test]
    fn records_in_the_last_poll_resume_polling_and_set_the_flag_again() {
        let mut pacer = Pacer {
            mode: Mode::Closing,
            stats: ReaderStats::default(),
        };
        assert_eq!(pacer.drained(false, 1), Some(true));
        assert_eq!(pacer.mode, Mode::Polling { empty: 0 });
    }

    #[test]
    fn records_reset_the_count_of_empty_polls_and_empty_wake_ups_change_nothing() {
        let mut pacer = Pacer {
            mode: Mode::Polling {
                empty: IDLE_POLLS - 1,
            },
            stats: ReaderStats::default(),
        };
        assert_eq!(pacer.drained(true, 0), None);
        assert_eq!(
            pacer.mode,
            Mode::Polling {
                empty: IDLE_POLLS - 1
            }
        );
        assert_eq!(pacer.drained(true, 5), None);
        assert_eq!(pacer.mode, Mode::Polling { empty: 0 });
        assert_eq!(pacer.stats.total(), 1);
    }
}
