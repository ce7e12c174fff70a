//! The correlator's steady-state heap under connection churn, without root: a synthetic event
//! stream shaped like the `faults_churn` case (3,333 short connections a second for 60 s to a Go
//! net/http server, the client a traced non-Go program on the same host, and 10k idle
//! keep-alive connections) goes through a `Correlator` as the agent feeds it, and a counting
//! allocator reports the live heap.
//!
//! `cargo bench -p wirespan --bench churn_memory` (`-- --seconds N` for a shorter run). The
//! counting allocator lives in this benchmark only, never in the agent binary.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicUsize, Ordering},
};

use wirespan::{
    conn::ConnExchange,
    correlate::Correlator,
    event::GoConnection,
    event::{AttachMode, Conn, ConnKind, ConnRole, Data, Direction, Event, GoConnUse, GoServe},
    protocol::{Detail, Exchange, Flags, Http, HttpVersion, Interesting, Origin},
    span::IdGenerator,
};

/// Counts the bytes live on the heap, and the most ever live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;
/// Short connections a second, as in the fault case's full scale.
const RATE: u64 = 3_333;
const IDLE: u64 = 10_000;
/// Client source addresses (127.0.0.2 and up), as the fault case spreads its connections.
const SOURCES: u64 = 16;
const CLIENT_PID: u32 = 100;
const SERVER_PID: u32 = 200;
/// The agent settles (and ticks its clock) about this often.
const SETTLE_EVERY_NS: u64 = 10 * MS;

fn main() {
    let seconds = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map_or(60, |s| s.parse().expect("--seconds takes a whole number"));
    let base = LIVE.load(Ordering::Relaxed);
    let mut c = Correlator::new(
        wirespan::correlate::DEFAULT_WINDOW_NS,
        IdGenerator::with_seed(1),
    );
    let mut spans = Vec::new();
    let mut stream = Stream::default();
    // The idle keep-alive connections: one request each, then open for the whole run.
    for i in 0..IDLE {
        let conn = stream.next_conn(i * 10_000, 50_000 + i);
        connect_and_request(&mut c, &conn, false);
    }
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let before = LIVE.load(Ordering::Relaxed) - base;
    let total = RATE * seconds;
    let mut next_settle = 0;
    let mut peak_after_warmup = 0;
    for i in 0..total {
        let t0 = SECOND + i * SECOND / RATE;
        let conn = stream.next_conn(t0, i);
        connect_and_request(&mut c, &conn, true);
        if t0 >= next_settle {
            c.advance_clock(t0);
            c.settle(&mut spans);
            spans.clear();
            next_settle = t0 + SETTLE_EVERY_NS;
        }
        if i.is_multiple_of(RATE) {
            let live = LIVE.load(Ordering::Relaxed) - base;
            peak_after_warmup = peak_after_warmup.max(live);
            if (i / RATE).is_multiple_of(10) {
                eprintln!("t={:>2}s live {:>7.1} MiB", i / RATE, mib(live));
            }
        }
    }
    let end = LIVE.load(Ordering::Relaxed) - base;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let stats = c.stats;
    let tables = c.tables();
    println!("churn: {total} short connections over {seconds} s, {IDLE} idle");
    println!("live heap before the churn: {:>7.1} MiB", mib(before));
    println!("peak live heap:             {:>7.1} MiB", mib(peak));
    println!("live heap at the end:       {:>7.1} MiB", mib(end));
    println!(
        "growth at the peak:         {:>7.1} MiB",
        mib(peak - before)
    );
    println!("spans {}, orphans {}", stats.spans, stats.orphans);
    println!("tables at the end: {}", tables.describe());
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a figure for people: MiB to one decimal"
)]
fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One connection of the stream: its ends, ids and times.
struct ConnPlan {
    t0: u64,
    client: SocketAddr,
    server: SocketAddr,
    client_conn: u64,
    server_conn: u64,
    goid: u64,
    request_seq: u32,
    response_seq: u32,
    tid: u32,
}

#[derive(Default)]
struct Stream {
    next_goid: u64,
}

impl Stream {
    fn next_conn(&mut self, t0: u64, i: u64) -> ConnPlan {
        self.next_goid += 1;
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i % SOURCES).unwrap());
        let port = 1_024 + u16::try_from((i / SOURCES) % 60_000).unwrap();
        let seq = u32::try_from(i.wrapping_mul(2_654_435_761) & 0xffff_ffff).unwrap();
        ConnPlan {
            t0,
            client: SocketAddr::from((source, port)),
            server: SocketAddr::from(([127, 0, 0, 1], 8080)),
            client_conn: 2 * i + 1,
            server_conn: 2 * i + 2,
            goid: 1_000 + self.next_goid,
            request_seq: seq,
            response_seq: seq ^ 0x5555_5555,
            tid: CLIENT_PID + u32::try_from(i % 8).unwrap(),
        }
    }
}

