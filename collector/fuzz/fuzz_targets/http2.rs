//! HTTP/2 + gRPC through the connection decoder (detection included): never panics. The first
//! byte picks the start: with bit 7 clear the client preface is fed first, so most inputs reach
//! the HTTP/2 decoder rather than stopping at detection. With bit 6 set the decoder also notes
//! credentials for masking (HPACK literals, unfinished blocks), and the masks are applied.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::{
    protocol::{
        ConnDecoder, Origin, Segment,
        content::{SecretNames, blank},
        fuzzing::for_each_segment,
        http2::PREFACE,
    },
    source::Direction,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let secrets = (mode & 0x40 != 0).then(|| SecretNames::with(&[]));
    let mut decoder = ConnDecoder::new().noting_secrets(secrets);
    let mut out = Vec::new();
    if mode & 0x80 == 0 {
        let preface = Segment { direction: Direction::Egress, origin: Origin::default(), data: PREFACE, missing: 0, windows: &[], ts_enter_ns: 0, ts_exit_ns: 0, tls: false };
        decoder.feed(&preface, &mut out);
    }
    for_each_segment(rest, |seg| {
        decoder.feed(&seg, &mut out);
        let mut copy = seg.data.to_vec();
        blank(decoder.content().unwrap_or(&[]), &mut copy, &mut []);
    });
    decoder.close(u64::MAX, &mut out);
});
