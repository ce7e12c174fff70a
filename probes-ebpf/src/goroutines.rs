//! Goroutine ancestry: which goroutine started which, and when goroutines end, for the
//! goroutines user space asks about (see `TRACKED`). The spawn probe goes where newproc queues
//! the new goroutine (`go_spawned`, one emulated trap per `go` statement), else at newproc1's
//! entry and RETs; `go_goexit` at `runtime.goexit1`. An outbound call also names its caller's
//! parent (`observe_ancestry`), for programs whose spawn probe is off (see the collector's
//! `load::serving`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use wirespan_shared::{
    EVENT_GO_ANCESTRY, EVENT_GO_EXIT, EVENT_GO_SPAWN, GoExitEvent, GoOffsets, GoSpawnEvent,
    LOST_RINGBUF_FULL,
};

use crate::{
    golang::{GO_PROCS, GoroutineKey, SERVING, check_g_slot, read_u64},
    grpc::{HANDLING_STREAM, forget_goroutine},
    maps::{EVENTS, count_lost, process_passes},
};

/// Goroutines whose starts and ends user space is told of: those a handler started while it
/// ran (`ServeHTTP`, in `SERVING`), gRPC stream handlers, and every goroutine one of them
/// started, at any depth. The rest (connection goroutines, net/http's per-request background
/// reader started between handlers, timers, the runtime's own) start and end unreported: on a
/// busy server that is most goroutines, two events each, and none of them is ever asked about.
/// (A handler goroutine's runs come from `ServeHTTP` or the bytes; user space bounds them.)
#[map]
static TRACKED: LruHashMap<GoroutineKey, u8> = LruHashMap::with_max_entries(65_536, 0);

/// Whether a goroutine started by `parent` (with the gRPC stream it was handling, 0 for none)
/// is tracked; if so it is now, so its own children are too.
#[inline(always)]
fn track_child(tgid: u32, parent: u64, stream_id: u32, child: u64) -> bool {
    let parent_key = GoroutineKey {
        tgid,
        pad0: 0,
        goid: parent,
    };
    // SAFETY: hash map lookups by key; only whether an entry exists is used.
    let tracked = stream_id != 0
        || unsafe { TRACKED.get(&parent_key) }.is_some()
        || unsafe { SERVING.get(&parent_key) }.is_some();
    if tracked {
        let child_key = GoroutineKey {
            tgid,
            pad0: 0,
            goid: child,
        };
        let _ = TRACKED.insert(&child_key, &1, 0);
    }
    tracked
}

