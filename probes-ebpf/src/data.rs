//! Socket data hooks: the read/write family of syscalls on TCP sockets (tracepoint mode only:
//! `syscalls:sys_enter_*` / `sys_exit_*`, a stable ABI on every kernel).
//!
//! Entry resolves the fd to its TCP sock (anything else is dropped here, cheaply), notes the TCP
//! sequence number of the first byte, the five-tuple and the buffer, and keeps them per thread in `ACTIVE_IO`.
//! Exit, knowing how many bytes moved, copies the first `capture_bytes` of them (across iovec
//! segments) after a fixed header and sends both in one ring-buffer record. Reads are captured at
//! exit, when the buffer holds the data; EAGAIN and other errors send nothing. HTTP/2
//! connections also get frame windows beyond the captured bytes (see `frames`).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user, generated,
    },
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use wirespan_shared::{
    DATA_FLAG_GOID_KNOWN, DATA_FLAG_TLS_PLAINTEXT, DIR_EGRESS, DIR_INGRESS, DataHeader, EVENT_DATA,
    LOST_IO_TABLE_FULL, LOST_PAYLOAD_READ_FAILED, LOST_READ_FAILED, LOST_RINGBUF_FULL, MAX_CAPTURE,
    SYSCALL_ARG_OFFSET, SYSCALL_RET_OFFSET,
};

use crate::{
    frames::{self, Io},
    golang::{GO_PROCS, g_slot},
    maps::{
        CONNS, ConnInfo, EVENTS, count_lost, next_conn_id, ports_pass, process_passes,
        scratch_event, settings, wake_flags,
    },
    sock::{Tuple, read_tuple, tcp_seq, tcp_sock_of_fd},
    tls,
};

/// How a syscall passes its buffer: one buffer, an iovec array, or a `struct user_msghdr`.
const SHAPE_BUF: u8 = 0;
const SHAPE_IOV: u8 = 1;
const SHAPE_MSG: u8 = 2;
/// iovec segments copied at most (the rest still count in `bytes`).
const MAX_IOVECS: u64 = 32;
/// `struct user_msghdr` (user ABI): msg_iov at 16, msg_iovlen at 24.
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;

/// What a syscall's entry noted for its exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoArgs {
    /// The five-tuple read at entry, for the exit (it cannot change during the syscall).
    tuple: Tuple,
    sk: u64,
    buf: u64,
    count: u64,
    ts_enter_ns: u64,
    fd: i32,
    seq: u32,
    direction: u16,
    shape: u8,
    pad0: [u8; 5],
}

/// Thread (pid_tgid) → the socket syscall it is in. LRU: a thread that dies inside a syscall
/// never reaches its exit, and must not leak an entry.
#[map]
static ACTIVE_IO: LruHashMap<u64, IoArgs> = LruHashMap::with_max_entries(65_536, 0);

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_BUF, DIR_INGRESS)
}

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_BUF, DIR_EGRESS)
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_IOV, DIR_INGRESS)
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_IOV, DIR_EGRESS)
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_MSG, DIR_INGRESS)
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_MSG, DIR_EGRESS)
}

