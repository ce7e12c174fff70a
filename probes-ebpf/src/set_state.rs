//! The tracepoint modes of the connection hooks: `inet_sock_set_state`, one program per half
//! (connect, close, failed connect) in two flavours.
//!
//! - `tp_btf` (BTF tracepoint, tried first): the tracepoint's own arguments (sock, old state,
//!   new state), typed by the kernel's BTF. The kernel skips a tracing program only when that
//!   same program is already running on the CPU (a per-program guard).
//! - classic (`sock:inet_sock_set_state`, the fallback on kernels without BTF): the record's
//!   fields at the offsets tracefs gives. The kernel skips it whenever any classic tracepoint or
//!   kprobe program is running on that CPU (one guard for all of them, `bpf_prog_active`), and
//!   the syscall tracepoints of the data path run all the time: under heavy connection churn some
//!   closes were never seen and their `CONNS` entries stayed (the program's `recursion_misses`).
//!
//! Both flavours feed the same halves, so the events are the same whichever attached.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use wirespan_shared::{
    EVENT_CONNECT, IPPROTO_TCP, LOST_START_UNSEEN, MODE_TP_BTF, MODE_TRACEPOINT, TCP_CLOSE,
    TCP_ESTABLISHED, TCP_SYN_SENT,
};

use crate::{
    conn::{current_owner, emit_close, emit_connect_failed, start},
    maps::{
        CONNS, PENDING_CONNECTS, PendingConnect, count_lost, process_passes, set_state_format,
        settings,
    },
    sock::is_tcp,
};

/// One TCP state change: the sock, its old and new state, and the source port the classic
/// record kept for a failed connect (0 otherwise, and in tp_btf mode, which reads the live
/// sock, whose port is still bound then).
struct Transition {
    sk: u64,
    old: i32,
    new: i32,
    recorded_sport: u16,
    mode: u16,
}

/// `sock:inet_sock_set_state`, connect half (classic tracepoint mode of the connect hook).
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match classic_transition(&ctx) {
        Ok(t) => on_connect_transition(&t),
        Err(v) => v,
    }
}

/// `inet_sock_set_state`, connect half (tp_btf mode of the connect hook).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn set_state_connect_btf(ctx: BtfTracePointContext) -> u32 {
    match btf_transition(&ctx) {
        Some(t) => on_connect_transition(&t),
        None => 0,
    }
}

/// `sock:inet_sock_set_state`, close half (classic tracepoint mode of the close hook).
#[tracepoint]
pub fn inet_sock_set_state_close(ctx: TracePointContext) -> u32 {
    match classic_transition(&ctx) {
        Ok(t) if t.new == TCP_CLOSE => emit_close(t.sk, t.mode),
        _ => 0,
    }
}

/// `inet_sock_set_state`, close half (tp_btf mode of the close hook). Only socks in `CONNS`
/// (TCP connections the probes started) are closed, so no protocol read is needed first.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn set_state_close_btf(ctx: BtfTracePointContext) -> u32 {
    let new: i32 = ctx.arg(2);
    if new != TCP_CLOSE {
        return 0;
    }
    match sock_arg(&ctx) {
        Some(sk) => emit_close(sk, MODE_TP_BTF),
        None => 0,
    }
}

/// `sock:inet_sock_set_state`, failed-connect half (classic mode of `tcp_connect_failed`):
/// SYN_SENT → CLOSE without ESTABLISHED. Blocking or not, every failed connect passes here:
/// refused, timed out, or abandoned by the program.
#[tracepoint]
pub fn inet_sock_set_state_failed(ctx: TracePointContext) -> u32 {
    let Ok(mut t) = classic_transition(&ctx) else {
        return 0;
    };
    if (t.old, t.new) != (TCP_SYN_SENT, TCP_CLOSE) {
        return 0;
    }
    // The port is released on the way to CLOSE: the record kept it. Read only here, not at
    // every state change of every connection.
    // SAFETY: a field of the record at the offset tracefs gave, read by bpf_probe_read; a failed
    // read returns 0 from the probe.
    match unsafe { ctx.read_at::<u16>(set_state_format().sport as usize) } {
        Ok(sport) => t.recorded_sport = sport,
        Err(_) => return 0,
    }
    on_failed_transition(&t)
}

/// `inet_sock_set_state`, failed-connect half (tp_btf mode of `tcp_connect_failed`).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn set_state_failed_btf(ctx: BtfTracePointContext) -> u32 {
    match btf_transition(&ctx) {
        Some(t) => on_failed_transition(&t),
        None => 0,
    }
}

