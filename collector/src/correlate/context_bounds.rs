//! Bounds of the execution contexts' per-connection and per-thread tables (a child of
//! `context`), and what they forget when a connection is over without its close event.
//!
//! Under a lost close (the ring buffer overflowed), a connection's entries would otherwise stay
//! for good: nothing else removes them. Two things keep the tables bounded:
//! - the connection table's word: a connection it gave up on (replaced by a new connection on
//!   the same ends, expired idle, evicted; see `conn::Gone`) is forgotten here as if it had
//!   closed, so these tables expire with the connection table;
//! - a cap per table: past it, the older half (by last activity) is dropped, counted. Halving
//!   keeps the cost per event constant.

use std::{collections::HashMap, hash::Hash};

use super::{Contexts, EndKey, bytes::median_ts};
use crate::conn::{DEFAULT_MAX_CONNS, Gone};
use crate::correlate::END_GRACE_NS;
use crate::correlate::closed_ends::{Closed, ClosedEnds, Reader};

/// Accepted connections kept at most: as many as the connection table tracks.
pub(super) const MAX_ACCEPTED: usize = DEFAULT_MAX_CONNS;
/// Connection ends kept at most. Closed ends stay for `END_GRACE_NS`: at 3,300 connections a
/// second (two ends each on one host) that is some 80k.
pub(super) const MAX_ENDS: usize = 262_144;
/// Threads serving a request, and client connections per Go process, kept at most.
pub(super) const MAX_THREADS: usize = 65_536;
pub(super) const MAX_CLIENT_CONNS: usize = DEFAULT_MAX_CONNS;
/// Closed ends waiting for their grace period at most: past it, the oldest are forgotten early.
pub(super) const MAX_CLOSING: usize = MAX_ENDS;

/// How many entries the contexts hold, table by table (for the stop summary).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ContextSizes {
    /// Threads serving a request (non-Go programs).
    pub threads: usize,
    /// Go goroutines with a known parent, over all processes.
    pub goroutines: usize,
    pub accepted: usize,
    pub ends: usize,
    /// Go client connections with recent requests, over all processes.
    pub client_conns: usize,
    /// Closed connection ends in their grace period.
    pub closing: usize,
}

/// What the bounds did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ContextStats {
    /// Connections forgotten because the connection table gave up on them (see `Gone`).
    pub gone: u64,
    /// Entries dropped because their table was at its cap.
    pub over_cap: u64,
}

/// Drop the older half of `map` by `ts` (at least half: entries at the median go too, so
/// equal times still make room). How many were dropped.
pub(super) fn halve<K: Eq + Hash, V>(map: &mut HashMap<K, V>, ts: impl Fn(&V) -> u64) -> u64 {
    let before = map.len();
    let cutoff = median_ts(map.values().map(&ts));
    map.retain(|_, v| ts(v) > cutoff);
    (before - map.len()) as u64
}

impl Contexts {
    /// A connection the connection table gave up on without its close event: it is over, as
    /// if it had closed when last seen.
    pub fn on_conn_gone(&mut self, gone: &Gone) {
        self.stats.gone += 1;
        self.accepted.remove(&gone.conn_id);
        self.push_closed(Closed {
            at: gone.last_ns,
            pid: gone.pid,
            end: EndKey::new(gone.local, gone.remote),
        });
    }

    /// Note a closed end, to forget after the grace period.
    pub(super) fn push_closed(&mut self, closed: Closed) {
        self.forget_closed(closed.at);
        if self.closed.len(Reader::Contexts) >= MAX_CLOSING
            && let Some(oldest) = self.closed.take_if(Reader::Contexts, |_| true)
        {
            // Forget the oldest now, not after its grace period: its last exchanges may lose
            // their join, the table never its bound.
            self.forget_end(oldest);
            self.stats.over_cap += 1;
        }
        self.closed.push(closed);
    }

    /// The closed ends, which the peers read too (see `closed_ends`).
    pub(crate) fn closed_ends(&mut self) -> &mut ClosedEnds {
        &mut self.closed
    }

    /// A connection accepted by this host.
    pub(super) fn insert_accepted(&mut self, conn_id: u64, ts: u64) {
        if self.accepted.len() >= MAX_ACCEPTED && !self.accepted.contains_key(&conn_id) {
            self.stats.over_cap += halve(&mut self.accepted, |ts| *ts);
        }
        self.accepted.insert(conn_id, ts);
    }

    /// An end seen at `ts`.
    pub(super) fn touch_end(&mut self, end: EndKey, ts: u64) {
        if self.ends.len() >= MAX_ENDS && !self.ends.contains_key(&end) {
            self.stats.over_cap += halve(&mut self.ends, |ts| *ts);
        }
        self.ends.insert(end, ts);
    }

    /// Room for one more serving thread.
    pub(super) fn bound_threads(&mut self) {
        if self.threads.len() >= MAX_THREADS {
            self.stats.over_cap += halve(&mut self.threads, |s| s.ts);
        }
        if self.served.len() >= MAX_THREADS {
            self.stats.over_cap += halve(&mut self.served, |(s, _)| s.ts);
        }
    }

    /// Drop the ends and client uses of connections closed more than `END_GRACE_NS` ago
    /// (unless the address pair was used again since), so the tables do not grow with every
    /// connection.
    pub(crate) fn forget_closed(&mut self, now: u64) {
        while let Some(closed) = self.closed.take_if(Reader::Contexts, |c| {
            now.saturating_sub(c.at) >= END_GRACE_NS
        }) {
            self.forget_end(closed);
        }
    }

    /// Forget a closed end's last-seen time and client uses, unless used again since.
    fn forget_end(&mut self, c: Closed) {
        let end = c.end;
        if self.ends.get(&end).is_some_and(|last| *last <= c.at) {
            self.ends.remove(&end);
        }
        if let Some(p) = self.go.get_mut(&c.pid)
            && p.client_uses
                .get(&end)
                .is_some_and(|uses| uses.back().is_none_or(|(last, _)| *last <= c.at))
        {
            p.client_uses.remove(&end);
        }
    }

    /// The tables' sizes now.
    #[must_use]
    pub fn sizes(&self) -> ContextSizes {
        ContextSizes {
            threads: self.threads.len(),
            goroutines: self.go.values().map(|p| p.parent.len()).sum(),
            accepted: self.accepted.len(),
            ends: self.ends.len(),
            client_conns: self.go.values().map(|p| p.client_uses.len()).sum(),
            closing: self.closed.len(Reader::Contexts),
        }
    }
}

#[cfg(test)]
#[path = "context_bounds_tests.rs"]
mod tests;
