//! Failed outbound calls: calls that ended before any response, often before any byte, so no
//! exchange (and no span) came out of the bytes. They are what users open a trace to find.
//!
//! - Go `net/http` and grpc-go: the call's own uprobes say what was asked (method, URL or gRPC
//!   method), on which goroutine, and that it failed (`roundTrip` returned no response; `Invoke`
//!   returned a non-OK code without ever opening a stream). Why it failed comes from the kernel:
//!   the connection the request used closed with a socket error (a reset), or a connect of the
//!   process failed during the call (refused, timed out). grpc-go connects on its own goroutines,
//!   and fails calls fast with the last connection error while it backs off, so a gRPC call takes
//!   the process's latest transport failure from a while before it.
//! - Other programs: a connect that failed (`SYN_SENT → CLOSE`) is a span of its own, on the
//!   thread that made it (whose serving request is its parent). A call that wrote its request
//!   before failing already is an exchange (no response), whose connection's socket error names
//!   the failure.
//!
//! A Go call that did produce an exchange (its request went out on a connection) is left to the
//! exchange's span, never doubled.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use crate::{
    protocol::Grpc,
    source::{
        CallPhase, ConnKind, ConnRole, Event, GoConnUse, GoExit, GoGrpcCall, GoHeaders, GoServe,
        GoSpawn,
    },
    span::{ErrorType, GrpcSpan, HttpSpan, Payload},
};

/// A failed Go call waits this long (event time) after it returned for the close and the
/// exchange of its connection, which follow the error at once.
const SETTLE_NS: u64 = 200_000_000;
/// A failed connect of a process not (yet) known as Go waits this long (event time) before it
/// becomes a span of its own: a Go program started after the agent may connect before its
/// uprobes are attached (the agent says so, `mark_go`) or report anything, and then its failed
/// connects belong to its calls.
pub const GO_HOLD_NS: u64 = 2_000_000_000;
/// How far back a call looks for its process's transport failure (grpc-go fails calls with the
/// error of its last connection attempt, made before the call during its backoff).
const LOOKBACK_NS: u64 = 30_000_000_000;
/// Transport failures kept per process.
const MAX_FAILURES: usize = 64;
/// Calls in flight, closed connections' errors and exchange starts kept at most (the tables
/// start over beyond it; entries are used within milliseconds).
const MAX_ENTRIES: usize = 65_536;
/// gRPC status codes a failed call may carry.
const GRPC_DEADLINE_EXCEEDED: u32 = 4;
const GRPC_UNAVAILABLE: u32 = 14;

/// A failure below the protocol in a process: a failed connect, or a connection that ended with
/// a socket error.
#[derive(Debug, Clone, Copy)]
struct Transport {
    ts: u64,
    local: SocketAddr,
    remote: SocketAddr,
    error: ErrorType,
}

/// Who made a failed call: a goroutine (Go) or a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Goroutine(u64),
    Thread(u32),
}

/// A failed outbound call, ready to become a client span once its parent is found.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub pid: u32,
    pub comm: String,
    pub caller: Caller,
    pub start_ns: u64,
    pub end_ns: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub payload: Payload,
    pub error: ErrorType,
}

/// A Go call that returned without a response, waiting for its evidence.
#[derive(Debug, Clone)]
struct Waiting {
    pid: u32,
    goid: u64,
    start_ns: u64,
    end_ns: u64,
    /// The peer the call named (an `ip:port` host), if it named one.
    target: Option<SocketAddr>,
    /// The connection its request went out on (net/http), if it got one.
    conn: Option<(SocketAddr, SocketAddr)>,
    payload: Payload,
    /// What the call itself said (a gRPC deadline), when the kernel has nothing better.
    fallback: ErrorType,
}

/// A net/http call in flight.
#[derive(Debug, Clone)]
struct HttpCall {
    start_ns: u64,
    method: String,
    path: String,
    host: String,
    conn: Option<(SocketAddr, SocketAddr)>,
}

