//! `event`: the user-space event vocabulary, what the kernel (or a recording) said happened,
//! decoded: connections, data, Go requests, goroutines, gRPC headers and calls, program starts.
//! `source` produces these; every later stage (`conn`, `protocol`, `correlate`, `export`, the
//! views) reads them. Types only, no I/O, so no pure stage stands on the loader or the reader.

use std::{fmt, net::SocketAddr};

/// How a hook is attached to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// A kprobe on a kernel function: cheap and exact, but kernels may be built without kprobes.
    Kprobe,
    /// An fentry (BPF trampoline) program: cheapest, needs BTF and may be refused (lockdown).
    Fentry,
    /// A BTF tracepoint (`tp_btf/inet_sock_set_state`): the stable tracepoint with typed
    /// arguments, needs BTF; unlike the classic one it is not skipped while another program
    /// runs on the CPU.
    #[value(name = "tp_btf")]
    TpBtf,
    /// Classic tracepoints only (`sock:inet_sock_set_state`): works wherever BPF does.
    Tracepoint,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kprobe => "kprobe",
            Self::Fentry => "fentry",
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
        })
    }
}

/// Which lifecycle step a [`Conn`] event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// This process connected out (client side).
    Connect,
    /// This process accepted a connection (server side).
    Accept,
    /// The connection ended.
    Close,
}

impl ConnKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::Close => "close",
        }
    }
}

/// A connection's lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    pub kind: ConnKind,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Unique for the connection's whole life (fds and ports are reused, ids are not).
    pub conn_id: u64,
    /// This process's end (for a connect, with the source port the kernel chose).
    pub local: SocketAddr,
    /// The peer.
    pub remote: SocketAddr,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
    /// The attach mode whose probe saw it.
    pub mode: AttachMode,
    /// A close's or failed connect's socket error (a positive errno: ECONNRESET, ECONNREFUSED,
    /// ETIMEDOUT), when the kernel ended it; None for a program's own close.
    pub errno: Option<u32>,
}

/// Which way bytes moved, from the process's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Egress,
    Ingress,
}

impl Direction {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        }
    }
}

/// Bytes a process sent or received on a TCP connection, in one syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub direction: Direction,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub fd: i32,
    pub conn_id: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// What the syscall returned: exact, even when `payload` is cut.
    pub bytes: u64,
    /// TCP sequence number of the first byte (the peer's event of the same bytes has the same).
    pub seq: u32,
    /// Goroutine id, when the process is a Go program whose offsets are known.
    pub goid: Option<u64>,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    /// The first `--capture-bytes` bytes.
    pub payload: Vec<u8>,
    /// HTTP/2 frame windows beyond `payload`, in offset order (empty for other protocols).
    pub windows: Vec<Window>,
    /// TLS plaintext from a TLS library call (OpenSSL) on this connection, not the syscall's
    /// bytes; `seq` is then that of the first encrypted byte the call moved (0: none).
    pub tls: bool,
}

impl Data {
    /// Blank `ranges` (offsets in this syscall's bytes) in the payload and the frame windows:
    /// the message content of TLS plaintext, which the agent does not keep.
    pub fn blank(&mut self, ranges: &[crate::protocol::content::Blank]) {
        let mut windows: Vec<(i64, &mut [u8])> = self
            .windows
            .iter_mut()
            .map(|w| (w.offset, w.bytes.as_mut_slice()))
            .collect();
        crate::protocol::content::blank(ranges, &mut self.payload, &mut windows);
    }
}

/// Bytes at `offset` of a syscall's buffer, beyond its captured prefix: an HTTP/2 frame's
/// header and the start of its payload (see `wirespan_shared::FrameWindow`). A negative offset
/// means the window's first bytes belong to the previous syscall of the same direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub offset: i64,
    pub bytes: Vec<u8>,
}

/// A Go `net/http` request on a goroutine: a server handler (`serverHandler.ServeHTTP`) or a
/// client round trip (`(*Transport).roundTrip`), starting or returning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoServe {
    /// True for an outbound (client) request, false for a handler.
    pub client: bool,
    /// True at the entry (method, path, host set); false at the return (status).
    pub start: bool,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub method: String,
    pub path: String,
    pub host: String,
    /// At the return: the status the handler wrote (None when unknown or not written).
    pub status: Option<u16>,
    /// At a handler's start: the address of the `*http.Server` serving it, whose handler's
    /// registered routes name the request (0 when unknown).
    pub server: u64,
    pub ts_ns: u64,
}

/// A goroutine started another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoSpawn {
    pub pid: u32,
    pub tid: u32,
    /// The gRPC stream the parent was handling headers of (the child is its handler), or 0.
    pub stream_id: u32,
    pub parent_goid: u64,
    pub child_goid: u64,
    pub ts_ns: u64,
    /// Observed, not seen happen: the child named its parent when it made an outbound call
    /// (`ts_ns` is then that call's time, not the spawn's).
    pub observed: bool,
}

/// A goroutine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoExit {
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub ts_ns: u64,
}

/// A process executed a new program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub pid: u32,
    pub comm: String,
    pub ts_ns: u64,
    /// What the kernel read of the new program at exec; `None` in recordings made before
    /// probes read it.
    pub image: Option<ExecImage>,
}

/// The new program as exec left it: what `/proc/<pid>/exe`, `cmdline` and `environ` would show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecImage {
    /// The executable's file name (empty when the kernel could not read it).
    pub exe: String,
    /// The NUL-separated argument block, cut at `PROCESS_ARGS_CAP` bytes.
    pub args: Vec<u8>,
    /// The NUL-separated environment block, cut at `PROCESS_ENV_CAP` bytes.
    pub env: Vec<u8>,
    /// The whole blocks were longer than what is here (cut at the cap, or unreadable).
    pub args_cut: bool,
    pub env_cut: bool,
}

/// A process (its thread-group leader) exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExit {
    pub pid: u32,
    pub ts_ns: u64,
}

/// One decoded kernel event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Conn(Conn),
    /// A connect that never established (`kind` is `Connect`; `errno` says why, None when the
    /// program gave up on it).
    ConnectFailed(Conn),
    Data(Data),
    GoServe(GoServe),
    GoSpawn(GoSpawn),
    GoExit(GoExit),
    GoConnUse(GoConnUse),
    GoHeaders(GoHeaders),
    GoGrpcCall(GoGrpcCall),
    Exec(Exec),
    Exit(ProcessExit),
}

impl Event {
    /// When it happened (a data event: when its syscall returned), CLOCK_MONOTONIC ns.
    #[must_use]
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Conn(c) | Self::ConnectFailed(c) => c.ts_ns,
            Self::Data(d) => d.ts_exit_ns,
            Self::GoServe(g) => g.ts_ns,
            Self::GoSpawn(g) => g.ts_ns,
            Self::GoExit(g) => g.ts_ns,
            Self::GoConnUse(g) => g.ts_ns,
            Self::GoHeaders(g) => g.ts_ns,
            Self::GoGrpcCall(g) => g.ts_ns,
            Self::Exec(e) => e.ts_ns,
            Self::Exit(e) => e.ts_ns,
        }
    }
}

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
    /// The HTTP/2 stream a net/http handler serves (a server use over HTTP/2), else None.
    pub stream_id: Option<u32>,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub conn: GoConnection,
    pub ts_ns: u64,
}
