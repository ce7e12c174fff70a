//! HTTP/2 (RFC 9113): frames of both directions, HPACK with one dynamic table per direction,
//! streams paired into exchanges, gRPC on top (service and method from `:path`, status from the
//! trailers or a trailers-only response, message counts from the length-prefixed DATA).
//!
//! DATA payloads are counted, not buffered; other frames are buffered whole (up to a cap).
//! A syscall arrives as its captured prefix, the probe's frame windows (every frame header
//! beyond the prefix, with the start of its payload: see `wirespan_shared::FrameWindow`) and
//! the gaps between them, known by exact count. A gap inside a payload is skipped by count; a
//! gap that cuts a header block leaves that block undecoded (the stream is marked truncated and
//! the HPACK table unknown) but keeps the framing. Only a gap over a frame header (no window:
//! the probe lost the chain) or a jump in the TCP sequence numbers (events lost) loses the
//! framing, counted; the direction then waits for a syscall that starts on a plausible frame
//! boundary, and decodes headers only from what does not depend on the lost table.
//!
//! Credentials in header blocks are masked in place for whatever keeps or shows the bytes
//! (`secrets`): each block remembers where its fragments sat in the direction's byte stream.

pub mod chain_model;
pub mod frame;
pub mod hpack;
mod secrets;
#[cfg(test)]
mod secrets_tests;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use self::{
    frame::{
        CONTINUATION, DATA, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FrameHeader,
        HEADER_LEN, HEADERS, PUSH_PROMISE, RST_STREAM, SETTINGS,
    },
    stream::{
        Stream, apply_request_fields, apply_response_fields, header_fragment, role_from_fields,
    },
};
use super::{
    Piece, Segment,
    content::{ContentMarks, SECRET_FILL},
    exchange::{Detail, Exchange, Flags, Grpc, HttpVersion},
};
use crate::event::Direction;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = &wirespan_shared::HTTP2_PREFACE;
/// Streams tracked at once per connection; more are counted and ignored.
pub const MAX_STREAMS: usize = 1024;
/// Non-DATA frames (and header blocks with their CONTINUATIONs) buffered at most.
pub const MAX_BUFFERED_FRAME: usize = 256 * 1024;
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// Counters of what the decoder had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Http2Stats {
    /// Times a direction lost its framing.
    pub desyncs: u64,
    /// Header blocks not decoded in full (unknown or lost HPACK state, malformed).
    pub undecoded_header_blocks: u64,
    /// Streams ignored because `MAX_STREAMS` were open.
    pub stream_overflow: u64,
    /// Frames too large to buffer, skipped by count.
    pub oversized_frames: u64,
    /// Frames cut by uncaptured bytes (a header block larger than the probe's window), skipped
    /// by count with the framing kept.
    pub cut_frames: u64,
    /// Segments that did not start where the previous one of their direction ended (events
    /// lost in the kernel): each lost the framing.
    pub seq_gaps: u64,
    /// Mid-connection roles guessed from an opening header block that a later block showed
    /// wrong (the streams open then were dropped).
    pub wrong_role_guesses: u64,
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    kind: u8,
    end_stream: bool,
    block: Vec<u8>,
    /// Where the block's fragments sat: (offset in `block`, position in the direction's byte
    /// stream), one per frame.
    origins: Vec<(usize, u64)>,
    /// Part of the block was never captured: it is not decoded.
    cut: bool,
}

impl PendingBlock {
    /// The byte-stream position of byte `at` of the block.
    fn position(&self, at: usize) -> Option<u64> {
        let (start, origin) = self.origins.iter().rev().find(|(start, _)| *start <= at)?;
        Some(origin + (at - start) as u64)
    }
}

/// The payload of the frame being read, when it is consumed as it arrives.
#[derive(Debug, Clone, Copy)]
enum Streaming {
    /// A DATA frame: padding length still to read (PADDED), data bytes left, padding left.
    Data {
        stream: u32,
        flags: u8,
        pad_known: bool,
        data_left: u64,
        pad_left: u64,
    },
    /// A frame too large to buffer, skipped by count.
    Skip { left: u64 },
}

