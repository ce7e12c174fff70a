//! HTTP/2 frame chains: where every frame of an HTTP/2 connection starts, even deep inside a
//! syscall buffer of which only the first `--capture-bytes` are captured.
//!
//! A connection direction's chain starts at the client preface (in the syscall that writes or
//! reads it; the other direction starts at the TCP sequence number expected next on it). From
//! there each frame header says where the next frame starts (9 + length bytes on), so the data
//! exit hook walks the chain through the syscall's bytes (iovecs too) in a bounded loop, and keeps
//! the next frame's start as a sequence number for the next syscall of that direction. Every
//! frame that reaches beyond the captured prefix gets a window (`FrameWindow`: its header and the
//! start of its payload) appended to the event. A chain that is lost (bytes no hook saw, an
//! implausible header, a syscall with too many frames) restarts at the next syscall of that
//! direction that starts with a plausible frame header, where user space resyncs too.
//!
//! TLS plaintext (data events of a TLS library's calls) is followed apart from the encrypted
//! bytes of the same sock: under a virtual sock (`tls_sock`), in plaintext positions
//! (`TLS_POSITIONS`, counted from the first plaintext seen in each direction), since sequence
//! numbers count encrypted bytes.
//!
//! The kernel only follows lengths. User space decodes, and uses a window only where its own
//! framing expects a frame: the bytes of a window are the real bytes at that offset, so a wrong
//! chain costs windows, never a wrong decode.
#![expect(
    clippy::cast_possible_wrap,
    reason = "offsets within one syscall's bytes (under 2^31) never reach the sign bit of i64"
)]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use wirespan_shared::{
    DIR_EGRESS, DIR_INGRESS, DataEvent, FrameWindow, HTTP2_FRAME_HEADER, HTTP2_PREFACE,
    MAX_CAPTURE, MAX_WINDOW_BYTES, WINDOW_DATA_PAYLOAD, WINDOW_DESC_LEN, WINDOW_MAX_LEN,
};

use crate::{maps::scratch_event, sock::tcp_seq};

/// Where a direction's next frame starts, and the bytes of its header already seen when the
/// previous syscall ended inside it (the header is at most 9 bytes, so at most 8 are pending).
#[repr(C)]
#[derive(Clone, Copy)]
struct FrameChain {
    next_seq: u32,
    have: u32,
    partial: [u8; 8],
}

/// (sock address ^ direction) → chain. LRU: a close that was never seen cannot fill it.
#[map]
static FRAME_CHAINS: LruHashMap<u64, FrameChain> = LruHashMap::with_max_entries(65_536, 0);

/// (virtual sock ^ direction) → where the next TLS plaintext byte of that direction is, counted
/// from the first one seen. LRU, like the chains.
#[map]
static TLS_POSITIONS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65_536, 0);

/// The virtual sock a sock's TLS plaintext is followed under: socks are at least 8-byte
/// aligned, and bits 0-1 hold the direction in a key.
#[inline(always)]
pub fn tls_sock(sk: u64) -> u64 {
    sk ^ 4
}

/// Where the next TLS plaintext byte of a direction of virtual sock `vsk` is.
#[inline(always)]
pub fn plaintext_position(vsk: u64, direction: u16) -> u32 {
    // SAFETY: a hash map lookup by key; the value is copied out at once.
    unsafe { TLS_POSITIONS.get(&key(vsk, direction)) }
        .copied()
        .unwrap_or(0)
}

/// The direction's next plaintext byte is now at `next`.
#[inline(always)]
pub fn set_plaintext_position(vsk: u64, direction: u16, next: u32) {
    let _ = TLS_POSITIONS.insert(&key(vsk, direction), &next, 0);
}

/// Loop steps per syscall: reading a header, reading a window's payload, finishing a frame or
/// moving to the next iovec each take one. 16384 steps follow thousands of frames (tens of MiB
/// of 16 KiB DATA frames); a longer syscall loses the chain until the next preface.
const MAX_STEPS: u32 = 16_384;
/// iovec segments walked at most (the kernel's UIO_MAXIOV).
const MAX_IOVECS: u64 = 1024;
const HEADER: u64 = HTTP2_FRAME_HEADER as u64;
const DESC: u64 = WINDOW_DESC_LEN as u64;
/// Frame types whose rules the chain checks (RFC 9113 section 6); others are skipped by length.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

