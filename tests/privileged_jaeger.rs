//! Privileged end to end against real backends (needs root, a kernel, Go and a Jaeger v2 binary,
//! which `cargo xtask test` builds once from its Go module and passes in `WIRESPAN_JAEGER`).
//!
//! The example services run as in `cargo xtask demo`: front (gin) → relay (net/http) →
//! echo-grpc (grpc-go, unary). The agent sends OTLP/HTTP to an OpenTelemetry Collector running
//! `otel-config/collector-jaeger.yaml` as shipped (the Jaeger binary is a collector distribution
//! and runs it), which forwards traces over OTLP/gRPC to Jaeger all-in-one
//! (`otel-config/jaeger-all-in-one.yaml`) and serves the service-graph metrics for Prometheus.
//! Every process is started on free loopback ports and stopped by the test.
//!
//! Checked through Jaeger's query API: each front-end request (sent with its own `traceparent`)
//! is exactly one trace spanning every service, every parent right, and both ends of each hop
//! name the same five-tuple; so is a server-streaming call through relay. Jaeger's dependencies API shows the edges; the collector's
//! Prometheus endpoint shows the Tempo-named service-graph metrics with exact counts.

mod support;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Agent, Listening, http_get as get,
    jaeger::{Backend, free_port, get_json, jaeger_binary, repo},
    require_privileges,
};
use wirespan::testing::cannot_run;

fn build_example(name: &str) -> Option<PathBuf> {
    support::go_build(&format!("examples/{name}"), &format!("e2e-{name}"))
}

/// A span as Jaeger returns it.
#[derive(Debug)]
struct JSpan {
    id: String,
    parent: Option<String>,
    service: String,
    operation: String,
    kind: String,
    tags: HashMap<String, String>,
}

fn spans_of(trace: &Value) -> Vec<JSpan> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let tags: HashMap<String, String> = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let value = match &t["value"] {
                        Value::String(v) => v.clone(),
                        other => other.to_string(),
                    };
                    (t["key"].as_str().unwrap().to_owned(), value)
                })
                .collect();
            let parent = s["references"].as_array().and_then(|refs| {
                refs.iter()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .map(|r| r["spanID"].as_str().unwrap().to_owned())
            });
            JSpan {
                id: s["spanID"].as_str().unwrap().to_owned(),
                parent,
                service: processes[s["processID"].as_str().unwrap()]["serviceName"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                operation: s["operationName"].as_str().unwrap().to_owned(),
                kind: tags.get("span.kind").cloned().unwrap_or_default(),
                tags,
            }
        })
        .collect()
}

/// Poll Jaeger for a trace until it has `want` spans (spans arrive as the agent settles them).
fn fetch_trace(query: &str, trace_id: &str, want: usize) -> Vec<JSpan> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        // 404 until the first span of the trace is stored.
        let (status, _) = get(query, &format!("/api/traces/{trace_id}"), "");
        let answer = if status == 200 {
            get_json(query, &format!("/api/traces/{trace_id}"))
        } else {
            Value::Null
        };
        let spans = answer["data"]
            .as_array()
            .and_then(|d| d.first())
            .map(spans_of)
            .unwrap_or_default();
        if spans.len() >= want || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The spans of one trace whose parent is `parent`.
fn children<'a>(spans: &'a [JSpan], parent: &str) -> Vec<&'a JSpan> {
    spans
        .iter()
        .filter(|s| s.parent.as_deref() == Some(parent))
        .collect()
}

/// A client span and the server span it caused in another service: one connection seen from
/// both ends, so each end's local address is the other's peer.
fn assert_same_five_tuple(client: &JSpan, server: &JSpan) {
    let c = &client.tags;
    let s = &server.tags;
    for (mine, theirs) in [
        ("network.local.address", "network.peer.address"),
        ("network.local.port", "network.peer.port"),
        ("network.peer.address", "network.local.address"),
        ("network.peer.port", "network.local.port"),
    ] {
        assert_eq!(
            c.get(mine),
            s.get(theirs),
            "{mine} of {client:#?} against {theirs} of {server:#?}"
        );
    }
    assert_eq!(c.get("network.transport").map(String::as_str), Some("tcp"));
    assert_eq!(s.get("network.transport").map(String::as_str), Some("tcp"));
    assert_eq!(c["server.port"], s["server.port"]);
}

