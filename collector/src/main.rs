//! The `wirespan` command line: parse flags, wire a source, a sink and a shutdown signal into
//! `agent`, print the start-up report and the summary. Errors end in one line and exit 1.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use export_args::ExportArgs;
use join_args::JoinArgs;
use wirespan::{
    agent::{self, Output, RunSummary},
    clock::WallClock,
    golang::discover::GoReport,
    load::{
        AttachMode, DEFAULT_CAPTURE_BYTES, DEFAULT_RING_BUFFER_MIB, Filters, HookReport,
        LoadOptions, TlsReport,
    },
    sink::{EventSink, ExchangeSink, FanOut},
    source::recording::{RecordingInfo, RecordingReader, RecordingWriter},
    span::{
        processes::Resources,
        route::{RouteOption, RouteRuleError, RouteRules},
        route_book::{RouteBook, TableReader, live_table_reader},
    },
    views::{
        console::ConsoleSink,
        exchanges::{ConsoleExchanges, JsonExchanges},
        json::JsonLinesSink,
        map::ServiceMap,
    },
};

/// eBPF tracing agent: watches TCP connections and socket syscalls (and, as it grows, Go's
/// net/http and grpc-go) and turns them into OpenTelemetry traces, with no code change.
///
/// Needs Linux >= 5.8 with BTF, and root or CAP_SYS_ADMIN + CAP_SYS_PTRACE +
/// CAP_DAC_READ_SEARCH (not for --replay).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent and export what it sees as spans with parent links.
    Run {
        // Boxed: the export flags make this variant much larger than the others.
        #[command(flatten)]
        export: Box<ExportArgs>,
        #[command(flatten)]
        routes: RouteArgs,
        #[command(flatten)]
        join: JoinArgs,
        /// Make spans from a recording (`wirespan record`) instead of the kernel.
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        #[command(flatten)]
        capture: CaptureArgs,
    },
    /// Print every kernel event (connect, accept, close, data) as one line, tcpdump-like, or as
    /// JSON lines with --json.
    Events {
        /// One JSON object per line: type, pid, tid, comm, conn_id, saddr, sport (this process's
        /// end), daddr, dport (the peer), direction, bytes, seq, goid, ts_ns, and more.
        #[arg(long)]
        json: bool,
        /// Read events from a recording (`wirespan record`) instead of the kernel.
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        #[command(flatten)]
        capture: CaptureArgs,
    },
    /// Print every request/response exchange (HTTP/1.x, HTTP/2, gRPC) decoded from the
    /// connections' bytes: one line each, or JSON lines with --json.
    Exchanges {
        /// One JSON object per line: conn_id, pid, comm, saddr, sport, daddr, dport, role,
        /// protocol, version, method, target, host, status, stream_id, grpc_*, traceparent,
        /// start_ns, end_ns, request_bytes, response_bytes and flags.
        #[arg(long)]
        json: bool,
        /// Read events from a recording (`wirespan record`) instead of the kernel.
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        #[command(flatten)]
        capture: CaptureArgs,
    },
    /// The service graph observed over a run (until --duration, Ctrl-C or the end of a
    /// --replay): each client→server edge with its request and error counts and latency p50/p99.
    Map {
        /// table (for the terminal), dot (Graphviz), or svg (rendered with Graphviz's `dot`).
        #[arg(long, value_enum, default_value_t = MapFormat::Table)]
        format: MapFormat,
        /// Make the graph from a recording (`wirespan record`) instead of the kernel.
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        #[command(flatten)]
        capture: CaptureArgs,
    },
    /// Print the Go struct layouts wirespan reads from binaries' DWARF, as offsets-table JSON
    /// (`cargo xtask offsets` builds the committed table with it). Needs no privileges.
    GoOffsets {
        /// Unstripped Go binaries.
        #[arg(required = true)]
        binaries: Vec<PathBuf>,
    },
    /// Write the raw event stream to a versioned recording, for replay and test fixtures.
    Record {
        /// The recording to write (replaced if it exists).
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        capture: CaptureArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum MapFormat {
    Table,
    Dot,
    Svg,
}

#[derive(Args)]
struct RouteArgs {
    /// Route rules for HTTP spans (`http.route` and the span name): pattern=TEMPLATE,
    /// unmatched=heuristic|path|none. Repeatable, or comma-separated.
    ///
    /// Real routes read from Go programs (net/http ServeMux patterns, gin paths) always win,
    /// with no configuration. Then the patterns, in the order given (the first that matches
    /// is the route, marked wirespan.route.source=template): `{name}` or `:name` matches one
    /// non-empty segment, a last `{name...}`, `*` or `*name` the rest of the path (none
    /// included), anything else itself; e.g. pattern=/users/{id}/cart,pattern=/files/*.
    /// Then the unmatched policy: heuristic (the default) replaces the segments that look
    /// like ids (numbers, UUIDs, long hex, base64-like tokens) with `{id}` and marks the span
    /// wirespan.route.source=heuristic; path uses the raw path (one span name per id);
    /// none sets no route, and the span is named by its method alone. Of several unmatched=,
    /// the last wins.
    #[arg(
        long = "routes",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        env = "WIRESPAN_ROUTES"
    )]
    routes: Vec<RouteOption>,
}

