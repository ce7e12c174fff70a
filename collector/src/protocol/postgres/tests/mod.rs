//! PostgreSQL decoder tests over byte streams shaped as libpq, pgx and the server write them
//! (`real.rs` holds streams captured from PostgreSQL 15), cut at every split point,
//! pipelined, with errors, COPY, encryption requests, gaps and joins mid-connection.

use super::*;

mod damage;
mod extended;
mod real;

pub(super) const CLIENT: Direction = Direction::Egress;
pub(super) const SERVER: Direction = Direction::Ingress;

pub(super) fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![ty];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(p.as_bytes());
        out.push(0);
    }
    out
}

pub(super) fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend(cstrs(&[k, v]));
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend(body);
    out
}

pub(super) fn ssl_request() -> Vec<u8> {
    let mut out = 8u32.to_be_bytes().to_vec();
    out.extend(80_877_103u32.to_be_bytes());
    out
}

pub(super) fn query(text: &str) -> Vec<u8> {
    msg(b'Q', &cstrs(&[text]))
}

pub(super) fn parse(name: &str, text: &str) -> Vec<u8> {
    let mut body = cstrs(&[name, text]);
    body.extend([0, 1, 0, 0, 0, 23]);
    msg(b'P', &body)
}

pub(super) fn bind(portal: &str, stmt: &str, value: &[u8]) -> Vec<u8> {
    let mut body = cstrs(&[portal, stmt]);
    body.extend([0, 0, 0, 1]);
    body.extend((value.len() as u32).to_be_bytes());
    body.extend(value);
    body.extend([0, 0]);
    msg(b'B', &body)
}

pub(super) fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend(cstrs(&[name]));
    msg(b'D', &body)
}

pub(super) fn execute(portal: &str) -> Vec<u8> {
    let mut body = cstrs(&[portal]);
    body.extend([0, 0, 0, 0]);
    msg(b'E', &body)
}

pub(super) fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

pub(super) fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

pub(super) fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstrs(&[tag]))
}

pub(super) fn row_description() -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend(cstrs(&["id"]));
    body.extend([
        0, 0, 0x40, 0x01, 0, 1, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
    ]);
    msg(b'T', &body)
}

pub(super) fn data_row(value: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend((value.len() as u32).to_be_bytes());
    body.extend(value);
    msg(b'D', &body)
}

pub(super) fn error(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        body.push(code);
        body.extend(cstrs(&[value]));
    }
    body.push(0);
    msg(b'E', &body)
}

