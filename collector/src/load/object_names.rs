//! The names user space asks aya for are the names in the probes object. aya's `#[map]` and
//! program macros name a map or program after its Rust item and take no constants, so the
//! probes spell each name as an identifier and the collector uses `wirespan_shared::names`:
//! this test reads the embedded object (ELF parsing only, no root, no kernel) and checks that
//! the two agree both ways, so a renamed or added probe cannot go unnoticed until load time.

use std::collections::BTreeSet;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};
use wirespan_shared::names::{GLOBALS, MAPS, PROGRAMS};

use super::PROBES_OBJECT;

/// What the object defines: maps, programs and other global data (load-time globals).
#[derive(Default)]
struct Defined {
    maps: BTreeSet<String>,
    programs: BTreeSet<String>,
    data: BTreeSet<String>,
}

fn defined() -> Defined {
    let file = object::File::parse(PROBES_OBJECT).expect("the embedded probes object is ELF");
    let mut defined = Defined::default();
    for symbol in file.symbols() {
        let Some(index) = symbol.section_index() else {
            continue;
        };
        let section = file.section_by_index(index).expect("a symbol's section");
        let section = section.name().expect("a section name");
        let name = symbol.name().expect("a symbol name").to_owned();
        match symbol.kind() {
            // aya-ebpf's `#[map]` puts each map in `maps` (`.maps` for BTF maps).
            SymbolKind::Data if section == "maps" || section == ".maps" => {
                defined.maps.insert(name);
            }
            SymbolKind::Data if symbol.is_global() => {
                defined.data.insert(name);
            }
            // A program is a global function in its own section (`kprobe`, `uprobe`,
            // `fentry/tcp_connect`, ...); `.text` holds the functions programs call, and the
            // compiler's `memcpy` and friends.
            SymbolKind::Text if symbol.is_global() && section != ".text" => {
                defined.programs.insert(name);
            }
            _ => {}
        }
    }
    defined
}

fn differences(what: &str, named: &[&str], defined: &BTreeSet<String>) -> Vec<String> {
    let named: BTreeSet<String> = named.iter().map(|&n| n.to_owned()).collect();
    let mut problems = Vec::new();
    for missing in named.difference(defined) {
        problems.push(format!(
            "{what} {missing:?} is named in shared/src/names.rs but not in the probes object"
        ));
    }
    for unnamed in defined.difference(&named) {
        problems.push(format!(
            "{what} {unnamed:?} is in the probes object but not named in shared/src/names.rs"
        ));
    }
    problems
}

#[test]
fn every_named_map_and_program_is_in_the_object_and_every_one_there_is_named() {
    let defined = defined();
    let mut problems = differences("map", MAPS, &defined.maps);
    problems.extend(differences("program", PROGRAMS, &defined.programs));
    for global in GLOBALS {
        if !defined.data.contains(*global) {
            problems.push(format!(
                "global {global:?} is named in shared but not in the probes object"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_name_is_listed_twice() {
    for (what, list) in [("map", MAPS), ("program", PROGRAMS), ("global", GLOBALS)] {
        let unique: BTreeSet<&str> = list.iter().copied().collect();
        assert_eq!(unique.len(), list.len(), "a {what} name is listed twice");
    }
}