/// Tracks calls and transport failures; yields failed calls.
#[derive(Debug, Default)]
pub struct Failures {
    transport: HashMap<u32, VecDeque<Transport>>,
    /// Socket errors of connections that ended with one, by (local, remote).
    closed: HashMap<(SocketAddr, SocketAddr), ErrorType>,
    http_calls: HashMap<(u32, u64), HttpCall>,
    grpc_calls: HashMap<(u32, u64), (u64, String)>,
    /// Connections whose Go call returned without a response (the caller gave up: its timeout
    /// or deadline).
    gave_up: HashSet<(SocketAddr, SocketAddr)>,
    /// Client exchanges' request starts by (pid, local, remote).
    exchanges: HashMap<(u32, SocketAddr, SocketAddr), VecDeque<u64>>,
    /// Processes that reported Go events: their calls come from the uprobes.
    go_pids: HashSet<u32>,
    waiting: Vec<Waiting>,
    ready: Vec<Failed>,
    comms: HashMap<u32, String>,
}

impl Failures {
    /// Take in one event.
    pub fn on_event(&mut self, event: &Event) {
        // Per-process tables are keyed by pid; a machine's pids come and go.
        if self.comms.len() >= MAX_ENTRIES {
            self.comms.clear();
        }
        if self.go_pids.len() >= MAX_ENTRIES {
            self.go_pids.clear();
        }
        match event {
            Event::ConnectFailed(c) => {
                self.comms.insert(c.pid, c.comm.clone());
                // The program gave up on a connect still waiting for its SYN-ACK: its timeout.
                let error = c.errno.map_or(ErrorType::Timeout, ErrorType::from_errno);
                self.transport_failure(c.pid, c.ts_ns, c.local, c.remote, error);
                if self.go_pids.contains(&c.pid) {
                    // A Go call claims it when it returns.
                    return;
                }
                self.ready.push(Failed {
                    pid: c.pid,
                    comm: c.comm.clone(),
                    caller: Caller::Thread(c.tid),
                    start_ns: c.ts_ns,
                    end_ns: c.ts_ns,
                    local: c.local,
                    remote: c.remote,
                    payload: Payload::Connect,
                    error,
                });
            }
            Event::Conn(c) => {
                self.comms.insert(c.pid, c.comm.clone());
                if c.kind == ConnKind::Close
                    && let Some(errno) = c.errno
                {
                    let error = ErrorType::from_errno(errno);
                    self.transport_failure(c.pid, c.ts_ns, c.local, c.remote, error);
                    if self.closed.len() >= MAX_ENTRIES {
                        self.closed.clear();
                    }
                    self.closed.insert((c.local, c.remote), error);
                }
            }
            Event::GoServe(g) if g.client => {
                self.go_pids.insert(g.pid);
                self.on_http_call(g);
            }
            Event::GoConnUse(u) if u.role == ConnRole::Client => {
                self.go_pids.insert(u.pid);
                if let Some(call) = self.http_calls.get_mut(&(u.pid, u.goid)) {
                    call.conn = u.conn.endpoints;
                }
            }
            Event::GoGrpcCall(c) => {
                self.go_pids.insert(c.pid);
                self.on_grpc_call(c);
            }
            Event::GoServe(GoServe { pid, .. })
            | Event::GoSpawn(GoSpawn { pid, .. })
            | Event::GoExit(GoExit { pid, .. })
            | Event::GoConnUse(GoConnUse { pid, .. })
            | Event::GoHeaders(GoHeaders { pid, .. }) => {
                self.go_pids.insert(*pid);
            }
            Event::Exec(e) => {
                self.go_pids.remove(&e.pid);
                self.transport.remove(&e.pid);
                self.comms.insert(e.pid, e.comm.clone());
            }
            // Per-pid state is bounded by MAX_ENTRIES; a call that failed just before its
            // process exited is already out.
            Event::Data(_) | Event::Exit(_) => {}
        }
    }

