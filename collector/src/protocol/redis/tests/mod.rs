//! Redis decoder tests over byte streams captured from redis-server 7.0 (RESP2 and RESP3,
//! written by hand only where noted), cut at every split point, pipelined, with errors, gaps
//! where `--capture-bytes` cut a syscall, and joins mid-connection.

use super::*;

mod damage;
mod pubsub;
mod recognition;

const CLIENT: Direction = Direction::Egress;
const SERVER: Direction = Direction::Ingress;

/// A RESP command as clients write it.
fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Feeds segments with increasing times and TCP sequence numbers per direction.
struct Feeder {
    conn: RedisConn,
    out: Vec<Exchange>,
    t: u64,
    seq: [u32; 2],
    tls: bool,
}

impl Feeder {
    fn new() -> Self {
        Self {
            conn: RedisConn::new(CLIENT),
            out: Vec::new(),
            t: 0,
            seq: [1000, 5000],
            tls: false,
        }
    }

    fn from_start() -> Self {
        let mut f = Self::new();
        f.conn.saw_connection_start();
        f
    }

    fn seg(&mut self, direction: Direction, data: &[u8], missing: u64) -> &mut Self {
        self.t += 100;
        let side = usize::from(direction == SERVER);
        self.conn.feed(
            &Segment {
                direction,
                origin: Origin {
                    seq: self.seq[side],
                    tid: 7,
                    goid: None,
                },
                data,
                missing,
                windows: &[],
                ts_enter_ns: self.t,
                ts_exit_ns: self.t + 10,
                tls: self.tls,
            },
            &mut self.out,
        );
        self.seq[side] = self.seq[side].wrapping_add((data.len() as u64 + missing) as u32);
        self
    }

    fn client(&mut self, data: &[u8]) -> &mut Self {
        self.seg(CLIENT, data, 0)
    }

    fn server(&mut self, data: &[u8]) -> &mut Self {
        self.seg(SERVER, data, 0)
    }

    fn close(&mut self) -> Vec<Exchange> {
        self.conn.close(1_000_000, &mut self.out);
        std::mem::take(&mut self.out)
    }
}

fn db(e: &Exchange) -> &Db {
    match &e.detail {
        Detail::Db(db) => db,
        other => panic!("not a db exchange: {other:?}"),
    }
}

