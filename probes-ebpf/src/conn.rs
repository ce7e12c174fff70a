//! TCP connect hooks, one program per attach mode. User space tries them in order (kprobe →
//! fentry → tracepoint) and keeps the first that loads and attaches; all three emit the same
//! `ConnectEvent`.
//!
//! - kprobe / fentry on `tcp_connect(struct sock *)`: runs in the connecting task after the kernel
//!   chose the source port, so one hook sees the whole five-tuple and the pid/tid.
//! - tracepoint `sock:inet_sock_set_state`: CLOSE→SYN_SENT runs in the connecting task but before
//!   the source port is chosen; SYN_SENT→ESTABLISHED has the full five-tuple but may run in softirq.
//!   The two are joined on the sock address through `PENDING_CONNECTS`.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, kprobe, tracepoint},
    programs::{FEntryContext, ProbeContext, TracePointContext},
};
use wirespan_shared::{
    ConnectEvent, IPPROTO_TCP, LOST_READ_FAILED, LOST_RINGBUF_FULL, LOST_START_UNSEEN, MODE_FENTRY,
    MODE_KPROBE, MODE_TRACEPOINT, PendingConnect, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_SENT,
};

use crate::{
    maps::{EVENTS, PENDING_CONNECTS, agent_tgid, count_lost, set_state_format, sock_offsets},
    sock::read_tuple,
};

#[kprobe]
pub fn tcp_connect_kprobe(ctx: ProbeContext) -> u32 {
    match ctx.arg::<*const u8>(0) {
        Some(sk) => emit_from_current(sk, MODE_KPROBE),
        None => 0,
    }
}

#[fentry(function = "tcp_connect")]
pub fn tcp_connect_fentry(ctx: FEntryContext) -> u32 {
    emit_from_current(ctx.arg::<*const u8>(0), MODE_FENTRY)
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

/// Emit a connect whose sock already has its five-tuple, from the connecting task's context.
#[inline(always)]
fn emit_from_current(sk: *const u8, mode: u16) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if pid == agent_tgid() {
        return 0;
    }
    let mut ev = ConnectEvent::zeroed();
    ev.mode = mode;
    ev.pid = pid;
    ev.tid = pid_tgid as u32;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    send(sk, &mut ev);
    0
}

#[inline(always)]
fn send(sk: *const u8, ev: &mut ConnectEvent) {
    let offsets = sock_offsets();
    if unsafe { read_tuple(sk, &offsets, ev) }.is_err() {
        count_lost(LOST_READ_FAILED);
        return;
    }
    if EVENTS.output(ev, 0).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<u32, u32> {
    let format = set_state_format();
    let protocol: u16 = unsafe { ctx.read_at(format.protocol as usize) }.map_err(|_| 0u32)?;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let old: i32 = unsafe { ctx.read_at(format.oldstate as usize) }.map_err(|_| 0u32)?;
    let new: i32 = unsafe { ctx.read_at(format.newstate as usize) }.map_err(|_| 0u32)?;
    let skaddr: u64 = unsafe { ctx.read_at(format.skaddr as usize) }.map_err(|_| 0u32)?;

    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            // The agent's own connects are recorded too, so that their ESTABLISHED is recognised
            // and skipped rather than counted as a connect whose start was not seen.
            let pid_tgid = bpf_get_current_pid_tgid();
            let pid = (pid_tgid >> 32) as u32;
            let pending = PendingConnect {
                pid,
                tid: pid_tgid as u32,
                ts_ns: unsafe { bpf_ktime_get_ns() },
                comm: bpf_get_current_comm().unwrap_or_default(),
            };
            // LRU map: an insert never fails for lack of room, the oldest entry goes instead.
            let _ = PENDING_CONNECTS.insert(&skaddr, &pending, 0);
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) => {
            let Some(pending) = (unsafe { PENDING_CONNECTS.get(&skaddr) }).copied() else {
                // Mid-handshake when the agent started, or evicted from the LRU table.
                count_lost(LOST_START_UNSEEN);
                return Ok(0);
            };
            let _ = PENDING_CONNECTS.remove(&skaddr);
            if pending.pid == agent_tgid() {
                return Ok(0);
            }
            let mut ev = ConnectEvent::zeroed();
            ev.mode = MODE_TRACEPOINT;
            ev.pid = pending.pid;
            ev.tid = pending.tid;
            ev.ts_ns = pending.ts_ns;
            ev.comm = pending.comm;
            send(skaddr as *const u8, &mut ev);
        }
        (TCP_SYN_SENT, TCP_CLOSE) => {
            // Refused or timed out: no connection, nothing to report.
            let _ = PENDING_CONNECTS.remove(&skaddr);
        }
        _ => {}
    }
    Ok(0)
}
