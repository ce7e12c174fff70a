//! `source`: where events come from. Today the kernel's ring buffer (`ringbuf`); every raw record
//! is decoded by the pure `decode` into an [`Event`] for the stages after it.

pub mod decode;
pub mod ringbuf;

pub use decode::{Connect, DecodeError, Event, decode};
