//! HPACK (RFC 7541) header-block decoding with one dynamic table per connection direction.
//!
//! Written for a passive observer: the table can be *unknown* (the capture joined mid-connection,
//! or a header block was lost). Then only representations that do not touch the dynamic table are
//! decoded, and a reference into it stops the block: a wrong table would produce wrong headers.
//! A size update to 0 empties the table, which makes it known again. Huffman-coded strings are
//! decoded with `fluke_hpack`'s Huffman decoder.
//!
//! Decoding also tells where each literal value sits in the block, so that credentials can be
//! masked in place (`super::secrets`).

use std::{collections::VecDeque, ops::Range};

/// Where a literal value's string bytes sit in its header block (after the length prefix),
/// and whether they are Huffman-coded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    pub value: Range<usize>,
    pub huffman: bool,
}

/// RFC 7541 Appendix A, index 1..=61.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The default (and initial) dynamic table size, SETTINGS_HEADER_TABLE_SIZE's default.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// Entries cost their lengths plus this (RFC 7541 section 4.1).
const ENTRY_OVERHEAD: usize = 32;
/// No header table is allowed to grow beyond this, whatever the peers say.
const MAX_TABLE_SIZE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a representation")]
    Truncated,
    #[error("integer too large")]
    Overflow,
    #[error("index {0} is outside the tables")]
    BadIndex(u64),
    #[error("invalid Huffman code")]
    Huffman,
    #[error("dynamic table size update to {0} exceeds the allowed {1}")]
    SizeTooLarge(u64, usize),
    #[error("the dynamic table is unknown (capture joined mid-connection)")]
    UnknownTable,
}

/// Decoder state of one direction of a connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// The peer's SETTINGS_HEADER_TABLE_SIZE: the most a size update may ask for.
    allowed_max: usize,
    known: bool,
}

