//! grpc-go uprobes. Headers are copied where grpc-go holds them as a contiguous
//! `[]hpack.HeaderField`: inbound at `(*http2Server).operateHeaders` and
//! `(*http2Client).operateHeaders` (already HPACK-decoded, so warm connections keep full
//! headers), outbound at `(*loopyWriter).writeHeader` (before encoding). Unary client calls are
//! read on the caller's goroutine at `(*ClientConn).Invoke`, with the stream and connection that
//! `(*http2Client).NewStream` picked for it; every stream NewStream opens (streaming calls too)
//! is reported with its caller's goroutine. Probes only read; returns are uprobes on RET
//! instructions (never uretprobes: Go moves stacks, golang/go#22008).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_ktime_get_ns, generated},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use wirespan_shared::{
    EVENT_GO_GRPC_CLIENT_END, EVENT_GO_GRPC_CLIENT_START, EVENT_GO_GRPC_STREAM_OPENED,
    EVENT_GO_HEADERS, GO_GRPC_METHOD_LEN, GO_GRPC_STATUS_UNKNOWN, GO_HEADER_FIELDS,
    GO_HEADER_NAME_LEN, GO_HEADER_UNREADABLE, GO_HEADER_VALUE_LEN, GO_HEADERS_CLIENT_RECEIVED,
    GO_HEADERS_SENT, GO_HEADERS_SERVER_RECEIVED, GoConn, GoGrpcCallEvent, GoHeadersEvent,
    GrpcOffsets, LOST_RINGBUF_FULL,
};

use crate::{
    golang::{GoroutineKey, NO_CONN, current, itab_is, read_conn, read_u64},
    goroutines::observe_ancestry,
    maps::{EVENTS, count_lost},
};

/// Goroutine → the stream whose request headers it is handling in `(*http2Server).operateHeaders`,
/// from the function's entry to its return. `runtime.newproc1` reads it: the goroutine started
/// meanwhile is that stream's handler.
#[map]
pub static HANDLING_STREAM: LruHashMap<GoroutineKey, u32> = LruHashMap::with_max_entries(16_384, 0);

/// A unary call in progress on its caller's goroutine: the connection and stream
/// `(*http2Client).NewStream` chose (the stream pointer; its id is assigned later, by the
/// transport's writer goroutine, and read when the call returns).
#[repr(C)]
#[derive(Clone, Copy)]
struct CallCtx {
    stream: u64,
    conn: GoConn,
}

#[map]
static CALLS: LruHashMap<GoroutineKey, CallCtx> = LruHashMap::with_max_entries(65_536, 0);

/// A goroutine ended: drop what the gRPC probes kept for it.
#[inline(always)]
pub fn forget_goroutine(key: &GoroutineKey) {
    let _ = HANDLING_STREAM.remove(key);
    let _ = CALLS.remove(key);
}

#[inline(always)]
fn goroutine(pid_tgid: u64, goid: u64) -> GoroutineKey {
    GoroutineKey {
        tgid: (pid_tgid >> 32) as u32,
        pad0: 0,
        goid,
    }
}

/// A Go register-ABI argument by slot (0 RAX, 1 RBX, 2 RCX, 3 RDI, 4 RSI). Every register is
/// loaded first: the verifier refuses a context read at a computed offset, which is what a
/// `match` on the slot compiles to.
#[inline(always)]
fn arg(regs: &pt_regs, slot: u32) -> u64 {
    // SAFETY: `regs` is the uprobe's pt_regs, a valid reference; volatile reads of its fields only
    // keep the compiler from turning the loads into one at a computed offset.
    let loaded = unsafe {
        [
            core::ptr::read_volatile(&raw const regs.rax),
            core::ptr::read_volatile(&raw const regs.rbx),
            core::ptr::read_volatile(&raw const regs.rcx),
            core::ptr::read_volatile(&raw const regs.rdi),
            core::ptr::read_volatile(&raw const regs.rsi),
        ]
    };
    if slot == 1 {
        loaded[1]
    } else if slot == 3 {
        loaded[3]
    } else if slot == 0 {
        loaded[0]
    } else if slot == 2 {
        loaded[2]
    } else if slot == 4 {
        loaded[4]
    } else {
        0
    }
}

