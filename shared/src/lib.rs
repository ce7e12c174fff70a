//! The kernel↔user contract of wirespan, defined once and used by both sides.
//!
//! `probes-ebpf` writes these structs into the ring buffer and reads the load-time globals;
//! the collector's `source` stage reads the same bytes back. Every struct is `#[repr(C)]`, starts
//! with an event-type tag where it is an event, spells out its padding, and uses no `bool`, so the
//! layout is the same for the bpfel target and the host.
#![no_std]

pub mod event;
pub mod globals;
pub mod grpc;
pub mod names;

pub use event::*;
pub use globals::*;
pub use grpc::*;
pub use names::*;
