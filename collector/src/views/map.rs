//! `wirespan map`: the service graph observed over a run. Each edge is a client service calling a
//! server service: a server span whose parent is a client span of another process (the same
//! request seen from both ends), or a database (`postgresql 10.0.0.5:5432`) that a client span
//! called. Printed as a table, as DOT, or as SVG through Graphviz's `dot`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt::Write as _,
    io::Write,
    process::{Command, Stdio},
};

use crate::sink::SpanSink;
use crate::span::{ParentLink, Payload, Span, SpanId, SpanKind, processes::Resources};

/// Client spans remembered for their server children, at most.
const MAX_CLIENTS: usize = 100_000;
/// Latencies kept per edge for the percentiles, at most (the first ones; counts stay exact).
const MAX_SAMPLES: usize = 100_000;

#[derive(Debug, Default, Clone)]
pub struct Edge {
    pub requests: u64,
    pub errors: u64,
    /// Server-side and client-side durations, ns.
    server_ns: Vec<u64>,
    client_ns: Vec<u64>,
}

impl Edge {
    /// The `q` quantile (0..=1) of the server-side latency, ns.
    #[must_use]
    pub fn server_quantile(&self, q: f64) -> u64 {
        quantile(&self.server_ns, q)
    }

    #[must_use]
    pub fn client_quantile(&self, q: f64) -> u64 {
        quantile(&self.client_ns, q)
    }
}

fn quantile(samples: &[u64], q: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into at most MAX_SAMPLES samples"
    )]
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// One request seen from both ends: a client span and the server span it caused in another
/// process.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSample {
    pub client: String,
    pub server: String,
    /// Either end saw an error (as Tempo's service-graph processor counts a failed request):
    /// a 404 fails the client span but not the server's, and still fails the edge.
    pub failed: bool,
    pub server_ns: u64,
    pub client_ns: u64,
}

/// Pairs server spans with the client spans that are their parents (spans arrive parents
/// first); shared by the map and the service-graph metrics.
pub struct EdgeFinder {
    resources: Resources,
    /// Client spans by id: service, duration, failed.
    clients: HashMap<SpanId, (String, u64, bool)>,
    client_order: VecDeque<SpanId>,
}

impl EdgeFinder {
    #[must_use]
    pub fn new(resources: Resources) -> Self {
        Self {
            resources,
            clients: HashMap::new(),
            client_order: VecDeque::new(),
        }
    }

    /// Remember a client span, or pair a server span with its client: the edge it makes.
    pub fn observe(&mut self, span: &Span) -> Option<EdgeSample> {
        let service = self
            .resources
            .of(span.pid, &span.comm, span.start_ns)
            .service_name
            .clone();
        let duration = span.end_ns.saturating_sub(span.start_ns);
        match (span.kind, &span.payload) {
            // A database is a node of its own whether or not its server is traced: the client's
            // span makes the edge (its server's spans, if any, make none, or it would count
            // twice).
            (SpanKind::Client, Payload::Db(db)) => Some(EdgeSample {
                client: service,
                server: format!("{} {}", db.system.as_str(), span.remote),
                failed: span.is_error(),
                server_ns: duration,
                client_ns: duration,
            }),
            (SpanKind::Server, Payload::Db(_)) => None,
            (SpanKind::Client, _) => {
                if self.clients.len() >= MAX_CLIENTS
                    && let Some(old) = self.client_order.pop_front()
                {
                    self.clients.remove(&old);
                }
                self.clients
                    .insert(span.span_id, (service, duration, span.is_error()));
                self.client_order.push_back(span.span_id);
                None
            }
            (SpanKind::Server, _) => {
                // Only the other end of the same request makes an edge.
                let parent = span
                    .parent_span_id
                    .filter(|_| span.link == ParentLink::Peer)?;
                let (client, client_ns, client_failed) = self.clients.get(&parent).cloned()?;
                Some(EdgeSample {
                    client,
                    server: service,
                    failed: client_failed || span.is_error(),
                    server_ns: duration,
                    client_ns,
                })
            }
        }
    }
}

/// Collects the graph from spans.
pub struct ServiceMap {
    finder: EdgeFinder,
    pub edges: BTreeMap<(String, String), Edge>,
}

impl ServiceMap {
    #[must_use]
    pub fn new(resources: Resources) -> Self {
        Self {
            finder: EdgeFinder::new(resources),
            edges: BTreeMap::new(),
        }
    }