#[tracepoint]
pub fn sys_exit_data(ctx: TracePointContext) -> u32 {
    match try_exit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> Result<u64, ()> {
    // SAFETY: syscall tracepoint records hold the arguments as 8-byte slots from SYSCALL_ARG_OFFSET
    // (n < 6 at every call); read_at copies with bpf_probe_read, which fails instead of faulting,
    // and the error is returned.
    unsafe { ctx.read_at::<u64>(SYSCALL_ARG_OFFSET + 8 * n) }.map_err(|_| ())
}

#[inline(always)]
fn enter(ctx: &TracePointContext, shape: u8, direction: u16) -> u32 {
    match try_enter(ctx, shape, direction) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_enter(ctx: &TracePointContext, shape: u8, direction: u16) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !process_passes((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    // Syscall args are `unsigned long` slots; the fd is the low 32 bits, signed.
    let fd = i64::from(arg(ctx, 0)? as i32);
    let sk = match tcp_sock_of_fd(fd) {
        Ok(0) => return Ok(()),
        Ok(sk) => sk,
        Err(_) => {
            count_lost(LOST_READ_FAILED);
            return Err(());
        }
    };
    let tuple = read_tuple(sk).map_err(|_| count_lost(LOST_READ_FAILED))?;
    if !ports_pass(tuple.sport, tuple.dport) {
        return Ok(());
    }
    let seq = tcp_seq(sk, direction == DIR_EGRESS);
    if tls::note_socket(pid_tgid, sk, fd as i32, &tuple, seq, direction) {
        // Inside a TLS library call: its plaintext is sent when the call returns, the encrypted
        // bytes themselves are not.
        return Ok(());
    }
    if carries_tls_plaintext(sk) {
        // Encrypted bytes of a connection whose plaintext is read (Go's crypto/tls reads and
        // writes the socket itself): nothing to decode in them.
        return Ok(());
    }
    let (buf, count) = match shape {
        SHAPE_MSG => {
            let msg = arg(ctx, 1)?;
            let iov: u64 =
                // SAFETY: bpf_probe_read_user copies a u64 from the user's `struct user_msghdr`; a
                // bad or unmapped address is an error, never a fault, and the error is returned.
                unsafe { bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64) }.map_err(|_| ())?;
            // SAFETY: as above: msg_iovlen of the same user header, read by the helper.
            let iovlen: u64 = unsafe { bpf_probe_read_user((msg + MSGHDR_IOVLEN) as *const u64) }
                .map_err(|_| ())?;
            (iov, iovlen)
        }
        _ => (arg(ctx, 1)?, arg(ctx, 2)?),
    };
    let args = IoArgs {
        tuple,
        sk,
        buf,
        count,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        fd: fd as i32,
        seq,
        direction,
        shape,
        pad0: [0; 5],
    };
    if ACTIVE_IO.insert(&pid_tgid, &args, 0).is_err() {
        count_lost(LOST_IO_TABLE_FULL);
    }
    Ok(())
}

fn try_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a hash map lookup by key; the value is copied out at once, before the entry is
    // removed.
    let args = match unsafe { ACTIVE_IO.get(&pid_tgid) } {
        Some(args) => {
            let args = *args;
            let _ = ACTIVE_IO.remove(&pid_tgid);
            args
        }
        // One `send` for both paths: two inlined copies of it exceed the verifier's budget.
        None => match unentered_read(ctx, pid_tgid)? {
            Some(args) => args,
            None => return Ok(()),
        },
    };
    // SAFETY: the syscall exit record has its return value at SYSCALL_RET_OFFSET; read_at copies it
    // with bpf_probe_read, which fails instead of faulting, and the error is returned.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET_OFFSET) }.map_err(|_| ())?;
    if ret <= 0 {
        // EAGAIN on a non-blocking socket, another error, or end of stream: no bytes moved.
        return Ok(());
    }
    send(
        pid_tgid,
        &Moved {
            tuple: args.tuple,
            sk: args.sk,
            fd: args.fd,
            seq: args.seq,
            direction: args.direction,
            ts_enter_ns: args.ts_enter_ns,
            bytes: ret as u64,
            buf: args.buf,
            iovcnt: if args.shape == SHAPE_BUF {
                0
            } else {
                args.count
            },
            tls: false,
        },
    )
}

/// x86_64 numbers of the reads whose exit may come without a seen entry.
const NR_READ: i32 = 0;
const NR_READV: i32 = 19;
const NR_RECVFROM: i32 = 45;
const NR_RECVMSG: i32 = 47;
/// Where a syscall exit record keeps the syscall's number (after the 8-byte common header).
const SYSCALL_NR_OFFSET: usize = 8;
/// `struct pt_regs` (x86_64): the user registers saved at syscall entry, which hold its first
/// three arguments (rdi, rsi, rdx) unchanged for these reads.
const PT_REGS_DX: u64 = 96;
const PT_REGS_SI: u64 = 104;
const PT_REGS_DI: u64 = 112;

/// A read whose entry the probes never saw: it was already blocked when they attached (a
/// thread-per-connection server waiting on a kept-alive connection; the client's next request
/// wakes it). Its arguments are still in the user registers the kernel saved at entry, and the
/// socket's read sequence is now just past the bytes it returned. Taken only in the window after
/// start that `Settings::unentered_reads_until_ns` gives: later, every such exit is a read the
/// entry chose to skip (a file, a pipe, a filtered socket), and looking again would be waste.
/// What the entry would have noted, or None when the bytes are not to be sent.
fn unentered_read(ctx: &TracePointContext, pid_tgid: u64) -> Result<Option<IoArgs>, ()> {
    let until = settings().unentered_reads_until_ns;
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    if until == 0 || unsafe { bpf_ktime_get_ns() } > until {
        return Ok(None);
    }
    // SAFETY: the exit record's syscall number and return value, read with bpf_probe_read
    // (which fails instead of faulting; the error is returned).
    let nr: i32 = unsafe { ctx.read_at(SYSCALL_NR_OFFSET) }.map_err(|_| ())?;
    let shape = match nr {
        NR_READ | NR_RECVFROM => SHAPE_BUF,
        NR_READV => SHAPE_IOV,
        NR_RECVMSG => SHAPE_MSG,
        _ => return Ok(None),
    };
    // SAFETY: as above.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET_OFFSET) }.map_err(|_| ())?;
    if ret <= 0 || !process_passes((pid_tgid >> 32) as u32) {
        return Ok(None);
    }
    // SAFETY: both helpers take no user input: the current task, then its saved user registers
    // (a kernel address, read below with bpf_probe_read_kernel, which fails instead of faulting).
    let regs = unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) };
    let reg = |offset: u64| -> Result<u64, ()> {
        // SAFETY: a u64 inside the task's pt_regs, copied by the helper.
        unsafe { bpf_probe_read_kernel((regs as u64 + offset) as *const u64) }.map_err(|_| ())
    };
    if regs == 0 {
        return Err(());
    }
    let fd = i64::from(reg(PT_REGS_DI)? as i32);
    let sk = match tcp_sock_of_fd(fd) {
        Ok(0) => return Ok(None),
        Ok(sk) => sk,
        Err(_) => {
            count_lost(LOST_READ_FAILED);
            return Err(());
        }
    };
    let tuple = read_tuple(sk).map_err(|_| count_lost(LOST_READ_FAILED))?;
    if !ports_pass(tuple.sport, tuple.dport) || carries_tls_plaintext(sk) {
        return Ok(None);
    }
    let (buf, count) = match shape {
        SHAPE_MSG => {
            let msg = reg(PT_REGS_SI)?;
            // SAFETY: msg_iov and msg_iovlen of the user's `struct user_msghdr`, read by the
            // helper (an error, never a fault, on a bad address).
            let iov: u64 =
                unsafe { bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64) }.map_err(|_| ())?;
            // SAFETY: as above.
            let iovlen: u64 = unsafe { bpf_probe_read_user((msg + MSGHDR_IOVLEN) as *const u64) }
                .map_err(|_| ())?;
            (iov, iovlen)
        }
        _ => (reg(PT_REGS_SI)?, reg(PT_REGS_DX)?),
    };
    if shape == SHAPE_BUF {
        // A TLS record (application data, version 3.x) is the ciphertext of a library read that
        // also began before the probes: its plaintext is not seen, and the bytes say nothing.
        // SAFETY: two bytes of the user's buffer, which the read just filled; read by the helper.
        let head: [u8; 2] =
            unsafe { bpf_probe_read_user(buf as *const [u8; 2]) }.map_err(|_| ())?;
        if head == [0x17, 0x03] {
            return Ok(None);
        }
    }
    Ok(Some(IoArgs {
        tuple,
        sk,
        buf,
        count,
        // SAFETY: bpf_ktime_get_ns only returns the monotonic clock. When the read began is
        // unknown: its return stands in.
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        fd: fd as i32,
        seq: seq_before(tcp_seq(sk, false), ret as u32),
        direction: DIR_INGRESS,
        shape,
        pad0: [0; 5],
    }))
}

