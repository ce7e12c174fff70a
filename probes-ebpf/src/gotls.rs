//! Go `crypto/tls` plaintext: `(*tls.Conn).Write` at its entry, `(*tls.Conn).Read` at its entry
//! and at each RET instruction (never a uretprobe: Go moves stacks).
//!
//! A `tls.Conn` holds its `net.Conn` first (offset 0 in every Go release with the register ABI),
//! so the socket, its five-tuple and the TCP sequence number come from the connection itself at
//! entry, on the calling goroutine:
//! - a write's plaintext is known at entry, and goes out as one record at the socket's
//!   `write_seq` then (the handshake is done before any application data);
//! - a read's first new byte is at the socket's `copied_seq` at entry, less the encrypted bytes
//!   crypto/tls read ahead and holds undecrypted (`rawInput`), and its plaintext is in the
//!   buffer at a RET, `n` in RAX.
//!
//! Both are sent as data events flagged `DATA_FLAG_TLS_PLAINTEXT`, like OpenSSL's (`tls`).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::bpf_ktime_get_ns,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use wirespan_shared::{DIR_EGRESS, DIR_INGRESS, LOST_IO_TABLE_FULL};

use crate::{
    data::{Moved, send},
    golang::{GoroutineKey, conn_socket, current, read_u64},
    maps::{count_lost, ports_pass},
    sock::{Tuple, read_tuple, tcp_seq},
};

/// A `(*tls.Conn).Read` in progress on a goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoTlsRead {
    tuple: Tuple,
    sk: u64,
    buf: u64,
    ts_enter_ns: u64,
    fd: i32,
    seq: u32,
}

#[map]
static GO_TLS_READS: LruHashMap<GoroutineKey, GoTlsRead> = LruHashMap::with_max_entries(65_536, 0);

/// The socket under the `*tls.Conn` in RAX, if it is a TCP socket this agent follows.
#[inline(always)]
fn socket_of(regs: &pt_regs, offsets: &wirespan_shared::GoOffsets) -> Option<(i32, u64, Tuple)> {
    let (fd, sk) = conn_socket(regs.rax, offsets)?;
    if sk == 0 {
        return None;
    }
    let tuple = read_tuple(sk).ok()?;
    if !ports_pass(tuple.sport, tuple.dport) {
        return None;
    }
    Some((fd, sk, tuple))
}

/// `(*tls.Conn).Write(b)` entry: RAX the conn, RBX/RCX the slice's pointer and length.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    match try_write(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_write(ctx: &ProbeContext) -> Result<(), ()> {
    // SAFETY: `ctx.regs` is the pt_regs the kernel passed to the uprobe: non-null and valid for the
    // whole run of the program, and only read.
    let regs = unsafe { &*ctx.regs };
    let (pid_tgid, offsets, _goid) = current(regs).ok_or(())?;
    if regs.rcx == 0 {
        return Ok(());
    }
    let (fd, sk, tuple) = socket_of(regs, &offsets).ok_or(())?;
    send(
        pid_tgid,
        &Moved {
            tuple,
            sk,
            fd,
            seq: tcp_seq(sk, true),
            direction: DIR_EGRESS,
            // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
            ts_enter_ns: unsafe { bpf_ktime_get_ns() },
            bytes: regs.rcx,
            buf: regs.rbx,
            iovcnt: 0,
            tls: true,
        },
    )
}

/// `(*tls.Conn).Read(b)` entry: note the buffer and the socket's read position.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    match try_read_enter(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_read_enter(ctx: &ProbeContext) -> Result<(), ()> {
    // SAFETY: as in `try_write`: the kernel's pt_regs, only read.
    let regs = unsafe { &*ctx.regs };
    let (pid_tgid, offsets, goid) = current(regs).ok_or(())?;
    let (fd, sk, tuple) = socket_of(regs, &offsets).ok_or(())?;
    let read = GoTlsRead {
        tuple,
        sk,
        buf: regs.rbx,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        fd,
        seq: read_position(regs.rax, sk, &offsets),
    };
    let key = GoroutineKey {
        tgid: (pid_tgid >> 32) as u32,
        pad0: 0,
        goid,
    };
    if GO_TLS_READS.insert(&key, &read, 0).is_err() {
        count_lost(LOST_IO_TABLE_FULL);
    }
    Ok(())
}

/// Where a `Read`'s first new encrypted byte is: the socket's read position, less what
/// crypto/tls read ahead into `rawInput` and has not decrypted yet (the handshake's last read
/// often takes the first request's record along).
#[inline(always)]
fn read_position(conn: u64, sk: u64, offsets: &wirespan_shared::GoOffsets) -> u32 {
    let copied = tcp_seq(sk, false);
    if offsets.tls_raw_input == 0 {
        return copied;
    }
    // bytes.Buffer: buf (pointer, len, cap), then off; unread = len - off.
    let raw = conn + u64::from(offsets.tls_raw_input);
    let (Ok(len), Ok(off)) = (read_u64(raw + 8), read_u64(raw + 24)) else {
        return copied;
    };
    if off > len || len - off > 1 << 24 {
        return copied;
    }
    copied.wrapping_sub((len - off) as u32)
}

/// `(*tls.Conn).Read` at a RET: `n` in RAX; send what was read.
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    match try_read_return(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_read_return(ctx: &ProbeContext) -> Result<(), ()> {
    // SAFETY: as in `try_write`: the kernel's pt_regs, only read.
    let regs = unsafe { &*ctx.regs };
    let (pid_tgid, _offsets, goid) = current(regs).ok_or(())?;
    let key = GoroutineKey {
        tgid: (pid_tgid >> 32) as u32,
        pad0: 0,
        goid,
    };
    // SAFETY: a hash map lookup by key; the value is copied out at once, before the entry is
    // removed.
    let read = match unsafe { GO_TLS_READS.get(&key) } {
        Some(read) => *read,
        None => return Ok(()),
    };
    let _ = GO_TLS_READS.remove(&key);
    let n = regs.rax.cast_signed();
    if n <= 0 {
        return Ok(());
    }
    send(
        pid_tgid,
        &Moved {
            tuple: read.tuple,
            sk: read.sk,
            fd: read.fd,
            seq: read.seq,
            direction: DIR_INGRESS,
            ts_enter_ns: read.ts_enter_ns,
            bytes: n as u64,
            buf: read.buf,
            iovcnt: 0,
            tls: true,
        },
    )
}