    /// The graph as a table: client, server, requests, errors, server p50/p99, client p50/p99.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:<24} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10}\n",
            "CLIENT", "SERVER", "REQUESTS", "ERRORS", "SRV p50", "SRV p99", "CLI p50", "CLI p99"
        );
        let ms = |ns: u64| {
            format!(
                "{:.3}ms",
                std::time::Duration::from_nanos(ns).as_secs_f64() * 1e3
            )
        };
        for ((client, server), e) in &self.edges {
            let _ = writeln!(
                out,
                "{client:<24} {server:<24} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10}",
                e.requests,
                e.errors,
                ms(e.server_quantile(0.5)),
                ms(e.server_quantile(0.99)),
                ms(e.client_quantile(0.5)),
                ms(e.client_quantile(0.99)),
            );
        }
        out
    }

    /// The graph in Graphviz's DOT language.
    #[must_use]
    pub fn dot(&self) -> String {
        let mut out = String::from("digraph services {\n  rankdir=LR;\n  node [shape=box];\n");
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        for ((client, server), e) in &self.edges {
            let label = format!(
                "{} req, {} err, p50 {:.1}ms, p99 {:.1}ms",
                e.requests,
                e.errors,
                std::time::Duration::from_nanos(e.server_quantile(0.5)).as_secs_f64() * 1e3,
                std::time::Duration::from_nanos(e.server_quantile(0.99)).as_secs_f64() * 1e3
            );
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                quote(client),
                quote(server),
                quote(&label)
            );
        }
        out.push_str("}\n");
        out
    }

    /// SVG, rendered by Graphviz's `dot` (Debian package `graphviz`).
    pub fn svg(&self) -> std::io::Result<String> {
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot run Graphviz's dot ({e}): install the graphviz package"),
                )
            })?;
        child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?
            .write_all(self.dot().as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            return Err(std::io::Error::other(format!(
                "dot failed ({})",
                output.status
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl SpanSink for ServiceMap {
    fn span(&mut self, span: &Span) -> std::io::Result<()> {
        if let Some(sample) = self.finder.observe(span) {
            let edge = self
                .edges
                .entry((sample.client, sample.server))
                .or_default();
            edge.requests += 1;
            edge.errors += u64::from(sample.failed);
            if edge.server_ns.len() < MAX_SAMPLES {
                edge.server_ns.push(sample.server_ns);
                edge.client_ns.push(sample.client_ns);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_from_the_sorted_samples() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&samples, 0.5), 51);
        assert_eq!(quantile(&samples, 0.99), 99);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    fn http(kind: SpanKind, id: u8, parent: Option<u8>, status: u16) -> Span {
        use crate::span::{HttpSpan, Payload, TraceId};
        let (local, remote) = match kind {
            SpanKind::Client => ("127.0.0.1:40000", "127.0.0.1:8080"),
            SpanKind::Server => ("127.0.0.1:8080", "127.0.0.1:40000"),
        };
        Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            link: if parent.is_some() {
                ParentLink::Peer
            } else {
                ParentLink::Root
            },
            kind,
            start_ns: 0,
            end_ns: 1_000,
            pid: u32::from(id),
            comm: format!("svc{id}"),
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            payload: Payload::Http(HttpSpan {
                method: "GET".into(),
                target: "/stock/1".into(),
                host: None,
                status: Some(status),
                version: None,
                user_agent: None,
                route: None,
            }),
            incomplete: false,
            error: None,
        }
    }

    /// A database is a node, named by its system and address, with its own error count; the
    /// database server's own spans (when it is traced too) add no second edge.
    #[test]
    fn database_calls_make_an_edge_to_the_database() {
        use crate::protocol::db::{Db, DbSystem};
        let mut map = ServiceMap::new(Resources::offline());
        let mut query = http(SpanKind::Client, 1, None, 200);
        query.remote = "127.0.0.1:5432".parse().unwrap();
        query.payload = Payload::Db(Db::new(DbSystem::Postgresql, "SELECT"));
        map.span(&query).unwrap();
        let mut failed = query.clone();
        if let Payload::Db(db) = &mut failed.payload {
            db.status_code = Some("42P01".into());
        }
        map.span(&failed).unwrap();
        let mut server_side = http(SpanKind::Server, 2, Some(1), 200);
        server_side.payload = query.payload.clone();
        map.span(&server_side).unwrap();
        let edge = &map.edges[&("svc1".to_owned(), "postgresql 127.0.0.1:5432".to_owned())];
        assert_eq!((edge.requests, edge.errors), (2, 1), "{}", map.table());
        assert_eq!(map.edges.len(), 1, "{}", map.table());
    }

    #[test]
    fn an_edge_request_fails_when_either_end_is_an_error() {
        let mut map = ServiceMap::new(Resources::offline());
        // 404: an error for the client span only; the edge still counts it failed.
        map.span(&http(SpanKind::Client, 1, None, 404)).unwrap();
        map.span(&http(SpanKind::Server, 2, Some(1), 404)).unwrap();
        map.span(&http(SpanKind::Client, 3, None, 200)).unwrap();
        map.span(&http(SpanKind::Server, 4, Some(3), 200)).unwrap();
        let edges: Vec<_> = map.edges.values().collect();
        assert_eq!(edges.iter().map(|e| e.requests).sum::<u64>(), 2);
        assert_eq!(
            edges.iter().map(|e| e.errors).sum::<u64>(),
            1,
            "{}",
            map.table()
        );
    }
}
