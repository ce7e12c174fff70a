//! What the decoders produce: exchanges, one request with its response, modelled as an enum of
//! per-protocol payloads (no flat struct whose fields every protocol reuses).

use std::fmt;

use super::{Origin, db::Db};
use crate::event::Direction;

/// One request/response exchange on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Which of this process's directions carried the request: egress when the process is the
    /// client, ingress when it is the server.
    pub request_direction: Direction,
    /// When the first request byte moved (CLOCK_MONOTONIC ns): the entry of the write that sent
    /// it, or the exit of the read that received it (see `Segment::first_byte_ns`).
    pub start_ns: u64,
    /// Who moved the request's first byte (sequence number, thread, goroutine).
    pub origin: Origin,
    /// Syscall exit time of the last response byte (or of the last byte seen).
    pub end_ns: u64,
    /// Bytes on the wire, including bodies that were not captured.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Where the request and the response start on the wire, the same at both ends.
    pub wire: WireSeqs,
    pub detail: Detail,
    pub flags: Flags,
}

/// The TCP sequence numbers of the first byte of an exchange's request and of its response
/// (HTTP/1: the message's first byte; HTTP/2: the first byte of the stream's HEADERS payload).
///
/// Both ends of a connection count the same bytes with the same numbers, and NAT rewrites
/// addresses and ports but never sequence numbers, so agents on two hosts that see the two
/// ends of one exchange name it alike (see `join`). `None` where the capture does not know the
/// number exactly (a segment without one, HTTP/2 framing joined mid-segment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireSeqs {
    pub request: Option<u32>,
    pub response: Option<u32>,
}

impl WireSeqs {
    /// From two segment-derived numbers, 0 meaning unknown (the probes write 0 when the kernel
    /// read failed).
    #[must_use]
    pub fn of(request: u32, response: u32) -> Self {
        Self {
            request: (request != 0).then_some(request),
            response: (response != 0).then_some(response),
        }
    }

    /// Both numbers, when both are known.
    #[must_use]
    pub fn both(self) -> Option<(u32, u32)> {
        Some((self.request?, self.response?))
    }
}

/// The protocol-specific part of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Http(Http),
    Grpc(Grpc),
    /// A database or cache command (Redis, PostgreSQL, MySQL).
    Db(Db),
    /// A request/response turn of a protocol no decoder knows (see `turns`): bytes and
    /// times only.
    Tcp,
}

impl Detail {
    /// The HTTP part: an HTTP exchange itself, or the HTTP/2 exchange a gRPC call rides on;
    /// none for a database command.
    #[must_use]
    pub fn http(&self) -> Option<&Http> {
        match self {
            Self::Http(h) => Some(h),
            Self::Grpc(g) => Some(&g.http),
            Self::Db(_) | Self::Tcp => None,
        }
    }

    /// The HTTP part, to fill in.
    pub fn http_mut(&mut self) -> Option<&mut Http> {
        match self {
            Self::Http(h) => Some(h),
            Self::Grpc(g) => Some(&mut g.http),
            Self::Db(_) | Self::Tcp => None,
        }
    }

    /// The HTTP/2 stream id, for exchanges that have one.
    #[must_use]
    pub fn stream_id(&self) -> Option<u32> {
        self.http().and_then(|h| h.stream_id)
    }
}

/// Conditions that make an exchange less than complete; all false for a clean one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent conditions, reported as they are"
)]
pub struct Flags {
    /// The capture joined mid-connection and header state was unknown: only what could be
    /// decoded safely is filled in (never a guess from a wrong HPACK table).
    pub headers_unknown: bool,
    /// Part of a head was not captured (cut at `--capture-bytes`).
    pub truncated: bool,
    /// The stream was reset (HTTP/2 RST_STREAM) or the connection went away mid-exchange.
    pub reset: bool,
    /// No (complete) response was seen before the connection closed.
    pub no_response: bool,
    /// Only the response was seen: the request went by before the capture could read it (an
    /// HTTP/2 read already blocked when the probes attached). Kept only when a Go probe names
    /// the request (see `correlate::enrich`).
    pub request_unseen: bool,
}

/// HTTP version of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
    Http2,
}

impl HttpVersion {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "1.0",
            Self::Http11 => "1.1",
            Self::Http2 => "2",
        }
    }
}

/// Request headers the later stages use (correlation, span attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interesting {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
}

