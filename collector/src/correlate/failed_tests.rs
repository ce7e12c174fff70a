//! Failed outbound calls on hand-made event streams: which span each failure becomes, its
//! `error.type`, and its parent (a Go handler through goroutine ancestry, or the thread serving
//! a request). The privileged tests check the same on real programs.

use std::net::SocketAddr;

use super::*;
use crate::{
    event::AttachMode,
    protocol::{Detail, Flags, Http, HttpVersion, Interesting, Origin},
    source::{
        CallPhase, Conn, ConnKind, ConnRole, Data, GoConnUse, GoConnection, GoGrpcCall, GoServe,
        GoSpawn,
    },
    span::ErrorType,
};

const CLIENT: &str = "127.0.0.1:40000";
const SERVER: &str = "127.0.0.1:8080";
/// The call's own end (this process's source port) and the port nothing listens on.
const OUT_LOCAL: &str = "127.0.0.1:45000";
const CLOSED: &str = "127.0.0.1:9";
const MS: u64 = 1_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn correlator() -> Correlator {
    Correlator::new(10_000 * MS, IdGenerator::with_seed(7))
}

fn conn(kind: ConnKind, pid: u32, tid: u32, local: &str, remote: &str, ts_ns: u64) -> Conn {
    Conn {
        kind,
        pid,
        tid,
        comm: format!("p{pid}"),
        conn_id: u64::from(pid) * 100,
        local: addr(local),
        remote: addr(remote),
        ts_ns,
        mode: AttachMode::Tracepoint,
        errno: None,
    }
}

fn refused(pid: u32, tid: u32, ts_ns: u64) -> Event {
    Event::ConnectFailed(Conn {
        errno: Some(111),
        ..conn(ConnKind::Connect, pid, tid, OUT_LOCAL, CLOSED, ts_ns)
    })
}

fn go_client(pid: u32, goid: u64, start: bool, status: Option<u16>, ts_ns: u64) -> Event {
    Event::GoServe(GoServe {
        client: true,
        start,
        pid,
        tid: pid,
        goid,
        method: if start { "GET".into() } else { String::new() },
        path: if start {
            "/hello".into()
        } else {
            String::new()
        },
        host: if start { CLOSED.into() } else { String::new() },
        status,
        server: 0,
        ts_ns,
    })
}

fn conn_use(role: ConnRole, pid: u32, goid: u64, local: &str, remote: &str, ts_ns: u64) -> Event {
    Event::GoConnUse(GoConnUse {
        role,
        stream_id: None,
        pid,
        tid: pid,
        goid,
        conn: GoConnection {
            fd: 5,
            endpoints: Some((addr(local), addr(remote))),
        },
        ts_ns,
    })
}

/// An HTTP/1 exchange of `pid` on (local, remote).
fn exchange(
    pid: u32,
    dir: Direction,
    (local, remote): (&str, &str),
    tid: u32,
    times: (u64, u64),
    no_response: bool,
) -> ConnExchange {
    ConnExchange {
        conn_id: u64::from(pid),
        pid,
        comm: format!("p{pid}"),
        local: addr(local),
        remote: addr(remote),
        exchange: Exchange {
            request_direction: dir,
            start_ns: times.0,
            origin: Origin {
                seq: 1,
                tid,
                goid: None,
            },
            end_ns: times.1,
            request_bytes: 10,
            response_bytes: if no_response { 0 } else { 10 },
            wire: crate::protocol::WireSeqs::default(),
            detail: Detail::Http(Http {
                version: Some(HttpVersion::Http11),
                method: "GET".into(),
                target: "/call".into(),
                host: None,
                headers: Interesting::default(),
                status: (!no_response).then_some(502),
                stream_id: None,
            }),
            flags: Flags {
                no_response,
                ..Flags::default()
            },
        },
    }
}

fn run(c: &mut Correlator, events: &[Event], exchanges: Vec<ConnExchange>) -> Vec<Span> {
    for e in events {
        c.on_event(e);
    }
    for x in exchanges {
        c.on_exchange(x);
    }
    let mut out = Vec::new();
    c.advance_clock(10 * 1_000 * MS);
    c.settle(&mut out);
    out
}

