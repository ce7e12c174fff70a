//! Tests of `context`: goroutine ancestry, handler runs (from `ServeHTTP` and from the
//! bytes), their ends, and what is forgotten when.

use super::{
    bytes::{push_run, starts_http1_request},
    *,
};
use crate::{
    load::AttachMode,
    source::{Conn, GoConnection},
};

fn close(pid: u32, local: &str, remote: &str, ts_ns: u64) -> Event {
    conn_event(ConnKind::Close, pid, 1, local, remote, ts_ns)
}

fn conn_event(
    kind: ConnKind,
    pid: u32,
    conn_id: u64,
    local: &str,
    remote: &str,
    ts_ns: u64,
) -> Event {
    Event::Conn(Conn {
        kind,
        pid,
        tid: pid,
        comm: "go".into(),
        conn_id,
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        ts_ns,
        mode: AttachMode::Tracepoint,
        errno: None,
    })
}

const PID: u32 = 9;

fn handler_starts(c: &mut Contexts, goid: u64, remote: &str, ts_ns: u64) {
    c.on_event(&Event::GoConnUse(GoConnUse {
        role: ConnRole::Server,
        stream_id: None,
        pid: PID,
        tid: PID,
        goid,
        conn: GoConnection {
            fd: 4,
            endpoints: Some(("127.0.0.1:80".parse().unwrap(), remote.parse().unwrap())),
        },
        ts_ns,
    }));
}

fn handler_ends(c: &mut Contexts, goid: u64, ts_ns: u64) {
    c.on_event(&Event::GoServe(crate::event::GoServe {
        client: false,
        start: false,
        pid: PID,
        tid: PID,
        goid,
        method: String::new(),
        path: String::new(),
        host: String::new(),
        status: Some(200),
        server: 0,
        ts_ns,
    }));
}

fn spawn(c: &mut Contexts, parent_goid: u64, child_goid: u64, ts_ns: u64) {
    c.on_event(&Event::GoSpawn(crate::event::GoSpawn {
        pid: PID,
        tid: PID,
        stream_id: 0,
        parent_goid,
        child_goid,
        ts_ns,
        observed: false,
    }));
}

fn serving_remote(lookup: Lookup) -> Option<SocketAddr> {
    match lookup {
        Lookup::Serving(ServerRef::Handler { remote, .. }) => Some(remote),
        _ => None,
    }
}

#[test]
fn a_worker_started_by_a_request_works_for_it_only_while_it_is_open() {
    let mut c = Contexts::default();
    // Request A on goroutine 10 starts worker 20 (lazily, on first use), which starts 21.
    handler_starts(&mut c, 10, "127.0.0.1:5000", 100);
    spawn(&mut c, 10, 20, 110);
    spawn(&mut c, 20, 21, 120);
    let p = |c: &Contexts| Contexts::handler_of(PID, &c.go[&PID], 21, 130);
    assert_eq!(
        serving_remote(p(&c)),
        Some("127.0.0.1:5000".parse().unwrap())
    );
    handler_ends(&mut c, 10, 200);
    // Request B on another connection feeds the worker: its calls are not A's.
    handler_starts(&mut c, 30, "127.0.0.1:5001", 300);
    for goid in [20, 21] {
        assert_eq!(
            Contexts::handler_of(PID, &c.go[&PID], goid, 310),
            Lookup::Expired
        );
    }
    // A call made while A was still open keeps A even when asked later.
    assert_eq!(
        serving_remote(p(&c)),
        Some("127.0.0.1:5000".parse().unwrap())
    );
    // The worker spawning a new goroutine later does not revive A.
    spawn(&mut c, 20, 22, 320);
    assert_eq!(
        Contexts::handler_of(PID, &c.go[&PID], 22, 330),
        Lookup::Expired
    );
}

#[test]
fn an_http2_handler_serves_its_stream_and_its_children_work_for_it_until_it_returns() {
    let mut c = Contexts::default();
    let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    c.on_event(&Event::GoConnUse(GoConnUse {
        role: ConnRole::Server,
        stream_id: Some(3),
        pid: PID,
        tid: PID,
        goid: 40,
        conn: GoConnection {
            fd: 4,
            endpoints: Some((local, remote)),
        },
        ts_ns: 100,
    }));
    spawn(&mut c, 40, 41, 110);
    let stream = Lookup::Serving(ServerRef::Stream {
        pid: PID,
        local,
        remote,
        stream: 3,
    });
    assert_eq!(Contexts::handler_of(PID, &c.go[&PID], 41, 120), stream);
    handler_ends(&mut c, 40, 200);
    assert_eq!(Contexts::handler_of(PID, &c.go[&PID], 41, 150), stream);
    assert_eq!(
        Contexts::handler_of(PID, &c.go[&PID], 41, 210),
        Lookup::Expired
    );
}

