//! Tests of the contexts' bounds: a stream whose close events were lost (accepts and connects
//! with no close, then new connections on the same ends) keeps every table bounded, and the
//! counts say what happened.

use std::net::SocketAddr;

use super::{EndKey, MAX_ACCEPTED, MAX_ENDS};
use crate::correlate::END_GRACE_NS;
use crate::{
    conn::ConnTable,
    correlate::context::Contexts,
    load::AttachMode,
    source::{Conn, ConnKind, Data, Direction, Event},
};

const SERVER: &str = "127.0.0.1:80";
const MS: u64 = 1_000_000;

fn client(i: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 20_000 + (i % 60_000) as u16))
}

fn conn(kind: ConnKind, conn_id: u64, local: SocketAddr, remote: SocketAddr, ts: u64) -> Event {
    Event::Conn(Conn {
        kind,
        pid: 7,
        tid: 7,
        comm: "srv".into(),
        conn_id,
        local,
        remote,
        ts_ns: ts,
        mode: AttachMode::Tracepoint,
        errno: None,
    })
}

fn read(conn_id: u64, local: SocketAddr, remote: SocketAddr, ts: u64) -> Event {
    Event::Data(Data {
        direction: Direction::Ingress,
        pid: 7,
        tid: 7,
        comm: "srv".into(),
        fd: 4,
        conn_id,
        local,
        remote,
        bytes: 18,
        seq: 1,
        goid: None,
        ts_enter_ns: ts,
        ts_exit_ns: ts,
        payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        windows: Vec::new(),
        tls: false,
    })
}

/// The agent's order: the connection table first, what it gave up on, then the event.
struct Chain {
    table: ConnTable,
    contexts: Contexts,
}

impl Chain {
    fn new() -> Self {
        let mut table = ConnTable::default();
        table.report_gone(true);
        Self {
            table,
            contexts: Contexts::default(),
        }
    }

    fn feed(&mut self, event: &Event) {
        let mut out = Vec::new();
        self.table.on_event(event, &mut out);
        for gone in self.table.take_gone() {
            self.contexts.on_conn_gone(&gone);
        }
        self.contexts.on_event(event);
    }

    fn expire(&mut self, now: u64) {
        self.table.expire(now, &mut Vec::new());
        for gone in self.table.take_gone() {
            self.contexts.on_conn_gone(&gone);
        }
    }
}

#[test]
fn accepted_connections_whose_close_was_lost_go_with_the_connection_table() {
    let mut chain = Chain::new();
    let server: SocketAddr = SERVER.parse().unwrap();
    // 50k accepted connections over 500 client ends, one request read on each, no close seen.
    let n = 50_000;
    for id in 0..n {
        let remote = client(id % 500);
        chain.feed(&conn(ConnKind::Accept, id, server, remote, id * MS));
        chain.feed(&read(id, server, remote, id * MS + 1));
    }
    let sizes = chain.contexts.sizes();
    assert_eq!(chain.table.stats.replaced, n - 500);
    assert_eq!(
        chain.contexts.stats.gone,
        n - 500,
        "one forgotten per replaced"
    );
    assert_eq!((sizes.accepted, sizes.ends), (500, 500));
    // Replaced ends wait out the grace period (12 s of the 50 s run), not more.
    assert!(sizes.closing as u64 <= END_GRACE_NS / MS + 1, "{sizes:?}");
    assert_eq!(chain.contexts.stats.over_cap, 0);

    // No event for the idle timeout: the table gives the rest up, and so do the contexts.
    let later = n * MS + crate::conn::DEFAULT_IDLE_TIMEOUT_NS + 1;
    chain.expire(later);
    assert_eq!(chain.table.stats.expired, 500);
    assert!(chain.table.is_empty());
    assert_eq!(chain.contexts.sizes().accepted, 0);
    // A grace period on, the next connection's event lets the closed ends go.
    let next = client(10_000);
    chain.feed(&conn(
        ConnKind::Accept,
        n,
        server,
        next,
        later + END_GRACE_NS + 1,
    ));
    let sizes = chain.contexts.sizes();
    assert_eq!(
        (sizes.accepted, sizes.ends, sizes.closing),
        (1, 1, 0),
        "{sizes:?}"
    );
    assert_eq!(chain.contexts.stats.gone, n);
}

#[test]
fn client_ends_whose_close_was_lost_are_forgotten_and_the_new_one_kept() {
    let mut chain = Chain::new();
    let server: SocketAddr = SERVER.parse().unwrap();
    let local = client(1);
    chain.feed(&conn(ConnKind::Connect, 1, local, server, MS));
    // The close is lost; the port is used again much later, then nothing for a grace period.
    chain.feed(&conn(ConnKind::Connect, 2, local, server, 40_000 * MS));
    chain.feed(&conn(
        ConnKind::Connect,
        3,
        client(2),
        server,
        40_000 * MS + END_GRACE_NS + 1,
    ));
    assert_eq!(chain.table.stats.replaced, 1);
    assert!(
        chain.contexts.end_seen(EndKey::new(local, server)),
        "the new connection on the same ends is still open"
    );
    assert_eq!(chain.contexts.sizes().closing, 0);
}

#[test]
fn every_table_is_capped_even_without_the_connection_table() {
    let mut contexts = Contexts::default();
    let server: SocketAddr = SERVER.parse().unwrap();
    // More accepted connections than the cap, on distinct ends, none closed.
    let n = MAX_ACCEPTED as u64 + 10_000;
    for id in 0..n {
        let remote = SocketAddr::from(([127, 1, (id >> 16) as u8, (id >> 8) as u8], id as u16));
        contexts.on_event(&conn(ConnKind::Accept, id, server, remote, id));
    }
    let sizes = contexts.sizes();
    assert!(sizes.accepted <= MAX_ACCEPTED, "{sizes:?}");
    assert!(sizes.ends <= MAX_ENDS, "{sizes:?}");
    assert!(contexts.stats.over_cap > 0);
    assert_eq!(
        contexts.stats.over_cap as usize,
        n as usize - sizes.accepted,
        "every dropped entry is counted"
    );
}
