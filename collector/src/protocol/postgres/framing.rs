//! One direction's message framing: `type byte + int32 length + body` (the client's startup
//! messages have no type byte; the server's answer to SSLRequest/GSSENCRequest is one bare
//! byte). Bodies are skipped by their length, uncaptured bytes included; only the first bytes
//! of the messages the decoder reads are kept (`keep_cap`). A gap where a header should be
//! loses the framing, which then resumes at a syscall that starts with a plausible chain of
//! messages (`valid_chain`).

use super::super::{Origin, Piece, Segment};

/// Client message types (after the startup phase).
pub(super) const CLIENT_TYPES: &[u8] = b"QPBEDCHSFXpdcf";
/// Client message types a resync may start at (a request's first message).
pub(super) const CLIENT_STARTS: &[u8] = b"QPBESDCHFX";
/// Server message types.
pub(super) const SERVER_TYPES: &[u8] = b"RSKZTDCENI123ntsGHWdcAVv";
/// Longest message a resync accepts as its first (a plausibility check, not a limit when
/// synced: DataRow and CopyData may be large, and are skipped by count).
pub(super) const RESYNC_MAX_LEN: u32 = 1 << 20;
/// Longest startup-phase message accepted.
pub(super) const MAX_STARTUP_LEN: u32 = 10_000;

/// A complete message, with the kept prefix of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Msg {
    /// The type byte; 0 for an untyped startup-phase message; for `single`, the byte itself.
    pub ty: u8,
    /// The server's one-byte answer to an encryption request.
    pub single: bool,
    /// The first `keep_cap` bytes of the body (or fewer when bytes were not captured).
    pub body: Vec<u8>,
    /// Body bytes the decoder wanted were not captured.
    pub cut: bool,
    /// The body's length.
    pub body_len: u64,
    /// Bytes on the wire: type, length and body.
    pub wire_len: u64,
    /// Who moved the first byte and when.
    pub origin: Origin,
    pub start_ns: u64,
}

#[derive(Debug)]
struct Body {
    left: u64,
    msg: Msg,
    cap: usize,
}

/// What a segment did to the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fed {
    /// Decoded (possibly after resyncing at its start).
    Ok,
    /// Skipped: not synced, and the segment does not start a plausible chain.
    Skipped,
    /// Lost the framing in this segment (a gap at a header, an impossible header).
    Desynced,
}

#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent states of one direction's framing"
)]
pub(super) struct Framer {
    client: bool,
    head: [u8; 5],
    have: usize,
    head_origin: Origin,
    head_ns: u64,
    body: Option<Body>,
    pub synced: bool,
    /// Startup phase: messages have no type byte (client side).
    pub untyped: bool,
    /// The server's one-byte answer to SSLRequest/GSSENCRequest comes next.
    pub single_byte: bool,
}

