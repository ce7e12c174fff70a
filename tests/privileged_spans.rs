//! Privileged end to end (needs root, a kernel and Go): spans with parent links, exported over
//! OTLP to real receivers in this test (gRPC: tonic with the opentelemetry-proto trace service;
//! HTTP/protobuf: hyper + prost). This test process is the client; it calls service A
//! (examples/http-hello, OTEL_SERVICE_NAME=front), whose /fanout handler calls service B
//! (another http-hello, OTEL_SERVICE_NAME=back) twice in parallel from child goroutines. Every
//! request must be exactly one trace of six spans with every parent right; an inbound
//! `traceparent` is honoured; and under 64 concurrent clients no span gets a wrong parent. A
//! non-Go chain (curl → Python) pairs by five-tuple and sequence number, through the file exporter.

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, any_value},
    metrics::v1::metric,
};
use support::{Agent, Listening, require_privileges};
use wirespan::testing::cannot_run;

type Requests = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;
type MetricRequests = Arc<Mutex<Vec<ExportMetricsServiceRequest>>>;

/// The tests of this file build the same example and run agents that watch each other's
/// services; they run one at a time (see privileged_go.rs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ------------------------------------------------------------------ receivers

struct Collector(Requests);
struct MetricsCollector(MetricRequests);

#[tonic::async_trait]
impl MetricsService for MetricsCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A receiver on a thread of its own; its URL and what it received.
struct Receiver {
    url: String,
    requests: Requests,
    metrics: MetricRequests,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start_receiver(protocol: &str) -> Receiver {
    let requests: Requests = Arc::default();
    let metrics: MetricRequests = Arc::default();
    let addr = free_addr();
    let shared = Arc::clone(&requests);
    let shared_metrics = Arc::clone(&metrics);
    let grpc = protocol == "grpc";
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            if grpc {
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Collector(shared)))
                    .add_service(MetricsServiceServer::new(MetricsCollector(shared_metrics)))
                    .serve(addr)
                    .await
                    .unwrap();
            } else {
                serve_http(addr, shared, shared_metrics).await;
            }
        });
    });
    // Wait until it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "receiver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Receiver {
        url: format!("http://{addr}"),
        requests,
        metrics,
    }
}

/// OTLP/HTTP: POST /v1/traces with a protobuf `ExportTraceServiceRequest`, /v1/metrics with an
/// `ExportMetricsServiceRequest`.
async fn serve_http(addr: SocketAddr, requests: Requests, metrics: MetricRequests) {
    use http_body_util::{BodyExt, Full};
    use prost::Message;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let requests = Arc::clone(&requests);
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let requests = Arc::clone(&requests);
                    let metrics = Arc::clone(&metrics);
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        let reply = match path.as_str() {
                            "/v1/traces" => {
                                let decoded = ExportTraceServiceRequest::decode(body).unwrap();
                                requests.lock().unwrap().push(decoded);
                                ExportTraceServiceResponse::default().encode_to_vec()
                            }
                            "/v1/metrics" => {
                                let decoded = ExportMetricsServiceRequest::decode(body).unwrap();
                                metrics.lock().unwrap().push(decoded);
                                ExportMetricsServiceResponse::default().encode_to_vec()
                            }
                            other => panic!("unexpected OTLP path {other}"),
                        };
                        let mut response =
                            hyper::Response::new(Full::new(bytes::Bytes::from(reply)));
                        response
                            .headers_mut()
                            .insert("content-type", "application/x-protobuf".parse().unwrap());
                        Ok::<_, hyper::Error>(response)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The last value the receiver got of a service-graph counter, or a histogram's count, for the
/// edge `client` → `server` (the metrics are cumulative).
fn graph_value(
    metrics: &[ExportMetricsServiceRequest],
    name: &str,
    client: &str,
    server: &str,
) -> u64 {
    let mut last = 0;
    for m in metrics
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == name)
    {
        let edge = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|kv| kv.key == k)
                    .map(|kv| text(kv.value.as_ref()))
            };
            get("client").as_deref() == Some(client) && get("server").as_deref() == Some(server)
        };
        match &m.data {
            Some(metric::Data::Sum(sum)) => {
                for p in sum.data_points.iter().filter(|p| edge(&p.attributes)) {
                    if let Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v),
                    ) = p.value
                    {
                        last = v.cast_unsigned();
                    }
                }
            }
            Some(metric::Data::Histogram(h)) => {
                for p in h.data_points.iter().filter(|p| edge(&p.attributes)) {
                    last = p.count;
                }
            }
            other => panic!("{name}: unexpected data {other:?}"),
        }
    }
    last
}

