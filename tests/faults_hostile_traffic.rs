//! Fault suite, hostile traffic (needs root, a kernel, Python and Go): clients that write
//! hand-made malformed bytes to traced servers, while well-formed traffic runs beside them on
//! other connections.
//!
//! The servers are the Python keep-alive server (HTTP/1), examples/http-hello (Go net/http,
//! HTTP/1) and examples/grpc-echo (grpc-go, HTTP/2 with prior knowledge). The hostile bytes are
//! written over plain TCP sockets from this test: HTTP/1 heads over every limit, broken chunk
//! framing, garbage pipelined between requests; an HTTP/2 preface that is almost right, frames
//! whose length disagrees with their payload or their type, header blocks with HPACK indexes
//! past both tables, a flood of SETTINGS frames; gRPC messages whose length prefix lies.
//!
//! What it proves: the agent keeps running and exits cleanly; every good request became
//! exactly one server span with its method, path, status and trace id; no span carries a method
//! or path the hostile bytes did not hold as a well-formed request line; the agent's stop
//! summary counts what its decoders skipped; every traced server still answers.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use serde_json::Value;
use support::{
    HttpServer, Listening,
    faults::{Figures, pick},
    hostile::hostile_round,
    http_get, require_privileges,
    span_run::{Run, agent_to_file, attr},
};
use wirespan::testing::cannot_run;

/// The trace id grpc-echo's client puts in every unary call's `traceparent`.
const GRPC_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const SAY: &str = "wirespan.echo.Echo/Say";
const COUNT: &str = "wirespan.echo.Echo/Count";

/// (method, path) pairs that the hostile bytes hold as well-formed request lines: a span for
/// one of them is a correct decode of a valid part, not an invention. `_OTHER` is what an
/// unknown but well-formed method token becomes under the HTTP semantic conventions.
const VALID_PARTS: [(&str, &str); 6] = [
    ("GET", "/hostile/oversized"),
    ("POST", "/echo"),
    ("GET", "/hostile/pipelined"),
    ("GET", "/hostile/after-garbage"),
    ("_OTHER", "/"),
    ("GET", "/hostile/huge-length"),
];

// ---- the good traffic --------------------------------------------------------------------

/// The trace id of good request `i` to server `tag`.
fn good_trace(tag: u32, i: usize) -> String {
    format!("{:08x}{tag:08x}{i:016x}", std::process::id())
}

/// A good GET: (trace id, method, path, status) as its server span must show it.
#[derive(Debug, Clone)]
struct Good {
    trace: String,
    path: &'static str,
    port: u16,
    status: u16,
}

/// `count` good GETs alternating between the two HTTP servers, each on its own connection
/// with a `traceparent` of its own; what each answered.
fn good_http(python: &str, go: &str, count: usize) -> Vec<Good> {
    let mut done = Vec::new();
    for i in 0..count {
        let (tag, addr, path, query) = if i % 2 == 0 {
            (1, python, "/a.txt", "")
        } else {
            (2, go, "/hello", "?name=good")
        };
        let trace = good_trace(tag, i);
        let header = format!("traceparent: 00-{trace}-{:016x}-01\r\n", i + 1);
        let (status, _) = http_get(addr, &format!("{path}{query}"), &header);
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        done.push(Good {
            trace,
            path,
            port,
            status,
        });
    }
    done
}

