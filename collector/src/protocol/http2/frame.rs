//! HTTP/2 frame headers (RFC 9113 section 4.1), checked before they are trusted.

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE can go up to 2^24-1; frames longer than this are implausible
/// enough to mean lost sync when joining mid-connection.
pub const PLAUSIBLE_MAX_LEN: u32 = 1 << 20;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    /// Parse the 9-byte header at the start of `buf`, if there are 9 bytes.
    #[must_use]
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h = buf.get(..HEADER_LEN)?;
        Some(Self {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether the header obeys the frame rules a real peer follows (known type, stream id
    /// where one is required and none where not, fixed lengths): the test for a frame boundary.
    #[must_use]
    pub fn plausible(&self) -> bool {
        self.len <= PLAUSIBLE_MAX_LEN && self.kind <= CONTINUATION && self.follows_rules()
    }

    /// Whether a frame met where the framing says one starts obeys its type's rules. Frames of
    /// unknown (extension) types must be ignored (RFC 9113 section 4.1), and any length is
    /// legal up to the peer's SETTINGS_MAX_FRAME_SIZE, so neither is a sign of lost sync here.
    #[must_use]
    pub fn follows_rules(&self) -> bool {
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => self.stream != 0,
            PRIORITY => self.stream != 0 && self.len == 5,
            RST_STREAM => self.stream != 0 && self.len == 4,
            SETTINGS => self.stream == 0 && self.len.is_multiple_of(6),
            PING => self.stream == 0 && self.len == 8,
            GOAWAY => self.stream == 0 && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => true,
        }
    }
}

/// Whether `data` starts on a frame boundary: one plausible frame at least, and what follows it
/// in `data` is either nothing or another plausible header.
#[must_use]
pub fn starts_with_frames(data: &[u8]) -> bool {
    let Some(first) = FrameHeader::parse(data) else {
        return false;
    };
    if !first.plausible() {
        return false;
    }
    let next = HEADER_LEN + first.len as usize;
    match data.len() {
        n if n < next => n >= HEADER_LEN && first.kind == DATA,
        n if n == next => true,
        _ => FrameHeader::parse(&data[next..]).is_none_or(|h| h.plausible()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_headers() {
        let settings = [0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x10, 0];
        let h = FrameHeader::parse(&settings).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                len: 6,
                kind: SETTINGS,
                flags: 0,
                stream: 0
            }
        );
        assert!(h.plausible());
        assert!(starts_with_frames(&settings));
        assert!(!starts_with_frames(b"GET / HTTP/1.1\r\n"));
        assert!(
            !starts_with_frames(&[0, 0, 4, RST_STREAM, 0, 0, 0, 0, 0, 0, 0, 0, 8]),
            "RST on stream 0"
        );
        assert!(FrameHeader::parse(&[0; 8]).is_none());
    }
}
