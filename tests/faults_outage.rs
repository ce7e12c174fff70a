//! Fault suite, backend outage (needs root, a kernel, Python and the Jaeger binary that `cargo
//! xtask test` builds): the OTLP backend goes away under steady traffic and comes back, as it
//! does when Jaeger or a collector restarts.
//!
//! The agent exports to a real Jaeger all-in-one over OTLP/HTTP. Jaeger is stopped while
//! requests keep coming at a steady rate (each with its own `traceparent`, so its trace id is
//! known), then started again on the same ports. Meanwhile its OTLP port is closed, or held by a
//! receiver that accepts and never answers, or by one that answers 503.
//! - Within the queue: the spans made meanwhile wait and are retried until Jaeger takes them.
//!   Every request's trace must be in Jaeger after the recovery, and the agent's summary must
//!   count nothing dropped.
//! - Past the queue (`--otlp-queue` smaller than the outage's spans): what does not fit is
//!   dropped and counted, exactly: exported + dropped = made, and Jaeger holds exactly the
//!   exported spans.
//!
//! Sizes: 30 s at 500 requests/s under `cargo xtask faults`; 5 s at 100/s in the short form.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use support::{
    Agent, Listening,
    faults::{Figures, pick},
    go_build,
    jaeger::{AllInOnePorts, get_json, jaeger_binary},
    keep_alive::KeepAlive,
    require_privileges,
};
use wirespan::testing::cannot_run;

/// Trace ids asked of Jaeger's query API per request.
const IDS_PER_QUERY: usize = 100;

/// The spans Jaeger holds of each of `traces` that it has (trace id → span count).
fn spans_in_jaeger(query: &str, traces: &[String]) -> std::collections::HashMap<String, usize> {
    let mut found = std::collections::HashMap::new();
    for chunk in traces.chunks(IDS_PER_QUERY) {
        let ids: Vec<String> = chunk.iter().map(|t| format!("traceID={t}")).collect();
        let answer = get_json(query, &format!("/api/traces?{}", ids.join("&")));
        for trace in answer["data"].as_array().into_iter().flatten() {
            if let Some(id) = trace["traceID"].as_str() {
                let spans = trace["spans"].as_array().map_or(0, Vec::len);
                found.insert(id.trim_start_matches('0').to_owned(), spans);
            }
        }
    }
    found
}

/// Wait until every trace in `traces` is in Jaeger; the ones still missing at the deadline.
fn missing_after(query: &str, traces: &[String], wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut missing: Vec<String> = traces.to_vec();
    loop {
        let found = spans_in_jaeger(query, &missing);
        missing.retain(|t| !found.contains_key(t.trim_start_matches('0')));
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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

impl Outage {
    fn case(self) -> &'static str {
        match self {
            Self::Down => "backend-outage-down",
            Self::Silent => "backend-outage-silent",
            Self::Unavailable => "backend-outage-503",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Down => "Jaeger stopped (its OTLP port refuses connections)",
            Self::Silent => {
                "Jaeger stopped; its OTLP port held by a receiver that accepts and never answers"
            }
            Self::Unavailable => {
                "Jaeger stopped; its OTLP port answering every export 503 Service Unavailable"
            }
        }
    }
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

/// Steady traffic from a thread: GETs at `rate` per second on one keep-alive connection, each
/// with its own trace id, every answer checked.
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<LoadResult>,
}

struct LoadResult {
    traces: Vec<String>,
    /// Answers that were not `200 hello`.
    wrong: Vec<String>,
    seconds: f64,
}

impl Load {
    fn start(addr: String, rate: u32, tag: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let gap = Duration::from_secs(1) / rate;
            let started = Instant::now();
            let mut result = LoadResult {
                traces: Vec::new(),
                wrong: Vec::new(),
                seconds: 0.0,
            };
            let mut conn = KeepAlive::connect(&addr).unwrap();
            let mut n = 0u32;
            while !stopping.load(Ordering::Relaxed) {
                n += 1;
                let trace = format!("{:08x}{tag:08x}{n:016x}", std::process::id());
                let parent = format!("traceparent: 00-{trace}-{n:016x}-01\r\n");
                match conn.get(&format!("/hello?name={n}"), &parent) {
                    Ok((200, body)) if body == format!("hello {n}\n") => {}
                    other => result.wrong.push(format!("{trace}: {other:?}")),
                }
                result.traces.push(trace);
                if let Some(wait) = (started + gap * n).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            result.seconds = started.elapsed().as_secs_f64();
            result
        });
        Self { stop, thread }
    }

    fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }

    fn run_for(self, time: Duration) -> LoadResult {
        std::thread::sleep(time);
        self.stop()
    }
}