/// Copy up to `len` bytes from user memory at `src` into `dst` (at most `cap`).
#[inline(always)]
/// Whether the copy worked: a probe cannot fault a page in, so memory the program has not
/// touched yet (a constant string on a page not mapped so far) reads as a failure.
fn copy_user(dst: *mut u8, cap: usize, src: u64, len: u64) -> bool {
    let mut n = len as usize;
    if n > cap {
        n = cap;
    }
    if n == 0 {
        return true;
    }
    // SAFETY: every caller passes a `dst` with room for `cap` bytes (a name, value or method array
    // of the event) and `n <= cap`; bpf_probe_read_user fails (non-zero, reported as false) rather
    // than faulting on a bad source.
    unsafe {
        generated::bpf_probe_read_user(dst.cast::<c_void>(), n as u32, src as *const c_void) == 0
    }
}

/// A header length as the event carries it: `GO_HEADER_UNREADABLE` when the bytes could not be
/// read, else the length (capped below that value).
#[inline(always)]
fn carried_len(len: u64, read: bool) -> u16 {
    if read {
        len.min(u64::from(GO_HEADER_UNREADABLE - 1)) as u16
    } else {
        GO_HEADER_UNREADABLE
    }
}

/// Send one headers event for the `[]hpack.HeaderField` at (`fields`, `count`).
#[inline(always)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "each block is built for one call and ends with it: taking it by value says so"
)]
fn send_headers(pid_tgid: u64, goid: u64, g: &GrpcOffsets, meta: HeaderBlock) -> Result<(), ()> {
    let mut entry = EVENTS
        .reserve::<GoHeadersEvent>(0)
        .ok_or_else(|| count_lost(LOST_RINGBUF_FULL))?;
    // SAFETY: `entry` is a successful ring buffer reservation of a GoHeadersEvent: non-null,
    // aligned, ours until submitted; the event is plain integers and byte arrays, valid for any
    // bytes, and `ev` is not used after the submit.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EVENT_GO_HEADERS;
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.stream_id = meta.stream_id;
    ev.goid = goid;
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.source = meta.source;
    ev.end_stream = meta.end_stream;
    ev.field_count = meta.count as u32;
    ev.conn = meta.conn;
    for i in 0..GO_HEADER_FIELDS {
        ev.name_len[i] = 0;
        ev.value_len[i] = 0;
        if (i as u64) >= meta.count {
            continue;
        }
        let field = meta.fields + (i as u64) * u64::from(g.field_size);
        let (Ok(name), Ok(name_len)) = (read_u64(field), read_u64(field + 8)) else {
            continue;
        };
        let value_at = field + u64::from(g.field_value);
        let (Ok(value), Ok(value_len)) = (read_u64(value_at), read_u64(value_at + 8)) else {
            continue;
        };
        let name_read = copy_user(ev.names[i].as_mut_ptr(), GO_HEADER_NAME_LEN, name, name_len);
        let value_read = copy_user(
            ev.values[i].as_mut_ptr(),
            GO_HEADER_VALUE_LEN,
            value,
            value_len,
        );
        ev.name_len[i] = carried_len(name_len, name_read);
        ev.value_len[i] = carried_len(value_len, value_read);
    }
    entry.submit(crate::maps::wake_flags());
    Ok(())
}

/// What `send_headers` needs besides the process: where the fields are and what they belong to.
struct HeaderBlock {
    source: u16,
    end_stream: u16,
    stream_id: u32,
    fields: u64,
    count: u64,
    conn: GoConn,
}

/// The fields and stream id of a `*http2.MetaHeadersFrame`.
#[inline(always)]
fn meta_frame(frame: u64, g: &GrpcOffsets) -> Result<(u64, u64, u32), ()> {
    let fields = read_u64(frame + u64::from(g.meta_fields))?;
    let count = read_u64(frame + u64::from(g.meta_fields) + 8)?;
    // MetaHeadersFrame embeds *HeadersFrame first; the stream id is in its FrameHeader.
    let headers_frame = read_u64(frame)?;
    let stream_id = read_u64(headers_frame + u64::from(g.frame_stream_id))? as u32;
    Ok((fields, count, stream_id))
}

