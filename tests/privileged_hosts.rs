//! Privileged end to end (needs root, a kernel, Go, curl, nft, nsenter and redis-server): one
//! trace over many hosts, joined through a Redis every agent shares (issue 20). Three hosts are
//! simulated on this machine (tests/support/hosts_lab.rs): network namespaces with their own
//! addresses, their processes in a cgroup per host, one agent per host selecting that cgroup
//! with `host.name` in its own `OTEL_RESOURCE_ATTRIBUTES`, and a redis-server in a namespace of
//! its own. Host A reaches host B through a virtual service address (DNAT in A, as kube-proxy
//! does), so the two ends of that hop name different addresses and ports.
//!
//! The chain: curl on A → front (gin) on A → (virtual address) relay (net/http) on B →
//! echo-grpc (grpc-go) on C, `/echo` and `/fanout` (two calls from child goroutines); and curl
//! on A → Python's http.server on B. Each request must be exactly one trace with every parent
//! right on all three hosts. Then Redis is stopped (SIGSTOP: a silent store, the harder case)
//! for 10 s: no agent stalls, spans of the outage go out unjoined and counted, and requests
//! after it join again. Without a store, each host's spans go out as before (server spans of
//! requests from other hosts are roots). Each agent sees only its host's processes: no span
//! and no Go attachment of another host's programs.

mod support;

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use support::{
    Listening, Stopped,
    hosts_lab::{
        HOST_A, HOST_B, HOST_C, HostSpan, HostsLab, JoinCounts, PYTHON_VIP, RELAY_VIP, Redis,
        go_report_pids, host_spans, join_counts, start_agents, stop_agents,
    },
    python_server, require_privileges,
    shapes::tmp,
};
use wirespan::testing::cannot_run;

/// Agents of these tests would see each other's labs' processes: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `--join-wait`: how long a server span waits for its remote client's record.
const JOIN_WAIT: Duration = Duration::from_secs(3);
/// How long Redis is stopped.
const OUTAGE: Duration = Duration::from_secs(10);
/// Past its wait, a span reaches the file within the agent's 1 s clock tick (which settles
/// waiting spans) and the flush after it; the rest is slack for a loaded CI machine.
const EXPORT_SLACK: Duration = Duration::from_millis(2500);
/// After Redis is back, before requests must join again: an agent that found the store away
/// tries to connect again every second, each try bounded by its 0.5 s I/O timeout.
const RESUME_GRACE: Duration = Duration::from_secs(3);
/// Requests during the outage, one every this long.
const OUTAGE_PACE: Duration = Duration::from_millis(500);

/// The services of each host, as their agents must see them.
const SERVICES: [(&str, &[&str]); 3] = [
    ("host-a", &["curl-a", "front"]),
    ("host-b", &["relay", "py-b"]),
    ("host-c", &["echo-grpc"]),
];

/// The lab with its services running. Fields drop in order: the programs before the lab.
struct Setup {
    front: Listening,
    relay: Listening,
    echo: Listening,
    /// Kept running until the lab goes.
    _python: Listening,
    lab: HostsLab,
    started: Instant,
    /// Trace ids of this run start with it.
    run_id: String,
}