/// The sequence number of the first of the `bytes` a finished read returned: the socket's next
/// byte to read is just past them. 0 stays 0 ("unknown").
#[inline(always)]
fn seq_before(next: u32, bytes: u32) -> u32 {
    if next == 0 {
        0
    } else {
        next.wrapping_sub(bytes)
    }
}

/// Bytes that moved on a TCP socket: by a syscall (ciphertext or plain), or by a TLS library
/// call (plaintext, `tls`).
pub struct Moved {
    pub tuple: Tuple,
    pub sk: u64,
    pub fd: i32,
    /// TCP sequence number of the first byte; for TLS plaintext, of the first encrypted byte the
    /// call moved (0 when it moved none: the library had the bytes buffered).
    pub seq: u32,
    pub direction: u16,
    pub ts_enter_ns: u64,
    pub bytes: u64,
    /// One buffer (`iovcnt` 0) or an iovec array of `iovcnt` segments.
    pub buf: u64,
    pub iovcnt: u64,
    pub tls: bool,
}

/// Build the data event for `moved` in this CPU's scratch slot and send it: the header, the
/// first `capture_bytes` of the bytes, and (for syscall data) HTTP/2 frame windows.
#[inline(always)]
pub fn send(pid_tgid: u64, moved: &Moved) -> Result<(), ()> {
    let ev = scratch_event().ok_or(())?;
    // SAFETY: `ev` is this CPU's SCRATCH slot from a successful map lookup: non-null, aligned and
    // valid for the whole run of the program, and no other program uses it meanwhile (see
    // `scratch_event`).
    let ev = unsafe { &mut *ev };
    let tuple = moved.tuple;
    let pid = (pid_tgid >> 32) as u32;
    let comm = bpf_get_current_comm().unwrap_or_default();
    let conn_id = conn_id_of(moved.sk, pid, pid_tgid as u32, comm, &tuple);
    if moved.tls {
        mark_tls_plaintext(moved.sk);
    }

    let h = &mut ev.header;
    h.kind = EVENT_DATA;
    h.direction = moved.direction;
    h.family = tuple.family;
    h.pid = pid;
    h.tid = pid_tgid as u32;
    h.fd = moved.fd;
    h.sport = tuple.sport;
    h.dport = tuple.dport;
    h.seq = moved.seq;
    h.conn_id = conn_id;
    h.bytes = moved.bytes;
    h.ts_enter_ns = moved.ts_enter_ns;
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    h.ts_exit_ns = unsafe { bpf_ktime_get_ns() };
    (h.goid, h.flags) = match current_goid(pid) {
        Some(goid) => (goid, DATA_FLAG_GOID_KNOWN),
        None => (0, 0),
    };
    if moved.tls {
        h.flags |= DATA_FLAG_TLS_PLAINTEXT;
    }
    h.window_bytes = 0;
    h.saddr = tuple.saddr;
    h.daddr = tuple.daddr;
    h.comm = comm;

    let mut want = moved.bytes;
    let limit = u64::from(settings().capture_bytes);
    if want > limit {
        want = limit;
    }
    let payload = ev.payload.as_mut_ptr();
    let captured = if moved.iovcnt == 0 {
        copy_user(payload, 0, moved.buf, want)
    } else {
        copy_iovecs(payload, moved.buf, moved.iovcnt, want)
    };
    #[expect(
        clippy::single_match_else,
        reason = "both outcomes of the copy side by side: the failure is counted"
    )]
    let captured = match captured {
        Ok(n) => n,
        Err(()) => {
            count_lost(LOST_PAYLOAD_READ_FAILED);
            0
        }
    };
    ev.header.captured = captured as u32;
    // Frame windows follow a connection's bytes in TCP sequence space; TLS plaintext, whose
    // sequence numbers count encrypted bytes, in plaintext positions of its own.
    let windows = if moved.tls {
        let vsk = frames::tls_sock(moved.sk);
        let position = frames::plaintext_position(vsk, moved.direction);
        let io = Io {
            sk: vsk,
            direction: moved.direction,
            seq: position,
            ret: moved.bytes,
            buf: moved.buf,
            iovcnt: moved.iovcnt,
            tls: true,
        };
        let windows = frames::follow(ev, &io);
        frames::set_plaintext_position(
            vsk,
            moved.direction,
            position.wrapping_add(moved.bytes as u32),
        );
        windows
    } else {
        let io = Io {
            sk: moved.sk,
            direction: moved.direction,
            seq: moved.seq,
            ret: moved.bytes,
            buf: moved.buf,
            iovcnt: moved.iovcnt,
            tls: false,
        };
        frames::follow(ev, &io)
    };
    ev.header.window_bytes = windows;
    // Decided before the record is built: the helper calls would spill its bounded size.
    let flags = wake_flags();
    // The mask changes nothing (captured + windows < 2×MAX_CAPTURE) but shows the verifier
    // the bound.
    let size = size_of::<DataHeader>()
        + ((ev.header.captured as usize + windows as usize) & (2 * MAX_CAPTURE - 1));
    // SAFETY: `size` is at most the header plus 2*MAX_CAPTURE - 1 bytes (the mask), inside the
    // DataEvent that `ev` points to, and the slice is only read, while `ev` is not written.
    let record = unsafe { core::slice::from_raw_parts(core::ptr::from_ref(ev).cast::<u8>(), size) };
    if EVENTS.output(record, flags).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
    Ok(())
}

