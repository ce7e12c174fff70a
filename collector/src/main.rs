//! The `wirespan` command line: parse flags, wire a sink and a shutdown signal into
//! `agent::run`, print the start-up report and the summary. Errors end in one line and exit 1.

use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use wirespan::{
    agent::{self, RunOptions},
    export::{EventSink, clock::WallClock, console::ConsoleSink, json::JsonLinesSink},
    load::AttachMode,
};

/// eBPF tracing agent: watches TCP connections (and, as it grows, socket syscalls and Go's
/// net/http and grpc-go) and turns them into OpenTelemetry traces, with no code change.
///
/// Needs Linux >= 5.8 with BTF, and root or CAP_BPF + CAP_PERFMON.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent and export what it sees.
    Run {
        /// Where the output goes. `console` prints one line per TCP connect.
        #[arg(long, value_enum, default_value_t = Exporter::Console)]
        exporter: Exporter,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print every kernel event as one line (tcpdump-like), or as JSON lines with --json.
    Events {
        /// One JSON object per line: type, pid, tid, comm, saddr, sport, daddr, dport, ts_ns, mode.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Exporter {
    /// Human-readable lines on standard output.
    Console,
}

#[derive(Args)]
struct CommonArgs {
    /// Stop after this many seconds (probes detached, ring buffer drained). Default: until
    /// Ctrl-C or SIGTERM, which do the same.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Attach every hook in this mode only, instead of trying kprobe, fentry, then tracepoint.
    #[arg(long, value_enum, env = "WIRESPAN_ATTACH_MODE")]
    attach_mode: Option<AttachMode>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wirespan: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (common, mut sink): (CommonArgs, Box<dyn EventSink>) = match cli.command {
        Command::Run {
            exporter: Exporter::Console,
            common,
        }
        | Command::Events {
            json: false,
            common,
        } => (
            common,
            Box::new(ConsoleSink::new(
                std::io::stdout().lock(),
                WallClock::system(),
            )),
        ),
        Command::Events { json: true, common } => (
            common,
            Box::new(JsonLinesSink::new(std::io::stdout().lock())),
        ),
    };
    let duration = common
        .duration
        .map(|secs| {
            Duration::try_from_secs_f64(secs).map_err(|_| {
                anyhow::anyhow!("--duration {secs}: expected a non-negative number of seconds")
            })
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let options = RunOptions {
        attach_mode: common.attach_mode,
    };
    let summary = runtime.block_on(async {
        let shutdown = shutdown_signal(duration)?;
        let on_ready = |report: &[wirespan::load::HookReport]| {
            let mut err = std::io::stderr().lock();
            for hook in report {
                for line in hook.to_string().lines() {
                    let _ = writeln!(err, "wirespan: {line}");
                }
            }
            let until = duration.map_or("Ctrl-C or SIGTERM".to_owned(), |d| {
                format!("{d:?} have passed")
            });
            let _ = writeln!(err, "wirespan: ready; capturing until {until}");
        };
        anyhow::Ok(agent::run(options, sink.as_mut(), on_ready, shutdown).await?)
    })?;
    eprintln!("wirespan: stopped: {}", summary.describe());
    Ok(())
}

/// Resolves at the first of: the duration elapsing, Ctrl-C (SIGINT), SIGTERM.
fn shutdown_signal(
    duration: Option<Duration>,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = timer => {}
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    })
}