// ------------------------------------------------------------------ received spans

/// A received span, flattened.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    /// 2 server, 3 client.
    kind: i32,
    name: String,
    attrs: HashMap<String, String>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn flatten(requests: &[ExportTraceServiceRequest]) -> Vec<Got> {
    let mut out = Vec::new();
    for request in requests {
        for rs in &request.resource_spans {
            let resource: HashMap<String, String> = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                .collect();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(Got {
                        service: resource.get("service.name").cloned().unwrap_or_default(),
                        trace: s.trace_id.clone(),
                        id: s.span_id.clone(),
                        parent: s.parent_span_id.clone(),
                        kind: s.kind,
                        name: s.name.clone(),
                        attrs: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------------ services

fn build_hello() -> Option<PathBuf> {
    support::go_build("examples/http-hello", "spans-http-hello")
}

/// An http-hello named `name` (its OTEL_SERVICE_NAME).
fn start_service(binary: &Path, name: &str, args: &[&str]) -> Listening {
    Listening::start(
        Command::new(binary)
            .args(args)
            .env("OTEL_SERVICE_NAME", name),
    )
}

/// GET /fanout?id=N on a new connection (optionally with a traceparent); the status.
fn fanout(addr: &str, id: u64, traceparent: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    let extra = traceparent.map_or_else(String::new, |t| format!("traceparent: {t}\r\n"));
    let request =
        format!("GET /fanout?id={id} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One scenario: the services, a receiver, the agent exporting to it; `drive` makes the
/// requests (given A's address) and returns their ids. Returns the received spans.
fn scenario(
    protocol: &str,
    drive: impl FnOnce(&str) -> Vec<u64>,
) -> Option<(Vec<Got>, Vec<u64>, Vec<ExportMetricsServiceRequest>)> {
    let Some(binary) = build_hello() else {
        cannot_run("cannot build examples/http-hello");
        return None;
    };
    let back = start_service(&binary, "back", &[]);
    let front = start_service(&binary, "front", &["--backend", &back.addr]);
    let receiver = start_receiver(protocol);
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "otlp",
        "--otlp-protocol",
        protocol,
        "--otlp-endpoint",
        &receiver.url,
        "--show-query",
        "--port",
        &front.port(),
        "--port",
        &back.port(),
    ]);
    let ids = drive(&front.addr);
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let summary = stopped
        .stderr
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        stopped
            .stderr
            .contains("0 dropped (queue full), 0 dropped (export failed)"),
        "{summary}"
    );
    assert!(
        stopped.stderr.contains("exports, 0 failed"),
        "service graph metrics: {summary}"
    );
    let got = flatten(&receiver.requests.lock().unwrap());
    let metrics = receiver.metrics.lock().unwrap().clone();
    Some((got, ids, metrics))
}

/// The received spans by trace, and the client roots by their request's query.
struct Index<'a> {
    by_trace: HashMap<&'a [u8], Vec<&'a Got>>,
    roots: HashMap<&'a str, &'a Got>,
}

impl<'a> Index<'a> {
    fn new(spans: &'a [Got]) -> Self {
        let mut by_trace: HashMap<&[u8], Vec<&Got>> = HashMap::new();
        let mut roots = HashMap::new();
        for s in spans {
            by_trace.entry(&s.trace).or_default().push(s);
            if s.kind == 3
                && s.name == "GET /fanout"
                && let Some(query) = s.attrs.get("url.query")
            {
                roots.insert(query.as_str(), s);
            }
        }
        Self { by_trace, roots }
    }

    /// Request `id`'s trace: its six spans with every parent right. Returns the trace id.
    fn check(&self, id: u64) -> &'a [u8] {
        let query = format!("id={id}");
        let root = self
            .roots
            .get(query.as_str())
            .unwrap_or_else(|| panic!("request {id}: no client span"));
        let trace = &self.by_trace[root.trace.as_slice()];
        let child_of = |parent: &Got| -> Vec<&Got> {
            trace
                .iter()
                .copied()
                .filter(|s| s.parent == parent.id)
                .collect()
        };
        let front_server = child_of(root);
        assert_eq!(front_server.len(), 1, "request {id}: {trace:#?}");
        let front_server = front_server[0];
        assert_eq!(
            (front_server.kind, front_server.service.as_str()),
            (2, "front")
        );
        assert_eq!(front_server.name, "GET /fanout");
        let calls = child_of(front_server);
        assert_eq!(
            calls.len(),
            2,
            "request {id}: two parallel calls: {trace:#?}"
        );
        for call in calls {
            assert_eq!(
                (call.kind, call.service.as_str(), call.name.as_str()),
                (3, "front", "GET /hello")
            );
            let served = child_of(call);
            assert_eq!(served.len(), 1, "request {id}: {trace:#?}");
            let served = served[0];
            assert_eq!((served.kind, served.service.as_str()), (2, "back"));
            // The call that caused it, by its own request id; and the same connection seen
            // from both ends.
            assert!(
                served.attrs["url.query"].ends_with(&query),
                "request {id}: {:?}",
                served.attrs
            );
            assert_eq!(
                served.attrs["client.port"],
                call.attrs["network.local.port"]
            );
        }
        assert_eq!(
            trace.len(),
            6,
            "request {id}: exactly one trace: {trace:#?}"
        );
        &root.trace
    }
}

fn sequential_with_traceparent(protocol: &str) {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let Some((spans, ids, metrics)) = scenario(protocol, |front| {
        let ids: Vec<u64> = (0..20).collect();
        for &id in &ids {
            let traceparent = (id == 0).then_some(TRACEPARENT);
            assert_eq!(fanout(front, id, traceparent), 200);
        }
        ids
    }) else {
        return;
    };
    let index = Index::new(&spans);
    let traces: std::collections::HashSet<_> = ids.iter().map(|&id| index.check(id)).collect();
    assert_eq!(traces.len(), ids.len(), "one trace per request");
    // The traceparent was honoured: request 0's trace is the caller's, its root the caller's
    // span's child.
    let adopted: Vec<&Got> = spans
        .iter()
        .filter(|s| s.trace == hex("4bf92f3577b34da6a3ce929d0e0e4736"))
        .collect();
    assert_eq!(adopted.len(), 6, "{adopted:#?}");
    assert!(adopted.iter().any(|s| s.parent == hex("00f067aa0ba902b7")));
    // The service graph, as metrics at the same endpoint: front called back twice per request,
    // none failed, and each call was timed at both ends.
    for name in [
        "traces_service_graph_request_total",
        "traces_service_graph_request_server_seconds",
        "traces_service_graph_request_client_seconds",
    ] {
        assert_eq!(graph_value(&metrics, name, "front", "back"), 40, "{name}");
    }
    assert_eq!(
        graph_value(
            &metrics,
            "traces_service_graph_request_failed_total",
            "front",
            "back"
        ),
        0
    );
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn privileged_spans_over_otlp_grpc_form_one_trace_per_request_with_every_parent_right() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    sequential_with_traceparent("grpc");
}

#[test]
fn privileged_spans_over_otlp_http_form_one_trace_per_request_with_every_parent_right() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    sequential_with_traceparent("http/protobuf");
}

#[test]
fn privileged_spans_under_64_concurrent_clients_keep_every_parent_right() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some((spans, ids, _)) = scenario("grpc", |front| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let threads: Vec<_> = (0..64u64)
            .map(|t| {
                let front = front.to_owned();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let id = t * 1_000_000 + n;
                        assert_eq!(fanout(&front, id, None), 200);
                        ids.push(id);
                        n += 1;
                    }
                    ids
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }) else {
        return;
    };
    assert!(ids.len() > 64, "{} requests", ids.len());
    let index = Index::new(&spans);
    let traces: std::collections::HashSet<_> = ids.iter().map(|&id| index.check(id)).collect();
    assert_eq!(traces.len(), ids.len(), "one trace per request");
    assert_eq!(
        spans.len(),
        6 * ids.len(),
        "every request has its spans, and no others ({} requests)",
        ids.len()
    );
    eprintln!(
        "{} concurrent requests, {} spans, every parent right",
        ids.len(),
        spans.len()
    );
}

