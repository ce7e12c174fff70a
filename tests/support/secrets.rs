//! Marker secrets for the privacy checks, and whether an output shows one. A marker is a
//! unique string (`wsp-<random>-<leg>-<field>-<random>`) sent where a credential goes; an
//! output shows it when it holds the marker's bytes as sent, or, as HTTP/2 sends header values,
//! its HPACK Huffman code (RFC 7541 Appendix B) at any bit offset, raw or in the lossy UTF-8
//! text that `wirespan events --json` makes of payloads. Random parts at both ends keep every
//! piece of one marker's code that the search uses from matching another marker.

use std::fmt;

/// The HPACK Huffman codes (code, length in bits) of the characters a marker is made of.
const HUFFMAN: [(char, u32, u8); 37] = [
    ('-', 0x16, 6),
    ('0', 0x0, 5),
    ('1', 0x1, 5),
    ('2', 0x2, 5),
    ('3', 0x19, 6),
    ('4', 0x1a, 6),
    ('5', 0x1b, 6),
    ('6', 0x1c, 6),
    ('7', 0x1d, 6),
    ('8', 0x1e, 6),
    ('9', 0x1f, 6),
    ('a', 0x3, 5),
    ('b', 0x23, 6),
    ('c', 0x4, 5),
    ('d', 0x24, 6),
    ('e', 0x5, 5),
    ('f', 0x25, 6),
    ('g', 0x26, 6),
    ('h', 0x27, 6),
    ('i', 0x6, 5),
    ('j', 0x74, 7),
    ('k', 0x75, 7),
    ('l', 0x28, 6),
    ('m', 0x29, 6),
    ('n', 0x2a, 6),
    ('o', 0x7, 5),
    ('p', 0x2b, 6),
    ('q', 0x76, 7),
    ('r', 0x2c, 6),
    ('s', 0x8, 5),
    ('t', 0x9, 5),
    ('u', 0x2d, 6),
    ('v', 0x77, 7),
    ('w', 0x78, 7),
    ('x', 0x79, 7),
    ('y', 0x7a, 7),
    ('z', 0x7b, 7),
];

/// Fewest ASCII characters a lossy-text form must keep to be told apart from other binary.
const LOSSY_MIN_ASCII: usize = 6;

/// How an output showed a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The bytes as sent.
    Plain,
    /// HPACK Huffman-coded.
    Huffman,
    /// Huffman-coded, as lossy UTF-8 text (invalid bytes replaced).
    HuffmanText,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::Huffman => "huffman",
            Self::HuffmanText => "huffman-as-text",
        })
    }
}

/// One marker secret and the forms it is looked for in.
pub struct Marker {
    pub leg: &'static str,
    pub field: &'static str,
    pub text: String,
    /// For each bit offset 0..8 at which the code may start: the bytes its bits fill whole.
    huffman: Vec<Vec<u8>>,
    /// Those bytes as lossy UTF-8, from their first ASCII byte to their last (where the text
    /// does not depend on the bytes around them); only those with enough ASCII in them.
    huffman_text: Vec<String>,
}

impl Marker {
    /// `wsp-<random>-<leg>-<field>-<random>`; `leg` and `field` are made of `[0-9a-z-]`. The
    /// random parts are drawn again until the code keeps enough ASCII at every bit offset to
    /// be found in lossy text too.
    pub fn new(leg: &'static str, field: &'static str) -> Self {
        for _ in 0..1000 {
            let marker = Self::drawn(leg, field);
            if marker.huffman_text.len() == marker.huffman.len() {
                return marker;
            }
        }
        panic!("no marker for {leg}/{field} is findable in lossy text at every bit offset")
    }

    fn drawn(leg: &'static str, field: &'static str) -> Self {
        let text = format!("wsp-{}-{leg}-{field}-{}", random_hex(), random_hex());
        let decoded = fluke_hpack::huffman::HuffmanDecoder::new()
            .decode(&huffman_code(&text))
            .map(String::from_utf8);
        assert_eq!(
            decoded,
            Ok(Ok(text.clone())),
            "the Huffman table in tests/support/secrets.rs is wrong"
        );
        let bits = huffman_bits(&text);
        let huffman: Vec<Vec<u8>> = (0..8).map(|shift| whole_bytes(&bits, shift)).collect();
        let huffman_text = huffman.iter().filter_map(|b| lossy_text(b)).collect();
        Self {
            leg,
            field,
            text,
            huffman,
            huffman_text,
        }
    }