/// Run grpc-echo's client: `calls` unary calls and `streams` Count streams; its output.
fn grpc_client(echo: &Path, addr: &str, calls: usize, streams: usize) -> (bool, String) {
    let out = Command::new(echo)
        .args(["client", "--target", addr])
        .args(["--requests", &calls.to_string()])
        .args(["--streams", &streams.to_string()])
        .env("OTEL_SERVICE_NAME", "hostile-grpc-client")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

// ---- the checks ----------------------------------------------------------------------------

/// Server spans (kind 2) on `port`.
fn servers_on(run: &Run, port: u16) -> Vec<&Value> {
    let port = port.to_string();
    run.spans
        .iter()
        .filter(|(_, s)| s["kind"] == 2 && attr(s, "server.port").as_deref() == Some(&port))
        .map(|(_, s)| s)
        .collect()
}

/// Good requests without exactly one right server span, described; and spans on the HTTP
/// ports that are neither good nor a valid part of the hostile bytes, described.
fn check_http(run: &Run, good: &[Good], ports: [u16; 2]) -> (Vec<String>, Vec<String>) {
    let mut by_trace: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut invented = Vec::new();
    for port in ports {
        for span in servers_on(run, port) {
            let trace = span["traceId"].as_str().unwrap_or_default();
            if good.iter().any(|g| g.trace == trace) {
                by_trace.entry(trace).or_default().push(span);
                continue;
            }
            let method = attr(span, "http.request.method").unwrap_or_default();
            let path = attr(span, "url.path").unwrap_or_default();
            // Bytes no decoder takes are a connection of unknown protocol: its turns are
            // `tcp` spans with bytes and times only (nothing read from the bytes), by design.
            let generic_turn = span["name"].as_str().is_some_and(|n| n.starts_with("tcp "))
                && [
                    "http.request.method",
                    "url.path",
                    "rpc.method",
                    "db.system.name",
                ]
                .iter()
                .all(|key| attr(span, key).is_none());
            if generic_turn {
                continue;
            }
            if !VALID_PARTS.contains(&(method.as_str(), path.as_str())) {
                invented.push(format!("on port {port}: {}", describe(span)));
            }
        }
    }
    let mut wrong = Vec::new();
    for g in good {
        let spans = by_trace.get(g.trace.as_str()).cloned().unwrap_or_default();
        let [span] = spans.as_slice() else {
            wrong.push(format!("{g:?}: {} server spans", spans.len()));
            continue;
        };
        let got = (
            attr(span, "http.request.method"),
            attr(span, "url.path"),
            attr(span, "http.response.status_code"),
            attr(span, "server.port"),
        );
        let want = (
            Some("GET".to_owned()),
            Some(g.path.to_owned()),
            Some(g.status.to_string()),
            Some(g.port.to_string()),
        );
        if got != want || g.status != 200 {
            wrong.push(format!("{g:?}: got {got:?}"));
        }
    }
    (wrong, invented)
}

/// A span in one line: name, method, path, rpc method and status, error type.
fn describe(span: &Value) -> String {
    format!(
        "span {:?}: http.request.method={:?} url.path={:?} rpc.method={:?} rpc status={:?} error.type={:?}",
        span["name"].as_str().unwrap_or_default(),
        attr(span, "http.request.method"),
        attr(span, "url.path"),
        attr(span, "rpc.method"),
        attr(span, "rpc.response.status_code"),
        attr(span, "error.type"),
    )
}

/// The gRPC server spans that are off: good calls (the client's trace id) must be `calls`
/// Say spans (every fifth NOT_FOUND) and `streams` Count spans; every other span must name
/// Say (the only method the hostile bytes call) and must not claim success.
fn check_grpc(run: &Run, port: u16, calls: usize, streams: usize) -> Vec<String> {
    let mut wrong = Vec::new();
    let (mut says, mut not_found, mut counts) = (0, 0, 0);
    for span in servers_on(run, port) {
        let method = attr(span, "rpc.method").unwrap_or_default();
        let status = attr(span, "rpc.response.status_code").unwrap_or_default();
        let good = span["traceId"] == GRPC_TRACE;
        match (good, method.as_str()) {
            (true, SAY) => {
                says += 1;
                not_found += usize::from(status == "NOT_FOUND");
            }
            (_, COUNT) => counts += 1,
            (false, SAY) if status != "OK" => {}
            _ => wrong.push(describe(span)),
        }
    }
    if (says, not_found, counts) != (calls, calls / 5, streams) {
        wrong.push(format!(
            "good gRPC: {says} Say ({not_found} NOT_FOUND), {counts} Count; want {calls} ({}), {streams}",
            calls / 5
        ));
    }
    wrong
}

/// The agent's `stopped:` line, and its counts of what was skipped (unknown protocol,
/// decoder drops).
fn skipped_counts(stderr: &str) -> (String, String) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("wirespan: stopped:"))
        .unwrap_or_default()
        .to_owned();
    let counted = line
        .split("; ")
        .filter(|part| part.starts_with("connections:") || part.starts_with("decoders dropped:"))
        .collect::<Vec<_>>()
        .join("; ");
    (line, counted)
}

/// Whether the summary names at least `n` of something counted under `what`.
fn counts_at_least(counted: &str, what: &str, n: u64) -> bool {
    counted.split([',', ';']).any(|part| {
        let part = part.trim();
        part.contains(what)
            && part
                .split_whitespace()
                .filter_map(|w| w.parse::<u64>().ok())
                .any(|v| v >= n)
    })
}

