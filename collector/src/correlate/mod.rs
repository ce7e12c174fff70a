//! `correlate`: exchanges and execution contexts → spans with real parent links.
//!
//! - Each inbound exchange becomes a server span, each outbound one a client span.
//! - Across processes, a server span's parent is the client span at the other end of the same
//!   connection and request: the other end's five-tuple and the TCP sequence number of the
//!   request's first byte (HTTP/1), or the stream id (HTTP/2, whose streams share the bytes).
//!   Never a time window alone. The other end is the mirrored five-tuple, or, behind NAT on
//!   this host, the end whose first bytes carry the same sequence numbers (see `peers`).
//! - Inside a process, a client span's parent is the server span being served when the request
//!   was made (see `context`), and only while that request is open: a goroutine that outlives
//!   the request it inherited starts new traces (counted as `context_ended`).
//! - Across hosts (a store configured, see `remote`), a server span whose peer is on another
//!   host takes as parent the client span that host's agent published under the exchange's
//!   sequence numbers.
//! - With no observed parent, a request's `traceparent` is adopted; otherwise a new trace starts.
//!
//! - HTTP/2 exchanges whose headers the bytes did not give (HPACK state unknown) take grpc-go's
//!   decoded headers and trailers from the uprobes (see `enrich`).
//!
//! Exchanges complete response-first, so a child often completes before its parent: spans wait
//! (bounded by `window_ns`) until their parent is emitted, then take its trace id. A span whose
//! expected parent never arrives is emitted as a root after the window, and counted.

mod closed_ends;
pub mod context;
mod end_key;
mod enrich;
pub mod failed;
#[cfg(test)]
mod failed_tests;
mod idhash;
mod peers;
pub mod remote;
#[cfg(test)]
mod remote_tests;
mod span_index;
mod tables;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashSet, VecDeque},
    net::IpAddr,
};

pub use self::tables::Tables;
use self::{
    context::{Contexts, Lookup, ServerRef},
    end_key::EndKey,
    failed::{Caller, Failed, Failures},
    idhash::{IdMap, IdSet},
    remote::RemoteJoins,
    span_index::SpanIndex,
};
use crate::{
    conn::{ConnExchange, Gone},
    join::{Answer, JoinKey, JoinRecord, JoinStore},
    protocol::Exchange,
    source::{ConnKind, Direction, Event},
    span::{IdGenerator, ParentLink, Payload, Span, SpanId, SpanKind, TraceId, TraceParent},
};

/// How long a span waits for its parent by default (event time).
pub const DEFAULT_WINDOW_NS: u64 = 10_000_000_000;
/// How long a closed connection's ends are remembered (last seen, first bytes, a Go client's
/// uses of it). They are asked about while spans of the connection settle: its last exchange
/// comes at its close at the latest, and a span waits for its parent at most the window after
/// it came; 2 s more allow for events that reach the agent out of order (per-CPU buffers of
/// the probes, a reader that lags behind). Every connection a host closes is held this long,
/// so it is what the agent's memory grows with under connection churn (3,300 connections a
/// second are some 80k ends).
pub(crate) const END_GRACE_NS: u64 = DEFAULT_WINDOW_NS + 2_000_000_000;
/// Spans waiting at most; beyond it the oldest are emitted without their parent.
const MAX_PENDING: usize = 100_000;

/// What identifies a request on its connection, the same at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RequestId {
    /// HTTP/1: the TCP sequence number of the request's first byte.
    Seq(u32),
    /// HTTP/2: the stream id.
    Stream(u32),
}

/// A request as seen from its client: (the client's end, request).
type PeerKey = (EndKey, RequestId);

/// A server's connection: (pid, the server's end).
type ServerKey = (u32, EndKey);

/// What the correlator counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CorrelateStats {
    pub spans: u64,
    /// Emitted without the parent they waited for.
    pub orphans: u64,
    /// Emitted early because too many spans were waiting.
    pub evicted: u64,
    /// Client spans that started their own trace because the request their goroutine inherited
    /// had ended (see `context`).
    pub context_ended: u64,
    /// Failed outbound calls made into spans (no exchange: refused, timed out, reset).
    pub failed_calls: u64,
    /// Failed connects of Go programs that no call claimed (background reconnects, clients the
    /// uprobes do not cover): counted, not made into spans.
    pub unclaimed_connects: u64,
    /// Responses whose request went by before the capture and that no Go probe named:
    /// dropped (see `Flags::request_unseen`).
    pub requests_unseen: u64,
}

