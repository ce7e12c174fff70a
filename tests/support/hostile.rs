//! The fault suite's hostile bytes (tests/faults_hostile_traffic.rs): malformed HTTP/1, HTTP/2,
//! HPACK and gRPC inputs by name, and the clients that write them on connections of their own.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use super::faults::pick;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Malformed HTTP/1 inputs, by name.
pub fn hostile_http1() -> Vec<(&'static str, Vec<u8>)> {
    let mut oversized = b"GET /hostile/oversized HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    // Past Python's 64 KiB line limit and the agent's 64 KiB head cap (the full size is past
    // Go's 1 MiB header limit too).
    oversized.resize(oversized.len() + pick(70_000, 1_100_000), b'a');
    oversized.extend_from_slice(b"\r\n\r\n");
    let mut huge_method = vec![b'A'; 5000];
    huge_method.extend_from_slice(b" / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut tls_hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    tls_hello.extend((0u8..=255).cycle().take(508));
    vec![
        ("h1-oversized-head", oversized),
        (
            "h1-bad-chunk-size",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZZ\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "h1-chunk-size-overflow",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFFFF\r\nab\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "h1-pipelined-garbage",
            b"GET /hostile/pipelined HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage\xff\xfe\r\n\r\nGET /hostile/after-garbage HTTP/1.1\r\nHost: x\r\n\r\n"
                .to_vec(),
        ),
        (
            "h1-content-length-lies",
            b"GET /hostile/huge-length HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nhello"
                .to_vec(),
        ),
        ("h1-huge-method", huge_method),
        ("h1-binary-first", tls_hello),
    ]
}

/// One HTTP/2 frame; `len` is the length its header claims (the payload's own when None).
fn frame(len: Option<u32>, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = len.unwrap_or_else(|| u32::try_from(payload.len()).unwrap());
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// An HPACK literal field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, u8::try_from(name.len()).unwrap()];
    out.extend_from_slice(name.as_bytes());
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
    out
}

/// A connection start as a client writes it: preface and empty SETTINGS.
fn h2_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(None, SETTINGS, 0, 0, &[]));
    out
}

/// The header block of a well-formed unary call to Say.
fn grpc_say_headers() -> Vec<u8> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/wirespan.echo.Echo/Say"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .flat_map(|(n, v)| literal(n, v))
    .collect()
}

/// A well-formed gRPC call on stream 1 whose one DATA frame carries `message` (a length
/// prefix and what follows, as given).
fn grpc_call_with(message: &[u8]) -> Vec<u8> {
    let mut out = h2_start();
    out.extend(frame(None, HEADERS, END_HEADERS, 1, &grpc_say_headers()));
    out.extend(frame(None, DATA, END_STREAM, 1, message));
    out
}

/// Malformed HTTP/2 and gRPC inputs, by name.
pub fn hostile_http2() -> Vec<(&'static str, Vec<u8>)> {
    let mut bad_preface = b"PRI * HTTP/2.0\r\n\r\nXM\r\n\r\n".to_vec();
    bad_preface.extend(frame(None, SETTINGS, 0, 0, &[]));
    let mut settings_len = PREFACE.to_vec();
    settings_len.extend(frame(None, SETTINGS, 0, 0, &[0, 4, 0, 1, 0]));
    let mut claims_more = h2_start();
    // A HEADERS frame that says 16 MiB and brings 20 bytes before the connection ends.
    claims_more.extend(frame(
        Some(0x00ff_ffff),
        HEADERS,
        END_HEADERS,
        1,
        &[0x82; 20],
    ));
    let mut over_max = h2_start();
    over_max.extend(frame(None, DATA, 0, 1, &vec![0x41; 20_000]));
    let mut index_past_static = h2_start();
    index_past_static.extend(frame(None, HEADERS, END_HEADERS | END_STREAM, 1, &[0xc6]));
    let mut index_huge = h2_start();
    index_huge.extend(frame(
        None,
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &[0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ));
    let mut table_size_over = h2_start();
    table_size_over.extend(frame(
        None,
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &[0x3f, 0xe1, 0xff, 0xff, 0x03, 0x82],
    ));
    let mut flood = PREFACE.to_vec();
    for _ in 0..pick(2_000, 20_000) {
        flood.extend(frame(None, SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
    }
    vec![
        ("h2-bad-preface", bad_preface),
        ("h2-settings-length-not-6n", settings_len),
        ("h2-frame-longer-than-data", claims_more),
        ("h2-frame-over-max-size", over_max),
        ("h2-hpack-index-past-tables", index_past_static),
        ("h2-hpack-index-overflow", index_huge),
        ("h2-hpack-table-size-over-limit", table_size_over),
        ("h2-settings-flood", flood),
        (
            "grpc-length-prefix-4gib",
            grpc_call_with(&[0, 0xff, 0xff, 0xff, 0xff, b'x']),
        ),
        ("grpc-length-prefix-cut", grpc_call_with(&[0, 0, 0])),
        (
            "grpc-bad-compressed-flag",
            grpc_call_with(&[7, 0, 0, 0, 2, b'h', b'i']),
        ),
    ]
}

/// Write `bytes` on a new connection to `addr` and read what comes back until the server
/// closes or is quiet for a while; the server's answer is not checked (it may refuse).
pub fn send_hostile(addr: &str, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    // A server may close early (a head over its limit): a failed write is the fault's shape.
    let _ = stream.write_all(bytes);
    let mut sink = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Bytes of no protocol, no line end, in several writes: what the agent gives up on after its
/// detection window (`connections: N of unknown protocol`). A server waits for a line end
/// and answers nothing.
pub fn send_unknown(addr: &str) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    for piece in 0u8..6 {
        let _ = stream.write_all(&[0xde, 0xad, 0xbe, 0xef, piece, b'~', b'z', b'q', 0x7f]);
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Every hostile input once against each server it is for, in parallel; (name, times sent).
pub fn hostile_round(http1: &[&str], h2: &str, sent: &mut BTreeMap<&'static str, u32>) {
    let (h1_inputs, h2_inputs) = (hostile_http1(), hostile_http2());
    std::thread::scope(|scope| {
        for addr in http1 {
            for (_, bytes) in &h1_inputs {
                scope.spawn(move || send_hostile(addr, bytes));
            }
        }
        for (_, bytes) in &h2_inputs {
            scope.spawn(move || send_hostile(h2, bytes));
        }
        for addr in http1 {
            scope.spawn(move || send_unknown(addr));
        }
    });
    *sent.entry("no-protocol-in-pieces").or_default() += u32::try_from(http1.len()).unwrap();
    for (name, _) in &h1_inputs {
        *sent.entry(name).or_default() += u32::try_from(http1.len()).unwrap();
    }
    for (name, _) in &h2_inputs {
        *sent.entry(name).or_default() += 1;
    }
}
