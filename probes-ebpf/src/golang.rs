//! Go uprobes: `net/http.serverHandler.ServeHTTP` and `(*http.Transport).roundTrip`, each at
//! its entry and at each RET instruction (never a uretprobe: Go moves stacks, golang/go#22008),
//! and `(*http.persistConn).roundTrip` at its entry (goroutine ancestry is in `goroutines`). Go's register ABI puts the handler's `*http.Request` in RDI and the
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
    EVENT_GO_CLIENT_END, EVENT_GO_CLIENT_START, EVENT_GO_CONN, EVENT_GO_SERVE_END,
    EVENT_GO_SERVE_START, GO_CONN_CLIENT, GO_CONN_SERVER, GO_CONN_SERVER_STREAM, GO_HOST_LEN,
    GO_METHOD_LEN, GO_PATH_LEN, GoConn, GoConnEvent, GoOffsets, GoServeEvent, ITAB_FIRST_METHOD,
    LOST_RINGBUF_FULL,
};

use crate::{
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
pub(crate) struct ServeCtx {
    /// The `*http.response` behind the ResponseWriter, 0 when the writer is another type.
    response: u64,
}

#[map]
pub(crate) static SERVING: LruHashMap<GoroutineKey, ServeCtx> =
    LruHashMap::with_max_entries(65_536, 0);

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
pub(crate) fn check_g_slot(tgid: u32, g: u64) {
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
    ev.server = 0;
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
        crate::goroutines::observe_ancestry(pid_tgid, &offsets, regs.r14, goid);
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
    stream_id: 0,
    saddr: [0; 16],
    daddr: [0; 16],
};

/// The connection behind a `net.Conn` interface value at `iface`: its fd
/// (`*net.TCPConn` → `net.conn.fd` → `netFD.pfd.Sysfd`) and, through the current task's fd
/// table, its five-tuple.
#[inline(always)]
pub fn read_conn(iface: u64, g: &GoOffsets) -> GoConn {
    let mut conn = NO_CONN;
    let Some((fd, sk)) = conn_socket(iface, g) else {
        return conn;
    };
    conn.fd = fd;
    if sk != 0
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

/// The fd and TCP sock (0 when the fd is not a TCP socket) behind a `*net.TCPConn` held in the
/// `net.Conn` interface value at `iface`, directly or under a `*tls.Conn` (whose first field is
/// the `net.Conn` it encrypts).
#[inline(always)]
pub fn conn_socket(iface: u64, g: &GoOffsets) -> Option<(i32, u64)> {
    let (Ok(mut itab), Ok(mut data)) = (read_u64(iface), read_u64(iface + 8)) else {
        return None;
    };
    if data != 0 && g.tls_conn_close_fn != 0 && itab_is(itab, g.tls_conn_close_fn) {
        (itab, data) = (read_u64(data).ok()?, read_u64(data + 8).ok()?);
    }
    if data == 0 || (g.tcp_conn_close_fn != 0 && !itab_is(itab, g.tcp_conn_close_fn)) {
        return None;
    }
    let netfd = read_u64(data + u64::from(g.conn_fd)).ok()?;
    let fd = read_u64(netfd + u64::from(g.netfd_sysfd)).ok()? as i32;
    let sk = tcp_sock_of_fd(i64::from(fd)).unwrap_or(0);
    Some((fd, sk))
}

/// The connection and stream of an HTTP/2 handler's `*http2responseWriter` (`rws` →
/// `stream` → `id`, and `stream.sc.conn`).
#[inline(always)]
fn h2_stream(writer: u64, g: &GoOffsets) -> Option<GoConn> {
    if g.h2_rws_stream == u32::MAX {
        return None;
    }
    let rws = read_u64(writer).ok()?;
    let stream = read_u64(rws + u64::from(g.h2_rws_stream)).ok()?;
    let id = read_u64(stream + u64::from(g.h2_stream_id)).ok()? as u32;
    let sc = read_u64(stream + u64::from(g.h2_stream_sc)).ok()?;
    let mut conn = read_conn(sc + u64::from(g.h2_sc_conn), g);
    if id == 0 || conn.family == 0 {
        return None;
    }
    conn.stream_id = id;
    Some(conn)
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
        // `serverHandler` is a struct of one pointer, `srv *Server`: passed in RAX.
        ev.server = regs.rax;
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
        } else if response == 0
            && offsets.h2_writer_header_fn != 0
            && itab_is(regs.rbx, offsets.h2_writer_header_fn)
            && let Some(stream) = h2_stream(regs.rcx, &offsets)
        {
            send_conn(pid_tgid, goid, GO_CONN_SERVER_STREAM, stream);
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
