//! HTTP/2 through messages of any size: whole gRPC conversations (HPACK with a dynamic table,
//! concurrent streams, messages of 64 KiB to 4 MiB between small ones) cut into syscalls of
//! every size, each captured only to `CAPTURE` bytes with the exact byte count, plus the
//! windows the probe sends (`chain_model`). Every call must keep its method, status and
//! message counts; lost events and oversized header blocks must be counted, never mis-decoded.

use super::{chain_model::ChainModel, *};
use crate::event::Window;
use crate::protocol::{Origin, WireSeqs};

const CAPTURE: usize = 4096;
const CLIENT_ISN: u32 = 0xffff_0000;
const SERVER_ISN: u32 = 77;

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A small HPACK encoder: static entries by index, everything else literal with incremental
/// indexing the first time and by dynamic index after, so a lost block would break later ones.
#[derive(Default)]
struct Encoder {
    table: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Encoder {
    fn encode(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            match (*name, *value) {
                (":method", "POST") => out.push(0x83),
                (":scheme", "http") => out.push(0x86),
                (":status", "200") => out.push(0x88),
                // Too big for the table: a literal never inserted.
                ("x-big", _) => {
                    out.push(0x00);
                    for s in [name.as_bytes(), value.as_bytes()] {
                        push_string(&mut out, s);
                    }
                }
                _ => {
                    let entry = (name.as_bytes().to_vec(), value.as_bytes().to_vec());
                    if let Some(i) = self.table.iter().position(|e| *e == entry) {
                        out.push(0x80 | (62 + i) as u8);
                    } else {
                        out.push(0x40);
                        for s in [name.as_bytes(), value.as_bytes()] {
                            push_string(&mut out, s);
                        }
                        self.table.insert(0, entry);
                    }
                }
            }
        }
        out
    }
}

fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    // HPACK integer with a 7-bit prefix, no Huffman.
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128 + 128) as u8);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// One call: its path, request and response message sizes, and an optional extra request
/// header value (a large one makes a header block bigger than the probe's window).
#[derive(Clone)]
struct Call {
    path: &'static str,
    request: usize,
    response: usize,
    extra: Option<String>,
}

fn call(path: &'static str, request: usize, response: usize) -> Call {
    Call {
        path,
        request,
        response,
        extra: None,
    }
}

/// gRPC DATA frames of one message (16 KiB frames, END_STREAM on the last when `end`).
fn message_frames(stream: u32, size: usize, end: bool) -> Vec<Vec<u8>> {
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(size as u32).to_be_bytes());
    msg.extend((0..size).map(|i| (i * 7 + 3) as u8));
    let chunks: Vec<&[u8]> = msg.chunks(16_384).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| frame(DATA, u8::from(end && i == last), stream, c))
        .collect()
}

/// Both directions of a conversation and the runs in which they were written: `concurrent`
/// calls at a time, their request frames interleaved, then their response frames interleaved.
struct Conversation {
    client: Vec<u8>,
    server: Vec<u8>,
    /// (client's bytes?, end of the run in that direction's stream).
    runs: Vec<(bool, usize)>,
}

