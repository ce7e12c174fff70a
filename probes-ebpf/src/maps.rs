//! Maps and load-time globals shared by all hook families, and the kernel-only types they hold.

use crate::sock::Tuple;
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{bpf_get_current_cgroup_id, bpf_get_smp_processor_id},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use wirespan_shared::{
    COMM_LEN, DataEvent, FILTER_CGROUP, FILTER_PID, FILTER_PORT, FdOffsets, LOST_CAUSES,
    ProcOffsets, SetStateFormat, Settings, SockCommonOffsets,
};

/// Every event goes through this one bounded ring buffer; a full buffer is counted in `LOST`.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Slot 0 is 1 while user space's reader polls `EVENTS` on its short timer, 0 while it sleeps
/// until the kernel wakes it (written by collector/src/source/ringbuf.rs on each change).
#[map]
pub static READER_POLLING: Array<u32> = Array::with_max_entries(1, 0);

/// Unread bytes above this share of the ring (`size >> 3`: one eighth) wake the reader at once,
/// whatever it does: far above what a polling reader finds after one period at normal rates,
/// so the common case never forces a wake-up, and low enough to leave seven eighths of the
/// ring for the reader to get scheduled before anything is lost in a burst.
const FORCE_WAKEUP_SHIFT: u32 = 3;

/// The flags of every `EVENTS.output` and ring-buffer `submit`: whether this record wakes the
/// reader. A wake-up per record costs the reader a context switch each; instead, while the
/// reader polls on its timer, records wait for its next poll (`BPF_RB_NO_WAKEUP`: a delay
/// bounded by its period), and while it sleeps they wake it the kernel's default way (only
/// when the ring was empty before them). A ring filling up wakes it in any case.
#[inline(always)]
pub fn wake_flags() -> u64 {
    let unread = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
    if unread > size >> FORCE_WAKEUP_SHIFT {
        return u64::from(BPF_RB_FORCE_WAKEUP);
    }
    match READER_POLLING.get(0) {
        Some(&polling) if polling != 0 => u64::from(BPF_RB_NO_WAKEUP),
        _ => 0,
    }
}

/// Events lost in the kernel, per CPU, indexed by the `LOST_*` cause.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_CAUSES, 0);

/// Tracepoint mode: who started connecting on a sock, until it reaches ESTABLISHED.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingConnect {
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// sock address → pending connect. LRU keeps it bounded when a sock never reaches ESTABLISHED or
/// CLOSE (simultaneous open, a lost transition).
#[map]
pub static PENDING_CONNECTS: LruHashMap<u64, PendingConnect> =
    LruHashMap::with_max_entries(65_536, 0);

/// A connection the probes have seen: its id, the process that owns it (close may run in
/// softirq, where the current task is someone else), and its five-tuple (by the time a sock
/// reaches CLOSE the kernel has released its local port).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnInfo {
    pub conn_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
    pub tuple: Tuple,
    /// Set once a TLS library's plaintext was sent for this connection: its encrypted bytes
    /// are not captured any more.
    pub tls_plaintext: u32,
    pub pad0: u32,
}

/// sock address → connection, from connect/accept (or the first byte of an older connection)
/// until close. LRU: a close that was never seen cannot fill it.
#[map]
pub static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(262_144, 0);

/// Per-CPU counters behind connection ids.
#[map]
static NEXT_CONN_ID: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for building a data event (too big for the 512-byte BPF stack), one slot per
/// CPU indexed by CPU number (user space sizes it to the possible CPUs at load). Not a per-CPU
/// array: those cap values at 32 KiB, and a data event is bigger.
#[map]
pub static SCRATCH: Array<DataEvent> = Array::with_max_entries(1, 0);

/// This CPU's scratch data event. Probes run with migration disabled and the data exit hook
/// cannot nest on one CPU, so the slot is ours until the probe returns.
#[inline(always)]
pub fn scratch_event() -> Option<*mut DataEvent> {
    // SAFETY: bpf_get_smp_processor_id takes no arguments and only returns the current CPU number.
    SCRATCH.get_ptr_mut(unsafe { bpf_get_smp_processor_id() })
}

