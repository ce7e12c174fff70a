//! Where in a Go function's code the probes go.
//!
//! - Returns: Go moves goroutine stacks, so a uretprobe's hijacked return address breaks
//!   programs ("unexpected return pc", golang/go#22008); wirespan puts a plain uprobe on every
//!   RET of the function instead.
//! - Entry: just after the stack-bound check of the prologue, not at the first byte. When the
//!   goroutine's stack is too small, the check calls `runtime.morestack`, which grows the stack
//!   and restarts the function from its first byte: a probe there fires twice for one call (a
//!   handler seen starting twice).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

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

/// Offset (from the start of `code`) of the first direct CALL to `target`.
#[must_use]
pub fn first_call_to(code: &[u8], address: u64, target: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            return None;
        }
        if instruction.mnemonic() == Mnemonic::Call
            && instruction.op0_kind() == OpKind::NearBranch64
            && instruction.near_branch64() == target
        {
            return Some(instruction.ip() - address);
        }
    }
    None
}

/// Whether the code has a direct call or jump to one of `targets` (other than its own start).
#[must_use]
pub fn branches_to(code: &[u8], address: u64, targets: &[u64]) -> bool {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        let direct = matches!(
            instruction.op0_kind(),
            OpKind::NearBranch64 | OpKind::NearBranch32
        ) && matches!(instruction.mnemonic(), Mnemonic::Call | Mnemonic::Jmp);
        let target = instruction.near_branch_target();
        if direct && target != address && targets.contains(&target) {
            return true;
        }
    }
    false
}

/// The offset of the first instruction after the prologue's stack-bound check
/// (`cmp rsp|r12, [r14+0x10]` against `g.stackguard0`, then `jbe` to the morestack call), or 0
/// when the function has none (a `NOSPLIT` function) or it is not where Go puts it.
#[must_use]
pub fn after_stack_check(code: &[u8], address: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut previous: Option<Instruction> = None;
    // The check is within the first few instructions (big frames first compute rsp - size).
    for _ in 0..6 {
        if !decoder.can_decode() {
            break;
        }
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        let is_jbe = matches!(instruction.mnemonic(), Mnemonic::Jbe | Mnemonic::Jb);
        if is_jbe && previous.is_some_and(|p| compares_with_stackguard(&p)) {
            return instruction.next_ip() - address;
        }
        previous = Some(instruction);
    }
    0
}

/// `cmp reg, [r14+0x10]`: r14 holds the goroutine, 0x10 is `g.stackguard0`.
fn compares_with_stackguard(instruction: &Instruction) -> bool {
    instruction.mnemonic() == Mnemonic::Cmp
        && instruction.op_count() == 2
        && instruction.op1_kind() == OpKind::Memory
        && instruction.memory_base() == Register::R14
        && instruction.memory_index() == Register::None
        && instruction.memory_displacement64() == 0x10
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_direct_call_to_a_target_is_found() {
        // call +0x10 (to 0x1015); call +0 (to 0x100a); ret
        let code = [0xe8, 0x10, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0xc3];
        assert_eq!(super::first_call_to(&code, 0x1000, 0x100a), Some(5));
        assert_eq!(super::first_call_to(&code, 0x1000, 0x1015), Some(0));
        assert_eq!(super::first_call_to(&code, 0x1000, 0x2000), None);
    }

    use super::*;

    #[test]
    fn the_entry_probe_goes_after_the_stack_check() {
        // cmp rsp, [r14+0x10]; jbe +0x40; push rbp
        let small = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(after_stack_check(&small, 0x40_1000), 6);
        // lea r12, [rsp-0x88]; cmp r12, [r14+0x10]; jbe rel32; push rbp
        let big = [
            0x4c, 0x8d, 0xa4, 0x24, 0x78, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86,
            0x00, 0x01, 0x00, 0x00, 0x55,
        ];
        assert_eq!(after_stack_check(&big, 0x40_1000), 18);
        // No check (NOSPLIT): push rbp; mov rbp, rsp
        assert_eq!(after_stack_check(&[0x55, 0x48, 0x89, 0xe5], 0), 0);
        // A compare with another field of g is not the check: cmp rsp, [r14+0x18]; jbe
        assert_eq!(
            after_stack_check(&[0x49, 0x3b, 0x66, 0x18, 0x76, 0x40], 0),
            0
        );
    }

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