impl RouteArgs {
    /// The route rules the span stage applies after the program's own routes.
    fn route_rules(&self) -> Result<RouteRules, RouteRuleError> {
        RouteRules::from_options(&self.routes)
    }
}

#[derive(Args)]
struct CaptureArgs {
    /// Stop after this many seconds (probes detached, ring buffer drained). Default: until
    /// Ctrl-C or SIGTERM, which do the same.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Prefer this attach mode for every hook that has it, instead of trying kprobe, fentry,
    /// then tracepoint.
    #[arg(long, value_enum, env = "WIRESPAN_ATTACH_MODE")]
    attach_mode: Option<AttachMode>,
    /// Payload bytes captured per read or write (byte counts stay exact beyond it). At most 16384.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CAPTURE_BYTES)]
    capture_bytes: u32,
    /// Size of the kernel-to-agent event ring buffer, in MiB (a power of two). What does not fit
    /// while the agent catches up is lost, counted and reported.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_RING_BUFFER_MIB)]
    ring_buffer_mib: u32,
    /// Only these processes (repeatable). With --cgroup too, processes matching either.
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Only connections with this port at either end (repeatable; combines with the process
    /// filters: both must match).
    #[arg(long, value_name = "PORT")]
    port: Vec<u16>,
    /// Only processes in this cgroup v2 directory, absolute or under /sys/fs/cgroup (repeatable).
    /// With --pid too, processes matching either.
    #[arg(long, value_name = "PATH")]
    cgroup: Vec<PathBuf>,
    /// Seconds a Go program keeps its per-request probes (handler, goroutine start and end,
    /// gRPC server headers) while it serves without calling out. Such a program's requests
    /// are read from its syscalls alone, so they cost it no uprobe hit; the probes go back on
    /// when it calls out. 0 keeps them on always.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5,
        env = "WIRESPAN_SERVING_PROBES_QUIET_SECS"
    )]
    serving_probes_quiet_secs: u64,
    /// Keep the bodies of TLS plaintext (HTTP/1 bodies, HTTP/2 DATA). By default they are
    /// blanked as soon as the decoders have framed them, before a recording, the event view
    /// or anything else keeps them: only heads, headers and framing remain. Plaintext
    /// (non-TLS) traffic is captured as it is.
    #[arg(long, env = "WIRESPAN_CAPTURE_TLS_BODIES")]
    capture_tls_bodies: bool,
    /// Make no `tcp` spans. By default each request/response turn on a connection whose
    /// protocol no decoder knows is a span (`tcp <server address>`: peer, bytes each way,
    /// duration, under the request that made it), so a trace has no hole where such a call
    /// went; a connection gives 1,000 at most, the rest folded into its last.
    #[arg(long, env = "WIRESPAN_NO_TCP_SPANS")]
    no_tcp_spans: bool,
    /// More header names whose values are credentials (comma-separated, any case), masked in
    /// place wherever captured bytes are shown or kept (the events view, recordings), as the
    /// defaults are: Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key,
    /// Api-Key, Apikey, X-Auth-Token, X-Access-Token, X-Csrf-Token, X-Amz-Security-Token,
    /// X-Goog-Api-Key (HTTP/1 heads, HTTP/2 header blocks, gRPC metadata). Query values are
    /// masked too (and in `wirespan exchanges`), and recordings keep no environment value but
    /// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        env = "WIRESPAN_REDACT_HEADERS"
    )]
    redact_headers: Vec<String>,
    /// DEBUGGING ONLY: show and record credentials (the headers above, query values,
    /// environments) as captured. The agent says so on start.
    #[arg(long)]
    show_secrets: bool,
}

