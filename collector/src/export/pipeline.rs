//! The part every network exporter shares (`otlp`, `zipkin`): the agent's loop hands spans to a
//! bounded queue and never waits on the network; an export thread (with its own async runtime)
//! batches them, groups each batch by process (one resource per process), retries through
//! outages (`retry`), and counts what it had to drop: exported + dropped (queue full) + dropped
//! (export failed) = spans made. Closing drains the queue within `retry::CLOSE_GRACE`.
//!
//! A `Backend` is only the last step: one export request for the spans of one process.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    SpanSink,
    otlp::ExportError,
    retry::{Closing, Retrier},
    spandata,
};
use crate::span::{Span, processes::Resources, resource::Resource};

/// Spans per export request at most, and how long a partial batch waits.
const MAX_BATCH: usize = 512;
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// One export request in flight; its error is the backend's words (`retry::classify` reads
/// them: `... status code: 503`, `... network error (connection refused)`).
pub type Export<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where a batch goes, on the export thread.
pub trait Backend {
    /// The spans that follow are this process's.
    fn set_resource(&mut self, resource: &Resource);
    /// Send the spans of one process. Called again for each retry of the same spans.
    fn export<'a>(&'a self, resource: &'a Resource, spans: &'a [Span]) -> Export<'a>;
    /// The export thread is ending.
    fn shutdown(&mut self) {}
}

/// How an export thread is set up.
pub struct PipelineConfig {
    /// The exporter's name in the summary and the log: `otlp (grpc)`, `zipkin`.
    pub label: &'static str,
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue: usize,
    /// How long a failing batch is retried (see `retry`).
    pub retry_max: Duration,
}

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
pub struct ExportSink {
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
    label: &'static str,
    closing: Arc<Closing>,
}

impl ExportSink {
    /// Start the export thread, which builds its backend with `build` inside its own runtime
    /// (tonic's channel wants one); a build error is returned here. Spans are paired with
    /// their resources from `resources` as they come.
    pub fn start<B, F>(
        config: &PipelineConfig,
        resources: Resources,
        build: F,
    ) -> Result<Self, ExportError>
    where
        B: Backend,
        F: FnOnce() -> Result<B, ExportError> + Send + 'static,
    {
        let queue = config.queue.max(1);
        // Batches, each of at least one span: the span bound (`queued`) is the one that binds.
        let (tx, rx) = mpsc::sync_channel(queue);
        let counts = Arc::new(ExportCounts::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_counts = Arc::clone(&counts);
        let thread_queued = Arc::clone(&queued);
        let closing = Arc::new(Closing::default());
        let label = config.label;
        let short_label = label.split(' ').next().unwrap_or(label);
        let retrier = Retrier::new(config.retry_max, Arc::clone(&closing)).labelled(short_label);
        let thread = std::thread::Builder::new()
            .name(format!("wirespan-{short_label}"))
            .spawn(move || {
                let queue = Queue {
                    rx,
                    queued: thread_queued,
                };
                export_thread(
                    build,
                    short_label,
                    &queue,
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
                label,
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
            "{}: {} spans exported, {} dropped (queue full), {} dropped (export failed)",
            self.label,
            c.exported.load(Ordering::Relaxed),
            c.dropped_queue_full.load(Ordering::Relaxed),
            c.dropped_failed.load(Ordering::Relaxed)
        )
    }

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

impl Drop for ExportSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            eprintln!("wirespan: {}", self.close());
        }
    }
}

impl SpanSink for ExportSink {
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

/// The export thread's end of the queue: batches, and the count of spans in them.
struct Queue<T = Queued> {
    rx: Receiver<Vec<T>>,
    queued: Arc<AtomicUsize>,
}

fn export_thread<B: Backend>(
    build: impl FnOnce() -> Result<B, ExportError>,
    label: &str,
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
    let mut backend = match runtime.block_on(async { build() }) {
        Ok(backend) => backend,
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
        // One export request per process: the resource is the process.
        for (resource, spans) in spandata::by_resource(batch) {
            let n = spans.len() as u64;
            if retrier.out_of_time() {
                // Closing, and the grace period is spent on a backend that does not answer.
                counts.dropped_failed.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            backend.set_resource(&resource);
            let outcome = runtime.block_on(retrier.run(|| backend.export(&resource, &spans)));
            match outcome {
                Ok(()) => {
                    counts.exported.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    counts.dropped_failed.fetch_add(n, Ordering::Relaxed);
                    if last_failure_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        eprintln!("wirespan: {label} export failed ({n} spans dropped): {e}");
                        last_failure_log = Some(Instant::now());
                    }
                }
            }
        }
        report_cpu();
        if closed {
            break;
        }
    }
    backend.shutdown();
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
