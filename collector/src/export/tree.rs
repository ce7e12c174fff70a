//! `--exporter console`: each trace as an indented tree, printed once its root span has been
//! emitted (the correlator emits parents before children, and a trace's spans together once
//! its root completes). Spans that arrive after their trace was printed (work that outlived
//! its request) are printed as `late` lines under the trace id.
//!
//! ```text
//! trace 4bf92f3577b34da6a3ce929d0e0e4736
//!   curl                 client GET /chain          200     3.1 ms
//!   └ front              server GET /chain          200     2.8 ms
//!     └ front            client GET /hello          200     0.9 ms
//!       └ front          server GET /hello          200     0.2 ms
//! ```

use std::{collections::HashSet, io::Write, time::Duration};

use super::SpanSink;
use crate::span::{Payload, Span, SpanKind, TraceId, processes::Resources};

/// Traces printed (by id) are remembered this many at most, to mark late spans.
const MAX_PRINTED: usize = 65_536;

pub struct TreeSink<W: Write> {
    out: W,
    resources: Resources,
    /// Spans since the last flush, by trace, in arrival order.
    waiting: Vec<Span>,
    printed: HashSet<TraceId>,
    printed_order: std::collections::VecDeque<TraceId>,
}

impl<W: Write> TreeSink<W> {
    pub fn new(out: W, resources: Resources) -> Self {
        Self {
            out,
            resources,
            waiting: Vec::new(),
            printed: HashSet::new(),
            printed_order: std::collections::VecDeque::new(),
        }
    }

    fn line(&mut self, span: &Span, depth: usize) -> String {
        let service = self
            .resources
            .of(span.pid, &span.comm, span.start_ns)
            .service_name
            .clone();
        let indent = "  ".repeat(depth);
        let branch = if depth == 0 { "" } else { "└ " };
        let kind = match span.kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
        };
        let status = match &span.payload {
            Payload::Http(h) => h.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            Payload::Grpc(g) => g
                .status
                .map_or_else(|| "-".to_owned(), |s| format!("grpc {s}")),
            Payload::Db(d) => d.status_code.as_deref().unwrap_or("ok").to_owned(),
            Payload::Tcp | Payload::Connect => "-".to_owned(),
        };
        let error = match span.error {
            Some(e) => format!(" ERROR {}", e.as_str()),
            None if span.is_error() => " ERROR".to_owned(),
            None => String::new(),
        };
        let ms =
            Duration::from_nanos(span.end_ns.saturating_sub(span.start_ns)).as_secs_f64() * 1e3;
        let who = format!("{indent}{branch}{service}");
        format!(
            "  {who:<28} {kind} {:<34} {status:>7} {ms:>9.3} ms{error}",
            span.name()
        )
    }

    fn print_trace(&mut self, trace: TraceId, spans: &[Span]) -> std::io::Result<()> {
        writeln!(self.out, "trace {trace}")?;
        let ids: std::collections::HashSet<_> = spans.iter().map(|s| s.span_id).collect();
        // Roots: no parent, or a parent outside what we saw (an instrumented caller).
        let mut stack: Vec<(&Span, usize)> = spans
            .iter()
            .filter(|s| s.parent_span_id.is_none_or(|p| !ids.contains(&p)))
            .rev()
            .map(|s| (s, 0))
            .collect();
        while let Some((span, depth)) = stack.pop() {
            let line = self.line(span, depth);
            writeln!(self.out, "{line}")?;
            let mut children: Vec<&Span> = spans
                .iter()
                .filter(|c| c.parent_span_id == Some(span.span_id))
                .collect();
            children.sort_by_key(|c| c.start_ns);
            for child in children.into_iter().rev() {
                stack.push((child, depth + 1));
            }
        }
        Ok(())
    }
}

impl<W: Write> SpanSink for TreeSink<W> {
    fn span(&mut self, span: &Span) -> std::io::Result<()> {
        self.waiting.push(span.clone());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut by_trace: Vec<(TraceId, Vec<Span>)> = Vec::new();
        for span in self.waiting.drain(..) {
            match by_trace.iter_mut().find(|(t, _)| *t == span.trace_id) {
                Some((_, spans)) => spans.push(span),
                None => by_trace.push((span.trace_id, vec![span])),
            }
        }
        for (trace, spans) in by_trace {
            if self.printed.contains(&trace) {
                for span in &spans {
                    let line = self.line(span, 0);
                    writeln!(self.out, "trace {trace} late:\n{line}")?;
                }
                continue;
            }
            self.print_trace(trace, &spans)?;
            self.printed.insert(trace);
            self.printed_order.push_back(trace);
            if self.printed_order.len() > MAX_PRINTED
                && let Some(old) = self.printed_order.pop_front()
            {
                self.printed.remove(&old);
            }
        }
        self.out.flush()
    }
}
