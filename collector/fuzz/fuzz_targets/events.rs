//! Ring-buffer records and recordings: decoding arbitrary bytes never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::source::{decode, recording::RecordingReader};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    if let Ok(mut reader) = RecordingReader::new(data, std::path::Path::new("fuzz.rec")) {
        while let Ok(Some(record)) = reader.next_record() {
            let _ = decode(&record);
        }
    }
});
