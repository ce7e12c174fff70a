//! `golang`: what wirespan needs to know about a Go binary before attaching uprobes to it:
//! its build info (Go and module versions, which pick struct offsets), where its functions are
//! (symbol table, or `.gopclntab` when stripped), and the file offsets of their entries and
//! return instructions (uprobes on each RET, never uretprobes).

pub mod buildinfo;
pub mod discover;
pub mod dwarf;
pub mod grpc;
pub mod layout;
pub mod moduledata;
pub mod offsets_table;
pub mod returns;
pub mod routes;
mod routes_gomap;
pub mod routes_layout;
pub mod routes_match;
mod routes_pclntab;
pub mod symbols;
pub mod tls;

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
    /// The running goroutine's TLS slot, as an offset from the thread pointer (see `tls`), or
    /// why it is unknown.
    pub g_tls: Result<i32, tls::TlsError>,
    functions: HashMap<String, Range>,
}

impl GoBinary {
    /// Read `path` and locate the `wanted` functions (and the runtime's, see `tls`).
    pub fn open(path: &Path, wanted: &[&str]) -> Result<Self, GoBinaryError> {
        let wanted: Vec<&str> = wanted.iter().copied().chain(tls::FUNCTIONS).collect();
        let wanted = &wanted[..];
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

        let mut candidates: HashMap<String, Vec<Range>> = HashMap::new();
        for sym in file.symbols() {
            if let Ok(name) = sym.name()
                && wanted.contains(&name)
            {
                candidates.entry(name.to_owned()).or_default().push(Range {
                    address: sym.address(),
                    size: sym.size(),
                });
            }
        }
        let stripped = file.symbols().next().is_none();
        if stripped {
            let (pclntab, text) = moduledata::pclntab(&file)
                .ok_or_else(|| elf_error("stripped, and no .gopclntab found".into()))?;
            candidates = symbols::from_pclntab(pclntab, text, wanted).map_err(|source| {
                GoBinaryError::Pclntab {
                    path: shown.clone(),
                    source,
                }
            })?;
        }
        let functions = candidates
            .into_iter()
            .filter_map(|(name, ranges)| Some((name, without_wrappers(&file, &data, &ranges)?)))
            .collect();
        drop(file);
        let g_tls = tls::g_offset(&data, &functions);
        Ok(Self {
            data,
            build_info,
            stripped,
            g_tls,
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
        let (range, entry_offset, code) = self.code_of(name)?;
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

impl GoBinary {
    /// A function's range, the file offset of its first byte, and its code.
    fn code_of(&self, name: &str) -> Option<(Range, u64, &[u8])> {
        let range = *self.functions.get(name)?;
        let file = object::File::parse(&*self.data).ok()?;
        let start = file_offset(&file, range.address)?;
        let end = start.checked_add(range.size)?;
        let code = self
            .data
            .get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)?;
        Some((range, start, code))
    }

    /// A probe on the first direct call from function `function` to function `target`: its
    /// `entry_offset` is that CALL instruction (a uprobe on a direct call is emulated, so it
    /// costs one trap and no single-step), with no returns. None when either function is
    /// missing or no such call is found.
    #[must_use]
    pub fn call_site(&self, function: &str, target: &str) -> Option<FunctionProbe> {
        let target_address = self.functions.get(target)?.address;
        let (range, start, code) = self.code_of(function)?;
        let at = returns::first_call_to(code, range.address, target_address)?;
        Some(FunctionProbe {
            name: format!("{function} → {target}"),
            range,
            entry_offset: start + at,
            return_offsets: Vec::new(),
        })
    }
}

/// The one function among same-named `ranges`. Go gives a function called from assembly an ABI0
/// wrapper with the same name in the symbol table and in `.gopclntab` (`runtime.goexit1`: load
/// `g` into R14 from TLS, jump to the real one); a probe there would read R14 before it holds
/// `g`. The wrapper is the one that branches to another of the ranges; `None` if that does not
/// leave exactly one.
fn without_wrappers(file: &object::File<'_>, data: &[u8], ranges: &[Range]) -> Option<Range> {
    if let [only] = ranges {
        return Some(*only);
    }
    let targets: Vec<u64> = ranges.iter().map(|r| r.address).collect();
    let mut kept = ranges.iter().filter(|r| {
        let code = file_offset(file, r.address).and_then(|start| {
            let start = usize::try_from(start).ok()?;
            data.get(start..start.checked_add(usize::try_from(r.size).ok()?)?)
        });
        !code.is_some_and(|code| returns::branches_to(code, r.address, &targets))
    });
    match (kept.next(), kept.next()) {
        (Some(one), None) => Some(*one),
        _ => None,
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
