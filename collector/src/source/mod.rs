//! `source`: where events come from. Either the kernel's ring buffer (`ringbuf`) or a recording
//! made earlier (`recording`, replayed without privileges). Both yield raw records; the pure
//! `decode` turns each into an [`Event`] for the stages after it.

pub mod decode;
pub mod grpc;
pub mod process;
pub mod recording;
pub mod ringbuf;
pub mod windows;

pub use decode::{DecodeError, decode};

// The vocabulary `source` produces, defined in `event`; named here too for code that reads
// events straight from their source.
pub use crate::event::{
    CallPhase, Conn, ConnKind, ConnRole, Data, Direction, Event, Exec, ExecImage, GoConnUse,
    GoConnection, GoExit, GoGrpcCall, GoHeaders, GoServe, GoSpawn, HeaderField, HeadersSource,
    ProcessExit,
};
pub use windows::WindowError;
