//! Reads of kernel structs at the offsets user space found in the kernel's BTF: a sock's
//! five-tuple and TCP sequence numbers, and the path from a file descriptor to its sock.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use wirespan_shared::{AF_INET, AF_INET6, IPPROTO_TCP, S_IFMT, S_IFSOCK, SOCK_STREAM};

use crate::maps::{fd_offsets, sock_offsets};

/// Family, addresses (network order) and ports (host order) of a connection, this end first.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Tuple {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub pad0: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[inline(always)]
unsafe fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copies from any kernel address into a local and fails (never
    // faults) on an unmapped one; the caller propagates the error. `T` is only ever an integer or
    // a byte array, valid for whatever bytes are read.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
}

/// The five-tuple of a `struct sock *`. Every read goes through bpf_probe_read_kernel, so a
/// stale pointer yields an error, never a fault.
#[inline(always)]
pub fn read_tuple(sk: u64) -> Result<Tuple, i32> {
    let off = sock_offsets();
    let mut t = Tuple {
        family: 0,
        sport: 0,
        dport: 0,
        pad0: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    // SAFETY: every read goes through `read` (bpf_probe_read_kernel), which fails on a stale or bad
    // `sk` instead of faulting; `?` returns that error. The slice copies are between local arrays
    // of the same length.
    unsafe {
        t.family = read(sk, off.skc_family)?;
        match t.family {
            AF_INET => {
                let s: [u8; 4] = read(sk, off.skc_rcv_saddr)?;
                let d: [u8; 4] = read(sk, off.skc_daddr)?;
                t.saddr[..4].copy_from_slice(&s);
                t.daddr[..4].copy_from_slice(&d);
            }
            AF_INET6 => {
                t.saddr = read(sk, off.skc_v6_rcv_saddr)?;
                t.daddr = read(sk, off.skc_v6_daddr)?;
            }
            _ => return Err(-1),
        }
        // skc_num is the local port in host order; skc_dport is in network order.
        t.sport = read(sk, off.skc_num)?;
        let dport: u16 = read(sk, off.skc_dport)?;
        t.dport = u16::from_be(dport);
    }
    Ok(t)
}

/// The TCP sequence number of the next byte to send (`write_seq`) or to read (`copied_seq`).
#[inline(always)]
pub fn tcp_seq(sk: u64, egress: bool) -> u32 {
    let off = fd_offsets();
    let field = if egress {
        off.tcp_write_seq
    } else {
        off.tcp_copied_seq
    };
    // SAFETY: `read` is bpf_probe_read_kernel: a bad `sk` or offset gives an error, which becomes
    // sequence 0 ("unknown").
    unsafe { read(sk, field) }.unwrap_or(0)
}

/// The TCP sock behind a file descriptor of the current task, or 0 when the fd is not an
/// IPv4/IPv6 TCP socket: task → files → fdtable → file → (socket inode?) → socket → sock.
#[inline(always)]
pub fn tcp_sock_of_fd(fd: i64) -> Result<u64, i32> {
    let off = fd_offsets();
    if fd < 0 {
        return Ok(0);
    }
    // SAFETY: bpf_get_current_task only returns the current task's address; every pointer walked
    // from it is read with bpf_probe_read_kernel (here and through `read`), which fails instead of
    // faulting on a stale or bad address, and `?` returns that error. The fd index is checked
    // against `max_fds` before the fd array is read.
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = read(task, off.task_files)?;
        let fdt: u64 = read(files, off.files_fdt)?;
        let max_fds: u32 = read(fdt, off.fdtable_max_fds)?;
        if fd as u64 >= u64::from(max_fds) {
            return Ok(0);
        }
        let fd_array: u64 = read(fdt, off.fdtable_fd)?;
        let file: u64 = bpf_probe_read_kernel((fd_array + (fd as u64) * 8) as *const u64)?;
        if file == 0 {
            return Ok(0);
        }
        let inode: u64 = read(file, off.file_f_inode)?;
        let mode: u16 = read(inode, off.inode_i_mode)?;
        if mode & S_IFMT != S_IFSOCK {
            return Ok(0);
        }
        let socket: u64 = read(file, off.file_private_data)?;
        let sk: u64 = read(socket, off.socket_sk)?;
        if sk == 0 {
            return Ok(0);
        }
        let protocol: u16 = read(sk, off.sock_protocol)?;
        let sock_type: u16 = read(sk, off.sock_type)?;
        let family: u16 = read(sk, sock_offsets().skc_family)?;
        if protocol != IPPROTO_TCP
            || sock_type != SOCK_STREAM
            || (family != AF_INET && family != AF_INET6)
        {
            return Ok(0);
        }
        Ok(sk)
    }
}

/// The socket's pending error (`sk_err`, a positive errno), 0 when none or unreadable: why a
/// connect failed or a connection was reset, read at the state change that ends it (the kernel
/// sets it just before; the program's next syscall consumes it).
#[inline(always)]
pub fn read_sock_err(sk: u64) -> u32 {
    // SAFETY: a read of the sock at the BTF offset of `sk_err` through bpf_probe_read_kernel,
    // which fails instead of faulting (then 0: no error known).
    let err: i32 = unsafe { read(sk, fd_offsets().sock_err) }.unwrap_or(0);
    err.max(0).cast_unsigned()
}

/// Whether a sock is TCP (`sk_protocol`): `inet_sock_set_state` also fires for MPTCP's
/// connection-level socket, whose subflows are the TCP connections to follow.
#[inline(always)]
pub fn is_tcp(sk: u64) -> bool {
    // SAFETY: a read of the sock at the BTF offset of `sk_protocol` through
    // bpf_probe_read_kernel, which fails instead of faulting (then: not TCP, skipped).
    let protocol: Result<u16, i32> = unsafe { read(sk, fd_offsets().sock_protocol) };
    protocol == Ok(IPPROTO_TCP)
}
