//! Where a Go program keeps the running goroutine for code that has no `g` register: a
//! thread-local slot (Go's `runtime.tlsg`) at a fixed offset from the thread pointer (the fs
//! base on amd64). The syscall tracepoints read `g`, and through it the goroutine id, there.
//!
//! The offset depends on how the binary was linked. Go's own linker (internal linking) puts the
//! slot at -8 (`runtime.settls` points fs 8 bytes past `m.tls[0]`, the layout ELF TLS expects).
//! With external linking (every program with its own cgo code, or `-linkmode=external`) the host
//! linker lays out the executable's TLS block: Go's slot sits with any C `__thread` variables in
//! the `PT_TLS` segment, and the slot's offset is `runtime.tlsg`'s place in the block minus the
//! block's aligned size (x86-64 TLS variant II). One 8-byte C `__thread` variable already moves
//! it to -16. A stripped binary has no `runtime.tlsg` symbol to compute that from.
//!
//! What every binary keeps is the code that uses the slot: the runtime's assembly (`gogo`,
//! `runtime.mcall`, `runtime.asmcgocall`, `setg_gcc`) reads and writes `g` there, and the
//! linker wrote the final offset into those instructions, as `fs:[disp32]` (executables) or as
//! an immediate or GOT load followed by `fs:[reg]` (PIE). This module reads the offset from
//! them, requires all of them to agree and the offset to lie inside the `PT_TLS` block, and
//! otherwise says the offset is unknown: a wrong offset would tag syscalls with other
//! goroutines' ids, and no goroutine id is better than a wrong one. The probes check it again
//! at run time (the slot must hold the `g` that R14 holds at a Go uprobe).

use std::collections::HashMap;

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{
    Endianness, Object, ObjectSymbol,
    elf::PT_TLS,
    read::elf::{ElfFile64, ProgramHeader},
};

use super::symbols::Range;

/// Runtime assembly functions that read or write `g` through TLS, in every Go release with the
/// register ABI (names as `.gopclntab` and the symbol table spell them).
pub const FUNCTIONS: [&str; 5] = [
    "gogo",
    "runtime.mcall",
    "runtime.asmcgocall",
    "setg_gcc",
    "runtime.systemstack",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the binary has no PT_TLS segment, so no thread-local goroutine slot")]
    NoTlsSegment,
    #[error("no runtime function that reads the goroutine from TLS was found")]
    NoAccess,
    #[error(
        "the runtime's TLS accesses disagree (offsets {0:?}); goroutine ids of syscalls left unknown"
    )]
    Disagree(Vec<i64>),
    #[error(
        "TLS offset {offset} is outside the executable's {block}-byte TLS block; goroutine ids of \
         syscalls left unknown"
    )]
    OutsideBlock { offset: i64, block: u64 },
}

/// The goroutine slot's offset from the thread pointer (negative), from the runtime's code,
/// checked against the `PT_TLS` block. `functions` are the ranges of [`FUNCTIONS`] found.
pub fn g_offset<S: std::hash::BuildHasher>(
    data: &[u8],
    functions: &HashMap<String, Range, S>,
) -> Result<i32, TlsError> {
    let block = tls_block(data).ok_or(TlsError::NoTlsSegment)?;
    let mut seen: Vec<i64> = Vec::new();
    for name in FUNCTIONS {
        let Some(range) = functions.get(name) else {
            continue;
        };
        for offset in fs_offsets(data, *range) {
            if !seen.contains(&offset) {
                seen.push(offset);
            }
        }
    }
    match seen[..] {
        [] => Err(TlsError::NoAccess),
        [offset] => {
            let inside = offset < 0 && offset % 8 == 0 && offset.unsigned_abs() <= block;
            if inside {
                i32::try_from(offset).map_err(|_| TlsError::OutsideBlock { offset, block })
            } else {
                Err(TlsError::OutsideBlock { offset, block })
            }
        }
        _ => Err(TlsError::Disagree(seen)),
    }
}

