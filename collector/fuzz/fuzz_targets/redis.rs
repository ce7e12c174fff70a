//! Redis decoder: arbitrary segment sequences (both directions, gaps) never panic, and a
//! connection never holds more than its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::{
    protocol::redis::{MAX_PENDING, RedisConn},
    source::Direction,
};

fuzz_target!(|data: &[u8]| {
    let mut conn = RedisConn::new(Direction::Egress);
    if data.first().is_some_and(|b| b & 0x80 != 0) {
        conn.saw_connection_start();
    }
    let mut out = Vec::new();
    wirespan::protocol::fuzzing::for_each_segment(data, |seg| {
        conn.feed(&seg, &mut out);
        assert!(conn.buffered_bytes() <= 4096 + MAX_PENDING * 128);
    });
    conn.close(u64::MAX, &mut out);
});