struct Node {
    id: u64,
    x: ConnExchange,
    kind: SpanKind,
    /// A client's execution context, looked up when it arrived: thread state is transient (the
    /// thread answers and moves on), so it cannot wait for the settle.
    context: Lookup,
    /// Event time when it arrived; the window counts from here.
    arrived_ns: u64,
    /// Its key's hash in the span index, to take it out again (see `span_index`).
    index_hash: u64,
    /// A server span that asked the store for its client on another host.
    remote_key: Option<JoinKey>,
}

/// An emitted span's ids, for its late children.
#[derive(Debug, Clone, Copy)]
struct Emitted {
    trace_id: TraceId,
    span_id: SpanId,
    at_ns: u64,
    index_hash: u64,
}

/// Whether a span can be emitted now.
enum Decision {
    Child(u64, ParentLink),
    /// A client span on another host (see `remote`).
    Remote(JoinRecord),
    Root(ParentLink),
    Wait,
}

/// Turns exchanges into spans.
pub struct Correlator {
    window_ns: u64,
    ids: IdGenerator,
    contexts: Contexts,
    peers: peers::Peers,
    go_headers: enrich::GoHeaderStore,
    /// Boxed: every settle pass moves the waiting nodes, and a node (its exchange) is large.
    #[expect(
        clippy::vec_box,
        reason = "settle moves every waiting node each pass: a pointer, not the exchange"
    )]
    pending: Vec<Box<Node>>,
    pending_ids: IdSet,
    next_id: u64,
    emitted: IdMap<Emitted>,
    emitted_order: VecDeque<u64>,
    /// Nodes (pending or emitted): clients by their request, for the server at the other end;
    /// servers by process and connection, for in-process children.
    index: SpanIndex,
    /// Every node's exchange summary, kept as long as `emitted` keeps it (for lookups).
    server_info: IdMap<ServerInfo>,
    /// Addresses of this host (local ends of its connections), to tell local peers.
    local_ips: HashSet<IpAddr>,
    now_ns: u64,
    pub stats: CorrelateStats,
    /// Failed outbound calls (see `failed`), and those waiting for their parent.
    failures: Failures,
    failed_pending: Vec<FailedNode>,
    /// The join across hosts, when a store is configured.
    remote: Option<RemoteJoins>,
}

/// A failed call waiting for its parent, with the context looked up when it was ready.
struct FailedNode {
    f: Failed,
    context: Lookup,
    arrived_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct ServerInfo {
    start_ns: u64,
    end_ns: u64,
    stream: Option<u32>,
}

impl Correlator {
    #[must_use]
    pub fn new(window_ns: u64, ids: IdGenerator) -> Self {
        Self {
            window_ns,
            ids,
            contexts: Contexts::default(),
            peers: peers::Peers::default(),
            go_headers: enrich::GoHeaderStore::default(),
            pending: Vec::new(),
            pending_ids: IdSet::default(),
            next_id: 1,
            emitted: IdMap::default(),
            emitted_order: VecDeque::new(),
            index: SpanIndex::default(),
            server_info: IdMap::default(),
            local_ips: HashSet::new(),
            now_ns: 0,
            stats: CorrelateStats::default(),
            failures: Failures::default(),
            failed_pending: Vec::new(),
            remote: None,
        }
    }

    /// Join across hosts through `store`: publish client spans whose peer is on another host,
    /// and ask for the client of server spans whose peer is.
    #[must_use]
    pub fn with_join_store(mut self, store: Box<dyn JoinStore>) -> Self {
        self.remote = Some(RemoteJoins::new(store));
        self
    }

    /// What the join across hosts did (None without a store): the correlator's counts, and the
    /// store's.
    #[must_use]
    pub fn remote_stats(&self) -> Option<(remote::RemoteStats, crate::join::StoreStats)> {
        self.remote.as_ref().map(|r| (r.stats, r.store_stats()))
    }