/// The agent's counts at exit: spans made, and the OTLP exporter's exported / dropped (queue
/// full) / dropped (export failed), from its `stopped:` and `otlp (...)` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    made: u64,
    exported: u64,
    dropped_queue_full: u64,
    dropped_failed: u64,
}

fn number_before(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)?;
    text[..at].split_whitespace().last()?.parse().ok()
}

fn counts(stderr: &str) -> Counts {
    let otlp = stderr
        .lines()
        .find(|l| l.contains("spans exported"))
        .unwrap_or_else(|| panic!("no otlp summary line:\n{stderr}"));
    let stopped = stderr
        .lines()
        .find(|l| l.contains("wirespan: stopped:"))
        .unwrap_or_else(|| panic!("no stopped line:\n{stderr}"));
    let made = stopped
        .split("; spans: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no span count in {stopped}"));
    Counts {
        made,
        exported: number_before(otlp, "spans exported").unwrap(),
        dropped_queue_full: number_before(otlp, "dropped (queue full)").unwrap(),
        dropped_failed: number_before(otlp, "dropped (export failed)").unwrap(),
    }
}

/// One outage: the agent, Jaeger and a server; steady load before, across and after it.
struct Run {
    /// The load from the outage's start to its end (and a little after).
    load: LoadResult,
    stopped: support::Stopped,
    counts: Counts,
    /// Spans Jaeger held of the traffic before the outage (its restart empties its memory).
    spans_before: usize,
    /// Trace id (zeros trimmed) → spans Jaeger holds, of the traffic from the outage on.
    in_jaeger: std::collections::HashMap<String, usize>,
    /// Traces made during or after the outage that never reached Jaeger (within-queue runs).
    missing: Vec<String>,
    peak_rss_kib: Option<u64>,
}

/// Scoped to the server's process: Jaeger is a Go program too, and its handlers' spans (made
/// from uprobes, which `--port` does not scope) would mix with the counts.
fn agent_args<'a>(endpoint: &'a str, pid: &'a str, queue: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--exporter",
        "otlp",
        "--otlp-endpoint",
        endpoint,
        "--otlp-timeout",
        "2",
        "--pid",
        pid,
    ];
    if let Some(q) = queue {
        args.extend(["--otlp-queue", q]);
    }
    args
}

fn outage_run(binary: &std::path::Path, outage: Outage, queue: Option<usize>, tag: u32) -> Run {
    let (rate, length) = (pick(100, 500), Duration::from_secs(pick(5, 30)));
    let ports = AllInOnePorts::free();
    let jaeger = ports.start(binary);
    let query = ports.query();
    let hello = go_build("examples/http-hello", "http-hello").expect("go builds http-hello");
    let server = Listening::start(&mut Command::new(hello));
    let addr = server.addr.clone();
    let endpoint = format!("http://127.0.0.1:{}", ports.otlp_http);
    let (pid, queue_text) = (server.pid().to_string(), queue.map(|q| q.to_string()));
    let agent = Agent::start(&agent_args(&endpoint, &pid, queue_text.as_deref()));

    // Before: the pipeline works, and what Jaeger holds of it is known.
    let before = Load::start(addr.clone(), rate, tag).run_for(Duration::from_secs(2));
    assert!(before.wrong.is_empty(), "{:?}", before.wrong);
    let missing = missing_after(&query, &before.traces, Duration::from_secs(30));
    assert!(
        missing.is_empty(),
        "{outage:?}: before the outage: {missing:?}"
    );
    let spans_before = spans_in_jaeger(&query, &before.traces).values().sum();

    let load = Load::start(addr, rate, tag + 1);
    drop(jaeger);
    let fake = match outage {
        Outage::Down => None,
        Outage::Silent | Outage::Unavailable => Some(FakeReceiver::start(ports.otlp_http, outage)),
    };
    std::thread::sleep(length);
    if let Some(fake) = fake {
        fake.stop();
    }
    let _jaeger = ports.start(binary);
    std::thread::sleep(Duration::from_secs(2));
    let load = load.stop();
    let missing = if queue.is_some() {
        // Past the queue some never arrive: give the retries time, then take what is there.
        std::thread::sleep(Duration::from_secs(pick(10, 20)));
        Vec::new()
    } else {
        missing_after(&query, &load.traces, Duration::from_secs(pick(60, 180)))
    };
    let peak_rss_kib = support::faults::peak_rss_kib(agent.pid());
    let stopped = agent.stop();
    let counts = counts(&stopped.stderr);
    let in_jaeger = spans_in_jaeger(&query, &load.traces);
    Run {
        load,
        stopped,
        counts,
        spans_before,
        in_jaeger,
        missing,
        peak_rss_kib,
    }
}