impl Decoder {
    /// `known`: whether the table state is known (the connection was seen from its start).
    #[must_use]
    pub fn new(known: bool) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            allowed_max: DEFAULT_TABLE_SIZE,
            known,
        }
    }

    /// Bytes the dynamic table holds, by the HPACK measure.
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.size
    }

    #[must_use]
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// Forget the table: a header block was lost, so insertions were missed.
    pub fn mark_unknown(&mut self) {
        self.known = false;
        self.table.clear();
        self.size = 0;
    }

    /// The decoding peer advertised SETTINGS_HEADER_TABLE_SIZE.
    pub fn set_allowed_max(&mut self, size: u32) {
        self.allowed_max = (size as usize).min(MAX_TABLE_SIZE);
    }

    /// Decode a complete header block, calling `field` for each header in order. On an error
    /// the fields before it have been delivered; the table is then unknown (except for
    /// `UnknownTable`, which leaves an already unknown table as it was).
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        self.decode_literals(block, |n, v, _| field(n, v))
            .map_err(|(e, _)| e)
    }

    /// [`Self::decode`], also telling where each literal value sits in the block. An error
    /// comes with the offset of the representation it stopped at.
    pub fn decode_literals(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8], Option<Literal>),
    ) -> Result<(), (HpackError, usize)> {
        let mut at = 0;
        let result = self.decode_inner(block, &mut at, &mut field);
        if let Err(e) = result {
            self.mark_unknown();
            return Err((e, at));
        }
        Ok(())
    }

    /// `at`: the offset of the representation being decoded (where an error stopped).
    fn decode_inner(
        &mut self,
        block: &[u8],
        start: &mut usize,
        field: &mut impl FnMut(&[u8], &[u8], Option<Literal>),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        while at < block.len() {
            *start = at;
            let first = block[at];
            if first & 0x80 != 0 {
                // Indexed field.
                let (index, used) = integer(&block[at..], 7)?;
                at += used;
                let (name, value) = self.entry(index)?;
                field(&name, &value, None);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                let (size, used) = integer(&block[at..], 5)?;
                at += used;
                if size as usize > self.allowed_max {
                    return Err(HpackError::SizeTooLarge(size, self.allowed_max));
                }
                self.max_size = size as usize;
                if size == 0 {
                    // Everything evicted: the table is known (empty) from here on.
                    self.known = true;
                }
                self.evict(0);
            } else {
                // Literal: with incremental indexing (01), without (0000) or never (0001).
                let indexing = first & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let (name_index, used) = integer(&block[at..], prefix)?;
                at += used;
                let name = if name_index == 0 {
                    let (name, used) = string(&block[at..])?;
                    at += used;
                    name
                } else {
                    self.entry(name_index)?.0
                };
                let (value, used) = string(&block[at..])?;
                let literal = literal_at(block, at)?;
                at += used;
                field(&name, &value, Some(literal));
                if indexing {
                    if !self.known {
                        // Inserting into a table of unknown content cannot make it known.
                        continue;
                    }
                    self.insert(name, value);
                }
            }
        }
        Ok(())
    }

    /// The literal at `at` of a block cut short inside its value: its name (`None` when it
    /// names an entry of an unknown table) and the value's place, cut at the block's end.
    /// `None` when the representation is not a literal or is cut before its value.
    #[must_use]
    pub fn cut_literal(&self, block: &[u8], at: usize) -> Option<(Option<Vec<u8>>, Literal)> {
        let first = *block.get(at)?;
        if first & 0x80 != 0 || first & 0xe0 == 0x20 {
            return None;
        }
        let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
        let (name_index, used) = integer(&block[at..], prefix).ok()?;
        let mut start = at + used;
        let name = if name_index == 0 {
            let (name, used) = string(&block[start..]).ok()?;
            start += used;
            Some(name)
        } else {
            self.entry(name_index).ok().map(|(name, _)| name)
        };
        let huffman = *block.get(start)? & 0x80 != 0;
        let (len, used) = integer(&block[start..], 7).ok()?;
        let value = start + used..(start + used).saturating_add(len as usize).min(block.len());
        Some((name, Literal { value, huffman }))
    }

    fn entry(&self, index: u64) -> Result<(Vec<u8>, Vec<u8>), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            1..=61 => {
                let (n, v) = STATIC_TABLE[index as usize - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ if !self.known => Err(HpackError::UnknownTable),
            _ => self
                .table
                .get(index as usize - 62)
                .cloned()
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let cost = name.len() + value.len() + ENTRY_OVERHEAD;
        if cost > self.max_size {
            // An entry bigger than the table empties it (RFC 7541 section 4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(cost);
        self.size += cost;
        self.table.push_front((name, value));
    }

    /// Evict the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }
}

/// An HPACK integer with an N-bit prefix (RFC 7541 section 5.1): (value, bytes used).
fn integer(buf: &[u8], prefix: u8) -> Result<(u64, usize), HpackError> {
    let first = *buf.first().ok_or(HpackError::Truncated)?;
    let mask = (1u16 << prefix) as u8 - 1;
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Ok((value, 1));
    }
    for (i, &b) in buf[1..].iter().enumerate() {
        if i >= 5 {
            return Err(HpackError::Overflow);
        }
        value += u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 2));
        }
    }
    Err(HpackError::Truncated)
}

/// Walk the literal values of `block` from offset `from` without the dynamic table (its
/// state is unknown there): `literal` gets each value's place and its name when the name is
/// literal or static (`None`: a dynamic entry's). Stops at the first malformed
/// representation: `Err` holds its offset.
pub fn literals_without_table(
    block: &[u8],
    from: usize,
    mut literal: impl FnMut(Option<&[u8]>, Literal),
) -> Result<(), usize> {
    let mut at = from;
    while at < block.len() {
        at = next_literal(block, at, &mut literal).map_err(|_| at)?;
    }
    Ok(())
}

/// One representation of [`literals_without_table`] at `at`; the offset after it.
fn next_literal(
    block: &[u8],
    mut at: usize,
    literal: &mut impl FnMut(Option<&[u8]>, Literal),
) -> Result<usize, HpackError> {
    {
        let first = block[at];
        if first & 0x80 != 0 {
            at += integer(&block[at..], 7)?.1;
        } else if first & 0xe0 == 0x20 {
            at += integer(&block[at..], 5)?.1;
        } else {
            let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
            let (name_index, used) = integer(&block[at..], prefix)?;
            at += used;
            let name = match name_index {
                0 => {
                    let (name, used) = string(&block[at..])?;
                    at += used;
                    Some(name)
                }
                1..=61 => Some(STATIC_TABLE[name_index as usize - 1].0.as_bytes().to_vec()),
                _ => None,
            };
            let value = literal_at(block, at)?;
            at = value.value.end;
            literal(name.as_deref(), value);
        }
    }
    Ok(at)
}

