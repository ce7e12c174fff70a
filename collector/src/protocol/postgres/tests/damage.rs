//! Streams cut at every split point, gaps where the capture stopped, joins mid-connection,
//! garbage; and the fuzz seeds.

use super::*;
use crate::protocol::fuzzing::{encode, for_each_segment};

/// A connection's life: startup, a simple query, an extended-protocol batch, an error.
fn conversation() -> Vec<(Direction, Vec<u8>)> {
    vec![
        (
            CLIENT,
            startup(&[
                ("user", "alice"),
                ("database", "shop"),
                ("application_name", "psql"),
            ]),
        ),
        (SERVER, auth_ok()),
        (CLIENT, query("SELECT * FROM orders WHERE id = 5")),
        (
            SERVER,
            cat(&[
                row_description(),
                data_row(b"5"),
                complete("SELECT 1"),
                ready(b'I'),
            ]),
        ),
        (
            CLIENT,
            cat(&[
                parse("q1", "UPDATE orders SET total = $1 WHERE id = $2"),
                bind("", "q1", b"99.50"),
                describe(b'P', ""),
                execute(""),
                sync(),
            ]),
        ),
        (
            SERVER,
            cat(&[
                msg(b'1', &[]),
                msg(b'2', &[]),
                msg(b'n', &[]),
                complete("UPDATE 1"),
                ready(b'T'),
            ]),
        ),
        (CLIENT, query("SELEC oops")),
        (
            SERVER,
            cat(&[
                error("42601", "syntax error at or near \"SELEC\""),
                ready(b'E'),
            ]),
        ),
    ]
}

/// What must not change however the bytes are cut.
type Print = (String, Option<String>, u64, u64, WireSeqs, Flags);

fn fingerprint(out: &[Exchange]) -> Vec<Print> {
    summary(out)
        .into_iter()
        .zip(out)
        .map(|(s, e)| {
            let ns = db(e).namespace.clone();
            (s, ns, e.request_bytes, e.response_bytes, e.wire, e.flags)
        })
        .collect()
}

fn run(segments: &[(Direction, Vec<u8>)]) -> Feeder {
    let mut f = Feeder::new();
    for (d, bytes) in segments {
        f.send(*d, bytes);
    }
    f
}

#[test]
fn every_split_point_decodes_the_same() {
    let whole = conversation();
    let want = fingerprint(&run(&whole).out);
    assert_eq!(
        want.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        [
            "SELECT orders | SELECT * FROM orders WHERE id = ? | - | ok | 1",
            "UPDATE orders | UPDATE orders SET total = $1 WHERE id = $2 | \"q1\" | ok | 1",
            "SELEC - | SELEC oops | - | 42601 | 1",
        ]
    );
    for k in 0..whole.len() {
        let (d, bytes) = &whole[k];
        for cut in 1..bytes.len() {
            let mut segs = whole[..k].to_vec();
            segs.push((*d, bytes[..cut].to_vec()));
            segs.push((*d, bytes[cut..].to_vec()));
            segs.extend_from_slice(&whole[k + 1..]);
            let f = run(&segs);
            assert_eq!(fingerprint(&f.out), want, "segment {k} cut at {cut}");
            assert_eq!(
                f.conn.stats,
                run(&whole).conn.stats,
                "segment {k} cut at {cut}"
            );
        }
        // One byte per syscall.
        let mut segs = whole[..k].to_vec();
        segs.extend(bytes.iter().map(|b| (*d, vec![*b])));
        segs.extend_from_slice(&whole[k + 1..]);
        assert_eq!(
            fingerprint(&run(&segs).out),
            want,
            "segment {k} byte by byte"
        );
    }
}

#[test]
fn uncaptured_rows_are_skipped_by_count() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(CLIENT, &query("SELECT body FROM documents"));
    let response = cat(&[
        row_description(),
        data_row(&vec![b'x'; 10_000]),
        data_row(&vec![b'y'; 3_000]),
        complete("SELECT 2"),
        ready(b'I'),
    ]);
    // The first syscall captured 100 bytes of 6,000; the rest arrives in a second one.
    f.cut(SERVER, &response[..6_000], 100);
    f.send(SERVER, &response[6_000..]);
    assert_eq!(
        summary(&f.out),
        ["SELECT documents | SELECT body FROM documents | - | ok | 1"]
    );
    assert_eq!(f.out[0].response_bytes, response.len() as u64);
    assert!(
        !f.out[0].flags.truncated,
        "no bytes the decoder reads were lost"
    );
    assert_eq!(f.conn.stats.desyncs, 0);
}

