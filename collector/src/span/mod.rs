//! `span`: the spans the correlator makes of exchanges, modelled as common fields plus an enum of
//! per-protocol payloads (not one flat struct every protocol reuses), and their OpenTelemetry
//! semantic conventions: names, kinds, status and attributes. Exporters turn these into OTLP.

pub mod error;
pub mod ids;
pub mod processes;
pub mod resource;
pub mod route;

use std::net::SocketAddr;

pub use self::{
    error::ErrorType,
    ids::{IdGenerator, SpanId, TraceId, TraceParent},
};
use crate::protocol::{Detail, Exchange, Grpc, Http, HttpVersion};

/// Server (an inbound request) or client (an outbound one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

/// How a span's parent was found; kept for tests, the console view and self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentLink {
    /// A server span whose client is the other end of the same connection and bytes.
    Peer,
    /// A client span made while this server span's goroutine (or one of its descendants) ran.
    Goroutine,
    /// A client span made on the thread that was serving this server span.
    Thread,
    /// The request carried a `traceparent` from an instrumented caller.
    TraceParent,
    /// A root: nothing caused it that wirespan saw.
    Root,
    /// A parent was expected (a local peer, a Go handler) but did not arrive in time.
    Orphan,
    /// Made by a goroutine whose inherited request had already ended (a long-lived worker):
    /// nothing passive ties it to the request that asked for it, so it starts its own trace.
    ContextEnded,
}

/// One span, ready to export.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub link: ParentLink,
    pub kind: SpanKind,
    /// CLOCK_MONOTONIC ns; exporters turn them into wall time.
    pub start_ns: u64,
    pub end_ns: u64,
    pub pid: u32,
    pub comm: String,
    /// This process's end and the peer.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub payload: Payload,
    /// The exchange was cut short (reset, no response, headers unknown).
    pub incomplete: bool,
    /// The call failed below the protocol (refused, timed out, reset): its `error.type`.
    pub error: Option<ErrorType>,
}

/// The protocol-specific part of a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Http(HttpSpan),
    Grpc(GrpcSpan),
    /// A connect that failed before any byte, by a program whose request the agent cannot
    /// name (no Go uprobes; nothing was written): the span says which peer could not be
    /// reached, and why (`Span::error`).
    Connect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpan {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub host: Option<String>,
    pub status: Option<u16>,
    pub version: Option<HttpVersion>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcSpan {
    pub service: String,
    pub method: String,
    pub status: Option<u32>,
    pub message: Option<String>,
    pub authority: Option<String>,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl Payload {
    /// The payload of an exchange.
    #[must_use]
    pub fn of(exchange: &Exchange) -> Self {
        match &exchange.detail {
            Detail::Http(http) => Self::Http(http_span(http)),
            Detail::Grpc(grpc) => Self::Grpc(grpc_span(grpc)),
        }
    }
}

fn http_span(http: &Http) -> HttpSpan {
    HttpSpan {
        method: http.method.clone(),
        target: http.target.clone(),
        host: http.host.clone(),
        status: http.status,
        version: http.version,
        user_agent: http.headers.user_agent.clone(),
    }
}

fn grpc_span(grpc: &Grpc) -> GrpcSpan {
    GrpcSpan {
        service: grpc.service.clone(),
        method: grpc.method.clone(),
        status: grpc.status,
        message: grpc.message.clone(),
        authority: grpc.http.host.clone(),
    }
}

/// gRPC status code names, by code.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl Span {
    /// `GET /path` (query left out: it is high-cardinality), or `package.Service/Method`.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.payload {
            Payload::Http(h) if h.method.is_empty() => "HTTP".to_owned(),
            Payload::Http(h) => format!("{} {}", h.method, path_of(&h.target)),
            Payload::Grpc(g) if g.service.is_empty() => "gRPC".to_owned(),
            Payload::Grpc(g) => format!("{}/{}", g.service, g.method),
            Payload::Connect => "connect".to_owned(),
        }
    }

    /// Whether the span is an error by the semantic conventions: HTTP 5xx for servers, 4xx and
    /// 5xx for clients, any gRPC status but OK; and a request that got no response.
    #[must_use]
    pub fn is_error(&self) -> bool {
        if self.error.is_some() {
            return true;
        }
        match &self.payload {
            Payload::Http(h) => match h.status {
                Some(s) if s >= 500 => true,
                Some(s) if s >= 400 => self.kind == SpanKind::Client,
                Some(_) => false,
                None => self.incomplete,
            },
            Payload::Grpc(g) => g.status.is_some_and(|s| s != 0),
            Payload::Connect => false,
        }
    }

    /// The `error.type` of an error span: the transport failure when there was one, else the
    /// response's own code (HTTP status as a string, gRPC status name), else `_OTHER`.
    #[must_use]
    pub fn error_type(&self) -> Option<String> {
        if let Some(error) = self.error {
            return Some(error.as_str().to_owned());
        }
        if !self.is_error() {
            return None;
        }
        Some(match &self.payload {
            Payload::Http(h) => h.status.map_or_else(
                || ErrorType::NoResponse.as_str().to_owned(),
                |s| s.to_string(),
            ),
            Payload::Grpc(g) => g
                .status
                .and_then(|code| GRPC_CODES.get(code as usize).copied())
                .unwrap_or("_OTHER")
                .to_owned(),
            Payload::Connect => ErrorType::Other.as_str().to_owned(),
        })
    }

    /// The status description of an error span (empty otherwise).
    #[must_use]
    pub fn status_message(&self) -> String {
        if !self.is_error() {
            return String::new();
        }
        match &self.payload {
            Payload::Http(h) => h.status.map_or_else(
                || {
                    self.error
                        .unwrap_or(ErrorType::NoResponse)
                        .describe()
                        .to_owned()
                },
                |s| format!("HTTP {s}"),
            ),
            Payload::Connect => format!(
                "connect to {}: {}",
                self.remote,
                self.error.unwrap_or(ErrorType::Other).describe()
            ),
            Payload::Grpc(g) => {
                let code = g.status.unwrap_or(2);
                let name = GRPC_CODES.get(code as usize).copied().unwrap_or("UNKNOWN");
                match &g.message {
                    Some(m) if !m.is_empty() => format!("{name}: {m}"),
                    _ => name.to_owned(),
                }
            }
        }
    }

    /// The span's attributes, by the OpenTelemetry semantic conventions. The query string is
    /// redacted unless `show_query`; credential headers are never among them.
    #[must_use]
    pub fn attributes(&self, show_query: bool) -> Vec<(&'static str, Value)> {
        let mut attrs = Vec::new();
        let s = |v: &str| Value::Str(v.to_owned());
        let (server, client) = match self.kind {
            SpanKind::Server => (self.local, self.remote),
            SpanKind::Client => (self.remote, self.local),
        };
        match &self.payload {
            Payload::Http(h) => {
                if !h.method.is_empty() {
                    attrs.push(("http.request.method", s(&h.method)));
                }
                attrs.push(("url.path", s(path_of(&h.target))));
                if let Some((_, query)) = h.target.split_once('?') {
                    let query = if show_query { query } else { "REDACTED" };
                    attrs.push(("url.query", s(query)));
                }
                if let Some(status) = h.status {
                    attrs.push(("http.response.status_code", Value::Int(i64::from(status))));
                }
                if let Some(ua) = &h.user_agent {
                    attrs.push(("user_agent.original", s(ua)));
                }
                attrs.push(("network.protocol.name", s("http")));
                if let Some(v) = h.version {
                    attrs.push(("network.protocol.version", s(v.as_str())));
                }
                if self.kind == SpanKind::Client
                    && let Some(host) = &h.host
                {
                    attrs.push((
                        "url.full",
                        s(&format!(
                            "http://{host}{}",
                            redact_query(&h.target, show_query)
                        )),
                    ));
                }
            }
            Payload::Grpc(g) => {
                attrs.push(("rpc.system", s("grpc")));
                attrs.push(("rpc.service", s(&g.service)));
                attrs.push(("rpc.method", s(&g.method)));
                if let Some(code) = g.status {
                    attrs.push(("rpc.grpc.status_code", Value::Int(i64::from(code))));
                }
                attrs.push(("network.protocol.name", s("http")));
                attrs.push(("network.protocol.version", s("2")));
            }
            Payload::Connect => {}
        }
        if let Some(error) = self.error_type() {
            attrs.push(("error.type", Value::Str(error)));
        }
        attrs.push(("server.address", s(&server.ip().to_string())));
        attrs.push(("server.port", Value::Int(i64::from(server.port()))));
        if self.kind == SpanKind::Server {
            attrs.push(("client.address", s(&client.ip().to_string())));
            attrs.push(("client.port", Value::Int(i64::from(client.port()))));
        }
        attrs.push(("network.peer.address", s(&self.remote.ip().to_string())));
        attrs.push((
            "network.peer.port",
            Value::Int(i64::from(self.remote.port())),
        ));
        attrs.push(("network.local.address", s(&self.local.ip().to_string())));
        attrs.push((
            "network.local.port",
            Value::Int(i64::from(self.local.port())),
        ));
        attrs.push(("network.transport", s("tcp")));
        attrs
    }
}

fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

fn redact_query(target: &str, show_query: bool) -> String {
    match target.split_once('?') {
        Some((path, _)) if !show_query => format!("{path}?REDACTED"),
        _ => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: SpanKind, payload: Payload) -> Span {
        Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            parent_span_id: None,
            link: ParentLink::Root,
            kind,
            start_ns: 0,
            end_ns: 1,
            pid: 1,
            comm: "svc".into(),
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            payload,
            incomplete: false,
            error: None,
        }
    }

    fn http(status: u16) -> Payload {
        Payload::Http(HttpSpan {
            method: "GET".into(),
            target: "/users/7?token=secret".into(),
            host: Some("svc:8080".into()),
            status: Some(status),
            version: Some(HttpVersion::Http11),
            user_agent: Some("curl/8".into()),
        })
    }

    #[test]
    fn names_status_and_redacted_query_follow_the_conventions() {
        let server = span(SpanKind::Server, http(404));
        assert_eq!(server.name(), "GET /users/7");
        assert!(!server.is_error(), "4xx is not a server error");
        assert!(span(SpanKind::Client, http(404)).is_error());
        assert!(span(SpanKind::Server, http(503)).is_error());
        let attrs = server.attributes(false);
        assert!(attrs.contains(&("url.query", Value::Str("REDACTED".into()))));
        assert!(attrs.contains(&("client.port", Value::Int(40000))));
        assert!(attrs.contains(&("server.port", Value::Int(8080))));
        let grpc = span(
            SpanKind::Client,
            Payload::Grpc(GrpcSpan {
                service: "wirespan.echo.Echo".into(),
                method: "Say".into(),
                status: Some(5),
                message: Some("asked to fail".into()),
                authority: None,
            }),
        );
        assert_eq!(grpc.name(), "wirespan.echo.Echo/Say");
        assert_eq!(grpc.status_message(), "NOT_FOUND: asked to fail");
        assert!(
            grpc.attributes(false)
                .contains(&("rpc.grpc.status_code", Value::Int(5)))
        );
    }
}
