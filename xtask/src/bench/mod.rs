//! `cargo xtask bench [--quick]`: what tracing costs where it hurts. Four targets (a Go
//! net/http hello server, over plain HTTP and over HTTPS; the three-tier example gin → net/http
//! → gRPC; a gRPC unary echo),
//! each under a fixed-concurrency load (oha for HTTP, grpc-echo's own load command for gRPC) at
//! saturation and at a fixed 10k requests/s, each with no agent, with two floors (empty BPF
//! programs where the agent attaches, see `floor`), with wirespan (exporting over OTLP/gRPC to
//! a receiver that discards spans, xtask/otlp-sink), and with go.opentelemetry.io/auto.
//! Configurations alternate within each round (the order rotates from round to round), so
//! drift of the machine falls on all of them alike.
//!
//! Every run starts its services fresh, then the configuration, warms up, and measures:
//! throughput and latency from the load generator, CPU of the agent (user + system from /proc
//! plus the run time of its BPF programs, `kernel.bpf_stats_enabled`) and of the traced
//! services, the kernel's run counts and times of each BPF program (`bpf`), the agent's
//! voluntary context switches, peak RSS, events lost (its exit summary) and, from what the
//! receiver kept, completeness and the three-tier chain's parent links. `report` turns the
//! runs into `bench/results/*.md`, `.json` and a plot.

mod bpf;
mod configs;
mod floor;
mod measure;
mod report;
mod tools;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
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
    /// The same server over HTTPS (HTTP/1.1): its plaintext takes crypto/tls uprobes.
    HelloTls,
    ThreeTier,
    GrpcEcho,
}

impl Target {
    const ALL: [Self; 4] = [Self::Hello, Self::HelloTls, Self::ThreeTier, Self::GrpcEcho];

    fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello (net/http)",
            Self::HelloTls => "hello over HTTPS (net/http, HTTP/1.1)",
            Self::ThreeTier => "three-tier (gin -> net/http -> gRPC)",
            Self::GrpcEcho => "gRPC unary echo",
        }
    }

    /// The service the load enters, and the services below it on the three-tier chain.
    fn entry(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Hello | Self::HelloTls => ("hello", &[]),
            Self::ThreeTier => ("front", &["relay", "echo-grpc"]),
            Self::GrpcEcho => ("echo-grpc", &[]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    NoAgent,
    /// Empty programs on the 12 socket syscall tracepoints.
    FloorA,
    /// Floor A and one empty uprobe per request in each serving Go program.
    FloorB,
    Wirespan,
    GoAuto,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::NoAgent => "no agent",
            Self::FloorA => "floor A",
            Self::FloorB => "floor B",
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
    /// Each BPF program's runs and run time over the measurement window.
    pub programs: Vec<bpf::Program>,
    /// Voluntary context switches of the agent's threads over the window.
    pub agent_sleeps: u64,
    /// Ring-buffer wake-ups over the agent's whole run, when its exit summary has them.
    pub wakeups: Option<u64>,
    /// User-space µs by stage over the agent's whole run, when its exit summary has them.
    pub stages: Vec<(String, f64)>,
    pub agent_peak_rss_kib: u64,
    pub events_lost: u64,
    /// Spans the OTLP receiver got (wirespan only).
    pub spans_received: Option<u64>,
    pub spans: Option<SpanCheck>,
}

/// How long each piece takes.
struct Plan {
    rounds: usize,
    measure: Duration,
    warmup: Duration,
    configs: Vec<Config>,
}

/// The binaries the bench builds from this workspace.
pub struct Built {
    pub agent: PathBuf,
    /// `wirespan-floor` (collector/src/bin/wirespan-floor.rs).
    pub floor: PathBuf,
    /// `otlp-sink` (xtask/otlp-sink).
    pub sink: PathBuf,
}

pub fn run(built: Built, quick: bool) -> anyhow::Result<()> {
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
        // Longer than the agent's serving-probe quiet period (configs::SERVING_QUIET_SECS), so
        // every window measures the steady state.
        warmup: Duration::from_millis(if quick { 2500 } else { 3000 }),
        configs: vec![
            Config::NoAgent,
            Config::FloorA,
            Config::FloorB,
            Config::Wirespan,
        ],
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
        agent: built.agent,
        floor: built.floor,
        sink: built.sink,
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
    floor: PathBuf,
    sink: PathBuf,
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

fn path_arg(path: &std::path::Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

/// A service that prints its address first; (process, address).
fn service(binary: &std::path::Path, name: &str, args: &[&str]) -> anyhow::Result<(Proc, String)> {
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
            Target::HelloTls => {
                let (cert, key) = setup::certificate(&self.dir)?;
                let (cert, key) = (path_arg(&cert)?, path_arg(&key)?);
                let (p, addr) = service(&hello, "hello", &["-tls-cert", cert, "-tls-key", key])?;
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
            Target::Hello | Target::HelloTls | Target::ThreeTier => {
                let (scheme, path) = match target {
                    Target::Hello => ("http", "/hello"),
                    // oha's own TLS is not the agent's business: the certificate is made here.
                    Target::HelloTls => ("https", "/hello"),
                    _ => ("http", "/echo?msg=bench"),
                };
                let mut cmd = Command::new(&self.oha);
                cmd.args(["--no-tui", "--output-format", "json", "-z", &seconds])
                    .args(["-c", &CONCURRENCY.to_string()]);
                if let Some(r) = rate {
                    cmd.args(["-q", &r.to_string()]);
                }
                if target == Target::HelloTls {
                    cmd.arg("--insecure");
                }
                cmd.arg(format!("{scheme}://{entry}{path}"))
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
        let configs::Started { mut agents, sink } = self.start_config(config, target, &pids)?;
        let rate = (mode == Mode::FixedRate).then_some(FIXED_RATE);
        let warm = self.load(target, &services.entry, plan.warmup, rate)?;
        let agent_pids: Vec<u32> = agents.iter().map(configs::Agent::pid).collect();
        let cpu = |ps: &[u32]| ps.iter().map(|&p| measure::cpu_us(p)).sum::<u64>();
        let sleeps = |ps: &[u32]| {
            ps.iter()
                .map(|&p| measure::voluntary_switches(p))
                .sum::<u64>()
        };
        let programs = |ps: &[u32]| {
            ps.iter()
                .flat_map(|&p| bpf::programs(p))
                .collect::<Vec<_>>()
        };
        let (programs_before, sleeps_before) = (programs(&agent_pids), sleeps(&agent_pids));
        let (services_before, agent_before) = (cpu(&pids), cpu(&agent_pids));
        let load = self.load(target, &services.entry, plan.measure, rate)?;
        let (services_after, agent_after) = (cpu(&pids), cpu(&agent_pids));
        let (programs_after, sleeps_after) = (programs(&agent_pids), sleeps(&agent_pids));
        let programs = bpf::delta(&programs_before, &programs_after);
        let peak = agent_pids
            .iter()
            .map(|&p| measure::peak_rss_kib(p))
            .max()
            .unwrap_or(0);
        let said: Vec<String> = agents.iter_mut().map(configs::Agent::stop).collect();
        let said = said.join("\n");
        drop(services);
        let (spans, spans_received) = match sink {
            Some(mut sink) => {
                let received = sink.stop();
                let (entry, chain) = target.entry();
                (
                    Some(measure::check_spans(&sink.records, entry, chain)),
                    received,
                )
            }
            None => (None, None),
        };
        Ok(Run {
            target,
            config,
            mode,
            requests_all: warm.requests + load.requests,
            load,
            services_cpu_us: services_after.saturating_sub(services_before),
            agent_cpu_us: agent_after.saturating_sub(agent_before),
            agent_bpf_ns: programs.iter().map(|p| p.run_time_ns).sum(),
            programs,
            agent_sleeps: sleeps_after.saturating_sub(sleeps_before),
            wakeups: measure::wakeups(&said),
            stages: measure::stages(&said),
            agent_peak_rss_kib: peak,
            events_lost: measure::events_lost(&said),
            spans_received,
            spans,
        })
    }
}
