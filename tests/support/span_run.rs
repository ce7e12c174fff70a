//! Reading what an agent exported to a file: run an agent with `--exporter file`, then look
//! spans up by service, kind and path, follow their parents, and check their HTTP attributes.

use std::{collections::HashMap, path::Path};

use serde_json::Value;

use super::Agent;

/// An agent exporting the spans of connections on `ports` to `file` (replaced).
pub fn agent_to_file(file: &Path, ports: &[&str]) -> Agent {
    let _ = std::fs::remove_file(file);
    Agent::start_on_ports(
        &[
            "run",
            "--exporter",
            "file",
            "--output",
            file.to_str().unwrap(),
        ],
        ports,
    )
}

/// `wirespan run --replay <recording> --exporter file --output <spans>` (replaced), which must
/// exit 0: what it printed on standard error.
pub fn replay_to_file(recording: &Path, spans: &Path) -> String {
    let _ = std::fs::remove_file(spans);
    let replay = std::process::Command::new(super::AGENT)
        .args(["run", "--exporter", "file", "--output"])
        .arg(spans)
        .arg("--replay")
        .arg(recording)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&replay.stderr).into_owned();
    assert!(
        replay.status.success(),
        "replaying {}: {stderr}",
        recording.display()
    );
    stderr
}

/// A span attribute's value, as text.
pub fn attr(span: &Value, key: &str) -> Option<String> {
    let value = super::span_attr(span, key)?;
    value["stringValue"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| value["intValue"].as_str().map(str::to_owned))
}

/// The spans of one run, looked up by service and kind.
pub struct Run {
    pub spans: Vec<(String, Value)>,
    by_id: HashMap<String, usize>,
}

impl Run {
    pub fn read(file: &Path) -> Self {
        let spans = super::file_spans(file);
        let by_id = spans
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (s["spanId"].as_str().unwrap().to_owned(), i))
            .collect();
        Self { spans, by_id }
    }

    /// Spans of `service` of `kind` (2 server, 3 client) whose `url.path` starts with `path`.
    pub fn find(&self, service: &str, kind: u64, path: &str) -> Vec<&Value> {
        self.spans
            .iter()
            .filter(|(s, span)| {
                s == service
                    && span["kind"] == kind
                    && attr(span, "url.path")
                        .or_else(|| attr(span, "url.full"))
                        .is_some_and(|p| p.contains(path))
            })
            .map(|(_, span)| span)
            .collect()
    }

    pub fn parent_of(&self, span: &Value) -> Option<&(String, Value)> {
        let parent = span["parentSpanId"].as_str()?;
        self.by_id.get(parent).map(|i| &self.spans[*i])
    }

    /// `child`'s parent is a span of `service` of `kind`: that parent.
    pub fn expect_parent(&self, child: &Value, service: &str, kind: u64) -> &Value {
        let parent = self.parent_of(child).unwrap_or_else(|| {
            panic!(
                "no parent for {child:#}; spans:\n{}",
                super::describe_spans(&self.spans)
            )
        });
        assert_eq!(
            (parent.0.as_str(), parent.1["kind"].as_u64()),
            (service, Some(kind)),
            "parent of {}: {}",
            child["name"],
            super::describe_spans(&self.spans)
        );
        assert_eq!(parent.1["traceId"], child["traceId"]);
        &parent.1
    }

    pub fn describe(&self) -> String {
        super::describe_spans(&self.spans)
    }
}

/// Method, path and status are on `span`.
pub fn check_http(span: &Value, method: &str, status: &str) {
    assert_eq!(
        attr(span, "http.request.method").as_deref(),
        Some(method),
        "{span:#}"
    );
    assert_eq!(
        attr(span, "http.response.status_code").as_deref(),
        Some(status),
        "{span:#}"
    );
    assert!(
        attr(span, "url.path").is_some() || attr(span, "url.full").is_some(),
        "{span:#}"
    );
}
