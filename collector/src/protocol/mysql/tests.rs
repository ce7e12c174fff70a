//! MySQL decoder tests over byte streams shaped like a real server's and client's (packets
//! written by hand after the protocol documentation, and a conversation recorded from MariaDB
//! with go-sql-driver/mysql in `tests_real.rs`): handshake, text and prepared statements, both
//! EOF styles, errors, cuts at every byte, gaps, mid-connection joins, TLS, recognition.

use super::*;
use crate::protocol::{Origin, fuzzing};

mod wire;

use self::wire::*;

pub(super) const C: Direction = Direction::Egress;
pub(super) const S: Direction = Direction::Ingress;

/// Feed (direction, bytes, missing) segments with increasing times and exact sequence numbers
/// (client bytes from 1000, server bytes from 50_000); then close.
pub(super) fn run_conn(segments: &[(Direction, Vec<u8>, u64)]) -> (Vec<Exchange>, MysqlConn) {
    let mut conn = MysqlConn::new(C);
    let mut out = Vec::new();
    let (mut client_pos, mut server_pos) = (1000u32, 50_000u32);
    for (i, (direction, data, missing)) in segments.iter().enumerate() {
        let t = (i as u64 + 1) * 100;
        let pos = if *direction == C {
            &mut client_pos
        } else {
            &mut server_pos
        };
        conn.feed(
            &Segment {
                direction: *direction,
                origin: Origin {
                    seq: *pos,
                    tid: 7,
                    goid: None,
                },
                data,
                missing: *missing,
                windows: &[],
                ts_enter_ns: t,
                ts_exit_ns: t + 10,
                tls: false,
            },
            &mut out,
        );
        *pos += (data.len() as u64 + missing) as u32;
    }
    conn.close(1_000_000, &mut out);
    (out, conn)
}

pub(super) fn run(segments: &[(Direction, Vec<u8>, u64)]) -> Vec<Exchange> {
    run_conn(segments).0
}

pub(super) fn db(e: &Exchange) -> &Db {
    match &e.detail {
        Detail::Db(db) => db,
        other => panic!("not a db exchange: {other:?}"),
    }
}

/// `OPERATION collection -> status [ns] text` per exchange.
pub(super) fn lines(out: &[Exchange]) -> Vec<String> {
    out.iter()
        .map(|e| {
            let d = db(e);
            format!(
                "{} {} -> {} ns={} stmt={} {}",
                d.operation,
                d.collection.as_deref().unwrap_or("-"),
                d.status_code.as_deref().unwrap_or("ok"),
                d.namespace.as_deref().unwrap_or("-"),
                d.statement.as_deref().unwrap_or("-"),
                d.query_text.as_deref().unwrap_or("-"),
            )
        })
        .collect()
}

/// A handshake for `caps` with database `shop`, the caching_sha2 fast-auth path.
pub(super) fn handshake(caps: u32) -> Vec<(Direction, Vec<u8>, u64)> {
    vec![
        (S, packet(0, &greeting(caps)), 0),
        (C, packet(1, &login(caps, Some("shop"))), 0),
        (
            S,
            [packet(2, &[0x01, 0x03]), packet(3, &ok(0, 2))].concat(),
            0,
        ),
    ]
}

