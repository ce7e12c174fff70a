//! grpc-go: which functions the gRPC probes go on, and the layout they read (`GrpcOffsets`),
//! from the binary's DWARF or, for stripped binaries, from the offsets table by grpc-go version.
//! The layout changed across grpc-go releases (the server's `operateHeaders` gained a `ctx`
//! parameter in 1.57; `NewStream` returns `*Stream`, then `*ClientStream{*Stream}`, then
//! `*ClientStream{Stream}`), so everything version-dependent is looked up, never assumed.

use wirespan_shared::GrpcOffsets;
use wirespan_shared::names::{
    PROGRAM_GO_GRPC_CLIENT_HEADERS, PROGRAM_GO_GRPC_INVOKE, PROGRAM_GO_GRPC_INVOKE_RETURN,
    PROGRAM_GO_GRPC_NEW_STREAM, PROGRAM_GO_GRPC_NEW_STREAM_RETURN, PROGRAM_GO_GRPC_SERVER_HEADERS,
    PROGRAM_GO_GRPC_WRITE_HEADER,
};

use super::{GoBinary, dwarf::Facts, layout::LayoutError};

pub const GRPC_MODULE: &str = "google.golang.org/grpc";

const TRANSPORT: &str = "google.golang.org/grpc/internal/transport";
pub const SERVER_OPERATE_HEADERS: &str =
    "google.golang.org/grpc/internal/transport.(*http2Server).operateHeaders";
pub const CLIENT_OPERATE_HEADERS: &str =
    "google.golang.org/grpc/internal/transport.(*http2Client).operateHeaders";
pub const WRITE_HEADER: &str =
    "google.golang.org/grpc/internal/transport.(*loopyWriter).writeHeader";
pub const NEW_STREAM: &str = "google.golang.org/grpc/internal/transport.(*http2Client).NewStream";
pub const INVOKE: &str = "google.golang.org/grpc.(*ClientConn).Invoke";

/// Each gRPC function with its entry and return programs.
pub const PROBES: [(&str, &str, &str); 5] = [
    (SERVER_OPERATE_HEADERS, PROGRAM_GO_GRPC_SERVER_HEADERS, ""),
    (CLIENT_OPERATE_HEADERS, PROGRAM_GO_GRPC_CLIENT_HEADERS, ""),
    (WRITE_HEADER, PROGRAM_GO_GRPC_WRITE_HEADER, ""),
    (
        NEW_STREAM,
        PROGRAM_GO_GRPC_NEW_STREAM,
        PROGRAM_GO_GRPC_NEW_STREAM_RETURN,
    ),
    (
        INVOKE,
        PROGRAM_GO_GRPC_INVOKE,
        PROGRAM_GO_GRPC_INVOKE_RETURN,
    ),
];

/// The grpc-go server's per-stream spawn site: `serveStreams` and the closures that start each
/// stream's handler goroutine (`func1` or `func2`, by version).
pub const SPAWN_SITES: [&str; 3] = [
    "google.golang.org/grpc.(*Server).serveStreams",
    "google.golang.org/grpc.(*Server).serveStreams.func1",
    "google.golang.org/grpc.(*Server).serveStreams.func2",
];

/// The address range spanning the spawn sites the binary has, leaving out any that lie over
/// 1 MiB from `serveStreams` itself (a closure numbered alike elsewhere); (0, 0) when none.
#[must_use]
pub fn spawn_site_range(binary: &GoBinary) -> (u64, u64) {
    let Some(base) = binary.function(SPAWN_SITES[0]) else {
        return (0, 0);
    };
    SPAWN_SITES
        .iter()
        .filter_map(|name| binary.function(name))
        .filter(|r| r.address.abs_diff(base.address) < 1 << 20)
        .fold((u64::MAX, 0), |(lo, hi), r| {
            (lo.min(r.address), hi.max(r.address + r.size))
        })
}

/// The method that tells a `*status.Error` inside an `error` (see `ITAB_FIRST_METHOD`).
pub const STATUS_ERROR_METHOD: &str = "google.golang.org/grpc/internal/status.(*Error).Error";

/// The struct members the layout needs (`ClientStream.Stream` is absent before grpc-go 1.66).
pub const MEMBERS: [(&str, &str); 12] = [
    (
        "google.golang.org/grpc/internal/transport.http2Server",
        "conn",
    ),
    (
        "google.golang.org/grpc/internal/transport.http2Client",
        "conn",
    ),
    (
        "google.golang.org/grpc/internal/transport.loopyWriter",
        "conn",
    ),
    ("golang.org/x/net/http2.MetaHeadersFrame", "Fields"),
    ("golang.org/x/net/http2.FrameHeader", "StreamID"),
    ("golang.org/x/net/http2.HeadersFrame", "FrameHeader"),
    ("golang.org/x/net/http2/hpack.HeaderField", "Value"),
    ("golang.org/x/net/http2/hpack.HeaderField", "Sensitive"),
    ("google.golang.org/grpc/internal/transport.Stream", "id"),
    (
        "google.golang.org/grpc/internal/transport.ClientStream",
        "Stream",
    ),
    ("google.golang.org/grpc/internal/status.Error", "s"),
    (
        "google.golang.org/genproto/googleapis/rpc/status.Status",
        "Code",
    ),
];