impl Interesting {
    /// Keep `value` if `name` (lowercase) is one of the interesting headers.
    pub fn offer(&mut self, name: &[u8], value: &[u8]) {
        let slot = match name {
            b"traceparent" => &mut self.traceparent,
            b"tracestate" => &mut self.tracestate,
            b"user-agent" => &mut self.user_agent,
            b"content-type" => &mut self.content_type,
            _ => return,
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }
}

/// An HTTP/1.x or HTTP/2 exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Http {
    pub version: Option<HttpVersion>,
    /// Empty when unknown (a mid-connection HTTP/2 start).
    pub method: String,
    /// Path and query, as sent (`/a?b=c`).
    pub target: String,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub host: Option<String>,
    pub headers: Interesting,
    pub status: Option<u16>,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
}

/// A gRPC call over HTTP/2: one exchange per stream, whatever its streaming shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grpc {
    pub http: Http,
    /// `package.Service` and `Method`, from `:path` `/package.Service/Method`.
    pub service: String,
    pub method: String,
    /// `grpc-status` from the trailers (or a trailers-only response).
    pub status: Option<u32>,
    pub message: Option<String>,
    /// Length-prefixed messages seen each way.
    pub request_messages: u64,
    pub response_messages: u64,
}

impl Grpc {
    /// Split `/package.Service/Method` into service and method.
    #[must_use]
    pub fn split_path(path: &str) -> Option<(&str, &str)> {
        let rest = path.strip_prefix('/')?;
        let (service, method) = rest.split_once('/')?;
        (!service.is_empty() && !method.is_empty() && !method.contains('/'))
            .then_some((service, method))
    }
}

impl fmt::Display for Exchange {
    /// Everything but times and host (which carry ports), for views and golden files:
    /// `HTTP/1.1 GET /a -> 200 req=78 resp=190` or
    /// `gRPC pkg.Svc/Method stream=1 -> grpc-status 5 "not found" msgs=1/0 req=.. resp=..`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(http) = self.detail.http() else {
            return self.fmt_db(f);
        };
        let version = http.version.map_or("?", HttpVersion::as_str);
        let status = http
            .status
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        match &self.detail {
            Detail::Http(h) => write!(
                f,
                "HTTP/{version} {} {} -> {status}",
                or_dash(&h.method),
                or_dash(&h.target)
            )?,
            Detail::Db(_) | Detail::Tcp => {}
            Detail::Grpc(g) => {
                let grpc_status = g.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
                write!(
                    f,
                    "gRPC {}/{} -> {status} grpc-status {grpc_status}",
                    or_dash(&g.service),
                    or_dash(&g.method)
                )?;
                if let Some(message) = &g.message {
                    write!(f, " {message:?}")?;
                }
                write!(f, " msgs={}/{}", g.request_messages, g.response_messages)?;
            }
        }
        if let Some(id) = http.stream_id {
            write!(f, " stream={id}")?;
        }
        self.fmt_tail(f)
    }
}

impl Exchange {
    /// `DB postgresql SELECT orders -> 23505 req=.. resp=..` (the status code, or `ok`), or
    /// `TCP turn req=.. resp=..`.
    fn fmt_db(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Detail::Db(db) => {
                write!(f, "DB {} {}", db.system.as_str(), or_dash(&db.operation))?;
                if let Some(c) = &db.collection {
                    write!(f, " {c}")?;
                }
                write!(f, " -> {}", db.status_code.as_deref().unwrap_or("ok"))?;
            }
            Detail::Tcp => write!(f, "TCP turn")?,
            Detail::Http(_) | Detail::Grpc(_) => {}
        }
        self.fmt_tail(f)
    }

    /// Sizes and flags, the end of every exchange's line.
    fn fmt_tail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            " req={} resp={}",
            self.request_bytes, self.response_bytes
        )?;
        let Flags {
            headers_unknown,
            truncated,
            reset,
            no_response,
            request_unseen,
        } = self.flags;
        for (on, name) in [
            (headers_unknown, "headers-unknown"),
            (truncated, "truncated"),
            (reset, "reset"),
            (no_response, "no-response"),
            (request_unseen, "request-unseen"),
        ] {
            if on {
                write!(f, " [{name}]")?;
            }
        }
        Ok(())
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            Grpc::split_path("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(Grpc::split_path("/a/b/c"), None);
        assert_eq!(Grpc::split_path("/nomethod"), None);
        assert_eq!(Grpc::split_path("//x"), None);
    }
}