    /// Told when the join store has answers for spans waiting on them (see `remote`).
    #[must_use]
    pub fn join_waker(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.remote.as_ref().and_then(RemoteJoins::waker)
    }

    /// Whether `ip` is this host's (or loopback): a peer there is traced by this agent.
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local_ips.contains(&ip)
    }

    /// Take in an event (execution contexts, the clock, this host's addresses).
    pub fn on_event(&mut self, event: &Event) {
        self.now_ns = self.now_ns.max(event.ts_ns());
        match event {
            Event::Conn(c) => {
                self.local_ips.insert(c.local.ip());
            }
            Event::GoHeaders(h) => self.go_headers.on_headers(h),
            Event::GoConnUse(u) => self.go_headers.on_conn_use(u),
            Event::GoServe(g) => self.go_headers.on_serve(g),
            _ => {}
        }
        self.contexts.on_event(event);
        self.peers.on_event(event);
        if let Event::Conn(c) = event
            && c.kind == ConnKind::Close
        {
            // The contexts queued the close; the peers forget what is due by then.
            self.peers
                .forget_closed(c.ts_ns, self.contexts.closed_ends());
        }
        self.failures.on_event(event);
        // A thread's serving state is transient: a failed connect's parent is looked up now.
        self.take_failed();
    }

    /// A connection the connection table gave up on without its close event (a lost close):
    /// its contexts and ends are forgotten as if it had closed when last seen.
    pub fn on_conn_gone(&mut self, gone: &Gone) {
        self.contexts.on_conn_gone(gone);
        self.peers
            .forget_closed(gone.last_ns, self.contexts.closed_ends());
    }

    /// How much the per-connection tables hold now, and what their bounds did.
    #[must_use]
    pub fn tables(&self) -> Tables {
        Tables {
            contexts: self.contexts.sizes(),
            peer_ends: self.peers.len(),
            waiting: self.pending.len() + self.failed_pending.len(),
            stats: self.contexts.stats,
        }
    }

    /// A Go program the uprobes attached to (its failed connects belong to its calls).
    pub fn on_go_program(&mut self, pid: u32) {
        self.failures.mark_go(pid);
    }

    /// Let time pass without events (a live run's idle periods): spans waiting for a parent
    /// that will not come are emitted once the window is over, not at the next event.
    pub fn advance_clock(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
        // Closed ends go a grace period after their close even when no later connection event
        // comes to push them out: a host whose churn stopped keeps nothing of it.
        self.contexts.forget_closed(self.now_ns);
        self.peers
            .forget_closed(self.now_ns, self.contexts.closed_ends());
    }

    /// Take in a completed exchange.
    pub fn on_exchange(&mut self, mut x: ConnExchange) {
        let contexts = &self.contexts;
        self.go_headers
            .fill(&mut x, |pid, goid| contexts.parent_goroutine(pid, goid));
        if x.exchange.flags.request_unseen {
            self.stats.requests_unseen += 1;
            return;
        }
        let kind = match x.exchange.request_direction {
            Direction::Ingress => SpanKind::Server,
            Direction::Egress => SpanKind::Client,
        };
        let id = self.next_id;
        self.next_id += 1;
        self.now_ns = self.now_ns.max(x.exchange.end_ns);
        self.local_ips.insert(x.local.ip());
        let index_hash = match kind {
            SpanKind::Client => {
                self.failures
                    .on_client_exchange(x.pid, x.local, x.remote, x.exchange.start_ns);
                let key = (EndKey::new(x.local, x.remote), request_id(&x.exchange));
                self.index.insert_client(key, id)
            }
            SpanKind::Server => {
                let key = (x.pid, EndKey::new(x.local, x.remote));
                let hash = self.index.insert_server(key, id);
                self.server_info.insert(
                    id,
                    ServerInfo {
                        start_ns: x.exchange.start_ns,
                        end_ns: x.exchange.end_ns,
                        stream: stream_of(&x.exchange),
                    },
                );
                hash
            }
        };
        let context = match kind {
            SpanKind::Client => self.contexts.server_of(&x),
            SpanKind::Server => Lookup::NoServer,
        };
        // A server's peer on another host: ask its agent's record now, so the answer is in by
        // the time the span would settle.
        let remote_peer = !self.is_local(x.remote.ip());
        let remote_key = match (&mut self.remote, kind) {
            (Some(remote), SpanKind::Server) if remote_peer => {
                RemoteJoins::key_of(&x.exchange).inspect(|&key| remote.ask(key))
            }
            _ => None,
        };
        self.pending_ids.insert(id);
        self.pending.push(Box::new(Node {
            id,
            x,
            kind,
            context,
            arrived_ns: self.now_ns,
            index_hash,
            remote_key,
        }));
    }

