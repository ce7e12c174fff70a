//! Credentials in HTTP/2 header blocks as a recording keeps them: masked in place, so that an
//! independent HPACK decoder reads none of them back (plain or Huffman-coded, literal or
//! inserted into the dynamic table), and the masked bytes replay to the same exchanges.

use super::{
    PREFACE,
    frame::{CONTINUATION, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, SETTINGS},
    secrets::huffman,
};
use crate::{
    event::Direction,
    protocol::{
        ConnDecoder, Origin, Segment,
        content::{self, SecretNames},
        exchange::Exchange,
    },
};

/// Segments of a connection: their direction and bytes.
type Segments = Vec<(Direction, Vec<u8>)>;

const CLIENT: Direction = Direction::Egress;
const SERVER: Direction = Direction::Ingress;
const MARK: &str = "wsp-secret";
/// What of a marker must not be found: a part of it is as much a leak.
const MARK_PART: &str = "wsp-sec";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string: Huffman-coded or plain (lengths under 127).
fn string(text: &str, huffman_coded: bool) -> Vec<u8> {
    let bytes = if huffman_coded {
        huffman::encode(text.as_bytes())
    } else {
        text.as_bytes().to_vec()
    };
    let mut out = vec![u8::try_from(bytes.len()).unwrap() | if huffman_coded { 0x80 } else { 0 }];
    out.extend_from_slice(&bytes);
    out
}

/// A literal field: `first` is the representation byte (with the name's index, 0: literal
/// name), then the name if literal, then the value.
fn literal(first: u8, name: Option<&str>, value: &str, huffman_coded: bool) -> Vec<u8> {
    let mut out = vec![first];
    if let Some(name) = name {
        out.extend(string(name, false));
    }
    out.extend(string(value, huffman_coded));
    out
}

/// The first request: every kind of representation carrying a marker.
fn first_request() -> Vec<u8> {
    [
        vec![0x83, 0x86], // :method POST, :scheme http
        // :path (static name 4), indexed: its query values are credentials.
        literal(
            0x44,
            None,
            &format!("/echo.Echo/Say?api_key={MARK}-q1&page=2"),
            true,
        ),
        // authorization (static 23), indexed, Huffman: the second request refers to it.
        literal(0x57, None, &format!("Bearer {MARK}-a1"), true),
        // cookie (static 32), never indexed, plain.
        vec![0x1f, 0x11],
        string(&format!("s={MARK}-c1"), false),
        // x-api-key, a literal name, without indexing.
        literal(0x00, Some("x-api-key"), &format!("{MARK}-k1"), false),
        // gRPC metadata in a literal name that is not a credential: kept.
        literal(0x40, Some("x-request-id"), "r-17", true),
        literal(0x40, Some("content-type"), "application/grpc", false),
    ]
    .concat()
}

#[test]
fn credentials_in_header_blocks_are_masked_and_the_blocks_still_decode() {
    // Dynamic table after the first request (newest first): content-type 62, x-request-id 63,
    // authorization 64, :path 65.
    let second = [
        vec![0x83, 0x86, 0xc1, 0xc0, 0xbf, 0xbe],
        // A new proxy-authorization whose name comes from the static table (49), Huffman.
        literal(0x40 + 49, None, &format!("Basic {MARK}-p2"), true),
    ]
    .concat();
    // A third request split over HEADERS and CONTINUATION inside a credential's value.
    let third = [
        vec![0x83, 0x86, 0xc2, 0xbf],
        literal(
            0x10,
            Some("authorization"),
            &format!("Bearer {MARK}-a3"),
            false,
        ),
    ]
    .concat();
    let split = third.len() - 5;
    let response = |stream: u32, cookie: &str| {
        let block = [vec![0x88], literal(0x40 + 55, None, cookie, true)].concat();
        frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream, &block)
    };
    let client_open = [PREFACE.to_vec(), frame(SETTINGS, 0, 0, &[])].concat();
    // A fourth whose one HEADERS frame two writes carry, cut inside a cookie's value.
    let fourth = [
        vec![0x83, 0x86, 0xc2, 0x1f, 0x11], // :path (dynamic), cookie (static 32, never indexed)
        string(&format!("k={MARK}-c4"), true),
    ]
    .concat();
    let fourth = frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 7, &fourth);
    let cut = fourth.len() - 4;
    let segments: Segments = vec![
        (CLIENT, client_open),
        (SERVER, frame(SETTINGS, 0, 0, &[])),
        (
            CLIENT,
            frame(
                HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                1,
                &first_request(),
            ),
        ),
        (SERVER, response(1, &format!("id={MARK}-s1; Path=/"))),
        (
            CLIENT,
            frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3, &second),
        ),
        (SERVER, response(3, &format!("id={MARK}-s3"))),
        // The HEADERS and its CONTINUATION in two writes.
        (CLIENT, frame(HEADERS, FLAG_END_STREAM, 5, &third[..split])),
        (
            CLIENT,
            frame(CONTINUATION, FLAG_END_HEADERS, 5, &third[split..]),
        ),
        (SERVER, response(5, "theme=dark")),
        (CLIENT, fourth[..cut].to_vec()),
        (CLIENT, fourth[cut..].to_vec()),
        (SERVER, response_ok(7)),
    ];
    let (masked, marked_out, replay_out) = mask_and_replay(&segments);
    let original: Vec<u8> = segments
        .iter()
        .filter(|(d, _)| *d == CLIENT)
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert!(
        decode_blocks(&original)
            .iter()
            .any(|(n, v)| n == "authorization" && v.contains(MARK)),
        "the markers are there to mask"
    );

    // No marker in the masked bytes, nor in what an independent decoder reads from them.
    for direction in [CLIENT, SERVER] {
        let bytes: Vec<u8> = masked
            .iter()
            .filter(|(d, _)| *d == direction)
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert!(
            !contains(&bytes, MARK_PART.as_bytes()),
            "{direction:?}: plain marker"
        );
        for (name, value) in decode_blocks(&bytes) {
            assert!(!value.contains(MARK_PART), "{direction:?}: {name}: {value}");
            if name == ":path" {
                assert!(value.starts_with("/echo.Echo/Say?api_key="), "{value}");
                assert!(value.ends_with("&page=0"), "{value}");
            }
            if name == "x-request-id" {
                assert_eq!(value, "r-17", "other fields are kept");
            }
        }
    }
    // The same exchanges, their targets' query values masked.
    assert_eq!(marked_out.len(), 4);
    assert_eq!(replay_out.len(), marked_out.len());
    for (marked, replayed) in marked_out.iter().zip(&replay_out) {
        let (Some(m), Some(r)) = (marked.detail.http(), replayed.detail.http()) else {
            panic!("HTTP/2 exchanges")
        };
        assert_eq!((&m.method, m.status), (&r.method, r.status));
        assert_eq!(m.target.split('?').next(), r.target.split('?').next());
        assert!(!r.target.contains(MARK), "{}", r.target);
        assert!(r.target.contains("api_key="), "{}", r.target);
    }
}

