//! The names of the probes' maps and programs, as user space asks aya for them. aya's macros name
//! a map or a program after its Rust item (`#[map] static EVENTS`, `#[tracepoint] fn
//! sys_enter_read`), and those attributes take no constants, so the probes spell each name once as
//! an identifier and the collector uses these constants; the collector's `load::object_names`
//! test checks, against the built object, that every name here is a map or program there and
//! every map and program there is named here. The load-time globals' names are the `GLOBAL_*`
//! constants in [`crate::globals`].

use crate::{
    GLOBAL_FD_OFFSETS, GLOBAL_PROC_OFFSETS, GLOBAL_SET_STATE_FORMAT, GLOBAL_SETTINGS,
    GLOBAL_SOCK_OFFSETS,
};

/// Map: the one ring buffer every event goes through.
pub const MAP_EVENTS: &str = "EVENTS";
/// Map: per-CPU counters of events lost in the kernel, by cause.
pub const MAP_LOST: &str = "LOST";
/// Map: tracepoint mode: connects between SYN_SENT and ESTABLISHED.
pub const MAP_PENDING_CONNECTS: &str = "PENDING_CONNECTS";
/// Map: sock address → connection id and owner.
pub const MAP_CONNS: &str = "CONNS";
/// Map: per-CPU counters behind connection ids.
pub const MAP_NEXT_CONN_ID: &str = "NEXT_CONN_ID";
/// Map: scratch data events, one slot per CPU (user space sizes it at load).
pub const MAP_SCRATCH: &str = "SCRATCH";
/// Map: `--pid` values.
pub const MAP_FILTER_PIDS: &str = "FILTER_PIDS";
/// Map: `--port` values.
pub const MAP_FILTER_PORTS: &str = "FILTER_PORTS";
/// Map: `--cgroup` ids.
pub const MAP_FILTER_CGROUPS: &str = "FILTER_CGROUPS";
/// Map: thread → the socket syscall it is in.
pub const MAP_ACTIVE_IO: &str = "ACTIVE_IO";
/// Map: tgid → its Go binary's layout (written by user space).
pub const MAP_GO_PROCS: &str = "GO_PROCS";
/// Map: goroutine → the net/http request it serves.
pub const MAP_SERVING: &str = "SERVING";
/// Map: goroutines whose starts and ends are reported (see probes-ebpf/src/golang.rs).
pub const MAP_TRACKED: &str = "TRACKED";
/// Map: thread → the `runtime.newproc1` call it is making.
pub const MAP_SPAWNING: &str = "SPAWNING";
/// Map: goroutine → the gRPC stream whose headers it handles.
pub const MAP_HANDLING_STREAM: &str = "HANDLING_STREAM";
/// Map: goroutine → its unary gRPC call in progress.
pub const MAP_CALLS: &str = "CALLS";
/// Map: (sock, direction) → where its next HTTP/2 frame starts (kernel-only).
pub const MAP_FRAME_CHAINS: &str = "FRAME_CHAINS";
/// Map: per CPU, the frame walk of the syscall being captured (kernel-only).
pub const MAP_WALK: &str = "WALK";
/// Map: per CPU, the process-start record being built at exec (kernel-only).
pub const MAP_PROCESS_SCRATCH: &str = "PROCESS_SCRATCH";
/// Map: whether user space's reader polls the ring buffer on its timer (written by user space).
pub const MAP_READER_POLLING: &str = "READER_POLLING";
pub const MAP_TLS_CALLS: &str = "TLS_CALLS";
pub const MAP_TLS_SOCKETS: &str = "TLS_SOCKETS";
pub const MAP_GO_TLS_READS: &str = "GO_TLS_READS";
pub const MAP_TLS_POSITIONS: &str = "TLS_POSITIONS";

/// Every map in the probes' object.
pub const MAPS: &[&str] = &[
    MAP_EVENTS,
    MAP_LOST,
    MAP_PENDING_CONNECTS,
    MAP_CONNS,
    MAP_NEXT_CONN_ID,
    MAP_SCRATCH,
    MAP_FILTER_PIDS,
    MAP_FILTER_PORTS,
    MAP_FILTER_CGROUPS,
    MAP_ACTIVE_IO,
    MAP_GO_PROCS,
    MAP_SERVING,
    MAP_TRACKED,
    MAP_SPAWNING,
    MAP_HANDLING_STREAM,
    MAP_CALLS,
    MAP_FRAME_CHAINS,
    MAP_WALK,
    MAP_PROCESS_SCRATCH,
    MAP_READER_POLLING,
    MAP_TLS_CALLS,
    MAP_TLS_SOCKETS,
    MAP_GO_TLS_READS,
    MAP_TLS_POSITIONS,
];