/// `(*http2Server).operateHeaders(…, frame *http2.MetaHeadersFrame, …)` entry: a request's
/// headers arrived. The goroutine keeps this stream as the one it handles until its next
/// request's headers: `newproc1` at grpc-go's handler spawn sites (and only there) reads it, so
/// the handler goroutine started for these headers serves this stream. No probe at the RETs: a
/// single-step per request to clear an entry the next request overwrites anyway.
#[uprobe]
pub fn go_grpc_server_headers(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    let g = offsets.grpc;
    let Ok((fields, count, stream_id)) = meta_frame(arg(regs, g.server_frame_arg), &g) else {
        return 0;
    };
    let _ = HANDLING_STREAM.insert(&goroutine(pid_tgid, goid), &stream_id, 0);
    let conn = read_conn(regs.rax + u64::from(g.server_conn), &offsets);
    let block = HeaderBlock {
        source: GO_HEADERS_SERVER_RECEIVED,
        end_stream: 0,
        stream_id,
        fields,
        count,
        conn,
    };
    let _ = send_headers(pid_tgid, goid, &g, block);
    0
}

/// `(*http2Client).operateHeaders(frame *http2.MetaHeadersFrame)` entry: response headers or
/// trailers (with `grpc-status`) arrived.
#[uprobe]
pub fn go_grpc_client_headers(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    let g = offsets.grpc;
    let Ok((fields, count, stream_id)) = meta_frame(regs.rbx, &g) else {
        return 0;
    };
    let block = HeaderBlock {
        source: GO_HEADERS_CLIENT_RECEIVED,
        end_stream: 0,
        stream_id,
        fields,
        count,
        conn: read_conn(regs.rax + u64::from(g.client_conn), &offsets),
    };
    let _ = send_headers(pid_tgid, goid, &g, block);
    0
}

/// `(*loopyWriter).writeHeader(streamID uint32, endStream bool, hf []hpack.HeaderField, …)`
/// entry: RAX the writer, RBX the stream id, RCX endStream, RDI/RSI the fields.
#[uprobe]
pub fn go_grpc_write_header(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    let g = offsets.grpc;
    let block = HeaderBlock {
        source: GO_HEADERS_SENT,
        end_stream: (regs.rcx & 0xff) as u16,
        stream_id: regs.rbx as u32,
        fields: regs.rdi,
        count: regs.rsi,
        conn: read_conn(regs.rax + u64::from(g.loopy_conn), &offsets),
    };
    let _ = send_headers(pid_tgid, goid, &g, block);
    0
}

/// `(*http2Client).NewStream(ctx, callHdr, …)` entry: RAX is the transport; remember its
/// connection for the call on this goroutine.
#[uprobe]
pub fn go_grpc_new_stream(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    observe_ancestry(pid_tgid, &offsets, regs.r14, goid);
    let call = CallCtx {
        stream: 0,
        conn: read_conn(regs.rax + u64::from(offsets.grpc.client_conn), &offsets),
    };
    let _ = CALLS.insert(&goroutine(pid_tgid, goid), &call, 0);
    0
}

/// `(*http2Client).NewStream` at each RET: RAX is the new stream (nil on an error). Its id was
/// assigned inside NewStream, on this goroutine (grpc-go's `checkForStreamQuota`), so the stream
/// is reported now: streaming calls never pass through `Invoke`.
#[uprobe]
pub fn go_grpc_new_stream_return(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    let key = goroutine(pid_tgid, goid);
    let Some(call) = CALLS.get_ptr_mut(&key) else {
        return 0;
    };
    // SAFETY: `call` comes from a successful map lookup (non-null, valid for the program's run);
    // the entry is keyed by this goroutine, whose calls run one at a time, so nothing else writes
    // it now.
    unsafe { (*call).stream = regs.rax };
    if regs.rax == 0 {
        return 0;
    }
    // SAFETY: as above: the same valid map value, read by copy.
    let conn = unsafe { (*call).conn };
    let Ok(mut entry) = reserve_call(pid_tgid, goid) else {
        return 0;
    };
    // SAFETY: the reservation `reserve_call` made (aligned, ours until submit; plain-data event);
    // `ev` is not used after the submit below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EVENT_GO_GRPC_STREAM_OPENED;
    ev.conn = conn;
    ev.stream_id = stream_id(regs.rax, &offsets.grpc);
    entry.submit(crate::maps::wake_flags());
    0
}