/// A TCP transition from the classic record, at the offsets of the running kernel's format.
#[inline(always)]
fn classic_transition(ctx: &TracePointContext) -> Result<Transition, u32> {
    let format = set_state_format();
    // SAFETY: the offsets are those of the running kernel's `inet_sock_set_state` format, read from
    // tracefs by user space; read_at goes through bpf_probe_read, and a failed read returns 0 from
    // the probe.
    let protocol: u16 = unsafe { ctx.read_at(format.protocol as usize) }.map_err(|_| 0u32)?;
    if protocol != IPPROTO_TCP {
        return Err(0);
    }
    // SAFETY: as above: a field of the record at the offset tracefs gave, read by the helper.
    let old: i32 = unsafe { ctx.read_at(format.oldstate as usize) }.map_err(|_| 0u32)?;
    // SAFETY: as above: a field of the record at the offset tracefs gave, read by the helper.
    let new: i32 = unsafe { ctx.read_at(format.newstate as usize) }.map_err(|_| 0u32)?;
    // SAFETY: as above: a field of the record at the offset tracefs gave, read by the helper.
    let sk: u64 = unsafe { ctx.read_at(format.skaddr as usize) }.map_err(|_| 0u32)?;
    Ok(Transition {
        sk,
        old,
        new,
        // Read by the failed half alone (see `inet_sock_set_state_failed`).
        recorded_sport: 0,
        mode: MODE_TRACEPOINT,
    })
}

/// A TCP transition from the BTF tracepoint's arguments `(sk, oldstate, newstate)`; None for
/// another protocol.
#[inline(always)]
fn btf_transition(ctx: &BtfTracePointContext) -> Option<Transition> {
    let sk = sock_arg(ctx)?;
    if !is_tcp(sk) {
        return None;
    }
    Some(Transition {
        sk,
        old: ctx.arg(1),
        new: ctx.arg(2),
        recorded_sport: 0,
        mode: MODE_TP_BTF,
    })
}

/// The sock argument as a plain address. Taken from the context directly, the verifier types it
/// as a trusted `struct sock` pointer and refuses what the shared code does with the address
/// (map keys are fine, but `frames` mixes it into keys with `^`); copied out through
/// bpf_probe_read_kernel it is a number like in every other mode.
#[inline(always)]
fn sock_arg(ctx: &BtfTracePointContext) -> Option<u64> {
    // SAFETY: the context of a tp_btf program is the tracepoint's argument array (one u64 per
    // argument) and `sk` is its first; the helper copies it and fails instead of faulting.
    let sk: u64 = unsafe { bpf_probe_read_kernel(ctx.as_ptr().cast::<u64>()) }.ok()?;
    (sk != 0).then_some(sk)
}

/// CLOSE→SYN_SENT notes the connecting task; SYN_SENT→ESTABLISHED emits the connect with it.
#[inline(always)]
fn on_connect_transition(t: &Transition) -> u32 {
    match (t.old, t.new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            // Process context: decide here whether the connect is wanted (agent, pid, cgroup).
            let pid_tgid = bpf_get_current_pid_tgid();
            let pid = (pid_tgid >> 32) as u32;
            if !process_passes(pid) {
                // Remember it anyway, so ESTABLISHED knows it was seen and skips it quietly.
                let skip = PendingConnect {
                    pid: 0,
                    tid: 0,
                    ts_ns: 0,
                    comm: [0; 16],
                };
                let _ = PENDING_CONNECTS.insert(&t.sk, &skip, 0);
                return 0;
            }
            let pending = current_owner(pid_tgid);
            // LRU map: an insert never fails for lack of room, the oldest entry goes instead.
            let _ = PENDING_CONNECTS.insert(&t.sk, &pending, 0);
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) => {
            // SAFETY: a hash map lookup by key; the value is copied out at once, never held across
            // an update.
            let Some(pending) = (unsafe { PENDING_CONNECTS.get(&t.sk) }).copied() else {
                count_lost(LOST_START_UNSEEN);
                return 0;
            };
            let _ = PENDING_CONNECTS.remove(&t.sk);
            if pending.pid != 0 && pending.pid != settings().agent_tgid {
                start(t.sk, EVENT_CONNECT, t.mode, &pending);
            }
        }
        // SYN_SENT → CLOSE (a failed connect) is the failed half's, which takes the pending
        // entry (the LRU drops it when that hook is not attached).
        _ => {}
    }
    0
}

/// SYN_SENT → CLOSE: a connect that never established, with the owner that started it.
#[inline(always)]
fn on_failed_transition(t: &Transition) -> u32 {
    if (t.old, t.new) != (TCP_SYN_SENT, TCP_CLOSE) {
        return 0;
    }
    // Tracepoint modes: the owner waits in PENDING_CONNECTS. kprobe / fentry modes: the connect
    // was emitted at tcp_connect, its owner is in CONNS (its close follows as usual).
    // SAFETY: hash map lookups by key; the values are copied out at once, never held across an
    // update.
    let (owner, conn_id) = if let Some(pending) = unsafe { PENDING_CONNECTS.get(&t.sk) }.copied() {
        let _ = PENDING_CONNECTS.remove(&t.sk);
        (pending, 0)
    // SAFETY: as above.
    } else if let Some(info) = unsafe { CONNS.get(&t.sk) }.copied() {
        let owner = PendingConnect {
            pid: info.pid,
            tid: info.tid,
            ts_ns: 0,
            comm: info.comm,
        };
        (owner, info.conn_id)
    } else {
        return 0;
    };
    if owner.pid != 0 && owner.pid != settings().agent_tgid {
        emit_connect_failed(t.sk, t.recorded_sport, &owner, conn_id, t.mode);
    }
    0
}
