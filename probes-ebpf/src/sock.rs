//! Reads of `struct sock_common` at the offsets user space found in the kernel's BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use wirespan_shared::{AF_INET, AF_INET6, ConnectEvent, SockCommonOffsets};

/// Fill the event's family, addresses and ports from a `struct sock *`.
///
/// # Safety
/// `sk` must be a kernel `struct sock` pointer; every read goes through bpf_probe_read_kernel,
/// so a stale pointer yields an error, never a fault.
#[inline(always)]
pub unsafe fn read_tuple(
    sk: *const u8,
    off: &SockCommonOffsets,
    ev: &mut ConnectEvent,
) -> Result<(), i32> {
    unsafe {
        let family: u16 = bpf_probe_read_kernel(sk.add(off.skc_family as usize).cast())?;
        match family {
            AF_INET => {
                let s: [u8; 4] = bpf_probe_read_kernel(sk.add(off.skc_rcv_saddr as usize).cast())?;
                let d: [u8; 4] = bpf_probe_read_kernel(sk.add(off.skc_daddr as usize).cast())?;
                ev.saddr[..4].copy_from_slice(&s);
                ev.daddr[..4].copy_from_slice(&d);
            }
            AF_INET6 => {
                ev.saddr = bpf_probe_read_kernel(sk.add(off.skc_v6_rcv_saddr as usize).cast())?;
                ev.daddr = bpf_probe_read_kernel(sk.add(off.skc_v6_daddr as usize).cast())?;
            }
            _ => return Err(-1),
        }
        ev.family = family;
        // skc_num is the local port in host order; skc_dport is in network order.
        ev.sport = bpf_probe_read_kernel(sk.add(off.skc_num as usize).cast())?;
        let dport: u16 = bpf_probe_read_kernel(sk.add(off.skc_dport as usize).cast())?;
        ev.dport = u16::from_be(dport);
    }
    Ok(())
}