#[test]
fn a_query_cut_by_the_capture_keeps_its_prefix() {
    let mut f = Feeder::new();
    f.connect("shop");
    let text = format!(
        "SELECT * FROM a WHERE x IN ({}) AND y = 'z'",
        "1, ".repeat(2000) + "1"
    );
    let q = query(&text);
    f.cut(CLIENT, &q, 200);
    f.send(SERVER, &cat(&[complete("SELECT 0"), ready(b'I')]));
    let e = &f.out[0];
    let d = db(e);
    assert_eq!(d.operation, "SELECT");
    assert_eq!(d.collection, None, "a cut text's table is not trusted");
    assert!(
        d.query_text
            .as_deref()
            .unwrap()
            .starts_with("SELECT * FROM a WHERE x IN (?")
    );
    assert!(e.flags.truncated);
    assert_eq!(e.request_bytes, q.len() as u64);
}

#[test]
fn a_query_whose_text_was_not_captured_is_named_by_its_tag() {
    let mut f = Feeder::new();
    f.connect("shop");
    let q = query("DELETE FROM sessions WHERE id = 4");
    f.cut(CLIENT, &q, 5);
    f.send(SERVER, &cat(&[complete("DELETE 1"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["DELETE - | - | - | ok | 1"]);
    assert!(f.out[0].flags.truncated);
}

#[test]
fn a_lost_header_costs_the_waiting_requests_and_pairing_resumes_safely() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(CLIENT, &query("SELECT 1"));
    // The response's first bytes were captured, then the capture lost the headers that follow.
    let response = cat(&[
        row_description(),
        data_row(b"1"),
        complete("SELECT 1"),
        ready(b'I'),
    ]);
    f.cut(SERVER, &response, row_description().len() + 3);
    assert_eq!(f.conn.stats.desyncs, 1);
    assert_eq!(f.conn.stats.unpaired, 1);
    // Sent while the server's framing is lost: not paired (its answer could be anything).
    f.send(CLIENT, &query("SELECT 2"));
    f.send(
        SERVER,
        &cat(&[
            row_description(),
            data_row(b"2"),
            complete("SELECT 1"),
            ready(b'I'),
        ]),
    );
    // The server was seen idle: pairing resumes.
    f.send(CLIENT, &query("SELECT 3 FROM t"));
    f.send(
        SERVER,
        &cat(&[row_description(), complete("SELECT 0"), ready(b'I')]),
    );
    assert_eq!(summary(&f.out), ["SELECT t | SELECT ? FROM t | - | ok | 1"]);
    assert_eq!(f.conn.stats.unpaired, 2);
}

#[test]
fn a_lost_client_header_waits_for_the_server_to_answer() {
    let mut f = Feeder::new();
    f.connect("shop");
    // A Bind whose capture stopped inside it, then a gap over Execute and Sync.
    let batch = cat(&[
        parse("", "INSERT INTO t VALUES ($1)"),
        bind("", "", &[b'v'; 500]),
        execute(""),
        sync(),
    ]);
    f.cut(CLIENT, &batch, 60);
    assert_eq!(f.conn.stats.desyncs, 1);
    f.send(
        SERVER,
        &cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            complete("INSERT 0 1"),
            ready(b'I'),
        ]),
    );
    f.send(CLIENT, &query("SELECT 1"));
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["SELECT - | SELECT ? | - | ok | 1"]);
}

