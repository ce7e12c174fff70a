//! `span`: the spans the correlator makes of exchanges, modelled as common fields plus an enum of
//! per-protocol payloads (not one flat struct every protocol reuses), and their OpenTelemetry
//! semantic conventions: names, kinds, status and attributes. Exporters turn these into OTLP.

pub mod db;
pub mod error;
pub mod ids;
pub mod processes;
pub mod resource;
pub mod route;
pub mod route_book;

use std::net::SocketAddr;

pub use self::{
    error::ErrorType,
    ids::{IdGenerator, SpanId, TraceId, TraceParent},
    route::{Route, RouteSource},
};
use crate::protocol::{Detail, Exchange, Grpc, Http, HttpVersion, db::Db};

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
    /// A server span whose client is on another host: that host's agent published the client
    /// span under the exchange's sequence numbers (see `join`).
    RemotePeer,
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
    /// A database or cache command (see `db`).
    Db(Db),
    /// A request/response turn of a protocol no decoder knows (see `protocol::turns`).
    Tcp,
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
    /// The template that served the request (server spans: the program's own pattern, a
    /// configured template or the heuristic), or the callee's registered pattern when the
    /// callee runs on this host (client spans). None: no route is known.
    pub route: Option<Route>,
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
            Detail::Db(db) => Self::Db(db.clone()),
            Detail::Tcp => Self::Tcp,
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
        route: None,
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

/// The gRPC codes the conventions count as a server's own error: UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. Others (NOT_FOUND, INVALID_ARGUMENT...) are
/// the caller's problem and leave a server span unset.
const GRPC_SERVER_ERRORS: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// The methods the HTTP conventions know; any other is exported as `_OTHER`, with the original
/// in `http.request.method_original`, and names its span `HTTP`.
const KNOWN_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY",
];

/// Which generation of the RPC conventions to write, from `OTEL_SEMCONV_STABILITY_OPT_IN`
/// (a comma-separated list; `rpc/dup` writes the deprecated attributes beside the current
/// ones, so dashboards built on them keep working during the move).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RpcConventions {
    /// `rpc.system.name`, fully-qualified `rpc.method`, `rpc.response.status_code`.
    #[default]
    Current,
    /// The current ones plus `rpc.system`, `rpc.service` and `rpc.grpc.status_code`.
    /// `rpc.method` keeps its current, fully-qualified value (one key, one value).
    Duplicate,
}

impl RpcConventions {
    /// From the value of `OTEL_SEMCONV_STABILITY_OPT_IN` (unset: current).
    #[must_use]
    pub fn from_opt_in(value: Option<&str>) -> Self {
        let dup = value.is_some_and(|v| v.split(',').any(|item| item.trim() == "rpc/dup"));
        if dup { Self::Duplicate } else { Self::Current }
    }
}

/// How attributes are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttributeOptions {
    /// Export query strings as they were sent (they may carry secrets): off by default.
    pub show_query: bool,
    pub rpc: RpcConventions,
}

