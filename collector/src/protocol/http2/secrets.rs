//! Credentials in HPACK header blocks, masked in place so that the block still decodes.
//!
//! A credential can only be read from a *literal* value in a block: an indexed field carries
//! no value bytes (the peer's table holds it, and that table was filled by a literal that was
//! masked when it went by). So the decoder's literals are all that is looked at:
//! - the value of a credential header (`authorization`, gRPC's `authorization` metadata,
//!   `cookie`, API keys; see [`SecretNames`]) is masked whole: `*` for a plain string, and
//!   for a Huffman-coded one the byte `0xf9`, eight bits that are exactly the code of `*`, so
//!   `n` bytes of it decode to `n` stars with no padding;
//! - a value whose name is not known (a dynamic entry of a table the capture joined late) is
//!   masked whole too: it may be anything;
//! - the query values of `:path` are masked and the path kept (the span's route needs it). A
//!   plain string is masked byte for byte. A Huffman-coded one is rewritten bit for bit: each
//!   query value becomes fill characters whose codes add up to exactly the value's bits, so
//!   every other bit of the string, the padding included, stays where it was.
//!
//! Masking a literal that is inserted into the dynamic table masks the entry too, in the
//! recording's own decoding: replays see the same table, masked.

use std::ops::Range;

use super::{
    CONTINUATION, FLAG_PADDED, FrameHeader, HEADER_LEN, HEADERS, Http2Conn, PendingBlock, frame,
    hpack::{self, Literal},
};
use crate::protocol::content::{SECRET_FILL, SecretNames, target_query_values};

/// Eight bits that are the Huffman code of `*`: a run of them decodes to stars.
const HUFFMAN_STARS: u8 = 0xf9;

/// A masking edit in a header block: bytes `range` become `fill`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub fill: u8,
}

/// The edits that mask the credentials among `literals` of `block`: `(name, place)`, with
/// `None` for a name that is not known.
#[must_use]
pub fn masks(
    block: &[u8],
    literals: &[(Option<Vec<u8>>, Literal)],
    names: &SecretNames,
) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (name, literal) in literals {
        let raw = &block[literal.value.clone()];
        match name.as_deref() {
            Some(b":path") => mask_query(raw, literal, &mut edits),
            Some(name) if !names.contains(name) => {}
            _ => edits.push(Edit {
                range: literal.value.clone(),
                fill: if literal.huffman {
                    HUFFMAN_STARS
                } else {
                    SECRET_FILL
                },
            }),
        }
    }
    edits
}

/// Mask the query values of a `:path` literal whose string bytes are `raw`.
fn mask_query(raw: &[u8], literal: &Literal, edits: &mut Vec<Edit>) {
    let base = literal.value.start;
    if !literal.huffman {
        let mut values = Vec::new();
        target_query_values(raw, base, &mut values);
        edits.extend(values.into_iter().map(|range| Edit {
            range,
            fill: SECRET_FILL,
        }));
        return;
    }
    match huffman::mask_query(raw) {
        Some(masked) => edits.extend(
            masked
                .iter()
                .zip(raw)
                .enumerate()
                .filter(|(_, (new, old))| new != old)
                .map(|(i, (&fill, _))| Edit {
                    range: base + i..base + i + 1,
                    fill,
                }),
        ),
        // Not a valid Huffman string: nothing decodes it, so nothing is lost by masking it all.
        None => edits.push(Edit {
            range: literal.value.clone(),
            fill: HUFFMAN_STARS,
        }),
    }
}

/// Where in the segments credentials of header blocks are.
impl Http2Conn {
    /// Note the credentials of a header block for masking: the literals decoding found and,
    /// past an error (`stopped`: what and where), every literal the block's structure shows,
    /// with names known only from the static table or literally (a dynamic entry's name is
    /// unknown: its value is masked), and from a malformed representation on, the rest whole.
    ///
    /// The masked block decodes to the same fields: decoding stops at the same error, since
    /// the bytes it read to get there are not masked. It reads a literal's value only when the
    /// value is the error (bad Huffman): that value is kept as captured.
    pub(super) fn mask_secrets(
        &mut self,
        d: usize,
        block: &PendingBlock,
        literals: &mut Vec<(Option<Vec<u8>>, hpack::Literal)>,
        stopped: Option<(hpack::HpackError, usize)>,
    ) {
        let Some(names) = self.marks.secrets().cloned() else {
            return;
        };
        let mut edits = Vec::new();
        if let Some((error, at)) = stopped {
            // The first literal the walk finds is the failing representation's when that
            // is a literal (not an indexed field or a size update).
            let failing_is_literal = block
                .block
                .get(at)
                .is_some_and(|&b| b & 0x80 == 0 && b & 0xe0 != 0x20);
            let mut first = true;
            let walked = hpack::literals_without_table(&block.block, at, |name, literal| {
                let read_by_decoder =
                    first && failing_is_literal && error == hpack::HpackError::Huffman;
                first = false;
                if !read_by_decoder {
                    literals.push((name.map(<[u8]>::to_vec), literal));
                }
            });
            if let Err(bad) = walked
                && bad > at
            {
                edits.push(Edit {
                    range: bad..block.block.len(),
                    fill: SECRET_FILL,
                });
            }
        }
        edits.extend(masks(&block.block, literals, &names));
        self.note_edits(d, block, edits);
    }

