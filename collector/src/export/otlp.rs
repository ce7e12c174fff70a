//! OTLP export over gRPC or HTTP/protobuf with opentelemetry-otlp. The agent's loop hands spans
//! to a bounded queue and never waits on the network; an export thread (with its own async
//! runtime) batches them, groups each batch by process (one resource per process), retries
//! through outages (`retry`), and counts what it had to drop: exported + dropped (queue full) +
//! dropped (export failed) = spans made. Closing drains the queue within `retry::CLOSE_GRACE`.
//!
//! Configuration follows the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `_PROTOCOL`,
//! `_HEADERS`, `_TIMEOUT`, `_INSECURE` and their `_TRACES_` forms, which opentelemetry-otlp
//! reads itself; `_CERTIFICATE`, `_CLIENT_CERTIFICATE` and `_CLIENT_KEY`, which `tls` reads);
//! the matching flags override them.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SpanExporter as _;

use super::{
    SpanSink,
    http_client::{self, Cause, ExplainingClient},
    retry::{Closing, Retrier},
    spandata,
    tls::{Signal, TlsError, TlsFlags, TlsSetup},
};
use crate::clock::WallClock;
use crate::span::{AttributeOptions, Span, processes::Resources, resource::Resource};

/// Spans waiting for export at most; more are dropped and counted.
pub const DEFAULT_QUEUE: usize = 65_536;
/// Spans per export request at most, and how long a partial batch waits.
const MAX_BATCH: usize = 512;
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// `grpc` or `http/protobuf`, as in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(text: &str) -> Result<Self, ExportError> {
        match text.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(ExportError::Protocol(other.to_owned())),
        }
    }

    /// From the flag, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, else the specification's default, HTTP/protobuf.
    pub fn resolve(flag: Option<&str>) -> Result<Self, ExportError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        flag.map(str::to_owned)
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .map_or(Ok(Self::HttpProtobuf), |p| Self::parse(&p))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown OTLP protocol {0:?}: use grpc or http/protobuf")]
    Protocol(String),
    #[error("bad OTLP header {0:?}: expected key=value")]
    Header(String),
    #[error("cannot set up the OTLP exporter: {0}")]
    Build(String),
    #[error("cannot set up TLS for the OTLP exporter: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot start the export thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the flags said (each None falls back to the standard variables).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    /// The base endpoint (`http://host:4318`); for HTTP, `/v1/traces` is added when it has no
    /// path, as for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// CA, client certificate and key files for `https://` endpoints.
    pub tls: TlsFlags,
    pub queue: usize,
    /// How long a failing batch is retried (see `retry`).
    pub retry_max: Duration,
    /// How span attributes are written (query redaction, RPC conventions).
    pub attributes: AttributeOptions,
}

