//! wirespan's collector: the user-space half of the agent.
//!
//! The flow is one direction, each stage a module:
//! `load` (probes into the kernel) → `source` (ring buffer or recording → decoded events) →
//! `conn` (connection table, per-connection byte streams) → `protocol` (HTTP/1, HTTP/2, gRPC →
//! exchanges) → `correlate` (parent links; `span` is its output model) → `export` (console trace
//! trees, JSON lines; OTLP). `agent` wires them for one run; `main.rs` is the CLI.

pub mod agent;
pub mod clock;
pub mod conn;
pub mod correlate;
pub mod event;
pub mod export;
pub mod golang;
pub mod join;
pub mod load;
pub mod private_file;
pub mod protocol;
pub mod sink;
pub mod source;
pub mod span;
pub mod stages;
pub mod testing;
pub mod views;
