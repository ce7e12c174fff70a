//! Fault suite, agent restarts (issue 19; privileged: needs root, Go and Python). The agent is
//! killed while it traces steady load and started again, over and over: 3 runs (20 under
//! `WIRESPAN_FAULTS=full`), stopped alternately by SIGKILL (no chance to detach: the kernel
//! drops its programs when its descriptors close) and SIGTERM (a clean detach).
//!
//! What it proves:
//! - the traced programs never notice: a Go net/http server and a Python thread-per-connection
//!   server answer every request of the load correctly through every start and kill, on
//!   keep-alive connections and new ones alike, and are still running at the end;
//! - a new agent traces the keep-alive connections it finds open: connections opened before any
//!   agent ran carry, in every run, requests whose server spans must be in that run's output
//!   with the right method, path, status and the trace id of the `traceparent` they sent (the
//!   probes resolve fd → sock at the first byte, see `conn_id_of` in probes-ebpf/src/data.rs);
//! - nothing is left in the kernel: after the last stop, no BPF program or link the agents
//!   made is still there (`bpftool`).

mod support;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Agent, HttpServer, Listening,
    faults::{Figures, KernelObjects, pick},
    http_get,
    keep_alive::keep_alive_get,
    require_privileges,
    span_run::{agent_to_file, attr},
};
use wirespan::testing::cannot_run;

/// Keep-alive connections to each server opened before the first agent, asked in every run.
const PROBE_CONNECTIONS: usize = 4;
/// How long a run's spans may take to reach its file (the correlator waits up to 10 s for a
/// parent that may still come; here the client end is traced too, so they come at once).
const SPANS_WAIT: Duration = Duration::from_secs(20);
/// How long the kernel may take to drop a stopped agent's programs and links: a SIGKILLed
/// agent's descriptors close when it is reaped, and detaching each uprobe waits for an RCU
/// grace period.
const KERNEL_WAIT: Duration = Duration::from_secs(15);
const PYTHON_BODY: &str = "hello restart\n";

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// The two traced servers.
struct Servers {
    go: Listening,
    python: HttpServer,
}

impl Servers {
    fn go_addr(&self) -> String {
        self.go.addr.clone()
    }

    fn python_addr(&self) -> String {
        format!("127.0.0.1:{}", self.python.port)
    }
}

