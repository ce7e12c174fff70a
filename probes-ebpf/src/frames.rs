//! HTTP/2 frame chains: where every frame of an HTTP/2 connection starts, even deep inside a
//! syscall buffer of which only the first `--capture-bytes` are captured.
//!
//! A connection direction's chain starts at the client preface (in the syscall that writes or
//! reads it; the other direction starts at the TCP sequence number expected next on it). From
//! there each frame header says where the next frame starts (9 + length bytes on), so the data
//! exit hook walks the chain through the syscall's bytes (iovecs too) in a bounded loop, and keeps
//! the next frame's start as a sequence number for the next syscall of that direction. Every
//! frame that reaches beyond the captured prefix gets a window (`FrameWindow`: its header and the
//! start of its payload) appended to the event.
//!
//! The kernel only follows lengths. User space decodes, and uses a window only where its own
//! framing expects a frame: the bytes of a window are the real bytes at that offset, so a wrong
//! chain costs windows, never a wrong decode.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::LruHashMap,
};
use wirespan_shared::{
    DIR_EGRESS, DIR_INGRESS, FrameWindow, HTTP2_FRAME_HEADER, HTTP2_PREFACE, MAX_CAPTURE,
    MAX_WINDOW_BYTES, WINDOW_DATA_PAYLOAD, WINDOW_DESC_LEN, WINDOW_MAX_LEN,
};

use crate::sock::tcp_seq;

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

/// Loop steps per syscall: reading a header, reading a window's payload, finishing a frame or
/// moving to the next iovec each take one. 2048 steps follow a few hundred frames (several MiB
/// of 16 KiB DATA frames); a longer syscall loses the chain until the next preface.
const MAX_STEPS: u32 = 2048;
/// iovec segments walked at most (the kernel's UIO_MAXIOV).
const MAX_IOVECS: u64 = 1024;
const HEADER: u64 = HTTP2_FRAME_HEADER as u64;
const DESC: u64 = WINDOW_DESC_LEN as u64;
/// Frame types whose rules the chain checks (RFC 9113 section 6); others are skipped by length.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
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
}

/// Follow the direction's frame chain through this syscall and append windows after the
/// `captured` payload bytes; returns the bytes of windows appended.
#[inline(always)]
pub fn follow(payload: *mut u8, captured: u64, io: &Io) -> u32 {
    match try_follow(payload, captured, io) {
        Ok(n) => n,
        Err(()) => {
            // Lost (implausible header, unreadable buffer, too many frames): until the next
            // preface this direction gets no windows, and user space resyncs by itself.
            let _ = FRAME_CHAINS.remove(&key(io.sk, io.direction));
            0
        }
    }
}

