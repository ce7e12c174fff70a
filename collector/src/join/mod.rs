//! `join`: parent links across hosts, through a store every agent shares (Redis or Valkey).
//!
//! On one host, a server span finds its client span by the five-tuple and sequence numbers the
//! correlator sees at both ends. Across hosts the agent at the server never sees the client, so:
//! - the agent at the client **publishes** a [`JoinRecord`] (the client span's trace id and span
//!   id) when it emits a client span, under a [`JoinKey`] made of what both ends of the exchange
//!   observe unchanged: the TCP sequence numbers of the request's and the response's first bytes
//!   (NAT rewrites addresses and ports, never sequence numbers);
//! - the agent at the server **asks** for the key of each inbound exchange whose peer is not on
//!   its host, and adopts the record as the server span's parent, as it adopts a `traceparent`.
//!
//! Publishing and asking never block the agent: a [`JoinStore`] queues them and answers later
//! ([`Answer`]). The store behind it is [`RedisJoin`] (a thread of its own, batching), or
//! [`MemoryJoin`] (in-process, for tests and for agents sharing one process). With no store
//! configured nothing here runs: the same-host join is the default.

use std::sync::Arc;

use tokio::sync::Notify;

mod key;
pub mod memory;
mod redis_conn;
mod redis_store;

pub use self::{
    key::{JoinKey, JoinRecord, route_check},
    memory::MemoryJoin,
    redis_store::{RedisJoin, RedisJoinError, RedisJoinOptions},
};

/// What a store says of a key it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The client's record.
    Found(JoinRecord),
    /// No record came within the wait (the client is not traced, or its agent is slow).
    NotFound,
    /// The store could not be reached: the span goes out unjoined at once rather than wait.
    Away,
}

/// What a store did, counted since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Records written to the store.
    pub published: u64,
    /// Records not written: the store was away, or the queue to it was full.
    pub publish_dropped: u64,
    /// Keys asked for.
    pub asked: u64,
    /// Values in the store that were not a record of this format (another program's keys
    /// under the prefix, a newer agent's format): answered as not found.
    pub unreadable: u64,
    /// Times the connection to the store failed (connect, read or write).
    pub store_errors: u64,
}

/// Where agents leave and find each other's client spans. Every call returns at once: records
/// and questions are queued, and answers come back through [`JoinStore::answers`].
pub trait JoinStore: Send {
    /// Leave a client span's record under its key (best effort: a full queue or an absent
    /// store drops it, counted).
    fn publish(&mut self, key: JoinKey, record: JoinRecord);
    /// Ask for a key's record. The store keeps looking for the configured wait (the client's
    /// agent may publish after the server's asks), then answers [`Answer::NotFound`].
    fn ask(&mut self, key: JoinKey);
    /// Answers that came in since the last call.
    fn answers(&mut self, out: &mut Vec<(JoinKey, Answer)>);
    /// What it did so far.
    fn stats(&self) -> StoreStats;
    /// Notified when answers come in, so a live agent settles the spans waiting for them at
    /// once rather than at its next clock tick (None: poll `answers` on your own schedule).
    fn waker(&self) -> Option<Arc<Notify>> {
        None
    }
}
