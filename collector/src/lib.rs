//! wirespan's collector: the user-space half of the agent.
//!
//! The flow is one direction, each stage a module:
//! `load` (probes into the kernel) → `source` (ring buffer or recording → decoded events) →
//! `conn` (connection table, per-connection byte streams) → `protocol` (HTTP/1, HTTP/2, gRPC →
//! exchanges) → `export` (console, JSON lines; OTLP later). `agent` wires them for one run;
//! `main.rs` is the CLI. Later stages (correlate, span) slot in before export.

pub mod agent;
pub mod conn;
pub mod export;
pub mod golang;
pub mod load;
pub mod protocol;
pub mod source;
pub mod testing;