/// The single child of `parent` in `service` with `kind` (and `operation` when given).
fn one_child<'a>(
    spans: &'a [JSpan],
    parent: &JSpan,
    service: &str,
    kind: &str,
    operation: &str,
) -> &'a JSpan {
    let found = children(spans, &parent.id);
    assert_eq!(found.len(), 1, "one child of {parent:#?}, got {found:#?}");
    let child = found[0];
    assert_eq!(
        (child.service.as_str(), child.kind.as_str()),
        (service, kind),
        "{child:#?}"
    );
    assert!(child.operation.starts_with(operation), "{child:#?}");
    child
}

/// front client GET /relay → relay server → relay client Say → echo-grpc server Say, each
/// parent right and each hop's two ends on one five-tuple; the gRPC status at the end.
fn check_relay_chain(spans: &[JSpan], front_call: &JSpan, grpc_status: &str) {
    assert_eq!(
        (front_call.service.as_str(), front_call.kind.as_str()),
        ("front", "client")
    );
    assert_eq!(front_call.operation, "GET /relay");
    let relay_server = one_child(spans, front_call, "relay", "server", "GET /relay");
    assert_same_five_tuple(front_call, relay_server);
    let relay_call = one_child(
        spans,
        relay_server,
        "relay",
        "client",
        "wirespan.echo.Echo/Say",
    );
    let echo_server = one_child(
        spans,
        relay_call,
        "echo-grpc",
        "server",
        "wirespan.echo.Echo/Say",
    );
    assert_same_five_tuple(relay_call, echo_server);
    assert_eq!(
        echo_server
            .tags
            .get("rpc.response.status_code")
            .map(String::as_str),
        Some(grpc_status),
        "{echo_server:#?}"
    );
    assert!(children(spans, &echo_server.id).is_empty());
}

/// Check one /echo or /fanout trace: the test's client span (the root, child of the sent
/// traceparent) → front's server span → one or two relay chains.
fn check_trace(spans: &[JSpan], sent_parent: &str, path: &str, calls: usize, grpc_status: &str) {
    let want = 2 + calls * 4;
    assert_eq!(spans.len(), want, "one trace of {want} spans: {spans:#?}");
    let roots = children(spans, sent_parent);
    assert_eq!(roots.len(), 1, "the caller's span is the root: {spans:#?}");
    let root = roots[0];
    assert_eq!(root.kind, "client");
    assert_eq!(root.operation, format!("GET {path}"));
    let front_server = one_child(spans, root, "front", "server", &format!("GET {path}"));
    assert_same_five_tuple(root, front_server);
    let calls_made = children(spans, &front_server.id);
    assert_eq!(calls_made.len(), calls, "{spans:#?}");
    for call in calls_made {
        check_relay_chain(spans, call, grpc_status);
    }
}

/// A server-streaming call: the test's client span (the root) → relay's server span GET /count
/// → relay's client span Count (opened with NewStream, no Invoke) → echo-grpc's server span.
fn check_stream_trace(spans: &[JSpan], sent_parent: &str) {
    assert_eq!(spans.len(), 4, "one trace of 4 spans: {spans:#?}");
    let roots = children(spans, sent_parent);
    assert_eq!(roots.len(), 1, "the caller's span is the root: {spans:#?}");
    let root = roots[0];
    assert_eq!(
        (root.kind.as_str(), root.operation.as_str()),
        ("client", "GET /count")
    );
    let relay_server = one_child(spans, root, "relay", "server", "GET /count");
    assert_same_five_tuple(root, relay_server);
    let relay_call = one_child(
        spans,
        relay_server,
        "relay",
        "client",
        "wirespan.echo.Echo/Count",
    );
    let echo_server = one_child(
        spans,
        relay_call,
        "echo-grpc",
        "server",
        "wirespan.echo.Echo/Count",
    );
    assert_same_five_tuple(relay_call, echo_server);
}

