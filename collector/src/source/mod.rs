//! `source`: where events come from. Either the kernel's ring buffer (`ringbuf`) or a recording
//! made earlier (`recording`, replayed without privileges). Both yield raw records; the pure
//! `decode` turns each into an [`Event`] for the stages after it.

pub mod decode;
pub mod grpc;
pub mod process;
pub mod recording;
pub mod ringbuf;

pub use decode::{
    Conn, ConnKind, Data, DecodeError, Direction, Event, Exec, ExecImage, GoExit, GoServe, GoSpawn,
    ProcessExit, decode,
};
pub use grpc::{
    CallPhase, ConnRole, GoConnUse, GoConnection, GoGrpcCall, GoHeaders, HeaderField, HeadersSource,
};
