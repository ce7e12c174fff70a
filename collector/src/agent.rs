//! The agent's run: load and attach the probes, report how each hook attached, stream records
//! from the ring buffer (optionally into a recording) through decode to an output until the
//! shutdown signal, then detach and drain what is left, so nothing already captured is lost. The
//! output is events, exchanges (conn → protocol stages) or spans (conn → protocol → correlate).
//! A replay feeds a recording through the same pipeline. Shutdown, output and recorder are injected.

use std::{collections::HashSet, fmt::Write as _, future::Future, sync::Arc, time::Duration};

use wirespan_shared::{LOST_CAUSE_NAMES, LOST_CAUSES};

use crate::{
    clock::monotonic_now_ns,
    conn::{ConnExchange, ConnStats, ConnTable},
    correlate::{CorrelateStats, Correlator, DEFAULT_WINDOW_NS, Tables, remote::RemoteStats},
    golang::discover::GoReport,
    join::{JoinStore, StoreStats},
    load::{HookReport, LoadError, LoadOptions, Probes, TlsReport, skipped::skipped_runs},
    protocol::content::{SecretNames, masked_query},
    sink::{EventSink, ExchangeSink, SpanSink},
    source::{
        ConnRole, Event, decode,
        decode::blank_data_record,
        grpc::{mask_header_fields, mask_header_record},
        process::{mask_environment, mask_start_record},
        recording::{RecordingError, RecordingReader, RecordingWriter},
        ringbuf::{ReaderStats, RingBufSource},
    },
    span::{
        IdGenerator, Span,
        processes::{ProcessStats, Resources},
        route_book::{RouteBook, RouteStats},
    },
    stages::{Stage, StageTimes, thread_cpu_ns},
};

/// How often the correlator's clock moves on when no events arrive.
const CLOCK_TICK: Duration = Duration::from_secs(1);
/// How often kernel losses are logged while there are any.
const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("reading the event ring buffer failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("writing events failed: {0}")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// What a run saw, for the summary at exit.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSummary {
    /// Records decoded into events.
    pub events: u64,
    /// Records that did not decode (skipped).
    pub malformed: u64,
    /// Events lost in the kernel, by `LOST_*` cause.
    pub lost: [u64; LOST_CAUSES as usize],
    /// Runs of the agent's programs the kernel skipped (see `load::skipped`): their events were
    /// never made (live runs).
    pub skipped_runs: u64,
    /// How often the ring-buffer reader ran and found records (live runs).
    pub reader: Option<ReaderStats>,
    /// What the connection table gave up on, when exchanges were decoded.
    pub conns: Option<ConnStats>,
    /// What the correlator made, when spans were.
    pub spans: Option<CorrelateStats>,
    /// What the correlator's per-connection tables held at the stop, when spans were made.
    pub correlator: Option<Tables>,
    /// What the join across hosts did, when a store was configured.
    pub remote: Option<(RemoteStats, StoreStats)>,
    /// Where the spans' process resources came from, when spans were made.
    pub processes: Option<ProcessStats>,
    /// How HTTP spans' routes were named, when spans were made.
    pub routes: Option<RouteStats>,
    /// The CPU time of each stage (see `stages`).
    pub stages: StageTimes,
}