impl Setup {
    /// Build the examples, make the lab and start the services; None (after `cannot_run`)
    /// when something the test needs is missing.
    fn new() -> Option<Self> {
        if !require_privileges() {
            return None;
        }
        let started = Instant::now();
        if !tools_present() {
            return None;
        }
        let (Some(grpc_echo), Some(gin_front)) = (
            support::go_build("examples/grpc-echo", "hosts-grpc-echo"),
            support::go_build("examples/gin-front", "hosts-gin-front"),
        ) else {
            cannot_run("cannot build examples/grpc-echo and examples/gin-front");
            return None;
        };
        let lab = match HostsLab::up() {
            Ok(lab) => lab,
            Err(why) => {
                cannot_run(&format!("cannot build the hosts lab: {why}"));
                return None;
            }
        };
        let start = |host: &str, program: &PathBuf, name: &str, args: &[&str]| {
            let mut command = Command::new(program);
            command.args(args).env("OTEL_SERVICE_NAME", name);
            Listening::start(&mut lab.host(host).command(&command))
        };
        let echo_addr = format!("{HOST_C}:9090");
        let echo = start(
            "host-c",
            &grpc_echo,
            "echo-grpc",
            &["server", "--listen", &echo_addr],
        );
        let relay = start(
            "host-b",
            &grpc_echo,
            "relay",
            &[
                "relay",
                "--listen",
                &format!("{HOST_B}:8080"),
                "--target",
                &echo_addr,
            ],
        );
        let page_dir = tmp("hosts-pages");
        std::fs::create_dir_all(&page_dir).unwrap();
        std::fs::write(page_dir.join("page.txt"), b"a page on host b\n").unwrap();
        let mut py = python_server(&page_dir);
        py.arg(HOST_B).env("OTEL_SERVICE_NAME", "py-b");
        let python = Listening::start(&mut lab.host("host-b").command(&py));
        let python_port: u16 = python
            .addr
            .parse()
            .expect("the Python server prints its port");
        if let Err(why) = lab
            .dnat(RELAY_VIP, HOST_B, 8080)
            .and_then(|()| lab.dnat(PYTHON_VIP, HOST_B, python_port))
        {
            panic!("cannot add the virtual addresses: {why}");
        }
        let front = start(
            "host-a",
            &gin_front,
            "front",
            &[
                "--listen",
                &format!("{HOST_A}:8080"),
                "--backend",
                &format!("{RELAY_VIP}:80"),
            ],
        );
        eprintln!("hosts: lab and services up in {}", secs(started.elapsed()));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Some(Self {
            front,
            relay,
            echo,
            _python: python,
            lab,
            started,
            run_id: format!("{:016x}{:08x}", nanos as u64, std::process::id()),
        })
    }

    /// The pids of each host's Go programs.
    fn go_pids(&self) -> [(&'static str, Vec<u32>); 3] {
        [
            ("host-a", vec![self.front.pid()]),
            ("host-b", vec![self.relay.pid()]),
            ("host-c", vec![self.echo.pid()]),
        ]
    }

    /// curl on host A, with a traceparent of its own: the request's trace.
    /// The Go routes carry a `traceparent` of their own, which names the request's trace (front,
    /// on the same host, does not pass it on: the hops to other hosts join through the store
    /// alone). The Python route carries none, or Python's server span could adopt it rather
    /// than join through the store: its trace is the one curl's client span starts.
    fn send(&self, route: Route, n: u32) -> Sent {
        let msg = format!("q{n:03}x");
        let (trace, parent) = if route == Route::Python {
            (String::new(), String::new())
        } else {
            (
                format!("{}{n:08x}", self.run_id),
                format!("{:016x}", 0xa11c_e000_u64 + u64::from(n)),
            )
        };
        let url = match route {
            Route::Echo => format!("http://{HOST_A}:8080/echo?msg={msg}"),
            Route::Fanout => format!("http://{HOST_A}:8080/fanout?msg={msg}"),
            Route::Python => format!("http://{PYTHON_VIP}/page.txt?msg={msg}"),
        };
        let at = self.started.elapsed();
        let mut curl = Command::new("curl");
        curl.args(["-sS", "-f", "--max-time", "10"])
            .arg(&url)
            .env("OTEL_SERVICE_NAME", "curl-a");
        if !trace.is_empty() {
            curl.arg("-H")
                .arg(format!("traceparent: 00-{trace}-{parent}-01"));
        }
        let out = self
            .lab
            .host("host-a")
            .command(&curl)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {url} on host A failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Sent {
            route,
            msg,
            trace,
            parent,
            at,
        }
    }
}

/// Whether every program the test runs is installed (`cannot_run` names the first missing).
fn tools_present() -> bool {
    for (program, arg, package) in [
        ("nft", "--version", "nftables"),
        ("curl", "--version", "curl"),
        ("nsenter", "--version", "util-linux"),
        ("redis-server", "--version", "redis-server"),
        ("redis-cli", "--version", "redis-tools"),
        ("python3", "--version", "python3"),
    ] {
        if !Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            cannot_run(&format!(
                "{program} is missing (Debian package {package}; cargo xtask setup installs it)"
            ));
            return false;
        }
    }
    true
}

/// The spans files of a case, one per host.
fn files(case: &str) -> [PathBuf; 3] {
    ["a", "b", "c"].map(|h| tmp(&format!("hosts-{case}-{}-{h}.jsonl", std::process::id())))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Echo,
    Fanout,
    Python,
}

/// A request sent from host A: its route, `msg=` value, trace and parent (its traceparent),
/// and when (since the test started).
#[derive(Debug, Clone)]
struct Sent {
    route: Route,
    msg: String,
    trace: String,
    parent: String,
    at: Duration,
}

