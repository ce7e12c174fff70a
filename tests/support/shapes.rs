//! Helpers of the privileged tests of program shapes (privileged_shapes, privileged_nat): the
//! example services built plain or as stripped host-linked cgo binaries, an agent exporting to a
//! file, the exported spans flattened, and the checks of a /fanout tree.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
};

use super::{Agent, Listening};

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct Got {
    pub service: String,
    pub name: String,
    /// 2 server, 3 client (OTLP JSON).
    pub kind: u64,
    pub trace: String,
    pub id: String,
    pub parent: String,
    pub attrs: HashMap<String, String>,
}

impl Got {
    /// Whether any attribute names request `id` (`id=<id>` in a URL or query).
    pub fn carries(&self, id: u64) -> bool {
        let needle = format!("id={id}");
        self.attrs.values().any(|v| {
            v.split(['&', '?'])
                .any(|part| part == needle || part.ends_with(&format!("?{needle}")))
        })
    }
}

/// The spans of an `--exporter file` output, flattened; their attribute keys are checked against
/// the semantic conventions (by `file_spans`, once per call).
pub fn read_spans(file: &Path) -> Vec<Got> {
    super::file_spans(file)
        .into_iter()
        .map(|(service, span)| {
            let attrs = span["attributes"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|a| {
                            let v = &a["value"];
                            let value = v["stringValue"]
                                .as_str()
                                .map_or_else(|| v.to_string(), str::to_owned);
                            (a["key"].as_str().unwrap().to_owned(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
            Got {
                service,
                name: text("name"),
                kind: span["kind"].as_u64().unwrap_or_default(),
                trace: text("traceId"),
                id: text("spanId"),
                parent: text("parentSpanId"),
                attrs,
            }
        })
        .collect()
}

/// No exported attribute names an IPv4-mapped IPv6 address.
pub fn assert_no_mapped_addresses(spans: &[Got]) {
    for span in spans {
        for (key, value) in &span.attrs {
            assert!(
                !value.contains("::ffff:"),
                "{key}={value} in {} {}",
                span.service,
                span.name
            );
        }
    }
}

/// Checks a trace: `child`'s parent is `parent`, in the same trace.
pub fn assert_child_of(child: &Got, parent: &Got, what: &str) {
    assert_eq!(
        (child.parent.as_str(), child.trace.as_str()),
        (parent.id.as_str(), parent.trace.as_str()),
        "{what}: {} {} should be a child of {} {}",
        child.service,
        child.name,
        parent.service,
        parent.name
    );
}

/// The agent, exporting to a file, watching `ports`.
pub fn agent(file: &Path, ports: &[String]) -> Agent {
    agent_with(file, ports, &[])
}

/// `agent`, with `extra` arguments.
pub fn agent_with(file: &Path, ports: &[String], extra: &[&str]) -> Agent {
    let _ = std::fs::remove_file(file);
    let mut args = vec![
        "run".to_owned(),
        "--exporter".to_owned(),
        "file".to_owned(),
        "--output".to_owned(),
        file.to_str().unwrap().to_owned(),
        // Requests are told apart by their query (`id=N`).
        "--show-query".to_owned(),
    ];
    for port in ports {
        args.extend(["--port".to_owned(), port.clone()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args)
}

pub fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

// ------------------------------------------------------------------ programs

pub fn build_go(example: &str) -> Option<PathBuf> {
    super::go_build(&format!("examples/{example}"), &format!("shapes-{example}"))
}

/// `example` with its cgo dependency (`-tags cgotls`), host-linked and stripped (`-s -w`).
pub fn build_cgo_stripped(example: &str) -> Option<PathBuf> {
    super::go_build_with(
        &format!("examples/{example}"),
        &format!("shapes-{example}-cgo-stripped"),
        &["-tags", "cgotls", "-ldflags=-linkmode=external -s -w"],
    )
}

pub fn go_service(binary: &Path, name: &str, args: &[&str]) -> Listening {
    Listening::start(
        Command::new(binary)
            .args(args)
            .env("OTEL_SERVICE_NAME", name),
    )
}

/// GET `path` from `host:port` on a new connection, in one write; the status.
pub fn get(host: &str, port: &str, path: &str) -> u16 {
    let addr = format!("{host}:{port}");
    let mut stream = TcpStream::connect(&addr).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The spans of request `id`: its entry server span named `entry` at `service`, and the client
/// spans (and their servers) below it. Checks the /fanout tree: entry ← caller client (if
/// `caller` names its service), two client calls under the entry, each with one server span.
pub fn check_fanout(spans: &[Got], id: u64, service: &str, caller: Option<&str>, backend: &str) {
    let entry: Vec<&Got> = spans
        .iter()
        .filter(|s| {
            s.kind == 2 && s.service == service && s.name.contains("/fanout") && s.carries(id)
        })
        .collect();
    assert_eq!(entry.len(), 1, "request {id}: entry spans {entry:#?}");
    let entry = entry[0];
    if let Some(caller) = caller {
        let parent = spans
            .iter()
            .find(|s| s.id == entry.parent)
            .unwrap_or_else(|| panic!("request {id}: the entry span has no parent {entry:#?}"));
        assert_eq!(
            (parent.kind, parent.service.as_str()),
            (3, caller),
            "request {id}"
        );
        assert_child_of(entry, parent, &format!("request {id}: caller → entry"));
    }
    let calls: Vec<&Got> = spans
        .iter()
        .filter(|s| s.kind == 3 && s.service == service && s.carries(id) && s.name.contains("GET"))
        .collect();
    assert_eq!(calls.len(), 2, "request {id}: calls {calls:#?}");
    for call in calls {
        assert_child_of(call, entry, &format!("request {id}: entry → call"));
        let served: Vec<&Got> = spans
            .iter()
            .filter(|s| s.kind == 2 && s.parent == call.id)
            .collect();
        assert_eq!(served.len(), 1, "request {id}: servers of {call:#?}");
        assert_eq!(served[0].service, backend, "request {id}");
        assert_child_of(served[0], call, &format!("request {id}: call → server"));
    }
}