#[test]
fn handshake_then_queries_name_operation_table_namespace_and_error_codes() {
    let mut segs = handshake(GO_CAPS);
    let select = query("SELECT id, name FROM orders WHERE id = 42 AND note = 'secret'");
    let rs = result_set(&["id", "name"], &[&["42", "widget"]], false, 1);
    segs.extend([
        (C, select.clone(), 0),
        (S, rs.clone(), 0),
        (C, query("INSERT INTO orders (id) VALUES (1)"), 0),
        (S, packet(1, &err(1062)), 0),
        (C, query("UPDATE orders SET n = 2"), 0),
        (S, packet(1, &ok(3, 2)), 0),
    ]);
    let out = run(&segs);
    assert_eq!(
        lines(&out),
        [
            "SELECT orders -> ok ns=shop stmt=- SELECT id, name FROM orders WHERE id = ? AND note = ?",
            "INSERT orders -> 1062 ns=shop stmt=- INSERT INTO orders (id) VALUES (?)",
            "UPDATE orders -> ok ns=shop stmt=- UPDATE orders SET n = ?",
        ]
    );
    let e = &out[0];
    assert_eq!(
        (e.request_bytes, e.response_bytes),
        (select.len() as u64, rs.len() as u64)
    );
    assert_eq!((e.start_ns, e.end_ns), (400, 510));
    let client_start = 1000 + (segs[1].1.len() as u32);
    let server_start = 50_000 + (segs[0].1.len() + segs[2].1.len()) as u32;
    assert_eq!(e.wire, WireSeqs::of(client_start, server_start));
    assert_eq!(e.flags, Flags::default());
    assert!(out.iter().all(|e| e.flags == Flags::default()));
}

#[test]
fn deprecate_eof_result_sets_end_at_the_ok_with_the_fe_header() {
    let caps = GO_CAPS | caps::DEPRECATE_EOF;
    let mut segs = handshake(caps);
    segs.extend([
        (C, query("SELECT a FROM t"), 0),
        (S, result_set(&["a"], &[&["1"], &["2"]], true, 1), 0),
        (C, query("SELECT a FROM empty"), 0),
        (S, result_set(&["a"], &[], true, 1), 0),
        (C, query("SELECT 1"), 0),
        (S, result_set(&["1"], &[&["1"]], true, 1), 0),
    ]);
    let out = run(&segs);
    assert_eq!(out.len(), 3);
    assert_eq!(db(&out[1]).collection.as_deref(), Some("empty"));
    assert!(out.iter().all(|e| e.flags == Flags::default()), "{out:?}");
}

#[test]
fn every_split_point_gives_the_same_exchanges() {
    for deprecate in [false, true] {
        let caps = GO_CAPS | if deprecate { caps::DEPRECATE_EOF } else { 0 };
        let mut segs = handshake(caps);
        segs.extend(prepared_round(deprecate));
        segs.extend([
            (C, query("SELECT a, b FROM t WHERE c = 'x'"), 0),
            (
                S,
                result_set(&["a", "b"], &[&["1", "2"], &["3", "4"]], deprecate, 1),
                0,
            ),
        ]);
        let whole = run(&segs);
        assert_eq!(whole.len(), 3);
        for i in 0..segs.len() {
            let len = segs[i].1.len();
            for cut in 1..len {
                let mut split = segs.clone();
                let (d, bytes, _) = split.remove(i);
                split.insert(i, (d, bytes[cut..].to_vec(), 0));
                split.insert(i, (d, bytes[..cut].to_vec(), 0));
                let out = run(&split);
                assert_eq!(lines(&out), lines(&whole), "segment {i} cut at {cut}");
                let sizes = |o: &[Exchange]| -> Vec<(u64, u64)> {
                    o.iter()
                        .map(|e| (e.request_bytes, e.response_bytes))
                        .collect()
                };
                assert_eq!(sizes(&out), sizes(&whole));
            }
        }
        // One byte per segment.
        let bytewise: Vec<_> = segs
            .iter()
            .flat_map(|(d, b, _)| b.iter().map(|x| (*d, vec![*x], 0)))
            .collect();
        assert_eq!(lines(&run(&bytewise)), lines(&whole));
    }
}

/// PREPARE (2 params, 1 column), EXECUTE with a binary row, CLOSE; response sequence ids and
/// EOFs as the server sends them.
pub(super) fn prepared_round(deprecate: bool) -> Vec<(Direction, Vec<u8>, u64)> {
    let text = "SELECT name FROM users WHERE id = ? AND tenant = 'acme'";
    vec![
        (C, packet(0, &[&[0x16][..], text.as_bytes()].concat()), 0),
        (S, prepare_response(7, &["?", "?"], &["name"], deprecate), 0),
        (C, packet(0, &execute(7)), 0),
        (S, binary_result_set(&["name"], 1, deprecate), 0),
        (C, packet(0, &[0x19, 7, 0, 0, 0]), 0),
    ]
}

