//! Real Go binaries (examples/http-hello, built with two Go toolchains, normal and stripped):
//! build info, function addresses from the symbol table and from `.gopclntab`, and the file
//! offsets of each function's entry and return instructions. Needs Go (and, for the second
//! toolchain, the Go module proxy); under `CI=true` a missing Go fails the test.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use wirespan::{golang::GoBinary, testing::cannot_run};

const FUNCTIONS: [&str; 2] = [
    "net/http.serverHandler.ServeHTTP",
    "net/http.(*Transport).roundTrip",
];
/// The machine's Go, and older ones fetched with GOTOOLCHAIN (cached by Go after the first).
const TOOLCHAINS: [Option<&str>; 3] = [None, Some("go1.22.12"), Some("go1.24.11")];

fn build(toolchain: Option<&str>, stripped: bool) -> Option<PathBuf> {
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/http-hello"
    ));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "http-hello-{}{}",
        toolchain.unwrap_or("local"),
        if stripped { "-stripped" } else { "" }
    ));
    let mut cmd = Command::new("go");
    cmd.arg("build").arg("-o").arg(&out).current_dir(example);
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    if let Some(t) = toolchain {
        cmd.env("GOTOOLCHAIN", t);
    }
    let status = cmd.arg(".").status().ok()?;
    status.success().then_some(out)
}

fn go_version(toolchain: Option<&str>) -> Option<String> {
    let mut cmd = Command::new("go");
    cmd.args(["env", "GOVERSION"]);
    if let Some(t) = toolchain {
        cmd.env("GOTOOLCHAIN", t);
    }
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn go_binaries_give_build_info_functions_and_return_offsets_stripped_or_not() {
    for toolchain in TOOLCHAINS {
        let Some(version) = go_version(toolchain) else {
            return cannot_run(&format!(
                "Go {} is not available",
                toolchain.unwrap_or("(local)")
            ));
        };
        let (Some(plain), Some(stripped)) = (build(toolchain, false), build(toolchain, true))
        else {
            return cannot_run(&format!(
                "building examples/http-hello with {version} failed"
            ));
        };
        let plain_bin = GoBinary::open(&plain, &FUNCTIONS).unwrap();
        let stripped_bin = GoBinary::open(&stripped, &FUNCTIONS).unwrap();
        assert!(!plain_bin.stripped && stripped_bin.stripped);
        assert!(
            wirespan::golang::looks_like_go(&plain) && wirespan::golang::looks_like_go(&stripped)
        );
        assert!(
            !wirespan::golang::looks_like_go(Path::new("/bin/sh")),
            "a C program is not Go"
        );
        for bin in [&plain_bin, &stripped_bin] {
            assert_eq!(bin.build_info.go_version, version);
            assert_eq!(bin.build_info.path, "wirespan.dev/examples/http-hello");
        }
        // Struct layouts from DWARF; a stripped binary has none, and says so.
        let offsets = plain_bin
            .member_offsets(&[
                ("runtime.g", "goid"),
                ("net/http.Request", "Method"),
                ("net/http.Request", "URL"),
                ("net/url.URL", "Path"),
            ])
            .unwrap();
        let at = |s: &str, m: &str| offsets.get(&(s.to_owned(), m.to_owned())).copied();
        assert_eq!(at("net/http.Request", "Method"), Some(0), "{version}");
        assert_eq!(at("net/http.Request", "URL"), Some(16), "{version}");
        assert_eq!(at("net/url.URL", "Path"), Some(56), "{version}");
        assert!(
            at("runtime.g", "goid").is_some_and(|o| o > 0 && o < 512),
            "{version}: {offsets:?}"
        );
        assert!(matches!(
            stripped_bin.member_offsets(&[("runtime.g", "goid")]),
            Err(wirespan::golang::dwarf::DwarfError::Missing)
        ));
        let bytes = std::fs::read(&plain).unwrap();
        for name in FUNCTIONS {
            let from_symtab = plain_bin
                .probe(name)
                .unwrap_or_else(|| panic!("{version}: {name} not found"));
            let from_pclntab = stripped_bin
                .probe(name)
                .unwrap_or_else(|| panic!("{version} stripped: {name}"));
            // Stripping drops symbols, not code: the same function at the same place.
            assert_eq!(
                from_symtab.range.address, from_pclntab.range.address,
                "{version} {name}"
            );
            assert_eq!(
                from_symtab.return_offsets.len(),
                from_pclntab.return_offsets.len()
            );
            assert!(
                !from_symtab.return_offsets.is_empty(),
                "{version} {name}: no RET found"
            );
            // The entry probe sits right after the prologue's stack check (a jbe), so a call
            // that grows the stack and restarts the function is seen once.
            let entry = usize::try_from(from_symtab.entry_offset).unwrap();
            assert!(
                bytes[entry - 2] == 0x76 || bytes[entry - 6..entry - 4] == [0x0f, 0x86],
                "{version} {name}: the entry probe is not right after the stack check"
            );
            assert_eq!(from_symtab.entry_offset, from_pclntab.entry_offset);
            for ret in &from_symtab.return_offsets {
                assert_eq!(
                    bytes[*ret as usize], 0xc3,
                    "{version} {name}: offset {ret:#x} is not a RET"
                );
                assert!(
                    *ret > from_symtab.entry_offset
                        && *ret < from_symtab.entry_offset + from_symtab.range.size
                );
            }
        }
    }
}
