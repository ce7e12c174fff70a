//! The multi-host test's way to a real backend (privileged_hosts): Jaeger all-in-one
//! (`otel-config/jaeger-all-in-one.yaml`) and, in front of it, the OpenTelemetry Collector
//! gateway of `otel-config/collector-multihost.yaml`, run as shipped (the Jaeger binary is a
//! Collector distribution and runs it, as in privileged_jaeger). Both run in the hosts lab's
//! gateway namespace: the agents on the three hosts send OTLP/gRPC to the gateway's address on
//! the lab's bridge, the gateway forwards to Jaeger over that namespace's loopback, and the test
//! reads Jaeger's query API from a thread inside the namespace, so nothing listens or travels
//! outside the lab. Jaeger's spans come back as `HostSpan`s (`host.name` from the process
//! tags), so the checks of the agents' files apply to them unchanged.

use std::{
    collections::HashMap,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    hosts_lab::{GATEWAY_ADDR, HostsLab, in_netns, on_netns_thread},
    hosts_spans::HostSpan,
    http_get,
    jaeger::repo,
    shapes::Got,
};

/// The gateway's OTLP/gRPC port on `GATEWAY_ADDR`, where the agents send.
pub const GATEWAY_OTLP_GRPC: u16 = 4317;
/// The other ports, on the gateway namespace's loopback only (a namespace of its own: all free).
const GATEWAY_OTLP_HTTP: u16 = 4318;
const GATEWAY_PROMETHEUS: u16 = 8889;
const JAEGER_OTLP_GRPC: u16 = 14317;
const JAEGER_OTLP_HTTP: u16 = 14318;
const JAEGER_QUERY_HTTP: u16 = 16686;
const JAEGER_QUERY_GRPC: u16 = 16685;
const JAEGER_PROMETHEUS: u16 = 18888;

