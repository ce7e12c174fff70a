//! TLS library hooks: OpenSSL's `SSL_read`, `SSL_write` and their `_ex` forms (libssl 3, a C
//! library: uprobes at entry, uretprobes at return).
//!
//! Entry notes the call (its `SSL*`, buffer and length) per thread in `TLS_CALLS`. The socket
//! syscalls the library makes inside the call (`data::try_enter`) fill in the socket, and the TCP
//! sequence number of the first encrypted byte the call moved; their encrypted bytes are not
//! sent. The return sends the plaintext as a data event of that socket, flagged
//! `DATA_FLAG_TLS_PLAINTEXT`, so user space decodes it as it decodes plain syscall data, and the
//! join on sequence numbers pairs it with the other end's records.
//!
//! A call that moved no encrypted bytes (the library had a whole record buffered) takes the
//! socket its `SSL*` used last (`TLS_SOCKETS`), with sequence number 0 (unknown).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use wirespan_shared::{DIR_EGRESS, DIR_INGRESS, LOST_IO_TABLE_FULL};

use crate::{
    data::{Moved, send},
    maps::{count_lost, process_passes},
    sock::Tuple,
};

/// The socket a TLS call (or an `SSL*`) moves its encrypted bytes on.
#[repr(C)]
#[derive(Clone, Copy)]
struct TlsSocket {
    tuple: Tuple,
    sk: u64,
    fd: i32,
    pad0: u32,
}

/// A TLS library call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct TlsCall {
    socket: TlsSocket,
    ssl: u64,
    buf: u64,
    /// `SSL_read_ex`/`SSL_write_ex`: where the library writes the byte count (0 for the plain
    /// forms, which return it).
    count_out: u64,
    ts_enter_ns: u64,
    /// Sequence number of the first encrypted byte moved in the call's direction.
    seq: u32,
    direction: u16,
    /// Whether a nested syscall named the socket (and `seq`).
    has_socket: u8,
    pad0: u8,
}

/// Thread (pid_tgid) → the TLS call it is in. LRU: a thread that dies inside a call never
/// returns from it, and must not leak an entry.
#[map]
static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(65_536, 0);

/// An `SSL*` of a process (pointers are per address space).
#[repr(C)]
#[derive(Clone, Copy)]
struct SslKey {
    tgid: u32,
    pad0: u32,
    ssl: u64,
}

/// `SSL*` → the socket its last call moved bytes on (pointers are reused after `SSL_free`, and
/// the next call's syscalls correct the entry).
#[map]
static TLS_SOCKETS: LruHashMap<SslKey, TlsSocket> = LruHashMap::with_max_entries(65_536, 0);

/// `SSL_read(ssl, buf, num)` entry.
#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, false)
}

/// `SSL_read_ex(ssl, buf, num, readbytes)` entry.
#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, true)
}

/// `SSL_write(ssl, buf, num)` entry.
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, false)
}

/// `SSL_write_ex(ssl, buf, num, written)` entry.
#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, true)
}

/// The return of any of the four: send the plaintext the call moved.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    match try_return(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u16, ex: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !process_passes((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs: &pt_regs = unsafe { &*ctx.regs };
    let call = TlsCall {
        socket: TlsSocket {
            tuple: Tuple {
                family: 0,
                sport: 0,
                dport: 0,
                pad0: 0,
                saddr: [0; 16],
                daddr: [0; 16],
            },
            sk: 0,
            fd: -1,
            pad0: 0,
        },
        // System V AMD64: ssl, buf, num, and (the _ex forms) the count's address.
        ssl: regs.rdi,
        buf: regs.rsi,
        count_out: if ex { regs.rcx } else { 0 },
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        seq: 0,
        direction,
        has_socket: 0,
        pad0: 0,
    };
    if TLS_CALLS.insert(&pid_tgid, &call, 0).is_err() {
        count_lost(LOST_IO_TABLE_FULL);
    }
    0
}

/// Called by the data hooks at each socket syscall's entry: when the thread is inside a TLS call,
/// the call learns its socket (and the first sequence number in its direction), and the syscall's
/// encrypted bytes are not to be sent (true).
#[inline(always)]
pub fn note_socket(
    pid_tgid: u64,
    sk: u64,
    fd: i32,
    tuple: &Tuple,
    seq: u32,
    direction: u16,
) -> bool {
    let Some(call) = TLS_CALLS.get_ptr_mut(&pid_tgid) else {
        return false;
    };
    // SAFETY: a pointer into the map's value for this thread, from a successful lookup; only this
    // thread touches its entry, and the program runs to completion before the thread goes on.
    let call = unsafe { &mut *call };
    if call.has_socket == 0 {
        call.socket = TlsSocket {
            tuple: *tuple,
            sk,
            fd,
            pad0: 0,
        };
        call.has_socket = 1;
    }
    // A read inside SSL_write (or the reverse) is the protocol's own traffic (alerts, session
    // tickets, key updates): only the call's direction names where its plaintext went.
    if direction == call.direction && call.seq == 0 && call.socket.sk == sk {
        call.seq = seq;
    }
    true
}

fn try_return(ctx: &RetProbeContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a hash map lookup by key; the value is copied out at once, before the entry is
    // removed.
    let call = match unsafe { TLS_CALLS.get(&pid_tgid) } {
        Some(call) => *call,
        None => return Ok(()),
    };
    let _ = TLS_CALLS.remove(&pid_tgid);
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uretprobe: non-null and valid for
    // the whole run of the program, and only read.
    let regs: &pt_regs = unsafe { &*ctx.regs };
    // Both forms return an int: the byte count (plain forms) or 1 for success (_ex forms).
    let ret = (regs.rax as u32).cast_signed();
    if ret <= 0 {
        return Ok(());
    }
    let bytes = if call.count_out == 0 {
        ret as u64
    } else {
        // SAFETY: bpf_probe_read_user reads the size_t the library just wrote; a bad address is
        // an error, returned, never a fault.
        unsafe { bpf_probe_read_user(call.count_out as *const u64) }.map_err(|_| ())?
    };
    if bytes == 0 {
        return Ok(());
    }
    let key = SslKey {
        tgid: (pid_tgid >> 32) as u32,
        pad0: 0,
        ssl: call.ssl,
    };
    let socket = if call.has_socket != 0 {
        let _ = TLS_SOCKETS.insert(&key, &call.socket, 0);
        call.socket
    } else {
        // SAFETY: a hash map lookup by key; the value is copied out at once.
        match unsafe { TLS_SOCKETS.get(&key) } {
            Some(socket) => *socket,
            // Not a TCP socket this agent follows (a filtered port, a Unix socket, memory BIOs).
            None => return Ok(()),
        }
    };
    send(
        pid_tgid,
        &Moved {
            tuple: socket.tuple,
            sk: socket.sk,
            fd: socket.fd,
            seq: call.seq,
            direction: call.direction,
            ts_enter_ns: call.ts_enter_ns,
            bytes,
            buf: call.buf,
            iovcnt: 0,
            tls: true,
        },
    )
}
