//! What the correlator's per-connection tables hold, for the stop summary: a run that ends
//! after every connection closed should leave little behind, and never more than the caps.

use super::context::{ContextSizes, ContextStats};

/// The correlator's per-connection tables: their sizes, and what their bounds did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub contexts: ContextSizes,
    /// Connection ends whose first bytes are known (for joins through NAT).
    pub peer_ends: usize,
    /// Spans waiting for their parent.
    pub waiting: usize,
    pub stats: ContextStats,
}

impl Tables {
    /// `correlator at stop: 3 thread contexts, ...` (the phrase before it is the caller's).
    #[must_use]
    pub fn describe(&self) -> String {
        let c = &self.contexts;
        format!(
            "{} thread contexts, {} goroutines, {} accepted connections, {} connection ends, {} closing ends, {} Go client connections, {} peer ends, {} spans waiting; {} connections forgotten after a lost close, {} entries dropped over their caps",
            c.threads,
            c.goroutines,
            c.accepted,
            c.ends,
            c.closing,
            c.client_conns,
            self.peer_ends,
            self.waiting,
            self.stats.gone,
            self.stats.over_cap
        )
    }
}