impl CaptureArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            attach_mode: self.attach_mode,
            capture_bytes: self.capture_bytes,
            ring_buffer_mib: self.ring_buffer_mib,
            serving_quiet_after: (self.serving_probes_quiet_secs > 0)
                .then(|| Duration::from_secs(self.serving_probes_quiet_secs)),
            filters: Filters {
                pids: self.pid.clone(),
                ports: self.port.clone(),
                cgroups: self.cgroup.clone(),
            },
            keep_tls_bodies: self.capture_tls_bodies,
            show_secrets: self.show_secrets,
            redact_headers: self.redact_headers.clone(),
        }
    }

    fn duration(&self) -> anyhow::Result<Option<Duration>> {
        self.duration
            .map(|secs| {
                Duration::try_from_secs_f64(secs).map_err(|_| {
                    anyhow::anyhow!("--duration {secs}: expected a non-negative number of seconds")
                })
            })
            .transpose()
    }
}

/// glibc's malloc raises its mmap threshold each time it frees a mapped block, so after a few
/// resizes the agent's large tables (which double under connection churn) come from the heap,
/// where every table left behind by a resize stays resident as a hole. Fixed at 128 KiB, every
/// large block keeps a mapping of its own and goes back to the system when freed: in the churn
/// fault case (3,300 connections a second) the agent's RSS grew by 100 MiB instead of 116.
fn keep_large_blocks_mapped() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter, here before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    keep_large_blocks_mapped();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and each cause that does not already repeat in it (many of
            // the errors name their cause in their own message).
            let mut text = err.to_string();
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text = format!("{text}: {cause}");
                }
            }
            eprintln!("wirespan: error: {text}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = || std::io::stdout().lock();
    match cli.command {
        Command::Events {
            json,
            replay,
            capture,
        } => {
            let clock = clock_for(replay.as_deref())?;
            let mut sink: Box<dyn EventSink> = if json {
                Box::new(JsonLinesSink::new(stdout()))
            } else {
                Box::new(ConsoleSink::new(stdout(), clock, true))
            };
            from_source(
                replay.as_deref(),
                &capture,
                Output::Events(sink.as_mut()),
                None,
            )
            .map(drop)
        }
        Command::Exchanges {
            json,
            replay,
            capture,
        } => {
            let clock = clock_for(replay.as_deref())?;
            let mut sink: Box<dyn ExchangeSink> = if json {
                Box::new(JsonExchanges::new(stdout()))
            } else {
                Box::new(ConsoleExchanges::new(stdout(), clock))
            };
            from_source(
                replay.as_deref(),
                &capture,
                Output::exchanges(sink.as_mut()),
                None,
            )
            .map(drop)
        }
        Command::Run {
            export,
            routes,
            join,
            replay,
            capture,
        } => run_spans(&export, &routes, &join, replay.as_deref(), &capture),
        Command::Map {
            format,
            replay,
            capture,
        } => service_map(format, replay.as_deref(), &capture),
        Command::GoOffsets { binaries } => {
            let table =
                wirespan::golang::offsets_table::generate(&binaries).map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&table)?);
            Ok(())
        }
        Command::Record { output, capture } => {
            let info = RecordingInfo {
                wall_offset_ns: WallClock::system().offset_ns() as i64,
                capture_bytes: capture.capture_bytes,
            };
            let mut recorder = RecordingWriter::create(&output, info)?;
            let mut sink = ConsoleSink::new(std::io::sink(), WallClock::system(), false);
            let summary = live(&capture, Output::Events(&mut sink), Some(&mut recorder))?;
            recorder.finish()?;
            eprintln!(
                "wirespan: recorded to {}: {}",
                output.display(),
                summary.describe()
            );
            Ok(())
        }
    }
}

/// The wall clock for a view: the recording's own (so a replay shows the original times), or
/// this system's.
fn clock_for(replay: Option<&Path>) -> anyhow::Result<WallClock> {
    Ok(match replay {
        Some(path) => {
            WallClock::with_offset(i128::from(RecordingReader::open(path)?.info.wall_offset_ns))
        }
        None => WallClock::system(),
    })
}

