//! Process lifecycle: `sched:sched_process_exec` tells user space a program started (Go
//! programs started after the agent get their uprobes this way); `sched:sched_process_exit`
//! forgets a finished process's Go layout, so a reused pid never inherits it.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use wirespan_shared::{EVENT_EXEC, ExecEvent, LOST_EXEC_RINGBUF_FULL};

use crate::{
    golang::GO_PROCS,
    maps::{EVENTS, count_lost, process_passes},
};

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A pid that ran a Go program before this exec runs something else now.
    let _ = GO_PROCS.remove(&tgid);
    if !process_passes(tgid) {
        return 0;
    }
    let ev = ExecEvent {
        kind: EVENT_EXEC,
        pid: tgid,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if EVENTS.output(&ev, 0).is_err() {
        count_lost(LOST_EXEC_RINGBUF_FULL);
    }
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The thread-group leader's exit ends the process (for wirespan's purposes).
    if (pid_tgid >> 32) as u32 == pid_tgid as u32 {
        let _ = GO_PROCS.remove(&((pid_tgid >> 32) as u32));
    }
    0
}