#[test]
fn a_block_that_breaks_hpack_is_masked_from_the_break_on() {
    // An index past both tables stops decoding; the literals after it are still masked
    // (authorization by its static name, a dynamic name as unknown), and a malformed tail
    // whole.
    let block = [
        vec![0x83, 0x86, 0x84, 0xff, 0x70],
        literal(0x57, None, &format!("Bearer {MARK}-a"), true),
        literal(0x40 + 62, None, &format!("{MARK}-d"), false),
        vec![0x40, 0x7f],
    ]
    .concat();
    let segments = vec![
        (
            CLIENT,
            [
                PREFACE.to_vec(),
                frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block),
            ]
            .concat(),
        ),
        (SERVER, response_ok(1)),
    ];
    let (masked, marked_out, replay_out) = mask_and_replay(&segments);
    assert!(!contains(&masked[0].1, MARK.as_bytes()));
    assert!(!contains(
        &masked[0].1,
        &huffman::encode(b"Bearer wsp")[..6]
    ));
    assert_eq!(marked_out, replay_out);
}

fn response_ok(stream: u32) -> Vec<u8> {
    frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream, &[0x88])
}

/// Feed the segments to a decoder noting credentials, mask what it notes, and feed the
/// masked bytes to a second decoder: (masked segments, exchanges of both).
fn mask_and_replay(segments: &[(Direction, Vec<u8>)]) -> (Segments, Vec<Exchange>, Vec<Exchange>) {
    let names = Some(SecretNames::with(&[]));
    let mut marking = ConnDecoder::new().noting_secrets(names.clone());
    let mut replay = ConnDecoder::new().noting_secrets(names);
    let (mut marked_out, mut replay_out, mut masked) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (direction, data)) in segments.iter().enumerate() {
        let t = (i as u64 + 1) * 100;
        let seg = |data| Segment {
            direction: *direction,
            origin: Origin::default(),
            data,
            missing: 0,
            windows: &[],
            ts_enter_ns: t,
            ts_exit_ns: t + 10,
            tls: false,
        };
        marking.feed(&seg(data), &mut marked_out);
        let mut copy = data.clone();
        content::blank(marking.content().unwrap_or(&[]), &mut copy, &mut []);
        replay.feed(&seg(&copy), &mut replay_out);
        let mut again = copy.clone();
        content::blank(replay.content().unwrap_or(&[]), &mut again, &mut []);
        assert_eq!(again, copy, "masking masked bytes changes nothing");
        masked.push((*direction, copy));
    }
    marking.close(1_000_000, &mut marked_out);
    replay.close(1_000_000, &mut replay_out);
    (masked, marked_out, replay_out)
}

/// Every header field of the header blocks in the concatenated segments of one direction,
/// decoded by fluke-hpack (its own dynamic table).
fn decode_blocks(segments: &[u8]) -> Vec<(String, String)> {
    let mut bytes = segments.strip_prefix(PREFACE).unwrap_or(segments);
    let mut decoder = fluke_hpack::Decoder::new();
    let (mut block, mut fields) = (Vec::new(), Vec::new());
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let (kind, flags) = (bytes[3], bytes[4]);
        let payload = &bytes[9..9 + len];
        if kind == HEADERS || kind == CONTINUATION {
            block.extend_from_slice(payload);
            if flags & FLAG_END_HEADERS != 0 {
                for (n, v) in decoder.decode(&block).expect("the block decodes") {
                    fields.push((
                        String::from_utf8_lossy(&n).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    ));
                }
                block.clear();
            }
        }
        bytes = &bytes[9 + len..];
    }
    fields
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
