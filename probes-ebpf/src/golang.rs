//! Go uprobes: `net/http.serverHandler.ServeHTTP`, `(*http.Transport).roundTrip` and
//! `runtime.newproc1` (where `go_spawned` cannot go), each at its entry and at each RET
//! instruction (never a uretprobe: Go
//! moves stacks, golang/go#22008), and `(*http.persistConn).roundTrip` and `runtime.goexit1` at
//! their entries. Go's register ABI puts the handler's `*http.Request` in RDI and the
//! `ResponseWriter` interface in RBX (itab) and RCX (data); the current goroutine's `g` is in
//! R14. Also the helpers the grpc-go probes share: reading a `net.Conn`'s five-tuple, telling an
//! interface value's type by its itab. Probes only read; offsets come per process from user space
//! (`GO_PROCS`), and a process without an entry is ignored.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user, generated,
    },
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap, ring_buf::RingBufEntry},
    programs::ProbeContext,
};
use wirespan_shared::{
    EVENT_GO_ANCESTRY, EVENT_GO_CLIENT_END, EVENT_GO_CLIENT_START, EVENT_GO_CONN, EVENT_GO_EXIT,
    EVENT_GO_SERVE_END, EVENT_GO_SERVE_START, EVENT_GO_SPAWN, GO_CONN_CLIENT, GO_CONN_SERVER,
    GO_HOST_LEN, GO_METHOD_LEN, GO_PATH_LEN, GoConn, GoConnEvent, GoExitEvent, GoOffsets,
    GoServeEvent, GoSpawnEvent, ITAB_FIRST_METHOD, LOST_RINGBUF_FULL,
};

use crate::{
    grpc::{HANDLING_STREAM, forget_goroutine},
    maps::{EVENTS, count_lost, fd_offsets, process_passes},
    sock::{read_tuple, tcp_sock_of_fd},
};

/// tgid → the layout of its binary. Written by user space for each Go process it attached to.
#[map]
pub static GO_PROCS: HashMap<u32, GoOffsets> = HashMap::with_max_entries(4096, 0);

/// A goroutine of a process: the key of per-goroutine state kept from a function's entry to
/// its return (a handler in progress, a gRPC call).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoroutineKey {
    pub tgid: u32,
    pub pad0: u32,
    pub goid: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ServeCtx {
    /// The `*http.response` behind the ResponseWriter, 0 when the writer is another type.
    response: u64,
}

