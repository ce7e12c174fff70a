//! The struct layout the Go probes need (field offsets and a few function addresses), from the
//! binary's own DWARF, else from the committed offsets table by Go and grpc-go version. Pure:
//! reads the binary, touches nothing in the kernel.

use wirespan_shared::{GoOffsets, GrpcOffsets};

use super::{GoBinary, grpc};

/// The first methods of the itabs the probes recognise (see `ITAB_FIRST_METHOD`): found by
/// name in the symbol table or, when stripped, in `.gopclntab`.
pub const TCP_CONN_METHOD: &str = "net.(*TCPConn).Close";
pub const RESPONSE_METHOD: &str = "net/http.(*response).Header";
/// First methods of the itabs that tell an HTTP/2 handler's writer and a TLS connection.
pub const H2_WRITER_METHOD: &str = "net/http.(*http2responseWriter).Header";
pub const TLS_CONN_METHOD: &str = "crypto/tls.(*Conn).Close";

const MEMBERS: [(&str, &str); 20] = [
    ("net/http.response", "conn"),
    ("net/http.conn", "rwc"),
    ("net/http.persistConn", "conn"),
    ("net.conn", "fd"),
    ("internal/poll.FD", "Sysfd"),
    ("net/url.URL", "Host"),
    ("net/http.Response", "StatusCode"),
    ("runtime.g", "goid"),
    ("runtime.g", "parentGoid"),
    ("runtime.g", "gopc"),
    ("net/http.Request", "Method"),
    ("net/http.Request", "URL"),
    ("net/http.Request", "Host"),
    ("net/url.URL", "Path"),
    ("net/http.response", "status"),
    ("crypto/tls.Conn", "rawInput"),
    ("net/http.http2responseWriterState", "stream"),
    ("net/http.http2stream", "id"),
    ("net/http.http2stream", "sc"),
    ("net/http.http2serverConn", "conn"),
];

