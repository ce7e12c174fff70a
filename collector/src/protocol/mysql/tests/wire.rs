//! MySQL packets as servers and clients write them (MySQL 8 / MariaDB 10.11 layouts), for the
//! tests.

use super::super::packets::caps;

/// The capabilities go-sql-driver/mysql asks for (with a database in the DSN), which the
/// servers grant: CLIENT_LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB, LOCAL_FILES,
/// PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION, MULTI_STATEMENTS, MULTI_RESULTS,
/// PS_MULTI_RESULTS, PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA.
pub const GO_CAPS: u32 = 0x1
    | 0x2
    | 0x4
    | caps::CONNECT_WITH_DB
    | 0x80
    | caps::PROTOCOL_41
    | 0x2000
    | caps::SECURE_CONNECTION
    | 0x1_0000
    | 0x2_0000
    | 0x4_0000
    | 0x8_0000
    | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA;

pub const MORE_RESULTS: u16 = 0x0008;

pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    packet(0, &[&[0x03][..], sql.as_bytes()].concat())
}

pub fn lenenc_str(s: &[u8]) -> Vec<u8> {
    assert!(s.len() < 251);
    [&[s.len() as u8][..], s].concat()
}

pub fn greeting(caps: u32) -> Vec<u8> {
    greeting_with(b"8.0.36", caps)
}

pub fn greeting_with(version: &[u8], caps: u32) -> Vec<u8> {
    let mut p = vec![0x0a];
    p.extend_from_slice(version);
    p.push(0);
    p.extend([0x2a, 0, 0, 0]);
    p.extend(b"a4#Zq9!x");
    p.push(0);
    p.extend(&caps.to_le_bytes()[..2]);
    p.push(0xff);
    p.extend([2, 0]);
    p.extend(&caps.to_le_bytes()[2..]);
    p.push(21);
    p.extend([0; 10]);
    p.extend(b"Kp0\x7fw3}yY@c1\0");
    p.extend(b"caching_sha2_password\0");
    p
}

/// HandshakeResponse41 from user `app` with 32 bytes of auth data.
pub fn login(caps: u32, database: Option<&str>) -> Vec<u8> {
    let mut p = caps.to_le_bytes().to_vec();
    p.extend([0, 0, 0, 1, 0xff]);
    p.extend([0; 23]);
    p.extend(b"app\0");
    p.push(32);
    p.extend([0xa5; 32]);
    if let Some(db) = database {
        p.extend(db.as_bytes());
        p.push(0);
    }
    p.extend(b"caching_sha2_password\0");
    p
}

pub fn ok(affected: u8, status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    vec![0x00, affected, 0, s[0], s[1], 0, 0]
}

pub fn ok_eof(status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    vec![0xfe, 0, 0, s[0], s[1], 0, 0]
}

pub fn eof(status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    vec![0xfe, 0, 0, s[0], s[1]]
}

pub fn err(code: u16) -> Vec<u8> {
    let c = code.to_le_bytes();
    [
        &[0xff, c[0], c[1]][..],
        b"#23000Duplicate entry 'secret' for key 'PRIMARY'",
    ]
    .concat()
}

pub fn column(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for part in [
        &b"def"[..],
        b"shop",
        b"t",
        b"t",
        name.as_bytes(),
        name.as_bytes(),
    ] {
        p.extend(lenenc_str(part));
    }
    p.extend([0x0c, 0x21, 0, 0xff, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    p
}

pub fn result_set(cols: &[&str], rows: &[&[&str]], deprecate: bool, seq: u8) -> Vec<u8> {
    result_set_with(cols, rows, deprecate, seq, 0)
}

/// Column count, definitions, an EOF unless CLIENT_DEPRECATE_EOF, text rows, the terminator
/// (with `extra` status bits).
pub fn result_set_with(
    cols: &[&str],
    rows: &[&[&str]],
    deprecate: bool,
    mut seq: u8,
    extra: u16,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |payload: &[u8]| {
        out.extend(packet(seq, payload));
        seq = seq.wrapping_add(1);
    };
    put(&[cols.len() as u8]);
    for c in cols {
        put(&column(c));
    }
    if !deprecate {
        put(&eof(2));
    }
    for row in rows {
        let bytes: Vec<u8> = row.iter().flat_map(|v| lenenc_str(v.as_bytes())).collect();
        put(&bytes);
    }
    put(&if deprecate {
        ok_eof(2 | extra)
    } else {
        eof(2 | extra)
    });
    out
}

/// A binary-protocol result set with `rows` rows of one string per column.
pub fn binary_result_set(cols: &[&str], rows: usize, deprecate: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 1u8;
    let mut put = |payload: &[u8]| {
        out.extend(packet(seq, payload));
        seq = seq.wrapping_add(1);
    };
    put(&[cols.len() as u8]);
    for c in cols {
        put(&column(c));
    }
    if !deprecate {
        put(&eof(2));
    }
    for _ in 0..rows {
        let mut row = vec![0x00];
        row.extend(vec![0; cols.len().div_ceil(8) + 1]);
        for _ in cols {
            row.extend(lenenc_str(b"value"));
        }
        put(&row);
    }
    put(&if deprecate { ok_eof(2) } else { eof(2) });
    out
}

/// COM_STMT_PREPARE_OK and its parameter and column definitions.
pub fn prepare_response(id: u32, params: &[&str], cols: &[&str], deprecate: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 1u8;
    let mut put = |payload: &[u8]| {
        out.extend(packet(seq, payload));
        seq = seq.wrapping_add(1);
    };
    let mut first = vec![0x00];
    first.extend(id.to_le_bytes());
    first.extend((cols.len() as u16).to_le_bytes());
    first.extend((params.len() as u16).to_le_bytes());
    first.extend([0, 0, 0]);
    put(&first);
    for group in [params, cols] {
        for d in group {
            put(&column(d));
        }
        if !group.is_empty() && !deprecate {
            put(&eof(2));
        }
    }
    out
}

/// COM_STMT_EXECUTE of `id` with one string parameter bound.
pub fn execute(id: u32) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend(id.to_le_bytes());
    p.extend([0, 1, 0, 0, 0]);
    p.extend([0x00, 0x01, 0xfd, 0x00]);
    p.extend(lenenc_str(b"secret"));
    p
}