/// Parse `key=value,key=value` (the `OTEL_EXPORTER_OTLP_HEADERS` form).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ExportError> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| ExportError::Header(pair.to_owned()))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(ExportError::Header(pair.to_owned()));
            }
            Ok((k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Counts the export thread keeps.
#[derive(Debug, Default)]
pub struct ExportCounts {
    pub exported: AtomicU64,
    /// Dropped because the queue was full (the backend was slower than the traffic).
    pub dropped_queue_full: AtomicU64,
    /// Dropped after every try failed (or refused by the backend).
    pub dropped_failed: AtomicU64,
}

/// A span waiting for export, with its process's resource.
type Queued = (Arc<Resource>, Span);

/// The sink: a bounded queue into the export thread.
pub struct OtlpSink {
    /// Each span goes with its process's resource, taken when the span came: a queued span
    /// keeps it however long the export takes, even after its process is forgotten.
    tx: Option<SyncSender<Vec<Queued>>>,
    /// Spans since the last flush: they go to the export thread together, one wake-up of it
    /// per batch rather than per span.
    batch: Vec<Queued>,
    /// Spans sent to the export thread and not yet taken from its queue (the bound).
    queued: Arc<AtomicUsize>,
    queue: usize,
    resources: Resources,
    counts: Arc<ExportCounts>,
    thread: Option<JoinHandle<()>>,
    protocol: Protocol,
    closing: Arc<Closing>,
}

impl OtlpSink {
    /// Build the exporter (failing now on a bad configuration) and start the export thread.
    /// Spans are paired with their resources from `resources` as they come.
    pub fn start(
        config: OtlpConfig,
        clock: WallClock,
        resources: Resources,
    ) -> Result<Self, ExportError> {
        let queue = config.queue.max(1);
        // Batches, each of at least one span: the span bound (`queued`) is the one that binds.
        let (tx, rx) = mpsc::sync_channel(queue);
        let counts = Arc::new(ExportCounts::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_counts = Arc::clone(&counts);
        let thread_queued = Arc::clone(&queued);
        let protocol = config.protocol;
        let closing = Arc::new(Closing::default());
        let retrier = Retrier::new(config.retry_max, Arc::clone(&closing));
        let thread = std::thread::Builder::new()
            .name("wirespan-otlp".into())
            .spawn(move || {
                export_thread(
                    &config,
                    clock,
                    &Queue {
                        rx,
                        queued: thread_queued,
                    },
                    &thread_counts,
                    retrier,
                    &ready_tx,
                );
            })
            .map_err(ExportError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                tx: Some(tx),
                batch: Vec::new(),
                queued,
                queue,
                resources,
                counts,
                thread: Some(thread),
                protocol,
                closing,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ExportError::Build("the export thread ended".into())),
        }
    }

    /// Stop taking spans, export what is queued, and report the counts.
    pub fn close(&mut self) -> String {
        self.send_batch();
        self.tx = None;
        self.closing.start();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let c = &self.counts;
        format!(
            "otlp ({}): {} spans exported, {} dropped (queue full), {} dropped (export failed)",
            match self.protocol {
                Protocol::Grpc => "grpc",
                Protocol::HttpProtobuf => "http/protobuf",
            },
            c.exported.load(Ordering::Relaxed),
            c.dropped_queue_full.load(Ordering::Relaxed),
            c.dropped_failed.load(Ordering::Relaxed)
        )
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            eprintln!("wirespan: {}", self.close());
        }
    }
}

impl OtlpSink {
    /// Hand the spans since the last flush to the export thread; what does not fit in the queue
    /// is dropped and counted.
    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else {
            self.batch.clear();
            return;
        };
        let mut batch = std::mem::take(&mut self.batch);
        let room = self
            .queue
            .saturating_sub(self.queued.load(Ordering::Relaxed));
        if batch.len() > room {
            let over = batch.len() - room;
            batch.truncate(room);
            self.counts
                .dropped_queue_full
                .fetch_add(over as u64, Ordering::Relaxed);
            if batch.is_empty() {
                return;
            }
        }
        let n = batch.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        let failed = match tx.try_send(batch) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => &self.counts.dropped_queue_full,
            Err(TrySendError::Disconnected(_)) => &self.counts.dropped_failed,
        };
        self.queued.fetch_sub(n, Ordering::Relaxed);
        failed.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl SpanSink for OtlpSink {
    fn span(&mut self, span: &Span) -> std::io::Result<()> {
        if self.tx.is_some() {
            let resource = self.resources.of(span.pid, &span.comm, span.start_ns);
            self.batch.push((resource, span.clone()));
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_batch();
        Ok(())
    }
}

/// The exporter, and where the HTTP client leaves the causes the exporter hides.
fn build(config: &OtlpConfig) -> Result<(opentelemetry_otlp::SpanExporter, Cause), ExportError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let (built, cause) = match config.protocol {
        Protocol::Grpc => (
            configure_grpc(builder.with_tonic(), config, Signal::Traces)?.build(),
            Cause::default(),
        ),
        Protocol::HttpProtobuf => {
            let (b, cause) = configure_http(builder.with_http(), config, Signal::Traces)?;
            (b.build(), cause)
        }
    };
    Ok((built.map_err(|e| ExportError::Build(e.to_string()))?, cause))
}

/// The flags on a gRPC exporter builder (spans or metrics).
pub(super) fn configure_grpc<B>(
    mut b: B,
    config: &OtlpConfig,
    signal: Signal,
) -> Result<B, ExportError>
where
    B: WithExportConfig + WithTonicConfig,
{
    if let Some(tls) = TlsSetup::resolve(
        &config.tls,
        signal,
        Protocol::Grpc,
        config.endpoint.as_deref(),
    )? {
        b = b.with_tls_config(tls.tonic());
    }
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        let mut map = tonic::metadata::MetadataMap::new();
        for (k, v) in &config.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.to_lowercase().as_bytes())
                .map_err(|_| ExportError::Header(k.clone()))?;
            // Decoded as the HTTP exporter and both exporters' variables decode them.
            let value = percent_decoded(v)
                .parse()
                .map_err(|_| ExportError::Header(v.clone()))?;
            map.insert(key, value);
        }
        b = b.with_metadata(map);
    }
    Ok(b)
}