/// What the exit hook knows of a syscall's buffer.
pub struct Io {
    pub sk: u64,
    pub direction: u16,
    /// Sequence number of the first byte, and how many bytes moved.
    pub seq: u32,
    pub ret: u64,
    /// One buffer (`iovcnt` 0) or an iovec array of `iovcnt` segments.
    pub buf: u64,
    pub iovcnt: u64,
    /// TLS plaintext: `sk` is the virtual sock (`tls_sock`), `seq` a plaintext position.
    pub tls: bool,
}

#[inline(always)]
fn key(sk: u64, direction: u16) -> u64 {
    // Socks are at least 8-byte aligned: the direction (1 or 2) fits in the low bits.
    sk ^ u64::from(direction)
}

/// The connection is over: its chains are stale (the sock's memory may hold a new one).
#[inline(always)]
pub fn forget(sk: u64) {
    let _ = FRAME_CHAINS.remove(&key(sk, DIR_EGRESS));
    let _ = FRAME_CHAINS.remove(&key(sk, DIR_INGRESS));
    let vsk = tls_sock(sk);
    for direction in [DIR_EGRESS, DIR_INGRESS] {
        let _ = FRAME_CHAINS.remove(&key(vsk, direction));
        let _ = TLS_POSITIONS.remove(&key(vsk, direction));
    }
}

/// Follow the direction's frame chain through this syscall and append windows after the
/// event's captured payload; returns the bytes of windows appended.
#[inline(always)]
#[expect(
    clippy::single_match_else,
    reason = "both outcomes side by side: a failure loses the chain"
)]
pub fn follow(ev: *mut DataEvent, io: &Io) -> u32 {
    // SAFETY: the caller's scratch event, whose header is filled in.
    let (payload, captured) = unsafe {
        // Read back from the map, the capture length is one unknown value for the verifier
        // (bounded below), not one precise value per path through the copy loop before, which
        // would have it walk the rest once per path.
        let captured = core::ptr::read_volatile(&raw const (*ev).header.captured);
        ((*ev).payload.as_mut_ptr(), u64::from(captured))
    };
    match try_follow(payload, captured, io) {
        Ok(n) => n,
        Err(()) => {
            lose(io);
            0
        }
    }
}

/// `FrameChain::have` of a direction that lost its chain (implausible header, unreadable
/// buffer, bytes no hook saw, too many frames for one walk): it restarts at the next syscall
/// that starts with a plausible frame, as user space resyncs.
const CHAIN_LOST: u32 = u32::MAX;

#[inline(always)]
fn lose(io: &Io) {
    let lost = FrameChain {
        next_seq: 0,
        have: CHAIN_LOST,
        partial: [0; 8],
    };
    let _ = FRAME_CHAINS.insert(&key(io.sk, io.direction), &lost, 0);
}

/// Whether the captured bytes start with a frame header that obeys its type's rules (RFC 9113
/// section 6) and a default-sized length: where a lost chain restarts.
#[inline(always)]
fn starts_with_frame(payload: *const u8, captured: u64) -> bool {
    if captured < HEADER {
        return false;
    }
    // SAFETY: captured >= 9 bytes of the scratch payload are initialised.
    let h = unsafe { payload.cast::<[u8; 9]>().read_unaligned() };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    len <= 16_384
        && match h[3] {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => stream != 0,
            PRIORITY => stream != 0 && len == 5,
            RST_STREAM => stream != 0 && len == 4,
            SETTINGS => stream == 0 && len % 6 == 0,
            PING => stream == 0 && len == 8,
            GOAWAY => stream == 0 && len >= 8,
            WINDOW_UPDATE => len == 4,
            _ => false,
        }
}

