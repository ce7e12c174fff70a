//! PostgreSQL decoder: arbitrary segment sequences (both directions, gaps), from a
//! connection's start and joined mid-connection, never panic and keep their bounds; the SQL
//! sanitizer never panics on any text and keeps its output bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::{
    protocol::{
        postgres::{self, PgConn},
        sql,
    },
    source::Direction,
};

fuzz_target!(|data: &[u8]| {
    for mut conn in [
        PgConn::new(Direction::Egress),
        PgConn::mid_connection(Direction::Egress),
    ] {
        let mut out = Vec::new();
        wirespan::protocol::fuzzing::for_each_segment(data, |seg| {
            let _ = postgres::looks_like_postgres(seg.data, true);
            let _ = postgres::looks_like_client_messages(seg.data);
            conn.feed(&seg, &mut out);
        });
        conn.close(u64::MAX, &mut out);
        assert!(conn.buffered_bytes() < 4 << 20);
    }
    let text = String::from_utf8_lossy(data);
    for dialect in [sql::Dialect::Postgres, sql::Dialect::Mysql] {
        assert!(sql::sanitize_in(&text, dialect).len() <= sql::MAX_TEXT);
        let _ = sql::operation_and_collection_in(&text, dialect);
    }
});