#[test]
fn a_go_call_to_a_closed_port_is_a_client_span_under_the_handler_of_its_goroutine() {
    let mut c = correlator();
    let pid = 10;
    let events = [
        // Handler goroutine 3 serves a request; its child 6 makes the call.
        conn_use(ConnRole::Server, pid, 3, SERVER, CLIENT, 100 * MS),
        Event::GoSpawn(GoSpawn {
            pid,
            tid: pid,
            stream_id: 0,
            parent_goid: 3,
            child_goid: 6,
            ts_ns: 101 * MS,
            observed: false,
        }),
        go_client(pid, 6, true, None, 102 * MS),
        refused(pid, pid, 103 * MS),
        go_client(pid, 6, false, None, 104 * MS),
    ];
    let server = exchange(
        pid,
        Direction::Ingress,
        (SERVER, CLIENT),
        pid,
        (99 * MS, 105 * MS),
        false,
    );
    let out = run(&mut c, &events, vec![server]);
    assert_eq!(out.len(), 2, "{out:#?}");
    let (server, call) = (&out[0], &out[1]);
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(call.kind, SpanKind::Client);
    // A client span is named by its method: the callee is not there to name a route.
    assert_eq!(call.name(), "GET");
    assert_eq!(call.error, Some(ErrorType::ConnectionRefused));
    assert_eq!(call.error_type().as_deref(), Some("connection_refused"));
    assert!(call.is_error());
    assert_eq!(call.parent_span_id, Some(server.span_id));
    assert_eq!(call.trace_id, server.trace_id);
    assert_eq!(call.link, ParentLink::Goroutine);
    assert_eq!((call.local, call.remote), (addr(OUT_LOCAL), addr(CLOSED)));
    assert_eq!((call.start_ns, call.end_ns), (102 * MS, 104 * MS));
    assert_eq!(
        c.stats.failed_calls, 1,
        "the connect is the call's, not a span of its own"
    );
}

#[test]
fn a_failed_connect_of_a_thread_serving_a_request_is_a_connect_span_under_that_request() {
    let mut c = correlator();
    let (pid, tid) = (20, 21);
    let data = |direction, ts: u64| {
        Event::Data(Data {
            direction,
            pid,
            tid,
            comm: "python3".into(),
            fd: 4,
            conn_id: 2000,
            local: addr(SERVER),
            remote: addr(CLIENT),
            bytes: 10,
            seq: 1,
            goid: None,
            ts_enter_ns: ts,
            ts_exit_ns: ts,
            payload: Vec::new(),
            windows: Vec::new(),
            tls: false,
        })
    };
    let events = [
        Event::Conn(conn(ConnKind::Accept, pid, pid, SERVER, CLIENT, 90 * MS)),
        data(Direction::Ingress, 100 * MS),
        refused(pid, tid, 103 * MS),
        data(Direction::Egress, 104 * MS),
    ];
    let server = exchange(
        pid,
        Direction::Ingress,
        (SERVER, CLIENT),
        tid,
        (100 * MS, 104 * MS),
        false,
    );
    let out = run(&mut c, &events, vec![server]);
    assert_eq!(out.len(), 2, "{out:#?}");
    let (server, call) = (&out[0], &out[1]);
    assert_eq!(call.name(), "connect");
    assert_eq!(call.payload, Payload::Connect);
    assert_eq!(call.error_type().as_deref(), Some("connection_refused"));
    assert_eq!(call.parent_span_id, Some(server.span_id));
    assert_eq!(call.link, ParentLink::Thread);
    assert!(
        call.attributes(crate::span::AttributeOptions::default())
            .contains(&("server.port", crate::span::Value::Int(9)))
    );
}

#[test]
fn a_failed_connect_outside_any_request_is_a_root() {
    let mut c = correlator();
    let out = run(&mut c, &[refused(30, 30, 5 * MS)], Vec::new());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].link, ParentLink::Root);
    assert_eq!(out[0].parent_span_id, None);
}

#[test]
fn a_grpc_call_without_a_stream_takes_its_processs_last_transport_failure() {
    let mut c = correlator();
    let pid = 40;
    let call = |phase, status, ts_ns| {
        Event::GoGrpcCall(GoGrpcCall {
            phase,
            pid,
            tid: pid,
            goid: 1,
            method: if phase == CallPhase::Start {
                "/wirespan.echo.Echo/Say".into()
            } else {
                String::new()
            },
            status,
            stream_id: 0,
            conn: GoConnection {
                fd: -1,
                endpoints: None,
            },
            ts_ns,
        })
    };
    let events = [
        // grpc-go's own goroutine connected; the peer reset the connection.
        Event::Conn(Conn {
            errno: Some(104),
            ..conn(ConnKind::Close, pid, pid, OUT_LOCAL, CLOSED, 50 * MS)
        }),
        call(CallPhase::Start, None, 100 * MS),
        call(CallPhase::End, Some(14), 101 * MS),
    ];
    let out = run(&mut c, &events, Vec::new());
    assert_eq!(out.len(), 1, "{out:#?}");
    let span = &out[0];
    assert_eq!(span.name(), "wirespan.echo.Echo/Say");
    assert_eq!(span.error_type().as_deref(), Some("connection_reset"));
    assert_eq!(span.status_message(), "UNAVAILABLE: connection reset");
    assert_eq!(span.remote, addr(CLOSED));
    assert_eq!(span.link, ParentLink::Root);
}

