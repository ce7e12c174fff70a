//! `views`: what a person or a script looks at while the agent runs, beside the exported spans:
//! `console` (one readable line per event, tcpdump-like), `json` (one object per event),
//! `exchanges` (the protocol stage's request/response pairs) and `map` (the service graph of a
//! run as a table, DOT or SVG). Each is a sink of the stage whose output it shows.

pub mod console;
pub mod exchanges;
pub mod json;
pub mod map;

pub use crate::sink::{EventSink, ExchangeSink};