impl Span {
    /// By the conventions: `{method} {route}` (server), `{method}` or `{method} {url.template}`
    /// (client), `{method}` when no route is known, `HTTP` for a method they do not know;
    /// `package.Service/Method` for gRPC. Never the raw path: it carries ids.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.payload {
            Payload::Http(h) if !KNOWN_METHODS.contains(&h.method.as_str()) => "HTTP".to_owned(),
            Payload::Http(h) => match &h.route {
                // An empty template (a path the bytes never gave) names nothing: `GET`, not `GET `.
                Some(route) if !route.template.is_empty() => {
                    format!("{} {}", h.method, route.template)
                }
                _ => h.method.clone(),
            },
            Payload::Grpc(g) if g.service.is_empty() => "gRPC".to_owned(),
            Payload::Grpc(g) => g.full_method(),
            Payload::Db(d) => db::name(d),
            // The server's end names it: the client's port says nothing.
            Payload::Tcp => match self.kind {
                SpanKind::Client => format!("tcp {}", self.remote),
                SpanKind::Server => format!("tcp {}", self.local),
            },
            Payload::Connect => "connect".to_owned(),
        }
    }

    /// Whether the span is an error by the semantic conventions: HTTP 5xx for servers, 4xx and
    /// 5xx for clients; any gRPC status but OK for clients, the server-side codes
    /// ([`GRPC_SERVER_ERRORS`]) for servers; and a request that got no response.
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
            Payload::Grpc(g) => match (g.status, self.kind) {
                (None | Some(0), _) => false,
                (Some(code), SpanKind::Server) => GRPC_SERVER_ERRORS.contains(&code),
                (Some(_), SpanKind::Client) => true,
            },
            // A database error is the caller's and the server's alike.
            Payload::Db(d) => d.status_code.is_some() || self.incomplete,
            // Bytes alone say nothing of success (a request may get no answer by design).
            Payload::Tcp | Payload::Connect => false,
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
                .and_then(grpc_code_name)
                .unwrap_or("_OTHER")
                .to_owned(),
            Payload::Db(d) => d
                .status_code
                .clone()
                .unwrap_or_else(|| ErrorType::NoResponse.as_str().to_owned()),
            Payload::Tcp | Payload::Connect => ErrorType::Other.as_str().to_owned(),
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
            Payload::Tcp => self.error.unwrap_or(ErrorType::Other).describe().to_owned(),
            Payload::Connect => format!(
                "connect to {}: {}",
                self.remote,
                self.error.unwrap_or(ErrorType::Other).describe()
            ),
            Payload::Db(d) => match &d.status_code {
                Some(code) => format!("{} error {code}", d.system.as_str()),
                None => self
                    .error
                    .unwrap_or(ErrorType::NoResponse)
                    .describe()
                    .to_owned(),
            },
            Payload::Grpc(g) => {
                let name = g.status.and_then(grpc_code_name).unwrap_or("UNKNOWN");
                match &g.message {
                    Some(m) if !m.is_empty() => format!("{name}: {m}"),
                    _ => name.to_owned(),
                }
            }
        }
    }

    /// The span's attributes, by the OpenTelemetry semantic conventions. The query string is
    /// redacted unless `options.show_query`; credential headers are never among them.
    #[must_use]
    pub fn attributes(&self, options: AttributeOptions) -> Vec<(&'static str, Value)> {
        let mut attrs = Vec::new();
        let s = |v: &str| Value::Str(v.to_owned());
        let (server, client) = match self.kind {
            SpanKind::Server => (self.local, self.remote),
            SpanKind::Client => (self.remote, self.local),
        };
        // The name the client used for the server (`Host`, `:authority`), else its address.
        let mut server_name = None;
        match &self.payload {
            Payload::Http(h) => {
                self.http_attributes(h, options.show_query, &mut attrs);
                server_name = h.host.as_deref();
            }
            Payload::Grpc(g) => {
                grpc_attributes(g, options.rpc, &mut attrs);
                server_name = g.authority.as_deref();
            }
            Payload::Db(d) => db::attributes(d, &mut attrs),
            Payload::Tcp | Payload::Connect => {}
        }
        if let Some(error) = self.error_type() {
            attrs.push(("error.type", Value::Str(error)));
        }
        let (address, port) = server_name
            .and_then(split_host)
            .map_or((server.ip().to_string(), None), |(host, port)| {
                (host.to_owned(), port)
            });
        attrs.push(("server.address", Value::Str(address)));
        let port = port.unwrap_or(server.port());
        attrs.push(("server.port", Value::Int(i64::from(port))));
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

    fn http_attributes(
        &self,
        h: &HttpSpan,
        show_query: bool,
        attrs: &mut Vec<(&'static str, Value)>,
    ) {
        let s = |v: &str| Value::Str(v.to_owned());
        if KNOWN_METHODS.contains(&h.method.as_str()) {
            attrs.push(("http.request.method", s(&h.method)));
        } else {
            attrs.push(("http.request.method", s("_OTHER")));
            if !h.method.is_empty() {
                attrs.push(("http.request.method_original", s(&h.method)));
            }
        }
        attrs.push(("url.path", s(path_of(&h.target))));
        if let Some((_, query)) = h.target.split_once('?') {
            let query = if show_query { query } else { "REDACTED" };
            attrs.push(("url.query", s(query)));
        }
        if let Some(route) = &h.route {
            let key = match self.kind {
                SpanKind::Server => "http.route",
                SpanKind::Client => "url.template",
            };
            attrs.push((key, s(&route.template)));
            attrs.push((route::SOURCE_ATTRIBUTE, s(route.source.as_str())));
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
}

impl GrpcSpan {
    /// `package.Service/Method`: the conventions' fully-qualified `rpc.method`.
    #[must_use]
    pub fn full_method(&self) -> String {
        format!("{}/{}", self.service, self.method)
    }
}

fn grpc_attributes(g: &GrpcSpan, rpc: RpcConventions, attrs: &mut Vec<(&'static str, Value)>) {
    let s = |v: &str| Value::Str(v.to_owned());
    attrs.push(("rpc.system.name", s("grpc")));
    attrs.push(("rpc.method", s(&g.full_method())));
    if let Some(code) = g.status {
        let name = grpc_code_name(code).unwrap_or("_OTHER");
        attrs.push(("rpc.response.status_code", s(name)));
    }
    if rpc == RpcConventions::Duplicate {
        attrs.push(("rpc.system", s("grpc")));
        attrs.push(("rpc.service", s(&g.service)));
        if let Some(code) = g.status {
            attrs.push(("rpc.grpc.status_code", Value::Int(i64::from(code))));
        }
    }
    attrs.push(("network.protocol.name", s("http")));
    attrs.push(("network.protocol.version", s("2")));
}

fn grpc_code_name(code: u32) -> Option<&'static str> {
    GRPC_CODES.get(code as usize).copied()
}

/// `host[:port]` or `[v6]:port` → (host, port). None for an empty or unparsable value.
fn split_host(value: &str) -> Option<(&str, Option<u16>)> {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (!host.is_empty()).then_some((host, port));
    }
    match value.rsplit_once(':') {
        // A second colon: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => Some((value, None)),
        Some((host, port)) => (!host.is_empty()).then(|| (host, port.parse().ok())),
        None => (!value.is_empty()).then_some((value, None)),
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
mod tests;
