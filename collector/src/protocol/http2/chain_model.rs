//! A model of the probe's HTTP/2 frame chain (probes-ebpf/src/frames.rs), for tests: given a
//! direction's whole byte stream and where the syscalls cut it, the windows the probe would
//! send beside each syscall's captured prefix. It follows the same rules (windows for frames
//! that reach beyond the prefix, DATA windows of `WINDOW_DATA_PAYLOAD` bytes, a header cut by a
//! syscall's end carried into the next with a negative offset, the per-event byte budget), so
//! decoder tests see what the privileged runs see, without a kernel.

use wirespan_shared::{
    HTTP2_FRAME_HEADER, MAX_WINDOW_BYTES, WINDOW_DATA_PAYLOAD, WINDOW_DESC_LEN, WINDOW_MAX_LEN,
};

use crate::event::Window;

/// One direction's chain: the stream offset where the next frame starts.
#[derive(Debug, Clone, Copy)]
pub struct ChainModel {
    next: usize,
}

impl ChainModel {
    /// A direction whose first frame starts at `first_frame` (24 after a client preface, 0 for
    /// the server's direction).
    #[must_use]
    pub fn new(first_frame: usize) -> Self {
        Self { next: first_frame }
    }

    /// The windows of a syscall that moved `stream[start..end]` with `captured` bytes captured.
    #[must_use]
    #[expect(
        clippy::cast_possible_wrap,
        reason = "test streams are far below 2^63 bytes"
    )]
    pub fn windows(
        &mut self,
        stream: &[u8],
        start: usize,
        end: usize,
        captured: usize,
    ) -> Vec<Window> {
        let mut out = Vec::new();
        let mut used = 0;
        while self.next < end {
            let f = self.next;
            let off = f as i64 - start as i64;
            if f + HTTP2_FRAME_HEADER > end {
                // The header is cut by the syscall's end: its first bytes go now.
                let got = end - f;
                if (end - start) > captured && used + WINDOW_DESC_LEN + got <= MAX_WINDOW_BYTES {
                    out.push(Window {
                        offset: off,
                        bytes: stream[f..end].to_vec(),
                    });
                }
                return out;
            }
            let h = &stream[f..f + HTTP2_FRAME_HEADER];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let cap = if h[3] == 0 {
                WINDOW_DATA_PAYLOAD
            } else {
                WINDOW_MAX_LEN - HTTP2_FRAME_HEADER
            };
            let full = HTTP2_FRAME_HEADER + len.min(cap);
            if off + full as i64 > captured as i64
                && used + WINDOW_DESC_LEN + full <= MAX_WINDOW_BYTES
            {
                let to = (f + full).min(end);
                out.push(Window {
                    offset: off,
                    bytes: stream[f..to].to_vec(),
                });
                used += WINDOW_DESC_LEN + full;
            }
            self.next = f + HTTP2_FRAME_HEADER + len;
        }
        out
    }
}