impl RunSummary {
    /// `123 events, 0 malformed; lost in kernel: none` or `...: 4 (ring buffer full)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} events, {} malformed; lost in kernel: {}",
            self.events,
            self.malformed,
            describe_lost(&self.lost, self.skipped_runs)
        );
        if let Some(r) = self.reader {
            let _ = write!(
                text,
                "; ring-buffer wake-ups: {} ({} by the kernel, {} by the poll timer)",
                r.total(),
                r.wakeups,
                r.polls
            );
        }
        if let Some(c) = self.conns {
            let _ = write!(
                text,
                "; connections: {} of unknown protocol, {} evicted (table full), {} evicted (memory), {} expired idle, {} replaced (same ends, close lost), {} still open at stop, {} decoded from TLS plaintext, {} TLS without plaintext",
                c.unknown_protocol,
                c.evicted,
                c.evicted_for_memory,
                c.expired,
                c.replaced,
                c.open_at_end,
                c.tls_plaintext,
                c.tls_encrypted
            );
            let dropped = c.decoders.describe();
            if !dropped.is_empty() {
                let _ = write!(text, "; decoders dropped: {}", dropped.join(", "));
            }
        }
        if let Some(s) = self.spans {
            let _ = write!(
                text,
                "; spans: {} ({} without the parent they waited for, {} emitted early: too many waiting, {} new traces from goroutines that outlived their request, {} failed calls, {} failed connects of Go programs no call claimed, {} responses to requests older than the capture)",
                s.spans,
                s.orphans,
                s.evicted,
                s.context_ended,
                s.failed_calls,
                s.unclaimed_connects,
                s.requests_unseen
            );
        }
        if let Some(t) = self.correlator {
            let _ = write!(text, "; correlator at stop: {}", t.describe());
        }
        if let Some((r, s)) = self.remote {
            let _ = write!(
                text,
                "; joins across hosts: published {} ({} dropped: store away or queue full), asked {}, joined {}, unjoined {} ({} not found within the wait, {} store away, {} another request's record), {} unreadable records, {} store errors",
                s.published,
                s.publish_dropped,
                r.asked,
                r.joined,
                r.unjoined(),
                r.not_found,
                r.away,
                r.route_mismatch,
                s.unreadable,
                s.store_errors
            );
        }
        if let Some(p) = self.processes {
            let _ = write!(text, "; processes: {}", p.describe());
        }
        if let Some(r) = self.routes {
            let _ = write!(text, "; {}", r.describe());
        }
        text
    }
}

fn describe_lost(lost: &[u64; LOST_CAUSES as usize], skipped_runs: u64) -> String {
    let mut parts: Vec<String> = lost
        .iter()
        .zip(LOST_CAUSE_NAMES)
        .filter(|(n, _)| **n > 0)
        .map(|(n, cause)| format!("{n} ({cause})"))
        .collect();
    if skipped_runs > 0 {
        parts.push(format!(
            "{skipped_runs} program runs skipped by the kernel (another BPF program was running on the CPU)"
        ));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Why the pipeline stopped early.
enum StepError {
    Read(std::io::Error),
    Write(std::io::Error),
    Recording(RecordingError),
}

impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        Self::Read(e)
    }
}

/// Where decoded events go: straight to an event sink, or through the connection table and
/// protocol decoders to an exchange sink.
pub enum Output<'a> {
    Events(&'a mut dyn EventSink),
    Exchanges {
        table: ConnTable,
        sink: &'a mut dyn ExchangeSink,
    },
    /// Through the connection table, the protocol decoders and the correlator, to spans.
    /// `resources` is the sinks' process table: exec and exit events go to it in stream order.
    Spans {
        table: ConnTable,
        correlator: Box<Correlator>,
        sink: &'a mut dyn SpanSink,
        resources: Resources,
        /// Names HTTP spans' routes on their way to the sink (boxed: it is large).
        routes: Box<RouteBook>,
    },
}

impl<'a> Output<'a> {
    /// Exchanges through a connection table with default limits.
    pub fn exchanges(sink: &'a mut dyn ExchangeSink) -> Self {
        Self::Exchanges {
            table: ConnTable::default(),
            sink,
        }
    }

    /// Spans through a connection table and a correlator with default limits; `resources` is
    /// the table the sinks name processes from, `routes` names their routes.
    pub fn spans(sink: &'a mut dyn SpanSink, resources: Resources, routes: RouteBook) -> Self {
        Self::Spans {
            resources,
            routes: Box::new(routes),
            table: ConnTable::default(),
            correlator: Box::new(Correlator::new(
                DEFAULT_WINDOW_NS,
                IdGenerator::from_entropy(),
            )),
            sink,
        }
    }

    /// Whether connections of unknown protocol give an exchange per turn (see
    /// `protocol::turns`; on by default).
    #[must_use]
    pub fn with_tcp_turns(mut self, on: bool) -> Self {
        if let Self::Exchanges { table, .. } | Self::Spans { table, .. } = &mut self {
            table.tcp_turns(on);
        }
        self
    }

    /// Spans join across hosts through `store` (see `correlate::remote`); None changes nothing.
    #[must_use]
    pub fn with_join_store(self, store: Option<Box<dyn JoinStore>>) -> Self {
        match (self, store) {
            (
                Self::Spans {
                    table,
                    correlator,
                    sink,
                    resources,
                    routes,
                },
                Some(store),
            ) => Self::Spans {
                table,
                correlator: Box::new(correlator.with_join_store(store)),
                sink,
                resources,
                routes,
            },
            (output, _) => output,
        }
    }
}