#[inline(always)]
fn starts_with_preface(payload: *const u8, captured: u64) -> bool {
    if captured < HTTP2_PREFACE.len() as u64 {
        return false;
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&HTTP2_PREFACE[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    // SAFETY: captured >= 24 bytes of the scratch payload are initialised.
    unsafe {
        let p = payload.cast::<u64>();
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
    let seg: [u64; 2] =
        unsafe { bpf_probe_read_user((iov + i * 16) as *const [u64; 2]) }.map_err(|_| ())?;
    Ok((seg[0], seg[1]))
}

#[expect(clippy::too_many_lines, reason = "one bounded loop, kept whole for the verifier")]
fn try_follow(payload: *mut u8, captured: u64, io: &Io) -> Result<u32, ()> {
    if captured > MAX_CAPTURE as u64 {
        return Err(());
    }
    let k = key(io.sk, io.direction);
    // The frame being walked: its start relative to this syscall (negative when its header
    // began in the previous one) and how many of its bytes are in the window slot.
    let mut off: i64;
    let mut got: u64;
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
            next_seq: tcp_seq(io.sk, other == DIR_EGRESS),
            have: 0,
            partial: [0; 8],
        };
        let _ = FRAME_CHAINS.insert(&key(io.sk, other), &start, 0);
        off = HTTP2_PREFACE.len() as i64;
        got = 0;
    } else {
        let Some(chain) = (unsafe { FRAME_CHAINS.get(&k) }).copied() else {
            return Ok(0);
        };
        off = i64::from(chain.next_seq.wrapping_sub(io.seq).cast_signed());
        got = u64::from(chain.have);
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

    // Windows are built in place after the captured payload; `wpos` is what is final.
    let mut wpos: u64 = 0;
    if got > 0 {
        // SAFETY: captured <= MAX_CAPTURE, so the slot is inside the 2×MAX_CAPTURE payload.
        unsafe {
            payload
                .add((captured + DESC) as usize)
                .cast::<[u8; 8]>()
                .write_unaligned(partial);
        }
    }
    let (mut seg_ptr, mut seg_len) = if io.iovcnt == 0 {
        (io.buf, io.ret)
    } else {
        iovec(io.buf, 0)?
    };
    let mut seg_i: u64 = 0;
    let mut seg_base: u64 = 0;
    let mut flen: u64 = 0;
    let mut want: u64 = HEADER;
    let mut parsed = false;
    let mut emit = false;
    let mut ended = false;
    for _ in 0..MAX_STEPS {
        if parsed && got >= want {
            // The frame's window is complete: keep it if user space needs it, go to the next.
            if emit {
                write_desc(payload, captured + wpos, off, want);
                wpos += DESC + want;
            }
            off += (HEADER + flen) as i64;
            (got, want, parsed, emit) = (0, HEADER, false, false);
            continue;
        }
        let pos = (off + got as i64) as u64;
        if pos >= io.ret {
            ended = true;
            break;
        }
        if pos >= seg_base + seg_len {
            seg_i += 1;
            if io.iovcnt == 0 || seg_i >= io.iovcnt || seg_i >= MAX_IOVECS {
                return Err(());
            }
            seg_base += seg_len;
            (seg_ptr, seg_len) = iovec(io.buf, seg_i)?;
            continue;
        }
        if pos < seg_base {
            return Err(());
        }
        let mut n = want - got;
        if n > seg_base + seg_len - pos {
            n = seg_base + seg_len - pos;
        }
        if n > io.ret - pos {
            n = io.ret - pos;
        }
        let at = captured + wpos + DESC + got;
        if n == 0 || n > WINDOW_MAX_LEN as u64 || at + n > 2 * MAX_CAPTURE as u64 {
            return Err(());
        }
        let rc = unsafe {
            generated::bpf_probe_read_user(
                payload.add(at as usize).cast::<c_void>(),
                n as u32,
                (seg_ptr + (pos - seg_base)) as *const c_void,
            )
        };
        if rc < 0 {
            return Err(());
        }
        got += n;
        if !parsed && got >= HEADER {
            // SAFETY: the 9 header bytes were just written at the slot's start.
            let h = unsafe {
                payload
                    .add((captured + wpos + DESC) as usize)
                    .cast::<[u8; 9]>()
                    .read_unaligned()
            };
            flen = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
            let kind = h[3];
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if !plausible(kind, stream) {
                return Err(());
            }
            parsed = true;
            let cap = if kind == DATA {
                WINDOW_DATA_PAYLOAD as u64
            } else {
                (WINDOW_MAX_LEN - HTTP2_FRAME_HEADER) as u64
            };
            let full = HEADER + if flen < cap { flen } else { cap };
            // Only frames that reach beyond the captured prefix, while there is room.
            emit = off + full as i64 > captured as i64
                && wpos + DESC + full <= MAX_WINDOW_BYTES as u64;
            want = if emit { full } else { HEADER };
        }
    }
    if !ended {
        return Err(());
    }
    // The syscall ended inside the current frame (or exactly where it starts).
    let window_tail = off + got as i64 > captured as i64 && wpos + DESC + got <= MAX_WINDOW_BYTES as u64;
    let next = if parsed {
        if emit && got > 0 {
            write_desc(payload, captured + wpos, off, got);
            wpos += DESC + got;
        }
        FrameChain {
            next_seq: io.seq.wrapping_add((off + (HEADER + flen) as i64) as u32),
            have: 0,
            partial: [0; 8],
        }
    } else {
        // A header cut by the end of the syscall: keep its bytes for the next one.
        let at = captured + wpos + DESC;
        // SAFETY: inside the slot, as above.
        let bytes = unsafe { payload.add(at as usize).cast::<[u8; 8]>().read_unaligned() };
        if got > 0 && window_tail {
            write_desc(payload, captured + wpos, off, got);
            wpos += DESC + got;
        }
        FrameChain {
            next_seq: io.seq.wrapping_add(off as u32),
            have: got as u32,
            partial: bytes,
        }
    };
    let _ = FRAME_CHAINS.insert(&k, &next, 0);
    Ok(wpos as u32)
}

/// Write a window's descriptor at `at` bytes into the payload.
#[inline(always)]
fn write_desc(payload: *mut u8, at: u64, offset: i64, len: u64) {
    let desc = FrameWindow {
        offset: offset as i32,
        len: len as u16,
        pad0: 0,
    };
    if at + DESC > 2 * MAX_CAPTURE as u64 {
        return;
    }
    // SAFETY: bounds checked just above.
    unsafe {
        payload
            .add(at as usize)
            .cast::<FrameWindow>()
            .write_unaligned(desc);
    }
}