/// Body bytes worth keeping for the decoder, by side and type.
fn keep_cap(client: bool, ty: u8) -> usize {
    match (client, ty) {
        (true, 0) => MAX_STARTUP_LEN as usize,
        (true, b'Q' | b'P') => 32 * 1024,
        (true, b'B' | b'E' | b'D' | b'C') => 160,
        (false, b'E') => 2048,
        (false, b'C') => 64,
        (false, b'Z') => 1,
        // Passwords (`p`), bind values past the names, rows and copy data are never kept.
        _ => 0,
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Framer {
    pub(super) fn new(client: bool, synced: bool) -> Self {
        Self {
            client,
            head: [0; 5],
            have: 0,
            head_origin: Origin::default(),
            head_ns: 0,
            body: None,
            synced,
            untyped: false,
            single_byte: false,
        }
    }

    /// Bytes held.
    pub(super) fn buffered_bytes(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.msg.body.capacity())
    }

    fn desync(&mut self) -> Fed {
        self.synced = false;
        self.have = 0;
        self.body = None;
        self.single_byte = false;
        Fed::Desynced
    }

    /// Frame one segment's bytes; complete messages are appended to `out`.
    pub(super) fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Msg>) -> Fed {
        if !self.synced {
            if !valid_chain(seg.data, self.client) {
                return Fed::Skipped;
            }
            *self = Self::new(self.client, true);
        }
        let mut pos: u64 = 0;
        for piece in seg.pieces() {
            match piece {
                Piece::Bytes(bytes) => {
                    if !self.bytes(seg, pos, bytes, out) {
                        return self.desync();
                    }
                    pos += bytes.len() as u64;
                }
                Piece::Gap(n) => {
                    if !self.gap(n, out) {
                        return self.desync();
                    }
                    pos += n;
                }
            }
        }
        Fed::Ok
    }

    /// Uncaptured bytes: skipped inside a body; anywhere else the framing is lost (false).
    fn gap(&mut self, mut n: u64, out: &mut Vec<Msg>) -> bool {
        if let Some(body) = &mut self.body {
            let skip = body.left.min(n);
            body.left -= skip;
            n -= skip;
            if body.msg.body.len() < body.cap {
                body.msg.cut = true;
            }
            if body.left == 0 {
                out.push(self.body.take().expect("a body").msg);
            }
        }
        n == 0
    }

    fn bytes(&mut self, seg: &Segment<'_>, pos: u64, bytes: &[u8], out: &mut Vec<Msg>) -> bool {
        let mut i = 0;
        while i < bytes.len() {
            if let Some(body) = &mut self.body {
                let take = (body.left.min((bytes.len() - i) as u64)) as usize;
                let room = body.cap.saturating_sub(body.msg.body.len()).min(take);
                body.msg.body.extend_from_slice(&bytes[i..i + room]);
                body.left -= take as u64;
                i += take;
                if body.left == 0 {
                    out.push(self.body.take().expect("a body").msg);
                }
                continue;
            }
            if self.have == 0 {
                self.head_origin = Origin {
                    seq: seg.origin.seq.wrapping_add((pos + i as u64) as u32),
                    ..seg.origin
                };
                self.head_ns = seg.first_byte_ns();
                if self.single_byte {
                    self.single_byte = false;
                    if matches!(bytes[i], b'S' | b'N' | b'G') {
                        out.push(Msg {
                            ty: bytes[i],
                            single: true,
                            body: Vec::new(),
                            cut: false,
                            body_len: 0,
                            wire_len: 1,
                            origin: self.head_origin,
                            start_ns: self.head_ns,
                        });
                        i += 1;
                        continue;
                    }
                }
            }
            self.head[self.have] = bytes[i];
            self.have += 1;
            i += 1;
            let head_len = if self.untyped { 4 } else { 5 };
            if self.have < head_len {
                continue;
            }
            self.have = 0;
            let (ty, len) = if self.untyped {
                (0, be32(&self.head[..4]))
            } else {
                (self.head[0], be32(&self.head[1..5]))
            };
            let known = if self.untyped {
                (8..=MAX_STARTUP_LEN).contains(&len)
            } else if self.client {
                CLIENT_TYPES.contains(&ty)
            } else {
                SERVER_TYPES.contains(&ty)
            };
            if !known || len < 4 || len > i32::MAX as u32 {
                return false;
            }
            let body_len = u64::from(len - 4);
            let cap = keep_cap(self.client, ty).min(body_len as usize);
            let msg = Msg {
                ty,
                single: false,
                body: Vec::with_capacity(cap),
                cut: false,
                body_len,
                wire_len: body_len + head_len as u64,
                origin: self.head_origin,
                start_ns: self.head_ns,
            };
            if body_len == 0 {
                out.push(msg);
            } else {
                self.body = Some(Body {
                    left: body_len,
                    msg,
                    cap,
                });
            }
        }
        true
    }

    /// Between messages: no header or body half read.
    pub(super) fn at_boundary(&self) -> bool {
        self.have == 0 && self.body.is_none()
    }
}

