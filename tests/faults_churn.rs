//! Fault suite, connection churn (issue 19; privileged: needs root and Go). Many short
//! connections (20k in about 10 s; 200k in 60 s under `WIRESPAN_FAULTS=full`) while idle
//! keep-alive connections (1k; 10k) stay open, all to a traced Go net/http server.
//!
//! What it proves:
//! - the agent's memory stays bounded: its RSS while the churn runs grows by less than a bound
//!   that holds the state the agent keeps per closed connection for its grace period (see
//!   `RSS_GROWTH_BOUND_MIB`), and, once the churn has lasted longer than that grace period (the
//!   full size), it is flat: the second half's peak is within `RSS_FLAT_SLACK_MIB` of the
//!   first half's;
//! - its tables stay within their caps, counted: the stop summary reports no connection
//!   evicted (the idle ones plus those in flight are far under the 65,536 cap) and the idle
//!   connections, asked again after the churn, are still traced;
//! - every short connection's request becomes a server span (or is counted as lost in the
//!   kernel), with the right method, path and status;
//! - nothing is left behind once the connections close: the kernel's per-connection maps
//!   (`CONNS`, `PENDING_CONNECTS`) are empty again, and the agent's stop summary says no
//!   connection was still open at the stop when the kernel lost no event;
//! - when the kernel did lose events (ring buffer full: a lost close leaves a connection behind
//!   in user space), the agent's accounting still adds up and its tables stay within their caps:
//!   a connection whose close was lost is replaced by the next one on its ends (counted), and
//!   the correlator's per-connection tables at the stop (accepted connections, connection ends,
//!   closing ends, thread contexts) are within `CORRELATOR_CAPS`.

mod support;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use support::{
    Listening,
    faults::{self, Figures, pick},
    require_privileges,
    span_run::{agent_to_file, attr},
};
use wirespan::testing::cannot_run;

/// How far the agent's RSS may grow over its level before the churn, in MiB. The correlator
/// keeps each closed connection end's last-seen time and client uses for a 30 s grace period
/// (`correlate::context::GRACE_NS`), and spans wait up to the 10 s window for their parents:
/// at 3,300 connections a second (two ends each) that is some 200k small entries, a few tens
/// of MiB with hash-map overhead. 96 MiB holds that with room, and is far below what a
/// per-connection leak of the full size (200k connections, 20k idle ends) would reach.
const RSS_GROWTH_BOUND_MIB: u64 = 96;
/// Once the churn is longer than twice the grace period, its second half holds no more
/// connection state than its first: the peaks differ by allocator noise only.
const RSS_FLAT_SLACK_MIB: u64 = 16;
/// The grace period after which the agent forgets a closed connection's ends.
const GRACE: Duration = Duration::from_secs(30);
/// Source addresses for the client ends, 127.0.0.2 onwards (see `connect_from`).
const SOURCES: u8 = 16;
/// The kernel maps that hold an entry per connection (names as the kernel keeps them: 15
/// characters at most).
const PER_CONNECTION_MAPS: [&str; 4] =
    ["CONNS", "PENDING_CONNECT", "FRAME_CHAINS", "TLS_POSITIONS"];

/// The correlator's per-connection tables as the stop summary names them, with the caps the
/// agent keeps them under (`correlate::context` bounds).
const CORRELATOR_CAPS: [(&str, u64); 5] = [
    ("thread contexts", 65_536),
    ("accepted connections", 65_536),
    ("connection ends", 262_144),
    ("closing ends", 262_144),
    ("Go client connections", 65_536),
];

/// The sizes of one run.
struct Scale {
    short: usize,
    seconds: u64,
    idle: usize,
    threads: usize,
}

fn scale() -> Scale {
    Scale {
        short: pick(20_000, 200_000),
        seconds: pick(10, 60),
        idle: pick(1_000, 10_000),
        threads: 8,
    }
}

