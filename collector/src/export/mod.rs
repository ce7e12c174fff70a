//! `export`: the end of the flow. Sinks take decoded events, exchanges or spans and write them
//! out: `console` for people, `json` (one object per line) for scripts and tests, `exchanges`
//! for the protocol stage's request/response pairs, `tree` for spans as trace trees.

pub mod clock;
pub mod console;
pub mod exchanges;
pub mod file;
pub mod graph_metrics;
pub mod json;
pub mod map;
pub mod otlp;
pub mod spandata;
pub mod tree;

use crate::{conn::ConnExchange, source::Event, span::Span};

/// Where events go. Writes are buffered; `flush` is called after each ring-buffer batch so a
/// live view stays live without a syscall per event.
pub trait EventSink {
    fn event(&mut self, event: &Event) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Where exchanges (the `protocol` stage's output) go.
pub trait ExchangeSink {
    fn exchange(&mut self, exchange: &ConnExchange) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Where spans (the `correlate` stage's output) go.
pub trait SpanSink {
    fn span(&mut self, span: &Span) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Several span sinks at once (`--exporter console --exporter otlp`).
pub struct FanOut(pub Vec<Box<dyn SpanSink>>);

impl SpanSink for FanOut {
    fn span(&mut self, span: &Span) -> std::io::Result<()> {
        for sink in &mut self.0 {
            sink.span(span)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for sink in &mut self.0 {
            sink.flush()?;
        }
        Ok(())
    }
}