#[test]
fn a_failed_go_call_whose_request_went_out_is_its_exchanges_span_once() {
    let mut c = correlator();
    let pid = 50;
    let events = [
        go_client(pid, 6, true, None, 100 * MS),
        conn_use(ConnRole::Client, pid, 6, OUT_LOCAL, CLOSED, 101 * MS),
        Event::Conn(Conn {
            errno: Some(104),
            ..conn(ConnKind::Close, pid, pid, OUT_LOCAL, CLOSED, 103 * MS)
        }),
        go_client(pid, 6, false, None, 104 * MS),
    ];
    let client = exchange(
        pid,
        Direction::Egress,
        (OUT_LOCAL, CLOSED),
        pid,
        (102 * MS, 103 * MS),
        true,
    );
    let out = run(&mut c, &events, vec![client]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].error, Some(ErrorType::ConnectionReset));
    assert_eq!(out[0].status_message(), "connection reset");
    assert_eq!(c.stats.failed_calls, 0);
}

#[test]
fn a_go_call_reset_before_its_request_was_written_names_its_connection() {
    let mut c = correlator();
    let pid = 60;
    let events = [
        go_client(pid, 6, true, None, 100 * MS),
        conn_use(ConnRole::Client, pid, 6, OUT_LOCAL, CLOSED, 101 * MS),
        Event::Conn(Conn {
            errno: Some(104),
            ..conn(ConnKind::Close, pid, pid, OUT_LOCAL, CLOSED, 103 * MS)
        }),
        go_client(pid, 6, false, None, 104 * MS),
    ];
    let out = run(&mut c, &events, Vec::new());
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].name(), "GET");
    assert_eq!(out[0].error_type().as_deref(), Some("connection_reset"));
    assert_eq!(out[0].local, addr(OUT_LOCAL));
}

#[test]
fn a_failed_connect_of_a_program_that_turns_out_go_is_left_to_its_calls() {
    // A Go program started after the agent connects before its uprobes report anything.
    let mut c = correlator();
    let mut out = Vec::new();
    c.on_event(&refused(70, 70, 5 * MS));
    c.settle(&mut out);
    assert!(
        out.is_empty(),
        "held while the program may still turn out Go"
    );
    c.on_event(&Event::GoSpawn(GoSpawn {
        pid: 70,
        tid: 70,
        stream_id: 0,
        parent_goid: 1,
        child_goid: 2,
        ts_ns: 6 * MS,
        observed: false,
    }));
    c.advance_clock(10 * 1_000 * MS);
    c.settle(&mut out);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(c.stats.unclaimed_connects, 1);
}

#[test]
fn a_go_call_that_gave_up_waiting_for_its_response_is_a_timeout() {
    // The request went out; the peer never answered; net/http closed the connection when the
    // call's timeout fired and returned an error.
    let mut c = correlator();
    let pid = 80;
    let events = [
        go_client(pid, 6, true, None, 100 * MS),
        conn_use(ConnRole::Client, pid, 6, OUT_LOCAL, CLOSED, 101 * MS),
        go_client(pid, 6, false, None, 300 * MS),
        Event::Conn(conn(ConnKind::Close, pid, pid, OUT_LOCAL, CLOSED, 300 * MS)),
    ];
    let client = exchange(
        pid,
        Direction::Egress,
        (OUT_LOCAL, CLOSED),
        pid,
        (102 * MS, 300 * MS),
        true,
    );
    let out = run(&mut c, &events, vec![client]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].error_type().as_deref(), Some("timeout"));
}

#[test]
fn a_connect_the_program_abandoned_is_a_timeout() {
    // No socket error: the program closed a connect still waiting for its SYN-ACK.
    let mut c = correlator();
    let abandoned = Event::ConnectFailed(conn(ConnKind::Connect, 90, 90, OUT_LOCAL, CLOSED, MS));
    let out = run(&mut c, &[abandoned], Vec::new());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].error_type().as_deref(), Some("timeout"));
    assert_eq!(out[0].status_message(), "connect to 127.0.0.1:9: timed out");
}

#[test]
fn a_go_call_whose_connection_was_reset_before_it_read_its_endpoints_finds_it_by_peer() {
    // net/http read the connection after the reset: the kernel had released its port.
    let mut c = correlator();
    let pid = 100;
    let events = [
        go_client(pid, 6, true, None, 100 * MS),
        Event::Conn(Conn {
            errno: Some(104),
            ..conn(ConnKind::Close, pid, pid, OUT_LOCAL, CLOSED, 101 * MS)
        }),
        conn_use(ConnRole::Client, pid, 6, "127.0.0.1:0", CLOSED, 102 * MS),
        go_client(pid, 6, false, None, 103 * MS),
    ];
    let out = run(&mut c, &events, Vec::new());
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].error_type().as_deref(), Some("connection_reset"));
    assert_eq!(out[0].local, addr(OUT_LOCAL));
}