// Programs of probes-ebpf/src/conn.rs.
pub const PROGRAM_TCP_CONNECT_KPROBE: &str = "tcp_connect_kprobe";
pub const PROGRAM_TCP_CONNECT_FENTRY: &str = "tcp_connect_fentry";
pub const PROGRAM_INET_CSK_ACCEPT_KRETPROBE: &str = "inet_csk_accept_kretprobe";
pub const PROGRAM_SYS_EXIT_ACCEPT: &str = "sys_exit_accept";
pub const PROGRAM_TCP_CLOSE_KPROBE: &str = "tcp_close_kprobe";
pub const PROGRAM_TCP_CLOSE_FENTRY: &str = "tcp_close_fentry";
pub const PROGRAM_INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
pub const PROGRAM_INET_SOCK_SET_STATE_CLOSE: &str = "inet_sock_set_state_close";
pub const PROGRAM_INET_SOCK_SET_STATE_FAILED: &str = "inet_sock_set_state_failed";
pub const PROGRAM_SET_STATE_CONNECT_BTF: &str = "set_state_connect_btf";
pub const PROGRAM_SET_STATE_CLOSE_BTF: &str = "set_state_close_btf";
pub const PROGRAM_SET_STATE_FAILED_BTF: &str = "set_state_failed_btf";

// Programs of probes-ebpf/src/data.rs.
pub const PROGRAM_SYS_ENTER_READ: &str = "sys_enter_read";
pub const PROGRAM_SYS_ENTER_WRITE: &str = "sys_enter_write";
pub const PROGRAM_SYS_ENTER_READV: &str = "sys_enter_readv";
pub const PROGRAM_SYS_ENTER_WRITEV: &str = "sys_enter_writev";
pub const PROGRAM_SYS_ENTER_RECVMSG: &str = "sys_enter_recvmsg";
pub const PROGRAM_SYS_ENTER_SENDMSG: &str = "sys_enter_sendmsg";
pub const PROGRAM_SYS_EXIT_DATA: &str = "sys_exit_data";

// Programs of probes-ebpf/src/process.rs.
pub const PROGRAM_SCHED_PROCESS_EXEC: &str = "sched_process_exec";
pub const PROGRAM_SCHED_PROCESS_EXIT: &str = "sched_process_exit";

// Programs of probes-ebpf/src/golang.rs.
pub const PROGRAM_GO_SPAWNED: &str = "go_spawned";
pub const PROGRAM_GO_NEWPROC1: &str = "go_newproc1";
pub const PROGRAM_GO_NEWPROC1_RETURN: &str = "go_newproc1_return";
pub const PROGRAM_GO_GOEXIT: &str = "go_goexit";
pub const PROGRAM_GO_PERSIST_CONN_ROUND_TRIP: &str = "go_persist_conn_round_trip";
pub const PROGRAM_GO_ROUND_TRIP: &str = "go_round_trip";
pub const PROGRAM_GO_ROUND_TRIP_RETURN: &str = "go_round_trip_return";
pub const PROGRAM_GO_SERVE_HTTP: &str = "go_serve_http";
pub const PROGRAM_GO_SERVE_HTTP_RETURN: &str = "go_serve_http_return";

// Programs of probes-ebpf/src/grpc.rs.
pub const PROGRAM_GO_GRPC_SERVER_HEADERS: &str = "go_grpc_server_headers";
pub const PROGRAM_GO_GRPC_CLIENT_HEADERS: &str = "go_grpc_client_headers";
pub const PROGRAM_GO_GRPC_WRITE_HEADER: &str = "go_grpc_write_header";
pub const PROGRAM_GO_GRPC_NEW_STREAM: &str = "go_grpc_new_stream";
pub const PROGRAM_GO_GRPC_NEW_STREAM_RETURN: &str = "go_grpc_new_stream_return";
pub const PROGRAM_GO_GRPC_INVOKE: &str = "go_grpc_invoke";
pub const PROGRAM_GO_GRPC_INVOKE_RETURN: &str = "go_grpc_invoke_return";

// Programs of probes-ebpf/src/floor.rs: empty, loaded only by `wirespan-floor` (the benchmark's
// floor configurations), never by the agent.
pub const PROGRAM_FLOOR_TRACEPOINT: &str = "floor_tracepoint";
pub const PROGRAM_FLOOR_UPROBE: &str = "floor_uprobe";

// Programs of probes-ebpf/src/multi.rs: the Go programs above as multi-uprobes.
pub const PROGRAM_GO_ROUND_TRIP_M: &str = "go_round_trip_m";
pub const PROGRAM_GO_ROUND_TRIP_RETURN_M: &str = "go_round_trip_return_m";
pub const PROGRAM_GO_SERVE_HTTP_M: &str = "go_serve_http_m";
pub const PROGRAM_GO_SERVE_HTTP_RETURN_M: &str = "go_serve_http_return_m";