#[derive(Debug)]
struct DirState {
    buf: Vec<u8>,
    streaming: Option<Streaming>,
    expect_preface: bool,
    synced: bool,
    hpack: hpack::Decoder,
    pending_block: Option<PendingBlock>,
    /// TCP sequence number where the next segment should start (0: unknown).
    next_seq: u32,
    /// Bytes of this direction fed before the current segment: its first byte's position in
    /// the direction's byte stream, which header blocks' origins are counted in.
    segment_start: u64,
    /// Position of the byte after the current segment.
    segment_end: u64,
    /// The TCP sequence number of position 0 (mod 2^32), from the current segment's: a
    /// position's number is this plus the position. `None` where the segment has none (TLS
    /// plaintext, whose positions do not count encrypted bytes; a failed kernel read).
    seq_base: Option<u32>,
}

impl DirState {
    /// The TCP sequence number of the byte at `position` in this direction's stream.
    fn seq_at(&self, position: u64) -> Option<u32> {
        // Mod 2^32 on purpose: sequence numbers wrap.
        self.seq_base.map(|base| base.wrapping_add(position as u32))
    }
}

impl DirState {
    fn new(from_start: bool, expect_preface: bool) -> Self {
        Self {
            buf: Vec::new(),
            streaming: None,
            expect_preface,
            synced: true,
            hpack: hpack::Decoder::new(from_start),
            pending_block: None,
            next_seq: 0,
            segment_start: 0,
            segment_end: 0,
            seq_base: None,
        }
    }
}

/// HTTP/2 state of one connection.
#[derive(Debug)]
pub struct Http2Conn {
    /// Which direction carries requests; `None` until a header block shows it (mid-connection).
    request_direction: Option<Direction>,
    /// `request_direction` was guessed (see `learn_role`): a decoded block may still correct it.
    role_guessed: bool,
    /// Index 0: egress, 1: ingress.
    dirs: [DirState; 2],
    streams: HashMap<u32, Stream>,
    from_start: bool,
    pub stats: Http2Stats,
    /// The DATA content in the segment last fed (TLS plaintext only).
    pub(crate) marks: ContentMarks,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

impl Http2Conn {
    /// A connection seen from its preface, which travels in `request_direction`.
    #[must_use]
    pub fn from_preface(request_direction: Direction) -> Self {
        let mut dirs = [DirState::new(true, false), DirState::new(true, false)];
        dirs[dir_index(request_direction)].expect_preface = true;
        Self {
            request_direction: Some(request_direction),
            role_guessed: false,
            dirs,
            streams: HashMap::new(),
            from_start: true,
            stats: Http2Stats::default(),
            marks: ContentMarks::default(),
        }
    }

    /// A connection joined mid-way: HPACK state unknown, roles not yet known.
    #[must_use]
    pub fn mid_connection() -> Self {
        Self {
            request_direction: None,
            role_guessed: false,
            dirs: [DirState::new(false, false), DirState::new(false, false)],
            streams: HashMap::new(),
            from_start: false,
            stats: Http2Stats::default(),
            marks: ContentMarks::default(),
        }
    }