    /// How `output` shows this marker, if it does (the first of `forms_in`).
    pub fn shown_in(&self, output: &Output) -> Option<Shown> {
        self.forms_in(output).first().copied()
    }

    /// Every way `output` shows this marker.
    pub fn forms_in(&self, output: &Output) -> Vec<Shown> {
        let views = output.views();
        let any = |needle: &[u8]| views.iter().any(|v| contains(v, needle));
        let mut forms = Vec::new();
        if any(self.text.as_bytes()) {
            forms.push(Shown::Plain);
        }
        if self.huffman.iter().any(|n| any(n)) {
            forms.push(Shown::Huffman);
        }
        if self.huffman_text.iter().any(|n| any(n.as_bytes())) {
            forms.push(Shown::HuffmanText);
        }
        forms
    }
}

/// Eight random hex digits (std's randomly keyed hasher over a counter).
fn random_hex() -> String {
    use std::hash::BuildHasher as _;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:08x}",
        std::hash::RandomState::new().hash_one(n) & 0xffff_ffff
    )
}

/// Whether `haystack` holds `needle`.
pub fn contains(haystack: &[u8], needle: impl AsRef<[u8]>) -> bool {
    let needle = needle.as_ref();
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// What one output of the agent held (a file, a standard output or error), by name.
pub struct Output {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Output {
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    /// The bytes, and what they say once unescaped: `escape_ascii` previews (the events view)
    /// and the string values of JSON lines (`--json` views, span files).
    fn views(&self) -> Vec<Vec<u8>> {
        let mut views = vec![self.bytes.clone(), unescape_ascii(&self.bytes)];
        let mut strings = Vec::new();
        for line in self.bytes.split(|b| *b == b'\n') {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) {
                json_strings(&value, &mut strings);
            }
        }
        views.push(strings);
        views
    }
}

fn json_strings(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::String(s) => {
            out.extend_from_slice(s.as_bytes());
            out.push(b'\n');
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(fields) => fields.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// The bytes that `<[u8]>::escape_ascii` wrote `escaped` from.
fn unescape_ascii(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let b = escaped[i];
        let next = escaped.get(i + 1).copied();
        let hex = escaped
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, next, hex) {
            (b'\\', Some(b'x'), Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b'\\', Some(c @ (b'n' | b'r' | b't' | b'\\' | b'\'' | b'"')), _) => {
                out.push(match c {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    c => c,
                });
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn huffman_bits(text: &str) -> Vec<bool> {
    let mut bits = Vec::new();
    for c in text.chars() {
        let (_, code, len) = HUFFMAN
            .iter()
            .find(|(ch, _, _)| *ch == c)
            .unwrap_or_else(|| panic!("{c:?} in the marker {text:?} is not in [0-9a-z-]"));
        bits.extend((0..*len).rev().map(|i| code >> i & 1 == 1));
    }
    bits
}

/// `text` HPACK Huffman-coded, padded with ones to a whole byte as HPACK does.
pub fn huffman_code(text: &str) -> Vec<u8> {
    let mut bits = huffman_bits(text);
    bits.resize(bits.len().div_ceil(8) * 8, true);
    whole_bytes(&bits, 0)
}

/// The bytes that `bits`, starting `shift` bits into a byte, fill whole.
fn whole_bytes(bits: &[bool], shift: usize) -> Vec<u8> {
    let first = shift.div_ceil(8) * 8;
    let end = (shift + bits.len()) / 8 * 8;
    (first..end)
        .step_by(8)
        .map(|start| (start..start + 8).fold(0, |b, at| b << 1 | u8::from(bits[at - shift])))
        .collect()
}

/// `bytes` as lossy UTF-8 from their first ASCII byte to their last, if that keeps at least
/// `LOSSY_MIN_ASCII` ASCII characters.
fn lossy_text(bytes: &[u8]) -> Option<String> {
    let first = bytes.iter().position(u8::is_ascii)?;
    let last = bytes.iter().rposition(u8::is_ascii)?;
    let text = String::from_utf8_lossy(&bytes[first..=last]).into_owned();
    (text.chars().filter(char::is_ascii).count() >= LOSSY_MIN_ASCII).then_some(text)
}
