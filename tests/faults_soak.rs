//! Fault suite, traced-program safety soak (needs root, a kernel and Go; the Go toolchains come
//! through `GOTOOLCHAIN`): Go servers keep answering correctly while the agent attaches and
//! detaches its probes over and over under their load.
//!
//! net/http (examples/http-hello) and grpc-go (examples/grpc-echo) servers, built with several
//! Go releases (and grpc-go versions), plain and stripped, serve steady load: HTTP/1.1 GETs from
//! this process on kept-alive connections, and unary gRPC calls from grpc-echo's own load
//! client. Every answer is checked. Meanwhile the agent is started and stopped again and again,
//! by SIGTERM and by SIGKILL in turn; each start attaches Go uprobes to every one of them. The
//! promise: no traced program crashes or answers wrongly, each cleanly stopped agent traced the
//! traffic, and nothing the agents loaded is left in the kernel (`bpftool`) after the last stop.
//!
//! Sizes: 20 agent runs and at least 10^6 requests under `cargo xtask faults`; 4 runs over
//! four of the builds in the short form.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use support::{
    Agent, Listening,
    faults::{Figures, KernelObjects, full, pick},
    go_build_toolchain,
    go_builds::grpc_echo,
    keep_alive::KeepAlive,
    require_privileges,
};
use wirespan::testing::cannot_run;

/// Requests per second to each HTTP server, and gRPC calls per second to each gRPC one: about
/// 4,000/s in all over the full soak's twelve builds (10^6 in its 20 runs).
const HTTP_RATE: u32 = 500;
const GRPC_RATE: u32 = 150;

/// The newest Go the project supports (the machine's own); older ones come through GOTOOLCHAIN.
const NEWEST_GO: &str = "go1.26.8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Grpc,
}

/// One build of an example: which program, Go and (for gRPC) grpc-go, stripped or not.
struct Build {
    kind: Kind,
    toolchain: &'static str,
    grpc: &'static str,
    stripped: bool,
}

impl Build {
    fn name(&self) -> String {
        let program = match self.kind {
            Kind::Http => "http-hello".to_owned(),
            Kind::Grpc => format!("grpc-echo (grpc-go {})", self.grpc),
        };
        format!(
            "{program} {}{}",
            self.toolchain,
            if self.stripped { " stripped" } else { "" }
        )
    }

    fn build(&self) -> Result<PathBuf, String> {
        match self.kind {
            Kind::Http => {
                let out = format!(
                    "soak-http-hello-{}{}",
                    self.toolchain,
                    if self.stripped { "-stripped" } else { "" }
                );
                let strip: &[&str] = if self.stripped {
                    &["-ldflags=-s -w"]
                } else {
                    &[]
                };
                go_build_toolchain("examples/http-hello", &out, Some(self.toolchain), strip)
                    .ok_or_else(|| format!("go build of {} failed", self.name()))
            }
            Kind::Grpc => grpc_echo(self.toolchain, self.grpc, self.stripped),
        }
    }
}

/// What the soak runs: every (Go, grpc-go) pairing the project supports, plain and stripped, in
/// the full form; four of them, both kinds and all three Go releases, in the short one.
fn builds() -> Vec<Build> {
    let http = |toolchain, stripped| Build {
        kind: Kind::Http,
        toolchain,
        grpc: "",
        stripped,
    };
    let grpc = |toolchain, grpc, stripped| Build {
        kind: Kind::Grpc,
        toolchain,
        grpc,
        stripped,
    };
    if !full() {
        return vec![
            http("go1.22.12", true),
            http(NEWEST_GO, false),
            grpc("go1.24.11", "v1.70.0", false),
            grpc(NEWEST_GO, "v1.85.0", true),
        ];
    }
    let mut all = Vec::new();
    for stripped in [false, true] {
        for toolchain in ["go1.22.12", "go1.24.11", NEWEST_GO] {
            all.push(http(toolchain, stripped));
        }
        for (toolchain, version) in [
            ("go1.22.12", "v1.56.3"),
            ("go1.24.11", "v1.70.0"),
            (NEWEST_GO, "v1.85.0"),
        ] {
            all.push(grpc(toolchain, version, stripped));
        }
    }
    all
}

/// A server under load.
struct Served {
    name: String,
    server: Listening,
    load: Load,
}

enum Load {
    /// GETs from a thread of this process for the whole soak; the counts are shared with it.
    Http {
        stop: Arc<AtomicBool>,
        answered: Arc<AtomicU64>,
        thread: JoinHandle<Vec<String>>,
    },
    /// grpc-echo's load client, one per agent run (it checks every reply and prints its counts
    /// when its time is up, so each run's client ends just after that run's agent stopped).
    Grpc {
        binary: PathBuf,
        client: Option<Child>,
        answered: u64,
        wrong: Vec<String>,
    },
}