/// The goroutine making the current syscall, in a Go process whose layout user space provided
/// (`GO_PROCS`): Go keeps the running `g` in a TLS slot (where depends on how the binary was
/// linked: `GoOffsets.g_tls`, unknown = no id), and `g.goid` at the binary's offset.
#[inline(always)]
fn current_goid(tgid: u32) -> Option<u64> {
    // SAFETY: a hash map lookup by key; only a plain field of the value is read, by copy.
    let offsets = unsafe { GO_PROCS.get(&tgid) }?;
    let slot = g_slot(offsets.g_tls)?;
    // SAFETY: bpf_probe_read_user reads the current goroutine pointer from the thread's TLS; a bad
    // address is an error (None), never a fault.
    let g: u64 = unsafe { bpf_probe_read_user(slot as *const u64) }.ok()?;
    if g == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user reads g.goid at the binary's offset; a bad address is an error
    // (None), never a fault.
    unsafe { bpf_probe_read_user((g + u64::from(offsets.g_goid)) as *const u64) }
        .ok()
        .filter(|goid| *goid != 0)
}

/// Whether TLS plaintext was sent for the connection of `sk`.
#[inline(always)]
fn carries_tls_plaintext(sk: u64) -> bool {
    // SAFETY: a hash map lookup by key; only a plain field of the value is read, by copy.
    unsafe { CONNS.get(&sk) }.is_some_and(|info| info.tls_plaintext != 0)
}

