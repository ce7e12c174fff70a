//! Parent links across hosts, the correlator's side of `join`: client spans whose peer is on
//! another host are published when emitted; server spans whose peer is on another host ask for
//! their client's record and wait for the answer (the store bounds the wait), then take the
//! record as their parent or go out as roots, counted.

use std::collections::HashMap;

use crate::{
    join::{Answer, JoinKey, JoinRecord, JoinStore, StoreStats, route_check},
    protocol::{Detail, Exchange, Grpc, Http},
    span::{SpanId, TraceId},
};

/// What the cross-host join did, for the stop summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemoteStats {
    /// Server spans that asked the store for their client.
    pub asked: u64,
    /// Server spans whose parent is a client span on another host.
    pub joined: u64,
    /// Asked, but no record came within the wait (the client is not traced, or its agent is
    /// late or away).
    pub not_found: u64,
    /// Asked while the store was away: emitted unjoined at once.
    pub away: u64,
    /// A record was found under the key but for another request (see `join::key`).
    pub route_mismatch: u64,
    /// Client spans offered to the store.
    pub offered: u64,
}

impl RemoteStats {
    /// Server spans that asked and went out without a remote parent.
    #[must_use]
    pub fn unjoined(&self) -> u64 {
        self.not_found + self.away + self.route_mismatch
    }
}

/// The store and the answers it gave that spans have not yet used.
pub struct RemoteJoins {
    store: Box<dyn JoinStore>,
    answers: HashMap<JoinKey, Answer>,
    incoming: Vec<(JoinKey, Answer)>,
    pub stats: RemoteStats,
}

impl RemoteJoins {
    #[must_use]
    pub fn new(store: Box<dyn JoinStore>) -> Self {
        Self {
            store,
            answers: HashMap::new(),
            incoming: Vec::new(),
            stats: RemoteStats::default(),
        }
    }

    /// The key an exchange is known by at both ends, when both sequence numbers are known.
    #[must_use]
    pub fn key_of(x: &Exchange) -> Option<JoinKey> {
        let (request_seq, response_seq) = x.wire.both()?;
        Some(JoinKey {
            request_seq,
            response_seq,
        })
    }

    /// Ask for the client of a server exchange whose peer is on another host.
    pub fn ask(&mut self, key: JoinKey) {
        self.stats.asked += 1;
        self.store.ask(key);
    }

    /// Take in the store's answers.
    pub fn poll(&mut self) {
        self.store.answers(&mut self.incoming);
        self.answers.extend(self.incoming.drain(..));
    }

    /// The answer for `key`, if it came.
    #[must_use]
    pub fn answer(&self, key: JoinKey) -> Option<Answer> {
        self.answers.get(&key).copied()
    }

    /// A server span that asked is emitted: `joined` when it took the record as its parent.
    /// Its answer is forgotten and counted.
    pub fn settled(&mut self, key: JoinKey, joined: bool) {
        let answer = self.answers.remove(&key);
        let counter = match (joined, answer) {
            (true, _) => &mut self.stats.joined,
            (false, Some(Answer::Away)) => &mut self.stats.away,
            (false, Some(Answer::Found(_))) => &mut self.stats.route_mismatch,
            // No answer before the span's window ran out counts as not found.
            (false, Some(Answer::NotFound) | None) => &mut self.stats.not_found,
        };
        *counter += 1;
    }

    /// Leave an emitted client span's ids for the server's agent.
    pub fn publish(&mut self, key: JoinKey, x: &Exchange, trace_id: TraceId, span_id: SpanId) {
        self.stats.offered += 1;
        self.store.publish(
            key,
            JoinRecord {
                trace_id,
                span_id,
                route_check: check_of(x),
            },
        );
    }

    /// Told when the store has answers (see `JoinStore::waker`).
    #[must_use]
    pub fn waker(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.store.waker()
    }

    /// What the store itself counted.
    #[must_use]
    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }
}

/// Whether a record found for a server exchange may be its parent (the route check).
#[must_use]
pub fn fits(record: &JoinRecord, x: &Exchange) -> bool {
    record.matches(check_of(x))
}

/// The route check of what both ends see of a request: HTTP's method and target, a database
/// command's operation and (sanitized) text.
fn check_of(x: &Exchange) -> u32 {
    match &x.detail {
        Detail::Http(Http { method, target, .. })
        | Detail::Grpc(Grpc {
            http: Http { method, target, .. },
            ..
        }) => route_check(method, target),
        Detail::Db(db) => route_check(&db.operation, db.query_text.as_deref().unwrap_or("")),
        // Nothing but the key: the check says unknown.
        Detail::Tcp => 0,
    }
}