/// Raise the soft open-files limit to the hard one (the idle connections need a descriptor
/// each, here and in the server, which inherits the limit). The new soft limit.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the one struct passed, which lives here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit);
        }
    }
    limit.rlim_cur
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A connection to `server` from `source`.
///
/// Loopback has one source address by default and about 28k ephemeral ports, and a closed
/// connection's port stays in TIME_WAIT for 60 s at the end that closed first: 200k
/// connections in a minute would run out. Two things keep them apart: the server closes first
/// (`Connection: close`), so TIME_WAIT lands on its end and the client's port is free at once,
/// and the clients spread over 127.0.0.2..=127.0.0.17 (all of 127/8 is local), each bound
/// with IP_BIND_ADDRESS_NO_PORT so the port is chosen at connect for the whole four-tuple.
fn connect_from(source: Ipv4Addr, server: SocketAddrV4) -> std::io::Result<TcpStream> {
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket(2) takes plain integers.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns; OwnedFd closes it on every path.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let local = sockaddr(SocketAddrV4::new(source, 0));
    let remote = sockaddr(server);
    // SAFETY: each call gets our socket and a pointer to a live local of the size passed.
    let failed = unsafe {
        libc::setsockopt(
            raw,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
            || libc::bind(raw, (&raw const local).cast(), len) != 0
            || libc::connect(raw, (&raw const remote).cast(), len) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

fn source_for(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(SOURCES)) as u8)
}

/// One short connection: connect, one GET, read to the server's close, check the answer.
fn short_exchange(server: SocketAddrV4, i: usize) -> Result<(), String> {
    let source = source_for(i);
    let mut stream =
        connect_from(source, server).map_err(|e| format!("connect #{i} from {source}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request =
        format!("GET /hello?name=c{i} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_end(&mut response))
        .map_err(|e| format!("request #{i}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let body = format!("hello c{i}\n");
    if text.starts_with("HTTP/1.1 200 ") && text.ends_with(&body) {
        Ok(())
    } else {
        Err(format!("request #{i}: wrong answer {text:?}"))
    }
}

/// One GET on a keep-alive connection (which stays open), checking the body.
fn keep_alive_get(stream: &mut TcpStream, path: &str, body: &str) -> Result<(), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: wirespan\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{path}: {e}"))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&response);
        if let Some((head, got)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok);
            if length.is_some_and(|n| got.len() >= n) {
                return if head.starts_with("HTTP/1.1 200 ") && got == body {
                    Ok(())
                } else {
                    Err(format!("{path}: wrong answer {text:?}"))
                };
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("{path}: closed by the server after {text:?}")),
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
}

/// Open `n` keep-alive connections, each with one request answered, spread over 4 threads.
fn open_idle(server: SocketAddrV4, n: usize) -> (Vec<TcpStream>, Vec<String>) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut open = Vec::new();
                let mut failures = Vec::new();
                for j in (t..n).step_by(4) {
                    let opened = connect_from(source_for(j), server)
                        .map_err(|e| format!("idle connect #{j}: {e}"))
                        .and_then(|mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            keep_alive_get(
                                &mut s,
                                &format!("/items/idle{j}"),
                                &format!("item idle{j}\n"),
                            )
                            .map(|()| s)
                        });
                    match opened {
                        Ok(s) => open.push((j, s)),
                        Err(e) => failures.push(e),
                    }
                }
                (open, failures)
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut failures = Vec::new();
    for t in threads {
        let (o, f) = t.join().unwrap();
        open.extend(o);
        failures.extend(f);
    }
    open.sort_by_key(|(j, _)| *j);
    (open.into_iter().map(|(_, s)| s).collect(), failures)
}

/// What the churn did.
struct Churn {
    done: usize,
    failures: Vec<String>,
    elapsed: Duration,
}

/// `scale.short` short connections, paced evenly over `scale.seconds` (connection `i` starts
/// no earlier than `i / rate` seconds in) by `scale.threads` threads. While it runs, `during`
/// is called on this thread about every 3 s (it dumps maps: not too often, on two CPUs).
fn churn(server: SocketAddrV4, scale: &Scale, mut during: impl FnMut()) -> Churn {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let total = scale.short;
    let gap = Duration::from_secs(scale.seconds) / u32::try_from(total).unwrap();
    let threads: Vec<_> = (0..scale.threads)
        .map(|_| {
            let next = Arc::clone(&next);
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = start + gap * u32::try_from(i).unwrap();
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if let Err(e) = short_exchange(server, i) {
                        failures.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    let mut last = Instant::now();
    while !threads.iter().all(std::thread::JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(3) {
            during();
            last = Instant::now();
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    Churn {
        done: total,
        failures,
        elapsed: start.elapsed(),
    }
}

/// The agent's RSS, sampled every second on a thread of its own: (seconds since start, KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, u64)>>,
    started: Instant,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                if let Some(kib) = faults::rss_kib(pid) {
                    samples.push((started.elapsed().as_secs_f64(), kib));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        });
        Self {
            stop,
            thread,
            started,
        }
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The largest sample in `[from, to)` seconds, KiB.
fn peak(samples: &[(f64, u64)], from: f64, to: f64) -> u64 {
    samples
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0)
}

/// The agent's BPF maps (name → id), from the map descriptors it holds.
fn agent_maps(pid: u32) -> BTreeMap<String, u64> {
    let mut maps = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return maps;
    };
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let show = bpftool(&["map", "show", "id", &id.to_string()]);
        if let Some(name) = show["name"].as_str() {
            maps.insert(name.to_owned(), id);
        }
    }
    maps
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("--json")
        .args(args)
        .output()
        .expect("bpftool runs (cargo xtask setup installs it)");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Entries in each per-connection map of the agent.
fn map_entries(maps: &BTreeMap<String, u64>) -> BTreeMap<&'static str, usize> {
    PER_CONNECTION_MAPS
        .iter()
        .filter_map(|name| {
            let id = maps.get(*name)?;
            let dump = bpftool(&["map", "dump", "id", &id.to_string()]);
            Some((*name, dump.as_array().map_or(0, Vec::len)))
        })
        .collect()
}

/// Server and client spans of the churn and of the idle connections, and the ones that came
/// out wrong (method, status).
#[derive(Debug, Default)]
struct SpanCounts {
    short_server: usize,
    short_client: usize,
    idle_server: usize,
    again_server: usize,
    wrong: Vec<String>,
}

/// Count the spans of an `--exporter file` output, one batch (line) at a time.
fn count_spans(file: &Path) -> SpanCounts {
    let mut counts = SpanCounts::default();
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for line in text.lines() {
        let request: serde_json::Value = serde_json::from_str(line).unwrap();
        let spans = request["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|rs| rs["scopeSpans"].as_array().into_iter().flatten())
            .flat_map(|ss| ss["spans"].as_array().into_iter().flatten());
        for span in spans {
            let path = attr(span, "url.path")
                .or_else(|| attr(span, "url.full"))
                .unwrap_or_default();
            let server = span["kind"] == 2;
            let counter = match () {
                () if path.ends_with("/hello") && server => &mut counts.short_server,
                () if path.ends_with("/hello") => &mut counts.short_client,
                () if path.contains("/items/idle") && server => &mut counts.idle_server,
                () if path.contains("/items/again") && server => &mut counts.again_server,
                () => continue,
            };
            *counter += 1;
            let method = attr(span, "http.request.method");
            let status = attr(span, "http.response.status_code");
            if method.as_deref() != Some("GET") || status.as_deref() != Some("200") {
                counts
                    .wrong
                    .push(format!("{path}: method {method:?}, status {status:?}"));
            }
        }
    }
    counts
}

/// The number the stop summary puts before `what` (`12 evicted (table full)` → 12).
fn summary_figure(summary: &str, what: &str) -> Option<u64> {
    let before = &summary[..summary.find(what)?];
    before.split_whitespace().last()?.parse().ok()
}

fn figure_text(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// Spans the kernel lost (ring buffer full and the like): the summary's `lost in kernel: ...`.
fn lost_in_kernel(summary: &str) -> u64 {
    let Some(rest) = summary.split("lost in kernel: ").nth(1) else {
        return 0;
    };
    let lost = rest.split(';').next().unwrap_or_default();
    lost.split(", ")
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn faults_churn_many_short_connections_and_idle_keep_alives_keep_the_agent_bounded() {
    if !require_privileges() {
        return;
    }
    let Some(binary) = support::go_build("examples/http-hello", "faults-churn-hello") else {
        return cannot_run("cannot build examples/http-hello (Go missing?)");
    };
    let scale = scale();
    let nofile = raise_nofile();
    assert!(
        nofile > (scale.idle + 1_000) as u64,
        "the open-files limit {nofile} is too low for {} idle connections",
        scale.idle
    );
    let mut figures = Figures::new("churn", 20);
    let mut server = Listening::start(&mut Command::new(&binary));
    let addr: SocketAddrV4 = server.addr.parse().unwrap();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-churn.jsonl");
    let agent = agent_to_file(&file, &[&server.port()]);
    let sampler = RssSampler::start(agent.pid());
    let maps = agent_maps(agent.pid());

    let (mut idle, idle_failures) = open_idle(addr, scale.idle);
    // Let the idle connections' spans go out and the agent settle: the level the churn is
    // measured against.
    std::thread::sleep(Duration::from_secs(3));
    let churn_from = sampler.now();
    let mut in_flight = BTreeMap::new();
    let churned = churn(addr, &scale, || {
        for (name, n) in map_entries(&maps) {
            let most = in_flight.entry(name).or_insert(0);
            *most = (*most).max(n);
        }
        figures.agent_rss(agent.pid());
    });
    let churn_to = sampler.now();
    // The idle connections outlived the churn: each is asked once more, and is traced.
    let mut again_failures = Vec::new();
    for (j, stream) in idle.iter_mut().enumerate() {
        if let Err(e) = keep_alive_get(
            stream,
            &format!("/items/again{j}"),
            &format!("item again{j}\n"),
        ) {
            again_failures.push(e);
        }
    }
    let idle_open = idle.len();
    drop(idle);
    // The server closes its ends once it reads the clients' FINs: wait (up to 20 s, the
    // machine may still be busy) until the kernel's per-connection entries are gone.
    let closed_at = Instant::now();
    let mut after = map_entries(&maps);
    while after.values().any(|n| *n > 0) && closed_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(1));
        after = map_entries(&maps);
    }
    figures.note(format!(
        "per-connection map entries checked {:.1} s after the last connection closed",
        closed_at.elapsed().as_secs_f64()
    ));
    figures.agent_rss(agent.pid());
    let rss_samples = sampler.finish();
    let stopped = agent.stop();
    let summary = stopped
        .stderr
        .lines()
        .find(|l| l.starts_with("wirespan: stopped:"))
        .unwrap_or_default()
        .to_owned();
    let spans = count_spans(&file);
    let server_alive = server.alive();

    let check = Checks {
        scale: &scale,
        churned: &churned,
        idle_failures: &idle_failures,
        again_failures: &again_failures,
        idle_open,
        spans: &spans,
        summary: &summary,
        samples: &rss_samples,
        churn_window: (churn_from, churn_to),
        in_flight: &in_flight,
        after: &after,
        server_alive,
    };
    check.record(&mut figures);
    let problems = check.problems();
    let passed = problems.is_empty() && stopped.status.success();
    figures.write(passed);
    // A failed run's spans stay for a look (hundreds of MB at the full size).
    if passed {
        let _ = std::fs::remove_file(&file);
    }
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(problems.is_empty(), "{}\n{summary}", problems.join("\n"));
}

/// Everything the case measured, judged once: the figures are written before the assertions.
struct Checks<'a> {
    scale: &'a Scale,
    churned: &'a Churn,
    idle_failures: &'a [String],
    again_failures: &'a [String],
    idle_open: usize,
    spans: &'a SpanCounts,
    summary: &'a str,
    samples: &'a [(f64, u64)],
    churn_window: (f64, f64),
    in_flight: &'a BTreeMap<&'static str, usize>,
    after: &'a BTreeMap<&'static str, usize>,
    server_alive: bool,
}

impl Checks<'_> {
    /// (RSS before the churn, peak in its first half, peak in its second half), KiB.
    fn rss(&self) -> (u64, u64, u64) {
        let (from, to) = self.churn_window;
        let middle = f64::midpoint(from, to);
        let before = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| *t < from)
            .map_or(0, |(_, kib)| *kib);
        (
            before,
            peak(self.samples, from, middle),
            peak(self.samples, middle, to + 1.0),
        )
    }

    fn record(&self, figures: &mut Figures) {
        let (before, first, second) = self.rss();
        figures.done = format!(
            "{} short connections (connect, one GET, close) paced over {} s by {} threads from {} source addresses, while {} idle keep-alive connections stayed open; then one more request on each idle connection, and all closed",
            self.scale.short, self.scale.seconds, self.scale.threads, SOURCES, self.scale.idle
        );
        figures.load = format!(
            "{} short connections in {:.1} s ({:.0}/s) to a Go net/http server; {} idle keep-alive connections",
            self.churned.done,
            self.churned.elapsed.as_secs_f64(),
            f64::from(u32::try_from(self.churned.done).unwrap())
                / self.churned.elapsed.as_secs_f64(),
            self.idle_open
        );
        figures.lost = format!(
            "{} of {} short requests without a server span ({} client spans); {} of {} idle connections' second requests without one",
            self.scale.short.saturating_sub(self.spans.short_server),
            self.scale.short,
            self.spans.short_client,
            self.idle_open.saturating_sub(self.spans.again_server),
            self.idle_open
        );
        self.summary
            .strip_prefix("wirespan: stopped: ")
            .unwrap_or(self.summary)
            .clone_into(&mut figures.counted);
        figures.program(
            "examples/http-hello (Go net/http)",
            format!(
                "{}; {} of {} short requests and {} + {} idle requests failed",
                if self.server_alive {
                    "still serving"
                } else {
                    "EXITED"
                },
                self.churned.failures.len(),
                self.churned.done,
                self.idle_failures.len(),
                self.again_failures.len()
            ),
        );
        figures.note(format!(
            "agent RSS: {} MiB before the churn, peak {} MiB in its first half and {} MiB in its second (bound: growth under {RSS_GROWTH_BOUND_MIB} MiB; flat within {RSS_FLAT_SLACK_MIB} MiB when the churn outlasts twice the {} s grace period)",
            before / 1024,
            first / 1024,
            second / 1024,
            GRACE.as_secs()
        ));
        let series: Vec<String> = self
            .samples
            .iter()
            .step_by(5)
            .map(|(t, kib)| format!("{t:.0} s {} MiB", kib / 1024))
            .collect();
        figures.note(format!(
            "agent RSS every 5 s (the churn from {:.0} s to {:.0} s): {}",
            self.churn_window.0,
            self.churn_window.1,
            series.join(", ")
        ));
        figures.note(format!(
            "kernel per-connection map entries, most seen during the churn: {:?}; after every connection closed: {:?}",
            self.in_flight, self.after
        ));
        figures.note(format!(
            "connections: {} lost in the kernel (events), {} replaced after a lost close, {} still open at stop; correlator tables at stop: {}",
            lost_in_kernel(self.summary),
            figure_text(summary_figure(self.summary, "replaced (same ends")),
            figure_text(summary_figure(self.summary, "still open at stop")),
            CORRELATOR_CAPS
                .iter()
                .map(|(what, cap)| format!(
                    "{} {what} (cap {cap})",
                    figure_text(summary_figure(self.summary, what))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        figures.note(format!(
            "server spans: {} short, {} idle first requests, {} idle second requests; {} spans with a wrong method or status",
            self.spans.short_server,
            self.spans.idle_server,
            self.spans.again_server,
            self.spans.wrong.len()
        ));
        if !self.spans.wrong.is_empty() {
            figures.note(format!(
                "wrong spans, the first: {:?}",
                &self.spans.wrong[..self.spans.wrong.len().min(5)]
            ));
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut expect = |ok: bool, text: String| {
            if !ok {
                problems.push(text);
            }
        };
        let failures: Vec<&String> = self
            .churned
            .failures
            .iter()
            .chain(self.idle_failures)
            .chain(self.again_failures)
            .collect();
        expect(
            failures.is_empty() && self.server_alive,
            format!(
                "the traced server must answer every request: {} failed (server alive: {}), the first: {:?}",
                failures.len(),
                self.server_alive,
                &failures[..failures.len().min(3)]
            ),
        );
        let lost = lost_in_kernel(self.summary);
        expect(
            self.spans.short_server as u64 + lost >= self.scale.short as u64,
            format!(
                "{} of {} short requests became server spans, and the kernel counted {lost} lost",
                self.spans.short_server, self.scale.short
            ),
        );
        expect(
            self.spans.again_server == self.idle_open,
            format!(
                "{} of {} idle connections' second requests became server spans: the idle connections must stay traced through the churn",
                self.spans.again_server, self.idle_open
            ),
        );
        expect(
            self.spans.wrong.is_empty(),
            format!(
                "spans with a wrong method or status: {:?}",
                &self.spans.wrong[..self.spans.wrong.len().min(5)]
            ),
        );
        for what in ["evicted (table full)", "evicted (memory)"] {
            let n = summary_figure(self.summary, what);
            expect(
                n == Some(0),
                format!(
                    "connections {what}: {n:?}, expected 0: the tables have room for all of them"
                ),
            );
        }
        self.memory_problems(&mut expect);
        self.left_behind_problems(lost, &mut expect);
        expect(
            self.after.get("CONNS") == Some(&0),
            format!(
                "kernel connections left after every connection closed: {:?}",
                self.after
            ),
        );
        problems
    }

    /// What the agent held at the stop: no connection open when nothing was lost, and the
    /// correlator's tables within their caps either way.
    fn left_behind_problems(&self, lost: u64, expect: &mut impl FnMut(bool, String)) {
        let open = summary_figure(self.summary, "still open at stop");
        expect(
            open.is_some() && summary_figure(self.summary, "replaced (same ends").is_some(),
            "the stop summary must count connections replaced and still open at stop".to_owned(),
        );
        if lost == 0 {
            expect(
                open == Some(0),
                format!(
                    "{open:?} connections still open at stop, expected 0: every connection closed and the kernel lost no event"
                ),
            );
        }
        for (what, cap) in CORRELATOR_CAPS {
            let n = summary_figure(self.summary, what);
            expect(
                n.is_some_and(|n| n <= cap),
                format!("correlator at stop: {n:?} {what}, expected a figure within its cap {cap}"),
            );
        }
        if lost == 0 {
            let accepted = summary_figure(self.summary, "accepted connections");
            expect(
                accepted == Some(0),
                format!(
                    "correlator at stop: {accepted:?} accepted connections, expected 0: all closed"
                ),
            );
        }
    }

    fn memory_problems(&self, expect: &mut impl FnMut(bool, String)) {
        let (before, first, second) = self.rss();
        let growth_mib = first.max(second).saturating_sub(before) / 1024;
        expect(
            before > 0 && growth_mib < RSS_GROWTH_BOUND_MIB,
            format!(
                "agent RSS grew by {growth_mib} MiB over the churn (from {} MiB): bound {RSS_GROWTH_BOUND_MIB} MiB",
                before / 1024
            ),
        );
        let (from, to) = self.churn_window;
        if to - from >= 2.0 * GRACE.as_secs_f64() {
            expect(
                second <= first + RSS_FLAT_SLACK_MIB * 1024,
                format!(
                    "agent RSS not flat: peak {} MiB in the churn's second half against {} MiB in its first",
                    second / 1024,
                    first / 1024
                ),
            );
        }
    }
}
