//! Events sent from the kernel to user space through the `EVENTS` ring buffer.

/// Tag of a [`ConnectEvent`].
pub const EVENT_CONNECT: u32 = 1;

/// Address families, as the kernel numbers them (`AF_INET`, `AF_INET6`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// Which attach mode produced an event; also the identity of a mode in the start-up report.
pub const MODE_KPROBE: u16 = 1;
pub const MODE_FENTRY: u16 = 2;
pub const MODE_TRACEPOINT: u16 = 3;

/// A TCP connect as seen on the connecting side, with the source port the kernel chose.
///
/// Addresses are in network byte order, IPv4 in the first 4 bytes of the 16; ports are in host
/// byte order. `ts_ns` is `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`) when the connect was issued.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    pub kind: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub mode: u16,
    pub pid: u32,
    pub tid: u32,
    pub pad0: u32,
    pub ts_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; COMM_LEN],
}

impl ConnectEvent {
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            kind: EVENT_CONNECT,
            family: 0,
            sport: 0,
            dport: 0,
            mode: 0,
            pid: 0,
            tid: 0,
            pad0: 0,
            ts_ns: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            comm: [0; COMM_LEN],
        }
    }
}

/// Why an event was lost in the kernel; index into the `LOST` per-CPU array.
pub const LOST_RINGBUF_FULL: u32 = 0;
/// A kernel read (`bpf_probe_read_kernel`) of a socket failed.
pub const LOST_READ_FAILED: u32 = 1;
/// Tracepoint mode saw a connect reach ESTABLISHED without having seen it start (it started
/// before the agent, or its entry was evicted from the bounded `PENDING_CONNECTS` table).
pub const LOST_START_UNSEEN: u32 = 2;
pub const LOST_CAUSES: u32 = 3;

/// Names of the loss causes, indexed like the `LOST_*` constants.
pub const LOST_CAUSE_NAMES: [&str; LOST_CAUSES as usize] = [
    "ring buffer full",
    "kernel read failed",
    "connect start not seen",
];

/// Value of the `PENDING_CONNECTS` map (tracepoint mode): who started a connect on a sock, kept
/// until the sock reaches ESTABLISHED, where the five-tuple is complete.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingConnect {
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub comm: [u8; COMM_LEN],
}

#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] data with explicit padding; any bit pattern is valid.
unsafe impl aya::Pod for PendingConnect {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_event_has_no_implicit_padding() {
        // 4 + 2*4 + 4*3 + 8 + 16*3 = 80; a different size means the compiler inserted padding.
        assert_eq!(core::mem::size_of::<ConnectEvent>(), 80);
        assert_eq!(core::mem::align_of::<ConnectEvent>(), 8);
    }
}
