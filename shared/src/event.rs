//! Events sent from the kernel to user space through the `EVENTS` ring buffer. Each starts with
//! a `u32` tag (`EVENT_*`) so user space can check the kind before reading the rest.

use crate::grpc::{GoConn, GrpcOffsets};

/// Bumped whenever an existing event layout changes; recordings carry it so a replay of an older
/// layout is refused instead of misread. A new event kind does not bump it: older readers skip
/// (and count) kinds they do not know.
pub const EVENT_ABI_VERSION: u32 = 2;

/// Tags of [`ConnEvent`]: a connect (client side), an accept (server side), a close.
pub const EVENT_CONNECT: u32 = 1;
pub const EVENT_ACCEPT: u32 = 2;
pub const EVENT_CLOSE: u32 = 3;
/// Tag of [`ConnEvent`] for a connect that never established: the socket went SYN_SENT → CLOSE
/// (refused, timed out, or abandoned by the program). `error` says why.
pub const EVENT_CONNECT_FAILED: u32 = 17;
/// Tag of [`DataEvent`].
pub const EVENT_DATA: u32 = 4;
/// Tags of [`GoServeEvent`]: a Go `net/http` server handler starts, and returns.
pub const EVENT_GO_SERVE_START: u32 = 5;
pub const EVENT_GO_SERVE_END: u32 = 6;
/// Tags of [`GoServeEvent`] for the client side: `(*http.Transport).roundTrip` starts (method,
/// URL host and path), and returns (the response's status code, 0 on an error).
pub const EVENT_GO_CLIENT_START: u32 = 9;
pub const EVENT_GO_CLIENT_END: u32 = 10;
/// Tag of [`ExecEvent`]: a process replaced its program (execve); Go programs started after the
/// agent are found this way.
pub const EVENT_EXEC: u32 = 7;

/// Tag of [`GoSpawnEvent`]: a goroutine started another (`runtime.newproc1`).
pub const EVENT_GO_SPAWN: u32 = 8;

/// Tag of [`GoSpawnEvent`] for ancestry observed, not seen happen: a goroutine that made an
/// outbound call names its parent (`g.parentGoid`, Go 1.21+). Sent from the outbound-call
/// probes, so a program whose spawn probe is not attached (it served requests without calling
/// out; see `golang::discover`) still ties a child goroutine's call to its handler. `ts_ns` is
/// when it was observed, `stream_id` 0.
pub const EVENT_GO_ANCESTRY: u32 = 20;

/// A goroutine created another: the ancestry that keeps work handed to child goroutines, at any
/// depth, tied to the request that caused it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoSpawnEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// The HTTP/2 stream whose request headers the parent goroutine was handling when it started
    /// the child, 0 otherwise: grpc-go's server starts each stream's handler goroutine from
    /// `operateHeaders`, so this names the stream a handler goroutine serves.
    pub stream_id: u32,
    pub parent_goid: u64,
    pub child_goid: u64,
    pub ts_ns: u64,
}

/// Tag of [`GoConnEvent`]: which connection a Go request uses.
pub const EVENT_GO_CONN: u32 = 15;
/// [`GoConnEvent::role`]: the connection a `net/http` handler serves (at `ServeHTTP` entry).
pub const GO_CONN_SERVER: u32 = 1;
/// The connection a client request was sent on (`(*persistConn).roundTrip` entry, on the
/// requesting goroutine; the pooled connection's own goroutines do the I/O).
pub const GO_CONN_CLIENT: u32 = 2;
/// The connection and HTTP/2 stream (`conn.stream_id`) a `net/http` handler served over HTTP/2
/// serves (at `ServeHTTP` entry).
pub const GO_CONN_SERVER_STREAM: u32 = 3;

/// A Go request on goroutine `goid` uses connection `conn`. The request's headers
/// (`traceparent`, `tracestate`) are read from the bytes on that connection, where they are
/// still contiguous, instead of from the `http.Header` map (whose layout changed to a swiss map
/// in Go 1.24).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoConnEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub role: u32,
    pub goid: u64,
    pub ts_ns: u64,
    pub conn: GoConn,
}

/// Tag of [`GoExitEvent`]: a goroutine ended (`runtime.goexit1`).
pub const EVENT_GO_EXIT: u32 = 14;

/// A goroutine ended: user space forgets its ancestry, the probes their per-goroutine state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoExitEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub pad0: u32,
    pub goid: u64,
    pub ts_ns: u64,
}