#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "read_unaligned: the payload's alignment does not matter"
)]
fn starts_with_preface(payload: *const u8, captured: u64) -> bool {
    if captured < HTTP2_PREFACE.len() as u64 {
        return false;
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&HTTP2_PREFACE[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    let p = payload.cast::<u64>();
    // SAFETY: captured >= 24 bytes of the scratch payload are initialised; unaligned reads.
    unsafe {
        p.read_unaligned() == word(0)
            && p.add(1).read_unaligned() == word(1)
            && p.add(2).read_unaligned() == word(2)
    }
}

#[inline(always)]
fn plausible(kind: u8, stream: u32) -> bool {
    match kind {
        DATA | HEADERS | CONTINUATION => stream != 0,
        SETTINGS | PING | GOAWAY => stream == 0,
        _ => true,
    }
}

/// One iovec segment: (base, len).
#[inline(always)]
fn iovec(iov: u64, i: u64) -> Result<(u64, u64), ()> {
    // SAFETY: a checked read of user memory; a bad address is an error, not a fault.
    let seg: [u64; 2] =
        unsafe { bpf_probe_read_user((iov + i * 16) as *const [u64; 2]) }.map_err(|_| ())?;
    Ok((seg[0], seg[1]))
}

/// The walk through one syscall's bytes, advanced one step per `bpf_loop` iteration (a plain
/// loop of that many steps exceeds the verifier's jump history). It lives in a per-CPU map,
/// not on the stack: the verifier does not track map contents, so every callback iteration
/// starts from the same state and the callback's verification converges at once; every bound
/// is checked explicitly instead.
#[repr(C)]
#[derive(Clone, Copy)]
struct Walk {
    /// The buffer: one (`iovcnt` 0) or an iovec array; bytes moved; bytes captured.
    buf: u64,
    iovcnt: u64,
    ret: u64,
    captured: u64,
    /// The iovec segment holding the next byte to read: its base, length, index, and the
    /// syscall offset of its first byte.
    seg_ptr: u64,
    seg_len: u64,
    seg_i: u64,
    seg_base: u64,
    /// The frame being walked: its start relative to the syscall (negative when its header
    /// began in the previous one), its bytes in the window slot so far, how many it wants
    /// there, and its payload length once its header is parsed.
    off: i64,
    got: u64,
    want: u64,
    flen: u64,
    /// Bytes of finished windows after the captured payload.
    wpos: u64,
    parsed: u8,
    emit: u8,
    /// The walk reached the syscall's end (1), or failed (2).
    done: u8,
    pad0: [u8; 5],
}

const WALK_ENDED: u8 = 1;
const WALK_FAILED: u8 = 2;

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

#[expect(
    clippy::too_many_lines,
    reason = "the start, the loop and the end of one walk, kept together for the verifier"
)]
fn try_follow(payload: *mut u8, captured: u64, io: &Io) -> Result<u32, ()> {
    if captured > MAX_CAPTURE as u64 {
        return Err(());
    }
    let k = key(io.sk, io.direction);
    let off: i64;
    let got: u64;
    let mut partial = [0u8; 8];
    if starts_with_preface(payload, captured) {
        // A connection's first bytes: both directions start here, whatever was kept before
        // (a sock address is reused by later connections).
        let other = if io.direction == DIR_EGRESS {
            DIR_INGRESS
        } else {
            DIR_EGRESS
        };
        let start = FrameChain {
            next_seq: if io.tls {
                plaintext_position(io.sk, other)
            } else {
                tcp_seq(io.sk, other == DIR_EGRESS)
            },
            have: 0,
            partial: [0; 8],
        };
        let _ = FRAME_CHAINS.insert(&key(io.sk, other), &start, 0);
        off = HTTP2_PREFACE.len() as i64;
        got = 0;
    } else {
        // SAFETY: the value is copied out at once, before any other map operation.
        let Some(chain) = (unsafe { FRAME_CHAINS.get(&k) }).copied() else {
            return Ok(0);
        };
        if chain.have == CHAIN_LOST {
            if !starts_with_frame(payload, captured) {
                return Ok(0);
            }
            off = 0;
            got = 0;
        } else {
            off = i64::from(chain.next_seq.wrapping_sub(io.seq).cast_signed());
            got = u64::from(chain.have);
        }
        if got > 8 {
            return Err(());
        }
        let pos = off + got as i64;
        if pos < 0 {
            // Bytes moved that no hook saw (sendfile, io_uring, a lost entry): lost.
            return Err(());
        }
        if pos as u64 >= io.ret {
            // The whole syscall lies inside one frame's payload.
            return Ok(0);
        }
        partial = chain.partial;
    }
    if got > 0 {
        let at = room(captured + DESC, 8)?;
        // SAFETY: `room` checked the bounds.
        unsafe { payload.add(at).cast::<[u8; 8]>().write_unaligned(partial) };
    }
    let (seg_ptr, seg_len) = if io.iovcnt == 0 {
        (io.buf, io.ret)
    } else {
        iovec(io.buf, 0)?
    };
    // SAFETY: this CPU's slot; the exit hook cannot nest on one CPU.
    let w = unsafe { &mut *WALK.get_ptr_mut(0).ok_or(())? };
    *w = Walk {
        buf: io.buf,
        iovcnt: io.iovcnt,
        ret: io.ret,
        captured,
        seg_ptr,
        seg_len,
        seg_i: 0,
        seg_base: 0,
        off,
        got,
        want: HEADER,
        flen: 0,
        wpos: 0,
        parsed: 0,
        emit: 0,
        done: 0,
        pad0: [0; 5],
    };
    // SAFETY: `step` has the callback signature bpf_loop expects and takes no context.
    unsafe {
        generated::bpf_loop(MAX_STEPS, step as *mut c_void, core::ptr::null_mut(), 0);
    }
    if w.wpos > MAX_WINDOW_BYTES as u64 {
        return Err(());
    }
    if w.done != WALK_ENDED {
        // The windows finished so far are right; the chain is lost from here.
        lose(io);
        return Ok(w.wpos as u32);
    }
    // The syscall ended inside the current frame (or exactly where it starts).
    let next = if w.parsed != 0 {
        if w.emit != 0 && w.got > 0 {
            write_desc(payload, captured + w.wpos, w.off, w.got);
            w.wpos += DESC + w.got;
        }
        FrameChain {
            next_seq: io
                .seq
                .wrapping_add((w.off + (HEADER + w.flen) as i64) as u32),
            have: 0,
            partial: [0; 8],
        }
    } else {
        // A header cut by the end of the syscall: keep its bytes for the next one.
        if w.got > 8 {
            return Err(());
        }
        let at = room(captured + w.wpos + DESC, 8)?;
        // SAFETY: `room` checked the bounds.
        let bytes = unsafe { payload.add(at).cast::<[u8; 8]>().read_unaligned() };
        if w.got > 0
            && w.off + w.got as i64 > captured as i64
            && w.wpos + DESC + w.got <= MAX_WINDOW_BYTES as u64
        {
            write_desc(payload, captured + w.wpos, w.off, w.got);
            w.wpos += DESC + w.got;
        }
        FrameChain {
            next_seq: io.seq.wrapping_add(w.off as u32),
            have: w.got as u32,
            partial: bytes,
        }
    };
    let _ = FRAME_CHAINS.insert(&k, &next, 0);
    Ok(w.wpos as u32)
}