#[test]
fn a_keep_alive_handler_goroutine_works_for_the_request_it_runs_now() {
    let mut c = Contexts::default();
    handler_starts(&mut c, 10, "127.0.0.1:5000", 100);
    spawn(&mut c, 10, 11, 110);
    handler_ends(&mut c, 10, 200);
    handler_starts(&mut c, 10, "127.0.0.1:5000", 300);
    spawn(&mut c, 10, 12, 310);
    let lookup = Contexts::handler_of(PID, &c.go[&PID], 12, 320);
    assert!(
        matches!(lookup, Lookup::Serving(ServerRef::Handler { ts: 300, .. })),
        "{lookup:?}"
    );
    // The child of the first request, calling during the second, is not the second's.
    assert_eq!(
        Contexts::handler_of(PID, &c.go[&PID], 11, 320),
        Lookup::Expired
    );
    // Between requests the serving goroutine itself works for none.
    handler_ends(&mut c, 10, 400);
    assert_eq!(
        Contexts::handler_of(PID, &c.go[&PID], 10, 450),
        Lookup::Expired
    );
}

#[test]
fn a_process_go_state_is_dropped_a_grace_period_after_it_exits() {
    let exit = |pid: u32, ts_ns: u64| Event::Exit(crate::event::ProcessExit { pid, ts_ns });
    let mut c = Contexts::default();
    handler_starts(&mut c, 10, "127.0.0.1:5000", 100);
    c.on_event(&exit(PID, 200));
    assert!(c.go.contains_key(&PID), "kept through the grace period");
    c.on_event(&exit(PID + 1, 200 + GRACE_NS));
    assert!(!c.go.contains_key(&PID));
    assert!(c.exited.is_empty());
}

#[test]
fn client_uses_of_closed_connections_are_forgotten_after_the_grace_period() {
    let mut c = Contexts::default();
    let (local, remote) = ("127.0.0.1:5000", "127.0.0.1:80");
    c.on_event(&Event::GoConnUse(GoConnUse {
        role: ConnRole::Client,
        stream_id: None,
        pid: 9,
        tid: 9,
        goid: 3,
        conn: GoConnection {
            fd: 4,
            endpoints: Some((local.parse().unwrap(), remote.parse().unwrap())),
        },
        ts_ns: 10,
    }));
    c.on_event(&close(9, local, remote, 20));
    assert_eq!(
        c.go[&9].client_uses.len(),
        1,
        "kept through the grace period"
    );
    c.on_event(&close(
        9,
        "127.0.0.1:5001",
        remote,
        20 + crate::correlate::END_GRACE_NS,
    ));
    assert_eq!(c.go[&9].client_uses.len(), 0);
}

const SERVER: &str = "127.0.0.1:80";

fn accept(c: &mut Contexts, conn_id: u64, remote: &str, ts_ns: u64) {
    c.on_event(&conn_event(
        ConnKind::Accept,
        PID,
        conn_id,
        SERVER,
        remote,
        ts_ns,
    ));
}

/// Bytes goroutine `goid` moved on accepted connection `conn_id` at `ts_ns`.
fn bytes(
    c: &mut Contexts,
    goid: u64,
    conn_id: u64,
    remote: &str,
    direction: Direction,
    payload: &[u8],
    ts_ns: u64,
) {
    c.on_event(&Event::Data(Data {
        direction,
        pid: PID,
        tid: PID,
        comm: "go".into(),
        fd: 5,
        conn_id,
        local: SERVER.parse().unwrap(),
        remote: remote.parse().unwrap(),
        bytes: payload.len() as u64,
        seq: 0,
        goid: Some(goid),
        ts_enter_ns: ts_ns,
        ts_exit_ns: ts_ns,
        payload: payload.to_vec(),
        windows: Vec::new(),
        tls: false,
    }));
}

fn observed(c: &mut Contexts, parent_goid: u64, child_goid: u64, ts_ns: u64) {
    c.on_event(&Event::GoSpawn(crate::event::GoSpawn {
        pid: PID,
        tid: PID,
        stream_id: 0,
        parent_goid,
        child_goid,
        ts_ns,
        observed: true,
    }));
}