/// GETs of `/hello?name=<n>` on a kept-alive connection until stopped, each answer checked;
/// what was wrong, described.
fn http_load(addr: &str, stop: &AtomicBool, answered: &AtomicU64) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut conn = KeepAlive::connect(addr);
    let (gap, started) = (Duration::from_secs(1) / HTTP_RATE, Instant::now());
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) && wrong.len() < 20 {
        n += 1;
        // Paced: a steady load the agent can follow (unpaced, the client and server take both
        // CPUs and the soak measures the machine's saturation instead of the probes' safety).
        if let Some(wait) = (started + gap * n).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let Ok(c) = conn.as_mut() else {
            wrong.push(format!("request {n}: cannot connect"));
            conn = KeepAlive::connect(addr);
            continue;
        };
        match c.get(&format!("/hello?name={n}"), "") {
            Ok((200, body)) if body == format!("hello {n}\n") => {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                wrong.push(format!("request {n}: {other:?}"));
                conn = KeepAlive::connect(addr);
            }
        }
    }
    wrong
}

fn serve(build: &Build, binary: &Path) -> Served {
    let name = build.name();
    match build.kind {
        Kind::Http => {
            let server = Listening::start(&mut Command::new(binary));
            let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::default());
            let thread = {
                let (addr, stop, answered) = (
                    server.addr.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&answered),
                );
                std::thread::spawn(move || http_load(&addr, &stop, &answered))
            };
            Served {
                name,
                server,
                load: Load::Http {
                    stop,
                    answered,
                    thread,
                },
            }
        }
        Kind::Grpc => Served {
            name,
            server: Listening::start(Command::new(binary).arg("server")),
            load: Load::Grpc {
                binary: binary.to_owned(),
                client: None,
                answered: 0,
                wrong: Vec::new(),
            },
        },
    }
}

impl Served {
    /// Before an agent run: a gRPC server gets its load client for `seconds`.
    fn start_run(&mut self, seconds: u64) {
        if let Load::Grpc { binary, client, .. } = &mut self.load {
            *client = Some(
                Command::new(&*binary)
                    .args(["load", "--target", &self.server.addr, "--concurrency", "4"])
                    .arg(format!("--duration={seconds}s"))
                    .arg(format!("--rate={GRPC_RATE}"))
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("grpc-echo load starts"),
            );
        }
    }

    /// The processes the agent is to trace: the server, and its load client if it has one.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.server.pid()];
        if let Load::Grpc {
            client: Some(client),
            ..
        } = &self.load
        {
            pids.push(client.id());
        }
        pids
    }

    /// After an agent run: wait for the run's gRPC load client and add up its counts.
    fn end_run(&mut self) {
        if let Load::Grpc {
            client,
            answered,
            wrong,
            ..
        } = &mut self.load
            && let Some(child) = client.take()
        {
            let (ok, bad) = grpc_counts(child);
            *answered += ok;
            wrong.extend(bad);
        }
    }

    /// Stop the load; (name, requests answered correctly, what went wrong).
    fn finish(mut self) -> (String, u64, Vec<String>) {
        self.end_run();
        let (answered, mut wrong) = match self.load {
            Load::Http {
                stop,
                answered,
                thread,
            } => {
                stop.store(true, Ordering::Relaxed);
                let wrong = thread.join().unwrap();
                (answered.load(Ordering::Relaxed), wrong)
            }
            Load::Grpc {
                answered, wrong, ..
            } => (answered, wrong),
        };
        if !self.server.alive() {
            let status = self.server.child.wait().unwrap();
            wrong.push(format!("the server exited: {status}"));
        }
        (self.name, answered, wrong)
    }
}

/// Wait for grpc-echo's load client; (calls answered correctly, what went wrong).
fn grpc_counts(client: Child) -> (u64, Vec<String>) {
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let Ok(counts) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
        return (
            0,
            vec![format!("the load client printed {text:?} ({})", out.status)],
        );
    };
    let (requests, errors) = (
        counts["requests"].as_u64().unwrap_or(0),
        counts["errors"].as_u64().unwrap_or(0),
    );
    let mut wrong = Vec::new();
    if errors > 0 || !out.status.success() {
        wrong.push(format!("{errors} failed or wrong calls ({})", out.status));
    }
    (requests - errors, wrong)
}

/// Spans in an `--exporter file` output, counted without parsing it (a run's file holds
/// hundreds of megabytes at full size).
fn count_spans(output: &Path) -> usize {
    let text = std::fs::read(output).unwrap_or_default();
    let key = b"\"spanId\"";
    text.windows(key.len()).filter(|w| w == key).count()
}