impl Sent {
    fn calls(&self) -> usize {
        match self.route {
            Route::Echo => 1,
            Route::Fanout => 2,
            Route::Python => 0,
        }
    }
}

/// All spans of a run, each host's apart and together.
struct Spans {
    all: Vec<HostSpan>,
}

impl Spans {
    fn read(files: &[PathBuf; 3]) -> Self {
        Self {
            all: files.iter().flat_map(|f| host_spans(f)).collect(),
        }
    }

    fn of_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a HostSpan> + 'a {
        self.all.iter().filter(move |s| s.host == host)
    }

    fn by_id(&self, id: &str) -> Option<&HostSpan> {
        (!id.is_empty())
            .then(|| self.all.iter().find(|s| s.span.id == id))
            .flatten()
    }

    /// Every span of the request (carrying its `msg`), with its parent: the evidence a failure
    /// message shows.
    fn evidence(&self, sent: &Sent) -> String {
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
}

/// The one child of `parent` in `trace` on `host` of `service`, `kind`, named `name…`.
fn one_child<'a>(
    trace: &[&'a HostSpan],
    parent: &str,
    (host, service, kind, name): (&str, &str, u64, &str),
) -> Result<&'a HostSpan, String> {
    let found: Vec<&HostSpan> = trace
        .iter()
        .copied()
        .filter(|s| s.span.parent == parent)
        .collect();
    match found.as_slice() {
        [one]
            if one.host == host
                && one.span.service == service
                && one.span.kind == kind
                && one.span.name.starts_with(name) =>
        {
            Ok(one)
        }
        _ => Err(format!(
            "expected one child of {parent}: {host} {service} kind={kind} {name:?}; found {}",
            found.len()
        )),
    }
}

/// The whole trace of a request: every span on its host, every parent right, and no span of
/// the request outside the trace.
fn check_joined(spans: &Spans, sent: &Sent) -> Result<(), String> {
    let fail = |why: String| format!("{why}\n{}", spans.evidence(sent));
    let (trace_id, parent) = if sent.route == Route::Python {
        // curl's client span starts the trace.
        let curls: Vec<&HostSpan> = spans
            .of_host("host-a")
            .filter(|s| s.span.kind == 3 && s.carries(&sent.msg))
            .collect();
        let [curl] = curls.as_slice() else {
            return Err(fail(format!("{} client spans of curl, not 1", curls.len())));
        };
        (curl.span.trace.clone(), String::new())
    } else {
        (sent.trace.clone(), sent.parent.clone())
    };
    let trace: Vec<&HostSpan> = spans
        .all
        .iter()
        .filter(|s| s.span.trace == trace_id)
        .collect();
    let curl = one_child(&trace, &parent, ("host-a", "curl-a", 3, "GET")).map_err(fail)?;
    if sent.route == Route::Python {
        one_child(&trace, &curl.span.id, ("host-b", "py-b", 2, "GET"))
            .map_err(|e| fail(format!("curl → Python (across hosts, through DNAT): {e}")))?;
    } else {
        let path = if sent.route == Route::Echo {
            "/echo"
        } else {
            "/fanout"
        };
        let front = one_child(
            &trace,
            &curl.span.id,
            ("host-a", "front", 2, &format!("GET {path}")),
        )
        .map_err(fail)?;
        let calls: Vec<&&HostSpan> = trace
            .iter()
            .filter(|s| s.span.parent == front.span.id)
            .collect();
        if calls.len() != sent.calls() {
            return Err(fail(format!(
                "front made {} calls for the request, not {}",
                calls.len(),
                sent.calls()
            )));
        }
        for call in calls {
            if (
                call.host.as_str(),
                call.span.service.as_str(),
                call.span.kind,
            ) != ("host-a", "front", 3)
            {
                return Err(fail(format!("front's call is {}", call.describe())));
            }
            let relay = one_child(&trace, &call.span.id, ("host-b", "relay", 2, "GET /relay"))
                .map_err(|e| fail(format!("front → relay (across hosts, through DNAT): {e}")))?;
            let relay_call = one_child(
                &trace,
                &relay.span.id,
                ("host-b", "relay", 3, "wirespan.echo.Echo/Say"),
            )
            .map_err(fail)?;
            let echo = one_child(
                &trace,
                &relay_call.span.id,
                ("host-c", "echo-grpc", 2, "wirespan.echo.Echo/Say"),
            )
            .map_err(|e| fail(format!("relay → echo-grpc (across hosts, gRPC): {e}")))?;
            if trace.iter().any(|s| s.span.parent == echo.span.id) {
                return Err(fail("echo-grpc's server span has children".into()));
            }
        }
    }
    let want = if sent.route == Route::Python {
        2
    } else {
        2 + 4 * sent.calls()
    };
    if trace.len() != want {
        return Err(fail(format!(
            "{} spans in the trace, not {want}",
            trace.len()
        )));
    }
    if let Some(stray) = spans
        .all
        .iter()
        .find(|s| s.carries(&sent.msg) && s.span.trace != trace_id)
    {
        return Err(fail(format!(
            "a span of the request in another trace: {}",
            stray.describe()
        )));
    }
    Ok(())
}