/// A process executed a new program (the first layout: no arguments, no environment). Probes no
/// longer send it; older recordings carry it, and they still replay.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub kind: u32,
    pub pid: u32,
    pub ts_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// Tag of [`ProcessStartHeader`]: a process executed a new program, with what its resource needs.
/// (17 is main's `EVENT_CONNECT_FAILED`: these two come after it.)
pub const EVENT_PROCESS_START: u32 = 18;
/// Tag of [`ProcessExitEvent`]: a process (its thread-group leader) exited.
pub const EVENT_PROCESS_EXIT: u32 = 19;

/// Argument bytes (`mm->arg_start..arg_end`) a process-start event carries at most.
pub const PROCESS_ARGS_CAP: usize = 4096;
/// Environment bytes (`mm->env_start..env_end`) a process-start event carries at most. Larger
/// environments are cut here; user space reads the whole block from `/proc` while it can.
pub const PROCESS_ENV_CAP: usize = 16_384;
/// Bytes of the executable's file name (`mm->exe_file`'s dentry name), NUL-padded.
pub const PROCESS_EXE_LEN: usize = 64;

/// Fixed part of a process-start event, read at `sched:sched_process_exec` in the new program's
/// context (exec has succeeded, so the arguments and environment are on its fresh stack, where
/// `/proc/<pid>/cmdline` and `environ` would read them). `args_len` argument bytes follow the
/// header, then `env_len` environment bytes; both are NUL-separated blocks. `args_size` and
/// `env_size` are the blocks' whole sizes: a captured length below them means the block was cut
/// at its cap (or could not be read at all, when the captured length is 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStartHeader {
    pub kind: u32,
    pub pid: u32,
    pub ts_ns: u64,
    pub args_size: u32,
    pub args_len: u32,
    pub env_size: u32,
    pub env_len: u32,
    pub comm: [u8; COMM_LEN],
    pub exe: [u8; PROCESS_EXE_LEN],
}

/// A process-start event as the probe builds it in per-CPU scratch space; only
/// `size_of::<ProcessStartHeader>() + args_len + env_len` bytes are sent. The environment is
/// written right after the arguments, at an offset the verifier knows only as below
/// `2 * PROCESS_ARGS_CAP` (a mask), so the buffer has room for that plus `PROCESS_ENV_CAP`.
#[repr(C)]
pub struct ProcessStartEvent {
    pub header: ProcessStartHeader,
    pub blocks: [u8; 2 * PROCESS_ARGS_CAP + PROCESS_ENV_CAP],
}

/// A process ended: sent at `sched:sched_process_exit` of the thread-group leader only (one event
/// per process, not per thread). User space keeps the process's resource until its last spans
/// are out, then forgets it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessExitEvent {
    pub kind: u32,
    pub pid: u32,
    pub ts_ns: u64,
}

/// Address families, as the kernel numbers them (`AF_INET`, `AF_INET6`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// Which attach mode produced an event; also the identity of a mode in the start-up report.
pub const MODE_KPROBE: u16 = 1;
pub const MODE_FENTRY: u16 = 2;
pub const MODE_TRACEPOINT: u16 = 3;
/// A BTF tracepoint (`tp_btf`): the tracepoint's arguments, typed by the kernel's BTF.
pub const MODE_TP_BTF: u16 = 4;

/// A connection's lifecycle: connect, accept or close (see `kind`).
///
/// `saddr`/`sport` are this process's end (for an accept, the listening address), `daddr`/`dport`
/// the peer. Addresses are in network byte order, IPv4 in the first 4 bytes of the 16; ports in
/// host byte order. `ts_ns` is `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`). `conn_id` is unique for the
/// connection's whole life: fds and ports are reused, ids are not.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    pub kind: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub mode: u16,
    pub pid: u32,
    pub tid: u32,
    /// The socket's pending error (`sk_err`, a positive errno) when a close or a failed connect
    /// was seen at its state change, 0 when none: ECONNRESET for a reset, ECONNREFUSED,
    /// ETIMEDOUT. 0 as well when the program already consumed it (close hooks on `tcp_close`).
    pub error: u32,
    pub ts_ns: u64,
    pub conn_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; COMM_LEN],
}

impl ConnEvent {
    #[must_use]
    pub const fn zeroed(kind: u32) -> Self {
        Self {
            kind,
            family: 0,
            sport: 0,
            dport: 0,
            mode: 0,
            pid: 0,
            tid: 0,
            error: 0,
            ts_ns: 0,
            conn_id: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            comm: [0; COMM_LEN],
        }
    }
}

