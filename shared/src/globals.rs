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

/// Byte offsets along the path fd → `struct sock` (task → files → fdtable → file → socket →
/// sock), and of the TCP sequence numbers, read from the running kernel's BTF. `tcp_sock`,
/// `inet_sock` and `sock` share their start, so the `tcp_*` offsets apply to a sock pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub socket_sk: u32,
    pub sock_protocol: u32,
    pub sock_type: u32,
    pub tcp_write_seq: u32,
    pub tcp_copied_seq: u32,
    /// `task_struct.thread.fsbase` (x86-64): the thread's TLS base, where Go keeps `g` at -8.
    pub task_fsbase: u32,
    /// `sock.sk_err`: why a connection closed or a connect failed (a positive errno).
    pub sock_err: u32,
}

impl FdOffsets {
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            task_files: 0,
            files_fdt: 0,
            fdtable_max_fds: 0,
            fdtable_fd: 0,
            file_private_data: 0,
            file_f_inode: 0,
            inode_i_mode: 0,
            socket_sk: 0,
            sock_protocol: 0,
            sock_type: 0,
            tcp_write_seq: 0,
            tcp_copied_seq: 0,
            task_fsbase: 0,
            sock_err: 0,
        }
    }
}

/// Byte offsets along task → `mm_struct` (the argument and environment blocks' bounds) and
/// `mm->exe_file` → its dentry's name, read from the running kernel's BTF. The process-start
/// probe reads what `/proc/<pid>/cmdline`, `environ` and `exe` would show, while the process
/// is certainly alive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcOffsets {
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub mm_exe_file: u32,
    /// `file.f_path.dentry` (`f_path` is a `struct path` embedded in the file).
    pub file_path_dentry: u32,
    /// `dentry.d_name.name` (`d_name` is a `struct qstr` embedded in the dentry).
    pub dentry_name: u32,
}

impl ProcOffsets {
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            task_mm: 0,
            mm_arg_start: 0,
            mm_arg_end: 0,
            mm_env_start: 0,
            mm_env_end: 0,
            mm_exe_file: 0,
            file_path_dentry: 0,
            dentry_name: 0,
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
    /// The source port (host order) as the tracepoint recorded it: at SYN_SENT → CLOSE the
    /// sock's own port number is already released (0), the recorded one is not.
    pub sport: u32,
}

impl SetStateFormat {
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            skaddr: 0,
            oldstate: 0,
            newstate: 0,
            protocol: 0,
            sport: 0,
        }
    }
}

/// Run-time settings: the agent's own tgid (never captured: no feedback loop), how many payload
/// bytes to capture, which filters are on (`FILTER_*` bits; the values are in the
/// `FILTER_PIDS`, `FILTER_PORTS` and `FILTER_CGROUPS` maps), and until when (monotonic ns, the
/// clock of `bpf_ktime_get_ns`) a read's exit without a seen entry is taken as a read that was
/// already blocked when the probes attached (0: never).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub agent_tgid: u32,
    pub capture_bytes: u32,
    pub filters: u32,
    pub pad0: u32,
    pub unentered_reads_until_ns: u64,
}

/// How long after start the exits of reads that began before the probes are taken (see
/// [`Settings::unentered_reads_until_ns`]): longer than the idle timeouts of common client pools
/// (Go's 90 s, nginx's 75 s), so a pooled connection's next request comes within it.
pub const UNENTERED_READS_WINDOW_NS: u64 = 120_000_000_000;

impl Settings {
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            agent_tgid: 0,
            capture_bytes: 0,
            filters: 0,
            pad0: 0,
            unentered_reads_until_ns: 0,
        }
    }
}

pub const FILTER_PID: u32 = 1;
pub const FILTER_PORT: u32 = 2;
pub const FILTER_CGROUP: u32 = 4;

/// TCP states used by the connection hooks (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_CLOSE: i32 = 7;
pub const IPPROTO_TCP: u16 = 6;
pub const SOCK_STREAM: u16 = 1;
/// `S_IFMT` and `S_IFSOCK` of `inode.i_mode`.
pub const S_IFMT: u16 = 0o170_000;
pub const S_IFSOCK: u16 = 0o140_000;

/// Names of the globals in the eBPF object.
pub const GLOBAL_SOCK_OFFSETS: &str = "SOCK_OFFSETS";
pub const GLOBAL_FD_OFFSETS: &str = "FD_OFFSETS";
pub const GLOBAL_PROC_OFFSETS: &str = "PROC_OFFSETS";
pub const GLOBAL_SET_STATE_FORMAT: &str = "SET_STATE_FORMAT";
pub const GLOBAL_SETTINGS: &str = "SETTINGS";

#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] u32 fields; any bit pattern is valid.
unsafe impl aya::Pod for SockCommonOffsets {}
#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] u32 fields; any bit pattern is valid.
unsafe impl aya::Pod for FdOffsets {}
#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] u32 fields; any bit pattern is valid.
unsafe impl aya::Pod for ProcOffsets {}
#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] u32 fields; any bit pattern is valid.
unsafe impl aya::Pod for SetStateFormat {}
#[cfg(feature = "user")]
// SAFETY: plain #[repr(C)] u32 fields; any bit pattern is valid.
unsafe impl aya::Pod for Settings {}

/// Layout of `syscalls:sys_enter_*` / `sys_exit_*` records: after the 8-byte common header and
/// the syscall number, arguments are 8-byte slots from offset 16; an exit's return value is at
/// 16. Stable across kernels; the tests check it against this kernel's tracefs formats.
pub const SYSCALL_ARG_OFFSET: usize = 16;
pub const SYSCALL_RET_OFFSET: usize = 16;
