//! Recognition, looks-like-command rules, a no-panic sweep over damaged streams, and the
//! fuzz seed writer.

use super::{real, *};

#[test]
fn recognition_is_the_server_greeting_only() {
    let mysql = packet(0, &greeting(GO_CAPS));
    let maria = packet(
        0,
        &greeting_with(b"5.5.5-10.11.6-MariaDB-0+deb12u1", GO_CAPS),
    );
    assert!(looks_like_mysql(&mysql, false));
    assert!(looks_like_mysql(&maria, false));
    assert!(!looks_like_mysql(&mysql, true));
    assert!(!looks_like_mysql(&mysql[..20], false));
    for other in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"+OK\r\n",
        &[0x4a, 0, 0, 0, 0x0a, b'x', 0][..],
        &query("SELECT 1"),
    ] {
        assert!(!looks_like_mysql(other, false), "{other:?}");
    }
    assert!(looks_like_command(&query("SELECT 1"), 13));
    assert!(!looks_like_command(&query("SELECT 1"), 14));
    let exec = packet(0, &execute(1));
    assert!(looks_like_command(&exec, exec.len() as u64));
    assert!(!looks_like_command(
        &packet(1, &execute(1)),
        exec.len() as u64
    ));
    let close_then_prepare = [packet(0, &[0x19, 1, 0, 0, 0]), query("SELECT 1")].concat();
    assert!(looks_like_command(
        &close_then_prepare,
        close_then_prepare.len() as u64
    ));
    assert!(!looks_like_command(&packet(0, &[0x03, 0, 0xff, 0x80]), 8));
    assert!(!looks_like_command(b"GET / HTTP/1.1\r\n", 16));
}

#[test]
fn damaged_streams_never_panic() {
    let mut segs = handshake(GO_CAPS | caps::DEPRECATE_EOF);
    segs.extend(prepared_round(true));
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut damaged = segs.clone();
        for _ in 0..3 {
            let i = (rand() % damaged.len() as u64) as usize;
            let seg = &mut damaged[i];
            match rand() % 4 {
                0 if !seg.1.is_empty() => {
                    let at = (rand() % seg.1.len() as u64) as usize;
                    seg.1[at] = rand() as u8;
                }
                1 => {
                    let keep = (rand() % (seg.1.len() as u64 + 1)) as usize;
                    seg.2 = (seg.1.len() - keep) as u64 + rand() % 3;
                    seg.1.truncate(keep);
                }
                2 => {
                    damaged.remove(i);
                    if damaged.is_empty() {
                        break;
                    }
                }
                _ => seg.0 = if seg.0 == C { S } else { C },
            }
        }
        let _ = run(&damaged);
    }
}

/// Seeds for the fuzz target: `cargo test -p wirespan --lib protocol::mysql -- --ignored`
/// writes them to collector/fuzz/seeds/mysql.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/mysql");
    std::fs::create_dir_all(&dir).unwrap();
    let mut login = handshake(GO_CAPS);
    login.extend([
        (C, query("SELECT a FROM t WHERE b = 'x'"), 0),
        (S, result_set(&["a"], &[&["1"]], false, 1), 0),
        (C, query("INSERT INTO t VALUES (1)"), 0),
        (S, packet(1, &err(1062)), 0),
    ]);
    let mut prepared = handshake(GO_CAPS | caps::DEPRECATE_EOF);
    prepared.extend(prepared_round(true));
    let mid = vec![
        (C, packet(0, &execute(4)), 0),
        (S, binary_result_set(&["x"], 2, false), 0),
        (C, packet(0, &[0x0e]), 0),
        (S, packet(1, &ok(0, 2)), 0),
    ];
    for (name, segs) in [
        ("mariadb_go_recorded", real::recording()),
        ("login_query", login),
        ("prepared", prepared),
        ("mid_connection", mid),
    ] {
        let segs: Vec<(Direction, &[u8])> =
            segs.iter().map(|(d, b, _)| (*d, b.as_slice())).collect();
        std::fs::write(dir.join(name), fuzzing::encode(&segs)).unwrap();
    }
}

#[test]
fn tls_plaintext_starts_with_the_login_and_is_decoded() {
    let caps = GO_CAPS | caps::SSL;
    let login = packet(2, &login(caps, Some("shop")));
    assert!(looks_like_mysql(&login, true));
    assert!(!looks_like_mysql(&login, false));
    assert!(!looks_like_mysql(
        &packet(1, &super::wire::login(caps, None)),
        true
    ));
    let (out, conn) = run_conn(&[
        (C, login, 0),
        (S, packet(3, &ok(0, 2)), 0),
        (C, query("SELECT a FROM t"), 0),
        (S, result_set(&["a"], &[&["1"]], false, 1), 0),
    ]);
    assert_eq!(
        lines(&out),
        ["SELECT t -> ok ns=shop stmt=- SELECT a FROM t"]
    );
    assert_eq!(conn.stats, MysqlStats::default());
}

#[test]
fn a_server_side_capture_decodes_the_same() {
    let segs = real::recording();
    let mut conn = MysqlConn::new(Direction::Ingress);
    let mut out = Vec::new();
    for (i, (direction, data, _)) in segs.iter().enumerate() {
        let t = i as u64 * 100;
        let direction = if *direction == C { S } else { C };
        let seg = Segment {
            direction,
            origin: Origin::default(),
            data,
            missing: 0,
            windows: &[],
            ts_enter_ns: t,
            ts_exit_ns: t + 10,
            tls: false,
        };
        conn.feed(&seg, &mut out);
    }
    conn.close(u64::MAX, &mut out);
    assert_eq!(lines(&out), real::EXPECTED);
    assert!(
        out.iter()
            .all(|e| e.request_direction == Direction::Ingress)
    );
}