/// Idle connections are looked for every this many events.
const EXPIRE_EVERY: u64 = 4096;

/// Raw record → (recording) → decode → output. Records that do not decode are counted, skipped.
struct Pipeline<'a> {
    output: Output<'a>,
    recorder: Option<&'a mut RecordingWriter>,
    summary: RunSummary,
    exchanges: Vec<ConnExchange>,
    spans: Vec<Span>,
    last_ts_ns: u64,
    /// Processes that executed a program since the last batch (live runs attach Go uprobes).
    execs: Vec<u32>,
    /// Go processes seen making an outbound call since the last batch, each once per program
    /// (live runs keep their binaries' serving probes on; see `load::serving`).
    callers: Vec<u32>,
    callers_seen: HashSet<u32>,
    /// Processes that served HTTP before their route table was known (see `span::route_book`).
    route_wanted: Vec<u32>,
    /// The event view's connection table: it has no decoders of its own, and TLS plaintext
    /// must be decoded to know which bytes are message content (blanked before it is shown).
    events_table: ConnTable,
    /// A raw record with its TLS content blanked, for the recorder.
    blanked: Vec<u8>,
    /// The credential headers masked in Go header events, and the switch for masking process
    /// environments, when anything shows or keeps events raw (see `blanking`).
    raw_secrets: Option<Arc<SecretNames>>,
    /// Whether `wirespan exchanges` shows targets with their query values masked (unless
    /// `--show-secrets`).
    mask_queries: bool,
}

/// What of a raw record outside connections' bytes is masked before it is kept.
enum RawMask<'s> {
    /// Go header events' credential headers.
    Headers(&'s SecretNames),
    /// A process-start record's environment values.
    Environment,
}

/// Mask the credentials of an event outside connections' bytes (Go header events,
/// environments) when `secrets` says so; how to mask its raw record alike.
fn mask_outside_bytes<'s>(
    event: &mut Event,
    secrets: Option<&'s SecretNames>,
) -> Option<RawMask<'s>> {
    match (event, secrets) {
        (Event::GoHeaders(headers), Some(names)) => {
            mask_header_fields(headers, names);
            Some(RawMask::Headers(names))
        }
        // Only the process-start layout carries an environment (`image`).
        (Event::Exec(exec), Some(_)) => exec.image.as_mut().map(|image| {
            mask_environment(&mut image.env);
            RawMask::Environment
        }),
        _ => None,
    }
}

impl<'a> Pipeline<'a> {
    fn new(output: Output<'a>, recorder: Option<&'a mut RecordingWriter>) -> Self {
        let mut pipeline = Self {
            output,
            recorder,
            summary: RunSummary {
                stages: StageTimes::start(),
                ..RunSummary::default()
            },
            exchanges: Vec::new(),
            spans: Vec::new(),
            last_ts_ns: 0,
            execs: Vec::new(),
            callers: Vec::new(),
            callers_seen: HashSet::new(),
            route_wanted: Vec::new(),
            events_table: ConnTable::default(),
            blanked: Vec::new(),
            raw_secrets: None,
            mask_queries: false,
        };
        // The correlator forgets connections the table gives up on without a close event.
        if let Output::Spans { table, .. } = &mut pipeline.output {
            table.report_gone(true);
        }
        // Replays show recordings blanked as the agent would have made them.
        pipeline.blanking(false, Some(SecretNames::with(&[])));
        pipeline
    }

    /// What the tables blank before captured bytes are shown or kept: TLS plaintext's message
    /// bodies unless `keep_tls_bodies`, and credentials when anything shows raw bytes (a
    /// recording, the events view), named by `secrets` (None: keep them).
    fn blanking(&mut self, keep_tls_bodies: bool, secrets: Option<Arc<SecretNames>>) {
        let shows_raw = self.recorder.is_some() || matches!(self.output, Output::Events(_));
        self.mask_queries = secrets.is_some();
        let secrets = secrets.filter(|_| shows_raw);
        self.raw_secrets.clone_from(&secrets);
        self.events_table.keep_tls_content(keep_tls_bodies);
        self.events_table.note_secrets(secrets.clone());
        if let Output::Exchanges { table, .. } | Output::Spans { table, .. } = &mut self.output {
            table.keep_tls_content(keep_tls_bodies);
            table.note_secrets(secrets);
        }
    }

