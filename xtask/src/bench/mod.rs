//! `cargo xtask bench [--quick]`: what tracing costs where it hurts. Three targets (a Go
//! net/http hello server; the three-tier example gin → net/http → gRPC; a gRPC unary echo),
//! each under a fixed-concurrency load (oha for HTTP, grpc-echo's own load command for gRPC) at
//! saturation and at a fixed 10k requests/s, each with no agent, with wirespan, and with
//! go.opentelemetry.io/auto. Configurations alternate within each round (the order rotates
//! from round to round), so drift of the machine falls on all of them alike.
//!
//! Every run starts its services fresh, then the configuration, warms up, and measures:
//! throughput and latency from the load generator, CPU of the agent (user + system from /proc
//! plus the run time of its BPF programs, `kernel.bpf_stats_enabled`) and of the traced
//! services, the agent's peak RSS, events lost (its exit summary) and, from its spans file,
//! completeness and the three-tier chain's parent links. `report` turns the runs into
//! `bench/results/*.md`, `.json` and a plot.

mod measure;
mod report;
mod tools;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{setup, workspace_root};
use measure::{Load, SpanCheck};

/// The load: calls in flight, and the fixed rate.
const CONCURRENCY: u32 = 50;
const FIXED_RATE: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Hello,
    ThreeTier,
    GrpcEcho,
}

impl Target {
    const ALL: [Self; 3] = [Self::Hello, Self::ThreeTier, Self::GrpcEcho];

    fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello (net/http)",
            Self::ThreeTier => "three-tier (gin -> net/http -> gRPC)",
            Self::GrpcEcho => "gRPC unary echo",
        }
    }

    /// The service the load enters, and the services below it on the three-tier chain.
    fn entry(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Hello => ("hello", &[]),
            Self::ThreeTier => ("front", &["relay", "echo-grpc"]),
            Self::GrpcEcho => ("echo-grpc", &[]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    NoAgent,
    Wirespan,
    GoAuto,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::NoAgent => "no agent",
            Self::Wirespan => "wirespan",
            Self::GoAuto => "go-auto",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Saturation,
    FixedRate,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Saturation => "saturation",
            Self::FixedRate => "10k req/s",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    pub target: Target,
    pub config: Config,
    pub mode: Mode,
    pub load: Load,
    /// Requests sent while the configuration ran (warm-up included), for completeness.
    pub requests_all: u64,
    pub services_cpu_us: u64,
    pub agent_cpu_us: u64,
    pub agent_bpf_ns: u64,
    pub agent_peak_rss_kib: u64,
    pub events_lost: u64,
    pub spans: Option<SpanCheck>,
}

/// How long each piece takes.
struct Plan {
    rounds: usize,
    measure: Duration,
    warmup: Duration,
    configs: Vec<Config>,
}

pub fn run(agent: &Path, quick: bool) -> anyhow::Result<()> {
    if !setup::is_root() {
        bail!("the benchmark loads BPF programs and reads their statistics: run it as root");
    }
    let dir = setup::cache_dir().join("bench");
    let bin = dir.join("bin");
    tools::services(&bin)?;
    let oha = tools::oha()?;
    // go-auto: built once; in --quick only when already built (its first build takes minutes).
    let go_auto = if quick && !tools::go_auto_cached() {
        Err("not run in --quick mode (not built yet)".to_owned())
    } else {
        tools::go_auto()
    };
    let mut plan = Plan {
        rounds: if quick { 1 } else { 3 },
        measure: Duration::from_secs(if quick { 2 } else { 10 }),
        warmup: Duration::from_millis(if quick { 300 } else { 2000 }),
        configs: vec![Config::NoAgent, Config::Wirespan],
    };
    let mut go_auto_note = match &go_auto {
        Ok(_) => None,
        Err(why) => Some(format!("go-auto could not be built: {why}")),
    };
    if go_auto.is_ok() {
        plan.configs.push(Config::GoAuto);
    }
    let stats = measure::enable_bpf_stats();
    let env = Env {
        agent: agent.to_owned(),
        bin,
        oha,
        go_auto: go_auto.ok(),
        dir: dir.clone(),
    };
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut go_auto_refused = None;
    for round in 0..plan.rounds {
        for target in Target::ALL {
            for mode in [Mode::Saturation, Mode::FixedRate] {
                // Rotate the configurations' order from round to round.
                let mut order = plan.configs.clone();
                let shift = round % order.len();
                order.rotate_left(shift);
                for config in order {
                    if config == Config::GoAuto && go_auto_refused.is_some() {
                        continue;
                    }
                    eprintln!(
                        "xtask: bench round {}/{}: {} at {}, {}",
                        round + 1,
                        plan.rounds,
                        target.name(),
                        mode.name(),
                        config.name()
                    );
                    match env.one_run(target, config, mode, &plan) {
                        Ok(run) => runs.push(run),
                        Err(e) if config == Config::GoAuto => {
                            eprintln!("xtask: go-auto did not attach: {e:#}");
                            go_auto_refused = Some(format!("{e:#}"));
                        }
                        Err(e) => {
                            measure::restore_bpf_stats(stats);
                            return Err(e);
                        }
                    }
                }
            }
        }
    }
    measure::restore_bpf_stats(stats);
    if let Some(why) = go_auto_refused {
        go_auto_note = Some(format!("go-auto was built but could not run here: {why}"));
    }
    eprintln!("xtask: bench took {:.0?}", started.elapsed());
    report::write(
        &workspace_root().join("bench/results"),
        &runs,
        quick,
        go_auto_note.as_deref(),
    )
}

/// Paths the runs use.
struct Env {
    agent: PathBuf,
    bin: PathBuf,
    oha: PathBuf,
    go_auto: Option<PathBuf>,
    dir: PathBuf,
}

/// A started process, killed when dropped (SIGTERM first).
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(&mut self, patience: Duration) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id().cast_signed(), libc::SIGTERM) };
        let deadline = Instant::now() + patience;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(30));
    }
}