    /// Emit every span whose parent is settled (or whose wait is over) into `out`.
    pub fn settle(&mut self, out: &mut Vec<Span>) {
        self.take_failed();
        if let Some(remote) = &mut self.remote {
            remote.poll();
        }
        // Parents start before their children: in start order most resolve in one pass.
        self.pending.sort_by_key(|n| n.x.exchange.start_ns);
        // Over the bound, the oldest waiting spans go without their parent.
        let mut excess = self.pending.len().saturating_sub(MAX_PENDING);
        loop {
            let mut progressed = false;
            let mut waiting = Vec::with_capacity(self.pending.len());
            for node in std::mem::take(&mut self.pending) {
                let decision = match self.decide(&node) {
                    Decision::Wait if excess > 0 => {
                        excess -= 1;
                        self.stats.evicted += 1;
                        Decision::Root(ParentLink::Orphan)
                    }
                    Decision::Wait
                        if self.now_ns.saturating_sub(node.arrived_ns) > self.window_ns =>
                    {
                        self.stats.orphans += 1;
                        Decision::Root(ParentLink::Orphan)
                    }
                    d => d,
                };
                if !matches!(decision, Decision::Wait)
                    && let (Some(remote), Some(key)) = (&mut self.remote, node.remote_key)
                {
                    remote.settled(key, matches!(decision, Decision::Remote(_)));
                }
                match decision {
                    Decision::Wait => waiting.push(node),
                    Decision::Child(parent, link) => {
                        self.pending_ids.remove(&node.id);
                        let parent = self.emitted[&parent];
                        out.push(self.emit(node, parent.trace_id, Some(parent.span_id), link));
                        progressed = true;
                    }
                    Decision::Remote(client) => {
                        self.pending_ids.remove(&node.id);
                        out.push(self.emit(
                            node,
                            client.trace_id,
                            Some(client.span_id),
                            ParentLink::RemotePeer,
                        ));
                        progressed = true;
                    }
                    Decision::Root(link) => {
                        self.pending_ids.remove(&node.id);
                        if link == ParentLink::ContextEnded {
                            self.stats.context_ended += 1;
                        }
                        // No parent seen: an instrumented caller's context, else a new trace.
                        let (trace_id, parent, link) = match traceparent(&node.x.exchange) {
                            Some(tp) => (tp.trace_id, Some(tp.parent_id), ParentLink::TraceParent),
                            None => (self.ids.trace_id(), None, link),
                        };
                        out.push(self.emit(node, trace_id, parent, link));
                        progressed = true;
                    }
                }
            }
            self.pending = waiting;
            if !progressed {
                break;
            }
        }
        self.settle_failed(out);
        self.forget_old();
    }

    /// Emit everything still waiting (end of stream): parents first, the rest as orphans.
    pub fn finish(&mut self, out: &mut Vec<Span>) {
        self.now_ns = u64::MAX;
        self.settle(out);
    }

    fn decide(&self, node: &Node) -> Decision {
        match node.kind {
            SpanKind::Server => self.decide_server(node),
            SpanKind::Client => self.decide_client(node),
        }
    }