/// Steady load on both servers from threads of its own, over keep-alive connections (opened
/// before any agent) and, every 10th request, a new connection; every answer checked.
struct Load {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(servers: &Servers) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let targets = [(servers.go_addr(), true), (servers.python_addr(), false)];
        let threads = targets
            .into_iter()
            .map(|(addr, go)| {
                let (stop, requests, failures) = (
                    Arc::clone(&stop),
                    Arc::clone(&requests),
                    Arc::clone(&failures),
                );
                // Opened before any agent runs, like the probe connections.
                let mut stream = Some(connect(&addr));
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let outcome = match stream.as_mut() {
                            Some(s) => load_request(&addr, go, s, n),
                            None => Err(format!("{addr}: cannot connect")),
                        };
                        requests.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = outcome {
                            failures.lock().unwrap().push(e);
                            // Carry on over a new connection: one failure is counted once.
                            stream = TcpStream::connect(&addr).ok();
                            if let Some(s) = &stream {
                                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Self {
            stop,
            requests,
            failures,
            threads,
        }
    }

    /// Stop; (requests made, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.requests.load(Ordering::Relaxed), failures)
    }
}

/// The load's `n`th request to one server.
fn load_request(addr: &str, go: bool, stream: &mut TcpStream, n: u64) -> Result<(), String> {
    let (path, body) = if go {
        (format!("/items/load{n}"), format!("item load{n}\n"))
    } else {
        ("/a.txt".to_owned(), PYTHON_BODY.to_owned())
    };
    if n.is_multiple_of(10) {
        return match http_get(addr, &path, "") {
            (200, got) if got == body => Ok(()),
            other => Err(format!("{addr}{path} on a new connection: {other:?}")),
        };
    }
    keep_alive_get(stream, &path, None, &body).map_err(|e| format!("{addr}: {e}"))
}

/// A request whose server span a run must have made: (trace id, server is Go, path).
struct Expected {
    trace: String,
    go: bool,
    path: String,
    /// The request's place on its connection in this run (1: the first since the agent started).
    nth: usize,
}

/// Ask every probe connection once, each request with a `traceparent` of its own trace id.
fn ask_probes(
    run: usize,
    go_probes: &mut [TcpStream],
    python_probes: &mut [TcpStream],
) -> (Vec<Expected>, Vec<String>) {
    let mut expected = Vec::new();
    let mut failures = Vec::new();
    let probes = go_probes
        .iter_mut()
        .map(|s| (s, true))
        .chain(python_probes.iter_mut().map(|s| (s, false)));
    // Two requests each: a thread-per-connection server (Python) was blocked in its read when
    // the agent attached, and that read's bytes are the first request's; the second request's
    // read starts under the probes. Both must be traced.
    for (i, (stream, go)) in probes.enumerate() {
        for nth in 1..=2 {
            let trace = format!("{:08x}{run:08x}{i:08x}{nth:08x}", std::process::id());
            let traceparent = format!("00-{trace}-{:016x}-01", run * 100 + i + 1);
            let (path, body) = if go {
                (
                    format!("/items/run{run}-{i}-{nth}"),
                    format!("item run{run}-{i}-{nth}\n"),
                )
            } else {
                ("/a.txt".to_owned(), PYTHON_BODY.to_owned())
            };
            match keep_alive_get(stream, &path, Some(&traceparent), &body) {
                Ok(()) => expected.push(Expected {
                    trace,
                    go,
                    path,
                    nth,
                }),
                Err(e) => failures.push(format!("run {run}, probe connection {i}: {e}")),
            }
        }
    }
    (expected, failures)
}

/// The spans in the complete lines of an `--exporter file` output: a SIGKILLed agent may
/// leave its last line half written.
fn spans_so_far(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let mut spans = Vec::new();
    for line in complete.lines() {
        let request: Value = serde_json::from_str(line).unwrap();
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    spans
}

/// The expected requests with no right server span in `spans`, described.
fn missing(expected: &[Expected], spans: &[Value]) -> Vec<String> {
    expected
        .iter()
        .filter(|e| {
            !spans.iter().any(|s| {
                s["kind"] == 2
                    && s["traceId"] == e.trace.as_str()
                    && attr(s, "url.path").as_deref() == Some(e.path.as_str())
                    && attr(s, "http.request.method").as_deref() == Some("GET")
                    && attr(s, "http.response.status_code").as_deref() == Some("200")
            })
        })
        .map(|e| {
            let server = if e.go { "Go" } else { "Python" };
            format!(
                "{server} {} (request {} on its connection in this run; trace {})",
                e.path, e.nth, e.trace
            )
        })
        .collect()
}

/// Wait until every expected request has its server span in `file`; those still missing.
fn wait_for_spans(file: &Path, expected: &[Expected]) -> Vec<String> {
    let deadline = Instant::now() + SPANS_WAIT;
    loop {
        let left = missing(expected, &spans_so_far(file));
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Term,
}

/// What the runs did, for the figures and the checks.
#[derive(Default)]
struct Runs {
    kills: usize,
    terms: usize,
    probe_requests: usize,
    missing: Vec<String>,
    probe_failures: Vec<String>,
    unclean: Vec<String>,
    start_secs: Vec<f64>,
    stop_secs: Vec<f64>,
    last_summary: String,
    files: Vec<PathBuf>,
}

/// One agent run: start, ask the probe connections, wait for their spans, stop by `stop`.
fn one_run(
    run: usize,
    stop: Stop,
    port_args: &[&str],
    go_probes: &mut [TcpStream],
    python_probes: &mut [TcpStream],
    figures: &mut Figures,
    runs: &mut Runs,
) {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-restart-{run}.jsonl"));
    let started = Instant::now();
    let agent: Agent = agent_to_file(&file, port_args);
    runs.start_secs.push(started.elapsed().as_secs_f64());
    let (expected, failures) = ask_probes(run, go_probes, python_probes);
    runs.probe_requests += expected.len() + failures.len();
    runs.probe_failures.extend(failures);
    let left = wait_for_spans(&file, &expected);
    runs.missing.extend(
        left.into_iter()
            .map(|m| format!("run {run} ({stop:?}): {m}")),
    );
    figures.agent_rss(agent.pid());
    let stopping = Instant::now();
    let stopped = match stop {
        Stop::Kill => {
            runs.kills += 1;
            // SAFETY: kill(2) on the agent, our own child, which has not been waited for.
            unsafe { libc::kill(agent.pid().cast_signed(), libc::SIGKILL) };
            agent.stop_after_exit()
        }
        Stop::Term => {
            runs.terms += 1;
            agent.stop()
        }
    };
    runs.stop_secs.push(stopping.elapsed().as_secs_f64());
    let clean = match stop {
        Stop::Kill => stopped.status.signal_was(libc::SIGKILL),
        Stop::Term => stopped.status.success(),
    };
    if !clean {
        runs.unclean.push(format!(
            "run {run} ({stop:?}) ended {}: {}",
            stopped.status, stopped.stderr
        ));
    }
    if let Some(summary) = stopped
        .stderr
        .lines()
        .find(|l| l.starts_with("wirespan: stopped:"))
    {
        summary.clone_into(&mut runs.last_summary);
    }
    runs.files.push(file);
}

/// `ExitStatus` by signal, for the SIGKILLed runs.
trait SignalWas {
    fn signal_was(&self, signal: i32) -> bool;
}

impl SignalWas for std::process::ExitStatus {
    fn signal_was(&self, signal: i32) -> bool {
        std::os::unix::process::ExitStatusExt::signal(self) == Some(signal)
    }
}

#[test]
fn faults_restart_killed_and_restarted_agents_go_unnoticed_and_trace_open_connections() {
    if !require_privileges() {
        return;
    }
    let Some(binary) = support::go_build("examples/http-hello", "faults-restart-hello") else {
        return cannot_run("cannot build examples/http-hello (Go missing?)");
    };
    let mut figures = Figures::new("agent-restarts", 30);
    let mut servers = Servers {
        go: Listening::start(&mut Command::new(&binary)),
        python: HttpServer::start("127.0.0.1", &[("a.txt", PYTHON_BODY.as_bytes())]),
    };
    let ports = [servers.go.port(), servers.python.port.to_string()];
    let port_args: Vec<&str> = ports.iter().map(String::as_str).collect();
    let before = KernelObjects::now();
    // Opened before any agent runs: every run finds them open and must trace them.
    let mut go_probes: Vec<TcpStream> = (0..PROBE_CONNECTIONS)
        .map(|_| connect(&servers.go_addr()))
        .collect();
    let mut python_probes: Vec<TcpStream> = (0..PROBE_CONNECTIONS)
        .map(|_| connect(&servers.python_addr()))
        .collect();
    let load = Load::start(&servers);
    let mut runs = Runs::default();
    for run in 0..pick(3, 20) {
        // The first run is the one killed under load; then they alternate.
        let stop = if run % 2 == 0 { Stop::Kill } else { Stop::Term };
        one_run(
            run,
            stop,
            &port_args,
            &mut go_probes,
            &mut python_probes,
            &mut figures,
            &mut runs,
        );
        // A moment with no agent at all, the load going on.
        std::thread::sleep(Duration::from_millis(500));
    }
    let left = KernelObjects::left_after(&before, KERNEL_WAIT);
    // The load outlived every agent: it is stopped last.
    std::thread::sleep(Duration::from_secs(1));
    let (requests, load_failures) = load.finish();
    let alive = (servers.go.alive(), servers.python_alive());
    for file in &runs.files {
        let _ = std::fs::remove_file(file);
    }
    record(&mut figures, &runs, requests, &load_failures, alive, &left);
    let problems = problems(&runs, &load_failures, alive, &left);
    figures.write(problems.is_empty());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

impl Servers {
    fn python_alive(&mut self) -> bool {
        // The Python server answers a new connection (its process handle is private to
        // `HttpServer`).
        matches!(http_get(&self.python_addr(), "/a.txt", ""), (200, ref b) if b == PYTHON_BODY)
    }
}

fn record(
    figures: &mut Figures,
    runs: &Runs,
    requests: u64,
    load_failures: &[String],
    alive: (bool, bool),
    left: &[String],
) {
    let secs = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    figures.done = format!(
        "{} agent runs under load, stopped by SIGKILL {} times and by SIGTERM {} times; each run asked {} keep-alive connections opened before the first agent twice",
        runs.kills + runs.terms,
        runs.kills,
        runs.terms,
        2 * PROBE_CONNECTIONS
    );
    figures.load = format!(
        "{requests} requests to a Go net/http server and a Python server across every start and stop (keep-alive, every 10th on a new connection), plus {} probe requests with a traceparent",
        runs.probe_requests
    );
    figures.lost = format!(
        "{} of {} probe requests without their server span in the run's output",
        runs.missing.len(),
        runs.probe_requests
    );
    runs.last_summary
        .strip_prefix("wirespan: stopped: ")
        .unwrap_or(&runs.last_summary)
        .clone_into(&mut figures.counted);
    let outcome = |alive: bool| {
        format!(
            "{}; {} of {requests} load requests failed, {} probe requests failed",
            if alive { "still serving" } else { "EXITED" },
            load_failures.len(),
            runs.probe_failures.len()
        )
    };
    figures.program("examples/http-hello (Go net/http)", outcome(alive.0));
    figures.program("tests/support/http_server.py (Python)", outcome(alive.1));
    figures.note(format!(
        "agent start to ready: at most {:.1} s; stop (kill or detach) to exit: at most {:.1} s",
        secs(&runs.start_secs),
        secs(&runs.stop_secs)
    ));
    figures.note(format!(
        "BPF programs and links left after the last stop: {}",
        if left.is_empty() {
            "none".to_owned()
        } else {
            left.join(", ")
        }
    ));
}

fn problems(
    runs: &Runs,
    load_failures: &[String],
    alive: (bool, bool),
    left: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    if !load_failures.is_empty() || !runs.probe_failures.is_empty() {
        problems.push(format!(
            "the traced programs noticed: {} load and {} probe requests failed, the first: {:?}",
            load_failures.len(),
            runs.probe_failures.len(),
            load_failures
                .iter()
                .chain(&runs.probe_failures)
                .take(3)
                .collect::<Vec<_>>()
        ));
    }
    if alive != (true, true) {
        problems.push(format!("servers alive (Go, Python): {alive:?}"));
    }
    if !runs.missing.is_empty() {
        problems.push(format!(
            "requests on keep-alive connections opened before the agent, without their server span: {:?}",
            runs.missing
        ));
    }
    problems.extend(runs.unclean.iter().cloned());
    if !left.is_empty() {
        problems.push(format!("left in the kernel after the last stop: {left:?}"));
    }
    problems
}
