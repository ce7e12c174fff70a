//! Process lifecycle. `sched:sched_process_exec` tells user space a program started (Go programs
//! started after the agent get their uprobes this way) and carries what the process's resource
//! needs: its arguments, environment (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) and
//! executable name, read now because a short-lived process may be gone before user space could
//! read `/proc`. `sched:sched_process_exit` of a thread-group leader says the process ended (its
//! resource is dropped once its spans are out) and forgets its Go layout, so a reused pid never
//! inherits it.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, generated,
    },
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use wirespan_shared::{
    EVENT_PROCESS_EXIT, EVENT_PROCESS_START, LOST_EXEC_RINGBUF_FULL, LOST_EXIT_RINGBUF_FULL,
    PROCESS_ARGS_CAP, PROCESS_ENV_CAP, ProcessExitEvent, ProcessStartEvent, ProcessStartHeader,
};

use crate::{
    golang::GO_PROCS,
    maps::{EVENTS, count_lost, proc_offsets, process_passes, wake_flags},
};

/// Scratch space for a process-start event (about 20 KiB: far beyond the 512-byte BPF stack).
/// Tracepoint programs do not nest on a CPU, so this CPU's slot is ours until the probe returns.
#[map]
static PROCESS_SCRATCH: PerCpuArray<ProcessStartEvent> = PerCpuArray::with_max_entries(1, 0);

// The attribute reaches the function the macro wraps: inlined, no subprogram takes the context
// struct by value (6.1's verifier refuses such a global function: "reg type unsupported").
#[tracepoint]
#[inline(always)]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A pid that ran a Go program before this exec runs something else now.
    let _ = GO_PROCS.remove(&tgid);
    if !process_passes(tgid) {
        return 0;
    }
    match try_process_start(tgid) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn try_process_start(tgid: u32) -> Result<(), ()> {
    let ev = PROCESS_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: a valid map value pointer, exclusively ours on this CPU (see PROCESS_SCRATCH).
    let ev = unsafe { &mut *ev };
    let h = &mut ev.header;
    h.kind = EVENT_PROCESS_START;
    h.pid = tgid;
    // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    // Straight into the header, and volatile zero stores: no 16-byte zeroing that LLVM would turn
    // into a `memset` call, a global function 6.1's verifier refuses ("reg type unsupported").
    // The helper pads the name with NULs (and zeroes it on failure).
    // SAFETY: `h` is this CPU's scratch record (a valid, exclusive map value): the helper writes
    // at most `comm.len()` bytes into `comm`, and the volatile stores go to its own fields.
    unsafe {
        generated::bpf_get_current_comm(h.comm.as_mut_ptr().cast::<c_void>(), h.comm.len() as u32);
        core::ptr::write_volatile(&raw mut h.args_size, 0);
        core::ptr::write_volatile(&raw mut h.args_len, 0);
        core::ptr::write_volatile(&raw mut h.env_size, 0);
        core::ptr::write_volatile(&raw mut h.env_len, 0);
    }
    // An empty name until read (user space stops at the first NUL); not a whole-array zeroing
    // (a `memset` call, see above).
    h.exe[0] = 0;

    let off = proc_offsets();
    // SAFETY: bpf_get_current_task takes no arguments; the task is only read through
    // bpf_probe_read_kernel, which handles a bad address by failing.
    let task = unsafe { bpf_get_current_task() };
    let mm = read_u64(task + u64::from(off.task_mm));
    let blocks = ev.blocks.as_mut_ptr();
    let mut args_len = 0u64;
    let mut env_len = 0u64;
    if mm != 0 {
        let (arg_start, arg_end) = (
            read_u64(mm + u64::from(off.mm_arg_start)),
            read_u64(mm + u64::from(off.mm_arg_end)),
        );
        let (env_start, env_end) = (
            read_u64(mm + u64::from(off.mm_env_start)),
            read_u64(mm + u64::from(off.mm_env_end)),
        );
        let args_size = arg_end.saturating_sub(arg_start);
        let env_size = env_end.saturating_sub(env_start);
        h.args_size = args_size.min(u64::from(u32::MAX)) as u32;
        h.env_size = env_size.min(u64::from(u32::MAX)) as u32;
        args_len = copy_block(blocks, 0, arg_start, args_size, PROCESS_ARGS_CAP as u64);
        // 6.1's verifier loses args_len's bound through copy_block's select (it then refuses
        // the pointer below): launder it through the stack (volatile: LLVM keeps the mask) and
        // mask it, a bound the verifier keeps. The mask changes nothing (args_len <= the cap).
        // SAFETY: a volatile read of a local that is initialised and aligned.
        let at = unsafe { core::ptr::read_volatile(&raw const args_len) }
            & (2 * PROCESS_ARGS_CAP as u64 - 1);
        env_len = copy_block(blocks, at, env_start, env_size, PROCESS_ENV_CAP as u64);
        read_exe_name(mm, &mut h.exe);
    }
    h.args_len = args_len as u32;
    h.env_len = env_len as u32;
    // Both lengths are at most their caps (copy_block clamps), but 6.1's verifier loses that
    // bound through the 32-bit copies ("R3 min value is negative" at the ring buffer output).
    // The size goes through the stack (volatile, so LLVM cannot drop the check as redundant)
    // and is checked again where the verifier sees it.
    let size = (size_of::<ProcessStartHeader>() as u64) + args_len + env_len;
    // Decided before the size's check: the helper calls would spill the checked size.
    let flags = wake_flags();
    // SAFETY: a volatile read of a local that is initialised and aligned.
    let size = unsafe { core::ptr::read_volatile(&raw const size) };
    if size > size_of::<ProcessStartEvent>() as u64 {
        return Err(());
    }
    let size = size as usize;
    // SAFETY: `ev` is a valid map value of `size_of::<ProcessStartEvent>()` bytes and `size` was
    // checked against that just above; the bytes are plain data.
    let record = unsafe {
        core::slice::from_raw_parts(
            core::ptr::from_ref::<ProcessStartEvent>(ev).cast::<u8>(),
            size,
        )
    };
    if EVENTS.output(record, flags).is_err() {
        count_lost(LOST_EXEC_RINGBUF_FULL);
    }
    Ok(())
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel copies into its own return value and fails (0 here) on an
    // unreadable address.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

/// Copy up to `cap` of a user block's `size` bytes to `blocks + at` (`at < 2 *
/// PROCESS_ARGS_CAP`, `cap <= PROCESS_ENV_CAP`: inside the scratch buffer); how many were
/// copied, 0 when the read failed. The new program's stack was just written by exec, so its
/// pages are present.
#[inline(always)]
fn copy_block(blocks: *mut u8, at: u64, src: u64, size: u64, cap: u64) -> u64 {
    if at >= 2 * PROCESS_ARGS_CAP as u64 || src == 0 {
        return 0;
    }
    let mut n = size;
    if n > cap {
        n = cap;
    }
    if n > PROCESS_ENV_CAP as u64 {
        n = PROCESS_ENV_CAP as u64;
    }
    // SAFETY: `blocks + at` with `at < 2 * PROCESS_ARGS_CAP` and `n <= PROCESS_ENV_CAP` stays
    // inside the scratch record's blocks (checked above); the helper fails on a bad source.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            blocks.add(at as usize).cast::<c_void>(),
            n as u32,
            src as *const c_void,
        )
    };
    if rc < 0 { 0 } else { n }
}

