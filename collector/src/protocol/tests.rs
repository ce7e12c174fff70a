//! Decoder tests over byte streams shaped like real peers' (exact framing, keep-alive,
//! pipelining, chunking, gaps where `--capture-bytes` cut a syscall, mid-connection starts), and
//! a no-panic sweep over damaged streams.

use super::*;

const CLIENT: Direction = Direction::Egress;
const SERVER: Direction = Direction::Ingress;

/// Feed (direction, bytes, missing) segments with increasing times; then close.
fn run(segments: &[(Direction, &[u8], u64)]) -> Vec<Exchange> {
    let mut decoder = ConnDecoder::new();
    let mut out = Vec::new();
    for (i, (direction, data, missing)) in segments.iter().enumerate() {
        let t = (i as u64 + 1) * 100;
        decoder.feed(
            &Segment {
                direction: *direction,
                origin: Origin::default(),
                data,
                missing: *missing,
                windows: &[],
                ts_enter_ns: t,
                ts_exit_ns: t + 10,
                tls: false,
            },
            &mut out,
        );
    }
    decoder.close(1_000_000, &mut out);
    out
}

fn http(e: &Exchange) -> &Http {
    e.detail.http().unwrap()
}

fn summary(out: &[Exchange]) -> Vec<(String, String, Option<u16>)> {
    out.iter()
        .map(|e| {
            (
                http(e).method.clone(),
                http(e).target.clone(),
                http(e).status,
            )
        })
        .collect()
}

