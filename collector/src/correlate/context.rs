//! Execution contexts: which inbound request a process was serving when it made an outbound
//! one. Go programs: the goroutine that made the call (the caller of `roundTrip` or `Invoke`,
//! not the pooled connection's writer), walked up its ancestry to a handler goroutine. Other
//! programs: the thread, for thread-per-request servers (it read a request on an accepted
//! connection and has not answered yet).
//!
//! Fed with events in order; asked about each outbound exchange when it completes.
//!
//! **Inheritance ends with its request.** A goroutine works for the request its ancestor was
//! serving when the goroutine was started, and only while that request is open. A worker started
//! lazily by the first request and fed later ones over a channel (or any goroutine that outlives
//! its request) would otherwise pull every later call into the first request's trace: the class of
//! bug that gave a peer a 45k-span trace (OBI #2551). Nothing passive ties such a call to the
//! request that really asked for it, so it is answered [`Lookup::Expired`]: it starts a trace of
//! its own, and is counted. A handler goroutine's own calls count while its handler runs; a gRPC
//! stream's handler goroutine serves its stream until it exits.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use crate::{
    conn::ConnExchange,
    protocol::Detail,
    source::{CallPhase, ConnKind, ConnRole, Data, Direction, Event, GoConnUse, HeadersSource},
};

use super::{
    closed_ends::{Closed, ClosedEnds},
    end_key::EndKey,
};

#[path = "context_bounds.rs"]
mod bounds;
#[path = "context_bytes.rs"]
mod bytes;
pub use bounds::{ContextSizes, ContextStats};
use bounds::{MAX_CLIENT_CONNS, halve};
use bytes::{median_ts, push_run};

/// An inbound request an outbound one was made for; resolved against server exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRef {
    /// A net/http handler that started at `ts` serving connection (local, remote).
    Handler {
        pid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        ts: u64,
    },
    /// A grpc-go handler of stream `stream` on connection (local, remote).
    Stream {
        pid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        stream: u32,
    },
    /// A thread that read on connection (local, remote) at `ts` and had not answered.
    Thread {
        pid: u32,
        tid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        ts: u64,
    },
}

/// What the contexts say about an outbound exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Made while serving this inbound request.
    Serving(ServerRef),
    /// Made outside any inbound request (a client program, a background job).
    NoServer,
    /// Not known yet (a gRPC call's return, which names its stream, has not arrived).
    NotYet,
    /// The goroutine inherited a request that had ended before this call was made (see the
    /// module overview): no parent, counted.
    Expired,
}

/// Goroutines a process's tables hold before those whose end is not reported are pruned.
const MAX_GOROUTINES: usize = 262_144;
/// How deep goroutine ancestry is followed.
const MAX_DEPTH: usize = 256;
/// Goroutines and handlers are forgotten this long after they end (a closed connection's end
/// and client uses: `END_GRACE_NS`).
const GRACE_NS: u64 = 30_000_000_000;

/// One handler run of a net/http serving goroutine (which serves a keep-alive connection's
/// requests one after another).
#[derive(Debug, Clone, Copy)]
struct HandlerRun {
    start: u64,
    /// When it ended, `OPEN` until then (see `end`): 8 bytes, not an `Option`'s 16, in a
    /// table that holds a run or two per connection of the last grace period.
    end_ns: u64,
    /// The connection it serves (this process's end).
    conn: EndKey,
    /// Seen in the bytes (a request read, ended by the first write back), not at `ServeHTTP`.
    from_bytes: bool,
}

/// A grpc-go stream's handler goroutine: the stream it serves until it exits.
#[derive(Debug, Clone, Copy)]
struct StreamRun {
    stream: u32,
    local: SocketAddr,
    remote: SocketAddr,
    /// When the handler goroutine exited.
    end: Option<u64>,
}

/// A handler run's end before it ended: no event time is this late.
const OPEN: u64 = u64::MAX;

impl HandlerRun {
    /// A run that started at `start` and has not ended.
    fn new(start: u64, conn: EndKey, from_bytes: bool) -> Self {
        Self {
            start,
            end_ns: OPEN,
            conn,
            from_bytes,
        }
    }

    fn end(&self) -> Option<u64> {
        (self.end_ns != OPEN).then_some(self.end_ns)
    }

    fn set_end(&mut self, ts: u64) {
        self.end_ns = ts;
    }

    fn open_at(&self, ts: u64) -> bool {
        self.start <= ts && self.end().is_none_or(|end| ts <= end)
    }
}