/// `(*ClientConn).Invoke(ctx, method string, …)` entry: RAX the ClientConn, RBX/RCX the
/// context, RDI/RSI the method.
#[uprobe]
pub fn go_grpc_invoke(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    observe_ancestry(pid_tgid, &offsets, regs.r14, goid);
    let _ = CALLS.remove(&goroutine(pid_tgid, goid));
    let Ok(mut entry) = reserve_call(pid_tgid, goid) else {
        return 0;
    };
    // SAFETY: the reservation `reserve_call` made (aligned, ours until submit; plain-data event);
    // `ev` is not used after the submit below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EVENT_GO_GRPC_CLIENT_START;
    let mut len = regs.rsi;
    if len > GO_GRPC_METHOD_LEN as u64 {
        len = GO_GRPC_METHOD_LEN as u64;
    }
    copy_user(ev.method.as_mut_ptr(), GO_GRPC_METHOD_LEN, regs.rdi, len);
    ev.method_len = len as u16;
    entry.submit(crate::maps::wake_flags());
    0
}

/// `(*ClientConn).Invoke` at each RET: the `error` result is in RAX (itab) and RBX (data).
#[uprobe]
pub fn go_grpc_invoke_return(ctx: ProbeContext) -> u32 {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let Some((pid_tgid, offsets, goid)) = current(regs) else {
        return 0;
    };
    let g = offsets.grpc;
    let key = goroutine(pid_tgid, goid);
    // SAFETY: a hash map lookup by key; the value is copied out at once, before the entry is
    // removed.
    let call = unsafe { CALLS.get(&key) }.copied();
    let _ = CALLS.remove(&key);
    let Ok(mut entry) = reserve_call(pid_tgid, goid) else {
        return 0;
    };
    // SAFETY: the reservation `reserve_call` made (aligned, ours until submit; plain-data event);
    // `ev` is not used after the submit below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EVENT_GO_GRPC_CLIENT_END;
    ev.status = status_code(regs.rax, regs.rbx, &g);
    if let Some(call) = call {
        ev.conn = call.conn;
        ev.stream_id = stream_id(call.stream, &g);
    }
    entry.submit(crate::maps::wake_flags());
    0
}

/// The gRPC code of an `error` interface value: 0 for nil; the code inside a `*status.Error`;
/// 2 (Unknown, as grpc-go's `status.Code` says) for any other error type; `GO_GRPC_STATUS_UNKNOWN`
/// for an error when the binary has no symbols to tell a `*status.Error` by its itab.
#[inline(always)]
fn status_code(itab: u64, data: u64, g: &GrpcOffsets) -> u32 {
    if itab == 0 {
        return 0;
    }
    if g.status_error_fn == 0 {
        return GO_GRPC_STATUS_UNKNOWN;
    }
    if !itab_is(itab, g.status_error_fn) || data == 0 {
        return 2;
    }
    let code = read_u64(data + u64::from(g.error_status))
        .and_then(|status| read_u64(status + u64::from(g.status_proto)))
        .and_then(|proto| read_u64(proto + u64::from(g.proto_code)));
    // Code is an int32; the upper half of the word is the next field.
    code.map_or(2, |c| c as u32)
}

/// The id of the stream `NewStream` returned, once the writer goroutine has assigned it.
#[inline(always)]
fn stream_id(stream: u64, g: &GrpcOffsets) -> u32 {
    if stream == 0 {
        return 0;
    }
    let base = if g.stream_via == u32::MAX {
        Ok(stream)
    } else {
        read_u64(stream + u64::from(g.stream_via))
    };
    base.and_then(|b| read_u64(b + u64::from(g.stream_id)))
        .map_or(0, |id| id as u32)
}

#[inline(always)]
fn reserve_call(
    pid_tgid: u64,
    goid: u64,
) -> Result<aya_ebpf::maps::ring_buf::RingBufEntry<GoGrpcCallEvent>, ()> {
    let mut entry = EVENTS
        .reserve::<GoGrpcCallEvent>(0)
        .ok_or_else(|| count_lost(LOST_RINGBUF_FULL))?;
    // SAFETY: `entry` is a successful ring buffer reservation of a GoGrpcCallEvent: non-null,
    // aligned, ours until submitted or discarded; the event is plain integers and byte arrays,
    // valid for any bytes, and the reference ends with this function.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.status = 0;
    ev.goid = goid;
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.stream_id = 0;
    ev.method_len = 0;
    ev.pad0 = 0;
    ev.conn = NO_CONN;
    Ok(entry)
}