#[test]
fn prepared_statements_tie_executions_to_their_text_until_closed() {
    for deprecate in [false, true] {
        let caps = GO_CAPS | if deprecate { caps::DEPRECATE_EOF } else { 0 };
        let mut segs = handshake(caps);
        segs.extend(prepared_round(deprecate));
        segs.extend([
            (C, packet(0, &execute(7)), 0),
            (S, packet(1, &err(1243)), 0),
        ]);
        let out = run(&segs);
        let text = "SELECT name FROM users WHERE id = ? AND tenant = ?";
        assert_eq!(
            lines(&out),
            [
                format!("PREPARE users -> ok ns=shop stmt=7 {text}"),
                format!("SELECT users -> ok ns=shop stmt=7 {text}"),
                "EXECUTE - -> 1243 ns=shop stmt=7 -".to_owned(),
            ],
            "deprecate_eof {deprecate}"
        );
        assert!(!out[1].flags.headers_unknown);
        assert!(out[2].flags.headers_unknown);
        assert!(out[..2].iter().all(|e| e.flags == Flags::default()));
    }
}

#[test]
fn mid_connection_join_waits_for_a_command_and_names_unknown_executions() {
    let rows = result_set(&["a"], &[&["1"]], false, 1);
    let (out, conn) = run_conn(&[
        // The tail of a result set, then a client packet that is not a command start.
        (S, rows[20..].to_vec(), 0),
        (C, packet(3, b"auth-ish bytes"), 0),
        (C, packet(0, &execute(12)), 0),
        (S, binary_result_set(&["x"], 2, true), 0),
        (C, packet(0, &[&[0x02][..], b"billing"].concat()), 0),
        (S, packet(1, &ok(0, 2)), 0),
        (C, query("DELETE FROM invoices WHERE id = 9"), 0),
        (S, packet(1, &ok(1, 2)), 0),
    ]);
    assert_eq!(
        lines(&out),
        [
            "EXECUTE - -> ok ns=- stmt=12 -",
            "INIT_DB - -> ok ns=billing stmt=- -",
            "DELETE invoices -> ok ns=billing stmt=- DELETE FROM invoices WHERE id = ?",
        ]
    );
    assert!(out[0].flags.headers_unknown);
    assert!(!out[0].flags.truncated);
    assert_eq!(conn.stats.mid_connection, 1);
    assert_eq!(conn.stats.unsynced_segments, 1);
    assert_eq!(conn.stats.unknown_statements, 1);
}

#[test]
fn mid_connection_prepare_settles_with_or_without_its_closing_eof() {
    for deprecate in [false, true] {
        let out = run(&[
            (
                C,
                packet(0, &[&[0x16][..], b"SELECT a FROM t WHERE b = ?"].concat()),
                0,
            ),
            (S, prepare_response(3, &["?"], &["a"], deprecate), 0),
            (C, query("SELECT 1"), 0),
            (S, result_set(&["1"], &[&["1"]], deprecate, 1), 0),
            (C, packet(0, &execute(3)), 0),
            (S, packet(1, &ok(0, 2)), 0),
        ]);
        assert_eq!(
            lines(&out),
            [
                "PREPARE t -> ok ns=- stmt=3 SELECT a FROM t WHERE b = ?",
                "SELECT - -> ok ns=- stmt=- SELECT ?",
                "SELECT t -> ok ns=- stmt=3 SELECT a FROM t WHERE b = ?",
            ],
            "deprecate_eof {deprecate}"
        );
        assert!(out.iter().all(|e| e.flags == Flags::default()), "{out:?}");
        let prepare_len = prepare_response(3, &["?"], &["a"], deprecate).len() as u64;
        assert_eq!(out[0].response_bytes, prepare_len);
    }
}

