//! The few message bodies the decoder reads, each from its kept prefix: startup parameters
//! (only `database`), query text, statement and portal names, SQLSTATE, command tags. Values
//! (bind parameters, rows, passwords, error messages) are never read.

use super::super::sql::{Dialect, operation_and_collection_in, sanitize_in};

pub(super) const SSL_REQUEST: u32 = 80_877_103;
pub(super) const GSSENC_REQUEST: u32 = 80_877_104;
pub(super) const CANCEL_REQUEST: u32 = 80_877_102;
/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub(super) const MAX_NAME: usize = 63;

/// A startup-phase (untyped) message, from its body (the code and what follows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Startup {
    Ssl,
    GssEnc,
    Cancel,
    /// A StartupMessage: the `database` parameter, if given.
    Start {
        database: Option<String>,
    },
    Unknown,
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated string at the front of `b` and what follows it, or None when the NUL was
/// not kept.
pub(super) fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = b.iter().position(|&c| c == 0)?;
    Some((&b[..n], &b[n + 1..]))
}

/// A statement or portal name, when it is one (printable, at most `MAX_NAME` bytes).
fn name(b: &[u8]) -> Option<String> {
    (b.len() <= MAX_NAME && super::framing::printable(b, false))
        .then(|| String::from_utf8_lossy(b).into_owned())
}

pub(super) fn startup(body: &[u8]) -> Startup {
    match be32(body) {
        Some(SSL_REQUEST) => Startup::Ssl,
        Some(GSSENC_REQUEST) => Startup::GssEnc,
        Some(CANCEL_REQUEST) => Startup::Cancel,
        Some(v) if v >> 16 == 3 && v & 0xffff < 16 => {
            // key\0value\0 pairs; the user name and every other value are passed over.
            let mut rest = &body[4..];
            let mut database = None;
            while let Some((key, after)) = cstr(rest) {
                if key.is_empty() {
                    break;
                }
                let Some((value, after)) = cstr(after) else {
                    break;
                };
                if key == b"database" {
                    database = name(value).filter(|d| !d.is_empty());
                }
                rest = after;
            }
            Startup::Start { database }
        }
        _ => Startup::Unknown,
    }
}

/// Whether `data` is exactly a connection's first client message: a StartupMessage of
/// protocol 3.x (`user` among its parameters), an SSLRequest, a GSSENCRequest or a
/// CancelRequest. See `looks_like_postgres`.
pub(super) fn is_startup(data: &[u8]) -> bool {
    let (Some(len), Some(code)) = (be32(data), data.get(4..).and_then(be32)) else {
        return false;
    };
    let len = len as usize;
    match code {
        SSL_REQUEST | GSSENC_REQUEST => len == 8 && data.len() == 8,
        CANCEL_REQUEST => (16..=264).contains(&len) && data.len() == len,
        v if v >> 16 == 3 && v & 0xffff < 16 => {
            if !(9..=super::framing::MAX_STARTUP_LEN as usize).contains(&len) || data.len() > len {
                return false;
            }
            // Parameters as far as captured: printable keys and values, `user` first or later.
            let complete = data.len() == len;
            let mut rest = &data[8..];
            let mut user = false;
            loop {
                let Some((key, after)) = cstr(rest) else {
                    return !complete && super::framing::printable(rest, true);
                };
                if key.is_empty() {
                    return complete && after.is_empty() && user;
                }
                if !key.iter().all(u8::is_ascii_graphic) {
                    return false;
                }
                user |= key == b"user";
                let Some((value, after)) = cstr(after) else {
                    return !complete && super::framing::printable(after, true);
                };
                if !super::framing::printable(value, false) {
                    return false;
                }
                rest = after;
            }
        }
        _ => false,
    }
}

/// Whether `data` may be the start of a startup-phase message: `is_startup`, or a prefix too
/// short to tell (a length under 10,000 and the start of a known code).
pub(super) fn may_be_startup(data: &[u8]) -> bool {
    if data.len() >= 8 {
        return is_startup(data);
    }
    // The code's bytes that are known: all four, or `0 3` of protocol 3.x.
    let codes: [&[u8]; 4] = [
        &SSL_REQUEST.to_be_bytes(),
        &GSSENC_REQUEST.to_be_bytes(),
        &CANCEL_REQUEST.to_be_bytes(),
        &[0, 3],
    ];
    data.iter().take(2).all(|&b| b == 0)
        && codes
            .iter()
            .any(|code| data.iter().skip(4).zip(code.iter()).all(|(a, b)| a == b))
}

/// A Query's text: up to its NUL, or all that was kept.
pub(super) fn query_text(body: &[u8]) -> &[u8] {
    cstr(body).map_or(body, |(text, _)| text)
}

/// Parse: the statement name and the query text (all that was kept when cut).
pub(super) fn parse(body: &[u8]) -> Option<(String, &[u8])> {
    let (stmt, rest) = cstr(body)?;
    Some((name(stmt)?, query_text(rest)))
}

/// Bind: the portal and the statement names (parameter values are not read).
pub(super) fn bind(body: &[u8]) -> Option<(String, String)> {
    let (portal, rest) = cstr(body)?;
    let (stmt, _) = cstr(rest)?;
    Some((name(portal)?, name(stmt)?))
}

/// Execute: the portal name.
pub(super) fn execute(body: &[u8]) -> Option<String> {
    name(cstr(body)?.0)
}

/// Close: whether a statement (not a portal) is closed, and its name.
pub(super) fn close(body: &[u8]) -> Option<(bool, String)> {
    let (&kind, rest) = body.split_first()?;
    Some((kind == b'S', name(cstr(rest)?.0)?))
}

/// ErrorResponse: the SQLSTATE (field `C`), five digits or upper-case letters. The message,
/// detail and every other field are passed over.
pub(super) fn sqlstate(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while let Some((&code, after)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let (value, after) = cstr(after)?;
        if code == b'C' {
            let ok = value.len() == 5
                && value
                    .iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
            return ok.then(|| String::from_utf8_lossy(value).into_owned());
        }
        rest = after;
    }
    None
}

/// CommandComplete: the command, the tag's first word (`SELECT 3` → `SELECT`).
pub(super) fn command_tag(body: &[u8]) -> Option<String> {
    let tag = query_text(body);
    let word = tag.split(|&c| c == b' ').next()?;
    (!word.is_empty() && word.len() <= 32 && word.iter().all(u8::is_ascii_uppercase))
        .then(|| String::from_utf8_lossy(word).into_owned())
}

/// What is kept of a statement's text: its operation, table and sanitized text, never the
/// text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stmt {
    pub operation: String,
    pub collection: Option<String>,
    pub text: String,
}

impl Stmt {
    /// From query text; `cut`: the text's end was not seen (its table is then not trusted:
    /// a join may follow).
    pub(super) fn new(text: &[u8], cut: bool) -> Self {
        let text = String::from_utf8_lossy(text);
        let (operation, collection) = operation_and_collection_in(&text, Dialect::Postgres);
        Self {
            operation,
            collection: collection.filter(|_| !cut),
            text: sanitize_in(&text, Dialect::Postgres),
        }
    }

    /// Bytes held.
    pub(super) fn size(&self) -> usize {
        self.operation.len() + self.text.len() + self.collection.as_ref().map_or(0, String::len)
    }
}