/// The agent started while a pgx pool's connections were open: statements were prepared
/// before, so executions name them without text.
#[test]
fn joined_mid_connection() {
    let mut f = Feeder::with(PgConn::mid_connection(CLIENT));
    // The tail of a response whose request went by unseen: a syscall starting inside a row.
    f.send(SERVER, &data_row(b"abc")[3..]);
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    let exec = cat(&[
        bind("", "stmtcache_9", b"7"),
        describe(b'P', ""),
        execute(""),
        sync(),
    ]);
    f.send(CLIENT, &exec);
    f.send(
        SERVER,
        &cat(&[
            msg(b'2', &[]),
            row_description(),
            data_row(b"x"),
            complete("SELECT 1"),
            ready(b'I'),
        ]),
    );
    f.send(CLIENT, &query("SELECT now()"));
    f.send(
        SERVER,
        &cat(&[
            row_description(),
            data_row(b"t"),
            complete("SELECT 1"),
            ready(b'I'),
        ]),
    );
    assert_eq!(
        summary(&f.out),
        [
            "EXECUTE - | - | \"stmtcache_9\" | ok | 1",
            "SELECT - | SELECT now() | - | ok | 1",
        ]
    );
    assert!(
        f.out
            .iter()
            .all(|e| e.flags.headers_unknown && db(e).namespace.is_none())
    );
    assert_eq!(f.conn.stats.mid_connection, 1);
    assert_eq!(f.conn.stats.unknown_statements, 1);
    assert_eq!(f.conn.stats.skipped_segments, 1);
}

#[test]
fn a_new_connection_without_startup_joins_mid_connection() {
    let mut f = Feeder::new();
    f.send(CLIENT, &query("SELECT 1"));
    assert_eq!(f.conn.stats.mid_connection, 1);
    // Its answer: the server was not known idle when it was sent.
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    f.send(CLIENT, &query("SELECT 2"));
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["SELECT - | SELECT ? | - | ok | 1"]);
    assert_eq!(f.conn.stats.unpaired, 1);
}

#[test]
fn a_server_speaking_first_means_a_join_mid_connection() {
    let mut f = Feeder::new();
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    assert_eq!(f.conn.stats.mid_connection, 1);
    f.send(CLIENT, &query("SELECT 2"));
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["SELECT - | SELECT ? | - | ok | 1"]);
    assert!(f.out[0].flags.headers_unknown);
}

#[test]
fn a_response_older_than_its_request_is_not_paired() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(CLIENT, &query("SELECT 1"));
    // A read that returned before the query was written (an unseen request's answer).
    let early = cat(&[complete("SELECT 1"), ready(b'I')]);
    let seg = Segment {
        direction: SERVER,
        origin: Origin::default(),
        data: &early,
        missing: 0,
        windows: &[],
        ts_enter_ns: 1,
        ts_exit_ns: 2,
        tls: false,
    };
    f.conn.feed(&seg, &mut f.out);
    assert_eq!(f.out, []);
    assert_eq!(f.conn.stats.stray_responses, 1);
    f.send(SERVER, &cat(&[complete("SELECT 1"), ready(b'I')]));
    assert_eq!(summary(&f.out), ["SELECT - | SELECT ? | - | ok | 1"]);
}

#[test]
fn resync_refuses_segments_that_start_inside_messages() {
    let mut f = Feeder::with(PgConn::mid_connection(CLIENT));
    let big = bind("", "s", &[b'Q'; 300]);
    for seg in [
        &big[40..],                         // inside a Bind's value
        b"Q\x00\x00\x00\x0bSELECT\x01\x00", // a control byte in a Query
        b"Q\x00\x00\x00\x0aSELECT 1",       // no NUL where the length ends
        b"Q\xff\x00\x00\x0aSELECT 1\x00",   // an implausible length
        b"S\x00\x00\x00\x05\x00",           // a Sync with a body
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        f.send(CLIENT, seg);
        assert!(!f.conn.client.synced, "{seg:?}");
    }
    assert_eq!(f.conn.stats.skipped_segments, 6);
    f.send(CLIENT, &cat(&[execute(""), sync()]));
    assert!(f.conn.client.synced);
}

/// xorshift: the same pseudo-random bytes on every run.
fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

#[test]
fn damaged_streams_never_panic_or_overflow() {
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let whole: Vec<u8> = conversation().into_iter().flat_map(|(_, b)| b).collect();
    for round in 0..300 {
        let mut f = if round % 2 == 0 {
            Feeder::new()
        } else {
            Feeder::with(PgConn::mid_connection(CLIENT))
        };
        for (k, (d, bytes)) in conversation().into_iter().enumerate() {
            let mut bytes = bytes;
            let r = noise(&mut seed, 4);
            if r[0].is_multiple_of(3) && !bytes.is_empty() {
                let i = usize::from(r[1]) % bytes.len();
                bytes[i] ^= r[2] | 1;
            }
            let captured = if r[3].is_multiple_of(4) {
                usize::from(r[2])
            } else {
                bytes.len()
            };
            f.cut(d, &bytes, captured);
            if k % 3 == 0 {
                let junk = noise(&mut seed, usize::from(r[1]));
                f.send(
                    if r[3].is_multiple_of(2) {
                        CLIENT
                    } else {
                        SERVER
                    },
                    &junk,
                );
            }
        }
        f.send(
            CLIENT,
            &whole[..usize::from(noise(&mut seed, 1)[0]).min(whole.len())],
        );
        f.conn.close(u64::MAX, &mut f.out);
        assert!(f.conn.pending.is_empty());
        assert!(f.out.len() <= 8);
    }
}