/// Printable text: UTF-8 without control characters other than tab, CR and LF. `partial`: the
/// text may be cut anywhere, even inside a character.
pub(super) fn printable(text: &[u8], partial: bool) -> bool {
    let s = match std::str::from_utf8(text) {
        Ok(s) => s,
        // Cut inside a character: the text before it.
        Err(e) if partial && e.error_len().is_none() => {
            std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    s.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n'))
}

/// A NUL-terminated printable name at the front of `b`: its length without the NUL, or None.
/// `complete`: `b` holds the whole body.
fn name_len(b: &[u8], max: usize) -> Option<usize> {
    let n = b.iter().position(|&c| c == 0)?;
    (n <= max && printable(&b[..n], false)).then_some(n)
}

/// Whether a message body (`complete` or cut at the segment's end) looks right for its type.
fn content_ok(client: bool, ty: u8, body: &[u8], complete: bool, len: u32) -> bool {
    let body_len = len as usize - 4;
    match (client, ty) {
        (true, b'Q') => {
            if complete {
                body.last() == Some(&0) && body_len > 1 && printable(&body[..body_len - 1], false)
            } else {
                !body.contains(&0) && printable(body, true)
            }
        }
        (true, b'P') => {
            let Some(n) = name_len(body, 63) else {
                return !complete && !body.contains(&0) && printable(body, true);
            };
            let rest = &body[n + 1..];
            match rest.iter().position(|&c| c == 0) {
                Some(q) => {
                    printable(&rest[..q], false)
                        && (!complete || {
                            let params = &rest[q + 1..];
                            params.len() >= 2
                                && params.len()
                                    == 2 + 4 * usize::from(u16::from_be_bytes([
                                        params[0], params[1],
                                    ]))
                        })
                }
                None => !complete && printable(rest, true),
            }
        }
        (true, b'B') => match name_len(body, 63) {
            Some(n) => match name_len(&body[n + 1..], 63) {
                Some(_) => true,
                None => !complete && body.len() < n + 65,
            },
            None => !complete && body.len() < 64,
        },
        (true, b'E') => complete && name_len(body, 63).is_some_and(|n| body_len == n + 5),
        (true, b'D' | b'C') => {
            complete
                && matches!(body.first(), Some(b'S' | b'P'))
                && name_len(&body[1..], 63).is_some_and(|n| body_len == n + 2)
        }
        (true, b'S' | b'H' | b'X') | (false, b'1' | b'2' | b'3' | b'n' | b'I' | b'c' | b's') => {
            body_len == 0
        }
        (true, b'F') => body_len >= 8,
        (false, b'Z') => body_len == 1 && (!complete || matches!(body[0], b'I' | b'T' | b'E')),
        (false, b'C') => {
            if complete {
                body.last() == Some(&0) && name_len(body, 63) == Some(body_len - 1)
            } else {
                !body.contains(&0) && printable(body, true)
            }
        }
        (false, b'E' | b'N') => {
            // Fields: a letter code and a string, then a final NUL.
            body.first().is_some_and(u8::is_ascii_alphabetic)
                && (!complete || body.last() == Some(&0))
        }
        (false, b'K') => (8..=260).contains(&body_len),
        (false, b'R') => body_len >= 4,
        (false, b'T' | b'D' | b't') => body_len >= 2,
        (false, b'S' | b'A' | b'G' | b'H' | b'W' | b'V' | b'v' | b'd') => true,
        _ => false,
    }
}

/// Whether `data` (a syscall's captured bytes) is a chain of plausible messages of one side:
/// the first complete enough to check (at least its header), each type right for the side (a
/// client chain starts with a request's first message), each length plausible, each body right
/// for its type as far as captured, the last possibly cut by the end of the capture.
pub(super) fn valid_chain(data: &[u8], client: bool) -> bool {
    let mut i = 0;
    let mut first = true;
    while i < data.len() {
        let Some(head) = data.get(i..i + 5) else {
            // A header cut by the capture: its type must still fit.
            let types = if client { CLIENT_TYPES } else { SERVER_TYPES };
            return !first && types.contains(&data[i]);
        };
        let (ty, len) = (head[0], be32(&head[1..5]));
        let types = match (client, first) {
            (true, true) => CLIENT_STARTS,
            (true, false) => CLIENT_TYPES,
            (false, _) => SERVER_TYPES,
        };
        if !types.contains(&ty) || !(4..=RESYNC_MAX_LEN).contains(&len) {
            return false;
        }
        let end = i + 1 + len as usize;
        let complete = end <= data.len();
        let body = &data[i + 5..end.min(data.len())];
        if !content_ok(client, ty, body, complete, len) {
            return false;
        }
        i = end;
        first = false;
    }
    !first
}