/// A non-Go chain: curl calls a Python http.server, whose handler thread calls another. No
/// uprobes: server spans' parents are the client spans at the other end (mirrored five-tuple and
/// the request's TCP sequence number), and the Python client span's parent is the request its
/// thread was serving. Exported with the file exporter (OTLP JSON lines, read back here).
#[test]
fn privileged_spans_of_curl_and_python_pair_by_five_tuple_sequence_number_and_thread() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    if Command::new("curl").arg("--version").output().is_err() {
        return cannot_run("curl is not installed");
    }
    // front serves /via/<back>/a.txt by fetching it from back on its own thread.
    let back = support::HttpServer::start("127.0.0.1", &[("a.txt", b"hello")]);
    let front = support::HttpServer::start("127.0.0.1", &[]);
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("spans-curl-python.jsonl");
    let (front_port, back_port) = (front.port.to_string(), back.port.to_string());
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "file",
        "--output",
        file.to_str().unwrap(),
        "--port",
        &front_port,
        "--port",
        &back_port,
    ]);
    let url = format!("http://127.0.0.1:{front_port}/via/{back_port}/a.txt");
    for _ in 0..5 {
        let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
        assert_eq!(out.stdout, b"hello");
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // One export request per line, in the OTLP JSON mapping.
    let spans = support::file_spans(&file);
    let of = |service: &str, kind: u64| -> Vec<&serde_json::Value> {
        spans
            .iter()
            .filter(|(s, span)| s.starts_with(service) && span["kind"] == kind)
            .map(|(_, span)| span)
            .collect()
    };
    let curl = of("curl", 3);
    // The executable's name (python3.11 and the like): Python sets no OTEL_SERVICE_NAME here.
    let servers = of("python3", 2);
    let python_clients = of("python3", 3);
    assert_eq!(
        (curl.len(), servers.len(), python_clients.len()),
        (5, 10, 5),
        "{spans:#?}"
    );
    let by_id = |id: &serde_json::Value| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s["spanId"] == *id)
            .unwrap_or_else(|| panic!("no span {id}"))
    };
    for call in &python_clients {
        // Inside front: the call to back was made on the thread serving the /via request.
        let parent = by_id(&call["parentSpanId"]);
        assert_eq!(parent["kind"], 2);
        assert!(
            parent["name"].as_str().unwrap().starts_with("GET /via/"),
            "{parent}"
        );
        // Across processes: curl → front, by five-tuple and sequence number.
        let root = by_id(&parent["parentSpanId"]);
        assert!(curl.contains(&root), "{root}");
        assert_eq!(root["traceId"], call["traceId"]);
        // And front → back.
        let served: Vec<_> = servers
            .iter()
            .filter(|s| s["parentSpanId"] == call["spanId"])
            .collect();
        assert_eq!(served.len(), 1, "{call}");
        assert_eq!(served[0]["name"], "GET /a.txt");
        assert_eq!(served[0]["traceId"], call["traceId"]);
    }
}