    /// A client exchange completed: the Go call it belongs to (if it failed) is its span.
    pub fn on_client_exchange(&mut self, pid: u32, local: SocketAddr, remote: SocketAddr, at: u64) {
        // Only a Go call's failure is judged by the exchanges of its connection: other programs'
        // client connections (one entry each, never closed here) would fill the table for
        // nothing.
        if !self.go_pids.contains(&pid) {
            return;
        }
        if self.exchanges.len() >= MAX_ENTRIES {
            self.exchanges.clear();
        }
        let starts = self.exchanges.entry((pid, local, remote)).or_default();
        if starts.len() >= 64 {
            starts.pop_front();
        }
        starts.push_back(at);
    }

    /// `pid` runs a Go program the uprobes attached to.
    pub fn mark_go(&mut self, pid: u32) {
        self.go_pids.insert(pid);
    }

    /// Whether `pid` reported Go events (its failed connects belong to its calls).
    #[must_use]
    pub fn is_go(&self, pid: u32) -> bool {
        self.go_pids.contains(&pid)
    }

    /// The socket error a client connection ended with: why its exchange got no response.
    #[must_use]
    pub fn close_error(&self, local: SocketAddr, remote: SocketAddr) -> Option<ErrorType> {
        self.closed.get(&(local, remote)).copied()
    }

    /// Why a client exchange on (local, remote) got no response: the socket error its
    /// connection ended with, else a timeout when the Go call it served returned without one
    /// (net/http closes the connection of a call that timed out or was cancelled).
    #[must_use]
    pub fn no_response_cause(&self, local: SocketAddr, remote: SocketAddr) -> Option<ErrorType> {
        self.close_error(local, remote).or_else(|| {
            self.gave_up
                .contains(&(local, remote))
                .then_some(ErrorType::Timeout)
        })
    }