/// The flags on an HTTP/protobuf exporter builder; `signal` names the path a base endpoint
/// gets (`/v1/traces`, `/v1/metrics`) and the variables that apply. The client is ours (TLS
/// files, the causes of failures; see `http_client`).
pub(super) fn configure_http<B>(
    b: B,
    config: &OtlpConfig,
    signal: Signal,
) -> Result<(B, Cause), ExportError>
where
    B: WithExportConfig + WithHttpConfig,
{
    let (path, timeout_var) = match signal {
        Signal::Traces => ("traces", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
        Signal::Metrics => ("metrics", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
    };
    let tls = TlsSetup::resolve(
        &config.tls,
        signal,
        Protocol::HttpProtobuf,
        config.endpoint.as_deref(),
    )?;
    let (client, cause) = ExplainingClient::new(
        http_client::timeout(config.timeout, timeout_var),
        tls.as_ref(),
    )?;
    let mut b = b
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client);
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(http_signal_url(endpoint, path));
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        b = b.with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>());
    }
    Ok((b, cause))
}

/// `%XX` escapes decoded (`Basic%20dXNlcg==` → `Basic dXNlcg==`), as the specification has
/// header values in `OTEL_EXPORTER_OTLP_HEADERS`; a broken escape stays as written.
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

/// A base endpoint gets the signal's path (`/v1/traces`), as `OTEL_EXPORTER_OTLP_ENDPOINT` does.
fn http_signal_url(endpoint: &str, signal: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .map_or(trimmed, |(_, rest)| rest)
        .contains('/');
    if has_path {
        // A traces URL given whole still names where the other signals go.
        match trimmed.strip_suffix("/v1/traces") {
            Some(base) if signal != "traces" => format!("{base}/v1/{signal}"),
            _ => trimmed.to_owned(),
        }
    } else {
        format!("{trimmed}/v1/{signal}")
    }
}

/// The export thread's end of the queue: batches, and the count of spans in them.
struct Queue<T = Queued> {
    rx: Receiver<Vec<T>>,
    queued: Arc<AtomicUsize>,
}

