//! The live source: the kernel's `EVENTS` ring buffer, read as it becomes readable. Records are
//! handed on raw (the recorder writes them as they are; the pipeline decodes them).

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

/// Records handled per wake-up before control goes back to the caller, so that a producer that
/// never lets the buffer run empty cannot starve shutdown or the periodic logs.
const MAX_BATCH: usize = 4096;

/// The ring buffer registered with the tokio reactor.
pub struct RingBufSource {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl RingBufSource {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd (MapData) and keeps it open, unchanged, until it is
        // dropped, which is only when this AsyncFd is.
        let fd = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        Ok(Self { fd })
    }

    /// Wait until records are ready, then pass each to `on_record`. Returns when the buffer is
    /// empty again (`false`) or `MAX_BATCH` records were handled (`true`: more are waiting), or
    /// with the first error of `on_record`.
    pub async fn next_batch<E>(
        &mut self,
        mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<bool, E>
    where
        E: From<std::io::Error>,
    {
        let mut guard = self.fd.readable_mut().await?;
        let handled = drain(guard.get_inner_mut(), MAX_BATCH, &mut on_record)?;
        if handled < MAX_BATCH {
            // Empty: wait for the next wake-up. Otherwise the readiness stays set and the next
            // call continues at once.
            guard.clear_ready();
        }
        Ok(handled == MAX_BATCH)
    }

    /// Read everything left without waiting (after the probes are detached).
    pub fn drain_now<E>(
        &mut self,
        mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        drain(self.fd.get_mut(), usize::MAX, &mut on_record).map(drop)
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