    /// A server span's parent: the client at the other end of the same request.
    fn decide_server(&self, node: &Node) -> Decision {
        let x = &node.x;
        let peer = self.peers.other_end(EndKey::new(x.local, x.remote));
        let key = (peer, request_id(&x.exchange));
        if let Some(client) = self.index.client(&key) {
            return if self.emitted.contains_key(&client) {
                Decision::Child(client, ParentLink::Peer)
            } else if self.pending_ids.contains(&client) {
                Decision::Wait
            } else {
                Decision::Root(ParentLink::Root)
            };
        }
        // A traced peer on this host may still complete its side (clients finish after
        // servers); one whose events never reach this agent (left out by the filters, or not
        // traced) will not, so the span does not wait for it.
        let peer_ip = peer.local().ip();
        if self.is_local(peer_ip) && self.contexts.end_seen(peer) {
            return Decision::Wait;
        }
        // A peer on another host: its agent's record, once the store answered.
        match (node.remote_key, &self.remote) {
            (Some(key), Some(remote)) => match remote.answer(key) {
                None => Decision::Wait,
                Some(Answer::Found(client)) if remote::fits(&client, &x.exchange) => {
                    Decision::Remote(client)
                }
                Some(_) => Decision::Root(ParentLink::Root),
            },
            _ => Decision::Root(ParentLink::Root),
        }
    }

    /// A client span's parent: the server span being served when the request was made.
    fn decide_client(&self, node: &Node) -> Decision {
        // Not known on arrival (a gRPC call's return was still to come): ask again; Go state is
        // kept for a while after goroutines end.
        let context = match node.context {
            Lookup::NotYet => self.contexts.server_of(&node.x),
            known => known,
        };
        self.decide_in_process(context, node.x.exchange.start_ns)
    }

    /// The parent of an outbound call made at `at` in the context `context`: the server span
    /// being served (see `context`).
    fn decide_in_process(&self, context: Lookup, at: u64) -> Decision {
        let server = match context {
            Lookup::NoServer => return Decision::Root(ParentLink::Root),
            Lookup::Expired => return Decision::Root(ParentLink::ContextEnded),
            Lookup::NotYet => return Decision::Wait,
            Lookup::Serving(server) => server,
        };
        let (pid, local, remote, link) = match server {
            ServerRef::Handler {
                pid, local, remote, ..
            }
            | ServerRef::Stream {
                pid, local, remote, ..
            } => (pid, local, remote, ParentLink::Goroutine),
            ServerRef::Thread {
                pid, local, remote, ..
            } => (pid, local, remote, ParentLink::Thread),
        };
        let candidates = self.index.servers(&(pid, EndKey::new(local, remote)));
        let found = candidates.iter().rev().find(|id| {
            self.server_info.get(id).is_some_and(|s| match server {
                ServerRef::Handler { ts, .. } => s.start_ns <= ts && ts <= s.end_ns,
                ServerRef::Stream { stream, .. } => s.stream == Some(stream),
                // The request the thread was serving when it sent this one.
                ServerRef::Thread { .. } => s.start_ns <= at && at <= s.end_ns,
            })
        });
        match found {
            Some(&parent) if self.emitted.contains_key(&parent) => Decision::Child(parent, link),
            // A thread's serving state is a heuristic (an event loop interleaves requests on one
            // thread): once a later request on that connection has completed, the one that
            // would contain this call never will.
            None if matches!(server, ServerRef::Thread { .. })
                && candidates
                    .iter()
                    .any(|id| self.server_info.get(id).is_some_and(|s| s.start_ns > at)) =>
            {
                Decision::Root(ParentLink::Root)
            }
            // The server exchange completes after its client calls (or is found but not yet
            // emitted): wait for it.
            _ => Decision::Wait,
        }
    }

    fn emit(
        &mut self,
        node: Box<Node>,
        trace_id: TraceId,
        parent_span_id: Option<SpanId>,
        link: ParentLink,
    ) -> Span {
        let mut node = *node;
        self.go_headers.fill_status(&mut node.x);
        let span_id = self.ids.span_id();
        self.emitted.insert(
            node.id,
            Emitted {
                trace_id,
                span_id,
                at_ns: self.now_ns.min(node.x.exchange.end_ns.max(node.arrived_ns)),
                index_hash: node.index_hash,
            },
        );
        self.emitted_order.push_back(node.id);
        self.stats.spans += 1;
        if node.kind == SpanKind::Client
            && !self.is_local(node.x.remote.ip())
            && let Some(remote) = &mut self.remote
            && let Some(key) = RemoteJoins::key_of(&node.x.exchange)
        {
            remote.publish(key, &node.x.exchange, trace_id, span_id);
        }
        let x = node.x;
        let f = x.exchange.flags;
        // A client that got no response: the socket error its connection ended with says why,
        // or its Go call's return (the caller gave up).
        let error = (node.kind == SpanKind::Client && (f.reset || f.no_response))
            .then(|| self.failures.no_response_cause(x.local, x.remote))
            .flatten();
        Span {
            trace_id,
            span_id,
            parent_span_id,
            link,
            kind: node.kind,
            start_ns: x.exchange.start_ns,
            end_ns: x.exchange.end_ns,
            pid: x.pid,
            comm: x.comm,
            local: x.local,
            remote: x.remote,
            payload: Payload::of(&x.exchange),
            incomplete: f.reset || f.no_response,
            error,
        }
    }

