//! The live source: the kernel's `EVENTS` ring buffer, read as it becomes readable. Records are
//! handed on raw (the recorder writes them as they are; the pipeline decodes them).

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

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
    /// empty again, or with the first error of `on_record`.
    pub async fn next_batch<E>(
        &mut self,
        mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<std::io::Error>,
    {
        let mut guard = self.fd.readable_mut().await?;
        let result = drain(guard.get_inner_mut(), &mut on_record);
        guard.clear_ready();
        result
    }

    /// Read everything left without waiting (after the probes are detached).
    pub fn drain_now<E>(
        &mut self,
        mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        drain(self.fd.get_mut(), &mut on_record)
    }
}

fn drain<E>(
    ring: &mut RingBuf<MapData>,
    on_record: &mut impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    while let Some(record) = ring.next() {
        on_record(&record)?;
    }
    Ok(())
}
