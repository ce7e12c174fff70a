//! The agent's run: load and attach the probes, report how each hook attached, stream events
//! from the ring buffer to a sink until the shutdown signal, then detach and drain what is left,
//! so nothing already captured is lost. Shutdown and sink are injected.

use std::future::Future;

use wirespan_shared::{LOST_CAUSE_NAMES, LOST_CAUSES};

use crate::{
    export::EventSink,
    load::{AttachMode, HookReport, LoadError, Probes},
    source::{
        Event,
        ringbuf::{ReadStats, RingBufSource},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("reading the event ring buffer failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("writing events failed: {0}")]
    Write(#[source] std::io::Error),
}

/// Options of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Restrict every hook to this attach mode instead of trying them in order.
    pub attach_mode: Option<AttachMode>,
}

/// What a run saw, for the summary at exit.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSummary {
    pub read: ReadStats,
    /// Events lost in the kernel, by `LOST_*` cause.
    pub lost: [u64; LOST_CAUSES as usize],
}

impl RunSummary {
    /// `123 events; lost: none` or `... lost: 4 (ring buffer full)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let lost: Vec<String> = self
            .lost
            .iter()
            .zip(LOST_CAUSE_NAMES)
            .filter(|(n, _)| **n > 0)
            .map(|(n, cause)| format!("{n} ({cause})"))
            .collect();
        let lost = if lost.is_empty() {
            "none".to_owned()
        } else {
            lost.join(", ")
        };
        format!(
            "{} events, {} malformed; lost in kernel: {lost}",
            self.read.events, self.read.malformed
        )
    }
}

/// Why the read loop stopped early.
enum StepError {
    Read(std::io::Error),
    Write(std::io::Error),
}

impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        Self::Read(e)
    }
}

/// Run until `shutdown` resolves. `on_ready` receives the attach report once every hook is
/// attached (the caller prints it; tests wait for it).
pub async fn run(
    options: RunOptions,
    sink: &mut dyn EventSink,
    on_ready: impl FnOnce(&[HookReport]),
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, AgentError> {
    let (probes, maps) = Probes::load(options.attach_mode)?;
    on_ready(&probes.report);
    let mut source = RingBufSource::new(maps.events).map_err(AgentError::Read)?;

    tokio::pin!(shutdown);
    let outcome = loop {
        let batch = tokio::select! {
            () = &mut shutdown => None,
            batch = source.next_batch(|e: &Event| sink.event(e).map_err(StepError::Write)) => Some(batch),
        };
        match batch {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(())) => {}
        }
        if let Err(e) = sink.flush() {
            break Err(StepError::Write(e));
        }
    };
    // Detach first so no new events arrive, then take what the ring buffer still holds.
    probes.detach();
    let outcome = outcome
        .and_then(|()| source.drain_now(|e: &Event| sink.event(e).map_err(StepError::Write)))
        .and_then(|()| sink.flush().map_err(StepError::Write));
    let summary = RunSummary {
        read: source.stats,
        lost: maps.lost.counts(),
    };
    match outcome {
        Ok(()) => Ok(summary),
        Err(StepError::Read(e)) => Err(AgentError::Read(e)),
        // The reader went away (a closed pipe, `| head`): stop quietly.
        Err(StepError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(summary),
        Err(StepError::Write(e)) => Err(AgentError::Write(e)),
    }
}
