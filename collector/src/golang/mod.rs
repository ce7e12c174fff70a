//! `golang`: what wirespan needs to know about a Go binary before attaching uprobes to it:
//! its build info (Go and module versions, which pick struct offsets), where its functions are
//! (symbol table, or `.gopclntab` when stripped), and the file offsets of their entries and
//! return instructions (uprobes on each RET, never uretprobes).

pub mod buildinfo;
pub mod discover;
pub mod dwarf;
pub mod grpc;
pub mod layout;
pub mod offsets_table;
pub mod returns;
pub mod symbols;

use std::{collections::HashMap, path::Path};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

pub use self::{buildinfo::BuildInfo, symbols::Range};

#[derive(Debug, thiserror::Error)]
pub enum GoBinaryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file wirespan can read: {reason}")]
    Elf { path: String, reason: String },
    #[error("{path}: {source}")]
    BuildInfo {
        path: String,
        source: buildinfo::BuildInfoError,
    },
    #[error("{path}: cannot read .gopclntab: {source}")]
    Pclntab {
        path: String,
        source: symbols::PclntabError,
    },
}

/// Whether a file looks like a Go executable, from its first 16 KiB only: Go's linker puts a
/// `.note.go.buildid` note (name `Go`, type 4) near the start of every binary it writes. Every
/// exec on the machine is checked, so this must not read whole binaries.
#[must_use]
pub fn looks_like_go(path: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(16 * 1024);
    if file.take(16 * 1024).read_to_end(&mut head).is_err() || !head.starts_with(b"\x7fELF") {
        return false;
    }
    // ELF note: namesz=4, descsz, type=4, name "Go\0\0".
    head.windows(16).any(|w| {
        w[0..4] == 4u32.to_le_bytes() && w[8..12] == 4u32.to_le_bytes() && &w[12..16] == b"Go\0\0"
    })
}

/// Where a uprobe goes: file offsets of a function's entry (after its stack check, see
/// `returns`) and of each of its returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionProbe {
    pub name: String,
    pub range: Range,
    pub entry_offset: u64,
    pub return_offsets: Vec<u64>,
}

/// A Go binary, read once.
pub struct GoBinary {
    data: Vec<u8>,
    pub build_info: BuildInfo,
    /// Whether functions came from `.gopclntab` (the binary is stripped).
    pub stripped: bool,
    functions: HashMap<String, Range>,
}

impl GoBinary {
    /// Read `path` and locate the `wanted` functions.
    pub fn open(path: &Path, wanted: &[&str]) -> Result<Self, GoBinaryError> {
        let shown = path.display().to_string();
        // Read, not mapped: a binary truncated in place while mapped would SIGBUS the agent.
        let data = std::fs::read(path).map_err(|source| GoBinaryError::Read {
            path: shown.clone(),
            source,
        })?;
        let elf_error = |reason: String| GoBinaryError::Elf {
            path: shown.clone(),
            reason,
        };
        let file = object::File::parse(&*data).map_err(|e| elf_error(e.to_string()))?;
        let build_info = file
            .section_by_name(".go.buildinfo")
            .and_then(|s| s.data().ok())
            .map_or(Err(buildinfo::BuildInfoError::Missing), buildinfo::parse)
            .map_err(|source| GoBinaryError::BuildInfo {
                path: shown.clone(),
                source,
            })?;

        let mut functions: HashMap<String, Range> = file
            .symbols()
            .filter_map(|sym| {
                let name = sym.name().ok()?;
                wanted.contains(&name).then(|| {
                    (
                        name.to_owned(),
                        Range {
                            address: sym.address(),
                            size: sym.size(),
                        },
                    )
                })
            })
            .collect();
        let stripped = file.symbols().next().is_none();
        if stripped {
            let pclntab = file
                .section_by_name(".gopclntab")
                .and_then(|s| s.data().ok())
                .ok_or_else(|| elf_error("stripped, and without .gopclntab".into()))?;
            let text = file.section_by_name(".text").map_or(0, |s| s.address());
            functions = symbols::from_pclntab(pclntab, text, wanted).map_err(|source| {
                GoBinaryError::Pclntab {
                    path: shown.clone(),
                    source,
                }
            })?;
        }
        drop(file);
        Ok(Self {
            data,
            build_info,
            stripped,
            functions,
        })
    }

    /// The address range of a function asked for at `open`, if the binary has it.
    #[must_use]
    pub fn function(&self, name: &str) -> Option<Range> {
        self.functions.get(name).copied()
    }

    /// The uprobe offsets of a function, if the binary has it.
    #[must_use]
    pub fn probe(&self, name: &str) -> Option<FunctionProbe> {
        let range = *self.functions.get(name)?;
        let file = object::File::parse(&*self.data).ok()?;
        let entry_offset = file_offset(&file, range.address)?;
        let end = entry_offset.checked_add(range.size)?;
        let code = self
            .data
            .get(usize::try_from(entry_offset).ok()?..usize::try_from(end).ok()?)?;
        let return_offsets = returns::return_offsets(code, range.address)
            .into_iter()
            .map(|r| entry_offset + r)
            .collect();
        Some(FunctionProbe {
            name: name.to_owned(),
            range,
            entry_offset: entry_offset + returns::after_stack_check(code, range.address),
            return_offsets,
        })
    }
}

/// The file offset of a virtual address, through the loadable segment that maps it.
fn file_offset(file: &object::File<'_>, address: u64) -> Option<u64> {
    file.segments().find_map(|segment| {
        let (start, size) = (segment.address(), segment.size());
        let (file_start, file_size) = segment.file_range();
        (address >= start && address < start + size && address - start < file_size)
            .then(|| file_start + (address - start))
    })
}

impl GoBinary {
    /// Struct member offsets from the binary's DWARF (see `dwarf`).
    pub fn member_offsets(
        &self,
        wanted: &[(&str, &str)],
    ) -> Result<dwarf::MemberOffsets, dwarf::DwarfError> {
        let file = object::File::parse(&*self.data).map_err(|e| dwarf::DwarfError::Section {
            section: "ELF",
            reason: e.to_string(),
        })?;
        dwarf::member_offsets(&file, wanted)
    }

    /// Struct members and function parameters from the binary's DWARF (see `dwarf::inspect`).
    pub fn inspect(
        &self,
        members: &[(&str, &str)],
        functions: &[&str],
    ) -> Result<dwarf::Facts, dwarf::DwarfError> {
        let file = object::File::parse(&*self.data).map_err(|e| dwarf::DwarfError::Section {
            section: "ELF",
            reason: e.to_string(),
        })?;
        dwarf::inspect(&file, members, functions)
    }
}
