//! TCP connection lifecycle hooks: connect, accept, close, one program per attach mode. User
//! space tries the modes of each hook in order (kprobe → fentry → tp_btf → tracepoint) and keeps
//! the first that loads and attaches; every mode of a hook emits the same `ConnEvent`.
//!
//! - connect: kprobe / fentry on `tcp_connect(struct sock *)` run in the connecting task after
//!   the source port is chosen. The tracepoint modes (see `set_state`) use
//!   `inet_sock_set_state`: CLOSE→SYN_SENT runs in the connecting task but before the port is
//!   chosen, SYN_SENT→ESTABLISHED has the full five-tuple but may run in softirq; the two are
//!   joined on the sock address.
//! - accept: a kretprobe on `inet_csk_accept` (returns the new sock), or `sys_exit_accept{,4}`
//!   with the returned fd resolved to its sock.
//! - close: kprobe / fentry on `tcp_close`, or `inet_sock_set_state` → CLOSE (`set_state`),
//!   with the socket's error (a reset sets ECONNRESET just before the state change).
//! - failed connect (its own hook, a tracepoint mode whatever the connect hook's): SYN_SENT →
//!   CLOSE without ESTABLISHED, with the socket's error (ECONNREFUSED, ETIMEDOUT, or none when
//!   the program gave up).
//!
//! Every connection gets a fresh id at connect or accept, kept in `CONNS` until close.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, ProbeContext, RetProbeContext, TracePointContext},
};
use wirespan_shared::{
    ConnEvent, EVENT_ACCEPT, EVENT_CLOSE, EVENT_CONNECT, EVENT_CONNECT_FAILED, LOST_READ_FAILED,
    LOST_RINGBUF_FULL, MODE_FENTRY, MODE_KPROBE, MODE_TRACEPOINT, SYSCALL_RET_OFFSET,
};

use crate::{
    maps::{
        CONNS, ConnInfo, EVENTS, PendingConnect, count_lost, next_conn_id, ports_pass,
        process_passes, wake_flags,
    },
    sock::{read_sock_err, read_tuple, tcp_sock_of_fd},
};

#[kprobe]
pub fn tcp_connect_kprobe(ctx: ProbeContext) -> u32 {
    match ctx.arg::<u64>(0) {
        Some(sk) => start_in_current(sk, EVENT_CONNECT, MODE_KPROBE),
        None => 0,
    }
}

#[fentry(function = "tcp_connect")]
pub fn tcp_connect_fentry(ctx: FEntryContext) -> u32 {
    start_in_current(ctx.arg::<u64>(0), EVENT_CONNECT, MODE_FENTRY)
}

#[kretprobe]
pub fn inet_csk_accept_kretprobe(ctx: RetProbeContext) -> u32 {
    let sk: u64 = ctx.ret();
    if sk == 0 {
        return 0;
    }
    start_in_current(sk, EVENT_ACCEPT, MODE_KPROBE)
}

/// `syscalls:sys_exit_accept4` and `syscalls:sys_exit_accept`: the return value is the new fd.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    // SAFETY: the syscall exit record has its return value at SYSCALL_RET_OFFSET; read_at copies
    // it with bpf_probe_read, which fails instead of faulting, and a failure returns 0.
    let Ok(fd) = (unsafe { ctx.read_at::<i64>(SYSCALL_RET_OFFSET) }) else {
        return 0;
    };
    if fd < 0 || !process_passes((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    match tcp_sock_of_fd(fd) {
        Ok(0) => 0,
        Ok(sk) => start_in_current(sk, EVENT_ACCEPT, MODE_TRACEPOINT),
        Err(_) => {
            count_lost(LOST_READ_FAILED);
            0
        }
    }
}

#[kprobe]
pub fn tcp_close_kprobe(ctx: ProbeContext) -> u32 {
    match ctx.arg::<u64>(0) {
        Some(sk) => emit_close(sk, MODE_KPROBE),
        None => 0,
    }
}

#[fentry(function = "tcp_close")]
pub fn tcp_close_fentry(ctx: FEntryContext) -> u32 {
    emit_close(ctx.arg::<u64>(0), MODE_FENTRY)
}

/// A connection starts in the current task: give it a fresh id and emit connect or accept.
#[inline(always)]
fn start_in_current(sk: u64, kind: u32, mode: u16) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !process_passes(pid) {
        return 0;
    }
    start(sk, kind, mode, &current_owner(pid_tgid));
    0
}