#[map]
static SERVING: LruHashMap<GoroutineKey, ServeCtx> = LruHashMap::with_max_entries(65_536, 0);

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
    if !track_child(tgid, parent_goid, stream_id, child) {
        return 0;
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
    if EVENTS.output(&ev, 0).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
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
    if !track_child(tgid, spawning.parent_goid, spawning.stream_id, child) {
        return 0;
    }
    let ev = GoSpawnEvent {
        kind: EVENT_GO_SPAWN,
        pid: tgid,
        tid: pid_tgid as u32,
        stream_id: spawning.stream_id,
        parent_goid: spawning.parent_goid,
        child_goid: child,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output(&ev, crate::maps::wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
    0
}

/// The address of the current thread's goroutine slot: `tls` (negative; 0 = unknown) bytes
/// from its TLS base. Where the slot is depends on how the binary was linked (see the
/// collector's golang/tls.rs); user space reads it from the runtime's code.
#[inline(always)]
pub fn g_slot(tls: i32) -> Option<u64> {
    if tls >= 0 {
        return None;
    }
    // SAFETY: bpf_get_current_task takes no arguments and only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: bpf_probe_read_kernel reads the task's fsbase at the BTF offset user space found; a
    // failure is an error (None), never a fault.
    let fsbase: u64 = unsafe {
        bpf_probe_read_kernel((task + u64::from(fd_offsets().task_fsbase)) as *const u64)
    }
    .ok()?;
    fsbase.checked_sub(u64::from(tls.unsigned_abs()))
}

/// At a Go uprobe R14 holds the running `g`, and the runtime keeps the TLS slot equal to it
/// (it reloads R14 from there after any assembly call). A slot that holds another value means
/// the offset is wrong for this process: forget it, so its syscalls carry no goroutine id
/// rather than someone else's.
#[inline(always)]
fn check_g_slot(tgid: u32, g: u64) {
    let Some(offsets) = GO_PROCS.get_ptr_mut(&tgid) else {
        return;
    };
    // SAFETY: the pointer is to this process's live map value (the lookup just succeeded); a
    // plain integer field is read.
    let Some(slot) = g_slot(unsafe { (*offsets).g_tls }) else {
        return;
    };
    if let Ok(held) = read_u64(slot)
        && held != g
    {
        // SAFETY: the same map value; a racing writer can only store 0 too (or user space the
        // whole entry again), and any i32 is a valid value.
        unsafe { (*offsets).g_tls = 0 };
    }
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

/// The offsets of the current process, if it is an attached Go program that passes the filters,
/// with its pid/tgid and the current goroutine's id.
#[inline(always)]
pub fn current(regs: &pt_regs) -> Option<(u64, GoOffsets, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
    let offsets = unsafe { GO_PROCS.get(&tgid) }.copied()?;
    if !process_passes(tgid) {
        return None;
    }
    let goid = read_u64(regs.r14 + u64::from(offsets.g_goid)).ok()?;
    Some((pid_tgid, offsets, goid))
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
    if EVENTS.output(&ev, 0).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}

/// Tell user space which connection the request on goroutine `goid` uses.
#[inline(always)]
fn send_conn(pid_tgid: u64, goid: u64, role: u32, conn: GoConn) {
    let ev = GoConnEvent {
        kind: EVENT_GO_CONN,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        role,
        goid,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn,
    };
    if EVENTS.output(&ev, crate::maps::wake_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}

/// `(*persistConn).roundTrip(req)` entry, on the requesting goroutine: RAX is the pooled
/// connection the request goes out on. Its reads and writes happen on the connection's own
/// goroutines (started by whichever request dialled it), so this is what ties a request that
/// reuses a pooled connection to the bytes on it.
#[uprobe]
pub fn go_persist_conn_round_trip(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    if offsets.persist_conn == u32::MAX {
        return 0;
    }
    let conn = read_conn(regs.rax + u64::from(offsets.persist_conn), &offsets);
    send_conn(pid_tgid, goid, GO_CONN_CLIENT, conn);
    0
}

/// Reserve a request event in the ring buffer with its common fields set (the caller sets the
/// kind and the rest, then submits: every path after a reserve must submit or discard).
#[inline(always)]
fn reserve_http_event(pid_tgid: u64, goid: u64) -> Result<RingBufEntry<GoServeEvent>, ()> {
    let mut entry = EVENTS
        .reserve::<GoServeEvent>(0)
        .ok_or_else(|| count_lost(LOST_RINGBUF_FULL))?;
    // SAFETY: `entry` is a successful ring buffer reservation of a GoServeEvent: non-null, aligned,
    // ours until submitted or discarded; the event is plain integers and byte arrays, valid for any
    // bytes, and the reference ends with this function.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.goid = goid;
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.status = 0;
    ev.method_len = 0;
    ev.path_len = 0;
    ev.host_len = 0;
    ev.pad0 = 0;
    Ok(entry)
}

/// `(*http.Transport).roundTrip(req *Request)`: RAX is the transport, RBX the request.
#[uprobe]
pub fn go_round_trip(ctx: ProbeContext) -> u32 {
    match try_round_trip(&ctx, true) {
        Ok(()) | Err(()) => 0,
    }
}

/// roundTrip at each RET: `(*Response, error)` in RAX and RBX/RCX.
#[uprobe]
pub fn go_round_trip_return(ctx: ProbeContext) -> u32 {
    match try_round_trip(&ctx, false) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_round_trip(ctx: &ProbeContext, entry: bool) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
    let offsets = unsafe { GO_PROCS.get(&tgid) }.copied().ok_or(())?;
    if !process_passes(tgid) {
        return Ok(());
    }
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    if entry {
        check_g_slot(tgid, regs.r14);
    }
    let goid = read_u64(regs.r14 + u64::from(offsets.g_goid))?;
    if entry {
        observe_ancestry(pid_tgid, &offsets, regs.r14, goid);
    }
    let mut entry_buf = reserve_http_event(pid_tgid, goid)?;
    // SAFETY: the reservation `reserve_http_event` made (aligned, ours until submit; plain-data
    // event); `ev` is not used after the submit below.
    let ev = unsafe { &mut *entry_buf.as_mut_ptr() };
    if entry {
        ev.kind = EVENT_GO_CLIENT_START;
        let request = regs.rbx;
        ev.method_len = read_go_string(
            request + u64::from(offsets.request_method),
            &mut ev.method,
            GO_METHOD_LEN,
        );
        if let Ok(url) = read_u64(request + u64::from(offsets.request_url))
            && url != 0
        {
            ev.path_len =
                read_go_string(url + u64::from(offsets.url_path), &mut ev.path, GO_PATH_LEN);
            ev.host_len =
                read_go_string(url + u64::from(offsets.url_host), &mut ev.host, GO_HOST_LEN);
        }
    } else {
        ev.kind = EVENT_GO_CLIENT_END;
        let response = regs.rax;
        if response != 0 && offsets.client_status_code != 0 {
            ev.status =
                read_u64(response + u64::from(offsets.client_status_code)).unwrap_or(0) as u32;
        }
    }
    entry_buf.submit(crate::maps::wake_flags());
    Ok(())
}

#[uprobe]
pub fn go_serve_http(ctx: ProbeContext) -> u32 {
    match try_serve(&ctx, true) {
        Ok(()) | Err(()) => 0,
    }
}

#[uprobe]
pub fn go_serve_http_return(ctx: ProbeContext) -> u32 {
    match try_serve(&ctx, false) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
pub fn read_u64(address: u64) -> Result<u64, ()> {
    // SAFETY: bpf_probe_read_user copies a u64 from the traced process's memory; a bad or unmapped
    // address is an error (returned), never a fault.
    unsafe { bpf_probe_read_user(address as *const u64) }.map_err(|_| ())
}

pub const NO_CONN: GoConn = GoConn {
    family: 0,
    sport: 0,
    dport: 0,
    pad0: 0,
    fd: -1,
    pad1: 0,
    saddr: [0; 16],
    daddr: [0; 16],
};

/// The connection behind a `net.Conn` interface value at `iface`: its fd
/// (`*net.TCPConn` → `net.conn.fd` → `netFD.pfd.Sysfd`) and, through the current task's fd
/// table, its five-tuple.
#[inline(always)]
pub fn read_conn(iface: u64, g: &GoOffsets) -> GoConn {
    let mut conn = NO_CONN;
    let (Ok(itab), Ok(data)) = (read_u64(iface), read_u64(iface + 8)) else {
        return conn;
    };
    if data == 0 || (g.tcp_conn_close_fn != 0 && !itab_is(itab, g.tcp_conn_close_fn)) {
        return conn;
    }
    let Ok(netfd) = read_u64(data + u64::from(g.conn_fd)) else {
        return conn;
    };
    let Ok(sysfd) = read_u64(netfd + u64::from(g.netfd_sysfd)) else {
        return conn;
    };
    conn.fd = sysfd as i32;
    if let Ok(sk) = tcp_sock_of_fd(i64::from(conn.fd))
        && sk != 0
        && let Ok(t) = read_tuple(sk)
    {
        conn.family = t.family;
        conn.sport = t.sport;
        conn.dport = t.dport;
        conn.saddr = t.saddr;
        conn.daddr = t.daddr;
    }
    conn
}

/// Whether the itab at `itab` has `first_method` as its first method (see
/// `ITAB_FIRST_METHOD`): how an interface value's dynamic type is told.
#[inline(always)]
pub fn itab_is(itab: u64, first_method: u64) -> bool {
    itab != 0 && read_u64(itab + ITAB_FIRST_METHOD) == Ok(first_method)
}

/// Copy a Go string (header `{ptr, len}` at `header`) into `dst`; returns the bytes copied.
#[inline(always)]
fn read_go_string(header: u64, dst: &mut [u8], cap: usize) -> u16 {
    let (Ok(ptr), Ok(len)) = (read_u64(header), read_u64(header + 8)) else {
        return 0;
    };
    let mut n = len as usize;
    if n > cap {
        n = cap;
    }
    // SAFETY: the destination is `dst` and `n <= cap`, which every caller sets to at most
    // `dst.len()`; bpf_probe_read_user fails (rc < 0, 0 bytes reported) rather than faulting on a
    // bad source.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            dst.as_mut_ptr().cast::<c_void>(),
            n as u32,
            ptr as *const c_void,
        )
    };
    if rc < 0 { 0 } else { n as u16 }
}

fn try_serve(ctx: &ProbeContext, entry: bool) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a hash map lookup by key; the value is copied out at once, never held.
    let offsets = unsafe { GO_PROCS.get(&tgid) }.copied().ok_or(())?;
    if !process_passes(tgid) {
        return Ok(());
    }
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    if entry {
        check_g_slot(tgid, regs.r14);
    }
    let goid = read_u64(regs.r14 + u64::from(offsets.g_goid))?;
    let key = GoroutineKey {
        tgid,
        pad0: 0,
        goid,
    };

    let mut entry_buf = reserve_http_event(pid_tgid, goid)?;
    // SAFETY: the reservation `reserve_http_event` made (aligned, ours until submit; plain-data
    // event); `ev` is not used after the submit below.
    let ev = unsafe { &mut *entry_buf.as_mut_ptr() };
    if entry {
        ev.kind = EVENT_GO_SERVE_START;
        let request = regs.rdi;
        ev.method_len = read_go_string(
            request + u64::from(offsets.request_method),
            &mut ev.method,
            GO_METHOD_LEN,
        );
        ev.host_len = read_go_string(
            request + u64::from(offsets.request_host),
            &mut ev.host,
            GO_HOST_LEN,
        );
        if let Ok(url) = read_u64(request + u64::from(offsets.request_url))
            && url != 0
        {
            ev.path_len =
                read_go_string(url + u64::from(offsets.url_path), &mut ev.path, GO_PATH_LEN);
        }
        let response =
            if offsets.response_header_fn != 0 && itab_is(regs.rbx, offsets.response_header_fn) {
                regs.rcx
            } else {
                0
            };
        let _ = SERVING.insert(&key, &ServeCtx { response }, 0);
        if response != 0
            && offsets.response_conn != u32::MAX
            && let Ok(conn) = read_u64(response + u64::from(offsets.response_conn))
            && conn != 0
        {
            send_conn(
                pid_tgid,
                goid,
                GO_CONN_SERVER,
                read_conn(conn + u64::from(offsets.conn_rwc), &offsets),
            );
        }
    } else {
        ev.kind = EVENT_GO_SERVE_END;
        // SAFETY: a hash map lookup by key; the value is copied out at once, before the entry is
        // removed.
        if let Some(serving) = unsafe { SERVING.get(&key) }.copied() {
            let _ = SERVING.remove(&key);
            if serving.response != 0 && offsets.response_status != 0 {
                // `status int`: 0 until the handler writes a header (then 200 is implied).
                ev.status = read_u64(serving.response + u64::from(offsets.response_status))
                    .unwrap_or(0) as u32;
            }
        }
    }
    entry_buf.submit(crate::maps::wake_flags());
    Ok(())
}