/// The value of a Prometheus sample line `name{...client="c"...server="s"...} value`.
fn prometheus_value(text: &str, name: &str, client: &str, server: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            l.contains(&format!("client=\"{client}\""))
                && l.contains(&format!("server=\"{server}\""))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Jaeger all-in-one and, in front of it, the collector running collector-jaeger.yaml.
struct Backends {
    /// Jaeger's query API, the collector's OTLP/HTTP and Prometheus endpoints (host:port).
    query: String,
    collector_http: String,
    prometheus: String,
    // Dropped in this order: the collector first, so it can flush to Jaeger.
    _collector: Backend,
    _jaeger: Backend,
}

fn start_backends(binary: &Path) -> Backends {
    let [
        jaeger_otlp,
        query,
        collector_grpc,
        collector_http,
        prometheus,
    ] = [(); 5].map(|()| free_port());
    let port = |p: u16| p.to_string();
    let endpoint = |p: u16| format!("127.0.0.1:{p}");
    let jaeger = Backend::start(
        "jaeger",
        binary,
        &repo("otel-config/jaeger-all-in-one.yaml"),
        &[
            ("JAEGER_OTLP_GRPC_PORT", port(jaeger_otlp)),
            ("JAEGER_OTLP_HTTP_PORT", port(free_port())),
            ("JAEGER_QUERY_HTTP_PORT", port(query)),
            ("JAEGER_QUERY_GRPC_PORT", port(free_port())),
            ("JAEGER_PROMETHEUS_PORT", port(free_port())),
        ],
        query,
    );
    let collector = Backend::start(
        "collector",
        binary,
        &repo("otel-config/collector-jaeger.yaml"),
        &[
            ("OTLP_GRPC_ENDPOINT", endpoint(collector_grpc)),
            ("OTLP_HTTP_ENDPOINT", endpoint(collector_http)),
            ("JAEGER_OTLP_ENDPOINT", endpoint(jaeger_otlp)),
            ("PROMETHEUS_ENDPOINT", endpoint(prometheus)),
        ],
        collector_http,
    );
    Backends {
        query: endpoint(query),
        collector_http: endpoint(collector_http),
        prometheus: endpoint(prometheus),
        _collector: collector,
        _jaeger: jaeger,
    }
}

/// A request sent: its trace id and parent span id (in the traceparent), path, calls from
/// front to relay (0: the request went to relay's /count), and the gRPC status the chains end
/// with.
struct Sent {
    trace_id: String,
    parent: String,
    path: &'static str,
    calls: usize,
    grpc_status: &'static str,
}

impl Sent {
    fn spans(&self) -> usize {
        if self.calls == 0 {
            4
        } else {
            2 + self.calls * 4
        }
    }
}

/// Each request with its own trace id: /echo (one chain), /fanout (two parallel chains from
/// child goroutines), one that fails at the gRPC service (NotFound → 502 up the chain), and a
/// server-streaming call through relay's /count. Eight front → relay calls in all, one of them
/// failed; nine relay → echo-grpc calls.
fn send_requests(front: &str, relay: &str) -> Vec<Sent> {
    let mut sent = Vec::new();
    for (n, (path, query, calls, status, grpc_status)) in [
        ("/echo", "msg=e2e-0", 1, 200, "OK"),
        ("/echo", "msg=e2e-1", 1, 200, "OK"),
        ("/echo", "msg=e2e-2", 1, 200, "OK"),
        ("/fanout", "msg=fan-0", 2, 200, "OK"),
        ("/fanout", "msg=fan-1", 2, 200, "OK"),
        ("/echo", "msg=fail", 1, 502, "NOT_FOUND"),
        ("/count", "n=3", 0, 200, "OK"),
    ]
    .into_iter()
    .enumerate()
    {
        let trace_id = format!("{:032x}", 0x5e2e_0000_u128 + n as u128);
        let parent = format!("{:016x}", 0xa11ce_u64 + n as u64);
        let (got, body) = get(
            if calls == 0 { relay } else { front },
            &format!("{path}?{query}"),
            &format!("traceparent: 00-{trace_id}-{parent}-01\r\n"),
        );
        assert_eq!(got, status, "{path}?{query}: {body}");
        sent.push(Sent {
            trace_id,
            parent,
            path,
            calls,
            grpc_status,
        });
    }
    sent
}

/// Jaeger's dependencies: the test → front → relay → echo-grpc, with the call counts.
fn check_dependencies(query: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let deps = get_json(
        query,
        &format!("/api/dependencies?endTs={now_ms}&lookback=3600000"),
    );
    let edges: HashMap<(String, String), u64> = deps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let name = |k: &str| d[k].as_str().unwrap().to_owned();
            (
                (name("parent"), name("child")),
                d["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    let edge = |a: &str, b: &str| edges.get(&(a.to_owned(), b.to_owned())).copied();
    assert_eq!(edge("front", "relay"), Some(8), "{deps}");
    assert_eq!(edge("relay", "echo-grpc"), Some(9), "{deps}");
    for callee in ["front", "relay"] {
        assert!(
            edges
                .keys()
                .any(|(a, b)| b == callee && !["front", "relay"].contains(&a.as_str())),
            "the test's calls into {callee}: {deps}"
        );
    }
    // Jaeger's in-memory store also counts each span's link to its parent in the same service
    // (server → its own client calls); across services there are exactly these four.
    let across = edges.keys().filter(|(a, b)| a != b).count();
    assert_eq!(across, 4, "no other edges: {deps}");
}

/// The service graph as metrics, through the collector's Prometheus endpoint: exact counts.
/// The agent exports every second; wait for the last request to show.
fn check_metrics(prometheus: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (_, text) = get(prometheus, "/metrics", "");
        let total =
            |c: &str, s: &str| prometheus_value(&text, "traces_service_graph_request_total", c, s);
        if (total("front", "relay") == Some(8.0) && total("relay", "echo-grpc") == Some(9.0))
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for (client, server, requests) in [("front", "relay", 8.0), ("relay", "echo-grpc", 9.0)] {
        let value = |name: &str| prometheus_value(&metrics, name, client, server);
        for (name, want) in [
            ("traces_service_graph_request_total", requests),
            ("traces_service_graph_request_failed_total", 1.0),
            (
                "traces_service_graph_request_server_seconds_count",
                requests,
            ),
            (
                "traces_service_graph_request_client_seconds_count",
                requests,
            ),
        ] {
            assert_eq!(
                value(name),
                Some(want),
                "{name} {client}->{server}:\n{metrics}"
            );
        }
    }
}

#[test]
fn privileged_jaeger_shows_one_trace_per_front_end_request_across_all_services() {
    if !require_privileges() {
        return;
    }
    let Some(binary) = jaeger_binary() else {
        cannot_run(
            "no Jaeger binary: run through `cargo xtask test`, which builds it once (or set WIRESPAN_JAEGER)",
        );
        return;
    };
    let (Some(grpc_echo), Some(gin_front)) =
        (build_example("grpc-echo"), build_example("gin-front"))
    else {
        cannot_run("cannot build examples/grpc-echo and examples/gin-front");
        return;
    };
    let backends = start_backends(&binary);

    // The services, as in the demo, before the agent (it attaches to running Go programs).
    let service = |binary: &Path, name: &str, args: &[&str]| {
        Listening::start(
            Command::new(binary)
                .args(args)
                .env("OTEL_SERVICE_NAME", name),
        )
    };
    let echo = service(&grpc_echo, "echo-grpc", &["server"]);
    let relay = service(&grpc_echo, "relay", &["relay", "--target", &echo.addr]);
    let front = service(&gin_front, "front", &["--backend", &relay.addr]);
    let collector_url = format!("http://{}", backends.collector_http);
    let agent = Agent::start_with_env(
        &[
            "run",
            "--exporter",
            "otlp",
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-endpoint",
            &collector_url,
            "--port",
            &front.port(),
            "--port",
            &relay.port(),
            "--port",
            &echo.port(),
        ],
        Stdio::null(),
        &[("OTEL_METRIC_EXPORT_INTERVAL", "1000")],
    );

    for sent in send_requests(&front.addr, &relay.addr) {
        let spans = fetch_trace(&backends.query, &sent.trace_id, sent.spans());
        if sent.calls == 0 {
            check_stream_trace(&spans, &sent.parent);
        } else {
            check_trace(
                &spans,
                &sent.parent,
                sent.path,
                sent.calls,
                sent.grpc_status,
            );
        }
    }
    check_dependencies(&backends.query);
    check_metrics(&backends.prometheus);

    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("0 dropped (export failed)")
            && stopped.stderr.contains("exports, 0 failed"),
        "{}",
        stopped.stderr
    );
}