    /// Note the Go processes that call out (an outbound-call probe reported), once each.
    fn note_caller(&mut self, event: &Event) {
        let pid = match event {
            Event::GoConnUse(u) if u.role == ConnRole::Client => u.pid,
            Event::GoServe(g) if g.client => g.pid,
            Event::GoGrpcCall(c) => c.pid,
            Event::Exec(e) => {
                self.callers_seen.remove(&e.pid);
                return;
            }
            _ => return,
        };
        if self.callers_seen.len() >= 65_536 {
            self.callers_seen.clear();
        }
        if self.callers_seen.insert(pid) {
            self.callers.push(pid);
        }
    }

    fn record(&mut self, raw: &[u8]) -> Result<(), StepError> {
        // One record in `stages::SAMPLE_EVERY` has its stages timed.
        let mut t = self
            .summary
            .stages
            .next_record()
            .then(crate::stages::thread_cpu_ns);
        let Ok(mut event) = decode(raw) else {
            self.summary.malformed += 1;
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.record(raw).map_err(StepError::Recording)?;
            }
            return Ok(());
        };
        self.note_caller(&event);
        let stages = &mut self.summary.stages;
        let mut lap = |stage: Stage| {
            if let Some(since) = t {
                t = Some(stages.add(stage, since));
            }
        };
        lap(Stage::Decode);
        self.summary.events += 1;
        if let Event::Exec(exec) = &event {
            self.execs.push(exec.pid);
        }
        self.last_ts_ns = self.last_ts_ns.max(event.ts_ns());
        // The connection stage first: it tells which bytes of TLS plaintext are message
        // content, blanked before the event goes anywhere, the recorder included.
        let table = match &mut self.output {
            Output::Exchanges { table, .. } | Output::Spans { table, .. } => Some(table),
            // The event view decodes what it shows: connections' bytes.
            Output::Events(_) => match &event {
                Event::Conn(_) | Event::Data(_) => Some(&mut self.events_table),
                _ => None,
            },
        };
        let content = match table {
            Some(table) => {
                table.on_event(&event, &mut self.exchanges);
                if self.summary.events.is_multiple_of(EXPIRE_EVERY) {
                    table.expire(self.last_ts_ns, &mut self.exchanges);
                }
                table.blanks()
            }
            None => &[],
        };
        lap(Stage::Conn);
        let raw_mask = mask_outside_bytes(&mut event, self.raw_secrets.as_deref());
        if let Some(recorder) = self.recorder.as_mut() {
            let raw = if let Some(mask) = raw_mask {
                self.blanked.clear();
                self.blanked.extend_from_slice(raw);
                match mask {
                    RawMask::Headers(names) => mask_header_record(&mut self.blanked, names),
                    RawMask::Environment => mask_start_record(&mut self.blanked),
                };
                &self.blanked
            } else if content.is_empty() {
                raw
            } else {
                self.blanked.clear();
                self.blanked.extend_from_slice(raw);
                blank_data_record(&mut self.blanked, content);
                &self.blanked
            };
            recorder.record(raw).map_err(StepError::Recording)?;
        }
        if !content.is_empty()
            && let Event::Data(data) = &mut event
        {
            data.blank(content);
        }
        match &mut self.output {
            Output::Events(sink) => {
                self.exchanges.clear();
                sink.event(&event).map_err(StepError::Write)
            }
            Output::Exchanges { .. } => self.deliver_exchanges(),
            Output::Spans {
                table,
                correlator,
                resources,
                routes,
                ..
            } => {
                // Connections given up on before this event (replaced by it, expired) go
                // first: the event may open a new connection on the same ends.
                for gone in table.take_gone() {
                    correlator.on_conn_gone(&gone);
                }
                // A process's resource is taken at its exec, before any span of it is delivered.
                match &event {
                    Event::Exec(exec) => resources.on_exec(exec),
                    Event::Exit(exit) => resources.on_exit(exit),
                    _ => {}
                }
                routes.on_event(&event);
                // Contexts before exchanges: the exchange an event completes is judged with
                // the event's context known.
                correlator.on_event(&event);
                for x in self.exchanges.drain(..) {
                    correlator.on_exchange(x);
                }
                lap(Stage::Correlate);
                Ok(())
            }
        }
    }

    fn deliver_exchanges(&mut self) -> Result<(), StepError> {
        match &mut self.output {
            Output::Exchanges { sink, .. } => {
                for mut x in self.exchanges.drain(..) {
                    if self.mask_queries
                        && let Some(http) = x.exchange.detail.http_mut()
                    {
                        http.target = masked_query(&http.target);
                    }
                    sink.exchange(&x).map_err(StepError::Write)?;
                }
            }
            Output::Spans { correlator, .. } => {
                for x in self.exchanges.drain(..) {
                    correlator.on_exchange(x);
                }
            }
            Output::Events(_) => {}
        }
        Ok(())
    }

    /// Spans whose parents are settled go to the sink.
    fn deliver_spans(&mut self, end: bool) -> Result<(), StepError> {
        if let Output::Spans {
            correlator,
            sink,
            resources,
            routes,
            ..
        } = &mut self.output
        {
            let start = thread_cpu_ns();
            if end {
                correlator.finish(&mut self.spans);
            } else {
                correlator.settle(&mut self.spans);
            }
            let settled = thread_cpu_ns();
            self.summary.stages.settle_ns += StageTimes::since(start);
            routes.assign_all(&mut self.spans);
            for span in self.spans.drain(..) {
                sink.span(&span).map_err(StepError::Write)?;
            }
            self.route_wanted.extend(routes.take_wanted());
            self.summary.stages.sink_ns += StageTimes::since(settled);
            self.summary.spans = Some(correlator.stats);
            self.summary.correlator = Some(correlator.tables());
            self.summary.remote = correlator.remote_stats();
            self.summary.processes = Some(resources.stats());
            self.summary.routes = Some(routes.stats);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StepError> {
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.flush().map_err(StepError::Recording)?;
        }
        self.deliver_spans(false)?;
        let start = thread_cpu_ns();
        let flushed = match &mut self.output {
            Output::Events(sink) => sink.flush(),
            Output::Exchanges { sink, .. } => sink.flush(),
            Output::Spans { sink, .. } => sink.flush(),
        }
        .map_err(StepError::Write);
        self.summary.stages.sink_ns += StageTimes::since(start);
        flushed
    }

    /// Time passed with no events (live runs): let waiting spans time out.
    /// Go programs the uprobes attached to: their failed connects belong to their calls, even
    /// those made before any uprobe fired (a program connects as it starts).
    fn go_programs(&mut self, report: &GoReport) {
        if let (Output::Spans { correlator, .. }, None) = (&mut self.output, &report.skipped) {
            for &pid in &report.pids {
                correlator.on_go_program(pid);
            }
        }
    }

    fn tick(&mut self, now_ns: u64) -> Result<(), StepError> {
        if let Output::Spans { correlator, .. } = &mut self.output {
            correlator.advance_clock(now_ns);
        }
        self.flush()
    }

    /// The end of the stream: connections still open give up what they hold.
    fn end_of_stream(&mut self) -> Result<(), StepError> {
        if let Output::Exchanges { table, .. } | Output::Spans { table, .. } = &mut self.output {
            table.finish(self.last_ts_ns, &mut self.exchanges);
            self.summary.conns = Some(table.stats);
        }
        self.deliver_exchanges()?;
        self.deliver_spans(true)?;
        self.flush()
    }

    /// The summary, or the error that stopped the run. A closed pipe on the output (`| head`)
    /// is a normal end.
    fn finish(self, outcome: Result<(), StepError>) -> Result<RunSummary, AgentError> {
        match outcome {
            Ok(()) => Ok(self.summary),
            Err(StepError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Ok(self.summary)
            }
            Err(StepError::Read(e)) => Err(AgentError::Read(e)),
            Err(StepError::Write(e)) => Err(AgentError::Write(e)),
            Err(StepError::Recording(e)) => Err(AgentError::Recording(e)),
        }
    }
}