/// The current task as a connection's owner, now.
#[inline(always)]
pub(crate) fn current_owner(pid_tgid: u64) -> PendingConnect {
    PendingConnect {
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Emit the start of a connection and record it in `CONNS` under a fresh id: a sock address
/// reused by a new connection must never inherit the old one's id.
#[inline(always)]
pub(crate) fn start(sk: u64, kind: u32, mode: u16, owner: &PendingConnect) {
    let Ok(tuple) = read_tuple(sk) else {
        count_lost(LOST_READ_FAILED);
        return;
    };
    if !ports_pass(tuple.sport, tuple.dport) {
        return;
    }
    let info = ConnInfo {
        conn_id: next_conn_id(),
        pid: owner.pid,
        tid: owner.tid,
        comm: owner.comm,
        tuple,
        tls_plaintext: 0,
        pad0: 0,
    };
    let _ = CONNS.insert(&sk, &info, 0);
    let mut ev = ConnEvent::zeroed(kind);
    ev.mode = mode;
    ev.pid = owner.pid;
    ev.tid = owner.tid;
    ev.ts_ns = owner.ts_ns;
    ev.comm = owner.comm;
    ev.conn_id = info.conn_id;
    ev.family = tuple.family;
    ev.sport = tuple.sport;
    ev.dport = tuple.dport;
    ev.saddr = tuple.saddr;
    ev.daddr = tuple.daddr;
    if EVENTS.output(&ev, wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}

/// The end of a connection the probes knew: emit close with its id and owner, forget it.
#[inline(always)]
pub(crate) fn emit_close(sk: u64, mode: u16) -> u32 {
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held across an
    // update.
    let Some(info) = (unsafe { CONNS.get(&sk) }).copied() else {
        return 0;
    };
    let _ = CONNS.remove(&sk);
    crate::frames::forget(sk);
    let mut ev = ConnEvent::zeroed(EVENT_CLOSE);
    ev.mode = mode;
    ev.pid = info.pid;
    ev.tid = info.tid;
    ev.comm = info.comm;
    ev.conn_id = info.conn_id;
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    // Set when the kernel ended the connection (a reset); a program's own close leaves it 0.
    ev.error = read_sock_err(sk);
    ev.family = info.tuple.family;
    ev.sport = info.tuple.sport;
    ev.dport = info.tuple.dport;
    ev.saddr = info.tuple.saddr;
    ev.daddr = info.tuple.daddr;
    if EVENTS.output(&ev, wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
    0
}

/// A connect that never established, with the owner that started it and the socket's error;
/// `conn_id` is the id its connect event had (kprobe / fentry modes), else 0. `recorded_sport`
/// stands in for a source port already released (0: none recorded).
#[inline(always)]
pub(crate) fn emit_connect_failed(
    sk: u64,
    recorded_sport: u16,
    owner: &PendingConnect,
    conn_id: u64,
    mode: u16,
) {
    let Ok(mut tuple) = read_tuple(sk) else {
        count_lost(LOST_READ_FAILED);
        return;
    };
    // The port was released on the way to CLOSE; the tracepoint recorded it before.
    if tuple.sport == 0 {
        tuple.sport = recorded_sport;
    }
    if !ports_pass(tuple.sport, tuple.dport) {
        return;
    }
    let mut ev = ConnEvent::zeroed(EVENT_CONNECT_FAILED);
    ev.mode = mode;
    ev.conn_id = conn_id;
    ev.pid = owner.pid;
    ev.tid = owner.tid;
    ev.comm = owner.comm;
    ev.error = read_sock_err(sk);
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.family = tuple.family;
    ev.sport = tuple.sport;
    ev.dport = tuple.dport;
    ev.saddr = tuple.saddr;
    ev.daddr = tuple.daddr;
    if EVENTS.output(&ev, wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}