fn interleave(lists: Vec<Vec<Vec<u8>>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut iters: Vec<_> = lists.into_iter().map(IntoIterator::into_iter).collect();
    loop {
        let mut any = false;
        for it in &mut iters {
            if let Some(f) = it.next() {
                out.extend_from_slice(&f);
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}

fn conversation(calls: &[Call], concurrent: usize) -> Conversation {
    let mut client = PREFACE.to_vec();
    client.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]));
    let mut server = frame(SETTINGS, 0, 0, &[]);
    server.extend(frame(SETTINGS, 1, 0, &[]));
    let (mut client_hpack, mut server_hpack) = (Encoder::default(), Encoder::default());
    let mut runs = Vec::new();
    for (g, group) in calls.chunks(concurrent).enumerate() {
        let ids: Vec<u32> = (0..group.len())
            .map(|i| (g * concurrent + i) as u32 * 2 + 1)
            .collect();
        // Header blocks are encoded in wire order: the first frame of each stream goes first.
        let mut requests = Vec::new();
        for (c, id) in group.iter().zip(&ids) {
            let mut fields = vec![
                (":method", "POST"),
                (":scheme", "http"),
                (":path", c.path),
                (":authority", "127.0.0.1:50051"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ];
            if let Some(extra) = &c.extra {
                fields.push(("x-big", extra));
            }
            let block = client_hpack.encode(&fields);
            let mut frames = vec![frame(HEADERS, FLAG_END_HEADERS, *id, &block)];
            frames.extend(message_frames(*id, c.request, true));
            requests.push(frames);
        }
        client.extend(interleave(requests));
        runs.push((true, client.len()));
        let mut responses = Vec::new();
        for (c, id) in group.iter().zip(&ids) {
            let head =
                server_hpack.encode(&[(":status", "200"), ("content-type", "application/grpc")]);
            let mut frames = vec![frame(HEADERS, FLAG_END_HEADERS, *id, &head)];
            frames.extend(message_frames(*id, c.response, false));
            responses.push(frames);
        }
        // Trailers after all DATA, in stream order (encoded in that order too).
        let mut body = interleave(responses);
        for id in &ids {
            let trailers = server_hpack.encode(&[("grpc-status", "0"), ("grpc-message", "")]);
            body.extend(frame(
                HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                *id,
                &trailers,
            ));
        }
        server.extend(body);
        runs.push((false, server.len()));
    }
    Conversation {
        client,
        server,
        runs,
    }
}

/// One syscall as the client process saw it: direction, stream range, and the probe's windows.
struct Syscall {
    direction: Direction,
    start: usize,
    end: usize,
    windows: Vec<Window>,
}

/// Cut each run into syscalls of sizes drawn from `sizes` (a seeded choice, so header cuts at
/// every offset occur), and compute the probe's windows for each.
fn syscalls(conv: &Conversation, sizes: &[usize], seed: u64) -> Vec<Syscall> {
    let mut seed = seed;
    let (mut client_chain, mut server_chain) = (ChainModel::new(PREFACE.len()), ChainModel::new(0));
    let (mut client_at, mut server_at) = (0, 0);
    let mut out = Vec::new();
    for &(is_client, end) in &conv.runs {
        let (stream, at, chain, direction) = if is_client {
            (
                &conv.client,
                &mut client_at,
                &mut client_chain,
                Direction::Egress,
            )
        } else {
            (
                &conv.server,
                &mut server_at,
                &mut server_chain,
                Direction::Ingress,
            )
        };
        while *at < end {
            let size = sizes[lcg(&mut seed) as usize % sizes.len()];
            let size = (size + lcg(&mut seed) as usize % 17).min(end - *at);
            let windows = chain.windows(stream, *at, *at + size, CAPTURE);
            out.push(Syscall {
                direction,
                start: *at,
                end: *at + size,
                windows,
            });
            *at += size;
        }
    }
    out
}

/// Feed the syscalls (skipping those in `lost`) to one decoder; exchanges and its stats.
fn decode(
    conv: &Conversation,
    syscalls: &[Syscall],
    lost: &[usize],
) -> (Vec<Exchange>, Http2Stats) {
    let mut decoder = Http2Conn::from_preface(Direction::Egress);
    let mut out = Vec::new();
    for (i, s) in syscalls.iter().enumerate() {
        if lost.contains(&i) {
            continue;
        }
        let (stream, isn) = match s.direction {
            Direction::Egress => (&conv.client, CLIENT_ISN),
            Direction::Ingress => (&conv.server, SERVER_ISN),
        };
        let captured = (s.end - s.start).min(CAPTURE);
        let t = i as u64 * 1000 + 1;
        decoder.feed(
            &Segment {
                direction: s.direction,
                origin: Origin {
                    seq: isn.wrapping_add(s.start as u32),
                    tid: 1,
                    goid: None,
                },
                data: &stream[s.start..s.start + captured],
                missing: (s.end - s.start - captured) as u64,
                windows: &s.windows,
                ts_enter_ns: t,
                ts_exit_ns: t + 1,
                tls: false,
            },
            &mut out,
        );
    }
    decoder.close(u64::MAX / 2, &mut out);
    (out, decoder.stats)
}

fn grpc(e: &Exchange) -> &Grpc {
    match &e.detail {
        Detail::Grpc(g) => g,
        other => panic!("not gRPC: {other:?}"),
    }
}

/// Every call decoded whole: method, HTTP and gRPC status, one message each way, no flags.
fn assert_all_whole(calls: &[Call], out: &[Exchange]) {
    assert_eq!(out.len(), calls.len(), "one exchange per call");
    for e in out {
        let g = grpc(e);
        let id = g.http.stream_id.unwrap();
        let c = &calls[(id as usize - 1) / 2];
        assert_eq!(g.http.target, c.path, "stream {id}");
        assert_eq!(g.http.method, "POST");
        assert_eq!(g.http.status, Some(200), "stream {id}");
        assert_eq!(g.status, Some(0), "stream {id}");
        assert_eq!(
            (g.request_messages, g.response_messages),
            (1, 1),
            "stream {id}"
        );
        assert_eq!(e.flags, Flags::default(), "stream {id}");
        assert!(e.request_bytes as usize > c.request, "stream {id}");
        assert!(e.response_bytes as usize > c.response, "stream {id}");
    }
}

fn mixed_calls() -> Vec<Call> {
    let mut calls = Vec::new();
    for (i, big) in [64 << 10, 300 << 10, 1 << 20, 4 << 20, 100_000, 2 << 20]
        .into_iter()
        .enumerate()
    {
        calls.push(call("/demo.Big/Small", 10, 12));
        calls.push(call(
            "/demo.Big/Large",
            if i % 2 == 0 { big } else { 20 },
            big,
        ));
        calls.push(call("/demo.Big/Small", 11, 9));
    }
    calls
}

#[test]
fn large_messages_keep_framing_and_hpack_at_every_syscall_size() {
    let calls = mixed_calls();
    for concurrent in [1, 3] {
        let conv = conversation(&calls, concurrent);
        for (seed, sizes) in [
            (1, &[65_536, 212_992, 4_000_000][..]),
            (2, &[7, 13, 4_100, 16_393, 16_402][..]),
            (3, &[1, 9, 100, 30_000, 1_000_000][..]),
        ] {
            let cut = syscalls(&conv, sizes, seed);
            let (out, stats) = decode(&conv, &cut, &[]);
            assert_eq!(
                stats,
                Http2Stats::default(),
                "concurrent {concurrent}, seed {seed}"
            );
            assert_all_whole(&calls, &out);
        }
    }
}

/// The two ends of a connection cut its bytes into different syscalls; each exchange's wire
/// numbers (where its HEADERS sit) come out the same however the bytes were cut, so agents at
/// the two ends name it alike (see `join`), and no two exchanges share them.
#[test]
fn wire_sequence_numbers_do_not_depend_on_how_syscalls_cut_the_bytes() {
    let calls = mixed_calls();
    let conv = conversation(&calls, 3);
    let wires = |sizes: &[usize], seed| {
        let (out, _) = decode(&conv, &syscalls(&conv, sizes, seed), &[]);
        out.iter()
            .map(|x| (x.detail.http().unwrap().stream_id, x.wire))
            .collect::<Vec<_>>()
    };
    let one = wires(&[65_536, 212_992], 1);
    assert_eq!(one, wires(&[7, 13, 4_100, 16_393], 2));
    assert_eq!(one, wires(&[1, 9, 100, 30_000], 3));
    let mut pairs: Vec<_> = one.iter().map(|(_, w)| w.both().expect("known")).collect();
    pairs.sort_unstable();
    pairs.dedup();
    assert_eq!(pairs.len(), one.len());
    // The first request's HEADERS payload follows the preface (24), the client's SETTINGS
    // frame and the HEADERS frame's own header (9).
    assert!(one[0].1.request.unwrap().wrapping_sub(CLIENT_ISN) > 24 + 9);
}

#[test]
fn without_windows_a_large_message_loses_the_framing() {
    // The bug this design fixes: the capture alone cannot keep sync past a large DATA run.
    let calls = mixed_calls();
    let conv = conversation(&calls, 1);
    let mut cut = syscalls(&conv, &[300_000], 1);
    for s in &mut cut {
        s.windows.clear();
    }
    let (_, stats) = decode(&conv, &cut, &[]);
    assert!(stats.desyncs > 0);
}

#[test]
fn lost_events_are_counted_and_never_mis_decoded() {
    let calls = mixed_calls();
    let conv = conversation(&calls, 2);
    let cut = syscalls(&conv, &[16_000, 70_000], 9);
    // Lose one syscall in the middle of each direction.
    let of = |d: Direction| -> Vec<usize> {
        (0..cut.len()).filter(|&i| cut[i].direction == d).collect()
    };
    let (reads, writes) = (of(Direction::Ingress), of(Direction::Egress));
    let lost = [reads[reads.len() / 2], writes[writes.len() / 2]];
    let (exchanges, counts) = decode(&conv, &cut, &lost);
    assert!(counts.seq_gaps >= 1 && counts.desyncs >= 1, "{counts:?}");
    for e in &exchanges {
        let (http, status) = match &e.detail {
            Detail::Grpc(g) => (&g.http, g.status),
            Detail::Http(h) => (h, None),
            Detail::Db(_) | Detail::Tcp => unreachable!("an HTTP/2 decoder makes HTTP/2 exchanges"),
        };
        let id = http.stream_id.unwrap();
        let c = &calls[(id as usize - 1) / 2];
        // What was decoded is right; what was not is flagged, never guessed.
        if !http.target.is_empty() {
            assert_eq!(http.target, c.path, "stream {id}");
        }
        if let Some(status) = status {
            assert_eq!(status, 0);
        }
        let whole = status.is_some() && !http.target.is_empty();
        assert!(
            whole || e.flags != Flags::default(),
            "stream {id} incomplete but unflagged: {e:?}"
        );
    }
}

#[test]
fn a_header_block_larger_than_the_window_is_cut_without_losing_the_framing() {
    let mut calls = mixed_calls();
    // A 6 KB header value: its block runs past the capture and is longer than a window; the
    // frames after it (in the same write) are found through windows.
    calls[4].extra = Some("x".repeat(6000));
    let conv = conversation(&calls, 3);
    let cut = syscalls(&conv, &[4_000_000], 5);
    let (out, stats) = decode(&conv, &cut, &[]);
    assert_eq!(stats.desyncs, 0, "{stats:?}");
    assert!(stats.cut_frames >= 1, "{stats:?}");
    assert_eq!(out.len(), calls.len());
    for e in &out {
        let g = grpc(e);
        let id = g.http.stream_id.unwrap();
        if id < 9 {
            assert_eq!(
                e.flags,
                Flags::default(),
                "before the cut block, stream {id}"
            );
            assert_eq!(g.http.target, calls[(id as usize - 1) / 2].path);
        }
        if id == 9 {
            assert!(e.flags.truncated && e.flags.headers_unknown, "{e:?}");
        }
        // Responses still pair, and their static `:status` still decodes.
        assert_eq!(g.http.status, Some(200), "stream {id}");
    }
}

#[test]
fn any_windows_make_pieces_that_cover_the_syscall_once_and_never_panic() {
    // Windows as a damaged or foreign recording could hold them: any offset, order, overlap.
    let mut seed = 11;
    let junk: Vec<u8> = (0..4096).map(|i| (i * 13 + 5) as u8).collect();
    let mut decoder = Http2Conn::from_preface(Direction::Egress);
    let mut out = Vec::new();
    for round in 0..3000_u64 {
        let data_len = (lcg(&mut seed) % 64) as usize;
        let missing = lcg(&mut seed) % 2000;
        let windows: Vec<Window> = (0..lcg(&mut seed) % 5)
            .map(|_| {
                let at = i64::try_from(lcg(&mut seed) % 2100).unwrap();
                Window {
                    offset: at - 30,
                    bytes: junk[..=(lcg(&mut seed) % 40) as usize].to_vec(),
                }
            })
            .collect();
        let seg = Segment {
            direction: if round % 2 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            origin: Origin::default(),
            data: &junk[..data_len],
            missing,
            windows: &windows,
            ts_enter_ns: round,
            ts_exit_ns: round,
            tls: false,
        };
        let covered: u64 = seg
            .pieces()
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::Gap(n) => *n,
            })
            .sum();
        assert_eq!(covered, data_len as u64 + missing, "round {round}");
        decoder.feed(&seg, &mut out);
    }
}

