//! What the multi-host test (privileged_hosts) sends and what comes out of it: the requests
//! sent from host A (`Route`, `Sent`), and the spans the three agents exported, each with the
//! `host.name` and `process.pid` of its resource (`HostSpan`), read from the agents' OTLP JSON
//! lines files (`host_spans`) or built from another store (Jaeger, in hosts_gateway) and held
//! together (`Spans`) for the checks in hosts_checks.

use std::{collections::HashMap, path::Path, time::Duration};

use serde_json::Value;

use super::shapes::Got;

/// What a request from host A asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// front's `/echo`: one call to relay on B, which calls echo-grpc on C.
    Echo,
    /// front's `/fanout`: two calls to relay, from child goroutines.
    Fanout,
    /// Python's http.server on B, through its virtual address.
    Python,
}

/// A request sent from host A: its route, `msg=` value, trace and parent (its traceparent),
/// and when (since the test started).
#[derive(Debug, Clone)]
pub struct Sent {
    pub route: Route,
    pub msg: String,
    pub trace: String,
    pub parent: String,
    pub at: Duration,
}

impl Sent {
    /// The calls front makes to relay for the request.
    pub fn calls(&self) -> usize {
        match self.route {
            Route::Echo => 1,
            Route::Fanout => 2,
            Route::Python => 0,
        }
    }
}

/// An exported span with its resource's `host.name` and `process.pid`.
#[derive(Debug, Clone)]
pub struct HostSpan {
    pub host: String,
    pub pid: String,
    pub span: Got,
}

impl HostSpan {
    /// Whether an attribute carries `msg=<msg>` (a request's own query, or a call made for it:
    /// `<msg>-0`).
    pub fn carries(&self, msg: &str) -> bool {
        let needle = format!("msg={msg}");
        self.span.attrs.values().any(|v| v.contains(&needle))
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        let s = &self.span;
        format!(
            "{} {} pid={} kind={} {:?} trace={} id={} parent={} {}",
            self.host,
            s.service,
            self.pid,
            s.kind,
            s.name,
            s.trace,
            s.id,
            if s.parent.is_empty() { "-" } else { &s.parent },
            s.attrs
                .get("url.full")
                .or_else(|| s.attrs.get("url.query"))
                .map(String::as_str)
                .unwrap_or_default(),
        )
    }
}

/// The spans of an `--exporter file` output with their hosts. While the agent runs its last
/// line may be incomplete: lines that are not JSON are skipped (after the agent stopped, read
/// with `support::file_spans` too, which checks every line and attribute key).
pub fn host_spans(path: &Path) -> Vec<HostSpan> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut spans = Vec::new();
    for line in text.lines() {
        let Ok(request) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            let resource: HashMap<&str, String> = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| Some((a["key"].as_str()?, value_text(&a["value"]))))
                .collect();
            let text = |k: &str| resource.get(k).cloned().unwrap_or_default();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let field = |k: &str| span[k].as_str().unwrap_or_default().to_owned();
                    let attrs = span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| {
                            Some((a["key"].as_str()?.to_owned(), value_text(&a["value"])))
                        })
                        .collect();
                    spans.push(HostSpan {
                        host: text("host.name"),
                        pid: text("process.pid"),
                        span: Got {
                            service: text("service.name"),
                            name: field("name"),
                            kind: span["kind"].as_u64().unwrap_or_default(),
                            trace: field("traceId"),
                            id: field("spanId"),
                            parent: field("parentSpanId"),
                            attrs,
                        },
                    });
                }
            }
        }
    }
    spans
}

fn value_text(value: &Value) -> String {
    value["stringValue"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| value["intValue"].as_str().map(str::to_owned))
        .unwrap_or_else(|| value.to_string())
}

/// All spans of a run, each host's apart and together.
pub struct Spans {
    pub all: Vec<HostSpan>,
}

impl Spans {
    /// The spans in the agents' files.
    pub fn read(files: &[impl AsRef<Path>]) -> Self {
        Self {
            all: files.iter().flat_map(|f| host_spans(f.as_ref())).collect(),
        }
    }

    pub fn of_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a HostSpan> + 'a {
        self.all.iter().filter(move |s| s.host == host)
    }

    pub fn by_id(&self, id: &str) -> Option<&HostSpan> {
        (!id.is_empty())
            .then(|| self.all.iter().find(|s| s.span.id == id))
            .flatten()
    }

    /// Every span of the request (carrying its `msg`), with its parent: the evidence a failure
    /// message shows.
    pub fn evidence(&self, sent: &Sent) -> String {
        let traces: Vec<&str> = self
            .all
            .iter()
            .filter(|s| s.carries(&sent.msg))
            .map(|s| s.span.trace.as_str())
            .chain([sent.trace.as_str()])
            .collect();
        let mut lines: Vec<String> = self
            .all
            .iter()
            .filter(|s| traces.contains(&s.span.trace.as_str()) || s.carries(&sent.msg))
            .map(|s| format!("    {}", s.describe()))
            .collect();
        lines.sort();
        format!(
            "  request {} ({:?}, trace {}, sent at {:.1}s):\n{}",
            sent.msg,
            sent.route,
            sent.trace,
            sent.at.as_secs_f64(),
            lines.join("\n")
        )
    }

    /// Server spans exported on `host`: (with a parent, roots).
    pub fn server_spans(&self, host: &str) -> (u64, u64) {
        let all: Vec<&HostSpan> = self.of_host(host).filter(|s| s.span.kind == 2).collect();
        let joined = all.iter().filter(|s| !s.span.parent.is_empty()).count() as u64;
        (joined, all.len() as u64 - joined)
    }
}