#[derive(Debug, Default)]
struct GoProcess {
    /// Goroutine → (the goroutine that started it, when).
    parent: HashMap<u64, (u64, u64)>,
    /// net/http handler runs by goroutine. A plain server's goroutines report no end (only
    /// those a handler started do): entries whose runs all ended a grace period ago are swept
    /// out (see `bytes::sweep_handlers`), so a server that starts a goroutine per connection
    /// does not fill the table up to its cap.
    handlers: HashMap<u64, Vec<HandlerRun>>,
    /// Handler entries left by the last sweep: the next sweeps when the table doubles.
    handlers_swept: usize,
    /// Accepted connections whose last read was one upper-case byte: net/http's background
    /// read (a one-byte read, on a goroutine of its own, while a handler runs on a keep-alive
    /// connection) may take a request's first byte, and the connection's goroutine then reads
    /// the rest (`ET /path ...`).
    first_bytes: HashMap<EndKey, u8>,
    /// grpc-go handler goroutines: the stream and connection they serve.
    stream_handlers: HashMap<u64, StreamRun>,
    /// (reader goroutine, stream) → connection, from the request headers it decoded.
    stream_conns: HashMap<(u64, u32), (SocketAddr, SocketAddr)>,
    /// Client requests by connection: (when, requesting goroutine), oldest first.
    client_uses: HashMap<EndKey, VecDeque<(u64, u64)>>,
    /// Unary gRPC calls by (connection, stream): the calling goroutine.
    grpc_calls: HashMap<(SocketAddr, SocketAddr, u32), u64>,
    /// Whether this program makes gRPC calls at all (then an outbound gRPC exchange waits for
    /// its call's return).
    makes_grpc_calls: bool,
    /// Goroutines that ended, to forget after the grace period.
    ended: VecDeque<(u64, u64)>,
    /// When the process exited: its state goes a grace period later (its last exchanges may
    /// still ask about it).
    exited_at: Option<u64>,
}

/// A thread serving a request: the connection it read it on and when.
#[derive(Debug, Clone, Copy)]
struct Serving {
    conn_id: u64,
    local: SocketAddr,
    remote: SocketAddr,
    ts: u64,
}

/// Every process's execution contexts. Every table is bounded (see `bounds`).
#[derive(Debug, Default)]
pub struct Contexts {
    go: HashMap<u32, GoProcess>,
    /// Connections this host accepted (server side), by connection id: when.
    accepted: HashMap<u64, u64>,
    /// (pid, tid) → the request that thread is serving.
    threads: HashMap<(u32, u32), Serving>,
    /// (pid, tid) → the last request that thread answered, and when it began its answer: an
    /// outbound exchange made while serving it may complete only later (a call in an unknown
    /// protocol ends at the next call or at its connection's close, see `protocol::turns`).
    served: HashMap<(u32, u32), (Serving, u64)>,
    /// Connections closed (when, pid, local, remote): their end and client uses are forgotten
    /// after `END_GRACE_NS`, not at once (the close itself may complete the connection's last
    /// exchange). The peers read the same queue (see `closed_ends`).
    closed: ClosedEnds,
    /// Processes that exited (when, pid): their Go state is dropped after the grace period.
    exited: VecDeque<(u64, u32)>,
    /// Connection ends (local, remote) this agent has seen events of, with the last one's time:
    /// a server span waits for its client only when the client's end is here (a peer the
    /// filters leave out, or an untraced one, never completes its side).
    ends: HashMap<EndKey, u64>,
    pub stats: ContextStats,
}