    /// Failed calls whose evidence is in: look up their caller's context now.
    fn take_failed(&mut self) {
        for f in self.failures.take_ready(self.now_ns) {
            let context = match f.caller {
                Caller::Goroutine(goid) => {
                    self.contexts.server_of_goroutine(f.pid, goid, f.start_ns)
                }
                Caller::Thread(tid) => self.contexts.server_of_thread(f.pid, tid, f.start_ns),
            };
            self.failed_pending.push(FailedNode {
                f,
                context,
                arrived_ns: self.now_ns,
            });
        }
    }

    /// Emit failed calls whose parent is emitted (or that have none, or waited too long).
    fn settle_failed(&mut self, out: &mut Vec<Span>) {
        for node in std::mem::take(&mut self.failed_pending) {
            if node.f.payload == Payload::Connect {
                if self.failures.is_go(node.f.pid) {
                    self.stats.unclaimed_connects += 1;
                    continue;
                }
                if self.now_ns < node.f.end_ns.saturating_add(failed::GO_HOLD_NS) {
                    self.failed_pending.push(node);
                    continue;
                }
            }
            let decision = match self.decide_in_process(node.context, node.f.start_ns) {
                Decision::Wait if self.now_ns.saturating_sub(node.arrived_ns) > self.window_ns => {
                    self.stats.orphans += 1;
                    Decision::Root(ParentLink::Orphan)
                }
                d => d,
            };
            let (trace_id, parent, link) = match decision {
                // Only server spans ask across hosts.
                Decision::Wait | Decision::Remote(_) => {
                    self.failed_pending.push(node);
                    continue;
                }
                Decision::Child(parent, link) => {
                    let parent = self.emitted[&parent];
                    (parent.trace_id, Some(parent.span_id), link)
                }
                Decision::Root(link) => (self.ids.trace_id(), None, link),
            };
            self.stats.spans += 1;
            self.stats.failed_calls += 1;
            if link == ParentLink::ContextEnded {
                self.stats.context_ended += 1;
            }
            let f = node.f;
            out.push(Span {
                trace_id,
                span_id: self.ids.span_id(),
                parent_span_id: parent,
                link,
                kind: SpanKind::Client,
                start_ns: f.start_ns,
                end_ns: f.end_ns,
                pid: f.pid,
                comm: f.comm,
                local: f.local,
                remote: f.remote,
                payload: f.payload,
                incomplete: true,
                error: Some(f.error),
            });
        }
    }

    /// Drop emitted spans' ids and indexes older than two windows.
    fn forget_old(&mut self) {
        let horizon = self.now_ns.saturating_sub(2 * self.window_ns);
        while let Some(&id) = self.emitted_order.front() {
            if self.emitted.get(&id).is_some_and(|e| e.at_ns >= horizon) {
                break;
            }
            self.emitted_order.pop_front();
            self.server_info.remove(&id);
            if let Some(e) = self.emitted.remove(&id) {
                self.index.forget(id, e.index_hash);
            }
        }
    }
}

fn stream_of(x: &Exchange) -> Option<u32> {
    x.detail.stream_id()
}

fn request_id(x: &Exchange) -> RequestId {
    stream_of(x).map_or(RequestId::Seq(x.origin.seq), RequestId::Stream)
}

fn traceparent(x: &Exchange) -> Option<TraceParent> {
    x.detail
        .http()?
        .headers
        .traceparent
        .as_deref()
        .and_then(TraceParent::parse)
}