fn export_thread(
    config: &OtlpConfig,
    clock: WallClock,
    rx: &Queue,
    counts: &ExportCounts,
    mut retrier: Retrier,
    ready: &mpsc::Sender<Result<(), ExportError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ExportError::Build(e.to_string())));
            return;
        }
    };
    // Built inside the runtime: tonic's channel wants one.
    let (mut exporter, cause) = match runtime.block_on(async { build(config) }) {
        Ok(built) => built,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut last_failure_log: Option<Instant> = None;
    let mut carry = VecDeque::new();
    // The thread's CPU time goes to the `stages` summary as it grows.
    let mut cpu_reported = 0;
    let mut report_cpu = || {
        let now = crate::stages::thread_cpu_ns();
        crate::stages::add_export_thread_ns(now.saturating_sub(cpu_reported));
        cpu_reported = now;
    };
    loop {
        let (batch, closed) = next_batch(rx, &mut carry);
        if !batch.is_empty() {
            // One export request per process: the resource is the process.
            for (resource, spans) in spandata::by_resource(batch) {
                exporter.set_resource(&spandata::sdk_resource(&resource));
                let data = || {
                    spans
                        .iter()
                        .map(|s| spandata::span_data(s, &clock, config.attributes))
                        .collect()
                };
                let n = spans.len() as u64;
                if retrier.out_of_time() {
                    // Closing, and the grace period is spent on a backend that does not answer.
                    counts.dropped_failed.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                let outcome = runtime.block_on(retrier.run(|| {
                    let export = exporter.export(data());
                    async { export.await.map_err(|e| cause.explain(&e.to_string())) }
                }));
                match outcome {
                    Ok(()) => {
                        counts.exported.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counts.dropped_failed.fetch_add(n, Ordering::Relaxed);
                        if last_failure_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            eprintln!("wirespan: otlp export failed ({n} spans dropped): {e}");
                            last_failure_log = Some(Instant::now());
                        }
                    }
                }
            }
        }
        report_cpu();
        if closed {
            break;
        }
    }
    let _ = exporter.shutdown();
    report_cpu();
}

/// Up to `MAX_BATCH` spans, waiting at most `BATCH_DELAY` after the first; and whether the
/// queue was closed. Spans of a received batch beyond `MAX_BATCH` wait in `carry` for the next.
fn next_batch<T>(queue: &Queue<T>, carry: &mut VecDeque<T>) -> (Vec<T>, bool) {
    let mut batch = Vec::new();
    let take = |carry: &mut VecDeque<T>, batch: &mut Vec<T>| {
        let n = carry.len().min(MAX_BATCH - batch.len());
        batch.extend(carry.drain(..n));
        queue.queued.fetch_sub(n, Ordering::Relaxed);
    };
    take(carry, &mut batch);
    if batch.is_empty() {
        match queue.rx.recv() {
            Ok(spans) => carry.extend(spans),
            Err(_) => return (batch, true),
        }
        take(carry, &mut batch);
    }
    let deadline = Instant::now() + BATCH_DELAY;
    while batch.len() < MAX_BATCH {
        let left = deadline.saturating_duration_since(Instant::now());
        match queue.rx.recv_timeout(left) {
            Ok(spans) => {
                carry.extend(spans);
                take(carry, &mut batch);
            }
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => return (batch, carry.is_empty()),
        }
    }
    (batch, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_protocols_and_endpoints_parse_like_the_standard_variables() {
        assert_eq!(
            parse_headers("api-key=abc, x-team = core").unwrap(),
            vec![
                ("api-key".into(), "abc".into()),
                ("x-team".into(), "core".into())
            ]
        );
        assert!(parse_headers("novalue").is_err());
        assert_eq!(percent_decoded("Basic%20dXNlcg=="), "Basic dXNlcg==");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz%41"), "%zzA");
        assert_eq!(Protocol::parse("grpc").unwrap(), Protocol::Grpc);
        assert!(Protocol::parse("http/json").is_err());
        assert_eq!(
            http_signal_url("http://h:4318", "traces"),
            "http://h:4318/v1/traces"
        );
        assert_eq!(
            http_signal_url("http://h:4318/", "metrics"),
            "http://h:4318/v1/metrics"
        );
        assert_eq!(
            http_signal_url("http://h:4318/custom", "traces"),
            "http://h:4318/custom"
        );
        assert_eq!(
            http_signal_url("http://h:4318/v1/traces", "metrics"),
            "http://h:4318/v1/metrics"
        );
    }
}