/// A request whose hop to host B met no store: host A's part is whole (same-host joins need no
/// store), and relay's server span on B is a root (`joined_ok`: or joined right, for a request
/// whose wait outlasted the outage), with its own call below it.
fn check_unjoined(spans: &Spans, sent: &Sent, joined_ok: bool) -> Result<(), String> {
    let fail = |why: String| format!("{why}\n{}", spans.evidence(sent));
    let trace: Vec<&HostSpan> = spans
        .all
        .iter()
        .filter(|s| s.span.trace == sent.trace)
        .collect();
    let curl = one_child(&trace, &sent.parent, ("host-a", "curl-a", 3, "GET")).map_err(fail)?;
    let front =
        one_child(&trace, &curl.span.id, ("host-a", "front", 2, "GET /echo")).map_err(fail)?;
    let call = one_child(&trace, &front.span.id, ("host-a", "front", 3, "GET")).map_err(fail)?;
    let relays: Vec<&HostSpan> = spans
        .of_host("host-b")
        .filter(|s| s.span.kind == 2 && s.carries(&sent.msg))
        .collect();
    let [relay] = relays.as_slice() else {
        return Err(fail(format!("{} relay server spans, not 1", relays.len())));
    };
    let joined = relay.span.parent == call.span.id && relay.span.trace == sent.trace;
    if !(relay.span.parent.is_empty() || (joined_ok && joined)) {
        return Err(fail(format!(
            "relay's server span during the outage has parent {:?}",
            relay.span.parent
        )));
    }
    let below: Vec<&HostSpan> = spans
        .of_host("host-b")
        .filter(|s| s.span.parent == relay.span.id)
        .collect();
    match below.as_slice() {
        [one] if one.span.kind == 3 && one.span.trace == relay.span.trace => Ok(()),
        _ => Err(fail("relay's server span lost its own call".into())),
    }
}

/// Every span on the host whose agent exported it, named by that agent's `host.name`; no
/// service of another host; Go programs attached only by their own host's agent.
fn check_scoping(setup: &Setup, files: &[PathBuf; 3], stopped: &[Stopped]) -> Vec<String> {
    let mut failures = Vec::new();
    let go_pids = setup.go_pids();
    for (((host, services), file), stopped) in SERVICES.iter().zip(files).zip(stopped) {
        let own_pids = &go_pids.iter().find(|(h, _)| h == host).unwrap().1;
        for span in host_spans(file) {
            if span.host != *host {
                failures.push(format!(
                    "{host}'s agent exported host.name={:?} (its OTEL_RESOURCE_ATTRIBUTES says host.name={host}): {}",
                    span.host,
                    span.describe()
                ));
            }
            if !services.contains(&span.span.service.as_str()) {
                failures.push(format!(
                    "{host}'s agent exported a span of another host's process: {}",
                    span.describe()
                ));
            }
        }
        for (line, pid) in go_report_pids(
            &stopped
                .stderr
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ) {
            if !own_pids.contains(&pid) {
                failures.push(format!(
                    "{host}'s agent attached the Go uprobes to pid {pid}, a process of another host (its own: {own_pids:?}): {line}"
                ));
            }
        }
        if !stopped.stderr.lines().any(|l| {
            l.starts_with("wirespan: go: ") && own_pids.iter().any(|p| l.contains(&p.to_string()))
        }) {
            failures.push(format!(
                "{host}'s agent did not attach to its own Go program (pids {own_pids:?}):\n{}",
                stopped.stderr
            ));
        }
    }
    failures
}

/// Each agent exited cleanly; its stop output read and checked against the semantic
/// conventions (every line JSON, every attribute key known).
fn check_stopped(files: &[PathBuf; 3], stopped: &[Stopped]) {
    for (file, stopped) in files.iter().zip(stopped) {
        assert!(
            stopped.status.success(),
            "an agent failed:\n{}",
            stopped.stderr
        );
        support::file_spans(file);
    }
}

