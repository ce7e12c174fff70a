//! `sink`: where each stage's output goes, so the stages and the places that show or send their
//! output (`views` for people and scripts, `export` for backends) meet on a trait and neither
//! depends on the other.

use crate::{conn::ConnExchange, event::Event, span::Span};

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
