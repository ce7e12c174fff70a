//! Damaged streams never panic and never pair more replies than were sent; the fuzz seeds.

use super::*;
use crate::protocol::fuzzing::{encode, for_each_segment};

/// A small deterministic generator (xorshift), so the sweep is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn damaged_streams_never_panic_nor_over_pair() {
    let requests: Vec<u8> = session().iter().flat_map(|(c, _)| c.clone()).collect();
    let replies: Vec<u8> = session().iter().flat_map(|(_, r)| r.clone()).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let mut req = requests.clone();
        let mut rep = replies.clone();
        for _ in 0..rng.below(4) {
            let buf = if rng.below(2) == 0 {
                &mut req
            } else {
                &mut rep
            };
            let at = rng.below(buf.len());
            match rng.below(3) {
                0 => buf[at] = rng.next() as u8,
                1 => {
                    buf.remove(at);
                }
                _ => buf.insert(at, b"*$\r\n:+-_>|%"[rng.below(11)]),
            }
        }
        let mut f = if rng.below(2) == 0 {
            Feeder::from_start()
        } else {
            Feeder::new()
        };
        let (mut i, mut j) = (0, 0);
        while i < req.len() || j < rep.len() {
            let client = j >= rep.len() || (i < req.len() && rng.below(2) == 0);
            let (buf, pos, dir) = if client {
                (&req, &mut i, CLIENT)
            } else {
                (&rep, &mut j, SERVER)
            };
            let n = 1 + rng.below(40).min(buf.len() - *pos - 1);
            let missing = if rng.below(8) == 0 {
                rng.below(n) as u64
            } else {
                0
            };
            let kept = n - missing as usize;
            f.seg(dir, &buf[*pos..*pos + kept], missing);
            *pos += n;
        }
        let out = f.close();
        assert!(out.len() <= session().len() + 4);
        assert!(f.conn.buffered_bytes() < 64 * 1024);
    }
}

#[test]
fn fuzz_input_format_round_trips() {
    let data = encode(&[
        (CLIENT, &cmd(&[b"GET", b"k"])[..]),
        (SERVER, b"$1\r\nv\r\n"),
    ]);
    let mut conn = RedisConn::new(CLIENT);
    let mut out = Vec::new();
    for_each_segment(&data, |seg| conn.feed(&seg, &mut out));
    conn.close(u64::MAX, &mut out);
    assert_eq!(summary(&out), [row("GET", "GET ?", "", "")]);
}

/// Writes collector/fuzz/seeds/redis: `cargo test -p wirespan --lib write_redis_fuzz_seeds --
/// --ignored`.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_redis_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/redis");
    std::fs::create_dir_all(&dir).unwrap();
    let s = session();
    let mut conversation = Vec::new();
    for (c, r) in &s {
        conversation.push((CLIENT, c.as_slice()));
        conversation.push((SERVER, r.as_slice()));
    }
    let requests: Vec<u8> = s.iter().flat_map(|(c, _)| c.clone()).collect();
    let replies: Vec<u8> = s.iter().flat_map(|(_, r)| r.clone()).collect();
    let sub = cmd(&[b"SUBSCRIBE", b"a", b"b"]);
    let resp2 = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n";
    let resp3 = b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n";
    let seeds: [(&str, Vec<u8>); 4] = [
        ("session", encode(&conversation)),
        (
            "pipelined",
            encode(&[(CLIENT, &requests), (SERVER, &replies)]),
        ),
        ("pubsub-resp2", encode(&[(CLIENT, &sub), (SERVER, resp2)])),
        ("pubsub-resp3", encode(&[(CLIENT, &sub), (SERVER, resp3)])),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    // A big value cut by the capture (control bits 1..8 = uncaptured bytes / 97).
    let set = (900..1100)
        .map(|n| cmd(&[b"SET", b"k", &vec![b'x'; n]]))
        .find(|c| (c.len() - 40) % 97 == 0)
        .unwrap();
    let mut cut = vec![(((set.len() - 40) / 97) << 1) as u8, 40];
    cut.extend_from_slice(&set[..40]);
    cut.extend(encode(&[(SERVER, b"+OK\r\n")]));
    std::fs::write(dir.join("cut-value"), cut).unwrap();
}

#[test]
fn stats_add_and_describe_every_count() {
    let one = RedisStats {
        request_desyncs: 1,
        response_desyncs: 2,
        cut_commands: 3,
        lost_replies: 4,
        unmatched_replies: 5,
        pushes: 6,
        pending_overflow: 7,
        too_deep: 8,
        namespace_unknown: 9,
    };
    let mut sum = one;
    sum.add(&one);
    let counts: Vec<u64> = sum.counts().iter().map(|c| c.1).collect();
    assert_eq!(counts, [2, 4, 6, 8, 10, 12, 14, 16, 18]);
}