// ---- the case ------------------------------------------------------------------------------

struct Servers {
    python: HttpServer,
    go: Listening,
    grpc: Listening,
    echo: std::path::PathBuf,
}

impl Servers {
    fn start() -> Option<Self> {
        let hello = support::go_build("examples/http-hello", "faults-hostile-hello")?;
        let echo = support::go_build("examples/grpc-echo", "faults-hostile-echo")?;
        let python = HttpServer::start("127.0.0.1", &[("a.txt", b"hello")]);
        let go = Listening::start(Command::new(&hello).env("OTEL_SERVICE_NAME", "hostile-go"));
        let grpc = Listening::start(
            Command::new(&echo)
                .arg("server")
                .env("OTEL_SERVICE_NAME", "hostile-grpc"),
        );
        Some(Self {
            python,
            go,
            grpc,
            echo,
        })
    }

    fn python_addr(&self) -> String {
        format!("127.0.0.1:{}", self.python.port)
    }

    /// Each server's state after the storm: alive and answering, or how it ended. The HTTP
    /// requests of this check are good requests too (added to `good`).
    fn states(&mut self, good: &mut Vec<Good>) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        let after = |tag: u32, addr: &str, path: &'static str, query: &str| {
            let trace = good_trace(tag, 1_000_000);
            let header = format!("traceparent: 00-{trace}-00000000000f4240-01\r\n");
            let got = http_get(addr, &format!("{path}{query}"), &header);
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            let status = got.0;
            (
                got,
                Good {
                    trace,
                    path,
                    port,
                    status,
                },
            )
        };
        let (python, checked) = after(1, &self.python_addr(), "/a.txt", "");
        good.push(checked);
        let python_alive = self.python_alive();
        out.push((
            "python http.server (HTTP/1)".to_owned(),
            format!("alive={python_alive}, GET /a.txt after: {}", python.0),
            python_alive && python == (200, "hello".to_owned()),
        ));
        let (go, checked) = after(2, &self.go.addr, "/hello", "?name=after");
        good.push(checked);
        let go_alive = self.go.alive();
        out.push((
            "examples/http-hello (Go net/http)".to_owned(),
            format!("alive={go_alive}, GET /hello after: {}", go.0),
            go_alive && go.0 == 200,
        ));
        let (ok, printed) = grpc_client(&self.echo, &self.grpc.addr, 5, 0);
        let grpc_alive = self.grpc.alive();
        out.push((
            "examples/grpc-echo (grpc-go)".to_owned(),
            format!("alive={grpc_alive}, 5 calls after: ok={ok}"),
            grpc_alive && ok && printed.contains("done: 5 unary"),
        ));
        out
    }

    fn python_alive(&mut self) -> bool {
        Path::new(&format!("/proc/{}", self.python.pid())).exists()
    }
}

#[test]
fn faults_hostile_traffic_is_skipped_and_counted_while_good_traffic_is_traced_exactly() {
    if !require_privileges() {
        return;
    }
    let Some(mut servers) = Servers::start() else {
        return cannot_run("go cannot build examples/http-hello or examples/grpc-echo");
    };
    let ports = [
        servers.python.port,
        servers.go.port().parse().unwrap(),
        servers.grpc.port().parse().unwrap(),
    ];
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-hostile-traffic.jsonl");
    let port_args: Vec<String> = ports.iter().map(u16::to_string).collect();
    let port_refs: Vec<&str> = port_args.iter().map(String::as_str).collect();
    let agent = agent_to_file(&file, &port_refs);
    let agent_pid = agent.pid();
    let mut figures = Figures::new("hostile-traffic", 40);

    let (good_requests, grpc_calls, streams) = (pick(200, 2_000), pick(50, 500), 2);
    let (python_addr, go_addr, grpc_addr) = (
        servers.python_addr(),
        servers.go.addr.clone(),
        servers.grpc.addr.clone(),
    );
    let mut sent = BTreeMap::new();
    let mut rounds = 0;
    let good_done = AtomicBool::new(false);
    let (mut good, grpc_run) = std::thread::scope(|scope| {
        let good = scope.spawn(|| {
            let good = good_http(&python_addr, &go_addr, good_requests);
            let grpc = grpc_client(&servers.echo, &grpc_addr, grpc_calls, streams);
            good_done.store(true, Ordering::Relaxed);
            (good, grpc)
        });
        // Hostile rounds as long as the good traffic runs, and a few at least.
        while rounds < pick(3, 10) || !good_done.load(Ordering::Relaxed) {
            hostile_round(&[&python_addr, &go_addr], &grpc_addr, &mut sent);
            rounds += 1;
        }
        good.join().unwrap()
    });
    figures.agent_rss(agent_pid);
    let states = servers.states(&mut good);
    figures.agent_rss(agent_pid);
    let stopped = agent.stop();
    finish(
        &mut figures,
        &Outcome {
            file: &file,
            ports,
            good: &good,
            grpc_run: &grpc_run,
            grpc_calls,
            streams,
            sent: &sent,
            rounds,
            states: &states,
            stopped: &stopped,
        },
    );
}