/// One agent run: start, let it trace for `up`, then SIGTERM (clean: its spans are counted)
/// or SIGKILL; its peak RSS, its spans when stopped cleanly, and how long it took to be ready.
fn agent_run(
    pids: &[String],
    output: &Path,
    up: Duration,
    kill: bool,
) -> (Option<u64>, usize, Duration) {
    let mut args = vec![
        "run",
        "--exporter",
        "file",
        "--output",
        output.to_str().unwrap(),
    ];
    for pid in pids {
        args.extend(["--pid", pid]);
    }
    let starting = Instant::now();
    let agent = Agent::start(&args);
    let ready = starting.elapsed();
    std::thread::sleep(up);
    let rss = support::faults::peak_rss_kib(agent.pid());
    if kill {
        // SAFETY: kill(2) on the agent, a child of this process.
        unsafe { libc::kill(agent.pid().cast_signed(), libc::SIGKILL) };
        let stopped = agent.stop_after_exit();
        assert!(!stopped.status.success(), "{}", stopped.stderr);
        return (rss, 0, ready);
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    (rss, count_spans(output), ready)
}

#[test]
fn faults_soak_traced_go_programs_answer_right_while_the_agent_comes_and_goes() {
    if !require_privileges() {
        return;
    }
    let mut figures = Figures::new("soak", 60);
    let (runs, up, down): (u64, u64, _) = (pick(4, 20), pick(4, 14), Duration::from_secs(1));
    let builds = builds();
    let mut binaries = Vec::new();
    for build in &builds {
        match build.build() {
            Ok(binary) => binaries.push(binary),
            Err(why) => return cannot_run(&format!("cannot build {}: {why}", build.name())),
        }
    }
    let before = KernelObjects::now();
    let mut served: Vec<Served> = builds
        .iter()
        .zip(&binaries)
        .map(|(b, binary)| serve(b, binary))
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak");
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let (mut clean_spans, mut ready_ms) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let output = dir.join(format!("run-{run}.jsonl"));
        let _ = std::fs::remove_file(&output);
        let kill = run % 2 == 1;
        // Each run's gRPC clients outlast its agent by a little: it stops under their load.
        for s in &mut served {
            s.start_run(up + 2);
        }
        let pids: Vec<String> = served
            .iter()
            .flat_map(Served::pids)
            .map(|p| p.to_string())
            .collect();
        let (rss, spans, ready) = agent_run(&pids, &output, Duration::from_secs(up), kill);
        for s in &mut served {
            s.end_run();
        }
        ready_ms.push(ready.as_millis());
        if let Some(kib) = rss {
            figures.agent_peak_rss_kib = Some(figures.agent_peak_rss_kib.unwrap_or(0).max(kib));
        }
        if !kill {
            clean_spans.push(spans);
        }
        std::thread::sleep(down);
    }
    let soak_seconds = started.elapsed().as_secs();
    // A SIGKILLed agent's probes go with its file descriptors, once the kernel has freed them.
    let left = KernelObjects::left_after(&before, Duration::from_secs(20));
    let mut total = 0;
    let mut all_wrong = Vec::new();
    for s in served {
        let (name, answered, wrong) = s.finish();
        total += answered;
        figures.program(
            name.clone(),
            if wrong.is_empty() {
                format!("running; {answered} answers, all correct")
            } else {
                format!("{answered} correct answers; WRONG: {}", wrong.join("; "))
            },
        );
        all_wrong.extend(wrong.into_iter().map(|w| format!("{name}: {w}")));
    }
    figures.done = format!(
        "the agent started {runs} times (each attaching Go uprobes to every server) and stopped by SIGTERM and SIGKILL in turn, {up} s up and 1 s down"
    );
    figures.load = format!(
        "{total} requests in {soak_seconds} s over {} builds: HTTP/1.1 GETs on kept-alive connections ({HTTP_RATE}/s per server) and unary gRPC calls ({GRPC_RATE}/s per server, 4 in flight), every answer checked",
        builds.len()
    );
    figures.lost = format!(
        "{} wrong or failed answers; kernel objects left after the last stop: {}",
        all_wrong.len(),
        if left.is_empty() {
            "none".to_owned()
        } else {
            left.join(", ")
        }
    );
    figures.counted = format!("spans exported by each SIGTERMed run: {clean_spans:?}");
    figures.note(format!(
        "each start, from exec to ready (all probes attached), ms: {ready_ms:?}"
    ));
    let passed = all_wrong.is_empty() && left.is_empty() && clean_spans.iter().all(|n| *n > 0);
    figures.write(passed);
    assert!(all_wrong.is_empty(), "{all_wrong:#?}");
    assert!(left.is_empty(), "left in the kernel: {left:?}");
    assert!(
        clean_spans.iter().all(|n| *n > 0),
        "a cleanly stopped agent exported no span: {clean_spans:?}"
    );
    if full() {
        assert!(total >= 1_000_000, "only {total} requests in the full soak");
    }
}