/// Direction of a data event, from the process's point of view.
pub const DIR_EGRESS: u16 = 1;
pub const DIR_INGRESS: u16 = 2;

/// `DataHeader.flags`: the goroutine id is known (Go programs, once their offsets are loaded).
pub const DATA_FLAG_GOID_KNOWN: u32 = 1;
/// `DataHeader.flags`: the payload is TLS plaintext, taken from a TLS library call (OpenSSL's
/// `SSL_read`/`SSL_write`) on the socket; `seq` is that of the first encrypted byte the call
/// moved on the socket (0 when it moved none).
pub const DATA_FLAG_TLS_PLAINTEXT: u32 = 2;

/// The most payload bytes one data event can carry (`--capture-bytes` is at most this).
pub const MAX_CAPTURE: usize = 16_384;

/// Fixed part of a data event; `captured` payload bytes follow it in the ring-buffer record.
///
/// `bytes` is what the syscall returned (exact, even when the payload is cut at `captured`).
/// `seq` is the TCP sequence number of the first byte: `write_seq` before a send, `copied_seq`
/// before a receive, so a writer's and a reader's events of the same bytes carry the same numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub kind: u32,
    pub direction: u16,
    pub family: u16,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub captured: u32,
    pub conn_id: u64,
    pub bytes: u64,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    pub goid: u64,
    pub flags: u32,
    /// Bytes of HTTP/2 frame windows after the captured payload (see [`FrameWindow`]); 0 for
    /// other protocols. Was padding before windows existed, so older recordings read as 0.
    pub window_bytes: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; COMM_LEN],
}

/// The HTTP/2 client connection preface (RFC 9113 section 3.4): where the kernel starts
/// following a connection's frames, and where user space recognises HTTP/2.
pub const HTTP2_PREFACE: [u8; 24] = *b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header's length.
pub const HTTP2_FRAME_HEADER: usize = 9;

/// One HTTP/2 frame window: the bytes at `offset` of the syscall's buffer, `len` of them, follow
/// this descriptor. The data probe follows each HTTP/2 connection direction's frame chain (frame
/// lengths from the headers, from the preface on) and sends, for every frame that starts or
/// ends beyond the captured prefix, its header and the start of its payload: the whole of
/// small control and header frames, [`WINDOW_DATA_PAYLOAD`] bytes of DATA (padding length and
/// gRPC message prefix). User space then keeps frame sync through a syscall of any size.
///
/// `offset` is negative when the frame's header began in the previous syscall on the same
/// direction (those first bytes were sent then, and are repeated here).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWindow {
    pub offset: i32,
    pub len: u16,
    pub pad0: u16,
}

/// Size of a [`FrameWindow`] descriptor.
pub const WINDOW_DESC_LEN: usize = 8;
/// Payload bytes a window holds of a DATA frame.
pub const WINDOW_DATA_PAYLOAD: usize = 16;
/// A window's bytes (header included) at most: longer header blocks stay cut.
pub const WINDOW_MAX_LEN: usize = 1024;
/// Window bytes (descriptors included) one data event carries at most, beyond the capture
/// (about 430 DATA frames: 7 MiB of 16 KiB frames). With `MAX_CAPTURE` of payload, the window
/// being built and a maximal read into it stay inside the 2×`MAX_CAPTURE` scratch payload.
pub const MAX_WINDOW_BYTES: usize = MAX_CAPTURE - 2 * WINDOW_MAX_LEN;

/// A data event as the probes build it in per-CPU scratch space. The payload is twice
/// `MAX_CAPTURE` so that iovec segments can be appended at any offset below `MAX_CAPTURE` with a
/// length of up to `MAX_CAPTURE` and stay in bounds (what the verifier checks); only
/// `size_of::<DataHeader>() + captured` bytes are sent.
#[repr(C)]
pub struct DataEvent {
    pub header: DataHeader,
    pub payload: [u8; 2 * MAX_CAPTURE],
}

/// Bytes of the method, path and host a [`GoServeEvent`] carries at most.
pub const GO_METHOD_LEN: usize = 16;
pub const GO_PATH_LEN: usize = 128;
pub const GO_HOST_LEN: usize = 64;