    /// Feed one syscall's bytes; completed exchanges are appended to `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if !self.from_start && seg.data.starts_with(PREFACE) {
            // The preface only ever opens a connection: what looked like a mid-connection join
            // was the server's SETTINGS, written before it read the client's preface. Nothing
            // with header state has passed yet, so both tables are known (empty).
            let secrets = self.marks.secrets().cloned();
            *self = Self::from_preface(seg.direction);
            self.marks.set_secrets(secrets);
        }
        let d = dir_index(seg.direction);
        self.marks.begin(seg.tls);
        let total = seg.data.len() as u64 + seg.missing;
        self.dirs[d].segment_start = self.dirs[d].segment_end;
        self.dirs[d].segment_end += total;
        self.dirs[d].seq_base = (!seg.tls && seg.origin.seq != 0).then(|| {
            // Mod 2^32 on purpose: sequence numbers wrap.
            seg.origin
                .seq
                .wrapping_sub(self.dirs[d].segment_start as u32)
        });
        self.check_continuity(seg);
        if !self.dirs[d].synced {
            if !frame::starts_with_frames(seg.data) {
                self.marks.rest(total);
                return;
            }
            self.dirs[d].synced = true;
            self.dirs[d].buf.clear();
            self.dirs[d].streaming = None;
            self.dirs[d].pending_block = None;
        }
        for piece in seg.pieces() {
            if !self.dirs[d].synced {
                // Lost inside this segment: wait for one that starts on a frame.
                self.marks.rest(total);
                return;
            }
            match piece {
                Piece::Bytes(bytes) => {
                    if self.dirs[d].buf.len() + bytes.len() > MAX_BUFFERED_FRAME + HEADER_LEN {
                        self.stats.oversized_frames += 1;
                        self.lose_sync(seg.direction, true);
                        self.marks.rest(total);
                        return;
                    }
                    self.dirs[d].buf.extend_from_slice(bytes);
                    self.marks.took(bytes.len() as u64);
                    self.run(seg, out);
                }
                Piece::Gap(missing) => {
                    // Buffered bytes sit before the gap: it counts once they are placed.
                    self.gap(seg, missing, out);
                    self.marks.took(missing);
                }
            }
        }
        self.mask_unfinished_block(d);
    }

    /// Segments of a direction follow each other in TCP sequence space; one that does not start
    /// where the last ended means events were lost, and with them the framing. Sequence number
    /// 0 means unknown (a failed kernel read, hand-made segments, TLS plaintext) and is not
    /// checked.
    fn check_continuity(&mut self, seg: &Segment<'_>) {
        let d = dir_index(seg.direction);
        let expected = self.dirs[d].next_seq;
        let seq = if seg.tls { 0 } else { seg.origin.seq };
        let end = seq.wrapping_add((seg.data.len() as u64 + seg.missing) as u32);
        self.dirs[d].next_seq = if seq == 0 { 0 } else { end };
        if expected != 0 && seq != 0 && seq != expected && self.dirs[d].synced {
            self.stats.seq_gaps += 1;
            self.lose_sync(seg.direction, true);
        }
    }

    /// Bytes this connection holds: buffers, header tables, open streams (estimated).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.dirs
            .iter()
            .map(|d| {
                d.buf.capacity()
                    + d.hpack.table_bytes()
                    + d.pending_block.as_ref().map_or(0, |b| b.block.capacity())
            })
            .sum::<usize>()
            + self.streams.len() * 512
    }

    /// The connection closed: streams still open are emitted as they are.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(mut s) = self.streams.remove(&id) {
                s.end_ns = s.end_ns.max(ts_ns);
                let no_response = !s.response_headers_seen;
                out.push(self.exchange(
                    id,
                    s,
                    Flags {
                        no_response,
                        reset: !no_response,
                        ..Flags::default()
                    },
                ));
            }
        }
    }

    fn lose_sync(&mut self, direction: Direction, header_state_lost: bool) {
        self.stats.desyncs += 1;
        let dir = &mut self.dirs[dir_index(direction)];
        // What framing no longer explains may be anything, content included.
        self.marks.content_at_front(dir.buf.len(), dir.buf.len());
        dir.synced = false;
        dir.buf.clear();
        dir.streaming = None;
        if header_state_lost || dir.pending_block.take().is_some() {
            dir.hpack.mark_unknown();
        }
    }

    /// Uncaptured bytes: fine inside a DATA payload or a skipped frame, and inside any other
    /// frame at the cost of that frame; lost framing when they hide a frame header.
    fn gap(&mut self, seg: &Segment<'_>, mut missing: u64, out: &mut Vec<Exchange>) {
        let d = dir_index(seg.direction);
        if !self.dirs[d].synced {
            return;
        }
        if self.dirs[d].streaming.is_none()
            && let Some(header) = FrameHeader::parse(&self.dirs[d].buf)
        {
            // A buffered frame that the gap cuts (whole frames were consumed by `run`).
            let left = (HEADER_LEN + header.len as usize).saturating_sub(self.dirs[d].buf.len());
            if matches!(header.kind, HEADERS | CONTINUATION | PUSH_PROMISE) {
                // Never decoded, so nothing says where credentials are in its captured part.
                let buffered = self.dirs[d].buf.len() as u64;
                let at = i128::from(self.marks.taken()) - i128::from(buffered);
                self.marks.secret_at(
                    at + HEADER_LEN as i128,
                    buffered - HEADER_LEN as u64,
                    SECRET_FILL,
                );
            }
            self.dirs[d].buf.clear();
            self.dirs[d].streaming = Some(Streaming::Skip { left: left as u64 });
            self.cut_frame(seg, header, out);
        }
        let is_request = self.request_direction == Some(seg.direction);
        if self.dirs[d].buf.is_empty() {
            match self.dirs[d].streaming {
                Some(Streaming::Skip { left }) if missing <= left => {
                    self.dirs[d].streaming = (missing < left).then_some(Streaming::Skip {
                        left: left - missing,
                    });
                    missing = 0;
                }
                Some(Streaming::Data {
                    stream,
                    flags,
                    pad_known: true,
                    data_left,
                    pad_left,
                }) if missing <= data_left + pad_left => {
                    let in_data = missing.min(data_left);
                    if let Some(s) = self.streams.get_mut(&stream) {
                        s.bytes[usize::from(!is_request)] += missing;
                        s.messages[usize::from(!is_request)].gap(in_data);
                        s.end_ns = s.end_ns.max(seg.ts_exit_ns);
                    }
                    let (data_left, pad_left) =
                        (data_left - in_data, pad_left - (missing - in_data));
                    missing = 0;
                    self.data_progress(seg, stream, flags, data_left, pad_left, out);
                }
                _ => {}
            }
        }
        if missing > 0 {
            // The stream whose DATA ran into the lost bytes has an unknown size from here.
            if let Some(Streaming::Data { stream, .. }) = self.dirs[d].streaming
                && let Some(s) = self.streams.get_mut(&stream)
            {
                s.truncated = true;
            }
            // Headers may have been in the lost bytes: the table can no longer be trusted.
            self.lose_sync(seg.direction, true);
        }
    }

    /// A non-DATA frame of which only the start was captured: its bytes are skipped by count.
    /// A header block in it cannot be decoded, and the HPACK table, which it may have changed,
    /// is unknown from here; its stream is still opened or ended (the flags were captured).
    fn cut_frame(&mut self, seg: &Segment<'_>, header: FrameHeader, out: &mut Vec<Exchange>) {
        let d = dir_index(seg.direction);
        self.stats.cut_frames += 1;
        self.count_frame_header(seg, header);
        let block = match header.kind {
            HEADERS | PUSH_PROMISE => Some(PendingBlock {
                stream: header.stream,
                kind: header.kind,
                end_stream: header.flags & FLAG_END_STREAM != 0,
                block: Vec::new(),
                origins: Vec::new(),
                cut: true,
            }),
            CONTINUATION => self.dirs[d].pending_block.take().map(|mut b| {
                b.cut = true;
                b
            }),
            _ => return,
        };
        self.dirs[d].hpack.mark_unknown();
        let Some(block) = block else {
            self.stats.undecoded_header_blocks += 1;
            return;
        };
        if header.flags & FLAG_END_HEADERS != 0 {
            self.header_block(seg, &block, out);
        } else {
            self.dirs[d].pending_block = Some(block);
        }
    }

    /// Consume every complete frame (and streamed DATA bytes) in the direction's buffer.
    fn run(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        let d = dir_index(seg.direction);
        if self.dirs[d].expect_preface {
            if self.dirs[d].buf.len() < PREFACE.len() {
                return;
            }
            if !self.dirs[d].buf.starts_with(PREFACE) {
                self.lose_sync(seg.direction, true);
                return;
            }
            self.dirs[d].buf.drain(..PREFACE.len());
            self.dirs[d].expect_preface = false;
        }
        loop {
            if !self.dirs[d].synced {
                return;
            }
            if let Some(streaming) = self.dirs[d].streaming {
                if !self.stream_payload(seg, streaming, out) {
                    return;
                }
                continue;
            }
            let Some(header) = FrameHeader::parse(&self.dirs[d].buf) else {
                return;
            };
            if !header.follows_rules() {
                self.lose_sync(seg.direction, true);
                return;
            }
            if header.kind == DATA {
                self.dirs[d].buf.drain(..HEADER_LEN);
                let pad_known = header.flags & FLAG_PADDED == 0;
                self.dirs[d].streaming = Some(Streaming::Data {
                    stream: header.stream,
                    flags: header.flags,
                    pad_known,
                    data_left: u64::from(header.len),
                    pad_left: 0,
                });
                self.count_frame_header(seg, header);
                continue;
            }
            if header.len as usize > MAX_BUFFERED_FRAME {
                self.stats.oversized_frames += 1;
                self.dirs[d].buf.drain(..HEADER_LEN);
                self.dirs[d].streaming = Some(Streaming::Skip {
                    left: u64::from(header.len),
                });
                if matches!(header.kind, HEADERS | CONTINUATION | PUSH_PROMISE) {
                    self.dirs[d].hpack.mark_unknown();
                }
                continue;
            }
            let total = HEADER_LEN + header.len as usize;
            if self.dirs[d].buf.len() < total {
                return;
            }
            let payload_at = self.buffer_start(d) + HEADER_LEN as u64;
            let payload: Vec<u8> = self.dirs[d].buf[HEADER_LEN..total].to_vec();
            self.dirs[d].buf.drain(..total);
            self.count_frame_header(seg, header);
            self.frame(seg, header, &payload, payload_at, out);
        }
    }

    /// The byte-stream position of the first byte buffered in direction `d`.
    fn buffer_start(&self, d: usize) -> u64 {
        let dir = &self.dirs[d];
        (dir.segment_start + self.marks.taken()).saturating_sub(dir.buf.len() as u64)
    }

    /// Count a frame's header (and, for non-DATA frames, payload) bytes to its stream.
    fn count_frame_header(&mut self, seg: &Segment<'_>, header: FrameHeader) {
        let is_request = self.request_direction == Some(seg.direction);
        if let Some(s) = self.streams.get_mut(&header.stream) {
            let extra = if header.kind == DATA {
                0
            } else {
                u64::from(header.len)
            };
            s.bytes[usize::from(!is_request)] += HEADER_LEN as u64 + extra;
            if !is_request {
                s.end_ns = s.end_ns.max(seg.ts_exit_ns);
            }
        }
    }

    /// Consume buffered bytes of a streamed payload; false when more bytes are needed.
    fn stream_payload(
        &mut self,
        seg: &Segment<'_>,
        streaming: Streaming,
        out: &mut Vec<Exchange>,
    ) -> bool {
        let d = dir_index(seg.direction);
        let is_request = self.request_direction == Some(seg.direction);
        match streaming {
            Streaming::Skip { left } => {
                // Not decoded: blanked like content.
                let take = (left as usize).min(self.dirs[d].buf.len());
                self.marks.content_at_front(self.dirs[d].buf.len(), take);
                self.dirs[d].buf.drain(..take);
                let left = left - take as u64;
                self.dirs[d].streaming = (left > 0).then_some(Streaming::Skip { left });
                left == 0
            }
            Streaming::Data {
                stream,
                flags,
                pad_known: false,
                data_left,
                ..
            } => {
                let Some(&pad) = self.dirs[d].buf.first() else {
                    return false;
                };
                self.dirs[d].buf.drain(..1);
                let pad = u64::from(pad).min(data_left.saturating_sub(1));
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.bytes[usize::from(!is_request)] += 1;
                }
                self.dirs[d].streaming = Some(Streaming::Data {
                    stream,
                    flags,
                    pad_known: true,
                    data_left: data_left.saturating_sub(1 + pad),
                    pad_left: pad,
                });
                true
            }
            Streaming::Data {
                stream,
                flags,
                pad_known: true,
                data_left,
                pad_left,
            } => {
                let buf = &self.dirs[d].buf;
                let data_take = (data_left as usize).min(buf.len());
                let pad_take = (pad_left as usize).min(buf.len() - data_take);
                let (marks, buffered) = (&mut self.marks, buf.len());
                // gRPC's length prefixes are framing; everything else in DATA is content.
                let grpc = self.streams.get(&stream).is_some_and(|s| s.grpc);
                if !grpc {
                    marks.content_at_front(buffered, data_take);
                }
                marks.content_in_buffer(buffered, data_take, pad_take);
                if let Some(s) = self.streams.get_mut(&stream) {
                    let side = usize::from(!is_request);
                    s.message_counts[side] +=
                        s.messages[side].feed(&buf[..data_take], |at, len| {
                            if grpc {
                                marks.content_in_buffer(buffered, at, len);
                            }
                        });
                    s.bytes[side] += (data_take + pad_take) as u64;
                    if !is_request {
                        s.end_ns = s.end_ns.max(seg.ts_exit_ns);
                    }
                }
                self.dirs[d].buf.drain(..data_take + pad_take);
                let (data_left, pad_left) =
                    (data_left - data_take as u64, pad_left - pad_take as u64);
                self.data_progress(seg, stream, flags, data_left, pad_left, out)
            }
        }
    }

    /// A DATA payload has `data_left` + `pad_left` bytes to go: keep streaming it, or, when it
    /// is done, close it (END_STREAM). Returns whether it is done.
    fn data_progress(
        &mut self,
        seg: &Segment<'_>,
        stream: u32,
        flags: u8,
        data_left: u64,
        pad_left: u64,
        out: &mut Vec<Exchange>,
    ) -> bool {
        let d = dir_index(seg.direction);
        if data_left + pad_left > 0 {
            self.dirs[d].streaming = Some(Streaming::Data {
                stream,
                flags,
                pad_known: true,
                data_left,
                pad_left,
            });
            return false;
        }
        self.dirs[d].streaming = None;
        self.end_of_data(seg, stream, flags, out);
        true
    }

    fn end_of_data(&mut self, seg: &Segment<'_>, stream: u32, flags: u8, out: &mut Vec<Exchange>) {
        if flags & FLAG_END_STREAM != 0 {
            self.end_stream(seg, stream, out);
        }
    }

    /// A complete non-DATA frame, whose payload sat at `payload_at` in the byte stream.
    fn frame(
        &mut self,
        seg: &Segment<'_>,
        header: FrameHeader,
        payload: &[u8],
        payload_at: u64,
        out: &mut Vec<Exchange>,
    ) {
        let d = dir_index(seg.direction);
        match header.kind {
            HEADERS | PUSH_PROMISE => {
                let Some(fragment) = header_fragment(header, payload) else {
                    self.lose_sync(seg.direction, true);
                    return;
                };
                let fragment_at = fragment.as_ptr() as usize - payload.as_ptr() as usize;
                let block = PendingBlock {
                    stream: header.stream,
                    kind: header.kind,
                    end_stream: header.flags & FLAG_END_STREAM != 0,
                    block: fragment.to_vec(),
                    origins: vec![(0, payload_at + fragment_at as u64)],
                    cut: false,
                };
                if header.flags & FLAG_END_HEADERS != 0 {
                    self.header_block(seg, &block, out);
                } else {
                    self.dirs[d].pending_block = Some(block);
                }
            }
            CONTINUATION => {
                let Some(mut block) = self.dirs[d].pending_block.take() else {
                    // The HEADERS it continues was not seen.
                    self.stats.undecoded_header_blocks += 1;
                    self.dirs[d].hpack.mark_unknown();
                    return;
                };
                if block.block.len() + payload.len() > MAX_BUFFERED_FRAME {
                    self.stats.oversized_frames += 1;
                    self.dirs[d].hpack.mark_unknown();
                    return;
                }
                if !block.cut {
                    block.origins.push((block.block.len(), payload_at));
                    block.block.extend_from_slice(payload);
                }
                if header.flags & FLAG_END_HEADERS != 0 {
                    self.header_block(seg, &block, out);
                } else {
                    self.dirs[d].pending_block = Some(block);
                }
            }
            RST_STREAM => {
                if let Some(mut s) = self.streams.remove(&header.stream) {
                    s.end_ns = s.end_ns.max(seg.ts_exit_ns);
                    out.push(self.exchange(
                        header.stream,
                        s,
                        Flags {
                            reset: true,
                            ..Flags::default()
                        },
                    ));
                }
            }
            SETTINGS if header.flags & 0x1 == 0 => {
                // The sender's decoder limit binds the encoder of the other direction.
                for setting in payload.as_chunks::<6>().0 {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    if id == SETTINGS_HEADER_TABLE_SIZE {
                        self.dirs[dir_index(other(seg.direction))]
                            .hpack
                            .set_allowed_max(value);
                    }
                }
            }
            _ => {}
        }
    }

    /// A complete header block (HEADERS or PUSH_PROMISE with its CONTINUATIONs).
    fn header_block(&mut self, seg: &Segment<'_>, block: &PendingBlock, out: &mut Vec<Exchange>) {
        let d = dir_index(seg.direction);
        let table_known = self.dirs[d].hpack.is_known();
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut literals = Vec::new();
        // Where literals are is kept only when credentials are masked (a recording, the
        // events view): spans need the fields alone.
        let noting = self.marks.secrets().is_some();
        let result = (!block.cut).then(|| {
            self.dirs[d]
                .hpack
                .decode_literals(&block.block, |n, v, literal| {
                    fields.push((n.to_vec(), v.to_vec()));
                    if noting && let Some(literal) = literal {
                        literals.push((Some(n.to_vec()), literal));
                    }
                })
        });
        if !block.cut {
            self.mask_secrets(d, block, &mut literals, result.and_then(Result::err));
        }
        let result = result.map(|r| r.map_err(|(e, _)| e));
        let decoded = matches!(result, Some(Ok(())));
        if !decoded {
            self.stats.undecoded_header_blocks += 1;
        }
        if block.kind == PUSH_PROMISE {
            // Decoded only to keep the table in step; pushed streams are not exchanges here.
            return;
        }
        // A block that breaks HPACK itself on a table known from the connection's start (an
        // index past both tables, an integer overflow, a size update over the limit, a bad
        // Huffman code, a representation cut short) is a COMPRESSION_ERROR, a connection
        // error (RFC 9113 section 4.3): the receiver serves nothing on it. The fields decoded
        // before the error are not a request (nor a response), so no stream is opened from it.
        // Only an unknown table (joined mid-connection) leaves a block's fields worth keeping.
        if table_known && matches!(result, Some(Err(e)) if e != hpack::HpackError::UnknownTable) {
            return;
        }
        if !self.learn_role(&fields, seg.direction, block.stream) {
            return;
        }
        let is_request = self.request_direction == Some(seg.direction);
        let headers_unknown = !decoded;
        if is_request {
            if !self.streams.contains_key(&block.stream) && self.streams.len() >= MAX_STREAMS {
                self.stats.stream_overflow += 1;
                return;
            }
            let s = self.streams.entry(block.stream).or_default();
            if !s.request_headers_seen {
                s.request_headers_seen = true;
                s.start_ns = Some(seg.first_byte_ns());
                // HTTP/2 requests are joined across processes by stream id; the segment's
                // sequence number is kept for completeness.
                s.origin = seg.origin;
                s.wire.request = block
                    .origins
                    .first()
                    .and_then(|&(_, at)| self.dirs[d].seq_at(at));
                s.headers_unknown |= headers_unknown;
                s.truncated |= block.cut;
                apply_request_fields(s, &fields);
                s.bytes[0] += (HEADER_LEN + block.block.len()) as u64;
            }
            if block.end_stream {
                s.request_ended = true;
            }
        } else {
            if !self.streams.contains_key(&block.stream) {
                // The request went by before the capture could read it. Joined mid-connection,
                // a client stream's response opens it anyway: a Go handler's probe may still
                // name its request (an exchange no probe names is dropped later, counted).
                if self.from_start
                    || block.stream.is_multiple_of(2)
                    || self.streams.len() >= MAX_STREAMS
                {
                    return;
                }
                let s = self.streams.entry(block.stream).or_default();
                s.request_unseen = true;
                s.request_ended = true;
            }
            let Some(s) = self.streams.get_mut(&block.stream) else {
                return;
            };
            s.headers_unknown |= headers_unknown;
            s.truncated |= block.cut;
            if !s.response_headers_seen {
                s.wire.response = block
                    .origins
                    .first()
                    .and_then(|&(_, at)| self.dirs[d].seq_at(at));
            }
            s.response_headers_seen = true;
            s.end_ns = s.end_ns.max(seg.ts_exit_ns);
            apply_response_fields(s, &fields);
            if block.end_stream {
                self.end_stream(seg, block.stream, out);
            }
        }
    }

    /// Learn which direction carries requests from a header block, if not known for sure;
    /// false while it is still unknown (the block cannot be placed).
    ///
    /// A decoded block tells it (`:method` or `:status`). On a connection joined mid-way whose
    /// HPACK table is unknown, blocks that reference the table decode to nothing: a warm pooled
    /// connection's requests do, and only the responses' `:status` (a static entry) would say
    /// it, after the first request was already lost. So the first undecodable block that opens
    /// a client stream (odd id, not seen yet) is taken as a request, and a decoded block that
    /// says otherwise corrects the guess (the streams open then are dropped, counted).
    fn learn_role(
        &mut self,
        fields: &[(Vec<u8>, Vec<u8>)],
        direction: Direction,
        stream: u32,
    ) -> bool {
        if self.request_direction.is_some() && !self.role_guessed {
            return true;
        }
        match role_from_fields(fields, direction) {
            Some(role) => {
                if self.request_direction.is_some_and(|guess| guess != role) {
                    self.stats.wrong_role_guesses += 1;
                    self.streams.clear();
                }
                self.request_direction = Some(role);
                self.role_guessed = false;
                true
            }
            None if self.request_direction.is_some() => true,
            None if fields.is_empty()
                && !stream.is_multiple_of(2)
                && !self.streams.contains_key(&stream) =>
            {
                self.request_direction = Some(direction);
                self.role_guessed = true;
                true
            }
            None => false,
        }
    }

    /// END_STREAM in one direction: the exchange is complete when the response ends.
    fn end_stream(&mut self, seg: &Segment<'_>, stream: u32, out: &mut Vec<Exchange>) {
        let is_request = self.request_direction == Some(seg.direction);
        if is_request {
            if let Some(s) = self.streams.get_mut(&stream) {
                s.request_ended = true;
            }
            return;
        }
        if let Some(mut s) = self.streams.remove(&stream) {
            s.end_ns = s.end_ns.max(seg.ts_exit_ns);
            out.push(self.exchange(stream, s, Flags::default()));
        }
    }

    fn exchange(&self, id: u32, s: Stream, mut flags: Flags) -> Exchange {
        flags.headers_unknown |= s.headers_unknown || !self.from_start && !s.request_headers_seen;
        flags.truncated |= s.truncated;
        flags.request_unseen |= s.request_unseen;
        let mut http = s.http;
        http.version = Some(HttpVersion::Http2);
        http.stream_id = Some(id);
        let detail = if s.grpc {
            let (service, method) = Grpc::split_path(&http.target)
                .map(|(s, m)| (s.to_owned(), m.to_owned()))
                .unwrap_or_default();
            Detail::Grpc(Grpc {
                http,
                service,
                method,
                status: s.grpc_status,
                message: s.grpc_message,
                request_messages: s.message_counts[0],
                response_messages: s.message_counts[1],
            })
        } else {
            Detail::Http(http)
        };
        Exchange {
            request_direction: self.request_direction.unwrap_or(Direction::Egress),
            start_ns: s.start_ns.unwrap_or(s.end_ns),
            origin: s.origin,
            end_ns: s.end_ns,
            request_bytes: s.bytes[0],
            response_bytes: s.bytes[1],
            wire: s.wire,
            detail,
            flags,
        }
    }
}
