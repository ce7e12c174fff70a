//! A conversation recorded between go-sql-driver/mysql v1.10.1 and MariaDB 10.11 (Debian 12)
//! through a recording proxy, one record per read: handshake with CLIENT_DEPRECATE_EOF, ping,
//! a query, a duplicate key, `QueryRow` with an argument (prepare, execute, then a
//! COM_STMT_CLOSE pipelined with the next command), a prepared UPDATE run twice, a procedure
//! with two result sets, `USE`, a missing table, quit. Record format: direction (0 client, 1
//! server), length (u32 LE), bytes.

use super::*;

pub(super) fn recording() -> Vec<(Direction, Vec<u8>, u64)> {
    let mut data: &[u8] = include_bytes!("mariadb_go.rec");
    let mut out = Vec::new();
    while let [dir, a, b, c, d, rest @ ..] = data {
        let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
        out.push((if *dir == 0 { C } else { S }, rest[..len].to_vec(), 0));
        data = &rest[len..];
    }
    out
}

pub(super) const EXPECTED: [&str; 12] = [
    "PING - -> ok ns=shop stmt=- -",
    "SELECT orders -> ok ns=shop stmt=- SELECT id, name FROM orders WHERE id > ? AND note <> ?",
    "INSERT orders -> 1062 ns=shop stmt=- INSERT INTO orders (id, name) VALUES (?, ?)",
    "PREPARE orders -> ok ns=shop stmt=1 SELECT name FROM orders WHERE id = ?",
    "SELECT orders -> ok ns=shop stmt=1 SELECT name FROM orders WHERE id = ?",
    "PREPARE orders -> ok ns=shop stmt=2 UPDATE orders SET note = ? WHERE id = ?",
    "UPDATE orders -> ok ns=shop stmt=2 UPDATE orders SET note = ? WHERE id = ?",
    "UPDATE orders -> ok ns=shop stmt=2 UPDATE orders SET note = ? WHERE id = ?",
    "CALL - -> ok ns=shop stmt=- CALL report(?)",
    "USE - -> ok ns=shop stmt=- USE mysql",
    "SELECT nosuch -> 1146 ns=mysql stmt=- SELECT * FROM nosuch",
    "USE - -> ok ns=mysql stmt=- USE shop",
];

#[test]
fn go_driver_and_mariadb_conversation_decodes_whole_and_cut_anywhere() {
    let segs = recording();
    let (out, conn) = run_conn(&segs);
    assert_eq!(lines(&out), EXPECTED);
    assert!(out.iter().all(|e| e.flags == Flags::default()), "{out:?}");
    assert_eq!(conn.stats, MysqlStats::default());
    assert_eq!(conn.caps.map(|c| c & caps::DEPRECATE_EOF != 0), Some(true));
    // Every server byte after the login's OK is some exchange's response.
    let server: usize = segs.iter().filter(|s| s.0 == S).map(|s| s.1.len()).sum();
    let login = segs[0].1.len() + segs[2].1.len();
    let responses: u64 = out.iter().map(|e| e.response_bytes).sum();
    assert_eq!(responses, (server - login) as u64);
    for i in 0..segs.len() {
        for cut in 1..segs[i].1.len() {
            let mut split = segs.clone();
            let (d, bytes, _) = split.remove(i);
            split.insert(i, (d, bytes[cut..].to_vec(), 0));
            split.insert(i, (d, bytes[..cut].to_vec(), 0));
            assert_eq!(lines(&run(&split)), EXPECTED, "segment {i} cut at {cut}");
        }
    }
}

#[test]
fn go_driver_and_mariadb_joined_after_the_handshake() {
    let segs = recording();
    // Join at the prepared UPDATE's second execution: no namespace, statement unknown.
    let at = segs
        .iter()
        .position(|s| s.0 == C && s.1.get(4) == Some(&0x17) && s.1.contains(&b'y'))
        .unwrap();
    let (out, conn) = run_conn(&segs[at - 1..]);
    assert_eq!(
        lines(&out),
        [
            "EXECUTE - -> ok ns=- stmt=2 -",
            "CALL - -> ok ns=- stmt=- CALL report(?)",
            "USE - -> ok ns=- stmt=- USE mysql",
            "SELECT nosuch -> 1146 ns=mysql stmt=- SELECT * FROM nosuch",
            "USE - -> ok ns=mysql stmt=- USE shop",
        ]
    );
    assert!(
        out.iter().skip(1).all(|e| e.flags == Flags::default()),
        "{out:?}"
    );
    assert_eq!(conn.stats.mid_connection, 1);
    // Joined at every later segment: never a wrong name, only fewer exchanges.
    for start in 3..segs.len() {
        let (out, _) = run_conn(&segs[start..]);
        let got = lines(&out);
        for line in &got {
            let known = EXPECTED.iter().any(|e| {
                let strip = |s: &str| {
                    s.replace("ns=shop ", "")
                        .replace("ns=- ", "")
                        .replace("ns=mysql ", "")
                };
                strip(e) == strip(line)
            }) || line.starts_with("EXECUTE - -> ok ns=- stmt=");
            assert!(known, "joined at {start}: {line}");
        }
    }
}
