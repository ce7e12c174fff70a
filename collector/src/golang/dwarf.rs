//! Struct member offsets from a Go binary's DWARF (compressed `.debug_*` sections, which `-w`
//! strips). Go names types by import path: `net/http.Request`, `net/url.URL`, `runtime.g`.

use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use object::{Object, ObjectSection};

/// (struct, member) → byte offset, for the pairs asked for.
pub type MemberOffsets = HashMap<(String, String), u64>;

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("no DWARF (the binary was built with -w or stripped)")]
    Missing,
    #[error("cannot read DWARF section {section}: {reason}")]
    Section {
        section: &'static str,
        reason: String,
    },
    #[error("malformed DWARF: {0}")]
    Malformed(#[from] gimli::Error),
}

/// Find the offsets of `wanted` (struct, member) pairs in the binary's DWARF.
pub fn member_offsets(
    file: &object::File<'_>,
    wanted: &[(&str, &str)],
) -> Result<MemberOffsets, DwarfError> {
    if file.section_by_name(".debug_info").is_none() {
        return Err(DwarfError::Missing);
    }
    // Every .debug_* section, decompressed (Go compresses them); gimli asks for the ones it needs.
    let mut sections: HashMap<String, Vec<u8>> = HashMap::new();
    for section in file.sections() {
        let Ok(name) = section.name() else { continue };
        if name.starts_with(".debug_") {
            let data = section
                .uncompressed_data()
                .map_err(|e| DwarfError::Section {
                    section: "debug",
                    reason: format!("{name}: {e}"),
                })?;
            sections.insert(name.to_owned(), data.into_owned());
        }
    }
    let load = |id: gimli::SectionId| -> Result<EndianSlice<'_, LittleEndian>, gimli::Error> {
        Ok(EndianSlice::new(
            sections.get(id.name()).map_or(&[][..], Vec::as_slice),
            LittleEndian,
        ))
    };
    let dwarf = gimli::Dwarf::load(load)?;
    let mut found = MemberOffsets::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        let mut current_struct: Option<(String, isize)> = None;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if current_struct.as_ref().is_some_and(|(_, d)| depth <= *d) {
                current_struct = None;
            }
            let name = match entry.attr_value(gimli::DW_AT_name) {
                Some(value) => dwarf
                    .attr_string(&unit, value)?
                    .to_string_lossy()
                    .into_owned(),
                None => continue,
            };
            if entry.tag() == gimli::DW_TAG_structure_type {
                current_struct = wanted
                    .iter()
                    .any(|(s, _)| *s == name)
                    .then_some((name, depth));
            } else if entry.tag() == gimli::DW_TAG_member
                && let Some((strukt, _)) = &current_struct
                && wanted.iter().any(|(s, m)| s == strukt && *m == name)
                && let Some(AttributeValue::Udata(offset)) =
                    entry.attr_value(gimli::DW_AT_data_member_location)
            {
                found.insert((strukt.clone(), name), offset);
            }
        }
        if wanted
            .iter()
            .all(|(s, m)| found.contains_key(&((*s).to_owned(), (*m).to_owned())))
        {
            break;
        }
    }
    Ok(found)
}