const OK_5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn keep_alive_three_requests_pair_in_order_with_times_and_sizes() {
    let req = |p: &str| {
        format!(
            "GET {p} HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: curl/8\r\ntraceparent: 00-aa-bb-01\r\n\r\n"
        )
    };
    let (a, b, c) = (req("/a"), req("/b?x=1"), req("/c"));
    let out = run(&[
        (CLIENT, a.as_bytes(), 0),
        (SERVER, OK_5, 0),
        (CLIENT, b.as_bytes(), 0),
        (
            SERVER,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            0,
        ),
        (CLIENT, c.as_bytes(), 0),
        (SERVER, b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\n", 0),
        (SERVER, b"!!", 0),
    ]);
    assert_eq!(
        summary(&out),
        [
            ("GET".into(), "/a".into(), Some(200)),
            ("GET".into(), "/b?x=1".into(), Some(404)),
            ("GET".into(), "/c".into(), Some(500))
        ]
    );
    let first = &out[0];
    assert_eq!((first.start_ns, first.end_ns), (100, 210));
    assert_eq!(
        (first.request_bytes, first.response_bytes),
        (a.len() as u64, OK_5.len() as u64)
    );
    assert_eq!(first.request_direction, CLIENT);
    let h = http(first);
    assert_eq!(h.host.as_deref(), Some("svc:8080"));
    assert_eq!(h.headers.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(h.headers.traceparent.as_deref(), Some("00-aa-bb-01"));
    assert_eq!(h.version, Some(HttpVersion::Http11));
    assert_eq!(out[2].end_ns, 710, "ends with the last body byte");
    assert!(out.iter().all(|e| e.flags == Flags::default()));
}

/// Each HTTP/1 exchange is named on the wire by its request's and its response's first bytes,
/// pipelined messages in one syscall included; TLS plaintext has no such numbers.
#[test]
fn http1_exchanges_carry_the_wire_numbers_of_their_messages_starts() {
    let requests: &[u8] = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    let first_request = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n".len() as u32;
    let responses = [OK_5, OK_5].concat();
    let decode = |tls: bool| {
        let mut decoder = ConnDecoder::new();
        let mut out = Vec::new();
        for (direction, data, seq) in [
            (CLIENT, requests, 1_000),
            (SERVER, &responses[..], u32::MAX - 10),
        ] {
            decoder.feed(
                &Segment {
                    direction,
                    origin: Origin {
                        seq,
                        ..Origin::default()
                    },
                    data,
                    missing: 0,
                    windows: &[],
                    ts_enter_ns: 1,
                    ts_exit_ns: 2,
                    tls,
                },
                &mut out,
            );
        }
        out.iter().map(|x| x.wire).collect::<Vec<_>>()
    };
    assert_eq!(
        decode(false),
        [
            WireSeqs::of(1_000, u32::MAX - 10),
            // Sequence numbers wrap.
            WireSeqs::of(1_000 + first_request, (OK_5.len() as u32).wrapping_sub(11)),
        ]
    );
    assert_eq!(decode(true), [WireSeqs::default(); 2]);
}

#[test]
fn pipelined_requests_in_one_write_pair_with_responses_in_one_read() {
    let out = run(&[
        (SERVER, b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n", 0),
        (CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n2", 0),
    ]);
    assert_eq!(
        summary(&out),
        [
            ("GET".into(), "/1".into(), Some(200)),
            ("GET".into(), "/2".into(), Some(201))
        ]
    );
    assert_eq!(
        out[0].request_direction, SERVER,
        "this process is the server: requests arrive"
    );
}

#[test]
fn chunked_bodies_split_anywhere_and_100_continue() {
    let out = run(&[
        (CLIENT, b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n", 0),
        (SERVER, b"HTTP/1.1 100 Continue\r\n\r\n", 0),
        (CLIENT, b"4\r\nwi", 0),
        (CLIENT, b"ki\r\n5\r\npedia\r\n0\r\n\r\n", 0),
        (SERVER, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r", 0),
        (SERVER, b"\n0\r\nX-Trailer: 1\r\n\r\n", 0),
        (CLIENT, b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n", 0),
        (SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", 0),
    ]);
    assert_eq!(
        summary(&out),
        [
            ("POST".into(), "/up".into(), Some(200)),
            ("HEAD".into(), "/h".into(), Some(200))
        ]
    );
    assert_eq!(out[0].request_bytes, 80 + 5 + 19);
    assert!(out.iter().all(|e| e.flags == Flags::default()));
}

#[test]
fn http10_response_without_length_ends_at_close() {
    let out = run(&[
        (CLIENT, b"GET /old HTTP/1.0\r\n\r\n", 0),
        (
            SERVER,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close",
            0,
        ),
    ]);
    assert_eq!(summary(&out), [("GET".into(), "/old".into(), Some(200))]);
    assert_eq!(http(&out[0]).version, Some(HttpVersion::Http10));
    assert_eq!(out[0].end_ns, 1_000_000);
}

#[test]
fn response_larger_than_the_capture_is_skipped_by_count() {
    // A 1 MiB body of which 4096 bytes (head included) were captured.
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
    let mut captured = head.to_vec();
    captured.resize(4096, b'x');
    let missing = (head.len() + (1 << 20) - 4096) as u64;
    let out = run(&[
        (CLIENT, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n", 0),
        (SERVER, &captured, missing),
        (CLIENT, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", 0),
        (SERVER, OK_5, 0),
    ]);
    assert_eq!(
        summary(&out),
        [
            ("GET".into(), "/big".into(), Some(200)),
            ("GET".into(), "/next".into(), Some(200))
        ]
    );
    assert_eq!(out[0].response_bytes, (head.len() + (1 << 20)) as u64);
}

#[test]
fn head_cut_by_the_capture_keeps_the_request_line_and_resyncs() {
    let mut big = b"GET /cookies HTTP/1.1\r\nCookie: ".to_vec();
    big.resize(4096, b'c');
    let out = run(&[
        (CLIENT, &big, 5000),
        (SERVER, OK_5, 0),
        (CLIENT, b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n", 0),
        (SERVER, OK_5, 0),
    ]);
    assert_eq!(
        summary(&out),
        [
            ("GET".into(), "/cookies".into(), Some(200)),
            ("GET".into(), "/after".into(), Some(200))
        ]
    );
    assert!(out[0].flags.truncated);
    assert!(!out[1].flags.truncated);
}

#[test]
fn mid_connection_start_never_invents_a_request() {
    let stream = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    for cut in 1..stream.len() {
        let out = run(&[
            (CLIENT, &stream[cut..], 0),
            (SERVER, OK_5, 0),
            (CLIENT, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n", 0),
            (SERVER, OK_5, 0),
        ]);
        // The cut request is either dropped or unknown; /b is always decoded right.
        assert!(
            out.iter()
                .all(|e| http(e).target == "/b" || http(e).target.is_empty()),
            "cut {cut}: {out:?}"
        );
        assert!(
            summary(&out).contains(&("GET".into(), "/b".into(), Some(200))),
            "cut {cut}: {out:?}"
        );
    }
}

#[test]
fn unknown_protocols_are_not_guessed() {
    let mut decoder = ConnDecoder::new();
    let mut out = Vec::new();
    for _ in 0..5 {
        decoder.feed(
            &Segment {
                direction: CLIENT,
                origin: Origin::default(),
                data: b"\x16\x03\x01\x02\x00 TLS hello",
                missing: 0,
                windows: &[],
                ts_enter_ns: 0,
                ts_exit_ns: 0,
                tls: false,
            },
            &mut out,
        );
    }
    assert_eq!(decoder.detected(), Detected::Unknown);
    assert_eq!(out.len(), 0);
}

/// A tiny deterministic generator, so the sweep is the same on every run.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

#[test]
fn damaged_streams_never_panic() {
    let corpus: [&[u8]; 4] = [
        b"GET /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 100 Continue\r\n\r\n",
        http2::PREFACE,
        &[
            0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 5, 1, 5, 0, 0, 0, 1, 0x82, 0x86,
            0x84, 0xbe, 0x3f,
        ],
    ];
    let mut seed = 7;
    for round in 0..3000 {
        let mut decoder = ConnDecoder::new();
        let mut out = Vec::new();
        for step in 0..8 {
            let base = corpus[(lcg(&mut seed) % 4) as usize];
            let mut data = base.to_vec();
            for _ in 0..lcg(&mut seed) % 4 {
                if data.is_empty() {
                    break;
                }
                let at = (lcg(&mut seed) as usize) % data.len();
                match lcg(&mut seed) % 3 {
                    0 => data[at] = lcg(&mut seed) as u8,
                    1 => data.truncate(at),
                    _ => data.drain(..at).for_each(drop),
                }
            }
            let direction = if lcg(&mut seed).is_multiple_of(2) {
                CLIENT
            } else {
                SERVER
            };
            let missing = if lcg(&mut seed).is_multiple_of(5) {
                lcg(&mut seed) % 10_000
            } else {
                0
            };
            decoder.feed(
                &Segment {
                    direction,
                    origin: Origin::default(),
                    data: &data,
                    missing,
                    windows: &[],
                    ts_enter_ns: step,
                    ts_exit_ns: step,
                    tls: false,
                },
                &mut out,
            );
        }
        decoder.close(round, &mut out);
    }
}

#[test]
fn http2_server_settings_before_the_client_preface_is_still_a_connection_start() {
    // The server's side: its own SETTINGS goes out first, then the client's preface arrives.
    let settings: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let mut request = vec![0, 0, 0, 1, 5, 0, 0, 0, 1];
    // :method GET, :scheme http, :path /, :authority www.example.com (indexed into the table).
    let block = [
        0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p', b'l',
        b'e', b'.', b'c', b'o', b'm',
    ];
    request[2] = block.len() as u8;
    request.extend_from_slice(&block);
    // The second request refers to the inserted :authority (index 62).
    let second = [0, 0, 4, 1, 5, 0, 0, 0, 3, 0x82, 0x86, 0x84, 0xbe];
    let response = |stream: u8| vec![0, 0, 1, 1, 5, 0, 0, 0, stream, 0x88];
    let out = run(&[
        (CLIENT, settings, 0),
        (SERVER, http2::PREFACE, 0),
        (SERVER, settings, 0),
        (SERVER, &request, 0),
        (CLIENT, &response(1), 0),
        (SERVER, &second, 0),
        (CLIENT, &response(3), 0),
    ]);
    assert_eq!(out.len(), 2);
    for e in &out {
        assert_eq!(e.flags, Flags::default(), "{e}");
        assert_eq!(http(e).host.as_deref(), Some("www.example.com"));
        assert_eq!(http(e).status, Some(200));
        assert_eq!(e.request_direction, SERVER);
    }
}

/// Feed TLS segments to one decoder, blank what it calls content, and feed the blanked bytes to
/// a second: the blanked streams (as a recording keeps them) and the exchanges of both.
fn blank_and_replay(
    segments: &[(Direction, &[u8], u64)],
) -> (Vec<Vec<u8>>, Vec<Exchange>, Vec<Exchange>) {
    let (mut marking, mut replay) = (ConnDecoder::new(), ConnDecoder::new());
    let (mut marked_out, mut replay_out, mut blanked) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (direction, data, missing)) in segments.iter().enumerate() {
        let t = (i as u64 + 1) * 100;
        let seg = |data| Segment {
            direction: *direction,
            origin: Origin::default(),
            data,
            missing: *missing,
            windows: &[],
            ts_enter_ns: t,
            ts_exit_ns: t + 10,
            tls: true,
        };
        marking.feed(&seg(data), &mut marked_out);
        let mut copy = data.to_vec();
        let whole = content::Blank::content(0..copy.len() as u64 + missing);
        let ranges = marking.content().unwrap_or(std::slice::from_ref(&whole));
        content::blank(ranges, &mut copy, &mut []);
        replay.feed(&seg(&copy), &mut replay_out);
        blanked.push(copy);
    }
    marking.close(1_000_000, &mut marked_out);
    replay.close(1_000_000, &mut replay_out);
    (blanked, marked_out, replay_out)
}

#[test]
fn tls_bodies_are_blanked_and_heads_and_chunk_framing_kept() {
    let request = b"POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\ncard=4111-1";
    let head_len = request.len() - 11;
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecret\r\n3;x=1\r\nkey\r\n0\r\n\r\n";
    let (blanked, marked, replayed) = blank_and_replay(&[
        // The body's first bytes come with the head, the rest in the next write.
        (CLIENT, &request[..head_len + 4], 0),
        (CLIENT, &request[head_len + 4..], 0),
        (SERVER, &response[..], 0),
        // A keep-alive request whose body the capture cut: the cut bytes are counted only.
        (
            CLIENT,
            b"PUT /k HTTP/1.1\r\nContent-Length: 9\r\n\r\npass",
            5,
        ),
        (SERVER, OK_5, 0),
    ]);
    assert_eq!(&blanked[0][..head_len], &request[..head_len]);
    assert!(blanked[0][head_len..].iter().all(|&b| b == 0));
    assert!(blanked[1].iter().all(|&b| b == 0));
    assert_eq!(
        blanked[2],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n\0\0\0\0\0\0\r\n3;x=1\r\n\0\0\0\r\n0\r\n\r\n"
    );
    assert!(blanked[3].ends_with(b"\r\n\r\n\0\0\0\0"));
    assert!(blanked[4].ends_with(b"\r\n\r\n\0\0\0\0\0"));
    assert_eq!(
        summary(&marked),
        [
            ("POST".into(), "/pay".into(), Some(200)),
            ("PUT".into(), "/k".into(), Some(200))
        ]
    );
    assert_eq!(replayed, marked, "the blanked bytes decode the same");
}

#[test]
fn tls_bytes_of_no_known_protocol_are_all_content() {
    let mut decoder = ConnDecoder::new();
    let mut out = Vec::new();
    let seg = Segment {
        direction: CLIENT,
        origin: Origin::default(),
        data: b"\x00\x01binary",
        missing: 0,
        windows: &[],
        ts_enter_ns: 1,
        ts_exit_ns: 2,
        tls: true,
    };
    decoder.feed(&seg, &mut out);
    assert_eq!(
        decoder.content(),
        None,
        "not read: the caller blanks it all"
    );
    // A side that lost sync gives up the rest of what it is fed.
    let mut decoder = ConnDecoder::new();
    decoder.feed(
        &Segment {
            data: b"GET / HTTP/1.1\r\n\r\n",
            ..seg
        },
        &mut out,
    );
    decoder.feed(
        &Segment {
            data: b"G\x00T garbage\r\n\r\n",
            ..seg
        },
        &mut out,
    );
    let blank = content::Blank::content(0..15);
    assert_eq!(decoder.content(), Some(std::slice::from_ref(&blank)));
}