/// A Go `net/http` request as its server handler sees it (`serverHandler.ServeHTTP`), read at
/// the function's entry (start: method, path, host) and at each of its RET instructions (end:
/// the status the handler wrote, 0 when unknown). `goid` ties it to the goroutine, and through
/// it to the syscalls that goroutine makes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoServeEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub status: u32,
    pub goid: u64,
    pub ts_ns: u64,
    pub method_len: u16,
    pub path_len: u16,
    pub host_len: u16,
    pub pad0: u16,
    pub method: [u8; GO_METHOD_LEN],
    pub path: [u8; GO_PATH_LEN],
    pub host: [u8; GO_HOST_LEN],
    /// At a server handler's start: the `*http.Server` serving it (user space reads the
    /// handler's registered routes from it once per process); 0 otherwise. Last, so records of
    /// the layout without it (older recordings) still decode.
    pub server: u64,
}

/// Where an itab's method table starts (`inter`, `_type`, `hash` and padding come first, the
/// same in every Go release with the register ABI). An interface value's dynamic type is told
/// by its itab's first method, a function whose address even a stripped binary's pclntab gives,
/// where the itab's own symbol is gone.
pub const ITAB_FIRST_METHOD: u64 = 24;

/// Per-process layout of the Go structures the uprobes read (`GO_PROCS` map value), from the
/// binary's DWARF. `response_itab` is the address of the `*http.response` → `ResponseWriter`
/// itab: the status is read only when the handler's writer is that type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoOffsets {
    pub g_goid: u32,
    pub request_method: u32,
    pub request_url: u32,
    pub request_host: u32,
    pub url_path: u32,
    pub response_status: u32,
    /// Address of `(*http.response).Header`: the ResponseWriter's itab is the `*http.response`
    /// one when its first method is this function (see [`ITAB_FIRST_METHOD`]).
    pub response_header_fn: u64,
    /// `url.URL.Host` (client requests carry their host there) and `http.Response.StatusCode`.
    pub url_host: u32,
    pub client_status_code: u32,
    /// The connection behind a handler (`http.response.conn` → `http.conn.rwc`) and behind a
    /// client request (`http.persistConn.conn`); both are `net.Conn` interface values.
    /// `u32::MAX` when the program has no such type.
    pub response_conn: u32,
    pub conn_rwc: u32,
    pub persist_conn: u32,
    /// `net.conn.fd` → `netFD.pfd.Sysfd` (netFD embeds poll.FD first).
    pub conn_fd: u32,
    pub netfd_sysfd: u32,
    /// Where the running goroutine's `g` is kept in thread-local storage, as an offset from the
    /// thread pointer (fs base): -8 with Go's own linker, elsewhere with a host linker (cgo).
    /// 0 when unknown; syscalls then carry no goroutine id. The probes set it to 0 when the
    /// slot ever disagrees with R14 at a Go uprobe (a wrong id is worse than none).
    pub g_tls: i32,
    /// Address of `(*net.TCPConn).Close`, the first method of the `*net.TCPConn` → `net.Conn`
    /// itab; 0 when unknown, and then the connection is read without the type check (reads are
    /// checked, never trusted).
    pub tcp_conn_close_fn: u64,
    /// `runtime.g.parentGoid` (Go 1.21+): the goroutine that started this one. 0 when unknown;
    /// the outbound-call probes then send no ancestry of their own.
    pub g_parent_goid: u32,
    /// `runtime.g.gopc`: where the `go` statement that started the goroutine is. With it and
    /// `g_parent_goid`, one probe on newproc's call to `runqput` sees a whole spawn (child,
    /// parent, site), in place of probes at newproc1's entry and RETs. 0 when unknown.
    pub g_gopc: u32,
    /// `crypto/tls.Conn.rawInput` (a `bytes.Buffer`): encrypted bytes crypto/tls read from the
    /// socket and has not decrypted yet. A `Read` whose record is already there started at the
    /// socket's read position minus what is unread in it. 0 when unknown.
    pub tls_raw_input: u32,
    /// net/http's bundled HTTP/2 server, for a handler served over HTTP/2 (its ResponseWriter
    /// is a `*http2responseWriter`): `http2responseWriterState.stream` (the writer's `rws` is
    /// its only field), `http2stream.id` and `.sc`, `http2serverConn.conn` (a `net.Conn`).
    /// `u32::MAX` when the program has no such type.
    pub h2_rws_stream: u32,
    pub h2_stream_id: u32,
    pub h2_stream_sc: u32,
    pub h2_sc_conn: u32,
    pub pad0: u32,
    /// Address of `(*http2responseWriter).Header`, the first method of its `ResponseWriter`
    /// itab (see [`ITAB_FIRST_METHOD`]); 0 when unknown, and then HTTP/2 handlers are not read.
    pub h2_writer_header_fn: u64,
    /// Address of `(*tls.Conn).Close`, the first method of the `*tls.Conn` → `net.Conn` itab:
    /// a TLS connection's socket is the `net.Conn` it holds first. 0 when unknown.
    pub tls_conn_close_fn: u64,
    /// grpc-go and golang.org/x/net layouts; all zero when the program has no grpc-go.
    pub grpc: GrpcOffsets,
}

