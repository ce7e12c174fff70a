//! The benchmark's floor: programs that do nothing, for `cargo xtask bench` to attach where the
//! agent attaches (the socket syscalls' tracepoints, one Go function per request), so that what
//! the kernel charges just for running a BPF program at those points can be told apart from
//! what wirespan's programs do there. Only the `wirespan-floor` helper loads them; the agent
//! never does.

use aya_ebpf::{
    macros::{tracepoint, uprobe},
    programs::{ProbeContext, TracePointContext},
};

/// Attached to each syscall tracepoint of the floor; returns at once.
#[tracepoint]
pub fn floor_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

/// Attached at one Go function's entry per request; returns at once.
#[uprobe]
pub fn floor_uprobe(_ctx: ProbeContext) -> u32 {
    0
}