impl Contexts {
    /// Take in one event.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Conn(c) => {
                self.touch_end(EndKey::new(c.local, c.remote), c.ts_ns);
                match c.kind {
                    ConnKind::Accept => {
                        self.insert_accepted(c.conn_id, c.ts_ns);
                        // Time passes for the closed ends even when no close comes (lost).
                        self.forget_closed(c.ts_ns);
                    }
                    ConnKind::Close => {
                        self.accepted.remove(&c.conn_id);
                        self.push_closed(Closed {
                            at: c.ts_ns,
                            pid: c.pid,
                            end: EndKey::new(c.local, c.remote),
                        });
                    }
                    ConnKind::Connect => self.forget_closed(c.ts_ns),
                }
            }
            Event::Data(d) => {
                self.touch_end(EndKey::new(d.local, d.remote), d.ts_exit_ns);
                self.on_data(d);
            }
            _ => self.on_go_event(event),
        }
    }

    /// A non-Go thread that reads on an accepted connection serves a request until it writes
    /// on that connection; a Go goroutine that reads an HTTP/1 request likewise (see
    /// [`GoProcess::on_server_bytes`]).
    fn on_data(&mut self, d: &Data) {
        if !self.accepted.contains_key(&d.conn_id) {
            return;
        }
        if let Some(goid) = d.goid {
            self.go.entry(d.pid).or_default().on_server_bytes(goid, d);
            return;
        }
        let key = (d.pid, d.tid);
        match d.direction {
            Direction::Ingress => {
                let serving = self.threads.get(&key);
                // A new request: the first read after the last answer.
                if serving.is_none_or(|s| s.conn_id != d.conn_id) {
                    if serving.is_none() {
                        self.bound_threads();
                    }
                    self.threads.insert(
                        key,
                        Serving {
                            conn_id: d.conn_id,
                            local: d.local,
                            remote: d.remote,
                            ts: d.ts_exit_ns,
                        },
                    );
                }
            }
            Direction::Egress => {
                if self
                    .threads
                    .get(&key)
                    .is_some_and(|s| s.conn_id == d.conn_id)
                    && let Some(done) = self.threads.remove(&key)
                {
                    self.served.insert(key, (done, d.ts_enter_ns));
                }
            }
        }
    }

    /// A process exited: its threads' state goes now, its Go state after the grace period.
    fn on_exit(&mut self, pid: u32, ts_ns: u64) {
        self.threads.retain(|(p, _), _| *p != pid);
        self.served.retain(|(p, _), _| *p != pid);
        if let Some(p) = self.go.get_mut(&pid) {
            p.exited_at = Some(ts_ns);
            self.exited.push_back((ts_ns, pid));
        }
        self.forget_exited(ts_ns);
    }

    /// Goroutine ancestry, handlers, gRPC streams and calls.
    fn on_go_event(&mut self, event: &Event) {
        match event {
            Event::GoServe(g) if !g.client => {
                let p = self.go.entry(g.pid).or_default();
                if !g.start
                    && let Some(run) = p
                        .handlers
                        .get_mut(&g.goid)
                        .and_then(|r| r.iter_mut().rev().find(|r| !r.from_bytes))
                    && run.end().is_none()
                {
                    run.set_end(g.ts_ns);
                }
                if !g.start
                    && let Some(run) = p.stream_handlers.get_mut(&g.goid)
                    && run.end.is_none()
                {
                    run.end = Some(g.ts_ns);
                }
            }
            Event::GoConnUse(u) => self.on_conn_use(u),
            // Observed at a call, not seen happen: the spawn, where its probe saw it, is
            // exact (and earlier), so it is kept.
            Event::GoSpawn(s) if s.observed => {
                let p = self.go.entry(s.pid).or_default();
                if p.parent.len() >= MAX_GOROUTINES {
                    // Observed goroutines' ends are not reported: forget the older half of the
                    // links (a call such a goroutine makes later starts its own trace). Halving
                    // keeps the cost per event constant.
                    let cutoff = median_ts(p.parent.values().map(|(_, ts)| *ts));
                    p.parent.retain(|_, (_, ts)| *ts >= cutoff);
                }
                p.parent
                    .entry(s.child_goid)
                    .or_insert((s.parent_goid, s.ts_ns));
            }
            Event::GoSpawn(s) => {
                let p = self.go.entry(s.pid).or_default();
                p.parent.insert(s.child_goid, (s.parent_goid, s.ts_ns));
                if s.stream_id != 0
                    && let Some((local, remote)) =
                        p.stream_conns.get(&(s.parent_goid, s.stream_id)).copied()
                {
                    p.stream_handlers.insert(
                        s.child_goid,
                        StreamRun {
                            stream: s.stream_id,
                            local,
                            remote,
                            end: None,
                        },
                    );
                }
            }
            Event::GoExit(e) => {
                let p = self.go.entry(e.pid).or_default();
                if let Some(run) = p.stream_handlers.get_mut(&e.goid) {
                    run.end = Some(e.ts_ns);
                }
                p.ended.push_back((e.ts_ns, e.goid));
                while let Some(&(ts, goid)) = p.ended.front() {
                    if e.ts_ns.saturating_sub(ts) < GRACE_NS {
                        break;
                    }
                    p.ended.pop_front();
                    p.parent.remove(&goid);
                    p.handlers.remove(&goid);
                    p.stream_handlers.remove(&goid);
                }
            }
            Event::GoHeaders(h) if h.source == HeadersSource::ServerReceived => {
                if let Some((local, remote)) = h.conn.endpoints {
                    let p = self.go.entry(h.pid).or_default();
                    if p.stream_conns.len() > 65_536 {
                        p.stream_conns.clear();
                    }
                    p.stream_conns
                        .insert((h.goid, h.stream_id), (local, remote));
                }
            }
            // A stream opened, or a unary call returned: the stream's requesting goroutine.
            Event::GoGrpcCall(c) if c.phase != CallPhase::Start => {
                let p = self.go.entry(c.pid).or_default();
                p.makes_grpc_calls = true;
                if let Some((local, remote)) = c.conn.endpoints {
                    if p.grpc_calls.len() > 65_536 {
                        p.grpc_calls.clear();
                    }
                    p.grpc_calls.insert((local, remote, c.stream_id), c.goid);
                }
            }
            Event::GoGrpcCall(c) => {
                self.go.entry(c.pid).or_default().makes_grpc_calls = true;
            }
            Event::Exec(e) => {
                self.go.remove(&e.pid);
            }
            Event::Exit(e) => self.on_exit(e.pid, e.ts_ns),
            _ => {}
        }
    }

    /// Drop the Go state of processes that exited more than the grace period ago, unless the
    /// pid runs a new program since (its `exec` reset the state).
    fn forget_exited(&mut self, now: u64) {
        while let Some(&(ts, pid)) = self.exited.front() {
            if now.saturating_sub(ts) < GRACE_NS {
                break;
            }
            self.exited.pop_front();
            if self.go.get(&pid).is_some_and(|p| p.exited_at == Some(ts)) {
                self.go.remove(&pid);
            }
        }
    }

    /// Whether events of the connection end (local, remote) reached this agent.
    #[must_use]
    pub(super) fn end_seen(&self, end: EndKey) -> bool {
        self.ends.contains_key(&end)
    }

    fn on_conn_use(&mut self, u: &GoConnUse) {
        let Some((local, remote)) = u.conn.endpoints else {
            return;
        };
        let p = self.go.entry(u.pid).or_default();
        match u.role {
            // A handler served over HTTP/2 serves its stream, until its `ServeHTTP` returns.
            ConnRole::Server if let Some(stream) = u.stream_id => {
                p.stream_handlers.insert(
                    u.goid,
                    StreamRun {
                        stream,
                        local,
                        remote,
                        end: None,
                    },
                );
            }
            ConnRole::Server => {
                p.sweep_handlers(u.ts_ns);
                push_run(
                    p.handlers
                        .entry(u.goid)
                        .or_insert_with(|| Vec::with_capacity(1)),
                    HandlerRun::new(u.ts_ns, EndKey::new(local, remote), false),
                );
            }
            ConnRole::Client => {
                if p.client_uses.len() >= MAX_CLIENT_CONNS
                    && !p.client_uses.contains_key(&EndKey::new(local, remote))
                {
                    self.stats.over_cap += halve(&mut p.client_uses, |uses| {
                        uses.back().map_or(0, |(ts, _)| *ts)
                    });
                }
                let uses = p.client_uses.entry(EndKey::new(local, remote)).or_default();
                uses.push_back((u.ts_ns, u.goid));
                while uses
                    .front()
                    .is_some_and(|(ts, _)| u.ts_ns.saturating_sub(*ts) > GRACE_NS)
                    || uses.len() > 256
                {
                    uses.pop_front();
                }
            }
        }
    }

    /// The goroutine that started `goid` in process `pid`, when known.
    #[must_use]
    pub fn parent_goroutine(&self, pid: u32, goid: u64) -> Option<u64> {
        self.go
            .get(&pid)?
            .parent
            .get(&goid)
            .map(|(parent, _)| *parent)
    }

    /// Which inbound request, if any, an outbound exchange was made for.
    #[must_use]
    pub fn server_of(&self, x: &ConnExchange) -> Lookup {
        let origin = &x.exchange.origin;
        if let Some(p) = self.go.get(&x.pid) {
            let Some(goid) = Self::requesting_goroutine(p, x) else {
                return Lookup::NotYet;
            };
            return goid.map_or(Lookup::NoServer, |g| {
                Self::handler_of(x.pid, p, g, x.exchange.start_ns)
            });
        }
        self.server_of_thread(x.pid, origin.tid, x.exchange.start_ns)
    }

    /// The goroutine that asked for this outbound request: Some(None) when unknown, None when
    /// its gRPC call has not returned yet.
    #[expect(
        clippy::option_option,
        reason = "not yet / unknown / known are three answers"
    )]
    fn requesting_goroutine(p: &GoProcess, x: &ConnExchange) -> Option<Option<u64>> {
        let stream = x.exchange.detail.stream_id();
        if let Some(stream) = stream {
            // A unary gRPC call names its stream when it returns (even when the bytes' HPACK
            // state was unknown and the exchange could not tell it was gRPC).
            if let Some(goid) = p.grpc_calls.get(&(x.local, x.remote, stream)) {
                return Some(Some(*goid));
            }
            if matches!(x.exchange.detail, Detail::Grpc(_)) {
                return if p.makes_grpc_calls {
                    None
                } else {
                    Some(x.exchange.origin.goid)
                };
            }
        }
        // net/http: the last roundTrip on this connection that began before the request's first
        // byte was written (the pooled connection's own goroutine writes it).
        let by_use = p
            .client_uses
            .get(&EndKey::new(x.local, x.remote))
            .and_then(|uses| {
                uses.iter()
                    .rev()
                    .find(|(ts, _)| *ts <= x.exchange.start_ns)
                    .map(|(_, goid)| *goid)
            });
        Some(by_use.or(x.exchange.origin.goid))
    }

    /// The request a goroutine works for at `at`: its own handler run, else the request its
    /// nearest handler ancestor was serving when the line of goroutines down to it was started,
    /// provided that request is still open at `at` (see the module overview).
    fn handler_of(pid: u32, p: &GoProcess, goid: u64, at: u64) -> Lookup {
        let mut g = goid;
        // When `g` had to be serving the request: the call itself for the requesting goroutine,
        // else the moment it started the child this walk came up from.
        let mut when = at;
        for _ in 0..MAX_DEPTH {
            if let Some(runs) = p.handlers.get(&g) {
                let Some(run) = runs.iter().rev().find(|r| r.start <= when) else {
                    return Lookup::NoServer;
                };
                if !run.open_at(when) {
                    // Started between two requests of a keep-alive connection: none.
                    return if when == at {
                        Lookup::Expired
                    } else {
                        Lookup::NoServer
                    };
                }
                if !run.open_at(at) {
                    return Lookup::Expired;
                }
                return Lookup::Serving(ServerRef::Handler {
                    pid,
                    local: run.conn.local(),
                    remote: run.conn.remote(),
                    ts: run.start,
                });
            }
            if let Some(run) = p.stream_handlers.get(&g) {
                if run.end.is_some_and(|end| end < at) {
                    return Lookup::Expired;
                }
                return Lookup::Serving(ServerRef::Stream {
                    pid,
                    local: run.local,
                    remote: run.remote,
                    stream: run.stream,
                });
            }
            match p.parent.get(&g) {
                Some(&(parent, spawned)) if parent != g => {
                    g = parent;
                    when = spawned;
                }
                _ => break,
            }
        }
        Lookup::NoServer
    }
}

/// Lookups for failed calls, which have no exchange: the caller is known directly.
impl Contexts {
    /// Which inbound request goroutine `goid` of `pid` worked for at `at`.
    #[must_use]
    pub fn server_of_goroutine(&self, pid: u32, goid: u64, at: u64) -> Lookup {
        self.go
            .get(&pid)
            .map_or(Lookup::NoServer, |p| Self::handler_of(pid, p, goid, at))
    }

    /// Which inbound request thread `tid` of `pid` is serving (asked when the call fails:
    /// thread state is transient).
    #[must_use]
    pub fn server_of_thread(&self, pid: u32, tid: u32, at: u64) -> Lookup {
        let serving = match self.threads.get(&(pid, tid)) {
            Some(s) if s.ts <= at => Some(s),
            // Answered since: the call began while it was still being served.
            _ => self
                .served
                .get(&(pid, tid))
                .filter(|(s, answered)| s.ts <= at && at <= *answered)
                .map(|(s, _)| s),
        };
        serving.map_or(Lookup::NoServer, |s| {
            Lookup::Serving(ServerRef::Thread {
                pid,
                tid,
                local: s.local,
                remote: s.remote,
                ts: s.ts,
            })
        })
    }
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