    /// Note `edits` of `block` (of direction `d`) in the current segment's offsets; bytes
    /// of earlier segments are out of reach (see `mask_unfinished_block`).
    fn note_edits(&mut self, d: usize, block: &PendingBlock, edits: Vec<Edit>) {
        let segment_start = i128::from(self.dirs[d].segment_start);
        for edit in edits {
            for at in edit.range {
                if let Some(position) = block.position(at) {
                    self.marks
                        .secret_at(i128::from(position) - segment_start, 1, edit.fill);
                }
            }
        }
    }

    /// A header block still unfinished when the segment ends (a HEADERS frame cut by the end
    /// of a write, or waiting for its CONTINUATION): this segment's bytes are kept and shown
    /// now, before the block can be decoded. So the part it holds is decoded on a copy of the
    /// table, and the credentials in it are masked now; a value cut by the segment's end, up
    /// to it. A `:path` cut so is kept (its query is masked only whole).
    pub(super) fn mask_unfinished_block(&mut self, d: usize) {
        let Some(names) = self.marks.secrets().cloned() else {
            return;
        };
        let Some(block) = self.unfinished_block(d) else {
            return;
        };
        let mut literals = Vec::new();
        let mut hpack = self.dirs[d].hpack.clone();
        let decoded = hpack.decode_literals(&block.block, |n, _, literal| {
            if let Some(literal) = literal {
                literals.push((Some(n.to_vec()), literal));
            }
        });
        // Only a representation cut by the segment's end: any other error is the block's own,
        // and its bytes are left as the decoder will read them (see `mask_secrets`).
        if let Err((hpack::HpackError::Truncated, at)) = decoded {
            // The table as it was before the representation the block is cut in.
            let mut before = self.dirs[d].hpack.clone();
            let _ = before.decode(&block.block[..at], |_, _| {});
            if let Some((name, literal)) = before.cut_literal(&block.block, at)
                && name.as_deref() != Some(b":path".as_slice())
                && name.as_deref().is_none_or(|n| names.contains(n))
            {
                literals.push((None, literal));
            }
        }
        let edits = masks(&block.block, &literals, &names);
        self.note_edits(d, &block, edits);
    }

    /// The header block direction `d` is in the middle of, with the part of a frame still
    /// buffered; `None` when it is in none (or in one that is not decoded).
    fn unfinished_block(&self, d: usize) -> Option<PendingBlock> {
        let dir = &self.dirs[d];
        let mut block = dir
            .pending_block
            .as_ref()
            .filter(|b| !b.cut)
            .map(|b| PendingBlock {
                stream: b.stream,
                kind: b.kind,
                end_stream: b.end_stream,
                block: b.block.clone(),
                origins: b.origins.clone(),
                cut: false,
            });
        if dir.streaming.is_none()
            && let Some(header) = FrameHeader::parse(&dir.buf)
            && matches!(header.kind, HEADERS | CONTINUATION)
        {
            let mut skip = HEADER_LEN;
            if header.kind == HEADERS {
                skip += usize::from(header.flags & FLAG_PADDED != 0)
                    + if header.flags & frame::FLAG_PRIORITY != 0 {
                        5
                    } else {
                        0
                    };
                block = Some(PendingBlock {
                    stream: header.stream,
                    kind: header.kind,
                    end_stream: false,
                    block: Vec::new(),
                    origins: Vec::new(),
                    cut: false,
                });
            }
            if let Some(block) = block.as_mut()
                && let Some(part) = dir.buf.get(skip..)
            {
                block
                    .origins
                    .push((block.block.len(), self.buffer_start(d) + skip as u64));
                block.block.extend_from_slice(part);
            }
        }
        block
    }
}

