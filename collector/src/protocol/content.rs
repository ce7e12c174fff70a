//! What the agent blanks in captured bytes before anything keeps or shows them (recordings,
//! the events view), as the decoders find it:
//! - message content of TLS plaintext: HTTP/1 bodies (chunk-size lines and trailers apart) and
//!   HTTP/2 DATA payloads (gRPC's 5-byte length prefixes apart), blanked with zeros. TLS
//!   plaintext is the most sensitive thing the agent sees, and the decoders need only heads,
//!   header blocks and framing from it;
//! - credentials in HTTP/1 heads and HTTP/2 header blocks of any connection: the values of
//!   credential headers (`Authorization`, `Cookie`, API keys, gRPC `authorization` metadata,
//!   ...; see [`SecretNames`]) and query values, masked in place so the heads still parse and
//!   the header blocks still decode (HPACK: see `http2::secrets`).
//!
//! What stays is what the decoders read, so a blanked recording replays to the same exchanges.
//!
//! Offsets are the segment's own: 0 is the first captured byte, and uncaptured bytes and frame
//! windows count at their positions (as [`super::Segment::pieces`] lays them out).

use std::{ops::Range, sync::Arc};

/// Bytes to blank: a range of the segment, what to fill it with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blank {
    pub range: Range<u64>,
    pub fill: u8,
    pub kind: BlankKind,
}

/// Why bytes are blanked: message content is blanked for TLS plaintext only (unless kept),
/// credentials on every connection (unless `--show-secrets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlankKind {
    Content,
    Secret,
}

impl Blank {
    /// Message content, zeroed.
    #[must_use]
    pub fn content(range: Range<u64>) -> Self {
        Self {
            range,
            fill: CONTENT_FILL,
            kind: BlankKind::Content,
        }
    }
}

/// The fill of message content.
pub const CONTENT_FILL: u8 = 0;
/// The fill of credentials: a printable byte, valid in header values and queries.
pub const SECRET_FILL: u8 = b'*';

/// Header names (lowercase) whose values are credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretNames(Vec<String>);

/// Credential headers blanked by default.
pub const DEFAULT_SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    "x-amz-security-token",
    "x-goog-api-key",
];

impl SecretNames {
    /// The default names and `extra` ones (any case).
    #[must_use]
    pub fn with(extra: &[String]) -> Arc<Self> {
        let mut names: Vec<String> = DEFAULT_SECRET_HEADERS
            .iter()
            .map(|n| (*n).to_owned())
            .chain(extra.iter().map(|n| n.trim().to_ascii_lowercase()))
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Arc::new(Self(names))
    }

    /// Whether `name` (any case) is a credential header.
    #[must_use]
    pub fn contains(&self, name: &[u8]) -> bool {
        self.0
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }
}

/// The blanks of the segment a decoder is being fed.
#[derive(Debug, Default)]
pub struct ContentMarks {
    /// Whether this segment's content is wanted (TLS plaintext).
    content: bool,
    /// The credential headers to blank, when credentials are wanted.
    secrets: Option<Arc<SecretNames>>,
    /// Offset just past the last byte the decoder took in from this segment.
    end: u64,
    ranges: Vec<Blank>,
}

impl ContentMarks {
    /// A new segment starts; note its content when `content` (its credentials are noted as
    /// `set_secrets` says).
    pub fn begin(&mut self, content: bool) {
        self.content = content;
        self.end = 0;
        self.ranges.clear();
    }

    /// Note credentials in HTTP/1 heads and HTTP/2 header blocks (None: keep them).
    pub fn set_secrets(&mut self, secrets: Option<Arc<SecretNames>>) {
        self.secrets = secrets;
    }

    /// The credential headers noted, when credentials are.
    #[must_use]
    pub fn secrets(&self) -> Option<&Arc<SecretNames>> {
        self.secrets.as_ref()
    }

    /// Bytes of the segment the decoder took in so far: a buffer of `n` bytes that ends where
    /// the decoder has taken in to starts at segment offset `taken() - n`.
    #[must_use]
    pub fn taken(&self) -> u64 {
        self.end
    }

    /// Mask `len` credential bytes from segment offset `at` (negative: an earlier segment's,
    /// out of reach) with `fill`.
    pub fn secret_at(&mut self, at: i128, len: u64, fill: u8) {
        let end = at + i128::from(len);
        if self.secrets.is_none() || end <= 0 {
            return;
        }
        self.push(at.max(0) as u64..end as u64, fill, BlankKind::Secret);
    }

