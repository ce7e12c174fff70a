//! The connection table: decoding apart, bounds, TLS, and connections whose close was lost.
use super::*;
use crate::event::AttachMode;
use crate::event::{Conn, Data, Direction};

fn data(conn_id: u64, direction: Direction, payload: &[u8], bytes: u64, ts: u64) -> Event {
    Event::Data(Data {
        direction,
        pid: 1,
        tid: 1,
        comm: "c".into(),
        fd: 3,
        conn_id,
        // A port of its own per connection: connections on the same ends replace each other.
        local: SocketAddr::from(([127, 0, 0, 1], 1000 + (conn_id % 1000) as u16)),
        remote: "127.0.0.1:80".parse().unwrap(),
        bytes,
        seq: 0,
        goid: None,
        ts_enter_ns: ts,
        ts_exit_ns: ts + 1,
        payload: payload.to_vec(),
        windows: Vec::new(),
        tls: false,
    })
}

fn close(conn_id: u64, ts: u64) -> Event {
    Event::Conn(Conn {
        kind: ConnKind::Close,
        errno: None,
        pid: 1,
        tid: 1,
        comm: "c".into(),
        conn_id,
        local: "127.0.0.1:1000".parse().unwrap(),
        remote: "127.0.0.1:80".parse().unwrap(),
        ts_ns: ts,
        mode: AttachMode::Tracepoint,
    })
}

#[test]
fn connections_are_decoded_apart_and_flushed_at_close() {
    let mut table = ConnTable::default();
    let mut out = Vec::new();
    table.on_event(
        &data(1, Direction::Egress, b"GET /one HTTP/1.1\r\n\r\n", 21, 10),
        &mut out,
    );
    table.on_event(
        &data(2, Direction::Egress, b"GET /two HTTP/1.1\r\n\r\n", 21, 11),
        &mut out,
    );
    table.on_event(
        &data(
            2,
            Direction::Ingress,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            27,
            12,
        ),
        &mut out,
    );
    table.on_event(&close(1, 20), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].conn_id, 2);
    assert_eq!(out[1].conn_id, 1);
    assert!(out[1].exchange.flags.no_response);
    assert_eq!(table.len(), 1);
}

#[test]
fn decoders_together_stay_within_the_memory_budget() {
    let mut table = ConnTable::default().with_memory_budget(10_000);
    let mut out = Vec::new();
    // Incomplete heads are buffered: each connection holds a few KiB.
    let head = [b"GET / HTTP/1.1\r\nX-Pad: ".as_slice(), &[b'p'; 3000]].concat();
    for id in 0..10 {
        table.on_event(
            &data(id, Direction::Egress, &head, head.len() as u64, id * 10),
            &mut out,
        );
        assert!(
            table.buffered_bytes() <= 10_000,
            "over budget: {}",
            table.buffered_bytes()
        );
    }
    assert!(table.stats.evicted_for_memory > 0);
    assert!(table.len() < 10);
}

#[test]
fn what_the_decoders_dropped_is_summed_when_connections_close() {
    let mut table = ConnTable::default();
    let mut out = Vec::new();
    table.on_event(
        &data(1, Direction::Egress, b"GET /a HTTP/1.1\r\n\r\n", 19, 10),
        &mut out,
    );
    // Not a response: the response direction loses sync.
    table.on_event(
        &data(
            1,
            Direction::Ingress,
            b"\x00\x01 not http at all\r\n\r\n",
            23,
            11,
        ),
        &mut out,
    );
    assert_eq!(
        table.stats.decoders,
        DecoderStats::default(),
        "counted at close"
    );
    table.on_event(&close(1, 20), &mut out);
    assert_eq!(table.stats.decoders.http1.desyncs, 1);
    assert_eq!(
        table.stats.decoders.describe(),
        vec!["http/1 lost sync 1".to_owned()]
    );
}

#[test]
fn tls_records_are_not_decoded_and_the_plaintext_is() {
    let mut table = ConnTable::default();
    let mut out = Vec::new();
    let tls = |mut e: Event| {
        if let Event::Data(d) = &mut e {
            d.tls = true;
        }
        e
    };
    // A ClientHello, then the library's plaintext, then an encrypted alert.
    let hello = b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03";
    table.on_event(&data(1, Direction::Egress, hello, 47, 1), &mut out);
    table.on_event(
        &tls(data(
            1,
            Direction::Egress,
            b"GET /a HTTP/1.1\r\n\r\n",
            19,
            2,
        )),
        &mut out,
    );
    table.on_event(
        &data(1, Direction::Ingress, b"\x17\x03\x03\x00\x20", 37, 3),
        &mut out,
    );
    table.on_event(
        &tls(data(
            1,
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\n\r\n",
            19,
            4,
        )),
        &mut out,
    );
    // An encrypted connection whose plaintext never comes.
    table.on_event(&data(2, Direction::Egress, hello, 47, 5), &mut out);
    table.on_event(&close(1, 10), &mut out);
    table.on_event(&close(2, 11), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].conn_id, 1);
    assert!(!out[0].exchange.flags.no_response);
    assert_eq!(table.stats.unknown_protocol, 0);
    assert_eq!(
        (table.stats.tls_plaintext, table.stats.tls_encrypted),
        (1, 1)
    );
}

