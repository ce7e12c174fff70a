//! HTTP/1 decoder: arbitrary segment sequences (both directions, gaps) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::{protocol::http1::Http1Conn, source::Direction};

fuzz_target!(|data: &[u8]| {
    let mut conn = Http1Conn::new(Direction::Egress);
    let mut out = Vec::new();
    wirespan::protocol::fuzzing::for_each_segment(data, |seg| conn.feed(&seg, &mut out));
    conn.close(u64::MAX, &mut out);
});