#[test]
fn ssl_request_stops_decoding() {
    let caps = GO_CAPS | caps::SSL;
    let mut ssl = caps.to_le_bytes().to_vec();
    ssl.extend([0, 0, 0, 1, 0xff]);
    ssl.resize(32, 0);
    let (out, conn) = run_conn(&[
        (S, packet(0, &greeting(caps)), 0),
        (C, packet(1, &ssl), 0),
        (C, vec![0x16, 0x03, 0x01, 0x02, 0x00, 1, 2, 3], 0),
        (C, query("SELECT 1"), 0),
    ]);
    assert_eq!(out, []);
    assert_eq!(conn.stats.tls, 1);
}

#[test]
fn refused_login_and_compression_are_counted_not_decoded() {
    let mut segs = handshake(GO_CAPS);
    segs[2] = (S, packet(2, &err(1045)), 0);
    segs.push((C, query("SELECT 1"), 0));
    let (out, conn) = run_conn(&segs);
    assert_eq!(out, []);
    assert_eq!(conn.stats.auth_failures, 1);

    let mut segs = handshake(GO_CAPS | caps::COMPRESS);
    segs.push((C, query("SELECT 1"), 0));
    let (out, conn) = run_conn(&segs);
    assert_eq!(out, []);
    assert_eq!(conn.stats.opaque, 1);
}

#[test]
fn a_query_cut_by_the_capture_keeps_its_sanitized_prefix_and_exact_sizes() {
    let mut segs = handshake(GO_CAPS);
    let long = format!("INSERT INTO logs (msg) VALUES ('{}')", "x".repeat(10_000));
    let q = query(&long);
    segs.extend([
        (C, q[..100].to_vec(), (q.len() - 100) as u64),
        (S, packet(1, &ok(1, 2)), 0),
        (C, query("SELECT 2"), 0),
        (S, result_set(&["2"], &[&["2"]], false, 1), 0),
    ]);
    let out = run(&segs);
    assert_eq!(out.len(), 2);
    let d = db(&out[0]);
    assert_eq!(d.operation, "INSERT");
    assert_eq!(d.collection.as_deref(), Some("logs"));
    assert!(!d.query_text.as_deref().unwrap().contains('x'), "{d:?}");
    assert!(out[0].flags.truncated);
    assert_eq!(out[0].request_bytes, q.len() as u64);
    assert_eq!(out[1].flags, Flags::default());
}

#[test]
fn a_result_set_read_past_the_capture_keeps_its_size_and_the_next_query_decodes() {
    let mut segs = handshake(GO_CAPS);
    let rows: Vec<Vec<String>> = (0..500).map(|i| vec![format!("row-{i}")]).collect();
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let rows: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
    let rs = result_set(&["v"], &rows, false, 1);
    let (first, rest) = rs.split_at(rs.len() / 2);
    segs.extend([
        (C, query("SELECT v FROM big"), 0),
        (S, first[..200].to_vec(), (first.len() - 200) as u64),
        (S, rest[..100].to_vec(), (rest.len() - 100) as u64),
        (C, query("SELECT v FROM small"), 0),
        (S, result_set(&["v"], &[&["a"]], false, 1), 0),
    ]);
    let (out, conn) = run_conn(&segs);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].response_bytes, rs.len() as u64);
    assert!(out[0].flags.truncated);
    assert_eq!(db(&out[0]).status_code, None);
    assert_eq!(out[0].end_ns, 510 + 100);
    assert_eq!(db(&out[1]).collection.as_deref(), Some("small"));
    assert_eq!(out[1].flags, Flags::default());
    assert_eq!((conn.stats.desyncs, conn.stats.responses_undecoded), (1, 1));
}

