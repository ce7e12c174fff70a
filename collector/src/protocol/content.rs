//! Message content inside a segment, as the decoders find it: HTTP/1 bodies (chunk-size lines
//! and trailers apart) and HTTP/2 DATA payloads (gRPC's 5-byte length prefixes apart).
//!
//! TLS plaintext is the most sensitive thing the agent sees, and the decoders need only heads,
//! header blocks and framing from it. The `conn` stage asks for these ranges on TLS segments
//! and blanks them before anything keeps or shows the bytes (recordings, the events view).
//! What stays is exactly what the decoders read, so a blanked recording replays to the same
//! exchanges.
//!
//! Offsets are the segment's own: 0 is the first captured byte, and uncaptured bytes and frame
//! windows count at their positions (as [`super::Segment::pieces`] lays them out).

use std::ops::Range;

/// The content ranges of the segment a decoder is being fed.
#[derive(Debug, Default)]
pub struct ContentMarks {
    /// Whether this segment's content is wanted (TLS plaintext); otherwise nothing is noted.
    on: bool,
    /// Offset just past the last byte the decoder took in from this segment.
    end: u64,
    ranges: Vec<Range<u64>>,
}

impl ContentMarks {
    /// A new segment starts; note its content only when `on`.
    pub fn begin(&mut self, on: bool) {
        self.on = on;
        self.end = 0;
        self.ranges.clear();
    }

    /// The decoder took in `n` more of the segment's bytes (captured, or known only by count).
    pub fn took(&mut self, n: u64) {
        self.end += n;
    }

    /// The first `len` bytes of a buffer holding `buffered` bytes, which ends where the decoder
    /// has taken in to, are content. Bytes that came in earlier segments are out of reach:
    /// content is consumed in the segment that brings it, so there are none in practice.
    pub fn content_at_front(&mut self, buffered: usize, len: usize) {
        self.content_in_buffer(buffered, 0, len);
    }

    /// `len` bytes from byte `at` of a buffer as in [`Self::content_at_front`] are content.
    pub fn content_in_buffer(&mut self, buffered: usize, at: usize, len: usize) {
        if !self.on || len == 0 {
            return;
        }
        let start = i128::from(self.end) - buffered as i128 + at as i128;
        let end = start + len as i128;
        if end <= 0 {
            return;
        }
        let range = start.max(0) as u64..end as u64;
        self.push(range);
    }

    /// Everything the decoder did not take in, up to the segment's `total` bytes: it gave the
    /// rest up (lost framing), so nothing says what those bytes are.
    pub fn rest(&mut self, total: u64) {
        if self.on && self.end < total {
            let range = self.end..total;
            self.push(range);
        }
    }

    /// The content noted for the current segment, in order.
    #[must_use]
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    fn push(&mut self, range: Range<u64>) {
        match self.ranges.last_mut() {
            Some(last) if last.end >= range.start => last.end = last.end.max(range.end),
            _ => self.ranges.push(range),
        }
    }
}

/// Blank `ranges` (segment offsets) in a segment's captured bytes and in its frame windows,
/// which hold copies of bytes at their own offsets (a negative offset: the previous segment's).
pub fn blank(ranges: &[Range<u64>], payload: &mut [u8], windows: &mut [(i64, &mut [u8])]) {
    for range in ranges {
        blank_at(range, 0, payload);
        for (offset, bytes) in windows.iter_mut() {
            blank_at(range, *offset, bytes);
        }
    }
}

/// Blank the part of `range` that falls in `bytes`, which sit at segment offset `offset`.
fn blank_at(range: &Range<u64>, offset: i64, bytes: &mut [u8]) {
    let start = i128::from(range.start) - i128::from(offset);
    let end = i128::from(range.end) - i128::from(offset);
    let from = start.clamp(0, bytes.len() as i128) as usize;
    let to = end.clamp(0, bytes.len() as i128) as usize;
    if from < to {
        bytes[from..to].fill(0);
    }
}

#[cfg(test)]
#[expect(
    clippy::single_range_in_vec_init,
    reason = "lists of one range are the values under test"
)]
mod tests {
    use super::*;

    #[test]
    fn content_at_the_front_of_a_buffer_maps_to_segment_offsets() {
        let mut marks = ContentMarks::default();
        marks.begin(true);
        marks.took(10);
        // A buffer of 6 bytes ends at offset 10: its front is offset 4.
        marks.content_at_front(6, 3);
        // Contiguous content merges.
        marks.content_at_front(3, 3);
        assert_eq!(marks.ranges(), &[4..10]);
        // Bytes of an earlier segment (before offset 0) are cut off.
        marks.begin(true);
        marks.took(2);
        marks.content_at_front(5, 4);
        assert_eq!(marks.ranges(), &[0..1]);
    }

    #[test]
    fn nothing_is_noted_when_off_and_the_rest_covers_what_was_not_taken() {
        let mut marks = ContentMarks::default();
        marks.begin(false);
        marks.took(4);
        marks.content_at_front(4, 4);
        marks.rest(10);
        assert_eq!(marks.ranges(), &[] as &[Range<u64>]);
        marks.begin(true);
        marks.took(4);
        marks.rest(10);
        assert_eq!(marks.ranges(), &[4..10]);
    }

    #[test]
    fn blanking_reaches_windows_at_their_offsets() {
        let mut payload = *b"HEADbody";
        let mut window = *b"xxyyzz";
        let mut before = *b"hhh";
        {
            let mut windows: Vec<(i64, &mut [u8])> = vec![(-1, &mut before), (20, &mut window)];
            blank(&[4..8, 22..24], &mut payload, &mut windows);
        }
        assert_eq!(&payload, b"HEAD\0\0\0\0");
        assert_eq!(&window, b"xx\0\0zz");
        assert_eq!(&before, b"hhh");
    }
}