/// What one run of the case produced, for the checks.
struct Outcome<'a> {
    file: &'a Path,
    ports: [u16; 3],
    good: &'a [Good],
    grpc_run: &'a (bool, String),
    grpc_calls: usize,
    streams: usize,
    sent: &'a BTreeMap<&'static str, u32>,
    rounds: u32,
    states: &'a [(String, String, bool)],
    stopped: &'a support::Stopped,
}

/// Record the figures, then assert.
fn finish(figures: &mut Figures, o: &Outcome<'_>) {
    let run = Run::read(o.file);
    let (wrong_http, invented) = check_http(&run, o.good, [o.ports[0], o.ports[1]]);
    // The after-check's 5 calls are good calls too.
    let wrong_grpc = check_grpc(&run, o.ports[2], o.grpc_calls + 5, o.streams);
    let (summary, counted) = skipped_counts(&o.stopped.stderr);
    let total: u32 = o.sent.values().sum();
    figures.done = format!(
        "{total} hostile connections in {} rounds: {}",
        o.rounds,
        o.sent
            .iter()
            .map(|(name, n)| format!("{name} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    figures.load = format!(
        "{} good HTTP/1 GETs (Python and Go, one connection each, own traceparent); {} good gRPC unary calls and {} streams",
        o.good.len(),
        o.grpc_calls + 5,
        o.streams
    );
    figures.lost = format!(
        "{} good HTTP requests without exactly one right span; {} gRPC mismatches; {} spans invented from hostile bytes",
        wrong_http.len(),
        wrong_grpc.len(),
        invented.len()
    );
    figures.counted.clone_from(&counted);
    for (name, state, _) in o.states {
        figures.program(name.clone(), state.clone());
    }
    figures.note(format!("agent exit: {}", o.stopped.status));
    figures.note(format!(
        "spans exported: {}; good client run ok={}",
        run.spans.len(),
        o.grpc_run.0
    ));
    for off in wrong_http
        .iter()
        .chain(&invented)
        .chain(&wrong_grpc)
        .take(4)
    {
        figures.note(format!(
            "off: {}",
            off.chars().take(200).collect::<String>()
        ));
    }
    let passed = wrong_http.is_empty()
        && wrong_grpc.is_empty()
        && invented.is_empty()
        && o.stopped.status.success()
        && o.grpc_run.0
        && o.states.iter().all(|s| s.2)
        && counts_at_least(&counted, "http/1", 1)
        && counts_at_least(&counted, "http/2", 1)
        && counts_at_least(&counted, "unknown protocol", 1);
    figures.write(passed);

    assert!(o.stopped.status.success(), "agent: {}", o.stopped.stderr);
    assert!(
        !o.stopped.stderr.contains("panicked"),
        "{}",
        o.stopped.stderr
    );
    for (name, state, ok) in o.states {
        assert!(ok, "{name} after the hostile traffic: {state}");
    }
    assert!(o.grpc_run.0, "the good gRPC client: {}", o.grpc_run.1);
    let at_most = |v: &[String]| v[..v.len().min(5)].join("\n");
    assert!(
        wrong_http.is_empty(),
        "{} good requests mis-traced:\n{}",
        wrong_http.len(),
        at_most(&wrong_http)
    );
    assert!(
        invented.is_empty(),
        "spans made from hostile bytes:\n{}",
        at_most(&invented)
    );
    assert!(wrong_grpc.is_empty(), "gRPC:\n{}", at_most(&wrong_grpc));
    for what in ["http/1", "http/2", "unknown protocol"] {
        assert!(
            counts_at_least(&counted, what, 1),
            "the summary counts no {what} skipped: {summary}"
        );
    }
}
