//! `export`: the end of the flow for spans. Sinks that send or write them: `otlp` (gRPC or
//! HTTP/protobuf, with `spandata` building the OTLP data) and `zipkin` (Zipkin's JSON v2), both
//! behind `pipeline` (the queue and export thread), with `retry` riding out outages, and `tls`
//! and `http_client` for https backends; `file` (OTLP JSON lines), `tree`
//! (trace trees on the console), and `graph_metrics` (the service graph as OTLP metrics). The
//! debug views of events, exchanges and the service map are in `views`.

pub mod file;
pub mod graph_metrics;
pub mod http_client;
pub mod otlp;
pub mod pipeline;
pub mod retry;
pub mod spandata;
pub mod tls;
pub mod tree;
pub mod zipkin;

pub use crate::sink::{FanOut, SpanSink};
