//! The live source: the kernel's `EVENTS` ring buffer, read as it becomes readable, decoded, and
//! handed to a sink. Bad records are skipped and counted.

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::{Event, decode};

/// Counts kept while reading.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub events: u64,
    pub malformed: u64,
}

/// The ring buffer registered with the tokio reactor.
pub struct RingBufSource {
    fd: AsyncFd<RingBuf<MapData>>,
    pub stats: ReadStats,
}

impl RingBufSource {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd (MapData) and keeps it open, unchanged, until it is
        // dropped, which is only when this AsyncFd is.
        let fd = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        Ok(Self {
            fd,
            stats: ReadStats::default(),
        })
    }

    /// Wait until records are ready, then pass each to `on_event`. Returns when the buffer is
    /// empty again, or with the first error of `on_event`.
    pub async fn next_batch<E>(
        &mut self,
        mut on_event: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<std::io::Error>,
    {
        let mut guard = self.fd.readable_mut().await?;
        let result = drain(guard.get_inner_mut(), &mut self.stats, &mut on_event);
        guard.clear_ready();
        result
    }

    /// Read everything left without waiting (after the probes are detached).
    pub fn drain_now<E>(
        &mut self,
        mut on_event: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        drain(self.fd.get_mut(), &mut self.stats, &mut on_event)
    }
}

fn drain<E>(
    ring: &mut RingBuf<MapData>,
    stats: &mut ReadStats,
    on_event: &mut impl FnMut(&Event) -> Result<(), E>,
) -> Result<(), E> {
    while let Some(record) = ring.next() {
        match decode(&record) {
            Ok(event) => {
                stats.events += 1;
                on_event(&event)?;
            }
            Err(_) => stats.malformed += 1,
        }
    }
    Ok(())
}