/// Every program in the probes' object.
pub const PROGRAM_SSL_READ: &str = "ssl_read";
pub const PROGRAM_SSL_READ_EX: &str = "ssl_read_ex";
pub const PROGRAM_SSL_WRITE: &str = "ssl_write";
pub const PROGRAM_SSL_WRITE_EX: &str = "ssl_write_ex";
pub const PROGRAM_SSL_RETURN: &str = "ssl_return";
pub const PROGRAM_GO_TLS_WRITE: &str = "go_tls_write";
pub const PROGRAM_GO_TLS_READ: &str = "go_tls_read";
pub const PROGRAM_GO_TLS_READ_RETURN: &str = "go_tls_read_return";

pub const PROGRAMS: &[&str] = &[
    PROGRAM_TCP_CONNECT_KPROBE,
    PROGRAM_TCP_CONNECT_FENTRY,
    PROGRAM_INET_CSK_ACCEPT_KRETPROBE,
    PROGRAM_SYS_EXIT_ACCEPT,
    PROGRAM_TCP_CLOSE_KPROBE,
    PROGRAM_TCP_CLOSE_FENTRY,
    PROGRAM_INET_SOCK_SET_STATE,
    PROGRAM_INET_SOCK_SET_STATE_CLOSE,
    PROGRAM_INET_SOCK_SET_STATE_FAILED,
    PROGRAM_SET_STATE_CONNECT_BTF,
    PROGRAM_SET_STATE_CLOSE_BTF,
    PROGRAM_SET_STATE_FAILED_BTF,
    PROGRAM_SYS_ENTER_READ,
    PROGRAM_SYS_ENTER_WRITE,
    PROGRAM_SYS_ENTER_READV,
    PROGRAM_SYS_ENTER_WRITEV,
    PROGRAM_SYS_ENTER_RECVMSG,
    PROGRAM_SYS_ENTER_SENDMSG,
    PROGRAM_SYS_EXIT_DATA,
    PROGRAM_SCHED_PROCESS_EXEC,
    PROGRAM_SCHED_PROCESS_EXIT,
    PROGRAM_GO_SPAWNED,
    PROGRAM_GO_NEWPROC1,
    PROGRAM_GO_NEWPROC1_RETURN,
    PROGRAM_GO_GOEXIT,
    PROGRAM_GO_PERSIST_CONN_ROUND_TRIP,
    PROGRAM_GO_ROUND_TRIP,
    PROGRAM_GO_ROUND_TRIP_RETURN,
    PROGRAM_GO_SERVE_HTTP,
    PROGRAM_GO_SERVE_HTTP_RETURN,
    PROGRAM_GO_GRPC_SERVER_HEADERS,
    PROGRAM_GO_GRPC_CLIENT_HEADERS,
    PROGRAM_GO_GRPC_WRITE_HEADER,
    PROGRAM_GO_GRPC_NEW_STREAM,
    PROGRAM_GO_GRPC_NEW_STREAM_RETURN,
    PROGRAM_GO_GRPC_INVOKE,
    PROGRAM_GO_GRPC_INVOKE_RETURN,
    PROGRAM_FLOOR_TRACEPOINT,
    PROGRAM_FLOOR_UPROBE,
    PROGRAM_GO_ROUND_TRIP_M,
    PROGRAM_GO_ROUND_TRIP_RETURN_M,
    PROGRAM_GO_SERVE_HTTP_M,
    PROGRAM_GO_SERVE_HTTP_RETURN_M,
    PROGRAM_SSL_READ,
    PROGRAM_SSL_READ_EX,
    PROGRAM_SSL_WRITE,
    PROGRAM_SSL_WRITE_EX,
    PROGRAM_SSL_RETURN,
    PROGRAM_GO_TLS_WRITE,
    PROGRAM_GO_TLS_READ,
    PROGRAM_GO_TLS_READ_RETURN,
];

/// Every load-time global in the probes' object.
pub const GLOBALS: &[&str] = &[
    GLOBAL_SOCK_OFFSETS,
    GLOBAL_FD_OFFSETS,
    GLOBAL_PROC_OFFSETS,
    GLOBAL_SET_STATE_FORMAT,
    GLOBAL_SETTINGS,
];

/// Each Go uprobe program that has a multi-uprobe twin (probes-ebpf/src/multi.rs), and the twin.
pub const MULTI_TWINS: &[(&str, &str)] = &[
    (PROGRAM_GO_ROUND_TRIP, PROGRAM_GO_ROUND_TRIP_M),
    (PROGRAM_GO_ROUND_TRIP_RETURN, PROGRAM_GO_ROUND_TRIP_RETURN_M),
    (PROGRAM_GO_SERVE_HTTP, PROGRAM_GO_SERVE_HTTP_M),
    (PROGRAM_GO_SERVE_HTTP_RETURN, PROGRAM_GO_SERVE_HTTP_RETURN_M),
];