/// Whether `bytes` hold a run of a message body's pattern (`message_frames`: each byte 7 more
/// than the one before), long enough that no header block or prefix makes one by chance.
fn holds_message_body(bytes: &[u8]) -> bool {
    bytes
        .windows(12)
        .any(|w| w.windows(2).all(|p| p[1] == p[0].wrapping_add(7)))
}

#[test]
fn tls_content_is_blanked_to_the_prefixes_and_the_blanked_bytes_decode_the_same() {
    let calls = mixed_calls();
    let conv = conversation(&calls, 3);
    let sys = syscalls(&conv, &[100, 4096, 20_000], 7);
    let (mut plain, _) = decode(&conv, &sys, &[]);
    let mut marking = Http2Conn::from_preface(Direction::Egress);
    let mut replay = Http2Conn::from_preface(Direction::Egress);
    let (mut marked_out, mut replay_out) = (Vec::new(), Vec::new());
    let mut bodies_seen = 0;
    for (i, s) in sys.iter().enumerate() {
        let (stream, isn) = match s.direction {
            Direction::Egress => (&conv.client, CLIENT_ISN),
            Direction::Ingress => (&conv.server, SERVER_ISN),
        };
        let origin = Origin {
            seq: isn.wrapping_add(s.start as u32),
            tid: 1,
            goid: None,
        };
        let captured = (s.end - s.start).min(CAPTURE);
        let mut data = stream[s.start..s.start + captured].to_vec();
        let mut windows = s.windows.clone();
        let t = i as u64 * 1000 + 1;
        let make = |data: &[u8], windows: &[Window], out: &mut Vec<Exchange>, d: &mut Http2Conn| {
            d.feed(
                &Segment {
                    direction: s.direction,
                    origin,
                    data,
                    missing: (s.end - s.start - captured) as u64,
                    windows,
                    ts_enter_ns: t,
                    ts_exit_ns: t + 1,
                    tls: true,
                },
                out,
            );
        };
        make(&data, &windows, &mut marked_out, &mut marking);
        bodies_seen += usize::from(holds_message_body(&data));
        let ranges = marking.marks.ranges().to_vec();
        let mut in_place: Vec<(i64, &mut [u8])> = windows
            .iter_mut()
            .map(|w| (w.offset, w.bytes.as_mut_slice()))
            .collect();
        crate::protocol::content::blank(&ranges, &mut data, &mut in_place);
        assert!(!holds_message_body(&data), "syscall {i}: a body survived");
        for w in &windows {
            assert!(
                !holds_message_body(&w.bytes),
                "syscall {i}: a body survived"
            );
        }
        make(&data, &windows, &mut replay_out, &mut replay);
    }
    assert!(
        bodies_seen > 100,
        "the conversation carries bodies ({bodies_seen})"
    );
    marking.close(u64::MAX / 2, &mut marked_out);
    replay.close(u64::MAX / 2, &mut replay_out);
    assert_all_whole(&calls, &plain);
    // The same conversation as TLS plaintext: its positions are not TCP sequence numbers, so
    // its exchanges carry none; everything else is the same.
    assert!(marked_out.iter().all(|x| x.wire == WireSeqs::default()));
    for x in &mut plain {
        x.wire = WireSeqs::default();
    }
    assert_eq!(marked_out, plain, "noting content changes nothing");
    assert_eq!(replay_out, plain, "the blanked bytes decode the same");
}

