//! HPACK: header blocks against known and unknown tables never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::protocol::http2::hpack::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let mut decoder = Decoder::new(first & 1 == 0);
    decoder.set_allowed_max(u32::from(first) * 64);
    for block in rest.split(|&b| b == 0xff) {
        let _ = decoder.decode(block, |_, _| {});
    }
});
