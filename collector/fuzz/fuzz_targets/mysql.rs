//! MySQL decoder: arbitrary segment sequences (both directions, gaps) never panic, as a client
//! capture and as a server capture.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::{protocol::mysql::MysqlConn, source::Direction};

fuzz_target!(|data: &[u8]| {
    for request_direction in [Direction::Egress, Direction::Ingress] {
        let mut conn = MysqlConn::new(request_direction);
        let mut out = Vec::new();
        wirespan::protocol::fuzzing::for_each_segment(data, |seg| conn.feed(&seg, &mut out));
        conn.close(u64::MAX, &mut out);
        let _ = conn.buffered_bytes();
    }
});
