//! What `routes` finds in a binary's code: functions by a test on their names (from
//! `.gopclntab`, present in stripped binaries too), and the addresses a function loads from.

use iced_x86::{Decoder, DecoderOptions, MemorySize, Mnemonic, OpKind};

use super::{
    GoBinary,
    symbols::{PclntabError, Range},
};

fn u32_at(data: &[u8], at: usize) -> Result<u32, PclntabError> {
    data.get(
        at..at
            .checked_add(4)
            .ok_or(PclntabError::Malformed("offset overflow"))?,
    )
    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    .ok_or(PclntabError::Malformed("offset out of range"))
}

fn usize_at(data: &[u8], at: usize) -> Result<usize, PclntabError> {
    let b = data
        .get(at..at + 8)
        .ok_or(PclntabError::Malformed("offset out of range"))?;
    usize::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .map_err(|_| PclntabError::Malformed("offset too large"))
}

/// The functions of a Go 1.18+ pclntab whose names pass `keep` (see `symbols::from_pclntab`
/// for the layout and for `runtime_text`).
pub fn functions(
    pclntab: &[u8],
    runtime_text: Option<u64>,
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Vec<(String, Range)>, PclntabError> {
    let magic = u32_at(pclntab, 0)?;
    if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
        return Err(PclntabError::Version(magic));
    }
    let nfunc = usize_at(pclntab, 8)?;
    let text = match usize_at(pclntab, 24)? {
        0 => runtime_text.ok_or(PclntabError::TextUnknown)?,
        recorded => recorded as u64,
    };
    let funcnames = usize_at(pclntab, 32)?;
    let functab = pclntab
        .get(usize_at(pclntab, 64)?..)
        .ok_or(PclntabError::Malformed("function table out of range"))?;
    if nfunc > functab.len() / 8 {
        return Err(PclntabError::Malformed("function count exceeds the table"));
    }
    let mut found = Vec::new();
    for i in 0..nfunc {
        let entry = u32_at(functab, i * 8)?;
        let func = u32_at(functab, i * 8 + 4)? as usize;
        let next = u32_at(functab, (i + 1) * 8)?;
        let name_offset = u32_at(functab, func + 4)? as usize;
        let names = funcnames
            .checked_add(name_offset)
            .and_then(|at| pclntab.get(at..))
            .ok_or(PclntabError::Malformed("name out of range"))?;
        let name = &names[..names.iter().position(|&b| b == 0).unwrap_or(0)];
        if keep(name) {
            found.push((
                String::from_utf8_lossy(name).into_owned(),
                Range {
                    address: text.wrapping_add(u64::from(entry)),
                    size: u64::from(next.saturating_sub(entry)),
                },
            ));
        }
    }
    Ok(found)
}

/// The targets of the RIP-relative 64-bit loads (`MOV r64, [rip+x]`) in the function at
/// `range`: where a function reads package variables such as `DefaultServeMux`.
pub fn rip_loads(binary: &GoBinary, file: &object::File<'_>, range: Range) -> Vec<u64> {
    let code = super::file_offset(file, range.address).and_then(|start| {
        let start = usize::try_from(start).ok()?;
        binary
            .data
            .get(start..start.checked_add(usize::try_from(range.size).ok()?)?)
    });
    let Some(code) = code else {
        return Vec::new();
    };
    let mut decoder = Decoder::with_ip(64, code, range.address, DecoderOptions::NONE);
    let mut targets = Vec::new();
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        if instruction.mnemonic() == Mnemonic::Mov
            && instruction.op_count() == 2
            && instruction.op1_kind() == OpKind::Memory
            && instruction.is_ip_rel_memory_operand()
            && instruction.memory_size() == MemorySize::UInt64
        {
            let target = instruction.ip_rel_memory_address();
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
    }
    targets
}