/// The server's answer to a startup with trust authentication.
pub(super) fn auth_ok() -> Vec<u8> {
    let mut out = msg(b'R', &[0, 0, 0, 0]);
    out.extend(msg(b'S', &cstrs(&["server_version", "15.8"])));
    out.extend(msg(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
    out.extend(ready(b'I'));
    out
}

pub(super) fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Feeds segments with increasing times and TCP sequence numbers per direction.
pub(super) struct Feeder {
    pub conn: PgConn,
    pub out: Vec<Exchange>,
    pub t: u64,
    seq: [u32; 2],
    pub tls: bool,
}

impl Feeder {
    pub fn new() -> Self {
        Self::with(PgConn::new(CLIENT))
    }

    pub fn with(conn: PgConn) -> Self {
        Self {
            conn,
            out: Vec::new(),
            t: 0,
            seq: [1000, 5000],
            tls: false,
        }
    }

    /// One syscall of `bytes`, of which the first `captured` were captured.
    pub fn cut(&mut self, direction: Direction, bytes: &[u8], captured: usize) {
        self.t += 10;
        let i = usize::from(direction == SERVER);
        let captured = captured.min(bytes.len());
        let seg = Segment {
            direction,
            origin: Origin {
                seq: self.seq[i],
                tid: 7,
                goid: None,
            },
            data: &bytes[..captured],
            missing: (bytes.len() - captured) as u64,
            windows: &[],
            ts_enter_ns: self.t,
            ts_exit_ns: self.t + 1,
            tls: self.tls,
        };
        self.seq[i] = self.seq[i].wrapping_add(bytes.len() as u32);
        self.conn.feed(&seg, &mut self.out);
    }

    pub fn send(&mut self, direction: Direction, bytes: &[u8]) {
        self.cut(direction, bytes, bytes.len());
    }

    pub fn connect(&mut self, database: &str) {
        self.send(
            CLIENT,
            &startup(&[("user", "alice"), ("database", database)]),
        );
        self.send(SERVER, &auth_ok());
    }
}

/// An exchange's database part, in short: operation, collection, text, statement, status,
/// batch size.
pub(super) fn db(e: &Exchange) -> &Db {
    match &e.detail {
        Detail::Db(db) => db,
        other => panic!("not a database exchange: {other:?}"),
    }
}

pub(super) fn summary(out: &[Exchange]) -> Vec<String> {
    out.iter()
        .map(|e| {
            let d = db(e);
            format!(
                "{} {} | {} | {} | {} | {}",
                d.operation,
                d.collection.as_deref().unwrap_or("-"),
                d.query_text.as_deref().unwrap_or("-"),
                d.statement
                    .as_deref()
                    .map_or("-".to_owned(), |s| format!("{s:?}")),
                d.status_code.as_deref().unwrap_or("ok"),
                d.batch_size,
            )
        })
        .collect()
}

#[test]
fn startup_then_simple_query() {
    let mut f = Feeder::new();
    f.connect("shop");
    assert!(f.out.is_empty(), "the startup makes no exchange");
    let q = query("SELECT id FROM orders WHERE total > 100 AND note = 'secret'");
    let response = cat(&[
        row_description(),
        data_row(b"42"),
        complete("SELECT 1"),
        ready(b'I'),
    ]);
    let (t0, seq_q) = (f.t + 10, f.seq[0]);
    f.send(CLIENT, &q);
    let seq_r = f.seq[1];
    f.send(SERVER, &response);
    assert_eq!(
        summary(&f.out),
        ["SELECT orders | SELECT id FROM orders WHERE total > ? AND note = ? | - | ok | 1"]
    );
    let e = &f.out[0];
    assert_eq!(db(e).namespace.as_deref(), Some("shop"));
    assert_eq!(e.request_bytes, q.len() as u64);
    assert_eq!(e.response_bytes, response.len() as u64);
    assert_eq!(e.start_ns, t0);
    assert_eq!(e.end_ns, f.t + 1);
    assert_eq!(e.origin.seq, seq_q);
    assert_eq!(e.wire, WireSeqs::of(seq_q, seq_r));
    assert_eq!(e.request_direction, CLIENT);
    assert_eq!(e.flags, Flags::default());
    assert!(
        !format!("{e:?}").contains("alice"),
        "the user name is not kept"
    );
}

#[test]
fn errors_carry_sqlstate_never_the_message() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(
        CLIENT,
        &query("INSERT INTO users (email) VALUES ('bob@example.com')"),
    );
    f.send(
        SERVER,
        &cat(&[
            error(
                "23505",
                "duplicate key value violates unique constraint \"users_email\": bob@example.com",
            ),
            ready(b'I'),
        ]),
    );
    assert_eq!(
        summary(&f.out),
        ["INSERT users | INSERT INTO users (email) VALUES (?) | - | 23505 | 1"]
    );
    assert!(!format!("{:?}", f.out).contains("bob@"));
}

#[test]
fn several_statements_in_one_query() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(
        CLIENT,
        &query("BEGIN; UPDATE stock SET n = n - 1 WHERE id = 3; COMMIT"),
    );
    f.send(
        SERVER,
        &cat(&[
            complete("BEGIN"),
            complete("UPDATE 1"),
            complete("COMMIT"),
            ready(b'I'),
        ]),
    );
    assert_eq!(
        summary(&f.out),
        ["BEGIN - | BEGIN; UPDATE stock SET n = n - ? WHERE id = ?; COMMIT | - | ok | 3"]
    );
}

