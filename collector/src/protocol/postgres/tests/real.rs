//! Streams captured from PostgreSQL 15 through a logging TCP proxy, one line per `recv()`
//! (`C`/`S` and the bytes in hex): psql 15 (SSLRequest answered `N`, SCRAM authentication,
//! simple queries, an error, COPY in and out), pgx v5.12 (SCRAM, cached named statements over
//! the extended protocol, the simple protocol, a failed prepare, a pipelined batch, binary COPY
//! sent with its Query, a transaction), and a failed authentication (psql with a wrong
//! password). The password was `capture-pw`; every value written contains `secret` or is
//! `book`/`pen`/`ink`.

use super::*;

pub(super) fn load(capture: &str) -> Vec<(Direction, Vec<u8>)> {
    capture
        .lines()
        .map(|line| {
            let (d, hex) = line.split_once(' ').expect("direction and bytes");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (if d == "C" { CLIENT } else { SERVER }, bytes)
        })
        .collect()
}

pub(super) fn psql() -> Vec<(Direction, Vec<u8>)> {
    load(include_str!("captures/psql.txt"))
}

pub(super) fn pgx() -> Vec<(Direction, Vec<u8>)> {
    load(include_str!("captures/pgx.txt"))
}

fn run(conn: PgConn, segments: &[(Direction, Vec<u8>)]) -> Feeder {
    let mut f = Feeder::with(conn);
    for (d, bytes) in segments {
        f.send(*d, bytes);
    }
    f
}

/// Nothing a client wrote or a server answered as a value is in the exchanges.
fn assert_no_values(out: &[Exchange]) {
    let text = format!("{out:?}");
    for value in [
        "secret",
        "book",
        "'pen'",
        "capture-pw",
        "does not exist",
        "postgres\"",
        "SCRAM",
    ] {
        assert!(!text.contains(value), "{value} leaked: {text}");
    }
}

#[test]
fn psql_session() {
    let f = run(PgConn::new(CLIENT), &psql());
    assert_eq!(
        summary(&f.out),
        [
            "SELECT orders | SELECT id, item FROM orders WHERE item = ?; | - | ok | 1",
            "BEGIN - | BEGIN; | - | ok | 1",
            "UPDATE orders | UPDATE orders SET total = total + ? WHERE id = ?; | - | ok | 1",
            "COMMIT - | COMMIT; | - | ok | 1",
            "SELECT missing_table | SELECT * FROM missing_table; | - | 42P01 | 1",
            "COPY orders | COPY orders (item, total) FROM STDIN; | - | ok | 1",
            "COPY orders | COPY orders TO STDOUT; | - | ok | 1",
        ]
    );
    assert!(
        f.out
            .iter()
            .all(|e| db(e).namespace.as_deref() == Some("shop"))
    );
    assert!(f.out.iter().all(|e| e.flags == Flags::default()));
    assert_eq!(
        f.conn.stats,
        PostgresStats {
            copy_messages: 4,
            ..PostgresStats::default()
        }
    );
    assert_no_values(&f.out);
}

#[test]
fn pgx_session() {
    let f = run(PgConn::new(CLIENT), &pgx());
    let names: Vec<String> = summary(&f.out)
        .into_iter()
        .map(|s| {
            // Statement cache names end in a hash: keep their prefix.
            s.split("stmtcache_")
                .enumerate()
                .map(|(i, part)| {
                    let hash = if i == 0 {
                        0
                    } else {
                        part.len()
                            - part
                                .trim_start_matches(|c: char| c.is_ascii_hexdigit())
                                .len()
                    };
                    part[hash..].to_owned()
                })
                .collect::<Vec<_>>()
                .join("stmtcache_")
        })
        .collect();
    assert_eq!(
        names,
        [
            "PREPARE orders | SELECT item FROM orders WHERE id = $1 | \"stmtcache_\" | ok | 1",
            "SELECT orders | SELECT item FROM orders WHERE id = $1 | \"stmtcache_\" | ok | 1",
            "SELECT orders | SELECT item FROM orders WHERE id = $1 | \"stmtcache_\" | ok | 1",
            "SELECT orders | SELECT item FROM orders WHERE item = ? | - | ok | 1",
            "PREPARE nowhere | INSERT INTO nowhere (a) VALUES ($1) | \"stmtcache_\" | 42P01 | 1",
            "PREPARE orders | INSERT INTO orders (item, total) VALUES ($1, $2) | \"stmtcache_\" | ok | 1",
            "INSERT orders | INSERT INTO orders (item, total) VALUES ($1, $2) | \"stmtcache_\" | ok | 3",
            "PREPARE orders | select \"item\", \"total\" from \"orders\" | \"stmtcache_\" | ok | 1",
            "COPY orders | copy \"orders\" ( \"item\", \"total\" ) from stdin binary; | - | ok | 1",
            "BEGIN - | begin | - | ok | 1",
            "PREPARE orders | DELETE FROM orders WHERE item = $1 | \"stmtcache_\" | ok | 1",
            "DELETE orders | DELETE FROM orders WHERE item = $1 | \"stmtcache_\" | ok | 1",
            "COMMIT - | commit | - | ok | 1",
        ]
    );
    assert!(
        f.out
            .iter()
            .all(|e| db(e).namespace.as_deref() == Some("shop"))
    );
    assert_eq!(f.conn.stats.copy_messages, 1);
    assert_eq!(f.conn.stats.unpaired, 0);
    assert_no_values(&f.out);
    // Exact byte counts: every message of every exchange, nothing of the startup.
    let all: u64 = pgx().iter().map(|(_, b)| b.len() as u64).sum();
    let startup: u64 = pgx()[..6].iter().map(|(_, b)| b.len() as u64).sum();
    let terminate = 5;
    let counted: u64 = f
        .out
        .iter()
        .map(|e| e.request_bytes + e.response_bytes)
        .sum();
    assert_eq!(counted, all - startup - terminate);
}