/// Filter values; a filter is on when its `FILTER_*` bit is set in `SETTINGS.filters`.
#[map]
pub static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);
#[map]
pub static FILTER_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);
#[map]
pub static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// Written by user space before load (see collector/src/load); zero only until then.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockCommonOffsets = SockCommonOffsets::zeroed();
#[unsafe(no_mangle)]
static FD_OFFSETS: FdOffsets = FdOffsets::zeroed();
#[unsafe(no_mangle)]
static PROC_OFFSETS: ProcOffsets = ProcOffsets::zeroed();
#[unsafe(no_mangle)]
static SET_STATE_FORMAT: SetStateFormat = SetStateFormat::zeroed();
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings::zeroed();

// Volatile reads keep the compiler from folding the zero initialisers into the code.
#[inline(always)]
pub fn sock_offsets() -> SockCommonOffsets {
    // SAFETY: SOCK_OFFSETS is a plain-data static that user space sets before load and nothing
    // writes at run time; the reference is valid and aligned.
    unsafe { core::ptr::read_volatile(&raw const SOCK_OFFSETS) }
}

#[inline(always)]
pub fn fd_offsets() -> FdOffsets {
    // SAFETY: as in `sock_offsets`: a read-only plain-data static, set before load.
    unsafe { core::ptr::read_volatile(&raw const FD_OFFSETS) }
}

#[inline(always)]
pub fn proc_offsets() -> ProcOffsets {
    // SAFETY: as in `sock_offsets`: a read-only plain-data static, set before load.
    unsafe { core::ptr::read_volatile(&raw const PROC_OFFSETS) }
}

#[inline(always)]
pub fn set_state_format() -> SetStateFormat {
    // SAFETY: as in `sock_offsets`: a read-only plain-data static, set before load.
    unsafe { core::ptr::read_volatile(&raw const SET_STATE_FORMAT) }
}

#[inline(always)]
pub fn settings() -> Settings {
    // SAFETY: as in `sock_offsets`: a read-only plain-data static, set before load.
    unsafe { core::ptr::read_volatile(&raw const SETTINGS) }
}

#[inline(always)]
pub fn count_lost(cause: u32) {
    if let Some(counter) = LOST.get_ptr_mut(cause) {
        // SAFETY: `counter` comes from the map lookup (non-null, valid for the program's run)
        // and is this CPU's slot: no other writer can race this increment.
        unsafe { *counter += 1 };
    }
}

/// A connection id never handed out before: a per-CPU counter with the CPU number in the low
/// 12 bits, so CPUs never collide and no atomics are needed.
#[inline(always)]
pub fn next_conn_id() -> u64 {
    // SAFETY: bpf_get_smp_processor_id takes no arguments and only returns the current CPU number.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() }) & 0xfff;
    match NEXT_CONN_ID.get_ptr_mut(0) {
        // SAFETY: `counter` comes from the map lookup (non-null, valid for the program's run)
        // and is this CPU's slot, so the read-modify-write cannot race.
        Some(counter) => unsafe {
            *counter += 1;
            (*counter << 12) | cpu
        },
        None => 0,
    }
}

/// Whether events of this process are wanted: never the agent's own (its exporter traffic would
/// feed back into itself); with `--pid` or `--cgroup`, only processes that match either.
/// Call it in the process's own context (the cgroup is the current task's).
#[inline(always)]
pub fn process_passes(tgid: u32) -> bool {
    let s = settings();
    if tgid == s.agent_tgid {
        return false;
    }
    let selecting = s.filters & (FILTER_PID | FILTER_CGROUP);
    if selecting == 0 {
        return true;
    }
    // SAFETY: a hash map lookup by key; the value is only tested for presence, never held.
    if s.filters & FILTER_PID != 0 && unsafe { FILTER_PIDS.get(&tgid) }.is_some() {
        return true;
    }
    if s.filters & FILTER_CGROUP != 0 {
        // SAFETY: bpf_get_current_cgroup_id takes no arguments and reads the current task's cgroup.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: a hash map lookup by key; the value is only tested for presence, never held.
        if unsafe { FILTER_CGROUPS.get(&cgroup) }.is_some() {
            return true;
        }
    }
    false
}

/// Whether a connection with these ports is wanted (`--port` matches either end).
#[inline(always)]
pub fn ports_pass(sport: u16, dport: u16) -> bool {
    if settings().filters & FILTER_PORT == 0 {
        return true;
    }
    // SAFETY: hash map lookups by key; the values are only tested for presence, never held.
    unsafe { FILTER_PORTS.get(&sport).is_some() || FILTER_PORTS.get(&dport).is_some() }
}
