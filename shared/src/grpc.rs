//! The grpc-go part of the contract: what the gRPC uprobes send (headers as grpc-go decoded or
//! is about to encode them, and unary client calls) and the layouts they read them with.
//!
//! Headers are read where they are still a contiguous `[]hpack.HeaderField`: at
//! `(*http2Server).operateHeaders` and `(*http2Client).operateHeaders` (decoded inbound frames)
//! and at `(*loopyWriter).writeHeader` (outbound, before HPACK encoding). That way a connection
//! that was warm before the agent started still yields full headers.

/// Tag of [`GoHeadersEvent`].
pub const EVENT_GO_HEADERS: u32 = 11;
/// Tags of [`GoGrpcCallEvent`]: `(*grpc.ClientConn).Invoke` starts (method), and returns (status
/// code, stream id and connection).
pub const EVENT_GO_GRPC_CLIENT_START: u32 = 12;
pub const EVENT_GO_GRPC_CLIENT_END: u32 = 13;
/// Also a [`GoGrpcCallEvent`]: `(*http2Client).NewStream` returned a stream to its caller's
/// goroutine (stream id and connection; no method or status). Streaming calls have no `Invoke`,
/// so this is how their requesting goroutine is known.
pub const EVENT_GO_GRPC_STREAM_OPENED: u32 = 16;

/// [`GoHeadersEvent::source`]: the headers of a request a gRPC server received.
pub const GO_HEADERS_SERVER_RECEIVED: u16 = 1;
/// The response headers or trailers a gRPC client received.
pub const GO_HEADERS_CLIENT_RECEIVED: u16 = 2;
/// Headers being sent: a client's request headers, or a server's response headers or trailers.
pub const GO_HEADERS_SENT: u16 = 3;

/// Header fields a [`GoHeadersEvent`] carries at most, and bytes of each name and value.
pub const GO_HEADER_FIELDS: usize = 16;
pub const GO_HEADER_NAME_LEN: usize = 32;
/// Fits a `traceparent` (55 bytes) and a short `tracestate`; longer values are cut and marked.
pub const GO_HEADER_VALUE_LEN: usize = 96;
/// A `name_len`/`value_len` that says the bytes could not be read (a page the program had not
/// touched yet: probes cannot fault pages in). Real lengths are capped below it.
pub const GO_HEADER_UNREADABLE: u16 = u16::MAX;
/// [`GoGrpcCallEvent::status`] of a failed call whose code could not be read (the binary has no
/// `(*status.Error).Error` to recognise the error type by). The trailers the client received on
/// the same stream still carry it.
pub const GO_GRPC_STATUS_UNKNOWN: u32 = u32::MAX;
/// Bytes of a gRPC method name (`/package.Service/Method`) a [`GoGrpcCallEvent`] carries.
pub const GO_GRPC_METHOD_LEN: usize = 128;

/// A TCP connection as seen from the traced process (local end first); `family` 0 when the
/// connection could not be read (not a `*net.TCPConn`, or the fd was already closed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoConn {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub pad0: u16,
    pub fd: i32,
    /// The HTTP/2 stream a net/http handler serves (`GO_CONN_SERVER_STREAM`), else 0.
    pub stream_id: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// One HTTP/2 header block as grpc-go handled it. `field_count` is how many fields the block
/// had; the first [`GO_HEADER_FIELDS`] are copied, each name and value cut to its slot (a
/// `*_len` larger than the slot means the value was cut).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoHeadersEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub stream_id: u32,
    pub goid: u64,
    pub ts_ns: u64,
    pub source: u16,
    /// 1 when the block ends the stream (trailers, or a request without a body).
    pub end_stream: u16,
    pub field_count: u32,
    pub conn: GoConn,
    pub name_len: [u16; GO_HEADER_FIELDS],
    pub value_len: [u16; GO_HEADER_FIELDS],
    pub names: [[u8; GO_HEADER_NAME_LEN]; GO_HEADER_FIELDS],
    pub values: [[u8; GO_HEADER_VALUE_LEN]; GO_HEADER_FIELDS],
}