/// Why a layout cannot be had; the text ends up in the start-up report's `skipped:` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// DWARF could not be read (stripped, `-w`, corrupt).
    #[error("{0} (struct layouts unknown)")]
    NoDwarf(String),
    #[error("no {strukt}.{member} in DWARF")]
    NoMember { strukt: String, member: String },
    #[error("no parameters of {0} in DWARF")]
    NoParameters(&'static str),
    #[error("{function} has an unknown parameter {parameter} before frame")]
    UnknownParameter {
        function: &'static str,
        parameter: String,
    },
    #[error("{0} has no frame parameter")]
    NoFrameParameter(&'static str),
    #[error("{dwarf}, and no offsets table entry near {version}")]
    NoTableEntry {
        dwarf: Box<LayoutError>,
        version: String,
    },
    #[error("no offsets table entry near grpc-go {0}")]
    NoGrpcTableEntry(String),
}

impl LayoutError {
    pub(super) fn no_member(strukt: &str, member: &str) -> Self {
        Self::NoMember {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        }
    }
}

impl From<super::dwarf::DwarfError> for LayoutError {
    fn from(e: super::dwarf::DwarfError) -> Self {
        Self::NoDwarf(e.to_string())
    }
}

/// The layout the probes need: from DWARF, else from the committed table by Go version and
/// grpc-go version, with notes on where it came from and on what was left out; or why it cannot
/// be had at all.
pub fn layout_of(binary: &GoBinary) -> Result<(GoOffsets, Vec<String>), LayoutError> {
    let mut notes = Vec::new();
    let grpc_version = binary.build_info.module_version(grpc::GRPC_MODULE);
    let (mut offsets, grpc_layout) = match dwarf_layout(binary) {
        Ok(found) => found,
        Err(dwarf_error) => {
            let version = &binary.build_info.go_version;
            let table = super::offsets_table::committed();
            let (entry, known) =
                super::offsets_table::lookup(&table.go, version).ok_or_else(|| {
                    LayoutError::NoTableEntry {
                        dwarf: Box::new(dwarf_error),
                        version: version.clone(),
                    }
                })?;
            notes.push(if known == version {
                format!("layout from the offsets table ({known})")
            } else {
                format!("layout from the offsets table of the nearest known version, {known}")
            });
            let grpc_layout = grpc_version.map(|v| {
                super::offsets_table::lookup_grpc(&table.grpc, v)
                    .map(|(layout, known)| {
                        if known != v {
                            notes.push(format!(
                                "grpc-go layout of the nearest known version, {known}"
                            ));
                        }
                        let mut layout = *layout;
                        layout.status_error_fn = address_of(binary, grpc::STATUS_ERROR_METHOD);
                        (layout.handler_spawn_lo, layout.handler_spawn_hi) =
                            grpc::spawn_site_range(binary);
                        layout
                    })
                    .ok_or_else(|| LayoutError::NoGrpcTableEntry(v.to_owned()))
            });
            let mut offsets = entry.to_offsets();
            offsets.tcp_conn_close_fn = address_of(binary, TCP_CONN_METHOD);
            offsets.response_header_fn = address_of(binary, RESPONSE_METHOD);
            offsets.h2_writer_header_fn = address_of(binary, H2_WRITER_METHOD);
            offsets.tls_conn_close_fn = address_of(binary, TLS_CONN_METHOD);
            (offsets, grpc_layout)
        }
    };
    match grpc_layout {
        Some(Ok(layout)) => offsets.grpc = layout,
        Some(Err(why)) => notes.push(format!("gRPC not traced: {why}")),
        None => {}
    }
    // Every binary states where its goroutine slot is; only a surprise is worth a note.
    match &binary.g_tls {
        Ok(-8) => offsets.g_tls = -8,
        Ok(offset) => {
            offsets.g_tls = *offset;
            notes.push(format!("goroutine TLS slot at {offset} (host-linked)"));
        }
        Err(why) => notes.push(format!("syscalls without goroutine ids: {why}")),
    }
    Ok((offsets, notes))
}

/// The layout from the binary's DWARF: net/http and runtime (or why it cannot be had), and the
/// grpc-go part when the program uses grpc-go (or why that part cannot be had).
pub fn dwarf_layout(
    binary: &GoBinary,
) -> Result<(GoOffsets, Option<Result<GrpcOffsets, LayoutError>>), LayoutError> {
    let uses_grpc = binary
        .build_info
        .module_version(grpc::GRPC_MODULE)
        .is_some();
    let mut members = MEMBERS.to_vec();
    let mut functions = Vec::new();
    if uses_grpc {
        members.extend(grpc::MEMBERS);
        functions.extend(grpc::FUNCTIONS);
    }
    let facts = binary.inspect(&members, &functions)?;
    let at = |s: &str, m: &str| {
        facts
            .members
            .get(&(s.to_owned(), m.to_owned()))
            .map(|m| m.offset as u32)
            .ok_or_else(|| LayoutError::no_member(s, m))
    };
    let offsets = GoOffsets {
        g_goid: at("runtime.g", "goid")?,
        request_method: at("net/http.Request", "Method")?,
        request_url: at("net/http.Request", "URL")?,
        request_host: at("net/http.Request", "Host")?,
        url_path: at("net/url.URL", "Path")?,
        // Without these the start is still traced; only the status stays unknown.
        response_status: at("net/http.response", "status").unwrap_or(0),
        response_header_fn: address_of(binary, RESPONSE_METHOD),
        url_host: at("net/url.URL", "Host")?,
        client_status_code: at("net/http.Response", "StatusCode").unwrap_or(0),
        // Absent (u32::MAX) when the program has no net/http server or client.
        response_conn: at("net/http.response", "conn").unwrap_or(u32::MAX),
        conn_rwc: at("net/http.conn", "rwc").unwrap_or(u32::MAX),
        persist_conn: at("net/http.persistConn", "conn").unwrap_or(u32::MAX),
        conn_fd: at("net.conn", "fd")?,
        // netFD embeds poll.FD first (`pfd`).
        netfd_sysfd: at("internal/poll.FD", "Sysfd")?,
        g_tls: 0,
        tcp_conn_close_fn: address_of(binary, TCP_CONN_METHOD),
        // Go 1.21+; older programs get no observed ancestry (their spawn probe stays attached).
        g_parent_goid: at("runtime.g", "parentGoid").unwrap_or(0),
        g_gopc: at("runtime.g", "gopc").unwrap_or(0),
        // Absent (0) when the program has no crypto/tls.
        tls_raw_input: at("crypto/tls.Conn", "rawInput").unwrap_or(0),
        h2_rws_stream: at("net/http.http2responseWriterState", "stream").unwrap_or(u32::MAX),
        h2_stream_id: at("net/http.http2stream", "id").unwrap_or(u32::MAX),
        h2_stream_sc: at("net/http.http2stream", "sc").unwrap_or(u32::MAX),
        h2_sc_conn: at("net/http.http2serverConn", "conn").unwrap_or(u32::MAX),
        pad0: 0,
        h2_writer_header_fn: address_of(binary, H2_WRITER_METHOD),
        tls_conn_close_fn: address_of(binary, TLS_CONN_METHOD),
        grpc: GrpcOffsets::default(),
    };
    let grpc_layout = uses_grpc.then(|| grpc::layout_from_dwarf(&facts, binary));
    Ok((offsets, grpc_layout))
}

/// A function's address, 0 when the binary does not have it.
#[must_use]
pub fn address_of(binary: &GoBinary, function: &str) -> u64 {
    binary.function(function).map_or(0, |f| f.address)
}