/// Feed whole frames as one segment each to a decoder that joined mid-connection.
fn feed_mid_connection(frames: &[(Direction, Vec<u8>)]) -> (Vec<Exchange>, Http2Stats) {
    let mut decoder = Http2Conn::mid_connection();
    let mut out = Vec::new();
    for (i, (direction, bytes)) in frames.iter().enumerate() {
        let t = i as u64 * 10 + 1;
        decoder.feed(
            &Segment {
                direction: *direction,
                origin: Origin::default(),
                data: bytes,
                missing: 0,
                windows: &[],
                ts_enter_ns: t,
                ts_exit_ns: t + 1,
                tls: true,
            },
            &mut out,
        );
    }
    (out, decoder.stats)
}

#[test]
fn a_warm_connections_first_request_is_kept_though_its_headers_reference_an_unknown_table() {
    let both_ends = FLAG_END_HEADERS | FLAG_END_STREAM;
    let (out, stats) = feed_mid_connection(&[
        // A pooled connection's request: every field a dynamic-table reference.
        (
            Direction::Egress,
            frame(HEADERS, both_ends, 5, &[0xbe, 0xbf]),
        ),
        // The response: `:status 200`, a static entry.
        (Direction::Ingress, frame(HEADERS, both_ends, 5, &[0x88])),
    ]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].request_direction, Direction::Egress);
    assert_eq!(out[0].detail.http().unwrap().status, Some(200));
    assert!(out[0].flags.headers_unknown);
    assert_eq!(stats.wrong_role_guesses, 0);
}

