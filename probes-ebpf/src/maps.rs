//! Maps and load-time globals shared by all hook families.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use wirespan_shared::{LOST_CAUSES, PendingConnect, SetStateFormat, SockCommonOffsets};

/// Every event goes through this one bounded ring buffer; a full buffer is counted in `LOST`.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Events lost in the kernel, per CPU, indexed by the `LOST_*` cause.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_CAUSES, 0);

/// Tracepoint mode: sock address → who started connecting on it. LRU keeps it bounded when a
/// sock never reaches ESTABLISHED or CLOSE (simultaneous open, a lost transition).
#[map]
pub static PENDING_CONNECTS: LruHashMap<u64, PendingConnect> =
    LruHashMap::with_max_entries(65_536, 0);

/// Written by user space before load (see collector/src/load); zero only until then.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockCommonOffsets = SockCommonOffsets::zeroed();
#[unsafe(no_mangle)]
static SET_STATE_FORMAT: SetStateFormat = SetStateFormat::zeroed();
/// The agent's own tgid: its writes and connections are never captured (no feedback loop).
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

// Volatile reads keep the compiler from folding the zero initialisers into the code.
#[inline(always)]
pub fn sock_offsets() -> SockCommonOffsets {
    unsafe { core::ptr::read_volatile(&SOCK_OFFSETS) }
}

#[inline(always)]
pub fn set_state_format() -> SetStateFormat {
    unsafe { core::ptr::read_volatile(&SET_STATE_FORMAT) }
}

#[inline(always)]
pub fn agent_tgid() -> u32 {
    unsafe { core::ptr::read_volatile(&AGENT_TGID) }
}

#[inline(always)]
pub fn count_lost(cause: u32) {
    if let Some(counter) = LOST.get_ptr_mut(cause) {
        // Per-CPU slot: no other writer can race this increment.
        unsafe { *counter += 1 };
    }
}