    /// Note the credentials in `head`, an HTTP/1 head (complete or not) at the front of a
    /// buffer holding `buffered` bytes: header values by name, and a request line's query
    /// values.
    pub fn secrets_in_head(&mut self, head: &[u8], buffered: usize) {
        let Some(names) = self.secrets.clone() else {
            return;
        };
        let mut found = Vec::new();
        secrets_in_head(head, &names, &mut found);
        for range in found {
            self.mark(
                buffered,
                range.start,
                range.len(),
                SECRET_FILL,
                BlankKind::Secret,
            );
        }
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
        if self.content {
            self.mark(buffered, at, len, CONTENT_FILL, BlankKind::Content);
        }
    }

    fn mark(&mut self, buffered: usize, at: usize, len: usize, fill: u8, kind: BlankKind) {
        if len == 0 {
            return;
        }
        let start = i128::from(self.end) - buffered as i128 + at as i128;
        let end = start + len as i128;
        if end <= 0 {
            return;
        }
        let range = start.max(0) as u64..end as u64;
        self.push(range, fill, kind);
    }

    /// Everything the decoder did not take in, up to the segment's `total` bytes: it gave the
    /// rest up (lost framing), so nothing says what those bytes are.
    pub fn rest(&mut self, total: u64) {
        if self.content && self.end < total {
            let range = self.end..total;
            self.push(range, CONTENT_FILL, BlankKind::Content);
        }
    }

    /// The blanks noted for the current segment, in order of noting.
    #[must_use]
    pub fn ranges(&self) -> &[Blank] {
        &self.ranges
    }

    fn push(&mut self, range: Range<u64>, fill: u8, kind: BlankKind) {
        match self.ranges.last_mut() {
            Some(last)
                if last.fill == fill
                    && last.kind == kind
                    && last.range.end >= range.start
                    && range.start >= last.range.start =>
            {
                last.range.end = last.range.end.max(range.end);
            }
            _ => self.ranges.push(Blank { range, fill, kind }),
        }
    }
}

/// The credential ranges in an HTTP/1 head (complete or not; bytes after its end are not
/// looked at): values of headers named in `names`, to the line's end (or the buffer's, for a
/// line still coming), and the values of a request target's query.
fn secrets_in_head(head: &[u8], names: &SecretNames, out: &mut Vec<Range<usize>>) {
    let mut at = 0;
    let mut first = true;
    while at < head.len() {
        let line_end = head[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |i| at + i);
        let mut line = &head[at..line_end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.is_empty() && line_end < head.len() {
            return; // the end of the head
        }
        if first {
            query_values(line, at, out);
            first = false;
        } else if let Some(colon) = line.iter().position(|&b| b == b':')
            && names.contains(line[..colon].trim_ascii())
        {
            let value = colon + 1 + line[colon + 1..].iter().take_while(|b| **b == b' ').count();
            if value < line.len() {
                out.push(at + value..at + line.len());
            }
        }
        at = line_end + 1;
    }
}

/// The query values of a request line (`GET /p?a=1&b=2 HTTP/1.1`) at `base`.
fn query_values(line: &[u8], base: usize, out: &mut Vec<Range<usize>>) {
    let Some(target_start) = line.iter().position(|&b| b == b' ').map(|i| i + 1) else {
        return;
    };
    let target_end = line[target_start..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(line.len(), |i| target_start + i);
    target_query_values(&line[target_start..target_end], base + target_start, out);
}

/// The query values of a request target (`/p?a=1&b=2`, an HTTP/2 `:path`) at `base`. A
/// parameter without `=` may be a token itself: it is a value whole.
pub fn target_query_values(target: &[u8], base: usize, out: &mut Vec<Range<usize>>) {
    let Some(query) = target.iter().position(|&b| b == b'?').map(|i| i + 1) else {
        return;
    };
    let mut param = query;
    while param < target.len() {
        let end = target[param..]
            .iter()
            .position(|&b| b == b'&')
            .map_or(target.len(), |i| param + i);
        let value = target[param..end]
            .iter()
            .position(|&b| b == b'=')
            .map_or(param, |i| param + i + 1);
        if value < end {
            out.push(base + value..base + end);
        }
        param = end + 1;
    }
}

/// `target` (a request target) with its query values masked with `*`, for views that show
/// targets (`wirespan exchanges`). A value runs between ASCII delimiters, so it is masked
/// whole characters at a time.
#[must_use]
pub fn masked_query(target: &str) -> String {
    let mut values = Vec::new();
    target_query_values(target.as_bytes(), 0, &mut values);
    let mut bytes = target.as_bytes().to_vec();
    for range in values {
        bytes[range].fill(SECRET_FILL);
    }
    String::from_utf8(bytes).unwrap_or_default()
}

/// Apply `blanks` (segment offsets) to a segment's captured bytes and to its frame windows,
/// which hold copies of bytes at their own offsets (a negative offset: the previous segment's).
pub fn blank(blanks: &[Blank], payload: &mut [u8], windows: &mut [(i64, &mut [u8])]) {
    for blank in blanks {
        blank_at(blank, 0, payload);
        for (offset, bytes) in windows.iter_mut() {
            blank_at(blank, *offset, bytes);
        }
    }
}

/// Blank the part of `blank` that falls in `bytes`, which sit at segment offset `offset`.
fn blank_at(blank: &Blank, offset: i64, bytes: &mut [u8]) {
    let start = i128::from(blank.range.start) - i128::from(offset);
    let end = i128::from(blank.range.end) - i128::from(offset);
    let from = start.clamp(0, bytes.len() as i128) as usize;
    let to = end.clamp(0, bytes.len() as i128) as usize;
    if from < to {
        bytes[from..to].fill(blank.fill);
    }
}

#[cfg(test)]
#[expect(
    clippy::single_range_in_vec_init,
    reason = "lists of one range are the values under test"
)]
mod tests {
    use super::*;