#[test]
fn empty_query_takes_its_operation_from_the_tag() {
    // A comment-only text has no keyword; the tag (here a made-up reply) names the command.
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(CLIENT, &query("/* only a comment */"));
    f.send(SERVER, &cat(&[complete("SELECT 0"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["SELECT - | - | - | ok | 1"]);
}

#[test]
fn copy_in_and_out_are_skipped() {
    let mut f = Feeder::new();
    f.connect("shop");
    let q = query("COPY items (a, b) FROM STDIN");
    f.send(CLIENT, &q);
    f.send(SERVER, &msg(b'G', &[0, 0, 2, 0, 0, 0, 0]));
    let data = cat(&[
        msg(b'd', b"1\tsecret\n"),
        msg(b'd', b"2\tsecret\n"),
        msg(b'c', &[]),
    ]);
    f.send(CLIENT, &data);
    f.send(SERVER, &cat(&[complete("COPY 2"), ready(b'I')]));
    f.send(CLIENT, &query("COPY items TO STDOUT"));
    f.send(
        SERVER,
        &cat(&[
            msg(b'H', &[0, 0, 2, 0, 0, 0, 0]),
            msg(b'd', b"1\tsecret\n"),
            msg(b'c', &[]),
            complete("COPY 1"),
            ready(b'I'),
        ]),
    );
    assert_eq!(
        summary(&f.out),
        [
            "COPY items | COPY items (a, b) FROM STDIN | - | ok | 1",
            "COPY items | COPY items TO STDOUT | - | ok | 1",
        ]
    );
    assert_eq!(f.out[0].request_bytes, (q.len() + data.len()) as u64);
    assert_eq!(f.conn.stats.copy_messages, 3);
}

#[test]
fn ssl_request_answered_n_continues_in_the_clear() {
    let mut f = Feeder::new();
    f.send(CLIENT, &ssl_request());
    f.send(SERVER, b"N");
    f.connect("shop");
    f.send(CLIENT, &query("SELECT 1"));
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["SELECT - | SELECT ? | - | ok | 1"]);
    assert_eq!(f.conn.stats.encrypted, 0);
}

#[test]
fn ssl_request_answered_s_skips_ciphertext_and_reads_plaintext() {
    let mut f = Feeder::new();
    f.send(CLIENT, &ssl_request());
    f.send(SERVER, b"S");
    // The TLS handshake on the socket: skipped.
    f.send(CLIENT, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    f.send(SERVER, &[0x16, 0x03, 0x03, 0x00, 0x02, 1, 2]);
    assert_eq!(f.conn.stats.encrypted, 1);
    assert_eq!(f.conn.stats.encrypted_segments, 2);
    // The TLS library's plaintext (uprobes): the startup, then queries.
    f.tls = true;
    f.connect("secure");
    f.send(CLIENT, &query("SELECT 1"));
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["SELECT - | SELECT ? | - | ok | 1"]);
    assert_eq!(db(&f.out[0]).namespace.as_deref(), Some("secure"));
    assert_eq!(f.out[0].wire, WireSeqs::default());
}

#[test]
fn cancel_request_is_counted() {
    let mut f = Feeder::new();
    let mut cancel = 16u32.to_be_bytes().to_vec();
    cancel.extend(80_877_102u32.to_be_bytes());
    cancel.extend([0, 0, 0x30, 0x39, 1, 2, 3, 4]);
    assert!(looks_like_postgres(&cancel, true));
    f.send(CLIENT, &cancel);
    assert_eq!(f.conn.stats.cancel_requests, 1);
    assert_eq!(f.out, []);
}

#[test]
fn recognition_is_strict() {
    let s = startup(&[("user", "alice"), ("database", "shop")]);
    assert!(looks_like_postgres(&s, true));
    assert!(!looks_like_postgres(&s, false));
    assert!(looks_like_postgres(&ssl_request(), true));
    // Cut by the capture: still recognised as far as it goes.
    assert!(looks_like_postgres(&s[..20], true));
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        &startup(&[("database", "shop")]),     // no user
        &[0, 0, 0, 8, 0, 3, 0, 0],             // no parameters
        &[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f, 0], // SSLRequest with a byte more
        &query("SELECT 1"),
    ] {
        assert!(!looks_like_postgres(bad, true), "{bad:?}");
    }
    assert!(looks_like_client_messages(&query("SELECT 1")));
    assert!(looks_like_client_messages(&cat(&[
        parse("", "SELECT 1"),
        sync()
    ])));
    assert!(!looks_like_client_messages(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(!looks_like_client_messages(&cat(&[
        query("SELECT 1"),
        b"junk".to_vec()
    ])));
}

#[test]
fn close_emits_requests_without_responses() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(CLIENT, &query("SELECT pg_sleep(10)"));
    f.send(SERVER, &row_description());
    f.conn.close(999, &mut f.out);
    assert_eq!(f.out.len(), 1);
    assert!(f.out[0].flags.no_response);
    assert_eq!(f.out[0].end_ns, 999);
    assert_eq!(f.out[0].response_bytes, row_description().len() as u64);
}

#[test]
fn statements_are_bounded() {
    let mut f = Feeder::new();
    f.connect("shop");
    for i in 0..MAX_STATEMENTS + 10 {
        f.send(CLIENT, &cat(&[parse(&format!("s{i}"), "SELECT 1"), sync()]));
        f.send(SERVER, &cat(&[msg(b'1', &[]), ready(b'I')]));
    }
    assert_eq!(f.conn.statements.len(), MAX_STATEMENTS);
    assert_eq!(f.conn.stats.statements_evicted, 10);
    assert!(f.conn.buffered_bytes() < 200_000);
}