#[test]
fn a_goroutine_that_reads_an_http1_request_serves_it_until_it_writes_back() {
    let mut c = Contexts::default();
    let client = "127.0.0.1:5000";
    accept(&mut c, 1, client, 50);
    bytes(
        &mut c,
        10,
        1,
        client,
        Direction::Ingress,
        b"GET /chain HTTP/1.1\r\nHost: x\r\n\r\n",
        100,
    );
    // The handler's own call, and one from a child that named its parent when it called.
    let own = Contexts::handler_of(PID, &c.go[&PID], 10, 120);
    assert!(
        matches!(own, Lookup::Serving(ServerRef::Handler { ts: 100, .. })),
        "{own:?}"
    );
    observed(&mut c, 10, 20, 150);
    let child = Contexts::handler_of(PID, &c.go[&PID], 20, 150);
    assert!(
        matches!(child, Lookup::Serving(ServerRef::Handler { ts: 100, .. })),
        "{child:?}"
    );
    // A body read does not start another request.
    bytes(&mut c, 10, 1, client, Direction::Ingress, b"{\"a\":1}", 160);
    bytes(
        &mut c,
        10,
        1,
        client,
        Direction::Egress,
        b"HTTP/1.1 200 OK\r\n\r\n",
        200,
    );
    assert_eq!(
        Contexts::handler_of(PID, &c.go[&PID], 10, 250),
        Lookup::Expired
    );
    // The next request on the keep-alive connection is the goroutine's next run; the child
    // of the first one, first seen during it, does not work for it.
    bytes(
        &mut c,
        10,
        1,
        client,
        Direction::Ingress,
        b"POST /x HTTP/1.1\r\n\r\n",
        300,
    );
    let next = Contexts::handler_of(PID, &c.go[&PID], 10, 310);
    assert!(
        matches!(next, Lookup::Serving(ServerRef::Handler { ts: 300, .. })),
        "{next:?}"
    );
    assert_eq!(
        Contexts::handler_of(PID, &c.go[&PID], 20, 310),
        Lookup::Expired
    );
}

#[test]
fn bytes_on_connections_not_accepted_here_and_http2_start_no_run() {
    let mut c = Contexts::default();
    let client = "127.0.0.1:5001";
    bytes(
        &mut c,
        10,
        7,
        client,
        Direction::Ingress,
        b"GET / HTTP/1.1\r\n\r\n",
        100,
    );
    assert!(c.go.get(&PID).is_none_or(|p| p.handlers.is_empty()));
    accept(&mut c, 8, client, 150);
    bytes(
        &mut c,
        11,
        8,
        client,
        Direction::Ingress,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        200,
    );
    assert_eq!(
        Contexts::handler_of(PID, &c.go[&PID], 11, 210),
        Lookup::NoServer
    );
}

#[test]
fn an_observed_parent_never_replaces_a_spawn_seen_happen() {
    let mut c = Contexts::default();
    handler_starts(&mut c, 10, "127.0.0.1:5000", 100);
    spawn(&mut c, 10, 20, 110);
    observed(&mut c, 99, 20, 300);
    assert_eq!(c.go[&PID].parent[&20], (10, 110));
    // Observed first: kept from its first observation.
    observed(&mut c, 10, 21, 120);
    observed(&mut c, 10, 21, 400);
    assert_eq!(c.go[&PID].parent[&21], (10, 120));
}

#[test]
fn http1_request_starts_are_told_from_other_bytes() {
    for yes in [&b"GET / HTTP/1.1"[..], b"DELETE /x", b"OPTIONS * HTTP/1.1"] {
        assert!(starts_http1_request(yes), "{yes:?}");
    }
    for no in [
        &b"PRI * HTTP/2.0"[..],
        b"\x16\x03\x01",
        b"get /",
        b"GETX",
        b"",
        b"{\"GET \": 1}",
    ] {
        assert!(!starts_http1_request(no), "{no:?}");
    }
}