/// `mm->exe_file->f_path.dentry->d_name.name`: the executable's file name, as the base name of
/// `/proc/<pid>/exe` shows it (for a script, its interpreter). Left empty when unreadable.
#[inline(always)]
fn read_exe_name(mm: u64, out: &mut [u8; wirespan_shared::PROCESS_EXE_LEN]) {
    let off = proc_offsets();
    let file = read_u64(mm + u64::from(off.mm_exe_file));
    if file == 0 {
        return;
    }
    let dentry = read_u64(file + u64::from(off.file_path_dentry));
    if dentry == 0 {
        return;
    }
    let name = read_u64(dentry + u64::from(off.dentry_name));
    if name == 0 {
        return;
    }
    // SAFETY: the helper writes at most `out.len()` bytes into `out` and fails on a bad source.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, out) };
}

#[tracepoint]
#[inline(always)]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // The thread-group leader's exit ends the process (for wirespan's purposes); other threads'
    // exits cost only this comparison.
    if tgid != pid_tgid as u32 {
        return 0;
    }
    let _ = GO_PROCS.remove(&tgid);
    if !process_passes(tgid) {
        return 0;
    }
    let ev = ProcessExitEvent {
        kind: EVENT_PROCESS_EXIT,
        pid: tgid,
        // SAFETY: bpf_ktime_get_ns takes no arguments and only returns the monotonic clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output(&ev, wake_flags()).is_err() {
        count_lost(LOST_EXIT_RINGBUF_FULL);
    }
    0
}