fn describe_load(load: &LoadResult) -> String {
    format!(
        "{} GETs in {:.0} s ({:.0}/s) on one keep-alive connection to a Go net/http server (examples/http-hello), each with its own trace id",
        load.traces.len(),
        load.seconds,
        f64::from(u32::try_from(load.traces.len()).unwrap_or(u32::MAX)) / load.seconds
    )
}

#[test]
fn faults_outage_spans_made_while_the_backend_is_away_arrive_after_it_returns() {
    if !require_privileges() {
        return;
    }
    let Some(binary) = jaeger_binary() else {
        return cannot_run("no Jaeger binary: run through `cargo xtask test`, which builds it");
    };
    let _serial = support::tls::serial();
    for (n, outage) in [Outage::Down, Outage::Silent, Outage::Unavailable]
        .into_iter()
        .enumerate()
    {
        let mut figures = Figures::new(outage.case(), 10 + n as u32);
        let run = outage_run(&binary, outage, None, 16 * n as u32);
        figures.done = format!(
            "{} for {} s under steady load, then Jaeger started again; default queue ({} spans)",
            outage.describe(),
            pick(5, 30),
            wirespan::export::otlp::DEFAULT_QUEUE
        );
        figures.load = describe_load(&run.load);
        figures.lost = format!(
            "{} of {} traces made from the outage's start on are missing from Jaeger",
            run.missing.len(),
            run.load.traces.len()
        );
        figures.counted = format!(
            "{} spans made, {} exported, {} dropped (queue full), {} dropped (export failed)",
            run.counts.made,
            run.counts.exported,
            run.counts.dropped_queue_full,
            run.counts.dropped_failed
        );
        figures.agent_peak_rss_kib = run.peak_rss_kib;
        figures.program(
            "http-hello (Go net/http)",
            format!("{} wrong answers", run.load.wrong.len()),
        );
        let recovered = ["otlp export failing", "otlp export recovered"]
            .iter()
            .all(|l| run.stopped.stderr.contains(l));
        let passed = run.missing.is_empty()
            && run.load.wrong.is_empty()
            && run.stopped.status.success()
            && recovered
            && run.counts.dropped_queue_full + run.counts.dropped_failed == 0;
        figures.write(passed);
        assert!(
            run.missing.is_empty(),
            "{outage:?}: {} of {} traces made during or after the outage never reached Jaeger, the first: {:?}\n{}",
            run.missing.len(),
            run.load.traces.len(),
            &run.missing[..run.missing.len().min(3)],
            run.stopped.stderr
        );
        assert!(
            passed,
            "{outage:?}: {:?}\n{}",
            run.counts, run.stopped.stderr
        );
    }
}

#[test]
fn faults_outage_longer_than_the_queue_drops_past_it_counted_exactly() {
    if !require_privileges() {
        return;
    }
    let Some(binary) = jaeger_binary() else {
        return cannot_run("no Jaeger binary: run through `cargo xtask test`, which builds it");
    };
    let _serial = support::tls::serial();
    let queue = pick(100, 1000);
    let mut figures = Figures::new("backend-outage-past-the-queue", 14);
    let run = outage_run(&binary, Outage::Down, Some(queue), 64);
    let in_jaeger: usize = run.in_jaeger.values().sum();
    let c = run.counts;
    figures.done = format!(
        "Jaeger stopped for {} s under steady load with the queue cut to {queue} spans (--otlp-queue), then started again",
        pick(5, 30)
    );
    figures.load = describe_load(&run.load);
    figures.lost = format!(
        "{} spans dropped past the queue; Jaeger holds {} spans: the {} exported before the outage and {} after, of {} exported",
        c.dropped_queue_full + c.dropped_failed,
        run.spans_before + in_jaeger,
        run.spans_before,
        in_jaeger,
        c.exported
    );
    figures.counted = format!(
        "{} made = {} exported + {} dropped (queue full) + {} dropped (export failed)",
        c.made, c.exported, c.dropped_queue_full, c.dropped_failed
    );
    figures.agent_peak_rss_kib = run.peak_rss_kib;
    figures.program(
        "http-hello (Go net/http)",
        format!("{} wrong answers", run.load.wrong.len()),
    );
    let exact = c.made == c.exported + c.dropped_queue_full + c.dropped_failed
        && (c.exported as usize) == run.spans_before + in_jaeger;
    let passed = exact && c.dropped_queue_full > 0 && run.load.wrong.is_empty();
    figures.write(passed && run.stopped.status.success());
    assert!(
        exact,
        "{c:?}; Jaeger holds {} + {in_jaeger}\n{}",
        run.spans_before, run.stopped.stderr
    );
    assert!(
        c.dropped_queue_full > 0,
        "the outage fit in the queue: {c:?}"
    );
    assert!(run.load.wrong.is_empty(), "{:?}", run.load.wrong);
    assert!(run.stopped.status.success(), "{}", run.stopped.stderr);
}