#[test]
fn a_request_whose_first_byte_the_background_read_took_still_starts_a_run() {
    let mut c = Contexts::default();
    let client = "127.0.0.1:5001";
    accept(&mut c, 1, client, 50);
    // net/http's background read (goroutine 30) takes "G"; the connection's goroutine (10)
    // reads the rest and serves the request.
    bytes(&mut c, 30, 1, client, Direction::Ingress, b"G", 100);
    bytes(
        &mut c,
        10,
        1,
        client,
        Direction::Ingress,
        b"ET /next HTTP/1.1\r\nHost: x\r\n\r\n",
        110,
    );
    let run = Contexts::handler_of(PID, &c.go[&PID], 10, 120);
    assert!(
        matches!(run, Lookup::Serving(ServerRef::Handler { ts: 110, .. })),
        "{run:?}"
    );
    // The one-byte reader is no handler.
    assert!(
        !matches!(
            Contexts::handler_of(PID, &c.go[&PID], 30, 120),
            Lookup::Serving(_)
        ),
        "the background reader serves nothing"
    );
}

#[test]
fn a_plain_servers_handler_goroutines_are_swept_a_grace_period_after_their_runs_ended() {
    // One goroutine per short connection, one request each, every 5 ms for 100 s: none
    // reports its end (no goroutine probes on a plain server).
    const STEP: u64 = 5_000_000;
    let mut c = Contexts::default();
    let n: u64 = 20_000;
    let mut most = 0;
    for i in 0..n {
        let client = format!("127.0.0.2:{}", 1024 + i % 60_000);
        let ts = i * STEP;
        accept(&mut c, i, &client, ts);
        bytes(
            &mut c,
            i,
            i,
            &client,
            Direction::Ingress,
            b"GET / HTTP/1.1\r\n\r\n",
            ts + 1,
        );
        bytes(
            &mut c,
            i,
            i,
            &client,
            Direction::Egress,
            b"HTTP/1.1 200 OK\r\n\r\n",
            ts + 2,
        );
        c.on_event(&close(PID, SERVER, &client, ts + 3));
        most = most.max(c.go[&PID].handlers.len());
    }
    // The grace period holds GRACE_NS / STEP = 6,000 goroutines; a sweep runs when the table
    // has doubled since the last one.
    let in_grace = (GRACE_NS / STEP) as usize;
    assert!(most <= 2 * in_grace + 1, "{most} handler entries at most");
    let last = &c.go[&PID].handlers[&(n - 1)];
    assert_eq!(last.len(), 1, "the newest goroutine's run is kept");
    assert!(
        !c.go[&PID].handlers.contains_key(&0),
        "the first goroutine's run ended 100 s ago"
    );
}

#[test]
fn a_goroutine_keeps_room_for_its_runs_only_and_its_last_eight() {
    let conn = EndKey::new(SERVER.parse().unwrap(), "127.0.0.1:40000".parse().unwrap());
    let run = |start| HandlerRun::new(start, conn, true);
    assert_eq!(size_of::<HandlerRun>(), 56);
    let mut runs = Vec::with_capacity(1);
    push_run(&mut runs, run(1));
    push_run(&mut runs, run(2));
    // One run from the bytes and one from `ServeHTTP`: two runs' room, not four.
    assert_eq!(runs.capacity(), 2);
    for start in 3..=20 {
        push_run(&mut runs, run(start));
    }
    assert_eq!(
        runs.iter().map(|r| r.start).collect::<Vec<_>>(),
        (13..=20).collect::<Vec<_>>()
    );
}

/// A thread that answered its request still owns the calls it began while serving it: an
/// outbound exchange that completes later (a call in an unknown protocol ends only at the next
/// call or the close) finds it; a call begun after the answer does not.
#[test]
fn a_thread_keeps_the_request_it_answered_for_calls_begun_before_the_answer() {
    let mut c = Contexts::default();
    let client = "127.0.0.1:5000";
    accept(&mut c, 1, client, 50);
    let thread_bytes = |c: &mut Contexts, direction, ts_ns| {
        c.on_event(&Event::Data(Data {
            direction,
            pid: PID,
            tid: 7,
            comm: "python3".into(),
            fd: 5,
            conn_id: 1,
            local: SERVER.parse().unwrap(),
            remote: client.parse().unwrap(),
            bytes: 10,
            seq: 0,
            goid: None,
            ts_enter_ns: ts_ns,
            ts_exit_ns: ts_ns,
            payload: Vec::new(),
            windows: Vec::new(),
            tls: false,
        }));
    };
    thread_bytes(&mut c, Direction::Ingress, 100);
    thread_bytes(&mut c, Direction::Egress, 200);
    assert!(matches!(
        c.server_of_thread(PID, 7, 150),
        Lookup::Serving(ServerRef::Thread { ts: 100, .. })
    ));
    assert_eq!(c.server_of_thread(PID, 7, 250), Lookup::NoServer);
}