/// The agents' `--exporter otlp` arguments that send to the gateway.
#[must_use]
pub fn agent_args() -> Vec<String> {
    [
        "--exporter",
        "otlp",
        "--otlp-protocol",
        "grpc",
        "--otlp-endpoint",
        &format!("http://{GATEWAY_ADDR}:{GATEWAY_OTLP_GRPC}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A process of the gateway namespace (Jaeger, the Collector), its output in a log file:
/// SIGTERM when dropped, then killed if it lingers.
struct LabProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl LabProcess {
    /// Start the Jaeger binary with `config` and `env` in namespace `ns`; ready when `addr`
    /// (inside the namespace) accepts connections.
    fn start(
        name: &'static str,
        ns: &str,
        (binary, config): (&Path, &Path),
        env: &[(&str, String)],
        addr: (&str, u16),
    ) -> Result<Self, String> {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hosts-{ns}-{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = in_netns(ns, binary)
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", binary.display()))?;
        let process = Self { name, child, log };
        let listening = on_netns_thread(ns, || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(addr).is_err() {
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            true
        })?;
        if listening {
            Ok(process)
        } else {
            Err(format!(
                "{name} did not listen on {}:{} in 30 s; its log:\n{}",
                addr.0,
                addr.1,
                process.log_text()
            ))
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid (nsenter has become the program).
        unsafe { libc::kill(self.child.id().cast_signed(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                eprintln!("{} did not stop on SIGTERM; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Jaeger and the gateway Collector in front of it, running in the lab's gateway namespace.
pub struct Gateway {
    ns: String,
    // Dropped in this order: the gateway first, so it can flush to Jaeger.
    collector: LabProcess,
    _jaeger: LabProcess,
}

impl Gateway {
    /// Start Jaeger, then the gateway with collector-multihost.yaml; an error says what did
    /// not start, with its log.
    pub fn start(lab: &HostsLab, binary: &Path) -> Result<Self, String> {
        let ns = lab.gateway_ns.as_str();
        let port = |p: u16| p.to_string();
        let local = |p: u16| format!("127.0.0.1:{p}");
        let jaeger = LabProcess::start(
            "jaeger",
            ns,
            (binary, &repo("otel-config/jaeger-all-in-one.yaml")),
            &[
                ("JAEGER_OTLP_GRPC_PORT", port(JAEGER_OTLP_GRPC)),
                ("JAEGER_OTLP_HTTP_PORT", port(JAEGER_OTLP_HTTP)),
                ("JAEGER_QUERY_HTTP_PORT", port(JAEGER_QUERY_HTTP)),
                ("JAEGER_QUERY_GRPC_PORT", port(JAEGER_QUERY_GRPC)),
                ("JAEGER_PROMETHEUS_PORT", port(JAEGER_PROMETHEUS)),
            ],
            // The receivers may come up after the query API: wait for the one the gateway uses.
            ("127.0.0.1", JAEGER_OTLP_GRPC),
        )?;
        let collector = LabProcess::start(
            "gateway",
            ns,
            (binary, &repo("otel-config/collector-multihost.yaml")),
            &[
                (
                    "OTLP_GRPC_ENDPOINT",
                    format!("{GATEWAY_ADDR}:{GATEWAY_OTLP_GRPC}"),
                ),
                ("OTLP_HTTP_ENDPOINT", local(GATEWAY_OTLP_HTTP)),
                ("TRACES_BACKEND_ENDPOINT", local(JAEGER_OTLP_GRPC)),
                ("PROMETHEUS_ENDPOINT", local(GATEWAY_PROMETHEUS)),
            ],
            (GATEWAY_ADDR, GATEWAY_OTLP_GRPC),
        )?;
        Ok(Self {
            ns: ns.to_owned(),
            collector,
            _jaeger: jaeger,
        })
    }

    /// The trace `trace_id` as Jaeger's query API returns it, polled until it holds `want`
    /// spans or `within` is over (the gateway batches for up to 2 s); with the gateway's log
    /// when Jaeger has fewer.
    pub fn trace(
        &self,
        trace_id: &str,
        want: usize,
        within: Duration,
    ) -> Result<Vec<HostSpan>, String> {
        let path = format!("/api/traces/{trace_id}");
        let query = format!("127.0.0.1:{JAEGER_QUERY_HTTP}");
        let spans = on_netns_thread(&self.ns, || {
            let deadline = Instant::now() + within;
            loop {
                // 404 until the first span of the trace is stored.
                let (status, body) = http_get(&query, &path, "");
                let spans = if status == 200 {
                    jaeger_spans(&body)
                } else {
                    Vec::new()
                };
                if spans.len() >= want || Instant::now() > deadline {
                    return spans;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })?;
        if spans.len() < want {
            return Err(format!(
                "Jaeger holds {} spans of trace {trace_id} (want {want}); the gateway's log:\n{}",
                spans.len(),
                self.collector.log_text()
            ));
        }
        Ok(spans)
    }
}

/// The spans of Jaeger's `/api/traces/{id}` answer, as the agents' files would give them.
fn jaeger_spans(body: &str) -> Vec<HostSpan> {
    // Jaeger answers with chunked encoding: take the JSON object between the chunk sizes.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |i| i + 1);
    let Ok(answer) = serde_json::from_str::<Value>(&body[start..end]) else {
        return Vec::new();
    };
    let Some(trace) = answer["data"].as_array().and_then(|d| d.first()) else {
        return Vec::new();
    };
    let processes = &trace["processes"];
    let mut spans = Vec::new();
    for s in trace["spans"].as_array().into_iter().flatten() {
        let process = &processes[s["processID"].as_str().unwrap_or_default()];
        let resource = tags(&process["tags"]);
        let attrs = tags(&s["tags"]);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let parent = s["references"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["refType"] == "CHILD_OF")
            .map(|r| text(&r["spanID"]))
            .unwrap_or_default();
        spans.push(HostSpan {
            host: resource.get("host.name").cloned().unwrap_or_default(),
            pid: resource.get("process.pid").cloned().unwrap_or_default(),
            span: Got {
                service: text(&process["serviceName"]),
                name: text(&s["operationName"]),
                // OTLP's numbers, as in the files.
                kind: match attrs.get("span.kind").map(String::as_str) {
                    Some("server") => 2,
                    Some("client") => 3,
                    _ => 0,
                },
                trace: text(&s["traceID"]),
                id: text(&s["spanID"]),
                parent,
                attrs,
            },
        });
    }
    spans
}

/// Jaeger's `[{key, type, value}]` tags as text.
fn tags(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let value = match &t["value"] {
                Value::String(v) => v.clone(),
                other => other.to_string(),
            };
            Some((t["key"].as_str()?.to_owned(), value))
        })
        .collect()
}
