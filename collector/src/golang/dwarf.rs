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

/// What was found in the DWARF: struct members (offset, and whether the member is a pointer)
/// and the parameter names of functions, in order.
#[derive(Debug, Default)]
pub struct Facts {
    pub members: HashMap<(String, String), Member>,
    pub params: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub pointer: bool,
}

/// Find the offsets of `wanted` (struct, member) pairs in the binary's DWARF.
pub fn member_offsets(
    file: &object::File<'_>,
    wanted: &[(&str, &str)],
) -> Result<MemberOffsets, DwarfError> {
    Ok(inspect(file, wanted, &[])?
        .members
        .into_iter()
        .map(|(k, m)| (k, m.offset))
        .collect())
}

/// Find `members` ((struct, member) pairs) and the parameters of `functions`.
pub fn inspect(
    file: &object::File<'_>,
    members: &[(&str, &str)],
    functions: &[&str],
) -> Result<Facts, DwarfError> {
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
    let mut found = Facts::default();
    let wanted = members;
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        let mut current_struct: Option<(String, isize)> = None;
        let mut current_function: Option<(String, isize)> = None;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if current_struct.as_ref().is_some_and(|(_, d)| depth <= *d) {
                current_struct = None;
            }
            if current_function.as_ref().is_some_and(|(_, d)| depth <= *d) {
                current_function = None;
            }
            let name = match entry.attr_value(gimli::DW_AT_name) {
                Some(value) => dwarf
                    .attr_string(&unit, value)?
                    .to_string_lossy()
                    .into_owned(),
                None => continue,
            };
            if entry.tag() == gimli::DW_TAG_subprogram {
                current_function = functions.contains(&name.as_str()).then_some((name, depth));
            } else if entry.tag() == gimli::DW_TAG_formal_parameter
                && let Some((function, d)) = &current_function
                && depth == d + 1
            {
                found.params.entry(function.clone()).or_default().push(name);
            } else if entry.tag() == gimli::DW_TAG_structure_type {
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
                let pointer = type_is_pointer(&dwarf, &unit, entry.attr_value(gimli::DW_AT_type))?;
                found
                    .members
                    .insert((strukt.clone(), name), Member { offset, pointer });
            }
        }
        let all_members = wanted.iter().all(|(s, m)| {
            found
                .members
                .contains_key(&((*s).to_owned(), (*m).to_owned()))
        });
        if all_members && functions.iter().all(|f| found.params.contains_key(*f)) {
            break;
        }
    }
    Ok(found)
}

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// Whether a `DW_AT_type` names a pointer type. Go refers to types with `DW_FORM_ref_addr`
/// (offsets into the whole `.debug_info`, its types living in a unit of their own), so the
/// target may be in another unit.
fn type_is_pointer(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    attr: Option<AttributeValue<Reader<'_>>>,
) -> Result<bool, DwarfError> {
    let tag = match attr {
        Some(AttributeValue::UnitRef(target)) => unit.entry(target)?.tag(),
        Some(AttributeValue::DebugInfoRef(target)) => {
            let mut headers = dwarf.units();
            let mut found = None;
            while let Some(header) = headers.next()? {
                if let Some(local) = target.to_unit_offset(&header) {
                    let other = dwarf.unit(header)?;
                    found = Some(other.entry(local)?.tag());
                    break;
                }
            }
            match found {
                Some(tag) => tag,
                None => return Ok(false),
            }
        }
        _ => return Ok(false),
    };
    Ok(tag == gimli::DW_TAG_pointer_type)
}