/// (operation, query text, status, namespace) per exchange.
fn summary(out: &[Exchange]) -> Vec<(String, String, String, String)> {
    out.iter()
        .map(|e| {
            let d = db(e);
            (
                d.operation.clone(),
                d.query_text.clone().unwrap_or_default(),
                d.status_code.clone().unwrap_or_default(),
                d.namespace.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn row(op: &str, text: &str, status: &str, ns: &str) -> (String, String, String, String) {
    (op.into(), text.into(), status.into(), ns.into())
}

/// Commands of a RESP3 session and redis-server 7.0.15's replies, byte for byte.
fn session() -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (
            cmd(&[b"HELLO", b"3"]),
            b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n".to_vec(),
        ),
        (cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n".to_vec()),
        (cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n".to_vec()),
        (cmd(&[b"GET", b"nokey"]), b"_\r\n".to_vec()),
        (
            cmd(&[b"LPUSH", b"k", b"x"]),
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n".to_vec(),
        ),
        (cmd(&[b"SELECT", b"2"]), b"+OK\r\n".to_vec()),
        (cmd(&[b"SELECT", b"99"]), b"-ERR DB index is out of range\r\n".to_vec()),
        (
            cmd(&[b"DEBUG", b"PROTOCOL", b"map"]),
            b"%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n".to_vec(),
        ),
        (cmd(&[b"DEBUG", b"PROTOCOL", b"set"]), b"~3\r\n:0\r\n:1\r\n:2\r\n".to_vec()),
        (cmd(&[b"DEBUG", b"PROTOCOL", b"double"]), b",3.141\r\n".to_vec()),
        (
            cmd(&[b"DEBUG", b"PROTOCOL", b"bignum"]),
            b"(1234567999999999999999999999999999999\r\n".to_vec(),
        ),
        (cmd(&[b"DEBUG", b"PROTOCOL", b"true"]), b"#t\r\n".to_vec()),
        (
            cmd(&[b"DEBUG", b"PROTOCOL", b"verbatim"]),
            b"=29\r\ntxt:This is a verbatim\nstring\r\n".to_vec(),
        ),
        (
            cmd(&[b"DEBUG", b"PROTOCOL", b"attrib"]),
            b"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n$39\r\nSome real reply following the attribute\r\n".to_vec(),
        ),
        (cmd(&[b"MULTI"]), b"+OK\r\n".to_vec()),
        (cmd(&[b"INCR", b"c"]), b"+QUEUED\r\n".to_vec()),
        (cmd(&[b"EXEC"]), b"*1\r\n:1\r\n".to_vec()),
        (b"PING\r\n".to_vec(), b"+PONG\r\n".to_vec()),
        (
            cmd(&[b"NOPE", b"x"]),
            b"-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n".to_vec(),
        ),
    ]
}

fn session_summary() -> Vec<(String, String, String, String)> {
    vec![
        row("HELLO", "HELLO ?", "", "0"),
        row("SET", "SET ? ?", "", "0"),
        row("GET", "GET ?", "", "0"),
        row("GET", "GET ?", "", "0"),
        row("LPUSH", "LPUSH ? ?", "WRONGTYPE", "0"),
        row("SELECT", "SELECT ?", "", "2"),
        row("SELECT", "SELECT ?", "ERR", "2"),
        row("DEBUG", "DEBUG PROTOCOL ?", "", "2"),
        row("DEBUG", "DEBUG PROTOCOL ?", "", "2"),
        row("DEBUG", "DEBUG PROTOCOL ?", "", "2"),
        row("DEBUG", "DEBUG PROTOCOL ?", "", "2"),
        row("DEBUG", "DEBUG PROTOCOL ?", "", "2"),
        row("DEBUG", "DEBUG PROTOCOL ?", "", "2"),
        row("DEBUG", "DEBUG PROTOCOL ?", "", "2"),
        row("MULTI", "MULTI", "", "2"),
        row("INCR", "INCR ?", "", "2"),
        row("EXEC", "EXEC", "", "2"),
        row("PING", "PING", "", "2"),
        row("NOPE", "NOPE ?", "ERR", "2"),
    ]
}

#[test]
fn a_real_session_pairs_each_command_with_its_reply() {
    let mut f = Feeder::from_start();
    for (c, r) in session() {
        f.client(&c).server(&r);
    }
    let out = f.close();
    assert_eq!(summary(&out), session_summary());
    for (e, (c, r)) in out.iter().zip(session()) {
        assert_eq!(e.request_bytes, c.len() as u64);
        assert_eq!(e.response_bytes, r.len() as u64);
        assert!(e.end_ns > e.start_ns);
        assert_eq!(e.flags, Flags::default());
    }
    assert_eq!(f.conn.stats, RedisStats::default());
}

#[test]
fn a_pipeline_cut_at_every_split_point_decodes_the_same() {
    let requests: Vec<u8> = session().iter().flat_map(|(c, _)| c.clone()).collect();
    let replies: Vec<u8> = session().iter().flat_map(|(_, r)| r.clone()).collect();
    let mut whole = Feeder::from_start();
    whole.client(&requests).server(&replies);
    let expected = whole.close();
    assert_eq!(summary(&expected), session_summary());
    for at in 0..=requests.len().max(replies.len()) {
        let mut f = Feeder::from_start();
        let (asked, asked_rest) = requests.split_at(at.min(requests.len()));
        let (answered, answered_rest) = replies.split_at(at.min(replies.len()));
        f.client(asked)
            .client(asked_rest)
            .server(answered)
            .server(answered_rest);
        let out = f.close();
        assert_eq!(summary(&out), session_summary(), "split at {at}");
        for (x, y) in out.iter().zip(&expected) {
            assert_eq!(
                (x.request_bytes, x.response_bytes, x.wire),
                (y.request_bytes, y.response_bytes, y.wire),
                "split at {at}"
            );
        }
        assert_eq!(f.conn.stats, RedisStats::default(), "split at {at}");
    }
    // One byte per syscall.
    let mut f = Feeder::from_start();
    for b in &requests {
        f.client(std::slice::from_ref(b));
    }
    for b in &replies {
        f.server(std::slice::from_ref(b));
    }
    assert_eq!(summary(&f.close()), session_summary());
}

#[test]
fn pipelined_exchanges_carry_their_own_wire_numbers_and_times() {
    let mut f = Feeder::from_start();
    let (get, set) = (cmd(&[b"GET", b"a"]), cmd(&[b"SET", b"a", b"1"]));
    f.client(&[get.clone(), set.clone()].concat())
        .server(b"$-1\r\n+OK\r\n");
    let out = f.close();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].wire, WireSeqs::of(1000, 5000));
    assert_eq!(out[1].wire, WireSeqs::of(1000 + get.len() as u32, 5005));
    assert_eq!((out[0].start_ns, out[1].start_ns), (100, 100));
    assert_eq!((out[0].end_ns, out[1].end_ns), (210, 210));
    assert_eq!((out[0].response_bytes, out[1].response_bytes), (5, 5));
    assert_eq!(out[1].request_bytes, set.len() as u64);

    let mut f = Feeder::from_start();
    f.tls = true;
    f.client(&get).server(b"$-1\r\n");
    assert_eq!(f.close()[0].wire, WireSeqs::default());
}

#[test]
fn errors_carry_their_prefix_never_their_message() {
    let mut f = Feeder::from_start();
    for (c, r) in [
        (
            cmd(&[b"EVAL", b"x", b"0"]),
            &b"-NOSCRIPT No matching script\r\n"[..],
        ),
        (cmd(&[b"GET", b"k"]), b"-MOVED 3999 127.0.0.1:6381\r\n"),
        (cmd(&[b"GET", b"k"]), b"-user_script:1: oops secret\r\n"),
        (cmd(&[b"GET", b"k"]), b"!21\r\nSYNTAX invalid syntax\r\n"),
        (
            cmd(&[b"AUTH", b"hunter2"]),
            b"-WRONGPASS invalid username-password pair\r\n",
        ),
    ] {
        f.client(&c).server(r);
    }
    let out = f.close();
    let status: Vec<_> = out.iter().map(|e| db(e).status_code.clone()).collect();
    let want = ["NOSCRIPT", "MOVED", "ERR", "SYNTAX", "WRONGPASS"];
    assert_eq!(status, want.map(|s| Some(s.to_owned())));
    assert_eq!(db(&out[4]).query_text.as_deref(), Some("AUTH ?"));
    let all = format!("{out:?}");
    for secret in ["hunter2", "secret", "oops", "6381", "invalid"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
}

#[test]
fn passwords_and_values_are_never_kept() {
    let mut f = Feeder::from_start();
    f.client(&cmd(&[
        b"HELLO", b"3", b"AUTH", b"alice", b"s3cret", b"SETNAME", b"app",
    ]))
    .server(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
    .client(&cmd(&[b"AUTH", b"alice", b"s3cret"]))
    .server(b"+OK\r\n")
    .client(&cmd(&[b"SET", b"session:42", b"{\"token\":\"abc\"}"]))
    .server(b"+OK\r\n")
    .client(b"SET inlinekey inlinevalue\r\n")
    .server(b"+OK\r\n");
    let out = f.close();
    let texts: Vec<_> = out
        .iter()
        .map(|e| db(e).query_text.clone().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["HELLO ? ? ? ? ? ?", "AUTH ? ?", "SET ? ?", "SET ? ?"]
    );
    let all = format!("{out:?}");
    for secret in ["alice", "s3cret", "session", "token", "inline", "app"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
}

#[test]
fn subcommands_are_part_of_the_text_and_the_operation_is_the_command() {
    let mut f = Feeder::from_start();
    for c in [
        cmd(&[b"CLIENT", b"SETNAME", b"worker-1"]),
        cmd(&[b"config", b"get", b"maxmemory"]),
        cmd(&[b"OBJECT", b"ENCODING", b"k"]),
        cmd(&[b"CLIENT", b"not a word!"]),
        cmd(&[b"JSON.GET", b"doc", b"$"]),
        cmd(&[&b"MSET"[..]; 100]),
        cmd(&[b"\x00\xff", b"x"]),
    ] {
        f.client(&c).server(b"+OK\r\n");
    }
    let out = f.close();
    let texts: Vec<_> = out.iter().map(|e| db(e).query_text.clone()).collect();
    let mset = format!("MSET{} ...", " ?".repeat(64));
    assert_eq!(
        texts,
        [
            Some("CLIENT SETNAME ?"),
            Some("CONFIG GET ?"),
            Some("OBJECT ENCODING ?"),
            Some("CLIENT ?"),
            Some("JSON.GET ? ?"),
            Some(mset.as_str()),
            None,
        ]
        .map(|t| t.map(str::to_owned))
    );
    let ops: Vec<_> = out.iter().map(|e| db(e).operation.as_str()).collect();
    assert_eq!(
        ops,
        [
            "CLIENT", "CONFIG", "OBJECT", "CLIENT", "JSON.GET", "MSET", ""
        ]
    );
}

#[test]
fn inline_commands_are_commands() {
    let mut f = Feeder::from_start();
    f.client(b"PING\r\n\r\nset  a   b\nSELECT 3\r\n")
        .server(b"+PONG\r\n+OK\r\n+OK\r\n")
        .client(b"GET a\r\n")
        .server(b"$1\r\nb\r\n");
    assert_eq!(
        summary(&f.close()),
        [
            row("PING", "PING", "", "0"),
            row("SET", "SET ? ?", "", "0"),
            row("SELECT", "SELECT ?", "", "3"),
            row("GET", "GET ?", "", "3"),
        ]
    );
}

#[test]
fn large_values_are_skipped_by_count_when_not_captured() {
    let value = vec![b'x'; 1 << 20];
    let set = cmd(&[b"SET", b"big", &value]);
    let get = cmd(&[b"GET", b"big"]);
    let reply = [format!("${}\r\n", value.len()).as_bytes(), &value, b"\r\n"].concat();
    let mut f = Feeder::from_start();
    // 256 bytes captured per syscall, the rest only counted.
    f.seg(CLIENT, &set[..256], set.len() as u64 - 256)
        .server(b"+OK\r\n")
        .client(&get)
        .seg(SERVER, &reply[..256], reply.len() as u64 - 256)
        .client(&get)
        .seg(SERVER, &reply[..100], 1000)
        .seg(SERVER, &reply[1100..2000], reply.len() as u64 - 2000)
        .client(&cmd(&[b"PING"]))
        .server(b"+PONG\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [
            row("SET", "SET ? ?", "", "0"),
            row("GET", "GET ?", "", "0"),
            row("GET", "GET ?", "", "0"),
            row("PING", "PING", "", "0"),
        ]
    );
    assert_eq!(out[0].request_bytes, set.len() as u64);
    assert_eq!(out[1].response_bytes, reply.len() as u64);
    assert_eq!(out[2].response_bytes, reply.len() as u64);
    assert!(out.iter().all(|e| e.flags == Flags::default()));
    assert_eq!(f.conn.stats, RedisStats::default());
}

#[test]
fn a_name_cut_by_the_capture_is_not_guessed() {
    let mut f = Feeder::from_start();
    f.seg(CLIENT, b"*1\r\n$4\r\nPI", 4)
        .server(b"+PONG\r\n")
        .client(&cmd(&[b"PING"]))
        .server(b"+PONG\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [row("", "", "", "0"), row("PING", "PING", "", "0")]
    );
    assert!(out[0].flags.truncated && !out[1].flags.truncated);
    assert_eq!(out[0].request_bytes, 14);
}

#[test]
fn a_gap_in_a_command_header_keeps_the_command_truncated() {
    let mut f = Feeder::from_start();
    let set = cmd(&[b"SET", b"k", b"v"]);
    // The capture kept `*3\r\n$3\r\nSET\r\n$` and counted the rest.
    f.seg(CLIENT, &set[..14], set.len() as u64 - 14)
        .server(b"+OK\r\n")
        // A syscall in the middle of nothing recognisable is skipped...
        .client(b"garbage\r\n")
        // ...until one starts a command.
        .client(&cmd(&[b"GET", b"k"]))
        .server(b"$1\r\nv\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [row("SET", "SET ? ?", "", "0"), row("GET", "GET ?", "", "0")]
    );
    assert!(out[0].flags.truncated);
    assert_eq!(out[0].request_bytes, set.len() as u64);
    assert_eq!(f.conn.stats.cut_commands, 1);
    assert_eq!(f.conn.stats.request_desyncs, 1);

    // Cut before the name: the command is kept without one.
    let mut f = Feeder::from_start();
    f.seg(CLIENT, b"*2\r\n$3", 10)
        .server(b"$1\r\nv\r\n")
        .client(&cmd(&[b"PING"]))
        .server(b"+PONG\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [row("", "", "", "0"), row("PING", "PING", "", "0")]
    );
    assert!(out[0].flags.truncated);
}

#[test]
fn a_gap_in_reply_framing_ends_the_waiting_commands_truncated() {
    let mut f = Feeder::from_start();
    f.client(&[cmd(&[b"GET", b"a"]), cmd(&[b"GET", b"b"])].concat())
        // `+OK\r` then uncaptured bytes: the framing is lost.
        .seg(SERVER, b"$2\r\nok\r\n+O", 30)
        // Replies arriving out of framing are not paired.
        .server(b"ut of frame\r\n")
        .client(&cmd(&[b"PING"]))
        .server(b"+PONG\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [
            row("GET", "GET ?", "", "0"),
            row("GET", "GET ?", "", "0"),
            row("PING", "PING", "", "0"),
        ]
    );
    assert!(!out[0].flags.truncated && out[1].flags.truncated && !out[2].flags.truncated);
    assert_eq!(out[1].response_bytes, 2);
    assert_eq!(f.conn.stats.response_desyncs, 1);
    assert_eq!(f.conn.stats.lost_replies, 1);
}

#[test]
fn joining_mid_connection_pairs_only_replies_to_seen_commands() {
    let mut f = Feeder::new();
    // The tail of a reply to a command sent before the capture, then the middle of a value.
    f.server(b"lo\r\n")
        .server(b"+OK\r\n")
        .seg(CLIENT, b"e-middle-of-a-value\r\n", 0)
        .client(&cmd(&[b"GET", b"k"]))
        .server(b"$5\r\nhello\r\n")
        .client(&cmd(&[b"SELECT", b"4"]))
        .server(b"+OK\r\n")
        .client(&cmd(&[b"GET", b"k"]))
        .server(b"_\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [
            row("GET", "GET ?", "", ""),
            row("SELECT", "SELECT ?", "", "4"),
            row("GET", "GET ?", "", "4"),
        ]
    );
    assert_eq!(f.conn.stats.unmatched_replies, 1);
    assert_eq!(f.conn.stats.namespace_unknown, 1);
}

#[test]
fn a_reply_that_started_before_its_command_answers_an_earlier_one() {
    let mut f = Feeder::new();
    f.t = 200;
    f.client(&cmd(&[b"GET", b"k"]));
    // Read (and so started) before the command was written: it answered one the capture
    // missed.
    f.t = 0;
    f.server(b"+OK\r\n");
    f.t = 300;
    f.server(b"$1\r\nv\r\n");
    let out = f.close();
    assert_eq!(summary(&out), [row("GET", "GET ?", "", "")]);
    assert_eq!(out[0].response_bytes, 7);
    assert_eq!(f.conn.stats.unmatched_replies, 1);
}

#[test]
fn waiting_commands_are_bounded_and_their_replies_skipped() {
    let mut f = Feeder::from_start();
    let many: Vec<u8> = (0..MAX_PENDING + 2)
        .flat_map(|_| cmd(&[b"INCR", b"n"]))
        .collect();
    f.client(&many);
    let replies: Vec<u8> = (1..=MAX_PENDING + 2)
        .flat_map(|i| format!(":{i}\r\n").into_bytes())
        .collect();
    f.server(&replies);
    let out = f.close();
    assert_eq!(out.len(), MAX_PENDING);
    assert_eq!(f.conn.stats.pending_overflow, 2);
    assert_eq!(f.conn.stats.unmatched_replies, 2);
    // The third reply (":3") answers the first command kept.
    assert_eq!(out[0].response_bytes, 4);
    assert_eq!(out[0].wire.response, Some(5000 + 8));
}

#[test]
fn close_ends_the_waiting_commands_without_a_response() {
    let mut f = Feeder::from_start();
    f.client(&[cmd(&[b"BLPOP", b"q", b"0"]), cmd(&[b"GET", b"k"])].concat())
        .server(b"*2\r\n$1\r\nq\r\n");
    let out = f.close();
    assert_eq!(out.len(), 2);
    assert!(out[0].flags.truncated && !out[0].flags.no_response);
    assert!(out[1].flags.no_response);
}

#[test]
fn deep_nesting_is_bounded() {
    let mut f = Feeder::from_start();
    let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
    f.client(&cmd(&[b"GET", b"k"])).server(deep.as_bytes());
    let out = f.close();
    assert_eq!(out.len(), 1);
    assert!(out[0].flags.truncated);
    assert_eq!(f.conn.stats.too_deep, 1);
    // Nested as deep as allowed is fine.
    let mut f = Feeder::from_start();
    let deep = "*1\r\n".repeat(MAX_DEPTH) + ":1\r\n";
    f.client(&cmd(&[b"GET", b"k"])).server(deep.as_bytes());
    let out = f.close();
    assert_eq!(out[0].response_bytes, deep.len() as u64);
    assert_eq!(f.conn.stats, RedisStats::default());
}