    fn ranges(marks: &ContentMarks) -> Vec<Range<u64>> {
        marks.ranges().iter().map(|b| b.range.clone()).collect()
    }

    fn zeros(range: Range<u64>) -> Blank {
        Blank::content(range)
    }

    #[test]
    fn content_at_the_front_of_a_buffer_maps_to_segment_offsets() {
        let mut marks = ContentMarks::default();
        marks.begin(true);
        marks.took(10);
        // A buffer of 6 bytes ends at offset 10: its front is offset 4.
        marks.content_at_front(6, 3);
        // Contiguous content merges.
        marks.content_at_front(3, 3);
        assert_eq!(ranges(&marks), [4..10]);
        // Bytes of an earlier segment (before offset 0) are cut off.
        marks.begin(true);
        marks.took(2);
        marks.content_at_front(5, 4);
        assert_eq!(ranges(&marks), [0..1]);
    }

    #[test]
    fn nothing_is_noted_when_off_and_the_rest_covers_what_was_not_taken() {
        let mut marks = ContentMarks::default();
        marks.begin(false);
        marks.took(4);
        marks.content_at_front(4, 4);
        marks.rest(10);
        assert_eq!(ranges(&marks), [] as [Range<u64>; 0]);
        marks.begin(true);
        marks.took(4);
        marks.rest(10);
        assert_eq!(ranges(&marks), [4..10]);
    }

    #[test]
    fn blanking_reaches_windows_at_their_offsets() {
        let mut payload = *b"HEADbody";
        let mut window = *b"xxyyzz";
        let mut before = *b"hhh";
        {
            let mut windows: Vec<(i64, &mut [u8])> = vec![(-1, &mut before), (20, &mut window)];
            blank(&[zeros(4..8), zeros(22..24)], &mut payload, &mut windows);
        }
        assert_eq!(&payload, b"HEAD\0\0\0\0");
        assert_eq!(&window, b"xx\0\0zz");
        assert_eq!(&before, b"hhh");
    }

    #[test]
    fn query_values_of_a_target_are_masked_for_views() {
        assert_eq!(
            masked_query("/p?token=s3cr3t&x&page=2&empty="),
            "/p?token=******&*&page=*&empty="
        );
        assert_eq!(
            masked_query("/caf\u{e9}?k=\u{e9}t\u{e9}"),
            "/caf\u{e9}?k=*****"
        );
        assert_eq!(masked_query("/no/query"), "/no/query");
    }

    #[test]
    fn credentials_in_a_head_are_found_as_it_arrives() {
        let names = SecretNames::with(&["X-Team-Token".to_owned()]);
        let head = b"GET /p?user=ann&token=s3cr3t&flag HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc\r\nx-team-token:xyz\r\nCookie: id=1\r\n\r\nAuthorization: body";
        let mut found = Vec::new();
        secrets_in_head(head, &names, &mut found);
        let texts: Vec<&str> = found
            .iter()
            .map(|r| std::str::from_utf8(&head[r.clone()]).unwrap())
            .collect();
        // A parameter without `=` may be a token itself: it is blanked whole.
        assert_eq!(
            texts,
            ["ann", "s3cr3t", "flag", "Bearer abc", "xyz", "id=1"]
        );
        // A line still coming: its value so far.
        let mut found = Vec::new();
        secrets_in_head(b"GET / HTTP/1.1\r\nCookie: sess", &names, &mut found);
        assert_eq!(found, [24..28]);
    }
}
