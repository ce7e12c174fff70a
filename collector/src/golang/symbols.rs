//! Where Go functions are: from the ELF symbol table, or, in stripped binaries (`-s -w` drops
//! `.symtab` but not the runtime's own tables), from `.gopclntab`, the table Go keeps for stack
//! traces. Only the Go 1.18+ layouts (magic 0xfffffff0 and 0xfffffff1) are read.

use std::collections::HashMap;

/// A function's address range (virtual addresses, as linked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub address: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PclntabError {
    #[error("pclntab magic {0:#x} is not a Go 1.18+ layout")]
    Version(u32),
    #[error("malformed pclntab: {0}")]
    Malformed(&'static str),
    #[error(
        "where Go's code starts (runtime.text) is in neither the pclntab header nor a module \
         data that points at it; rebuild without stripping to trace this binary's Go functions"
    )]
    TextUnknown,
}

const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;

fn u32_at(data: &[u8], at: usize) -> Result<u32, PclntabError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(PclntabError::Malformed("offset out of range"))
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, PclntabError> {
    data.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or(PclntabError::Malformed("offset out of range"))
}

fn usize_at(data: &[u8], at: usize) -> Result<usize, PclntabError> {
    usize::try_from(u64_at(data, at)?).map_err(|_| PclntabError::Malformed("offset too large"))
}

/// The ranges of the `wanted` functions found in a `.gopclntab` section. Entries are relative to
/// `runtime.text`, which the header records up to Go 1.24 (not in a PIE); otherwise
/// `runtime_text` (from the module data, see `moduledata`) is used. Never the `.text` section's
/// address: with external linking C start-up code comes first, and probes there would land
/// mid-instruction.
/// A name can have two entries: a Go function and its ABI0 wrapper (see `GoBinary::open`).
pub fn from_pclntab(
    pclntab: &[u8],
    runtime_text: Option<u64>,
    wanted: &[&str],
) -> Result<HashMap<String, Vec<Range>>, PclntabError> {
    let magic = u32_at(pclntab, 0)?;
    if magic != MAGIC_118 && magic != MAGIC_120 {
        return Err(PclntabError::Version(magic));
    }
    if pclntab.get(7) != Some(&8) {
        return Err(PclntabError::Malformed("pointer size is not 8"));
    }
    let nfunc = usize_at(pclntab, 8)?;
    let funcname_offset = usize_at(pclntab, 32)?;
    let pcln_offset = usize_at(pclntab, 64)?;
    let functab = pclntab
        .get(pcln_offset..)
        .ok_or(PclntabError::Malformed("function table out of range"))?;
    if nfunc > functab.len() / 8 {
        return Err(PclntabError::Malformed("function count exceeds the table"));
    }
    let text_start = match u64_at(pclntab, 24)? {
        0 => runtime_text.ok_or(PclntabError::TextUnknown)?,
        recorded => recorded,
    };
    let mut found: HashMap<String, Vec<Range>> = HashMap::new();
    for i in 0..nfunc {
        let entry = u32_at(functab, i * 8)?;
        let func_offset = u32_at(functab, i * 8 + 4)? as usize;
        let next_entry = u32_at(functab, (i + 1) * 8)?;
        // _func: entryOff u32, nameOff i32, ...
        let name_offset = u32_at(functab, func_offset + 4)? as usize;
        let names = pclntab
            .get(funcname_offset + name_offset..)
            .ok_or(PclntabError::Malformed("name out of range"))?;
        let end = names
            .iter()
            .position(|&b| b == 0)
            .ok_or(PclntabError::Malformed("unterminated name"))?;
        let name = &names[..end];
        if let Some(want) = wanted.iter().find(|w| w.as_bytes() == name) {
            let size = u64::from(next_entry.saturating_sub(entry));
            found.entry((*want).to_owned()).or_default().push(Range {
                address: text_start + u64::from(entry),
                size,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_layouts_and_cut_tables() {
        assert_eq!(
            from_pclntab(&0xffff_fffbu32.to_le_bytes(), None, &[]),
            Err(PclntabError::Version(0xffff_fffb))
        );
        let mut header = MAGIC_120.to_le_bytes().to_vec();
        header.extend_from_slice(&[0, 0, 1, 8]);
        assert!(matches!(
            from_pclntab(&header, None, &[]),
            Err(PclntabError::Malformed(_))
        ));
        header.resize(72, 0);
        header[8] = 200; // 200 functions in an empty table
        assert!(matches!(
            from_pclntab(&header, None, &[]),
            Err(PclntabError::Malformed(_))
        ));
    }
}
