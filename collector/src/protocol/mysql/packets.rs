//! Check-then-parse functions over MySQL payloads: the server greeting, the client's login,
//! OK/ERR/EOF, COM_STMT_PREPARE_OK, and whether a client segment starts with a plausible command
//! (to join a connection mid-conversation). Each returns `None` for bytes it does not accept;
//! none keeps a value (auth data, bind parameters, rows).

/// Capability flags (`CLIENT_*`).
pub(super) mod caps {
    pub const CONNECT_WITH_DB: u32 = 0x8;
    pub const COMPRESS: u32 = 0x20;
    pub const PROTOCOL_41: u32 = 0x200;
    pub const SSL: u32 = 0x800;
    pub const SECURE_CONNECTION: u32 = 0x8000;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
    pub const DEPRECATE_EOF: u32 = 0x100_0000;
    pub const ZSTD_COMPRESSION: u32 = 0x400_0000;
}

/// Server status flags.
pub(super) const MORE_RESULTS_EXISTS: u16 = 0x0008;
pub(super) const CURSOR_EXISTS: u16 = 0x0040;

/// Command bytes.
pub(super) mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const BINLOG_DUMP_GTID: u8 = 0x1e;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(p.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?))
}

/// A length-encoded integer at the front of `p`: its value and the bytes it took.
pub(super) fn lenenc(p: &[u8]) -> Option<(u64, usize)> {
    let n = match *p.first()? {
        v @ 0..=0xfa => return Some((u64::from(v), 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = p.get(1..=n)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some((u64::from_le_bytes(v), 1 + n))
}

/// The bytes before the first NUL from `at`, and the offset after the NUL.
fn nul_terminated(p: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = p.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some((&rest[..end], at + end + 1))
}

/// A schema name as sent: 1..=64 printable ASCII bytes, no spaces or quotes (an identifier, not
/// a value).
pub(super) fn schema_name(bytes: &[u8]) -> Option<String> {
    let ok = (1..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'\'' | b'"' | b'`' | b';'));
    ok.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// The server's initial handshake (protocol 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Greeting {
    pub version: String,
    pub caps: u32,
}

/// Parse a HandshakeV10 payload: `0x0a`, a NUL-terminated printable version that starts with a
/// digit (1..=64 bytes), connection id (4), auth data part 1 (8), a zero filler, the lower
/// capability bits (with CLIENT_PROTOCOL_41), then optionally charset, status and the upper
/// capability bits. The auth data is skipped, never kept.
pub(super) fn greeting(p: &[u8]) -> Option<Greeting> {
    if *p.first()? != 0x0a {
        return None;
    }
    let (version, after) = nul_terminated(p, 1)?;
    let ok = (1..=64).contains(&version.len())
        && version[0].is_ascii_digit()
        && version.iter().all(|&b| (0x20..0x7f).contains(&b));
    if !ok || *p.get(after + 12)? != 0 {
        return None;
    }
    let lower = u16_at(p, after + 13)?;
    let upper = u16_at(p, after + 18).unwrap_or(0);
    let caps = u32::from(lower) | (u32::from(upper) << 16);
    (caps & caps::PROTOCOL_41 != 0).then(|| Greeting {
        version: String::from_utf8_lossy(version).into_owned(),
        caps,
    })
}

/// What the client answers the greeting with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hello {
    /// SSLRequest: TLS follows.
    Ssl,
    /// HandshakeResponse41: its capabilities and the database it names (user and auth data are
    /// skipped).
    Login { caps: u32, database: Option<String> },
    /// A pre-4.1 HandshakeResponse320: not decoded.
    Old,
}

/// Parse the client's answer to the greeting (`whole`: the payload was captured entirely).
pub(super) fn hello(p: &[u8], len: u64, whole: bool) -> Option<Hello> {
    let caps = u32_at(p, 0)?;
    if caps & caps::PROTOCOL_41 == 0 {
        return Some(Hello::Old);
    }
    if len == 32 && caps & caps::SSL != 0 {
        return Some(Hello::Ssl);
    }
    let mut database = None;
    if caps & caps::CONNECT_WITH_DB != 0 && whole {
        database = login_database(p, caps);
    }
    Some(Hello::Login { caps, database })
}

fn login_database(p: &[u8], caps: u32) -> Option<String> {
    // caps (4), max packet (4), charset (1), filler (23), then the user name.
    let (_user, mut at) = nul_terminated(p, 32)?;
    if caps & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let (n, used) = lenenc(p.get(at..)?)?;
        at = at
            .checked_add(used)?
            .checked_add(usize::try_from(n).ok()?)?;
    } else if caps & caps::SECURE_CONNECTION != 0 {
        at += 1 + usize::from(*p.get(at)?);
    } else {
        at = nul_terminated(p, at)?.1;
    }
    let rest = p.get(at..)?;
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    schema_name(&rest[..end])
}

/// Whether a client segment starts with a HandshakeResponse41 sent after an SSLRequest, as the
/// first plaintext of a TLS connection: sequence id 2, a payload of 34..=4096 bytes,
/// CLIENT_PROTOCOL_41 and CLIENT_SSL set, the 23-byte zero filler, and a NUL-terminated user
/// name after it.
pub(super) fn tls_login(data: &[u8]) -> bool {
    let Some(hdr) = data.get(..4) else {
        return false;
    };
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]);
    let p = &data[4..];
    let need = caps::PROTOCOL_41 | caps::SSL;
    hdr[3] == 2
        && (34..=4096).contains(&len)
        && u32_at(p, 0).is_some_and(|c| c & need == need)
        && p.get(9..32).is_some_and(|f| f.iter().all(|&b| b == 0))
        && nul_terminated(p, 32).is_some()
}