/// `wirespan map`: run to the end, then print the graph.
fn service_map(
    format: MapFormat,
    replay: Option<&Path>,
    capture: &CaptureArgs,
) -> anyhow::Result<()> {
    let resources = if replay.is_some() {
        Resources::offline()
    } else {
        Resources::new(PathBuf::from("/proc"), false)
    };
    let mut map = ServiceMap::new(resources.clone());
    from_source(
        replay,
        capture,
        Output::spans(
            &mut map,
            resources,
            route_book(RouteRules::default(), replay.is_some()),
        ),
        None,
    )?;
    let text = match format {
        MapFormat::Table => map.table(),
        MapFormat::Dot => map.dot(),
        MapFormat::Svg => map.svg()?,
    };
    print!("{text}");
    Ok(())
}

/// Names spans' routes: live runs read Go programs' route tables from their memory; replays
/// (whose processes are gone) use the rules alone.
fn route_book(rules: RouteRules, replay: bool) -> RouteBook {
    let reader: Option<TableReader> = (!replay).then(live_table_reader);
    RouteBook::new(rules, reader)
}

/// `run`: spans to the exporters, then the summary and the `stages:` line.
fn run_spans(
    export: &ExportArgs,
    routes: &RouteArgs,
    join: &JoinArgs,
    replay: Option<&Path>,
    capture: &CaptureArgs,
) -> anyhow::Result<()> {
    // Checked before anything starts, so a bad rule or address fails at once.
    let route_rules = routes.route_rules()?;
    let join_store = join.store(replay.is_some())?;
    let clock = clock_for(replay)?;
    let resources = export.resources(replay.is_some());
    let mut sink = FanOut(export.sinks(&clock, &resources)?);
    let summary = from_source(
        replay,
        capture,
        Output::spans(
            &mut sink,
            resources,
            route_book(route_rules, replay.is_some()),
        )
        .with_join_store(join_store),
        None,
    )?;
    // Closed first: export threads report their CPU time as they end.
    drop(sink);
    eprintln!(
        "{}",
        summary.stages.line(summary.spans.map_or(0, |s| s.spans))
    );
    Ok(())
}

/// Run the output from a recording (when `replay` is given) or live, and print the summary.
fn from_source<'a>(
    replay: Option<&Path>,
    capture: &CaptureArgs,
    output: Output<'a>,
    recorder: Option<&'a mut RecordingWriter>,
) -> anyhow::Result<RunSummary> {
    let output = output.with_tcp_turns(!capture.no_tcp_spans);
    if let Some(path) = replay {
        let mut reader = RecordingReader::open(path)?;
        let summary = agent::replay(&mut reader, output)?;
        eprintln!(
            "wirespan: replayed {}: {}",
            path.display(),
            summary.describe()
        );
        Ok(summary)
    } else {
        let summary = live(capture, output, recorder)?;
        eprintln!("wirespan: stopped: {}", summary.describe());
        Ok(summary)
    }
}

/// A live run on the current thread until the duration, Ctrl-C or SIGTERM.
fn live<'a>(
    capture: &CaptureArgs,
    output: Output<'a>,
    recorder: Option<&'a mut RecordingWriter>,
) -> anyhow::Result<RunSummary> {
    let duration = capture.duration()?;
    let options = capture.load_options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal(duration)?;
        let on_ready = |report: &[HookReport], go: &[GoReport], tls: &[TlsReport]| {
            print_report(report, go, tls, duration);
        };
        anyhow::Ok(agent::run(&options, output, recorder, on_ready, shutdown).await?)
    })
}

/// The start-up report on stderr: one line per hook, its failed modes indented below, then
/// `ready` (which tests and scripts wait for).
fn print_report(
    report: &[HookReport],
    go: &[GoReport],
    tls: &[TlsReport],
    duration: Option<Duration>,
) {
    let mut err = std::io::stderr().lock();
    for hook in report {
        for line in hook.to_string().lines() {
            let _ = writeln!(err, "wirespan: {line}");
        }
    }
    for binary in go {
        let _ = writeln!(err, "wirespan: {binary}");
    }
    for library in tls {
        let _ = writeln!(err, "wirespan: {library}");
    }
    let until = duration.map_or("Ctrl-C or SIGTERM".to_owned(), |d| {
        format!("{d:?} have passed")
    });
    let _ = writeln!(err, "wirespan: ready; capturing until {until}");
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

mod export_args;
mod join_args;
#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