    /// Failed calls whose evidence is in by event time `now` (everything at `u64::MAX`).
    pub fn take_ready(&mut self, now: u64) -> Vec<Failed> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| now >= w.end_ns.saturating_add(SETTLE_NS));
        self.waiting = later;
        for w in due {
            if let Some(failed) = self.resolve(w) {
                self.ready.push(failed);
            }
        }
        std::mem::take(&mut self.ready)
    }

    fn on_http_call(&mut self, g: &GoServe) {
        let key = (g.pid, g.goid);
        if g.start {
            if self.http_calls.len() >= MAX_ENTRIES {
                self.http_calls.clear();
            }
            self.http_calls.insert(
                key,
                HttpCall {
                    start_ns: g.ts_ns,
                    method: g.method.clone(),
                    path: g.path.clone(),
                    host: g.host.clone(),
                    conn: None,
                },
            );
            return;
        }
        let Some(call) = self.http_calls.remove(&key) else {
            return;
        };
        // A status means a response came: the exchange's span says the rest.
        if g.status.is_some() {
            return;
        }
        if let Some(conn) = call.conn {
            if self.gave_up.len() >= MAX_ENTRIES {
                self.gave_up.clear();
            }
            self.gave_up.insert(conn);
        }
        self.waiting.push(Waiting {
            pid: g.pid,
            goid: g.goid,
            start_ns: call.start_ns,
            end_ns: g.ts_ns,
            target: call.host.parse().ok(),
            conn: call.conn,
            payload: Payload::Http(HttpSpan {
                method: call.method,
                target: call.path,
                host: (!call.host.is_empty()).then_some(call.host),
                status: None,
                version: None,
                user_agent: None,
                route: None,
            }),
            fallback: ErrorType::NoResponse,
        });
    }

    fn on_grpc_call(&mut self, c: &GoGrpcCall) {
        let key = (c.pid, c.goid);
        match c.phase {
            CallPhase::Start => {
                if self.grpc_calls.len() >= MAX_ENTRIES {
                    self.grpc_calls.clear();
                }
                self.grpc_calls.insert(key, (c.ts_ns, c.method.clone()));
            }
            CallPhase::StreamOpened => {}
            CallPhase::End => {
                let Some((start_ns, method)) = self.grpc_calls.remove(&key) else {
                    return;
                };
                // OK, or a stream was opened: the stream's exchange is the span.
                if c.status == Some(0) || c.stream_id != 0 {
                    return;
                }
                let status = c.status.unwrap_or(GRPC_UNAVAILABLE);
                let (service, method) = Grpc::split_path(&method)
                    .map(|(s, m)| (s.to_owned(), m.to_owned()))
                    .unwrap_or_default();
                self.waiting.push(Waiting {
                    pid: c.pid,
                    goid: c.goid,
                    start_ns,
                    end_ns: c.ts_ns,
                    target: None,
                    conn: None,
                    payload: Payload::Grpc(GrpcSpan {
                        service,
                        method,
                        status: Some(status),
                        message: None,
                        authority: None,
                    }),
                    fallback: if status == GRPC_DEADLINE_EXCEEDED {
                        ErrorType::Timeout
                    } else {
                        ErrorType::Other
                    },
                });
            }
        }
    }

    fn transport_failure(
        &mut self,
        pid: u32,
        ts: u64,
        local: SocketAddr,
        remote: SocketAddr,
        error: ErrorType,
    ) {
        if self.transport.len() >= MAX_ENTRIES {
            self.transport.clear();
        }
        let list = self.transport.entry(pid).or_default();
        if list.len() >= MAX_FAILURES {
            list.pop_front();
        }
        list.push_back(Transport {
            ts,
            local,
            remote,
            error,
        });
    }

    /// What a Go call that returned without a response becomes: nothing when its request made
    /// an exchange; otherwise a failed call with the failure the kernel saw.
    fn resolve(&mut self, w: Waiting) -> Option<Failed> {
        let comm = self.comms.get(&w.pid).cloned().unwrap_or_default();
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let lookback = match w.payload {
            Payload::Grpc(_) => LOOKBACK_NS,
            _ => 0,
        };
        let mut failed = Failed {
            pid: w.pid,
            comm,
            caller: Caller::Goroutine(w.goid),
            start_ns: w.start_ns,
            end_ns: w.end_ns,
            local: unspecified,
            remote: w.target.unwrap_or(unspecified),
            payload: w.payload,
            error: w.fallback,
        };
        let mut peer = w.target;
        if let Some((local, remote)) = w.conn {
            let made_exchange = self
                .exchanges
                .get(&(w.pid, local, remote))
                .is_some_and(|s| s.iter().any(|t| (w.start_ns..=w.end_ns).contains(t)));
            if made_exchange {
                return None;
            }
            if let Some(error) = self.close_error(local, remote) {
                failed.local = local;
                failed.remote = remote;
                failed.error = error;
                return Some(failed);
            }
            // A connection reset before net/http read its endpoints names no local port (the
            // kernel released it): find its failure by the peer instead.
            peer = Some(remote);
            if local.port() != 0 {
                failed.local = local;
            }
            failed.remote = remote;
        }
        // The process's latest transport failure during the call (to the call's peer when it
        // named one).
        let from = w.start_ns.saturating_sub(lookback);
        let found = self.transport.get(&w.pid).and_then(|list| {
            list.iter()
                .rev()
                .filter(|t| (from..=w.end_ns).contains(&t.ts))
                .find(|t| peer.is_none_or(|peer| peer == t.remote))
                .copied()
        });
        if let Some(t) = found {
            failed.local = t.local;
            failed.remote = t.remote;
            failed.error = t.error;
        }
        // The status description says why, as grpc-go's own error does.
        if let Payload::Grpc(g) = &mut failed.payload {
            g.message = Some(failed.error.describe().to_owned());
        }
        Some(failed)
    }
}
