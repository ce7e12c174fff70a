//! Load-time globals: values user space computes (from BTF and tracefs) and writes into the
//! object before load, so the verifier sees them as constants.

/// Byte offsets of `struct sock_common` fields, read from the running kernel's BTF.
/// `struct sock` starts with its `__sk_common`, so these are offsets into `struct sock` too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockCommonOffsets {
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub pad0: u32,
}

impl SockCommonOffsets {
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            skc_daddr: 0,
            skc_rcv_saddr: 0,
            skc_dport: 0,
            skc_num: 0,
            skc_family: 0,
            skc_v6_daddr: 0,
            skc_v6_rcv_saddr: 0,
            pad0: 0,
        }
    }
}

/// Byte offsets of the `sock:inet_sock_set_state` record fields, read from the tracepoint's
/// `format` file in tracefs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetStateFormat {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub protocol: u32,
}

impl SetStateFormat {
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            skaddr: 0,
            oldstate: 0,
            newstate: 0,
            protocol: 0,
        }
    }
}

/// TCP states used by the connect hooks (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_CLOSE: i32 = 7;
pub const IPPROTO_TCP: u16 = 6;

/// Names of the globals in the eBPF object.
pub const GLOBAL_SOCK_OFFSETS: &str = "SOCK_OFFSETS";
pub const GLOBAL_SET_STATE_FORMAT: &str = "SET_STATE_FORMAT";
pub const GLOBAL_AGENT_TGID: &str = "AGENT_TGID";

#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] u32 fields; any bit pattern is valid.
unsafe impl aya::Pod for SockCommonOffsets {}
#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] u32 fields; any bit pattern is valid.
unsafe impl aya::Pod for SetStateFormat {}