#[test]
fn fuzz_input_format_round_trips() {
    let conv = conversation();
    let segs: Vec<(Direction, &[u8])> = conv.iter().map(|(d, b)| (*d, b.as_slice())).collect();
    let data = encode(&segs);
    let mut pg = PgConn::new(CLIENT);
    let mut out = Vec::new();
    for_each_segment(&data, |seg| pg.feed(&seg, &mut out));
    pg.close(u64::MAX, &mut out);
    assert_eq!(summary(&out).len(), 3);
}

/// Writes collector/fuzz/seeds/postgres: `cargo test -p wirespan --lib
/// write_postgres_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_postgres_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/postgres");
    std::fs::create_dir_all(&dir).unwrap();
    let as_refs = |v: &[(Direction, Vec<u8>)]| -> Vec<u8> {
        encode(
            &v.iter()
                .map(|(d, b)| (*d, b.as_slice()))
                .collect::<Vec<_>>(),
        )
    };
    let conv = conversation();
    let pipelined = vec![
        (CLIENT, startup(&[("user", "u"), ("database", "d")])),
        (SERVER, auth_ok()),
        (
            CLIENT,
            cat(&[
                parse("a", "INSERT INTO t VALUES ($1)"),
                bind("", "a", b"1"),
                execute(""),
                sync(),
                bind("", "a", b"2"),
                execute(""),
                sync(),
                query("COPY t FROM STDIN"),
            ]),
        ),
        (
            SERVER,
            cat(&[
                msg(b'1', &[]),
                msg(b'2', &[]),
                complete("INSERT 0 1"),
                ready(b'I'),
                msg(b'2', &[]),
                error("23505", "dup"),
                ready(b'I'),
                msg(b'G', &[0, 0, 0]),
            ]),
        ),
        (CLIENT, cat(&[msg(b'd', b"1\n"), msg(b'c', &[])])),
        (SERVER, cat(&[complete("COPY 1"), ready(b'I')])),
    ];
    let ssl = vec![
        (CLIENT, ssl_request()),
        (SERVER, b"N".to_vec()),
        (CLIENT, startup(&[("user", "u")])),
        (SERVER, auth_ok()),
        (CLIENT, query("SELECT $$a$$, E'\\'', 1e5 FROM \"s\".\"t\"")),
        (SERVER, cat(&[complete("SELECT 0"), ready(b'I')])),
    ];
    let mid = vec![
        (
            CLIENT,
            cat(&[bind("", "stmtcache_1", b"1"), execute(""), sync()]),
        ),
        (
            SERVER,
            cat(&[
                msg(b'2', &[]),
                data_row(b"x"),
                complete("SELECT 1"),
                ready(b'I'),
            ]),
        ),
    ];
    let (psql, pgx) = (super::real::psql(), super::real::pgx());
    for (name, segs) in [
        ("psql-15", &psql),
        ("pgx-5", &pgx),
        ("session", &conv),
        ("pipelined-copy", &pipelined),
        ("ssl-no", &ssl),
        ("mid-connection", &mid),
    ] {
        std::fs::write(dir.join(name), as_refs(segs)).unwrap();
    }
    // A large row cut by the capture: control bits 1..8 = uncaptured bytes / 97.
    let mut gap = as_refs(&conv[..3]);
    let row = data_row(&vec![b'r'; 1159]);
    gap.extend([(10 << 1) | 1, 200]);
    gap.extend_from_slice(&row[..200]);
    gap.extend(as_refs(&[(
        SERVER,
        cat(&[complete("SELECT 1"), ready(b'I')]),
    )]));
    std::fs::write(dir.join("gap"), gap).unwrap();
}