/// The slot's offset computed from the symbol table, for binaries that still have one:
/// `runtime.tlsg`'s offset in the TLS block minus the block's size rounded up to its alignment.
/// The tests compare it with [`g_offset`]; the agent uses the code, which every binary has.
#[must_use]
pub fn g_offset_from_symbols(data: &[u8]) -> Option<i64> {
    let file = object::File::parse(data).ok()?;
    let tlsg = file
        .symbols()
        .find(|s| s.name() == Ok("runtime.tlsg"))?
        .address();
    let block = tls_block(data)?;
    i64::try_from(tlsg)
        .ok()?
        .checked_sub(i64::try_from(block).ok()?)
}

/// The executable's TLS block size as the thread pointer sees it: `PT_TLS` memory size rounded
/// up to the segment's alignment.
#[must_use]
pub fn tls_block(data: &[u8]) -> Option<u64> {
    let elf = ElfFile64::<Endianness>::parse(data).ok()?;
    let endian = elf.endian();
    let header = elf
        .elf_program_headers()
        .iter()
        .find(|h| h.p_type(endian) == PT_TLS)?;
    let align = header.p_align(endian);
    let memsz = header.p_memsz(endian);
    let align = align.max(1);
    Some(memsz.div_ceil(align) * align)
}

/// The thread-pointer offsets of the fs-relative memory accesses in a function's code:
/// `fs:[disp]` directly, or `fs:[reg]` where `reg` was last loaded with an immediate or from a
/// GOT slot (`mov reg, [rip+x]`, read from the file).
fn fs_offsets(data: &[u8], range: Range) -> Vec<i64> {
    let Ok(file) = object::File::parse(data) else {
        return Vec::new();
    };
    let Some(code) = super::file_offset(&file, range.address)
        .and_then(|start| {
            Some((
                usize::try_from(start).ok()?,
                usize::try_from(range.size).ok()?,
            ))
        })
        .and_then(|(start, size)| data.get(start..start.checked_add(size)?))
    else {
        return Vec::new();
    };
    let mut decoder = Decoder::with_ip(64, code, range.address, DecoderOptions::NONE);
    // What each register was last loaded with, when that is a known constant.
    let mut loaded: HashMap<Register, Option<i64>> = HashMap::new();
    let mut found = Vec::new();
    while decoder.can_decode() {
        let ins = decoder.decode();
        if ins.is_invalid() {
            break;
        }
        let memory = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
        if memory && ins.memory_segment() == Register::FS {
            let base = ins.memory_base();
            if ins.memory_index() == Register::None {
                let disp = ins.memory_displacement64().cast_signed();
                let offset = match base {
                    Register::None => Some(disp),
                    reg => loaded.get(&reg).copied().flatten().map(|v| v + disp),
                };
                if let Some(offset) = offset.filter(|o| *o != 0) {
                    found.push(offset);
                }
            }
        }
        if ins.op_count() > 0 && ins.op0_kind() == OpKind::Register {
            let reg = ins.op0_register();
            let value = (ins.mnemonic() == Mnemonic::Mov)
                .then(|| match ins.op1_kind() {
                    OpKind::Immediate32to64 | OpKind::Immediate64 | OpKind::Immediate32 => {
                        Some(ins.immediate(1).cast_signed())
                    }
                    OpKind::Memory
                        if ins.memory_base() == Register::RIP
                            && ins.memory_segment() != Register::FS =>
                    {
                        let slot = super::file_offset(&file, ins.ip_rel_memory_address())?;
                        let at = usize::try_from(slot).ok()?;
                        data.get(at..at + 8)
                            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    }
                    _ => None,
                })
                .flatten();
            match value {
                Some(v)
                    if (Register::RAX as u32..=Register::R15 as u32).contains(&(reg as u32)) =>
                {
                    loaded.insert(reg, Some(v));
                }
                // Any other write (a partial register too) forgets every known value: an
                // offset is taken only from a load nothing has touched since.
                _ => loaded.clear(),
            }
        }
    }
    found
}
