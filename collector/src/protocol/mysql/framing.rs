//! MySQL packet framing over one direction's bytes: a 3-byte little-endian payload length and a
//! 1-byte sequence id, then the payload. A payload of exactly `MAX_PAYLOAD` bytes continues in
//! the next packet; the packets of one payload make one [`Message`].
//!
//! Only a bounded prefix of each payload is kept (`head`), as long as its kind needs (a `Cap`
//! of its sequence id and first byte: query text, but a few bytes of a row or an ERR); the rest
//! is skipped by count, whether it was captured or not, so rows, bind values and error messages
//! are not held. A gap (uncaptured bytes)
//! that runs past the end of a payload hides the next header: the direction is then lost until
//! the connection decoder says where the next packet starts (see `Reader::resume`).

use super::super::{Origin, Piece, Segment};

/// Largest payload of one packet; a packet this long is continued by the next.
pub(super) const MAX_PAYLOAD: u32 = 0xff_ffff;

/// One logical message: a packet, or several when the payload continued.
#[derive(Debug, Clone, Default)]
pub(super) struct Message {
    /// Sequence id of the first packet and of the last.
    pub first_seq: u8,
    pub last_seq: u8,
    /// Payload bytes over all its packets.
    pub len: u64,
    /// The payload's first bytes, at most what the reader's `Cap` allows.
    pub head: Vec<u8>,
    /// Bytes the head would have held were not captured.
    pub cut: bool,
    /// Bytes on the wire, headers included.
    pub wire: u64,
    pub start_ns: u64,
    pub origin: Origin,
    /// Exit time of the syscall that carried the last byte.
    pub end_ns: u64,
}

impl Message {
    /// `head` is the whole payload.
    pub fn whole(&self) -> bool {
        !self.cut && self.head.len() as u64 == self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a packet header (`have` of its 4 bytes so far).
    Header { bytes: [u8; 4], have: usize },
    /// Inside a payload, `left` bytes to go.
    Payload { left: u32 },
    /// Framing unknown; `resume` says the next segment starts a packet.
    Lost { resume: bool },
}

/// Head bytes to keep of a message, from its sequence id and first payload byte.
pub(super) type Cap = fn(u8, u8) -> usize;

/// The framing state of one direction.
#[derive(Debug)]
pub(super) struct Reader {
    state: State,
    cap: Cap,
    /// What the message in progress keeps (0 until its first payload byte).
    msg_cap: usize,
    /// The message in progress, and whether its last packet was full (continued).
    msg: Option<Message>,
    continued: bool,
}

impl Reader {
    /// A reader that starts at a packet boundary (`synced`) or lost, keeping `cap` head bytes.
    pub fn new(cap: Cap, synced: bool) -> Self {
        Self {
            state: if synced {
                State::Header {
                    bytes: [0; 4],
                    have: 0,
                }
            } else {
                State::Lost { resume: false }
            },
            cap,
            msg_cap: 0,
            msg: None,
            continued: false,
        }
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost { .. })
    }

    /// Lost, but the next segment starts a packet.
    pub fn resuming(&self) -> bool {
        self.state == (State::Lost { resume: true })
    }

    /// Whether the reader is between messages (nothing of a packet read yet).
    pub fn at_boundary(&self) -> bool {
        self.msg.is_none() && matches!(self.state, State::Header { have: 0, .. })
    }

    /// Lose framing now: the message in progress is dropped.
    pub fn lose(&mut self) {
        self.state = State::Lost { resume: false };
        self.msg = None;
        self.continued = false;
    }

    /// A lost reader takes the start of the next segment for a packet start (the peer's next
    /// message begins there: a response starts with the read after its command was written).
    pub fn resume(&mut self) {
        if let State::Lost { resume } = &mut self.state {
            *resume = true;
        }
    }

    /// Start at a packet boundary now (the caller checked the segment starts with a packet).
    pub fn restart(&mut self) {
        *self = Self::new(self.cap, true);
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.msg.as_ref().map_or(0, |m| m.head.capacity())
    }

