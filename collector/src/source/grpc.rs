//! Decoding of the Go events that name connections: grpc-go header blocks ([`GoHeaders`]),
//! unary gRPC client calls ([`GoGrpcCall`]) and the connection a net/http request uses
//! ([`GoConnUse`]). Check-then-parse like the rest of `decode`.

use std::net::SocketAddr;

use wirespan_shared::{
    EVENT_GO_GRPC_CLIENT_START, EVENT_GO_GRPC_STREAM_OPENED, GO_CONN_CLIENT, GO_CONN_SERVER,
    GO_GRPC_STATUS_UNKNOWN, GO_HEADER_FIELDS, GO_HEADER_NAME_LEN, GO_HEADER_UNREADABLE,
    GO_HEADER_VALUE_LEN, GO_HEADERS_CLIENT_RECEIVED, GO_HEADERS_SENT, GO_HEADERS_SERVER_RECEIVED,
    GoConn, GoConnEvent, GoGrpcCallEvent, GoHeadersEvent,
};

use super::decode::{DecodeError, endpoints, go_text};

/// Where a header block was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersSource {
    /// A request's headers, as a gRPC server decoded them.
    ServerReceived,
    /// Response headers or trailers, as a gRPC client decoded them.
    ClientReceived,
    /// Headers being sent: a client's request, or a server's response headers or trailers.
    Sent,
}

impl HeadersSource {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerReceived => "server_received",
            Self::ClientReceived => "client_received",
            Self::Sent => "sent",
        }
    }
}

/// A connection a Go event names: its fd and, when readable, its endpoints (local first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoConnection {
    pub fd: i32,
    pub endpoints: Option<(SocketAddr, SocketAddr)>,
}

/// One HTTP/2 header field; `cut` when the value (or name) was longer than its slot;
/// `unreadable` when the probe could not read its bytes (then name or value is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: String,
    pub value: String,
    pub cut: bool,
    pub unreadable: bool,
}

/// A header block grpc-go handled on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoHeaders {
    pub source: HeadersSource,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub stream_id: u32,
    pub end_stream: bool,
    pub conn: GoConnection,
    pub fields: Vec<HeaderField>,
    /// Fields in the block beyond those carried.
    pub fields_left_out: u32,
    pub ts_ns: u64,
}

impl GoHeaders {
    /// The value of the first field called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.as_str())
    }
}

/// Where a Go client's gRPC call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    /// A unary call starts (method).
    Start,
    /// The transport opened the call's stream (unary or streaming): stream and connection.
    StreamOpened,
    /// A unary call returns (status, stream, connection).
    End,
}

/// A gRPC call by a Go client: a unary call starting or returning, or any call's stream opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoGrpcCall {
    pub phase: CallPhase,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub method: String,
    /// At the return: the gRPC status code (None at the start, and for a failed call of a
    /// stripped binary, whose code is in the trailers the client received on `stream_id`).
    pub status: Option<u32>,
    pub stream_id: u32,
    pub conn: GoConnection,
    pub ts_ns: u64,
}

/// Which side of a net/http request a [`GoConnUse`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRole {
    /// The connection a handler serves.
    Server,
    /// The connection a client request goes out on.
    Client,
}

/// A net/http request on goroutine `goid` uses connection `conn`: the join from the Go
/// request to the bytes (and so the headers) on that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoConnUse {
    pub role: ConnRole,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub conn: GoConnection,
    pub ts_ns: u64,
}

pub(super) fn decode_conn_use(raw: &GoConnEvent) -> Result<GoConnUse, DecodeError> {
    let role = match raw.role {
        GO_CONN_SERVER => ConnRole::Server,
        GO_CONN_CLIENT => ConnRole::Client,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(GoConnUse {
        role,
        pid: raw.pid,
        tid: raw.tid,
        goid: raw.goid,
        conn: connection(&raw.conn),
        ts_ns: raw.ts_ns,
    })
}

fn connection(raw: &GoConn) -> GoConnection {
    GoConnection {
        fd: raw.fd,
        endpoints: endpoints(raw.family, &raw.saddr, raw.sport, &raw.daddr, raw.dport).ok(),
    }
}

pub(super) fn decode_headers(raw: &GoHeadersEvent) -> Result<GoHeaders, DecodeError> {
    let source = match raw.source {
        GO_HEADERS_SERVER_RECEIVED => HeadersSource::ServerReceived,
        GO_HEADERS_CLIENT_RECEIVED => HeadersSource::ClientReceived,
        GO_HEADERS_SENT => HeadersSource::Sent,
        other => return Err(DecodeError::Direction(other)),
    };
    let carried = (raw.field_count as usize).min(GO_HEADER_FIELDS);
    let fields = (0..carried)
        .map(|i| {
            let (name_len, value_len) = (raw.name_len[i], raw.value_len[i]);
            let readable = |len: u16| len != GO_HEADER_UNREADABLE;
            HeaderField {
                name: if readable(name_len) {
                    go_text(&raw.names[i], name_len)
                } else {
                    String::new()
                },
                value: if readable(value_len) {
                    go_text(&raw.values[i], value_len)
                } else {
                    String::new()
                },
                cut: (readable(name_len) && usize::from(name_len) > GO_HEADER_NAME_LEN)
                    || (readable(value_len) && usize::from(value_len) > GO_HEADER_VALUE_LEN),
                unreadable: !readable(name_len) || !readable(value_len),
            }
        })
        .collect();
    Ok(GoHeaders {
        source,
        pid: raw.pid,
        tid: raw.tid,
        goid: raw.goid,
        stream_id: raw.stream_id,
        end_stream: raw.end_stream != 0,
        conn: connection(&raw.conn),
        fields,
        fields_left_out: raw.field_count.saturating_sub(carried as u32),
        ts_ns: raw.ts_ns,
    })
}

pub(super) fn decode_call(raw: &GoGrpcCallEvent) -> GoGrpcCall {
    let phase = match raw.kind {
        EVENT_GO_GRPC_CLIENT_START => CallPhase::Start,
        EVENT_GO_GRPC_STREAM_OPENED => CallPhase::StreamOpened,
        _ => CallPhase::End,
    };
    GoGrpcCall {
        phase,
        pid: raw.pid,
        tid: raw.tid,
        goid: raw.goid,
        method: go_text(&raw.method, raw.method_len),
        status: (phase == CallPhase::End && raw.status != GO_GRPC_STATUS_UNKNOWN)
            .then_some(raw.status),
        stream_id: raw.stream_id,
        conn: connection(&raw.conn),
        ts_ns: raw.ts_ns,
    }
}