/// Why an event was lost in the kernel; index into the `LOST` per-CPU array.
pub const LOST_RINGBUF_FULL: u32 = 0;
/// A kernel read (`bpf_probe_read_kernel`) of a socket failed.
pub const LOST_READ_FAILED: u32 = 1;
/// Tracepoint mode saw a connect reach ESTABLISHED without having seen it start (mid-handshake
/// when the agent started, or evicted from the bounded `PENDING_CONNECTS` table).
pub const LOST_START_UNSEEN: u32 = 2;
/// A syscall's entry could not be remembered for its exit (table full).
pub const LOST_IO_TABLE_FULL: u32 = 3;
/// Reading the payload from the process's memory failed (the event is sent without it).
pub const LOST_PAYLOAD_READ_FAILED: u32 = 4;
/// An exec event did not fit in the ring buffer (counted apart: exec events are not filtered by
/// port, so they would blur the count of the traffic's own losses).
pub const LOST_EXEC_RINGBUF_FULL: u32 = 5;
/// A process-exit event did not fit in the ring buffer (the process's resource is then kept
/// until the table's bound pushes it out).
pub const LOST_EXIT_RINGBUF_FULL: u32 = 6;
pub const LOST_CAUSES: u32 = 7;

/// Names of the loss causes, indexed like the `LOST_*` constants.
pub const LOST_CAUSE_NAMES: [&str; LOST_CAUSES as usize] = [
    "ring buffer full",
    "kernel read failed",
    "connect start not seen",
    "syscall table full",
    "payload read failed",
    "ring buffer full, exec events",
    "ring buffer full, exit events",
];

#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] integers; any bit pattern is valid.
unsafe impl aya::Pod for GoOffsets {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // Sums of the field sizes: a different size means the compiler inserted padding.
        assert_eq!(size_of::<ConnEvent>(), 4 + 2 * 4 + 4 * 3 + 8 * 2 + 16 * 3);
        assert_eq!(
            size_of::<DataHeader>(),
            4 + 2 * 2 + 4 * 3 + 2 * 2 + 4 * 2 + 8 * 5 + 4 * 2 + 16 * 3
        );
        assert_eq!(
            size_of::<DataEvent>(),
            size_of::<DataHeader>() + 2 * MAX_CAPTURE
        );
        assert_eq!(size_of::<FrameWindow>(), WINDOW_DESC_LEN);
        assert_eq!(align_of::<ConnEvent>(), 8);
        assert_eq!(align_of::<DataHeader>(), 8);
        assert_eq!(
            size_of::<GoServeEvent>(),
            4 * 4 + 8 * 2 + 2 * 4 + GO_METHOD_LEN + GO_PATH_LEN + GO_HOST_LEN + 8
        );
        assert_eq!(
            size_of::<GoOffsets>(),
            4 * 22 + 8 * 4 + size_of::<GrpcOffsets>()
        );
        assert_eq!(size_of::<ExecEvent>(), 4 * 2 + 8 + COMM_LEN);
        assert_eq!(
            size_of::<ProcessStartHeader>(),
            4 * 2 + 8 + 4 * 4 + COMM_LEN + PROCESS_EXE_LEN
        );
        assert_eq!(align_of::<ProcessStartHeader>(), 8);
        assert_eq!(
            size_of::<ProcessStartEvent>(),
            size_of::<ProcessStartHeader>() + 2 * PROCESS_ARGS_CAP + PROCESS_ENV_CAP
        );
        assert_eq!(size_of::<ProcessExitEvent>(), 4 * 2 + 8);
        assert_eq!(size_of::<GoSpawnEvent>(), 4 * 4 + 8 * 3);
        assert_eq!(size_of::<GoExitEvent>(), 4 * 4 + 8 * 2);
        assert_eq!(
            size_of::<GoConnEvent>(),
            4 * 4 + 8 * 2 + size_of::<GoConn>()
        );
    }
}
