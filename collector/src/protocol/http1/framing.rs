//! HTTP/1 message framing (RFC 9112 section 6): where a head says its body ends (length,
//! chunked, close), and consuming body bytes by that framing.

use super::{MAX_HEAD, Side};
use crate::protocol::{
    content::ContentMarks,
    exchange::{Http, HttpVersion},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting `<hex size>[;ext]\r\n`.
    Size,
    /// This many data bytes left, then CRLF.
    Data(u64),
    /// The CRLF after chunk data: bytes left of it.
    DataEnd(u64),
    /// After the last chunk: trailer lines until an empty line.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// Expecting a head.
    Head,
    Fixed(u64),
    Chunked(Chunk),
    /// Response without length: the body ends when the connection does.
    UntilClose,
    /// After a 101 Switching Protocols: the bytes are no longer HTTP/1.
    Opaque,
}

pub(super) fn version_of(text: &str) -> Option<HttpVersion> {
    match text {
        "HTTP/1.0" => Some(HttpVersion::Http10),
        "HTTP/1.1" => Some(HttpVersion::Http11),
        _ => None,
    }
}

fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn is_chunked(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .trim_end()
                .ends_with("chunked")
    })
}

fn content_length(headers: &[httparse::Header<'_>]) -> Option<u64> {
    header(headers, "content-length").and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
}

/// The request's fields and how its body is framed.
pub(super) fn request_head(req: &httparse::Request<'_, '_>) -> (Http, Body, bool) {
    let method = req.method.unwrap_or_default().to_owned();
    let mut http = Http {
        version: Some(if req.version == Some(0) {
            HttpVersion::Http10
        } else {
            HttpVersion::Http11
        }),
        method: method.clone(),
        target: req.path.unwrap_or_default().to_owned(),
        host: header(req.headers, "host").map(|h| String::from_utf8_lossy(h).into_owned()),
        ..Http::default()
    };
    for h in req.headers.iter() {
        http.headers
            .offer(h.name.to_ascii_lowercase().as_bytes(), h.value);
    }
    let body = if is_chunked(req.headers) {
        Body::Chunked(Chunk::Size)
    } else {
        match content_length(req.headers) {
            Some(n) if n > 0 => Body::Fixed(n),
            _ => Body::Head,
        }
    };
    (http, body, method == "HEAD")
}

/// How a response body is framed (RFC 9112 section 6.3).
pub(super) fn response_body(
    resp: &httparse::Response<'_, '_>,
    status: u16,
    head_method: bool,
) -> Body {
    if status == 101 {
        return Body::Opaque;
    }
    if head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        return Body::Head;
    }
    if is_chunked(resp.headers) {
        return Body::Chunked(Chunk::Size);
    }
    match content_length(resp.headers) {
        Some(0) => Body::Head,
        Some(n) => Body::Fixed(n),
        None => Body::UntilClose,
    }
}

pub(super) enum BodyStep {
    Done,
    NeedMore,
    Invalid,
}

/// Consume body bytes from the side's buffer per its framing; the body bytes (not the chunk
/// framing) are noted in `marks`.
pub(super) fn consume_body(side: &mut Side, marks: &mut ContentMarks) -> BodyStep {
    loop {
        match side.body {
            Body::Head => return BodyStep::Done,
            Body::Fixed(n) => {
                let take = (n as usize).min(side.buf.len());
                marks.content_at_front(side.buf.len(), take);
                side.buf.drain(..take);
                let left = n - take as u64;
                if left == 0 {
                    side.body = Body::Head;
                    return BodyStep::Done;
                }
                side.body = Body::Fixed(left);
                return BodyStep::NeedMore;
            }
            Body::UntilClose | Body::Opaque => {
                marks.content_at_front(side.buf.len(), side.buf.len());
                side.buf.clear();
                return BodyStep::NeedMore;
            }
            Body::Chunked(Chunk::Size) => {
                let Some(eol) = side.buf.windows(2).position(|w| w == b"\r\n") else {
                    return if side.buf.len() > 1024 {
                        BodyStep::Invalid
                    } else {
                        BodyStep::NeedMore
                    };
                };
                let line = std::str::from_utf8(&side.buf[..eol]).unwrap_or("");
                let hex = line.split(';').next().unwrap_or("").trim();
                let Ok(chunk_len) = u64::from_str_radix(hex, 16) else {
                    return BodyStep::Invalid;
                };
                side.buf.drain(..eol + 2);
                side.body = Body::Chunked(if chunk_len == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(chunk_len)
                });
            }
            Body::Chunked(Chunk::Data(n)) => {
                let take = (n as usize).min(side.buf.len());
                marks.content_at_front(side.buf.len(), take);
                side.buf.drain(..take);
                let left = n - take as u64;
                if left > 0 {
                    side.body = Body::Chunked(Chunk::Data(left));
                    return BodyStep::NeedMore;
                }
                side.body = Body::Chunked(Chunk::DataEnd(2));
            }
            Body::Chunked(Chunk::DataEnd(n)) => {
                let take = (n as usize).min(side.buf.len());
                if side.buf[..take]
                    .iter()
                    .zip(&b"\r\n"[2 - n as usize..])
                    .any(|(a, b)| a != b)
                {
                    return BodyStep::Invalid;
                }
                side.buf.drain(..take);
                let left = n - take as u64;
                if left > 0 {
                    side.body = Body::Chunked(Chunk::DataEnd(left));
                    return BodyStep::NeedMore;
                }
                side.body = Body::Chunked(Chunk::Size);
            }
            Body::Chunked(Chunk::Trailers) => {
                let Some(eol) = side.buf.windows(2).position(|w| w == b"\r\n") else {
                    return if side.buf.len() > MAX_HEAD {
                        BodyStep::Invalid
                    } else {
                        BodyStep::NeedMore
                    };
                };
                side.buf.drain(..eol + 2);
                if eol == 0 {
                    side.body = Body::Head;
                    return BodyStep::Done;
                }
            }
        }
    }
}