/// COM_CHANGE_USER's schema: user, auth data (1-byte length with CLIENT_SECURE_CONNECTION,
/// assumed when the capabilities are unknown), then the schema.
pub(super) fn change_user_schema(p: &[u8], caps: Option<u32>) -> Option<String> {
    let (_user, mut at) = nul_terminated(p, 1)?;
    if caps.is_none_or(|c| c & caps::SECURE_CONNECTION != 0) {
        at += 1 + usize::from(*p.get(at)?);
    } else {
        at = nul_terminated(p, at)?.1;
    }
    schema_name(nul_terminated(p, at)?.0)
}

/// An ERR packet's error code.
pub(super) fn err_code(p: &[u8]) -> Option<u16> {
    if *p.first()? == 0xff {
        u16_at(p, 1)
    } else {
        None
    }
}

/// The status flags of a result set's terminator or an OK packet: an EOF (`0xfe`, payload of 5:
/// warnings then status) or an OK (`0x00`/`0xfe`, affected rows and last insert id as
/// length-encoded integers, then status).
pub(super) fn end_status(p: &[u8], len: u64) -> Option<u16> {
    match *p.first()? {
        0xfe if len == 5 => u16_at(p, 3),
        0x00 | 0xfe => {
            let (_, a) = lenenc(p.get(1..)?)?;
            let (_, b) = lenenc(p.get(1 + a..)?)?;
            u16_at(p, 1 + a + b)
        }
        _ => None,
    }
}

/// COM_STMT_PREPARE_OK: statement id, column count, parameter count.
pub(super) fn prepare_ok(p: &[u8]) -> Option<(u32, u16, u16)> {
    if *p.first()? != 0 || *p.get(9)? != 0 {
        return None;
    }
    Some((u32_at(p, 1)?, u16_at(p, 5)?, u16_at(p, 7)?))
}

/// COM_QUERY's text, after the command byte. With CLIENT_QUERY_ATTRIBUTES the text follows a
/// parameter count and a parameter-set count: no attributes (`00 01`) are skipped; with
/// attributes the text is not found (their values are not parsed).
pub(super) fn query_text(p: &[u8]) -> Option<&[u8]> {
    let text = p.get(1..)?;
    match text {
        [0, 1, rest @ ..] => Some(rest),
        [0, ..] | [1..=0xfa, 1, ..] => None,
        _ => Some(text),
    }
}

/// Whether SQL text (possibly cut) looks like a statement: UTF-8 (a cut character at the end is
/// allowed), no control bytes but whitespace, starting (after spaces) with a letter, `(`, or a
/// comment.
fn plausible_sql(text: &[u8]) -> bool {
    let text = &text[..text.len().min(256)];
    let valid = match std::str::from_utf8(text) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    let clean = valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'));
    let first = valid.trim_start().chars().next();
    clean && first.is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '(' | '/' | '-' | '#'))
}

/// Whether one command packet is plausible: `p` is its captured payload (`len` bytes on the
/// wire). Strict per command: exact lengths for fixed-size commands, iteration count 1 for
/// COM_STMT_EXECUTE, SQL-looking text for COM_QUERY and COM_STMT_PREPARE.
fn plausible_command(p: &[u8], len: u64) -> bool {
    let Some(&cmd) = p.first() else {
        return false;
    };
    match cmd {
        com::QUERY | com::STMT_PREPARE => {
            len >= 2 && p.len() >= 2 && query_text(p).is_some_and(plausible_sql)
        }
        com::STMT_EXECUTE => {
            len >= 10 && p.get(5).is_some_and(|f| f & !0x0f == 0) && u32_at(p, 6) == Some(1)
        }
        com::STMT_CLOSE | com::STMT_RESET => len == 5,
        com::PING | com::QUIT | com::RESET_CONNECTION | com::STATISTICS => len == 1,
        com::STMT_FETCH => len == 9,
        com::SET_OPTION => len == 3 && matches!(u16_at(p, 1), Some(0 | 1)),
        com::INIT_DB => p.len() as u64 == len && schema_name(&p[1..]).is_some(),
        _ => false,
    }
}

/// Whether a client segment (`data` captured of `total` bytes) starts with a command packet a
/// client begins a turn with: sequence id 0, a plausible command (see `plausible_command`), and
/// a length that ends at the segment's end or at a second plausible command's header.
#[must_use]
pub fn looks_like_command(data: &[u8], total: u64) -> bool {
    let Some((len, rest)) = command_at(data) else {
        return false;
    };
    let end = 4 + len;
    if end > total {
        return false;
    }
    if end == total {
        return true;
    }
    // Pipelined: the next packet must be a command too, and fit.
    usize::try_from(len)
        .ok()
        .and_then(|n| rest.get(n..))
        .and_then(command_at)
        .is_some_and(|(len2, _)| end + 4 + len2 <= total)
}

/// A command packet header at the front of `data`: its payload length and the bytes after the
/// header.
fn command_at(data: &[u8]) -> Option<(u64, &[u8])> {
    let hdr = data.get(..4)?;
    let len = u64::from(u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]));
    let rest = &data[4..];
    let p = &rest[..rest.len().min(len as usize)];
    (hdr[3] == 0 && len < u64::from(super::framing::MAX_PAYLOAD) && plausible_command(p, len))
        .then_some((len, rest))
}