/// A unary gRPC call made by a Go client, on the caller's goroutine. At the end, `status` is
/// the gRPC status code (0 OK; 2 Unknown when the error was not a gRPC status), `stream_id` and
/// `conn` say which stream of which connection carried it (0 when unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoGrpcCallEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub status: u32,
    pub goid: u64,
    pub ts_ns: u64,
    pub stream_id: u32,
    pub method_len: u16,
    pub pad0: u16,
    pub conn: GoConn,
    pub method: [u8; GO_GRPC_METHOD_LEN],
}

/// Where the gRPC probes find things, per binary (from DWARF, or the offsets table by grpc-go
/// version). Offsets are bytes into the named struct; `*_arg` are register slots of Go's
/// register ABI (0 RAX, 1 RBX, 2 RCX, 3 RDI, 4 RSI); `u32::MAX` means "not present".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct GrpcOffsets {
    /// `transport.http2Server.conn`, `http2Client.conn`, `loopyWriter.conn` (net.Conn).
    pub server_conn: u32,
    pub client_conn: u32,
    pub loopy_conn: u32,
    /// Register slot of `frame` in `(*http2Server).operateHeaders`: 1 before grpc-go 1.57,
    /// 3 after it gained a `ctx` parameter.
    pub server_frame_arg: u32,
    /// `http2.MetaHeadersFrame.Fields`, and the stream id behind its `*HeadersFrame`.
    pub meta_fields: u32,
    pub frame_stream_id: u32,
    /// `hpack.HeaderField.Value` and the size of a HeaderField.
    pub field_value: u32,
    pub field_size: u32,
    /// What `(*http2Client).NewStream` returns → the stream id: when `stream_via` is not
    /// `u32::MAX`, first follow the pointer at that offset (`ClientStream{*Stream}`).
    pub stream_via: u32,
    pub stream_id: u32,
    /// `status.Error.s` → `status.Status.s` → `spb.Status.Code`.
    pub error_status: u32,
    pub status_proto: u32,
    pub proto_code: u32,
    #[cfg_attr(feature = "user", serde(skip))]
    pub pad0: u32,
    /// Address of `(*status.Error).Error`, the only method of the `*status.Error` → `error`
    /// itab (0 when unknown).
    #[cfg_attr(feature = "user", serde(skip))]
    pub status_error_fn: u64,
    /// Code addresses of the grpc-go server's per-stream spawn site (`(*Server).serveStreams`
    /// and its closures): a goroutine started from there while `operateHeaders` runs is the
    /// stream's handler. Others started meanwhile (the runtime's GC workers, say) are not.
    #[cfg_attr(feature = "user", serde(skip))]
    pub handler_spawn_lo: u64,
    #[cfg_attr(feature = "user", serde(skip))]
    pub handler_spawn_hi: u64,
}

#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] integers; any bit pattern is valid.
unsafe impl aya::Pod for GrpcOffsets {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<GoConn>(), 2 * 4 + 4 * 2 + 16 * 2);
        assert_eq!(
            size_of::<GoHeadersEvent>(),
            4 * 4
                + 8 * 2
                + 2 * 2
                + 4
                + size_of::<GoConn>()
                + 2 * 2 * GO_HEADER_FIELDS
                + (GO_HEADER_NAME_LEN + GO_HEADER_VALUE_LEN) * GO_HEADER_FIELDS
        );
        assert_eq!(
            size_of::<GoGrpcCallEvent>(),
            4 * 4 + 8 * 2 + 4 + 2 * 2 + size_of::<GoConn>() + GO_GRPC_METHOD_LEN
        );
        assert_eq!(size_of::<GrpcOffsets>(), 4 * 14 + 8 * 3);
    }
}