/// Seconds, for the report.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// When each request's spans first showed in host A's and host B's files (front's call, relay's
/// server span), polled while the agents run.
#[derive(Default)]
struct Seen {
    at: HashMap<(String, &'static str), Duration>,
}

impl Seen {
    fn poll(&mut self, setup: &Setup, files: &[PathBuf; 3], sent: &[Sent]) {
        let now = setup.started.elapsed();
        let spans = Spans::read(files);
        for s in sent {
            for (host, kind) in [("host-a", 3), ("host-b", 2)] {
                if spans
                    .of_host(host)
                    .any(|x| x.span.kind == kind && x.span.service != "curl-a" && x.carries(&s.msg))
                {
                    self.at.entry((s.msg.clone(), host)).or_insert(now);
                }
            }
        }
    }

    /// How long after it was sent request `s` showed on `host`.
    fn delay(&self, s: &Sent, host: &'static str) -> Option<Duration> {
        self.at
            .get(&(s.msg.clone(), host))
            .map(|at| at.saturating_sub(s.at))
    }
}

/// What the run with a store did, measured as it went.
struct JoinedRun {
    before: Vec<Sent>,
    during: Vec<Sent>,
    after: Vec<Sent>,
    seen: Seen,
    /// Since the test started: agents ready, phase 1 settled, Redis stopped and back, agents
    /// told to stop and stopped.
    times: [Duration; 6],
    /// Redis after phase 1: the keys in the URL's database, the first one's PTTL, DBSIZE of
    /// database 0; and its command statistics at the end.
    keys: Vec<String>,
    ttl: Option<String>,
    db0: String,
    commandstats: String,
}

impl JoinedRun {
    fn resumed(&self) -> Duration {
        self.times[3]
    }
}

/// Phase 1: /echo, /fanout and the Python server, joined; the function returns once every
/// lookup of them is over (or after 20 s), so none meets the outage.
fn phase_joined(setup: &Setup, files: &[PathBuf; 3], n: &mut u32) -> Vec<Sent> {
    let mut before = Vec::new();
    for i in 0..13 {
        *n += 1;
        let route = match i {
            10.. => Route::Python,
            _ if i % 3 == 2 => Route::Fanout,
            _ => Route::Echo,
        };
        before.push(setup.send(route, *n));
    }
    let calls: usize = before.iter().map(Sent::calls).sum();
    let pythons = before.iter().filter(|s| s.route == Route::Python).count();
    let settle = Instant::now() + Duration::from_secs(20);
    while Instant::now() < settle {
        let spans = Spans::read(files);
        let served = spans
            .of_host("host-b")
            .filter(|s| s.span.kind == 2 && before.iter().any(|b| s.carries(&b.msg)))
            .count();
        let echoes = spans.of_host("host-c").filter(|s| s.span.kind == 2).count();
        if served == calls + pythons && echoes >= calls {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    before
}

/// Phase 2: Redis silent for OUTAGE, a request every OUTAGE_PACE, the files polled as they go.
fn phase_outage(
    setup: &Setup,
    files: &[PathBuf; 3],
    redis: &Redis,
    n: &mut u32,
) -> (Vec<Sent>, Seen) {
    let mut seen = Seen::default();
    let mut during = Vec::new();
    redis.pause();
    let outage = Instant::now();
    while outage.elapsed() + OUTAGE_PACE <= OUTAGE {
        let slot = Instant::now();
        *n += 1;
        during.push(setup.send(Route::Echo, *n));
        seen.poll(setup, files, &during);
        std::thread::sleep(OUTAGE_PACE.saturating_sub(slot.elapsed()));
    }
    std::thread::sleep(OUTAGE.saturating_sub(outage.elapsed()));
    seen.poll(setup, files, &during);
    (during, seen)
}

/// The run with a store: the three phases, then the agents stopped.
fn run_joined(setup: &Setup, files: &[PathBuf; 3], redis: &Redis) -> (JoinedRun, Vec<Stopped>) {
    let prefix = join_prefix();
    let wait = JOIN_WAIT.as_secs().to_string();
    // The store's address (with its password) through the environment, the rest as flags.
    let agents = start_agents(
        &setup.lab,
        files,
        &["--join-wait", &wait, "--join-prefix", &prefix],
        &[("WIRESPAN_JOIN_STORE", redis.url.as_str())],
    );
    let mut times = [Duration::ZERO; 6];
    times[0] = setup.started.elapsed();
    let mut n = 0;
    let before = phase_joined(setup, files, &mut n);
    times[1] = setup.started.elapsed();
    let keys: Vec<String> = redis
        .cli(redis.db, &["--scan", "--pattern", "*"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let ttl = keys
        .first()
        .map(|k| redis.cli(redis.db, &["PTTL", k]).trim().to_owned());
    let db0 = redis.cli(0, &["DBSIZE"]).trim().to_owned();
    times[2] = setup.started.elapsed();
    let (during, seen) = phase_outage(setup, files, redis, &mut n);
    times[3] = setup.started.elapsed();
    redis.resume();
    // Phase 3: Redis back, new requests join again.
    std::thread::sleep(RESUME_GRACE);
    let mut after = Vec::new();
    for route in [
        Route::Echo,
        Route::Fanout,
        Route::Echo,
        Route::Python,
        Route::Echo,
    ] {
        n += 1;
        after.push(setup.send(route, n));
        std::thread::sleep(Duration::from_millis(200));
    }
    let commandstats = redis.cli(0, &["INFO", "commandstats"]);
    times[4] = setup.started.elapsed();
    let stopped = stop_agents(agents);
    times[5] = setup.started.elapsed();
    let run = JoinedRun {
        before,
        during,
        after,
        seen,
        times,
        keys,
        ttl,
        db0,
        commandstats,
    };
    (run, stopped)
}

/// The key prefix of this process's runs.
fn join_prefix() -> String {
    format!("wirespan-lab{}", std::process::id())
}

/// Server spans exported on `host`: (with a parent, roots).
fn server_spans(spans: &Spans, host: &str) -> (u64, u64) {
    let all: Vec<&HostSpan> = spans.of_host(host).filter(|s| s.span.kind == 2).collect();
    let joined = all.iter().filter(|s| !s.span.parent.is_empty()).count() as u64;
    (joined, all.len() as u64 - joined)
}

/// What was measured, printed before any assertion.
fn report(run: &JoinedRun, spans: &Spans, counts: &[Option<(String, JoinCounts)>]) {
    let t = run.times.map(secs);
    eprintln!(
        "hosts: agents ready at {}; {} requests before the outage, settled at {}; Redis stopped {}..{}, {} requests during it, {} after; agents stopped {} → {}",
        t[0],
        run.before.len(),
        t[1],
        t[2],
        t[3],
        run.during.len(),
        run.after.len(),
        t[4],
        t[5],
    );
    for ((host, _), count) in SERVICES.iter().zip(counts) {
        let (joined, roots) = server_spans(spans, host);
        eprintln!(
            "hosts: {host}: {} | server spans exported: {joined} with a parent, {roots} roots",
            count
                .as_ref()
                .map_or("no `joins across hosts:` line", |(l, _)| l.as_str())
        );
    }
    for s in &run.during {
        eprintln!(
            "hosts: outage request {} sent at {}: on host-a after {:?}, on host-b after {:?}",
            s.msg,
            secs(s.at),
            run.seen.delay(s, "host-a").map(secs),
            run.seen.delay(s, "host-b").map(secs),
        );
    }
    eprintln!(
        "hosts: Redis after phase 1: {} keys in the URL's database (first's PTTL {:?}), DBSIZE of database 0: {}; commands:\n{}",
        run.keys.len(),
        run.ttl,
        run.db0,
        run.commandstats
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The outage: a request whose wait ended before Redis came back went out unjoined, and
/// without stalling (within its wait and the export time); a later one may have joined after
/// all, to its own caller only.
fn check_outage(run: &JoinedRun, spans: &Spans) -> Vec<String> {
    let mut failures = Vec::new();
    let bound = JOIN_WAIT + EXPORT_SLACK;
    for sent in &run.during {
        let early = sent.at + bound <= run.resumed();
        if let Err(why) = check_unjoined(spans, sent, !early) {
            failures.push(why);
        }
        if !early {
            continue;
        }
        for host in ["host-a", "host-b"] {
            match run.seen.delay(sent, host) {
                Some(d) if d <= bound + OUTAGE_PACE => {}
                got => failures.push(format!(
                    "{host}'s agent stalled while Redis was away: request {} sent at {} showed after {:?} (bound {} plus the polling pace)",
                    sent.msg,
                    secs(sent.at),
                    got.map(secs),
                    secs(bound)
                )),
            }
        }
    }
    failures
}

/// No server span is joined to anything but a client span on the host that calls it, in its
/// own trace.
fn check_no_wrong_parent(spans: &Spans) -> Vec<String> {
    let mut failures = Vec::new();
    for s in spans
        .all
        .iter()
        .filter(|s| s.span.kind == 2 && s.host != "host-a" && !s.span.parent.is_empty())
    {
        let caller = if s.host == "host-b" {
            "host-a"
        } else {
            "host-b"
        };
        match spans.by_id(&s.span.parent) {
            Some(p) if p.host == caller && p.span.kind == 3 && p.span.trace == s.span.trace => {}
            p => failures.push(format!(
                "a wrong parent across hosts: {} under {:?}",
                s.describe(),
                p.map(HostSpan::describe)
            )),
        }
    }
    failures
}

/// The agents' `joins across hosts:` lines count what they exported: on B and C, every
/// server span joined or unjoined; the outage met; no join without a published record.
fn check_counts(spans: &Spans, counts: &[Option<(String, JoinCounts)>]) -> Vec<String> {
    let mut failures = Vec::new();
    for ((host, _), count) in SERVICES.iter().zip(counts) {
        let Some((line, count)) = count else {
            failures.push(format!(
                "{host}'s agent printed no `joins across hosts:` line"
            ));
            continue;
        };
        if *host == "host-a" {
            continue;
        }
        let (joined, roots) = server_spans(spans, host);
        if (count.joined, count.unjoined) != (joined, roots) {
            failures.push(format!(
                "{host}: summary {line:?}, but {joined} server spans were exported joined and {roots} unjoined"
            ));
        }
        if count.store_away == 0 {
            failures.push(format!(
                "{host}: summary {line:?} counts nothing that met the store away, yet Redis was stopped for {}",
                secs(OUTAGE)
            ));
        }
    }
    if let [Some((_, a)), Some((_, b)), Some((_, c))] = counts
        && (a.published < b.joined || b.published < c.joined)
    {
        failures.push(format!(
            "fewer records published than joined: A published {}, B joined {}; B published {}, C joined {}",
            a.published, b.joined, b.published, c.joined
        ));
    }
    failures
}

/// The records are under the prefix, in the URL's database, and expire.
fn check_redis(run: &JoinedRun, redis: &Redis) -> Vec<String> {
    let mut failures = Vec::new();
    let prefix = join_prefix();
    if run.keys.is_empty() || run.keys.iter().any(|k| !k.starts_with(&prefix)) || run.db0 != "0" {
        failures.push(format!(
            "Redis keys after phase 1: {:?} in database {} (all must start with {prefix:?}), database 0 holds {}",
            run.keys, redis.db, run.db0
        ));
    }
    let ttl = run.ttl.as_deref().and_then(|t| t.parse::<i64>().ok());
    if ttl.is_none_or(|t| t <= 0) {
        failures.push(format!("a join record does not expire: PTTL {:?}", run.ttl));
    }
    failures
}

/// The agents' standard error, without the per-stage timing lines, for a failure message.
fn stderr_of(stopped: &[Stopped]) -> String {
    stopped
        .iter()
        .map(|s| {
            s.stderr
                .lines()
                .filter(|l| !l.starts_with("stages:"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn privileged_hosts_one_trace_per_request_across_three_hosts_through_nat_and_a_redis_outage() {
    let _serial = serial();
    let Some(setup) = Setup::new() else {
        return;
    };
    let redis = match Redis::start(&setup.lab) {
        Ok(redis) => redis,
        Err(why) => return cannot_run(&format!("cannot start redis-server: {why}")),
    };
    let files = files("joined");
    let (run, stopped) = run_joined(&setup, &files, &redis);
    check_stopped(&files, &stopped);
    let spans = Spans::read(&files);
    let counts: Vec<Option<(String, JoinCounts)>> =
        stopped.iter().map(|s| join_counts(&s.stderr)).collect();
    report(&run, &spans, &counts);

    let mut failures = check_scoping(&setup, &files, &stopped);
    for sent in run.before.iter().chain(&run.after) {
        if let Err(why) = check_joined(&spans, sent) {
            failures.push(why);
        }
    }
    failures.extend(check_outage(&run, &spans));
    failures.extend(check_no_wrong_parent(&spans));
    failures.extend(check_counts(&spans, &counts));
    failures.extend(check_redis(&run, &redis));
    eprintln!("hosts: test ran {}", secs(setup.started.elapsed()));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n\nagents' stderr:\n{}",
        failures.len(),
        failures.join("\n"),
        stderr_of(&stopped)
    );
}

/// Without a store, a request's spans as before: host A's part whole (same-host joins), the
/// server spans on the other hosts roots of traces of their own.
fn check_alone(spans: &Spans, sent: &Sent) -> Result<(), String> {
    match sent.route {
        // Host A's part whole, relay's server span a root.
        Route::Echo => check_unjoined(spans, sent, false),
        Route::Fanout => {
            let roots = spans
                .of_host("host-b")
                .filter(|s| s.span.kind == 2 && s.carries(&sent.msg))
                .filter(|s| s.span.parent.is_empty())
                .count();
            let in_trace = spans
                .all
                .iter()
                .filter(|s| s.span.trace == sent.trace)
                .count();
            // curl, front's server span and its two calls.
            if roots == 2 && in_trace == 4 {
                Ok(())
            } else {
                Err(format!(
                    "{roots} root relay spans (want 2), {in_trace} spans in the trace on host A (want 4)\n{}",
                    spans.evidence(sent)
                ))
            }
        }
        Route::Python => {
            let carrying = |host: &'static str, service: &'static str| -> Vec<&HostSpan> {
                spans
                    .of_host(host)
                    .filter(|s| s.span.service == service && s.carries(&sent.msg))
                    .collect()
            };
            match (
                carrying("host-a", "curl-a").as_slice(),
                carrying("host-b", "py-b").as_slice(),
            ) {
                ([curl], [python])
                    if python.span.parent.is_empty() && python.span.trace != curl.span.trace =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "curl's span and the Python server's, a root\n{}",
                    spans.evidence(sent)
                )),
            }
        }
    }
}

#[test]
fn privileged_hosts_without_a_join_store_each_host_exports_as_today() {
    let _serial = serial();
    let Some(setup) = Setup::new() else {
        return;
    };
    let files = files("alone");
    let agents = start_agents(&setup.lab, &files, &[], &[]);
    let sent: Vec<Sent> = [
        Route::Echo,
        Route::Fanout,
        Route::Echo,
        Route::Python,
        Route::Echo,
    ]
    .into_iter()
    .zip(1..)
    .map(|(route, n)| setup.send(route, n))
    .collect();
    let stopped = stop_agents(agents);
    check_stopped(&files, &stopped);
    let spans = Spans::read(&files);
    let mut failures = check_scoping(&setup, &files, &stopped);
    for s in &stopped {
        // Nothing about a store, but the zero counts of the summary if it has them.
        if let Some(line) = s
            .stderr
            .lines()
            .find(|l| l.contains("join") && !l.contains("joins across hosts:"))
        {
            failures.push(format!("an agent without a store printed {line:?}"));
        }
        if let Some((line, counts)) = join_counts(&s.stderr)
            && counts != JoinCounts::default()
        {
            failures.push(format!("an agent without a store counted joins: {line}"));
        }
    }
    for sent in &sent {
        if let Err(why) = check_alone(&spans, sent) {
            failures.push(why);
        }
    }
    let echoes: Vec<&HostSpan> = spans
        .of_host("host-c")
        .filter(|s| s.span.kind == 2)
        .collect();
    let calls: usize = sent.iter().map(Sent::calls).sum();
    if echoes.len() != calls || echoes.iter().any(|s| !s.span.parent.is_empty()) {
        failures.push(format!(
            "host-c: {} echo-grpc server spans (want {calls}, each a root): {:#?}",
            echoes.len(),
            echoes.iter().map(|s| s.describe()).collect::<Vec<_>>()
        ));
    }
    eprintln!("hosts: test ran {}", secs(setup.started.elapsed()));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The summary parser reads the agent's stop line as it is written (no privileges needed).
#[test]
fn join_counts_read_the_agents_stop_line() {
    let line = "wirespan: stopped: 741 events; correlator at stop: 0 spans waiting; joins across hosts: published 24 (17 dropped: store away or queue full), asked 9, joined 5, unjoined 4 (1 not found within the wait, 3 store away, 0 another request's record), 0 unreadable records, 5 store errors; processes: 74 started";
    let (part, counts) = join_counts(line).unwrap();
    assert!(part.starts_with("joins across hosts: published 24") && !part.contains("processes"));
    assert_eq!(
        counts,
        JoinCounts {
            published: 24,
            joined: 5,
            unjoined: 4,
            store_away: 3,
        }
    );
    assert_eq!(join_counts("wirespan: stopped: 0 events"), None);
}