#[test]
fn multiple_result_sets_local_infile_ping_use_and_quit() {
    let mut segs = handshake(GO_CAPS);
    let more = MORE_RESULTS;
    segs.extend([
        (C, query("CALL report(1)"), 0),
        (
            S,
            [
                result_set_with(&["a"], &[&["1"]], false, 1, more),
                packet(6, &ok(0, 2)),
            ]
            .concat(),
            0,
        ),
        (C, query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"), 0),
        (S, packet(1, &[&[0xfb][..], b"/tmp/x"].concat()), 0),
        (C, [packet(2, b"1\n2\n"), packet(3, b"")].concat(), 0),
        (S, packet(4, &ok(2, 2)), 0),
        (C, packet(0, &[0x0e]), 0),
        (S, packet(1, &ok(0, 2)), 0),
        (C, query("use `audit`"), 0),
        (S, packet(1, &ok(0, 2)), 0),
        (C, query("SELECT 1"), 0),
        (S, packet(1, &err(1146)), 0),
        (C, packet(0, &[0x01]), 0),
    ]);
    let out = run(&segs);
    assert_eq!(
        lines(&out),
        [
            "CALL - -> ok ns=shop stmt=- CALL report(?)",
            "LOAD - -> ok ns=shop stmt=- LOAD DATA LOCAL INFILE ? INTO TABLE t",
            "PING - -> ok ns=shop stmt=- -",
            "USE - -> ok ns=shop stmt=- use `audit`",
            "SELECT - -> 1146 ns=audit stmt=- SELECT ?",
        ]
    );
    assert!(out.iter().all(|e| e.flags == Flags::default()), "{out:?}");
    assert_eq!(
        out[1].request_bytes,
        (query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t").len() + 8 + 4) as u64
    );
}

#[test]
fn pipelined_prepare_and_execute_of_the_last_prepared_statement() {
    let mut segs = handshake(GO_CAPS);
    let prep = packet(
        0,
        &[&[0x16][..], b"UPDATE t SET a = ? WHERE b = 5"].concat(),
    );
    segs.extend([
        (C, [prep, packet(0, &execute(u32::MAX))].concat(), 0),
        (
            S,
            [
                prepare_response(9, &["?"], &[], false),
                packet(1, &ok(1, 2)),
            ]
            .concat(),
            0,
        ),
    ]);
    let out = run(&segs);
    assert_eq!(
        lines(&out),
        [
            "PREPARE t -> ok ns=shop stmt=9 UPDATE t SET a = ? WHERE b = ?",
            "UPDATE t -> ok ns=shop stmt=4294967295 UPDATE t SET a = ? WHERE b = ?",
        ]
    );
}

#[test]
fn waiting_commands_at_close_have_no_response_or_are_cut() {
    let mut segs = handshake(GO_CAPS);
    let rs = result_set(&["a"], &[&["1"]], false, 1);
    segs.extend([
        (C, query("SELECT a FROM t"), 0),
        (S, rs[..rs.len() - 3].to_vec(), 0),
    ]);
    let out = run(&segs);
    assert!(out[0].flags.reset && !out[0].flags.no_response);
    segs.truncate(3);
    segs.push((C, query("SELECT a FROM t"), 0));
    let out = run(&segs);
    assert!(out[0].flags.no_response);
    assert_eq!(out[0].end_ns, 1_000_000);
}

#[test]
fn a_response_with_a_wrong_sequence_id_is_not_decoded() {
    let mut segs = handshake(GO_CAPS);
    segs.extend([
        (C, query("SELECT a FROM t"), 0),
        (S, packet(5, &err(1064)), 0),
        (C, query("SELECT b FROM t"), 0),
        (S, packet(1, &ok(0, 2)), 0),
    ]);
    let out = run(&segs);
    assert_eq!(db(&out[0]).status_code, None);
    assert!(out[0].flags.truncated);
    assert_eq!(out[1].flags, Flags::default());
}

#[test]
fn a_payload_of_16_mib_continues_in_the_next_packet() {
    let mut segs = handshake(GO_CAPS);
    let mut text = b"SELECT '".to_vec();
    text.resize(framing::MAX_PAYLOAD as usize - 1, b'y');
    let mut first = vec![0xff, 0xff, 0xff, 0, 0x03];
    first.extend_from_slice(&text);
    segs.extend([
        (C, first, 0),
        (C, packet(1, b"'"), 0),
        (S, packet(2, &ok(0, 2)), 0),
    ]);
    let out = run(&segs);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].request_bytes,
        u64::from(framing::MAX_PAYLOAD) + 4 + 5
    );
    assert_eq!(db(&out[0]).query_text.as_deref(), Some("SELECT ?"));
    assert!(out[0].flags.truncated);
}

mod real;
mod robust;