#[test]
fn failed_authentication_makes_no_exchange() {
    let f = run(
        PgConn::new(CLIENT),
        &load(include_str!("captures/auth-failed.txt")),
    );
    assert_eq!(f.out, []);
    assert_eq!(f.conn.stats, PostgresStats::default());
}

#[test]
fn real_streams_cut_anywhere_decode_the_same() {
    for session in [psql(), pgx()] {
        let want = summary(&run(PgConn::new(CLIENT), &session).out);
        for k in 0..session.len() {
            let (d, bytes) = &session[k];
            for cut in 1..bytes.len() {
                let mut segs = session[..k].to_vec();
                segs.push((*d, bytes[..cut].to_vec()));
                segs.push((*d, bytes[cut..].to_vec()));
                segs.extend_from_slice(&session[k + 1..]);
                let f = run(PgConn::new(CLIENT), &segs);
                assert_eq!(summary(&f.out), want, "segment {k} cut at {cut}");
            }
        }
    }
}

/// Exchanges by their request's first byte counted from the end of the client's bytes (the
/// feeder's sequence numbers restart at a join).
fn by_offset_from_end<'a>(
    out: &'a [Exchange],
    segs: &[(Direction, Vec<u8>)],
) -> Vec<(u64, &'a Exchange)> {
    let sent: u64 = segs
        .iter()
        .filter(|(d, _)| *d == CLIENT)
        .map(|(_, b)| b.len() as u64)
        .sum();
    out.iter()
        .map(|e| (sent - u64::from(e.origin.seq - 1000), e))
        .collect()
}

/// Joining the pgx session after each of its syscalls: every exchange decoded is one of the
/// full session's, with the same request, operation (or `EXECUTE`) and status; none is
/// invented or mispaired.
#[test]
fn real_streams_joined_anywhere_never_mispair() {
    for session in [psql(), pgx()] {
        let full = run(PgConn::new(CLIENT), &session).out;
        for k in 1..session.len() {
            let joined = run(PgConn::mid_connection(CLIENT), &session[k..]).out;
            if k == 6 {
                // Joined right after the startup: only the first request is lost.
                assert!(
                    joined.len() + 1 >= full.len(),
                    "{}",
                    summary(&joined).join("\n")
                );
            }
            let full_by = by_offset_from_end(&full, &session);
            for (from_end, e) in by_offset_from_end(&joined, &session[k..]) {
                let (_, twin) = full_by
                    .iter()
                    .find(|(f, _)| *f == from_end)
                    .unwrap_or_else(|| panic!("join at {k}: an invented exchange {e:?}"));
                let (got, want) = (db(e), db(twin));
                assert!(
                    got.operation == want.operation || got.operation == "EXECUTE",
                    "join at {k}: {got:?} vs {want:?}"
                );
                assert_eq!(got.status_code, want.status_code, "join at {k}");
                assert_eq!(got.batch_size, want.batch_size, "join at {k}");
                assert_eq!(e.request_bytes, twin.request_bytes, "join at {k}");
                assert_eq!(e.response_bytes, twin.response_bytes, "join at {k}");
                assert_eq!(got.namespace, None);
            }
        }
    }
}