/// A service that prints its address first; (process, address).
fn service(binary: &Path, name: &str, args: &[&str]) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(binary)
        .args(args)
        .env("OTEL_SERVICE_NAME", name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut addr = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut addr)?;
    Ok((Proc { child }, addr.trim().to_owned()))
}

/// The running services of a target: processes and the address the load goes to.
struct Services {
    procs: Vec<Proc>,
    entry: String,
}

impl Env {
    fn start_services(&self, target: Target) -> anyhow::Result<Services> {
        let hello = self.bin.join("http-hello");
        let grpc = self.bin.join("grpc-echo");
        let front = self.bin.join("gin-front");
        Ok(match target {
            Target::Hello => {
                let (p, addr) = service(&hello, "hello", &[])?;
                Services {
                    procs: vec![p],
                    entry: addr,
                }
            }
            Target::GrpcEcho => {
                let (p, addr) = service(&grpc, "echo-grpc", &["server"])?;
                Services {
                    procs: vec![p],
                    entry: addr,
                }
            }
            Target::ThreeTier => {
                let (e, echo) = service(&grpc, "echo-grpc", &["server"])?;
                let (r, relay) = service(&grpc, "relay", &["relay", "--target", &echo])?;
                let (f, addr) = service(&front, "front", &["--backend", &relay])?;
                Services {
                    procs: vec![e, r, f],
                    entry: addr,
                }
            }
        })
    }

    /// Send load for `duration` (at the fixed rate when asked).
    fn load(
        &self,
        target: Target,
        entry: &str,
        duration: Duration,
        rate: Option<u32>,
    ) -> anyhow::Result<Load> {
        let seconds = format!("{}s", duration.as_secs_f64());
        let out = match target {
            Target::GrpcEcho => {
                let mut cmd = Command::new(self.bin.join("grpc-echo"));
                cmd.args(["load", "--target", entry, "--duration", &seconds])
                    .args(["--concurrency", &CONCURRENCY.to_string()]);
                if let Some(r) = rate {
                    cmd.args(["--rate", &r.to_string()]);
                }
                let out = cmd.stderr(Stdio::inherit()).output()?;
                return measure::parse_grpc_load(&out.stdout);
            }
            Target::Hello | Target::ThreeTier => {
                let path = if target == Target::Hello {
                    "/hello"
                } else {
                    "/echo?msg=bench"
                };
                let mut cmd = Command::new(&self.oha);
                cmd.args(["--no-tui", "--output-format", "json", "-z", &seconds])
                    .args(["-c", &CONCURRENCY.to_string()]);
                if let Some(r) = rate {
                    cmd.args(["-q", &r.to_string()]);
                }
                cmd.arg(format!("http://{entry}{path}"))
                    .stderr(Stdio::inherit())
                    .output()?
            }
        };
        measure::parse_oha(&out.stdout)
    }

