//! Per-stream state of the HTTP/2 decoder: what a stream's header blocks said, its byte and
//! gRPC message counts, and the helpers that read header fields into it.

use super::frame::{FLAG_PADDED, FLAG_PRIORITY, FrameHeader, HEADERS, PUSH_PROMISE};
use super::other;
use crate::{
    protocol::{Origin, WireSeqs, exchange::Http},
    source::Direction,
};

/// Counts gRPC length-prefixed messages in one direction of a stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum MessageCounter {
    /// Reading the 5-byte prefix: bytes of it seen, and the length bytes so far.
    Prefix(u8, [u8; 4]),
    /// Skipping a message body.
    Body(u64),
    /// A gap fell inside a prefix: counting stopped.
    Lost,
}

impl Default for MessageCounter {
    fn default() -> Self {
        Self::Prefix(0, [0; 4])
    }
}

impl MessageCounter {
    /// Feed payload bytes; returns how many messages started in them. `on_body` is told which
    /// of them (by index) are message bodies rather than prefixes; after a lost prefix, all.
    pub(super) fn feed(&mut self, mut bytes: &[u8], mut on_body: impl FnMut(usize, usize)) -> u64 {
        let mut started = 0;
        let mut at = 0;
        while !bytes.is_empty() {
            match self {
                Self::Lost => {
                    on_body(at, bytes.len());
                    return started;
                }
                Self::Body(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    on_body(at, take as usize);
                    at += take as usize;
                    bytes = &bytes[take as usize..];
                    *left -= take;
                    if *left == 0 {
                        *self = Self::default();
                    }
                }
                Self::Prefix(got, len) => {
                    if *got > 0 {
                        len[*got as usize - 1] = bytes[0];
                    }
                    *got += 1;
                    at += 1;
                    bytes = &bytes[1..];
                    if *got == 5 {
                        started += 1;
                        let body = u64::from(u32::from_be_bytes(*len));
                        *self = if body == 0 {
                            Self::default()
                        } else {
                            Self::Body(body)
                        };
                    }
                }
            }
        }
        started
    }

    pub(super) fn gap(&mut self, n: u64) {
        *self = match *self {
            Self::Body(left) if n < left => Self::Body(left - n),
            Self::Body(left) if n == left => Self::default(),
            _ => Self::Lost,
        };
    }
}

/// One stream's exchange in progress.
#[derive(Debug, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one stream"
)]
pub(super) struct Stream {
    pub(super) http: Http,
    pub(super) grpc: bool,
    pub(super) grpc_status: Option<u32>,
    pub(super) grpc_message: Option<String>,
    pub(super) messages: [MessageCounter; 2],
    pub(super) message_counts: [u64; 2],
    pub(super) start_ns: Option<u64>,
    pub(super) origin: Origin,
    /// Where its request's and response's first HEADERS payloads sit on the wire.
    pub(super) wire: WireSeqs,
    pub(super) end_ns: u64,
    pub(super) bytes: [u64; 2],
    pub(super) request_headers_seen: bool,
    pub(super) response_headers_seen: bool,
    pub(super) request_ended: bool,
    pub(super) headers_unknown: bool,
    pub(super) truncated: bool,
    /// Opened by its response (see `Flags::request_unseen`).
    pub(super) request_unseen: bool,
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload (padding and priority or
/// promised-stream fields removed), or None when the lengths do not add up.
pub(super) fn header_fragment(header: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if header.flags & FLAG_PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if header.kind == HEADERS && header.flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    if header.kind == PUSH_PROMISE {
        start += 4;
    }
    payload.get(start..end)
}

/// Which direction carries requests, from the pseudo-headers of a block seen in `direction`.
pub(super) fn role_from_fields(
    fields: &[(Vec<u8>, Vec<u8>)],
    direction: Direction,
) -> Option<Direction> {
    fields.iter().find_map(|(name, _)| match name.as_slice() {
        b":status" => Some(other(direction)),
        b":method" | b":path" | b":scheme" | b":authority" => Some(direction),
        _ => None,
    })
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

pub(super) fn apply_request_fields(s: &mut Stream, fields: &[(Vec<u8>, Vec<u8>)]) {
    for (name, value) in fields {
        match name.as_slice() {
            b":method" => s.http.method = text(value),
            b":path" => s.http.target = text(value),
            b":authority" => s.http.host = Some(text(value)),
            b"content-type" => {
                s.grpc = value.starts_with(b"application/grpc");
                s.http.headers.offer(name, value);
            }
            _ => s.http.headers.offer(name, value),
        }
    }
}

pub(super) fn apply_response_fields(s: &mut Stream, fields: &[(Vec<u8>, Vec<u8>)]) {
    for (name, value) in fields {
        match name.as_slice() {
            b":status" => {
                s.http.status = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            b"grpc-status" => {
                s.grpc_status = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            b"grpc-message" => s.grpc_message = Some(text(value)),
            b"content-type" if value.starts_with(b"application/grpc") => s.grpc = true,
            _ => {}
        }
    }
}