/// Tell user space that `parent` started `child` (with the gRPC stream it was handling, 0 for
/// none), if the child is tracked (see `TRACKED`).
#[inline(always)]
fn report_spawn(pid_tgid: u64, stream_id: u32, parent_goid: u64, child: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    if !track_child(tgid, parent_goid, stream_id, child) {
        return;
    }
    let ev = GoSpawnEvent {
        kind: EVENT_GO_SPAWN,
        pid: tgid,
        tid: pid_tgid as u32,
        stream_id,
        parent_goid,
        child_goid: child,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output(&ev, crate::maps::wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}

/// A `runtime.newproc1` call in progress: the calling goroutine, and the gRPC stream whose
/// headers it was handling (0 when none).
#[repr(C)]
#[derive(Clone, Copy)]
struct Spawning {
    parent_goid: u64,
    stream_id: u32,
    pad0: u32,
}

/// Thread → the `runtime.newproc1` call it is making, from its entry to its return. newproc1
/// runs on the system stack of one thread, so the thread id pairs the two.
#[map]
static SPAWNING: LruHashMap<u64, Spawning> = LruHashMap::with_max_entries(16_384, 0);

/// `runtime.newproc.func1` at its call to `runqput(pp, newg, next)`: the new goroutine (RBX)
/// is complete (its id, its parent's id in `parentGoid`, its `go` statement in `gopc`) and about
/// to be queued. A uprobe on a direct CALL is emulated, so this is one trap per `go` statement,
/// in place of newproc1's entry and RET probes (two traps and a single-step). Only attached
/// when the layout has both fields (see `GoOffsets::g_gopc`).
#[uprobe]
pub fn go_spawned(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
    let Some(offsets) = (unsafe { GO_PROCS.get(&tgid) }).copied() else {
        return 0;
    };
    if !process_passes(tgid) {
        return 0;
    }
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let newg = unsafe { (*ctx.regs).rbx };
    let (Ok(child), Ok(parent_goid), Ok(site)) = (
        read_u64(newg + u64::from(offsets.g_goid)),
        read_u64(newg + u64::from(offsets.g_parent_goid)),
        read_u64(newg + u64::from(offsets.g_gopc)),
    ) else {
        return 0;
    };
    let g = &offsets.grpc;
    let stream_id = if site >= g.handler_spawn_lo && site < g.handler_spawn_hi {
        let key = GoroutineKey {
            tgid,
            pad0: 0,
            goid: parent_goid,
        };
        // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
        unsafe { HANDLING_STREAM.get(&key) }.copied().unwrap_or(0)
    } else {
        0
    };
    report_spawn(pid_tgid, stream_id, parent_goid, child);
    0
}

/// `runtime.newproc1(fn, callergp *g, ...)` entry: the caller's g is the second argument (RBX).
#[uprobe]
pub fn go_newproc1(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
    let Some(offsets) = (unsafe { GO_PROCS.get(&((pid_tgid >> 32) as u32)) }).copied() else {
        return 0;
    };
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    if let Ok(parent_goid) = read_u64(regs.rbx + u64::from(offsets.g_goid)) {
        let key = GoroutineKey {
            tgid: (pid_tgid >> 32) as u32,
            pad0: 0,
            goid: parent_goid,
        };
        // newproc1(fn, callergp, callerpc, ...): RCX is where the `go` statement is.
        let caller_pc = regs.rcx;
        let g = &offsets.grpc;
        let handler_site = caller_pc >= g.handler_spawn_lo && caller_pc < g.handler_spawn_hi;
        let stream_id = if handler_site {
            // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
            unsafe { HANDLING_STREAM.get(&key) }.copied().unwrap_or(0)
        } else {
            0
        };
        let spawning = Spawning {
            parent_goid,
            stream_id,
            pad0: 0,
        };
        let _ = SPAWNING.insert(&pid_tgid, &spawning, 0);
    }
    0
}

/// `runtime.newproc1` at each RET: the new g is the result (RAX), its goid already assigned.
#[uprobe]
pub fn go_newproc1_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a hash map lookup by key; the value is copied out at once, before the entry is
    // removed.
    let Some(spawning) = (unsafe { SPAWNING.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = SPAWNING.remove(&pid_tgid);
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
    let Some(offsets) = (unsafe { GO_PROCS.get(&tgid) }).copied() else {
        return 0;
    };
    if !process_passes(tgid) {
        return 0;
    }
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Ok(child) = read_u64(regs.rax + u64::from(offsets.g_goid)) else {
        return 0;
    };
    report_spawn(pid_tgid, spawning.stream_id, spawning.parent_goid, child);
    0
}

/// `runtime.goexit1` entry, on the ending goroutine (R14): drop its per-goroutine state here
/// and tell user space, so neither side keeps state for goroutines that are gone.
#[uprobe]
pub fn go_goexit(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
    let Some(offsets) = (unsafe { GO_PROCS.get(&tgid) }).copied() else {
        return 0;
    };
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    check_g_slot(tgid, regs.r14);
    let Ok(goid) = read_u64(regs.r14 + u64::from(offsets.g_goid)) else {
        return 0;
    };
    let key = GoroutineKey {
        tgid,
        pad0: 0,
        goid,
    };
    let _ = SERVING.remove(&key);
    forget_goroutine(&key);
    if TRACKED.remove(&key).is_err() || !process_passes(tgid) {
        return 0;
    }
    let ev = GoExitEvent {
        kind: EVENT_GO_EXIT,
        pid: tgid,
        tid: pid_tgid as u32,
        pad0: 0,
        goid,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output(&ev, crate::maps::wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
    0
}

/// An outbound call is being made on goroutine `goid` (whose `g` is `g`): name its parent
/// (`g.parentGoid`), so user space can tie the call to the handler that started the goroutine
/// even where the spawn probe is not attached (see `EVENT_GO_ANCESTRY`). One small record per
/// outbound call; nothing when the layout has no parentGoid or the goroutine has no parent.
#[inline(always)]
pub fn observe_ancestry(pid_tgid: u64, offsets: &GoOffsets, g: u64, goid: u64) {
    if offsets.g_parent_goid == 0 {
        return;
    }
    let Ok(parent_goid) = read_u64(g + u64::from(offsets.g_parent_goid)) else {
        return;
    };
    if parent_goid == 0 || parent_goid == goid {
        return;
    }
    let ev = GoSpawnEvent {
        kind: EVENT_GO_ANCESTRY,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        stream_id: 0,
        parent_goid,
        child_goid: goid,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output(&ev, crate::maps::wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}