/// Functions whose parameters decide register slots.
pub const FUNCTIONS: [&str; 1] = [SERVER_OPERATE_HEADERS];

/// The gRPC layout from DWARF facts, or why it cannot be had.
pub fn layout_from_dwarf(facts: &Facts, binary: &GoBinary) -> Result<GrpcOffsets, LayoutError> {
    let member = |s: &str, m: &str| {
        facts
            .members
            .get(&(s.to_owned(), m.to_owned()))
            .copied()
            .ok_or_else(|| LayoutError::no_member(s, m))
    };
    let at = |s: &str, m: &str| member(s, m).map(|m| m.offset as u32);
    let stream_id = at(&format!("{TRANSPORT}.Stream"), "id")?;
    let (stream_via, stream_id) = match member(&format!("{TRANSPORT}.ClientStream"), "Stream") {
        Err(_) => (u32::MAX, stream_id),
        Ok(embedded) if embedded.pointer => (embedded.offset as u32, stream_id),
        Ok(embedded) => (u32::MAX, embedded.offset as u32 + stream_id),
    };
    let params = facts
        .params
        .get(SERVER_OPERATE_HEADERS)
        .ok_or(LayoutError::NoParameters(SERVER_OPERATE_HEADERS))?;
    Ok(GrpcOffsets {
        server_conn: at(&format!("{TRANSPORT}.http2Server"), "conn")?,
        client_conn: at(&format!("{TRANSPORT}.http2Client"), "conn")?,
        loopy_conn: at(&format!("{TRANSPORT}.loopyWriter"), "conn")?,
        server_frame_arg: frame_slot(params)?,
        meta_fields: at("golang.org/x/net/http2.MetaHeadersFrame", "Fields")?,
        frame_stream_id: at("golang.org/x/net/http2.HeadersFrame", "FrameHeader")?
            + at("golang.org/x/net/http2.FrameHeader", "StreamID")?,
        field_value: at("golang.org/x/net/http2/hpack.HeaderField", "Value")?,
        // Name, Value, Sensitive bool: the struct is padded to a word after Sensitive.
        field_size: (at("golang.org/x/net/http2/hpack.HeaderField", "Sensitive")? + 8) & !7,
        stream_via,
        stream_id,
        error_status: at("google.golang.org/grpc/internal/status.Error", "s")?,
        // status.Status holds only `s *spb.Status`.
        status_proto: 0,
        proto_code: at(
            "google.golang.org/genproto/googleapis/rpc/status.Status",
            "Code",
        )?,
        pad0: 0,
        status_error_fn: binary
            .function(STATUS_ERROR_METHOD)
            .map_or(0, |f| f.address),
        handler_spawn_lo: spawn_site_range(binary).0,
        handler_spawn_hi: spawn_site_range(binary).1,
    })
}

/// The register slot of `frame` in `(*http2Server).operateHeaders`, from its parameter names:
/// the receiver takes one word and a `ctx context.Context` two. Any other parameter before
/// `frame` is a signature this code does not know: refused rather than guessed.
fn frame_slot(params: &[String]) -> Result<u32, LayoutError> {
    let mut slot = 0;
    for param in params {
        match param.as_str() {
            "frame" => return Ok(slot),
            "t" => slot += 1,
            "ctx" => slot += 2,
            other => {
                return Err(LayoutError::UnknownParameter {
                    function: SERVER_OPERATE_HEADERS,
                    parameter: other.to_owned(),
                });
            }
        }
    }
    Err(LayoutError::NoFrameParameter(SERVER_OPERATE_HEADERS))
}

/// (major, minor, patch) of a module version (`v1.56.3`, `v1.70.0-pre`).
#[must_use]
pub fn module_semver(version: &str) -> Option<(u32, u32, u32)> {
    let v = version.strip_prefix('v')?;
    let v = v
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = v.split('.').map(|p| p.parse().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_slot_follows_the_parameters() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(frame_slot(&names(&["t", "frame", "handle"])), Ok(1));
        assert_eq!(frame_slot(&names(&["t", "ctx", "frame", "handle"])), Ok(3));
        assert!(frame_slot(&names(&["t", "weird", "frame"])).is_err());
        assert!(frame_slot(&names(&["t", "ctx"])).is_err());
    }

    #[test]
    fn module_versions_parse() {
        assert_eq!(module_semver("v1.56.3"), Some((1, 56, 3)));
        assert_eq!(module_semver("v1.70.0-pre"), Some((1, 70, 0)));
        assert_eq!(module_semver("(devel)"), None);
    }
}
