//! The correlator on hand-made exchanges: the order in which ends complete, the waiting window,
//! and traceparent adoption. (The privileged span tests check the same on real traffic.)

use std::net::SocketAddr;

use super::*;
use crate::{
    event::{Conn, ConnKind},
    protocol::{Detail, Flags, Http, HttpVersion, Interesting, Origin},
};

const CLIENT: &str = "127.0.0.1:40000";
const SERVER: &str = "127.0.0.1:8080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An HTTP/1 exchange of process `pid` on (local, remote), its request's first byte at `seq`.
fn exchange(
    pid: u32,
    dir: Direction,
    local: &str,
    remote: &str,
    seq: u32,
    times: (u64, u64),
    traceparent: Option<&str>,
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
                seq,
                tid: pid,
                goid: None,
            },
            end_ns: times.1,
            request_bytes: 10,
            response_bytes: 10,
            wire: crate::protocol::WireSeqs::default(),
            detail: Detail::Http(Http {
                version: Some(HttpVersion::Http11),
                method: "GET".into(),
                target: "/x".into(),
                host: None,
                headers: Interesting {
                    traceparent: traceparent.map(str::to_owned),
                    ..Interesting::default()
                },
                status: Some(200),
                stream_id: None,
            }),
            flags: Flags::default(),
        },
    }
}

fn correlator() -> Correlator {
    Correlator::new(1_000, IdGenerator::with_seed(1))
}

/// An event of the traced client's connection (its end: CLIENT → SERVER).
fn client_conn(kind: ConnKind, ts_ns: u64) -> Event {
    Event::Conn(Conn {
        kind,
        pid: 1,
        tid: 1,
        comm: "p1".into(),
        conn_id: 1,
        local: addr(CLIENT),
        remote: addr(SERVER),
        ts_ns,
        mode: crate::event::AttachMode::Tracepoint,
        errno: None,
    })
}

/// The traced client's connect: its end of the connection reached the agent.
fn client_connects(c: &mut Correlator) {
    c.on_event(&client_conn(ConnKind::Connect, 1));
}

#[test]
fn the_server_waits_for_its_client_and_becomes_its_child() {
    let mut c = correlator();
    client_connects(&mut c);
    let mut out = Vec::new();
    // The server's exchange completes first (it writes the response before the client reads it).
    c.on_exchange(exchange(
        2,
        Direction::Ingress,
        SERVER,
        CLIENT,
        77,
        (10, 20),
        None,
    ));
    c.settle(&mut out);
    assert_eq!(out.len(), 0, "a local peer may still complete: wait");
    c.on_exchange(exchange(
        1,
        Direction::Egress,
        CLIENT,
        SERVER,
        77,
        (5, 25),
        None,
    ));
    c.settle(&mut out);
    assert_eq!(out.len(), 2);
    let (client, server) = (&out[0], &out[1]);
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(client.link, ParentLink::Root);
    assert_eq!(server.parent_span_id, Some(client.span_id));
    assert_eq!(server.trace_id, client.trace_id);
    assert_eq!(server.link, ParentLink::Peer);
}

#[test]
fn a_different_sequence_number_is_a_different_request() {
    let mut c = correlator();
    client_connects(&mut c);
    let mut out = Vec::new();
    c.on_exchange(exchange(
        1,
        Direction::Egress,
        CLIENT,
        SERVER,
        1,
        (5, 25),
        None,
    ));
    c.on_exchange(exchange(
        2,
        Direction::Ingress,
        SERVER,
        CLIENT,
        2,
        (10, 20),
        None,
    ));
    c.settle(&mut out);
    assert_eq!(out.len(), 1, "the client is a root; the server waits");
    // Past the window, the server gives up its parent, and is counted.
    c.on_event(&Event::Conn(Conn {
        kind: ConnKind::Close,
        pid: 3,
        tid: 3,
        comm: "x".into(),
        conn_id: 99,
        local: addr(CLIENT),
        remote: addr(SERVER),
        ts_ns: 5_000,
        mode: crate::event::AttachMode::Tracepoint,
        errno: None,
    }));
    c.settle(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].link, ParentLink::Orphan);
    assert_eq!(out[1].parent_span_id, None);
    assert_ne!(out[1].trace_id, out[0].trace_id);
    assert_eq!(c.stats.orphans, 1);
}

#[test]
fn a_remote_peer_is_not_waited_for_and_a_traceparent_is_adopted() {
    let mut c = correlator();
    let mut out = Vec::new();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    c.on_exchange(exchange(
        2,
        Direction::Ingress,
        SERVER,
        "10.9.8.7:5000",
        3,
        (10, 20),
        Some(tp),
    ));
    c.settle(&mut out);
    assert_eq!(out.len(), 1, "no local peer can come: emitted at once");
    assert_eq!(out[0].link, ParentLink::TraceParent);
    assert_eq!(
        out[0].trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        out[0].parent_span_id.map(|p| p.to_string()),
        Some("00f067aa0ba902b7".to_owned())
    );
}

#[test]
fn finish_emits_everything_still_waiting() {
    let mut c = correlator();
    client_connects(&mut c);
    let mut out = Vec::new();
    c.on_exchange(exchange(
        2,
        Direction::Ingress,
        SERVER,
        CLIENT,
        9,
        (10, 20),
        None,
    ));
    c.settle(&mut out);
    assert_eq!(out.len(), 0, "still waiting");
    c.finish(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].link, ParentLink::Orphan);
}

#[test]
fn a_server_whose_local_client_is_not_traced_does_not_wait() {
    // The client's end never reached the agent (filtered out, or not traced): it cannot
    // complete its side, so the server span is a root at once.
    let mut c = correlator();
    let mut out = Vec::new();
    c.on_exchange(exchange(
        2,
        Direction::Ingress,
        SERVER,
        CLIENT,
        7,
        (10, 20),
        None,
    ));
    c.settle(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].link, ParentLink::Root);
    assert_eq!(c.stats.orphans, 0);
}

#[test]
fn closed_ends_go_a_grace_period_after_their_close_without_later_events() {
    let mut c = Correlator::new(DEFAULT_WINDOW_NS, IdGenerator::with_seed(1));
    for (kind, ts_ns) in [(ConnKind::Connect, 1), (ConnKind::Close, 2)] {
        c.on_event(&client_conn(kind, ts_ns));
    }
    let held = c.tables();
    assert_eq!(
        (held.contexts.ends, held.contexts.closing, held.peer_ends),
        (1, 1, 1)
    );
    // No event after the close: the clock alone lets them go.
    c.advance_clock(2 + END_GRACE_NS - 1);
    assert_eq!(
        c.tables().contexts.closing,
        1,
        "kept through the grace period"
    );
    c.advance_clock(2 + END_GRACE_NS);
    let held = c.tables();
    assert_eq!(
        (held.contexts.ends, held.contexts.closing, held.peer_ends),
        (0, 0, 0)
    );
}
