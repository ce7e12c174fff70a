//! Where the agent's CPU goes, by pipeline stage, for the exit summary's `stages:` line (the
//! benchmark reads it). Cheap enough to stay on: the per-event stages are timed on one record in
//! `SAMPLE_EVERY` and scaled, the per-batch work (settling spans, handing them to the sinks) is
//! timed per batch, and the OTLP export thread reports its own thread CPU time. Times are the
//! thread's CPU time, not the wall clock: on a busy machine the agent is often preempted in the
//! middle of a stage, and wall time would charge the stage for it.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

/// One record in this many has its decode, connection/protocol and correlation timed.
pub const SAMPLE_EVERY: u64 = 64;

/// CPU time of export threads (user and system), in ns, as they last reported it.
static EXPORT_THREADS_NS: AtomicU64 = AtomicU64::new(0);

/// An export thread's CPU time so far; call with the growth since its last report.
pub fn add_export_thread_ns(ns: u64) {
    EXPORT_THREADS_NS.fetch_add(ns, Ordering::Relaxed);
}

/// This thread's CPU time (user and system), in ns.
#[must_use]
pub fn thread_cpu_ns() -> u64 {
    cpu_clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer; the CPU-time clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The process's user and system CPU time, in µs.
#[must_use]
pub fn process_cpu_us() -> (u64, u64) {
    // SAFETY: all-zero is a valid rusage (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage pointer; getrusage cannot fail for RUSAGE_SELF.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    (us(usage.ru_utime), us(usage.ru_stime))
}

/// The per-record stages.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Decode,
    /// Connection table and protocol decoders.
    Conn,
    Correlate,
}

/// Stage times of a run. Per-record stages are sums over the sampled records; `settle_ns` and
/// `sink_ns` are exact.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub records: u64,
    pub sampled: u64,
    sampled_ns: [u64; 3],
    /// Settling spans (correlation work done per batch).
    pub settle_ns: u64,
    /// Handing spans to the sinks and flushing them, on the agent's thread.
    pub sink_ns: u64,
    /// What reading the thread CPU clock costs (a system call): each lap includes one read, so
    /// this much is taken off every lap.
    read_ns: u64,
    /// The process's CPU time (user, system µs) when the run started.
    cpu_start_us: (u64, u64),
    export_threads_start_ns: u64,
}

impl StageTimes {
    /// Start counting now.
    #[must_use]
    pub fn start() -> Self {
        const READS: u64 = 64;
        let first = thread_cpu_ns();
        let mut last = first;
        for _ in 0..READS {
            last = thread_cpu_ns();
        }
        Self {
            read_ns: (last - first) / READS,
            cpu_start_us: process_cpu_us(),
            export_threads_start_ns: EXPORT_THREADS_NS.load(Ordering::Relaxed),
            ..Self::default()
        }
    }

    /// Count a record; whether it is one to time.
    pub fn next_record(&mut self) -> bool {
        self.records += 1;
        let sample = self.records % SAMPLE_EVERY == 1;
        if sample {
            self.sampled += 1;
        }
        sample
    }

    /// A sampled record spent from `since` (`thread_cpu_ns`) to now in `stage`; returns now,
    /// for the next stage.
    pub fn add(&mut self, stage: Stage, since: u64) -> u64 {
        let now = thread_cpu_ns();
        self.sampled_ns[stage as usize] += now.saturating_sub(since).saturating_sub(self.read_ns);
        now
    }

    /// CPU ns of this thread since `since` (`thread_cpu_ns`).
    #[must_use]
    pub fn since(since: u64) -> u64 {
        thread_cpu_ns().saturating_sub(since)
    }

    /// Estimated total ns of a per-record stage over all records.
    fn total_ns(&self, stage: Stage) -> u64 {
        if self.sampled == 0 {
            return 0;
        }
        let total = u128::from(self.sampled_ns[stage as usize]) * u128::from(self.records)
            / u128::from(self.sampled);
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    /// The `stages:` line: µs per event by stage, then totals (ms) and the process's CPU over
    /// the run, as `key=value` for scripts. Call after the sinks are closed (export threads
    /// report their CPU as they end).
    #[must_use]
    #[expect(
        clippy::cast_precision_loss,
        reason = "times shown to two decimals: far inside f64's precision"
    )]
    pub fn line(&self, spans: u64) -> String {
        let export_thread_ns =
            EXPORT_THREADS_NS.load(Ordering::Relaxed) - self.export_threads_start_ns;
        let decode = self.total_ns(Stage::Decode);
        let conn = self.total_ns(Stage::Conn);
        let correlate = self.total_ns(Stage::Correlate) + self.settle_ns;
        let export = self.sink_ns + export_thread_ns;
        let (user, sys) = process_cpu_us();
        let user_ns = user.saturating_sub(self.cpu_start_us.0) * 1000;
        let sys_ns = sys.saturating_sub(self.cpu_start_us.1) * 1000;
        // The rest: reading the ring buffer, the runtime, waiting, the periodic work.
        let other = (user_ns + sys_ns).saturating_sub(decode + conn + correlate + export);
        let per = |ns: u64| ns as f64 / 1e3 / self.records.max(1) as f64;
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut text = format!(
            "stages: user-space µs per event by stage: decode {:.2}, conn/protocol {:.2}, correlate {:.2}, export {:.2}, other {:.2}",
            per(decode),
            per(conn),
            per(correlate),
            per(export),
            per(other)
        );
        let _ = write!(
            text,
            "; clock_read_ns={} events={} spans={spans} decode_ms={:.1} conn_protocol_ms={:.1} correlate_ms={:.1} export_ms={:.1} export_thread_ms={:.1} other_ms={:.1} cpu_user_ms={:.1} cpu_sys_ms={:.1}",
            self.read_ns,
            self.records,
            ms(decode),
            ms(conn),
            ms(correlate),
            ms(export),
            ms(export_thread_ns),
            ms(other),
            ms(user_ns),
            ms(sys_ns),
        );
        text
    }
}