/// Where the string literal at `at` of `block` keeps its bytes.
fn literal_at(block: &[u8], at: usize) -> Result<Literal, HpackError> {
    let huffman = block.get(at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, used) = integer(&block[at..], 7)?;
    let start = at + used;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|&end| end <= block.len())
        .ok_or(HpackError::Truncated)?;
    Ok(Literal {
        value: start..end,
        huffman,
    })
}

/// An HPACK string literal (RFC 7541 section 5.2): (bytes, bytes used).
fn string(buf: &[u8]) -> Result<(Vec<u8>, usize), HpackError> {
    let huffman = buf.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, used) = integer(buf, 7)?;
    let end = used
        .checked_add(usize::try_from(len).map_err(|_| HpackError::Overflow)?)
        .ok_or(HpackError::Overflow)?;
    let raw = buf.get(used..end).ok_or(HpackError::Truncated)?;
    let bytes = if huffman {
        fluke_hpack::huffman::HuffmanDecoder::new()
            .decode(raw)
            .map_err(|_| HpackError::Huffman)?
    } else {
        raw.to_vec()
    };
    Ok((bytes, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut fields = Vec::new();
        d.decode(block, |n, v| {
            fields.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        })?;
        Ok(fields)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn decodes_what_an_independent_encoder_wrote_across_warm_blocks() {
        // fluke-hpack's encoder indexes every header: later blocks are dynamic-table references.
        let mut encoder = fluke_hpack::Encoder::new();
        let mut decoder = Decoder::new(true);
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/helloworld.Greeter/SayHello"),
            (b":authority", b"localhost:50051"),
            (b"content-type", b"application/grpc"),
            (
                b"traceparent",
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ];
        for _ in 0..3 {
            let block = encoder.encode(headers.iter().copied());
            let got = decode_all(&mut decoder, &block).unwrap();
            let want: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        let mut d = Decoder::new(true);
        let first = [
            0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p',
            b'l', b'e', b'.', b'c', b'o', b'm',
        ];
        assert_eq!(
            decode_all(&mut d, &first).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        // The second request refers to the entry the first one inserted (index 62).
        let second = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e',
        ];
        assert_eq!(
            decode_all(&mut d, &second).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
    }

    #[test]
    fn unknown_table_decodes_static_fields_and_refuses_dynamic_references() {
        let mut d = Decoder::new(false);
        // :status 200 (static), then a reference to dynamic entry 62.
        let mut fields = Vec::new();
        let err = d
            .decode(&[0x88, 0xbe], |n, v| fields.push((n.to_vec(), v.to_vec())))
            .unwrap_err();
        assert_eq!(err, HpackError::UnknownTable);
        assert_eq!(fields, vec![(b":status".to_vec(), b"200".to_vec())]);
        // A size update to 0 empties the table: known again.
        assert!(decode_all(&mut d, &[0x20, 0x3f, 0xe1, 0x1f]).is_ok());
        assert!(d.is_known());
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let mut d = Decoder::new(true);
        assert_eq!(decode_all(&mut d, &[0x80]), Err(HpackError::BadIndex(0)));
        let mut d = Decoder::new(true);
        assert_eq!(
            decode_all(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(HpackError::Overflow)
        );
        let mut d = Decoder::new(true);
        assert_eq!(decode_all(&mut d, &[0x3f]), Err(HpackError::Truncated));
        let mut d = Decoder::new(true);
        assert_eq!(
            decode_all(&mut d, &[0x3f, 0xe1, 0x3f]),
            Err(HpackError::SizeTooLarge(8192, 4096))
        );
        let mut d = Decoder::new(true);
        assert_eq!(
            decode_all(&mut d, &[0x40, 0x05, b'a']),
            Err(HpackError::Truncated)
        );
        assert!(!d.is_known(), "an error leaves the table unknown");
    }
}
