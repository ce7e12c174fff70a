//! Privileged end to end (needs root, a kernel, Python and the Jaeger binary that `cargo xtask
//! test` builds): the OTLP backend goes away under steady traffic and comes back, as it does
//! when Jaeger or a collector restarts.
//!
//! The agent exports to a real Jaeger all-in-one over OTLP/HTTP. Jaeger is stopped while
//! requests keep coming (each with its own `traceparent`, so its trace id is known), then
//! started again on the same ports. Meanwhile its OTLP port is closed, or held by a receiver
//! that accepts and never answers, or by one that answers 503. The spans made meanwhile wait
//! in the agent's queue and are retried until Jaeger takes them: every request's trace must be
//! in Jaeger after the recovery, and the agent's summary must count nothing dropped.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use support::{
    Agent, HttpServer, http_get,
    jaeger::{AllInOnePorts, has_trace, jaeger_binary},
    require_privileges,
};
use wirespan::testing::cannot_run;

/// How long the backend stays down, and the request rate meanwhile.
const OUTAGE: Duration = Duration::from_secs(5);
const REQUEST_GAP: Duration = Duration::from_millis(50);

/// Wait until every trace in `traces` is in Jaeger; the ones still missing at the deadline.
fn missing_after(query: &str, traces: &[String], wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut missing: Vec<String> = traces.to_vec();
    while !missing.is_empty() && Instant::now() < deadline {
        missing.retain(|t| !has_trace(query, t));
        std::thread::sleep(Duration::from_millis(500));
    }
    missing
}

/// What holds the backend's OTLP port while Jaeger is down.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Nothing: connections are refused.
    Down,
    /// A receiver that accepts and never answers (the export times out).
    Silent,
    /// A receiver that answers every export `503 Service Unavailable`.
    Unavailable,
}

/// A fake receiver on `port` behaving as `outage` says, until stopped.
struct FakeReceiver {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl FakeReceiver {
    fn start(port: u16, outage: Outage) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        if let Outage::Unavailable = outage {
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_millis(200)))
                                .unwrap();
                            let mut request = vec![0u8; 1 << 16];
                            let _ = stream.read(&mut request);
                            let _ = stream.write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            );
                        } else {
                            held.push(stream);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

#[test]
fn privileged_export_outage_spans_made_while_the_backend_is_away_arrive_after_it_returns() {
    if !require_privileges() {
        return;
    }
    let Some(binary) = jaeger_binary() else {
        return cannot_run("no Jaeger binary: run through `cargo xtask test`, which builds it");
    };
    for outage in [Outage::Down, Outage::Silent, Outage::Unavailable] {
        outage_case(&binary, outage);
    }
}

fn outage_case(binary: &std::path::Path, outage: Outage) {
    let ports = AllInOnePorts::free();
    let jaeger = ports.start(binary);
    let query = ports.query();
    let server = HttpServer::start("127.0.0.1", &[("a.txt", b"hello")]);
    let addr = format!("127.0.0.1:{}", server.port);
    let endpoint = format!("http://127.0.0.1:{}", ports.otlp_http);
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "otlp",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-timeout",
        "2",
        "--port",
        &server.port.to_string(),
    ]);
    let mut sent = 0u64;
    let mut request = || {
        sent += 1;
        let trace = format!("{:08x}{:08x}{sent:016x}", std::process::id(), outage as u32);
        let header = format!("traceparent: 00-{trace}-{sent:016x}-01\r\n");
        assert_eq!(http_get(&addr, "/a.txt", &header), (200, "hello".into()));
        trace
    };

    let before: Vec<String> = (0..10).map(|_| request()).collect();
    let missing = missing_after(&query, &before, Duration::from_secs(30));
    assert!(
        missing.is_empty(),
        "{outage:?}: before the outage: {missing:?}"
    );

    drop(jaeger);
    let fake = match outage {
        Outage::Down => None,
        Outage::Silent | Outage::Unavailable => Some(FakeReceiver::start(ports.otlp_http, outage)),
    };
    let outage_end = Instant::now() + OUTAGE;
    let mut during = Vec::new();
    while Instant::now() < outage_end {
        during.push(request());
        std::thread::sleep(REQUEST_GAP);
    }
    if let Some(fake) = fake {
        fake.stop();
    }
    let _jaeger = ports.start(binary);
    let after: Vec<String> = (0..10).map(|_| request()).collect();
    let all: Vec<String> = during.iter().chain(&after).cloned().collect();
    let missing = missing_after(&query, &all, Duration::from_secs(60));
    let stopped = agent.stop();
    assert!(
        missing.is_empty(),
        "{outage:?}: {} of {} traces made during or after the outage never reached Jaeger, the first: {:?}\n{}",
        missing.len(),
        all.len(),
        &missing[..missing.len().min(3)],
        stopped.stderr
    );
    assert!(stopped.status.success(), "{}", stopped.stderr);
    for line in ["otlp export failing", "otlp export recovered"] {
        assert!(
            stopped.stderr.contains(line),
            "{outage:?}: {line}: {}",
            stopped.stderr
        );
    }
    assert!(
        stopped
            .stderr
            .contains("0 dropped (queue full), 0 dropped (export failed)"),
        "{outage:?}: {}",
        stopped.stderr
    );
}