/// Note that TLS plaintext is sent for the connection of `sk` (registered by `conn_id_of`).
#[inline(always)]
fn mark_tls_plaintext(sk: u64) {
    if let Some(info) = CONNS.get_ptr_mut(&sk) {
        // SAFETY: a pointer into this sock's live map value from a successful lookup; a racing
        // writer can only store 1 too, or replace the entry for a new connection (which then
        // starts unmarked again at its first plaintext).
        unsafe { (*info).tls_plaintext = 1 };
    }
}

/// The connection id of a sock, handing out a new one for a connection older than the agent
/// (its first byte is where wirespan starts to follow it).
#[inline(always)]
fn conn_id_of(sk: u64, pid: u32, tid: u32, comm: [u8; 16], tuple: &Tuple) -> u64 {
    // SAFETY: a hash map lookup by key; only the id is copied out of the value.
    if let Some(info) = unsafe { CONNS.get(&sk) } {
        return info.conn_id;
    }
    let info = ConnInfo {
        conn_id: next_conn_id(),
        pid,
        tid,
        comm,
        tuple: *tuple,
        tls_plaintext: 0,
        pad0: 0,
    };
    // BPF_NOEXIST: if another CPU registered it meanwhile, use that id.
    if CONNS.insert(&sk, &info, 1).is_err()
        // SAFETY: a hash map lookup by key; only the id is copied out of the value.
        && let Some(existing) = unsafe { CONNS.get(&sk) }
    {
        return existing.conn_id;
    }
    info.conn_id
}

/// Copy `len` bytes of user memory into the payload at `off`; returns how many were copied.
/// `off < MAX_CAPTURE` and `len <= MAX_CAPTURE` keep the write inside the 2×MAX_CAPTURE payload.
#[inline(always)]
fn copy_user(payload: *mut u8, off: u64, src: u64, len: u64) -> Result<u64, ()> {
    if off >= MAX_CAPTURE as u64 || len == 0 {
        return Ok(0);
    }
    let mut n = len;
    if n > MAX_CAPTURE as u64 {
        n = MAX_CAPTURE as u64;
    }
    // SAFETY: the destination range is inside the payload: `off < MAX_CAPTURE` and `n <=
    // MAX_CAPTURE`, and the payload holds 2*MAX_CAPTURE bytes; bpf_probe_read_user fails (rc < 0,
    // returned as Err) rather than faulting on a bad source.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            payload.add(off as usize).cast::<c_void>(),
            n as u32,
            src as *const c_void,
        )
    };
    if rc < 0 { Err(()) } else { Ok(n) }
}

/// Copy up to `want` bytes spread over an iovec array (at most `MAX_IOVECS` segments).
#[inline(always)]
fn copy_iovecs(payload: *mut u8, iov: u64, iovcnt: u64, want: u64) -> Result<u64, ()> {
    let mut off = 0u64;
    for i in 0..MAX_IOVECS {
        if i >= iovcnt || off >= want {
            break;
        }
        let segment: [u64; 2] =
            // SAFETY: bpf_probe_read_user copies one user iovec (base, len); a bad address is an
            // error, returned, never a fault.
            unsafe { bpf_probe_read_user((iov + i * 16) as *const [u64; 2]) }.map_err(|_| ())?;
        let mut take = segment[1];
        if take > want - off {
            take = want - off;
        }
        off += copy_user(payload, off, segment[0], take)?;
    }
    Ok(off)
}
