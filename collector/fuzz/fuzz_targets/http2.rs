//! HTTP/2 + gRPC through the connection decoder (detection included): never panics. The first
//! byte picks the start: with bit 7 clear the client preface is fed first, so most inputs reach
//! the HTTP/2 decoder rather than stopping at detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::{
    protocol::{ConnDecoder, Origin, Segment, fuzzing::for_each_segment, http2::PREFACE},
    source::Direction,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut decoder = ConnDecoder::new();
    let mut out = Vec::new();
    if mode & 0x80 == 0 {
        let preface = Segment { direction: Direction::Egress, origin: Origin::default(), data: PREFACE, missing: 0, windows: &[], ts_enter_ns: 0, ts_exit_ns: 0, tls: false };
        decoder.feed(&preface, &mut out);
    }
    for_each_segment(rest, |seg| decoder.feed(&seg, &mut out));
    decoder.close(u64::MAX, &mut out);
});
