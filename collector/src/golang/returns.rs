//! The return instructions of a function. Go moves goroutine stacks, so a uretprobe's hijacked
//! return address breaks programs ("unexpected return pc", golang/go#22008); wirespan puts a
//! plain uprobe on every RET of the function instead.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// Offsets (from the start of `code`) of every return instruction, decoding x86-64 from the
/// function's first byte. Undecodable bytes stop the scan (never guess an instruction boundary).
#[must_use]
pub fn return_offsets(code: &[u8], address: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut offsets = Vec::new();
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            offsets.push(instruction.ip() - address);
        }
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_ret_and_not_bytes_that_only_look_like_one() {
        // mov eax, 0xc3 (the immediate holds a 0xc3 byte); ret; xor eax, eax; ret 8
        let code = [
            0xb8, 0xc3, 0x00, 0x00, 0x00, 0xc3, 0x31, 0xc0, 0xc2, 0x08, 0x00,
        ];
        assert_eq!(return_offsets(&code, 0x40_1000), vec![5, 8]);
        assert!(
            return_offsets(&[0x0f, 0xff], 0).is_empty(),
            "invalid bytes stop the scan"
        );
    }
}
