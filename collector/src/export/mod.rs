//! `export`: the end of the flow. Sinks take decoded events (later: spans) and write them out:
//! `console` for people, `json` (one object per line) for scripts and tests.

pub mod clock;
pub mod console;
pub mod json;

use crate::source::Event;

/// Where events go. Writes are buffered; `flush` is called after each ring-buffer batch so a
/// live view stays live without a syscall per event.
pub trait EventSink {
    fn event(&mut self, event: &Event) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}