/// Resolves when `notify` is told; never without one.
async fn notified(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Run live until `shutdown` resolves. `on_ready` receives the attach report once every hook is
/// attached (the caller prints it; tests wait for it). With `recorder`, every raw record is also
/// written to a recording.
pub async fn run<'a>(
    options: &LoadOptions,
    output: Output<'a>,
    recorder: Option<&'a mut RecordingWriter>,
    on_ready: impl FnOnce(&[HookReport], &[GoReport], &[TlsReport]),
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, AgentError> {
    let (mut probes, maps) = Probes::load(options)?;
    // Processes older than the agent, now that the exec probe sees every newer one.
    if let Output::Spans { resources, .. } = &output {
        resources.scan_running();
    }
    on_ready(&probes.report, &probes.go_report, &probes.tls_report);
    let mut source =
        RingBufSource::new(maps.events, maps.reader_polling).map_err(AgentError::Read)?;
    let join_answers = match &output {
        Output::Spans { correlator, .. } => correlator.join_waker(),
        _ => None,
    };
    let mut pipeline = Pipeline::new(output, recorder);
    if options.show_secrets {
        eprintln!(
            "wirespan: --show-secrets: credential header values, query values and program environments are shown and recorded as captured"
        );
    }
    pipeline.blanking(
        options.keep_tls_bodies,
        (!options.show_secrets).then(|| SecretNames::with(&options.redact_headers)),
    );
    for report in &probes.go_report {
        pipeline.go_programs(report);
    }
    let mut loss_log = tokio::time::interval(LOSS_LOG_INTERVAL);
    loss_log.tick().await;
    let mut clock_tick = tokio::time::interval(CLOCK_TICK);
    clock_tick.tick().await;

    tokio::pin!(shutdown);
    let outcome = loop {
        let batch = tokio::select! {
            () = &mut shutdown => None,
            _ = clock_tick.tick() => {
                if let Err(e) = pipeline.tick(monotonic_now_ns()) {
                    break Err(e);
                }
                probes.retire_quiet();
                Some(Ok(false))
            }
            // Server spans from other hosts got their clients' records: settle them now, not
            // at the next clock tick (chains across hosts wait on each hop).
            () = notified(join_answers.as_deref()) => {
                if let Err(e) = pipeline.tick(monotonic_now_ns()) {
                    break Err(e);
                }
                Some(Ok(false))
            }
            _ = loss_log.tick() => {
                let lost = maps.lost.counts();
                let skipped = skipped_runs();
                if lost.iter().any(|n| *n > 0) || skipped > 0 {
                    eprintln!(
                        "wirespan: lost in kernel so far: {}",
                        describe_lost(&lost, skipped)
                    );
                }
                Some(Ok(false))
            }
            batch = source.next_batch(|raw| pipeline.record(raw)) => Some(batch),
        };
        let more_waiting = match batch {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(more_waiting)) => more_waiting,
        };
        if let Err(e) = pipeline.flush() {
            break Err(e);
        }
        for pid in std::mem::take(&mut pipeline.callers) {
            if let Some(line) = probes.calls_out(pid) {
                eprintln!("wirespan: {line}");
            }
        }
        for pid in std::mem::take(&mut pipeline.route_wanted) {
            if let Some(line) = probes.wants_routes(pid) {
                eprintln!("wirespan: {line}");
            }
        }
        // Go programs started since the last batch get their uprobes (a report line if new).
        for pid in std::mem::take(&mut pipeline.execs) {
            if let Some(report) = probes.exec(pid) {
                eprintln!("wirespan: {report}");
                pipeline.go_programs(&report);
            }
            for report in probes.tls_exec(pid) {
                eprintln!("wirespan: {report}");
            }
        }
        if more_waiting {
            // The buffer never ran empty: let the runtime poll its drivers (signals, timers)
            // before the next batch, or a flood of events would starve shutdown.
            tokio::task::yield_now().await;
        }
        // Otherwise the source waits: on its poll timer while records keep coming, which
        // gathers them into batches (see `source::ringbuf`), or for the kernel when idle.
    };
    // Read the skipped runs while the programs are still attached, then detach so no new
    // events arrive, and take what the ring buffer still holds.
    pipeline.summary.skipped_runs = skipped_runs();
    probes.detach();
    let outcome = outcome
        .and_then(|()| source.drain_now(|raw| pipeline.record(raw)))
        .and_then(|()| pipeline.end_of_stream());
    pipeline.summary.lost = maps.lost.counts();
    pipeline.summary.reader = Some(source.stats());
    pipeline.finish(outcome)
}

/// Feed a recording through the pipeline (no privileges needed). A truncated recording delivers
/// every complete record, then reports the truncation.
pub fn replay(reader: &mut RecordingReader, output: Output<'_>) -> Result<RunSummary, AgentError> {
    let mut pipeline = Pipeline::new(output, None);
    let mut outcome = Ok(());
    loop {
        match reader.next_record() {
            Ok(Some(raw)) => {
                if let Err(e) = pipeline.record(&raw) {
                    outcome = Err(e);
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                outcome = Err(StepError::Recording(e));
                break;
            }
        }
    }
    let flushed = pipeline.end_of_stream();
    pipeline.finish(outcome.and(flushed))
}