#[test]
fn a_wrong_role_guess_is_corrected_by_the_first_decoded_block() {
    let both_ends = FLAG_END_HEADERS | FLAG_END_STREAM;
    let (out, stats) = feed_mid_connection(&[
        // Trailers of a stream older than the capture, from the server: taken as a request.
        (Direction::Ingress, frame(HEADERS, both_ends, 3, &[0xbe])),
        // A request that decodes (`:method GET`, `:path /`) says the guess was wrong.
        (
            Direction::Egress,
            frame(HEADERS, both_ends, 5, &[0x82, 0x84]),
        ),
        (Direction::Ingress, frame(HEADERS, both_ends, 5, &[0x88])),
    ]);
    assert_eq!(stats.wrong_role_guesses, 1);
    assert_eq!(out.len(), 1, "{out:?}");
    let http = out[0].detail.http().unwrap();
    assert_eq!(
        (http.method.as_str(), http.target.as_str(), http.status),
        ("GET", "/", Some(200))
    );
    assert_eq!(out[0].request_direction, Direction::Egress);
}

#[test]
fn a_response_whose_request_went_by_unseen_is_an_exchange_marked_so() {
    let both_ends = FLAG_END_HEADERS | FLAG_END_STREAM;
    let (out, _) = feed_mid_connection(&[
        // A request that decodes, so the roles are known.
        (
            Direction::Ingress,
            frame(HEADERS, both_ends, 1, &[0x82, 0x84]),
        ),
        (Direction::Egress, frame(HEADERS, both_ends, 1, &[0x88])),
        // Stream 3's request was in a read the capture missed: only its response is seen.
        (Direction::Egress, frame(HEADERS, both_ends, 3, &[0x88])),
    ]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(!out[0].flags.request_unseen);
    assert!(out[1].flags.request_unseen && out[1].flags.headers_unknown);
    assert_eq!(out[1].detail.http().unwrap().stream_id, Some(3));
    assert_eq!(out[1].detail.http().unwrap().status, Some(200));
}

#[test]
fn a_header_block_that_breaks_hpack_on_a_known_table_opens_no_stream() {
    let both_ends = FLAG_END_HEADERS | FLAG_END_STREAM;
    let blocks: [&[u8]; 3] = [
        // Index 70: past the static table, and the dynamic one is empty.
        &[0xc6],
        // `:method GET`, then an index too large for any integer the decoder takes.
        &[0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
        // A dynamic table size update far over the allowed 4,096, then `:method GET`.
        &[0x3f, 0xe1, 0xff, 0xff, 0x03, 0x82],
    ];
    for block in blocks {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(HEADERS, both_ends, 1, block));
        let mut decoder = Http2Conn::from_preface(Direction::Ingress);
        let mut out = Vec::new();
        decoder.feed(
            &Segment {
                direction: Direction::Ingress,
                origin: Origin::default(),
                data: &bytes,
                missing: 0,
                windows: &[],
                ts_enter_ns: 1,
                ts_exit_ns: 2,
                tls: false,
            },
            &mut out,
        );
        decoder.close(10, &mut out);
        assert!(out.is_empty(), "{block:02x?}: {out:?}");
        assert_eq!(decoder.stats.undecoded_header_blocks, 1, "{block:02x?}");
    }
}