    /// Frame one segment's bytes; complete messages are appended to `out`. When a gap hides a
    /// packet header in this segment, the reader is lost and this returns the bytes it could
    /// not frame (the message in progress so far and the rest of the segment).
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Message>) -> Option<u64> {
        if self.state == (State::Lost { resume: true }) {
            self.restart();
        }
        let total = seg.data.len() as u64 + seg.missing;
        let mut pos: u64 = 0;
        for piece in seg.pieces() {
            if self.is_lost() {
                return None;
            }
            match piece {
                Piece::Bytes(bytes) => self.bytes(seg, &mut pos, bytes, out),
                Piece::Gap(n) => {
                    if let Err(left) = self.gap(seg, n, out) {
                        pos += n - left;
                        let partial = self.msg.as_ref().map_or(0, |m| m.wire);
                        let header = match self.state {
                            State::Header { have, .. } => have as u64,
                            _ => 0,
                        };
                        self.lose();
                        return Some(partial + header + (total - pos));
                    }
                    pos += n;
                }
            }
        }
        None
    }

    fn bytes(
        &mut self,
        seg: &Segment<'_>,
        pos: &mut u64,
        mut bytes: &[u8],
        out: &mut Vec<Message>,
    ) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Header { bytes: hdr, have } => {
                    if *have == 0 && self.msg.is_none() {
                        self.msg = Some(Message {
                            start_ns: seg.first_byte_ns(),
                            origin: Origin {
                                seq: seg.origin.seq.wrapping_add(*pos as u32),
                                ..seg.origin
                            },
                            ..Message::default()
                        });
                    }
                    let take = (4 - *have).min(bytes.len());
                    hdr[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    *pos += take as u64;
                    if *have == 4 {
                        let hdr = *hdr;
                        self.header(hdr, seg, out);
                    }
                }
                State::Payload { left } => {
                    let take = (*left as usize).min(bytes.len());
                    *left -= take as u32;
                    let done = *left == 0;
                    if let Some(msg) = self.msg.as_mut() {
                        if msg.head.is_empty() && take > 0 {
                            self.msg_cap = (self.cap)(msg.first_seq, bytes[0]);
                        }
                        let room = self.msg_cap.saturating_sub(msg.head.len()).min(take);
                        msg.head.extend_from_slice(&bytes[..room]);
                        msg.wire += take as u64;
                    }
                    bytes = &bytes[take..];
                    *pos += take as u64;
                    if done {
                        self.packet_done(seg, out);
                    }
                }
                State::Lost { .. } => return,
            }
        }
    }

    /// Skip `n` uncaptured bytes; the count left when they run past a payload into a header.
    fn gap(&mut self, seg: &Segment<'_>, mut n: u64, out: &mut Vec<Message>) -> Result<(), u64> {
        while n > 0 {
            let State::Payload { left } = &mut self.state else {
                return Err(n);
            };
            let skip = u64::from(*left).min(n);
            *left -= skip as u32;
            n -= skip;
            let done = *left == 0;
            if let Some(msg) = self.msg.as_mut() {
                msg.wire += skip;
                if msg.head.is_empty() || msg.head.len() < self.msg_cap {
                    msg.cut = true;
                }
            }
            if done {
                self.packet_done(seg, out);
            }
        }
        Ok(())
    }

    fn header(&mut self, hdr: [u8; 4], seg: &Segment<'_>, out: &mut Vec<Message>) {
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]);
        let seq = hdr[3];
        if let Some(msg) = self.msg.as_mut() {
            if !self.continued {
                msg.first_seq = seq;
            }
            msg.last_seq = seq;
            msg.len += u64::from(len);
            msg.wire += 4;
        }
        self.continued = len == MAX_PAYLOAD;
        self.state = State::Payload { left: len };
        if len == 0 {
            self.packet_done(seg, out);
        }
    }

    fn packet_done(&mut self, seg: &Segment<'_>, out: &mut Vec<Message>) {
        self.state = State::Header {
            bytes: [0; 4],
            have: 0,
        };
        if self.continued {
            return;
        }
        if let Some(mut msg) = self.msg.take() {
            msg.end_ns = seg.ts_exit_ns;
            out.push(msg);
        }
    }
}
