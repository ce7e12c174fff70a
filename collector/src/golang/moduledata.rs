//! Where a Go binary's own code starts (`runtime.text`), read from the runtime's module data
//! (`runtime.firstmoduledata`) when the symbol table is gone.
//!
//! `.gopclntab` gives each function's entry relative to `runtime.text`. Its header used to
//! record that address too, but Go 1.25+ leaves the field zero (it needed a relocation; see the
//! comment on `pcHeader` in runtime/symtab.go), and a PIE binary has it zero as well. The
//! `.text` section's address is not a substitute: with external linking (cgo, or
//! `-linkmode=external`) the host linker puts the C start-up code (`_start` from crt1.o) before
//! Go's code, so `runtime.text` is some bytes after it, and every uprobe would land that far
//! off, in the middle of instructions. The module data is what the runtime itself uses: its
//! first field points at the pclntab header, which is how a stripped binary's copy is found.
//! The same pointer finds the pclntab itself where it has no section of its own (a PIE built by
//! Go 1.22 keeps it inside `.data.rel.ro`).

use object::{Object, ObjectSection, RelocationFlags, SectionKind};

/// `runtime.moduledata` field offsets (amd64), unchanged from Go 1.16 through 1.26:
/// `pcHeader *pcHeader` then six slices (funcnametab, cutab, filetab, pctab, pclntable, ftab;
/// 24 bytes each), `findfunctab`, `minpc`, `maxpc`, `text`, `etext`.
const FUNCNAMETAB: usize = 8;
const MINPC: usize = 8 + 6 * 24 + 8;
const MAXPC: usize = MINPC + 8;
const TEXT: usize = MAXPC + 8;
const ETEXT: usize = TEXT + 8;
/// `pcHeader.funcnameOffset`, the offset of the function name table from the header.
const HEADER_FUNCNAME_OFFSET: usize = 32;
/// `R_X86_64_RELATIVE`: in a PIE the module data's pointers are zero in the file and filled in
/// at load from these relocations' addends.
const R_X86_64_RELATIVE: u32 = 8;

/// The pclntab (from its header to the end of the section holding it) and `runtime.text` (when
/// known, see [`runtime_text`]): the `.gopclntab` section, or else a pclntab header inside a data
/// section that a module data points at.
#[must_use]
pub fn pclntab<'a>(file: &object::File<'a>) -> Option<(&'a [u8], Option<u64>)> {
    if let Some(section) = file.section_by_name(".gopclntab") {
        let data = section.data().ok()?;
        return Some((data, runtime_text(file, section.address(), data)));
    }
    for section in file.sections() {
        if !matches!(
            section.kind(),
            SectionKind::Data | SectionKind::ReadOnlyData | SectionKind::ReadOnlyDataWithRel
        ) {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        // Magic (Go 1.18 or 1.20+), two zero pads, minLC 1, pointer size 8; 8-aligned.
        for at in (0..data.len().saturating_sub(8)).step_by(8) {
            let head = &data[at..at + 8];
            if !(head[..4] == [0xf0, 0xff, 0xff, 0xff] || head[..4] == [0xf1, 0xff, 0xff, 0xff])
                || head[4..] != [0, 0, 1, 8]
            {
                continue;
            }
            let table = &data[at..];
            // Bytes that only look like a header have no module data pointing at them.
            if let Some(text) = runtime_text(file, section.address() + at as u64, table) {
                return Some((table, Some(text)));
            }
        }
    }
    None
}

/// `runtime.text` of the binary whose pclntab (`pclntab`, at virtual address `pclntab_address`)
/// is given, or `None` when no module data that points at it and agrees with itself is found.
/// Checked before it is trusted: the module data's function name table must be where the header
/// says, and `text <= minpc < maxpc <= etext`, all inside the executable's code.
#[must_use]
pub fn runtime_text(file: &object::File<'_>, pclntab_address: u64, pclntab: &[u8]) -> Option<u64> {
    let funcname_offset = read_u64(pclntab, HEADER_FUNCNAME_OFFSET)?;
    let code = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .map(|s| (s.address(), s.address() + s.size()))
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))?;
    let relocated = relative_relocations(file);
    for section in file.sections() {
        if !matches!(
            section.kind(),
            SectionKind::Data | SectionKind::ReadOnlyData | SectionKind::ReadOnlyDataWithRel
        ) {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        let base = section.address();
        // A pointer-sized word at `at` in this section, as it is once the program is loaded.
        let word = |at: usize| -> Option<u64> {
            match read_u64(data, at)? {
                0 => relocated
                    .binary_search_by_key(&(base + at as u64), |r| r.0)
                    .ok()
                    .map(|i| relocated[i].1),
                value => Some(value),
            }
        };
        for at in (0..data.len().saturating_sub(ETEXT + 8)).step_by(8) {
            if word(at) != Some(pclntab_address)
                || word(at + FUNCNAMETAB) != Some(pclntab_address + funcname_offset)
            {
                continue;
            }
            let (Some(minpc), Some(maxpc), Some(text), Some(etext)) = (
                word(at + MINPC),
                word(at + MAXPC),
                word(at + TEXT),
                word(at + ETEXT),
            ) else {
                continue;
            };
            if code.0 <= text && text <= minpc && minpc < maxpc && maxpc <= etext && etext <= code.1
            {
                return Some(text);
            }
        }
    }
    None
}

/// (address, addend) of each `R_X86_64_RELATIVE` dynamic relocation, sorted by address.
fn relative_relocations(file: &object::File<'_>) -> Vec<(u64, u64)> {
    let mut found: Vec<(u64, u64)> = file
        .dynamic_relocations()
        .into_iter()
        .flatten()
        .filter(|(_, r)| {
            matches!(r.flags(), RelocationFlags::Elf { r_type } if r_type == R_X86_64_RELATIVE)
        })
        .map(|(address, r)| (address, r.addend() as u64))
        .collect();
    found.sort_unstable();
    found
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    data.get(at..at.checked_add(8)?)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}