#[test]
fn the_table_is_bounded_and_idle_connections_expire() {
    let mut table = ConnTable::new(2, 100);
    let mut out = Vec::new();
    for id in 0..5 {
        table.on_event(
            &data(
                id,
                Direction::Egress,
                b"GET / HTTP/1.1\r\n\r\n",
                18,
                id * 10,
            ),
            &mut out,
        );
    }
    assert_eq!(table.len(), 2);
    assert_eq!(table.stats.evicted, 3);
    table.expire(1_000, &mut out);
    assert!(table.is_empty());
    assert_eq!(table.stats.expired, 2);
    assert_eq!(
        out.len(),
        5,
        "every request was flushed as an exchange without response"
    );
}

fn conn(kind: ConnKind, conn_id: u64, local: &str, remote: &str, ts: u64) -> Event {
    Event::Conn(Conn {
        kind,
        errno: None,
        pid: 1,
        tid: 1,
        comm: "c".into(),
        conn_id,
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        ts_ns: ts,
        mode: AttachMode::Tracepoint,
    })
}

#[test]
fn a_new_connection_on_the_same_ends_replaces_one_whose_close_was_lost() {
    let mut table = ConnTable::default();
    table.report_gone(true);
    let mut out = Vec::new();
    let (a, b) = ("127.0.0.1:1001", "127.0.0.1:80");
    table.on_event(&conn(ConnKind::Connect, 1, a, b, 1), &mut out);
    // A request with no answer, then the close is lost; the port is used again.
    table.on_event(
        &data(1, Direction::Egress, b"GET /a HTTP/1.1\r\n\r\n", 19, 2),
        &mut out,
    );
    table.on_event(&conn(ConnKind::Connect, 2, a, b, 10), &mut out);
    assert_eq!(table.len(), 1);
    assert_eq!(table.stats.replaced, 1);
    assert_eq!(out.len(), 1, "the old connection's request was flushed");
    assert_eq!(out[0].conn_id, 1);
    let gone: Vec<Gone> = table.take_gone().collect();
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].conn_id, gone[0].last_ns), (1, 3));
    // The other direction of the same pair is another end (the server's), not a replacement.
    table.on_event(&conn(ConnKind::Accept, 3, b, a, 11), &mut out);
    assert_eq!((table.len(), table.stats.replaced), (2, 1));
    table.finish(20, &mut out);
    assert_eq!(table.stats.open_at_end, 2);
    assert!(table.is_empty());
    assert_eq!(table.take_gone().count(), 0, "finish is not a loss");
}

#[test]
fn the_index_by_ends_follows_closes_expiry_and_eviction() {
    let mut table = ConnTable::new(2, 100);
    table.report_gone(true);
    let mut out = Vec::new();
    let (a, b) = ("127.0.0.1:1000", "127.0.0.1:80");
    // Closed properly: the next connection on the pair replaces nothing.
    table.on_event(&conn(ConnKind::Connect, 1, a, b, 1), &mut out);
    table.on_event(&conn(ConnKind::Close, 1, a, b, 2), &mut out);
    table.on_event(&conn(ConnKind::Connect, 2, a, b, 3), &mut out);
    assert_eq!(table.stats.replaced, 0);
    // Expired: gone from the index too.
    table.expire(1_000, &mut out);
    assert_eq!(table.stats.expired, 1);
    table.on_event(&conn(ConnKind::Connect, 3, a, b, 1_001), &mut out);
    assert_eq!(table.stats.replaced, 0);
    // Evicted to make room: gone from the index too.
    table.on_event(
        &conn(ConnKind::Connect, 4, "127.0.0.1:1001", b, 1_002),
        &mut out,
    );
    table.on_event(
        &conn(ConnKind::Connect, 5, "127.0.0.1:1002", b, 1_003),
        &mut out,
    );
    assert_eq!(table.stats.evicted, 1);
    table.on_event(&conn(ConnKind::Connect, 6, a, b, 1_004), &mut out);
    assert_eq!(table.stats.replaced, 0, "connection 3 was evicted already");
    assert_eq!(table.stats.evicted, 2);
    let gone: Vec<u64> = table.take_gone().map(|g| g.conn_id).collect();
    assert_eq!(gone, vec![2, 3, 4]);
    assert_eq!(table.by_ends.len(), table.len());
    table.finish(2_000, &mut out);
    assert!(table.by_ends.is_empty());
}

#[test]
fn ends_the_probes_could_not_name_replace_nothing() {
    let mut table = ConnTable::default();
    let mut out = Vec::new();
    for id in 0..3 {
        table.on_event(
            &conn(ConnKind::Connect, id, "0.0.0.0:0", "127.0.0.1:80", id),
            &mut out,
        );
    }
    assert_eq!((table.len(), table.stats.replaced), (3, 0));
    table.finish(10, &mut out);
    assert_eq!(table.stats.open_at_end, 3);
}

#[test]
fn churn_with_every_close_lost_keeps_one_entry_per_address_pair() {
    let mut table = ConnTable::default();
    let mut out = Vec::new();
    // 100k connections over 1,000 client ports, none of their closes seen.
    for id in 0..100_000u64 {
        let local = format!("127.0.0.2:{}", 10_000 + id % 1_000);
        table.on_event(
            &conn(ConnKind::Connect, id, &local, "127.0.0.1:80", id * 10),
            &mut out,
        );
        table.on_event(
            &data(
                id,
                Direction::Egress,
                b"GET / HTTP/1.1\r\n\r\n",
                18,
                id * 10 + 1,
            ),
            &mut out,
        );
    }
    assert_eq!(table.len(), 1_000);
    assert_eq!(table.stats.replaced, 99_000);
    assert_eq!(table.stats.evicted, 0);
    table.finish(u64::MAX, &mut out);
    assert_eq!(table.stats.open_at_end, 1_000);
    assert_eq!(out.len(), 100_000, "every request was flushed once");
}
