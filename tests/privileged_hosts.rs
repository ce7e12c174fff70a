//! Privileged end to end (needs root, a kernel, Go, curl, nft, nsenter, redis-server and the
//! Jaeger v2 binary that `cargo xtask test` builds and passes in `WIRESPAN_JAEGER`): one
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
//! and no Go attachment of another host's programs. With the store, the agents also send
//! OTLP/gRPC to a gateway Collector running `otel-config/collector-multihost.yaml` as shipped,
//! in front of a real Jaeger (tests/support/hosts_gateway.rs, inside the lab): Jaeger must hold
//! a /fanout request as the same one trace over the three hosts.

mod support;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use support::{
    Stopped,
    hosts_agent_output::{JoinCounts, join_counts, stderr_of},
    hosts_checks::{
        check_alone, check_counts, check_joined, check_no_wrong_parent, check_scoping,
        check_stopped, check_unjoined,
    },
    hosts_gateway::{self as gateway, Gateway},
    hosts_lab::{Redis, start_agents, stop_agents},
    hosts_services::{SERVICES, Setup, files, secs},
    hosts_spans::{HostSpan, Route, Sent, Spans},
    jaeger::jaeger_binary,
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
/// While Redis is away a server span goes out unjoined within this long: the store answers
/// its ask at once (after one 0.5 s I/O timeout for the ask that finds the connection frozen)
/// and the span reaches the file at the flush after it. Measured at most 1.0 s (polled every
/// 0.5 s) since connection attempts run on their own thread (1208f56); before, up to 4.8 s,
/// when the bound was the join wait plus 2.5 s of export slack.
const AWAY_ANSWERED: Duration = Duration::from_millis(1500);
/// After Redis is back, before requests must join again: an agent that found the store away
/// tries to connect again every second, each try bounded by its 0.5 s I/O timeout.
const RESUME_GRACE: Duration = Duration::from_secs(3);
/// Requests during the outage, one every this long.
const OUTAGE_PACE: Duration = Duration::from_millis(500);

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

/// The run with a store: the three phases, then the agents stopped. The agents export to
/// their files and, with `otlp` (`--exporter otlp` and its flags), to the gateway too.
fn run_joined(
    setup: &Setup,
    files: &[PathBuf; 3],
    redis: &Redis,
    otlp: &[String],
) -> (JoinedRun, Vec<Stopped>) {
    let prefix = join_prefix();
    let wait = JOIN_WAIT.as_secs().to_string();
    let mut args = vec!["--join-wait", &wait, "--join-prefix", &prefix];
    args.extend(otlp.iter().map(String::as_str));
    // The store's address (with its password) through the environment, the rest as flags.
    let agents = start_agents(
        &setup.lab,
        files,
        &args,
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
        let (joined, roots) = spans.server_spans(host);
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

/// The outage: a request sent at least `AWAY_ANSWERED` before Redis came back went out
/// unjoined, and without stalling (within `AWAY_ANSWERED`, plus the polling pace); a later one
/// may have joined after all, to its own caller only.
fn check_outage(run: &JoinedRun, spans: &Spans) -> Vec<String> {
    let mut failures = Vec::new();
    let bound = AWAY_ANSWERED;
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

/// Through the gateway (collector-multihost.yaml as shipped), Jaeger holds a /fanout request
/// of phase 1 as one trace with every parent right on all three hosts: the checks of the
/// files, on what Jaeger answers.
fn check_jaeger(run: &JoinedRun, gateway: &Gateway) -> Vec<String> {
    let Some(fanout) = run.before.iter().find(|s| s.route == Route::Fanout) else {
        return vec!["no /fanout request before the outage".into()];
    };
    let want = 2 + 4 * fanout.calls();
    let spans = match gateway.trace(&fanout.trace, want, Duration::from_secs(15)) {
        Ok(spans) => Spans { all: spans },
        Err(why) => return vec![format!("through the gateway to Jaeger: {why}")],
    };
    let mut hosts: Vec<&str> = spans.all.iter().map(|s| s.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    eprintln!(
        "hosts: Jaeger (through the gateway) holds trace {} of {}: {} spans from {hosts:?}",
        fanout.trace,
        fanout.msg,
        spans.all.len()
    );
    match check_joined(&spans, fanout) {
        Ok(()) => Vec::new(),
        Err(why) => vec![format!("in Jaeger, through the gateway: {why}")],
    }
}

#[test]
fn privileged_hosts_one_trace_per_request_across_three_hosts_through_nat_and_a_redis_outage() {
    let _serial = serial();
    let Some(setup) = Setup::new() else {
        return;
    };
    let Some(jaeger) = jaeger_binary() else {
        return cannot_run(
            "no Jaeger binary: run through `cargo xtask test`, which builds it once (or set WIRESPAN_JAEGER)",
        );
    };
    let redis = match Redis::start(&setup.lab) {
        Ok(redis) => redis,
        Err(why) => return cannot_run(&format!("cannot start redis-server: {why}")),
    };
    let gateway = Gateway::start(&setup.lab, &jaeger)
        .unwrap_or_else(|why| panic!("collector-multihost.yaml in front of Jaeger: {why}"));
    eprintln!(
        "hosts: Redis, Jaeger and the gateway up at {}",
        secs(setup.started.elapsed())
    );
    let files = files("joined");
    let (run, stopped) = run_joined(&setup, &files, &redis, &gateway::agent_args());
    check_stopped(&files, &stopped);
    let spans = Spans::read(&files);
    let counts: Vec<Option<(String, JoinCounts)>> =
        stopped.iter().map(|s| join_counts(&s.stderr)).collect();
    report(&run, &spans, &counts);

    let mut failures = check_scoping(&setup.go_pids(), &files, &stopped);
    for sent in run.before.iter().chain(&run.after) {
        if let Err(why) = check_joined(&spans, sent) {
            failures.push(why);
        }
    }
    failures.extend(check_outage(&run, &spans));
    failures.extend(check_no_wrong_parent(&spans));
    failures.extend(check_counts(&spans, &counts, OUTAGE));
    failures.extend(check_redis(&run, &redis));
    failures.extend(check_jaeger(&run, &gateway));
    eprintln!("hosts: test ran {}", secs(setup.started.elapsed()));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n\nagents' stderr:\n{}",
        failures.len(),
        failures.join("\n"),
        stderr_of(&stopped)
    );
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
    let mut failures = check_scoping(&setup.go_pids(), &files, &stopped);
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
