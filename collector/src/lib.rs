//! wirespan's collector: the user-space half of the agent.
//!
//! The flow is one direction, each stage a module:
//! `load` (probes into the kernel) → `source` (ring buffer → decoded events) → `export`
//! (console, JSON lines; OTLP later). `agent` wires them for one run; `main.rs` is the CLI.
//! Later stages (conn, protocol, correlate, span) slot in between source and export.

pub mod agent;
pub mod export;
pub mod load;
pub mod protocol;
pub mod source;
pub mod testing;