/// One step of the walk (the `bpf_loop` callback): 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    // SAFETY: this CPU's slot, filled by `try_follow` before the loop.
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot of a per-CPU map; nothing else uses it during the loop.
    let w = unsafe { &mut *w };
    match try_step(w) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(()) => {
            w.done = WALK_FAILED;
            1
        }
    }
}

/// Read a frame's next bytes into its window slot, finish a frame, or move to the next iovec.
#[inline(always)]
fn try_step(w: &mut Walk) -> Result<bool, ()> {
    // The scratch event again: a pointer cannot travel through the walk's stack struct.
    // SAFETY: this CPU's scratch event, which the exit hook is building.
    let payload = unsafe { (*scratch_event().ok_or(())?).payload.as_mut_ptr() };
    if w.captured > MAX_CAPTURE as u64 || w.wpos > MAX_WINDOW_BYTES as u64 {
        return Err(());
    }
    if w.parsed != 0 && w.got >= w.want {
        // The frame's window is complete: keep it if user space needs it, go to the next.
        if w.emit != 0 {
            write_desc(payload, w.captured + w.wpos, w.off, w.want);
            w.wpos += DESC + w.want;
        }
        w.off += (HEADER + w.flen) as i64;
        (w.got, w.want, w.parsed, w.emit) = (0, HEADER, 0, 0);
        return Ok(true);
    }
    let pos = w.off + w.got as i64;
    if pos < 0 {
        return Err(());
    }
    let pos = pos as u64;
    if pos >= w.ret {
        w.done = WALK_ENDED;
        return Ok(false);
    }
    if pos >= w.seg_base + w.seg_len {
        w.seg_i += 1;
        if w.iovcnt == 0 || w.seg_i >= w.iovcnt || w.seg_i >= MAX_IOVECS {
            return Err(());
        }
        w.seg_base += w.seg_len;
        (w.seg_ptr, w.seg_len) = iovec(w.buf, w.seg_i)?;
        return Ok(true);
    }
    if pos < w.seg_base || w.got > w.want {
        return Err(());
    }
    let mut n = w.want - w.got;
    if n > w.seg_base + w.seg_len - pos {
        n = w.seg_base + w.seg_len - pos;
    }
    if n > w.ret - pos {
        n = w.ret - pos;
    }
    if n == 0 || n > WINDOW_MAX_LEN as u64 {
        return Err(());
    }
    // Room for the masked size below (2 * WINDOW_MAX_LEN; the windows' budget keeps every
    // legitimate read further inside).
    let at = room(
        w.captured + w.wpos + DESC + w.got,
        2 * WINDOW_MAX_LEN as u64,
    )?;
    // 6.1's verifier loses `n`'s bound (checked above) on its way to the helper ("R2 min value
    // is negative"): launder it through the stack (volatile, so LLVM keeps what follows) and
    // mask it, a bound the verifier keeps. The mask changes nothing (n <= WINDOW_MAX_LEN).
    // SAFETY: a volatile read of an initialised, aligned local.
    let size = unsafe { core::ptr::read_volatile(&raw const n) } & (2 * WINDOW_MAX_LEN as u64 - 1);
    // SAFETY: `room` bounded the destination for `size`; a bad source address is an error, not
    // a fault.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            payload.add(at).cast::<c_void>(),
            size as u32,
            (w.seg_ptr + (pos - w.seg_base)) as *const c_void,
        )
    };
    if rc < 0 {
        return Err(());
    }
    w.got += n;
    if w.parsed == 0 && w.got >= HEADER {
        let at = room(w.captured + w.wpos + DESC, HEADER)?;
        // SAFETY: the 9 header bytes were written at the slot's start; `room` checked bounds.
        let h = unsafe { payload.add(at).cast::<[u8; 9]>().read_unaligned() };
        w.flen = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
        let kind = h[3];
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if !plausible(kind, stream) {
            return Err(());
        }
        w.parsed = 1;
        let cap = if kind == DATA {
            WINDOW_DATA_PAYLOAD as u64
        } else {
            (WINDOW_MAX_LEN - HTTP2_FRAME_HEADER) as u64
        };
        let full = HEADER + if w.flen < cap { w.flen } else { cap };
        // Only frames that reach beyond the captured prefix, while there is room.
        let emit = w.off + full as i64 > w.captured as i64
            && w.wpos + DESC + full <= MAX_WINDOW_BYTES as u64;
        w.emit = u8::from(emit);
        w.want = if emit { full } else { HEADER };
    }
    Ok(true)
}

/// Write a window's descriptor at `at` bytes into the payload.
#[inline(always)]
fn write_desc(payload: *mut u8, at: u64, offset: i64, len: u64) {
    let desc = FrameWindow {
        offset: offset as i32,
        len: len as u16,
        pad0: 0,
    };
    let Ok(at) = room(at, DESC) else {
        return;
    };
    // SAFETY: `room` checked the bounds.
    unsafe {
        payload.add(at).cast::<FrameWindow>().write_unaligned(desc);
    }
}

/// `at` as an offset into the scratch payload when `len` bytes there stay inside it. One
/// compare of the offset itself against a constant: the form the verifier learns bounds from
/// (the windows' budget keeps every legitimate access far inside).
#[inline(always)]
fn room(at: u64, len: u64) -> Result<usize, ()> {
    if at > 2 * MAX_CAPTURE as u64 - len {
        return Err(());
    }
    Ok(at as usize)
}
