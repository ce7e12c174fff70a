//! Two correlators, one per host, sharing an in-process join store: the server's span on host
//! B takes the client span on host A as its parent through NAT (the addresses differ at the two
//! ends; the sequence numbers do not), and only then.

use std::{net::SocketAddr, time::Duration};

use super::*;
use crate::{
    join::MemoryJoin,
    protocol::{Detail, Flags, Http, HttpVersion, Origin, WireSeqs},
};

/// The client on host A calls a virtual address; host B's server sees the client's real address.
const A_CLIENT: &str = "10.0.1.2:40000";
const VIRTUAL_ADDR: &str = "10.0.9.9:80";
const B_SERVER: &str = "10.0.2.2:8080";
const B_SEES_CLIENT: &str = "10.0.1.2:40000";

fn exchange(
    dir: Direction,
    (local, remote): (&str, &str),
    target: &str,
    wire: WireSeqs,
) -> ConnExchange {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    ConnExchange {
        conn_id: 1,
        pid: 1,
        comm: "p".into(),
        local: addr(local),
        remote: addr(remote),
        exchange: Exchange {
            request_direction: dir,
            start_ns: 10,
            origin: Origin {
                seq: wire.request.unwrap_or(0),
                tid: 1,
                goid: None,
            },
            end_ns: 20,
            request_bytes: 10,
            response_bytes: 10,
            wire,
            detail: Detail::Http(Http {
                version: Some(HttpVersion::Http11),
                method: "GET".into(),
                target: target.into(),
                ..Http::default()
            }),
            flags: Flags::default(),
        },
    }
}

fn host(records: &crate::join::memory::SharedRecords, wait: Duration, seed: u64) -> Correlator {
    Correlator::new(10_000_000_000, IdGenerator::with_seed(seed))
        .with_join_store(Box::new(MemoryJoin::new(records.clone(), wait)))
}

const WIRE: WireSeqs = WireSeqs {
    request: Some(0x1111_2222),
    response: Some(0x3333_4444),
};

/// Settle `c` until it emits something (the store answers asynchronously in general).
fn settle_some(c: &mut Correlator) -> Vec<Span> {
    let mut out = Vec::new();
    for _ in 0..200 {
        c.settle(&mut out);
        if !out.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

#[test]
fn a_server_on_another_host_takes_the_published_client_as_parent_through_nat() {
    let records = MemoryJoin::shared();
    let mut a = host(&records, Duration::from_secs(5), 1);
    let mut b = host(&records, Duration::from_secs(5), 2);
    // B's server completes first and asks; its answer waits for A's publish.
    b.on_exchange(exchange(
        Direction::Ingress,
        (B_SERVER, B_SEES_CLIENT),
        "/x",
        WIRE,
    ));
    let mut out = Vec::new();
    b.settle(&mut out);
    assert!(out.is_empty(), "the server waits for the store's answer");
    a.on_exchange(exchange(
        Direction::Egress,
        (A_CLIENT, VIRTUAL_ADDR),
        "/x",
        WIRE,
    ));
    let client = settle_some(&mut a).remove(0);
    let server = settle_some(&mut b).remove(0);
    assert_eq!(server.link, ParentLink::RemotePeer);
    assert_eq!(server.trace_id, client.trace_id);
    assert_eq!(server.parent_span_id, Some(client.span_id));
    let (b_stats, _) = b.remote_stats().unwrap();
    assert_eq!(
        (b_stats.asked, b_stats.joined, b_stats.unjoined()),
        (1, 1, 0)
    );
    assert_eq!(a.remote_stats().unwrap().0.offered, 1);
}

#[test]
fn a_server_whose_client_never_publishes_goes_out_unjoined_after_the_wait() {
    let records = MemoryJoin::shared();
    let mut b = host(&records, Duration::from_millis(20), 2);
    b.on_exchange(exchange(
        Direction::Ingress,
        (B_SERVER, B_SEES_CLIENT),
        "/x",
        WIRE,
    ));
    let server = settle_some(&mut b).remove(0);
    assert_eq!(server.link, ParentLink::Root);
    assert_eq!(server.parent_span_id, None);
    let (stats, _) = b.remote_stats().unwrap();
    assert_eq!((stats.not_found, stats.unjoined()), (1, 1));
}

/// Keys that collide (the same sequence pair, which `join::key` shows negligible) for two
/// different requests are not joined: the route check tells them apart.
#[test]
fn a_record_for_another_request_under_the_same_key_is_refused() {
    let records = MemoryJoin::shared();
    let mut a = host(&records, Duration::from_secs(5), 1);
    let mut b = host(&records, Duration::from_secs(5), 2);
    a.on_exchange(exchange(
        Direction::Egress,
        (A_CLIENT, VIRTUAL_ADDR),
        "/users/1",
        WIRE,
    ));
    settle_some(&mut a);
    b.on_exchange(exchange(
        Direction::Ingress,
        (B_SERVER, B_SEES_CLIENT),
        "/users/2",
        WIRE,
    ));
    let server = settle_some(&mut b).remove(0);
    assert_eq!(server.parent_span_id, None);
    assert_eq!(b.remote_stats().unwrap().0.route_mismatch, 1);
}

#[test]
fn local_peers_and_unknown_sequence_numbers_never_touch_the_store() {
    let records = MemoryJoin::shared();
    let mut c = host(&records, Duration::from_secs(5), 1);
    // A loopback exchange pair: joined on this host as before, nothing published or asked.
    c.on_exchange(exchange(
        Direction::Egress,
        ("127.0.0.1:4000", "127.0.0.1:80"),
        "/x",
        WIRE,
    ));
    c.on_exchange(exchange(
        Direction::Ingress,
        ("127.0.0.1:80", "127.0.0.1:4000"),
        "/x",
        WIRE,
    ));
    // A remote server exchange whose response number is unknown: no key to ask for.
    let unknown = WireSeqs {
        response: None,
        ..WIRE
    };
    c.on_exchange(exchange(
        Direction::Ingress,
        (B_SERVER, B_SEES_CLIENT),
        "/y",
        unknown,
    ));
    let mut out = Vec::new();
    c.settle(&mut out);
    let (stats, store) = c.remote_stats().unwrap();
    assert_eq!((stats.asked, stats.offered, store.published), (0, 0, 0));
    assert!(records.lock().unwrap().is_empty());
}