/// The events of one connection in the agent's order: connect and accept, the request, the
/// Go handler's run, the response, both exchanges, and (`close`) the server's close, then the
/// client's.
fn connect_and_request(c: &mut Correlator, p: &ConnPlan, close: bool) {
    let t = p.t0;
    c.on_event(&conn(ConnKind::Connect, p, false, t));
    c.on_event(&conn(ConnKind::Accept, p, true, t + 50_000));
    c.on_event(&data(p, false, Direction::Egress, t + 100_000));
    c.on_event(&data(p, true, Direction::Ingress, t + 110_000));
    c.on_event(&serve(p, true, t + 120_000));
    c.on_event(&Event::GoConnUse(GoConnUse {
        role: ConnRole::Server,
        stream_id: None,
        pid: SERVER_PID,
        tid: SERVER_PID,
        goid: p.goid,
        conn: GoConnection {
            fd: 5,
            endpoints: Some((p.server, p.client)),
        },
        ts_ns: t + 120_000,
    }));
    c.on_event(&serve(p, false, t + 200_000));
    c.on_event(&data(p, true, Direction::Egress, t + 210_000));
    c.on_exchange(exchange(p, true, (t + 110_000, t + 210_000)));
    c.on_event(&data(p, false, Direction::Ingress, t + 220_000));
    c.on_exchange(exchange(p, false, (t + 100_000, t + 220_000)));
    if close {
        c.on_event(&conn(ConnKind::Close, p, true, t + 230_000));
        c.on_event(&conn(ConnKind::Close, p, false, t + 240_000));
    }
}

fn conn(kind: ConnKind, p: &ConnPlan, server: bool, ts_ns: u64) -> Event {
    let (pid, tid, conn_id, local, remote) = ends(p, server);
    Event::Conn(Conn {
        kind,
        pid,
        tid,
        comm: comm(server),
        conn_id,
        local,
        remote,
        ts_ns,
        mode: AttachMode::Tracepoint,
        errno: None,
    })
}

fn data(p: &ConnPlan, server: bool, direction: Direction, ts: u64) -> Event {
    let (pid, tid, conn_id, local, remote) = ends(p, server);
    let request =
        direction == Direction::Ingress && server || direction == Direction::Egress && !server;
    let (seq, payload) = if request {
        (
            p.request_seq,
            &b"GET /hello?name=c1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        )
    } else {
        (
            p.response_seq,
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello c1\n"[..],
        )
    };
    Event::Data(Data {
        direction,
        pid,
        tid,
        comm: comm(server),
        fd: 5,
        conn_id,
        local,
        remote,
        bytes: payload.len() as u64,
        seq,
        goid: server.then_some(p.goid),
        ts_enter_ns: ts - 1_000,
        ts_exit_ns: ts,
        payload: payload.to_vec(),
        windows: Vec::new(),
        tls: false,
    })
}

fn serve(p: &ConnPlan, start: bool, ts_ns: u64) -> Event {
    Event::GoServe(GoServe {
        client: false,
        start,
        pid: SERVER_PID,
        tid: SERVER_PID,
        goid: p.goid,
        method: if start { "GET".into() } else { String::new() },
        path: if start {
            "/hello".into()
        } else {
            String::new()
        },
        host: String::new(),
        status: (!start).then_some(200),
        server: 0,
        ts_ns,
    })
}

fn exchange(p: &ConnPlan, server: bool, times: (u64, u64)) -> ConnExchange {
    let (pid, tid, conn_id, local, remote) = ends(p, server);
    ConnExchange {
        conn_id,
        pid,
        comm: comm(server),
        local,
        remote,
        exchange: Exchange {
            request_direction: if server {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            start_ns: times.0,
            origin: Origin {
                seq: p.request_seq,
                tid,
                goid: server.then_some(p.goid),
            },
            end_ns: times.1,
            request_bytes: 40,
            response_bytes: 48,
            wire: wirespan::protocol::WireSeqs::default(),
            detail: Detail::Http(Http {
                version: Some(HttpVersion::Http11),
                method: "GET".into(),
                target: "/hello?name=c1".into(),
                host: Some("x".into()),
                headers: Interesting::default(),
                status: Some(200),
                stream_id: None,
            }),
            flags: Flags::default(),
        },
    }
}

/// (pid, tid, conn id, local, remote) of the server's or the client's end.
fn ends(p: &ConnPlan, server: bool) -> (u32, u32, u64, SocketAddr, SocketAddr) {
    if server {
        (SERVER_PID, SERVER_PID, p.server_conn, p.server, p.client)
    } else {
        (CLIENT_PID, p.tid, p.client_conn, p.client, p.server)
    }
}

fn comm(server: bool) -> String {
    if server { "server" } else { "client" }.into()
}