    fn one_run(
        &self,
        target: Target,
        config: Config,
        mode: Mode,
        plan: &Plan,
    ) -> anyhow::Result<Run> {
        let services = self.start_services(target)?;
        let pids: Vec<u32> = services.procs.iter().map(Proc::pid).collect();
        let spans_file = self.dir.join("spans.jsonl");
        let mut agent = self.start_config(config, &pids, &spans_file)?;
        let rate = (mode == Mode::FixedRate).then_some(FIXED_RATE);
        let warm = self.load(target, &services.entry, plan.warmup, rate)?;
        let agent_pids: Vec<u32> = agent.iter().map(|a| a.proc.pid()).collect();
        let cpu = |ps: &[u32]| ps.iter().map(|&p| measure::cpu_us(p)).sum::<u64>();
        let bpf = |ps: &[u32]| ps.iter().map(|&p| measure::bpf_run_time(p).0).sum::<u64>();
        let (services_before, agent_before, bpf_before) =
            (cpu(&pids), cpu(&agent_pids), bpf(&agent_pids));
        let load = self.load(target, &services.entry, plan.measure, rate)?;
        let (services_after, agent_after, bpf_after) =
            (cpu(&pids), cpu(&agent_pids), bpf(&agent_pids));
        let peak = agent_pids
            .iter()
            .map(|&p| measure::peak_rss_kib(p))
            .max()
            .unwrap_or(0);
        let mut lost = 0;
        for a in &mut agent {
            lost += a.stop();
        }
        drop(services);
        let spans = (config == Config::Wirespan).then(|| {
            let (entry, chain) = target.entry();
            measure::check_spans(&spans_file, entry, chain)
        });
        Ok(Run {
            target,
            config,
            mode,
            requests_all: warm.requests + load.requests,
            load,
            services_cpu_us: services_after.saturating_sub(services_before),
            agent_cpu_us: agent_after.saturating_sub(agent_before),
            agent_bpf_ns: bpf_after.saturating_sub(bpf_before),
            agent_peak_rss_kib: peak,
            events_lost: lost,
            spans,
        })
    }

    /// Start the configuration's agents and wait until they are attached.
    fn start_config(
        &self,
        config: Config,
        pids: &[u32],
        spans_file: &Path,
    ) -> anyhow::Result<Vec<Agent>> {
        match config {
            Config::NoAgent => Ok(Vec::new()),
            Config::Wirespan => {
                let mut cmd = Command::new(&self.agent);
                cmd.args(["run", "--exporter", "file", "--output"])
                    .arg(spans_file);
                for pid in pids {
                    cmd.args(["--pid", &pid.to_string()]);
                }
                Ok(vec![Agent::start(cmd, "wirespan: ready", None)?])
            }
            Config::GoAuto => {
                let binary = self.go_auto.as_ref().context("go-auto was not built")?;
                // One instrumentation process per traced process (the CLI's model).
                let mut agents = Vec::new();
                for pid in pids {
                    let mut cmd = Command::new(binary);
                    cmd.args(["-target-pid", &pid.to_string()])
                        .env("OTEL_TRACES_EXPORTER", "console")
                        .env("OTEL_SERVICE_NAME", "bench");
                    let log = self.dir.join(format!("go-auto-{pid}.out"));
                    agents.push(Agent::start(
                        cmd,
                        "instrumentation loaded successfully",
                        Some(&log),
                    )?);
                }
                Ok(agents)
            }
        }
    }
}

/// An agent process and what it printed on stderr.
struct Agent {
    proc: Proc,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Agent {
    /// Start `cmd`; wait (60 s) for a stderr line containing `ready`. Stdout goes to `stdout`
    /// (or nowhere).
    fn start(mut cmd: Command, ready: &str, stdout: Option<&Path>) -> anyhow::Result<Self> {
        let out = match stdout {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start the agent")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let err = BufReader::new(child.stderr.take().context("no stderr")?);
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut printed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                bail!("it did not become ready: {}", last_error(&printed));
            };
            let done = line.contains(ready);
            printed.push(line);
            if done {
                break;
            }
        }
        Ok(Self {
            proc: Proc { child },
            stderr: rx,
        })
    }

    /// Stop it (SIGTERM; detaching takes a while) and return the events it lost.
    fn stop(&mut self) -> u64 {
        self.proc.terminate(Duration::from_secs(120));
        // The reader thread ends when the agent's stderr closes.
        let mut rest = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            rest.push(line);
        }
        measure::events_lost(&rest.join("\n"))
    }
}

/// The error that stopped an agent: the `msg` and `error` of its last JSON log line at level
/// ERROR (go-auto logs so; earlier ERROR lines may be ones it survived), else its last line.
fn last_error(printed: &[String]) -> String {
    printed
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "ERROR")
        .map(|v| {
            format!(
                "{}: {}",
                v["msg"].as_str().unwrap_or_default(),
                v["error"].as_str().unwrap_or_default()
            )
        })
        .or_else(|| printed.last().cloned())
        .unwrap_or_else(|| "it printed nothing".to_owned())
}