/// HPACK's Huffman code (RFC 7541 Appendix B), canonical: the code lengths give the codes.
pub(super) mod huffman {
    use std::sync::OnceLock;

    use super::target_query_values;

    /// Code lengths of symbols 0..=255 and EOS (256), in symbol order.
    #[rustfmt::skip]
    const LENGTHS: [u8; 257] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28,
        30, 28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6,
        6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7,
        7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5,
        6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20,
        22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23,
        23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21,
        22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20,
        19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21,
        21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26,
        23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
    ];
    const MAX_LEN: usize = 30;
    /// What a masked query value is made of, by code length: `0` (5 bits), `_` (6), `x` (7)
    /// and `*` (8). Any value's bit count is a sum of these (see `fill`).
    const FILL: [(u8, u8); 4] = [(b'*', 8), (b'x', 7), (b'_', 6), (b'0', 5)];

    /// The canonical code: per symbol its code; per length the first code and where its
    /// symbols start in `by_length`.
    struct Table {
        codes: [u32; 257],
        first_code: [u32; MAX_LEN + 1],
        count: [u32; MAX_LEN + 1],
        first_index: [usize; MAX_LEN + 1],
        by_length: Vec<u16>,
    }

    fn table() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| {
            let mut by_length: Vec<u16> = (0..257).collect();
            by_length.sort_by_key(|&s| (LENGTHS[usize::from(s)], s));
            let mut t = Table {
                codes: [0; 257],
                first_code: [0; MAX_LEN + 1],
                count: [0; MAX_LEN + 1],
                first_index: [0; MAX_LEN + 1],
                by_length,
            };
            let (mut code, mut len) = (0u32, 0usize);
            for (i, &symbol) in t.by_length.iter().enumerate() {
                let l = usize::from(LENGTHS[usize::from(symbol)]);
                if i > 0 {
                    code += 1;
                }
                code <<= l - len;
                len = l;
                if t.count[l] == 0 {
                    t.first_code[l] = code;
                    t.first_index[l] = i;
                }
                t.count[l] += 1;
                t.codes[usize::from(symbol)] = code;
            }
            t
        })
    }

    /// The symbols of a Huffman string with each one's code length; `None` when the string is
    /// not valid (a bad code, EOS inside, padding over 7 bits or not all ones).
    pub(super) fn symbols(raw: &[u8]) -> Option<Vec<(u8, u8)>> {
        let t = table();
        let mut out = Vec::new();
        let (mut code, mut len) = (0u32, 0usize);
        for bit in raw
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        {
            code = (code << 1) | u32::from(bit);
            len += 1;
            if len > MAX_LEN {
                return None;
            }
            if t.count[len] > 0 && code >= t.first_code[len] {
                let offset = (code - t.first_code[len]) as usize;
                if offset < t.count[len] as usize {
                    let symbol = t.by_length[t.first_index[len] + offset];
                    out.push((u8::try_from(symbol).ok()?, len as u8));
                    (code, len) = (0, 0);
                }
            }
        }
        // What is left is padding: the most significant bits of EOS, all ones, under 8.
        (len < 8 && code == (1 << len) - 1).then_some(out)
    }

    /// `raw`, a Huffman-coded request target, with its query values masked and every other bit
    /// where it was; `None` when `raw` is not valid Huffman.
    pub(super) fn mask_query(raw: &[u8]) -> Option<Vec<u8>> {
        let symbols = symbols(raw)?;
        let text: Vec<u8> = symbols.iter().map(|(s, _)| *s).collect();
        let mut values = Vec::new();
        target_query_values(&text, 0, &mut values);
        let mut bits = BitWriter::default();
        let mut at = 0;
        for value in values {
            for &(symbol, _) in &symbols[at..value.start] {
                bits.symbol(symbol);
            }
            let value_bits = symbols[value.clone()]
                .iter()
                .map(|(_, l)| u32::from(*l))
                .sum();
            for symbol in fill(value_bits)? {
                bits.symbol(symbol);
            }
            at = value.end;
        }
        for &(symbol, _) in &symbols[at..] {
            bits.symbol(symbol);
        }
        let masked = bits.finish();
        (masked.len() == raw.len()).then_some(masked)
    }

    /// Fill characters whose codes add up to exactly `bits`: `ceil(bits / 8)` of them, each
    /// 8 bits long less a share of the surplus (at most 3: down to 5 bits). Every sum of real
    /// code lengths works but 9, which no string has (no code is 9 bits, two are 10 or more).
    fn fill(bits: u32) -> Option<Vec<u8>> {
        let count = bits.div_ceil(8);
        let mut surplus = count * 8 - bits;
        if surplus > count * 3 {
            return None;
        }
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let cut = surplus.min(3);
            surplus -= cut;
            out.push(FILL[cut as usize].0);
        }
        Some(out)
    }

    /// Huffman codes written MSB first; the last byte padded with ones (EOS's first bits).
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        acc: u64,
        len: u32,
    }

    impl BitWriter {
        fn symbol(&mut self, symbol: u8) {
            let t = table();
            let len = u32::from(LENGTHS[usize::from(symbol)]);
            self.acc = (self.acc << len) | u64::from(t.codes[usize::from(symbol)]);
            self.len += len;
            while self.len >= 8 {
                self.len -= 8;
                self.bytes.push((self.acc >> self.len) as u8);
            }
            self.acc &= (1 << self.len) - 1;
        }

        fn finish(mut self) -> Vec<u8> {
            if self.len > 0 {
                let pad = 8 - self.len;
                self.bytes
                    .push(((self.acc << pad) | ((1 << pad) - 1)) as u8);
            }
            self.bytes
        }
    }

    /// Encode `text` (tests: strings as a peer's encoder writes them).
    #[cfg(test)]
    pub(in crate::protocol::http2) fn encode(text: &[u8]) -> Vec<u8> {
        let mut bits = BitWriter::default();
        for &b in text {
            bits.symbol(b);
        }
        bits.finish()
    }

    #[cfg(test)]
    pub(super) fn fill_lengths_are_right() -> bool {
        FILL.iter().all(|&(c, l)| LENGTHS[usize::from(c)] == l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(raw: &[u8]) -> Vec<u8> {
        fluke_hpack::huffman::HuffmanDecoder::new()
            .decode(raw)
            .expect("valid Huffman")
    }

    #[test]
    fn the_code_agrees_with_an_independent_decoder_for_every_byte() {
        assert!(huffman::fill_lengths_are_right());
        let every: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&huffman::encode(&every)), every);
        let symbols = huffman::symbols(&huffman::encode(&every)).unwrap();
        assert_eq!(symbols.iter().map(|s| s.0).collect::<Vec<_>>(), every);
    }

    #[test]
    fn huffman_query_values_are_masked_bit_for_bit_and_the_path_kept() {
        for path in [
            "/items?token=wsp-secret-Z9~%7e&page=2",
            "/a?k=1",
            "/x?=&flag&key=JKLMNOPQRSTUVWXYZ-0123456789",
            "/no/query",
            "/q?v=\u{e9}t\u{e9}",
        ] {
            let raw = huffman::encode(path.as_bytes());
            let masked = huffman::mask_query(&raw).unwrap();
            assert_eq!(masked.len(), raw.len(), "{path}");
            let text = String::from_utf8(decode(&masked)).unwrap();
            let (route, query) = path.split_once('?').unwrap_or((path, ""));
            assert!(text.starts_with(route), "{path} -> {text}");
            for param in query.split('&') {
                let value = param.split_once('=').map_or(param, |(_, v)| v);
                if !value.is_empty() {
                    assert!(!text[route.len()..].contains(value), "{path} -> {text}");
                }
                if let Some((name, _)) = param.split_once('=') {
                    assert!(text.contains(&format!("{name}=")), "{path} -> {text}");
                }
            }
        }
    }

    #[test]
    fn values_of_credential_headers_and_unknown_names_are_masked_whole() {
        let names = SecretNames::with(&[]);
        let block = b"XXBearer abcYYyyyy";
        let literal = |range: Range<usize>, huffman| Literal {
            value: range,
            huffman,
        };
        let edits = masks(
            block,
            &[
                (Some(b"authorization".to_vec()), literal(2..12, false)),
                (Some(b"accept".to_vec()), literal(12..14, false)),
                (None, literal(14..18, true)),
            ],
            &names,
        );
        assert_eq!(
            edits,
            [
                Edit {
                    range: 2..12,
                    fill: b'*'
                },
                Edit {
                    range: 14..18,
                    fill: HUFFMAN_STARS
                }
            ]
        );
        assert_eq!(decode(&[HUFFMAN_STARS; 4]), b"****");
    }
}
