//! How a Go binary was linked must not matter (DESIGN.md, rule 7): examples/http-hello built
//! with Go's internal linker, with `-linkmode=external`, with a real cgo dependency (`-tags
//! cgotls`: a C function with a `__thread` variable, which moves Go's goroutine slot in TLS), and
//! as a cgo PIE; each plain, with `-ldflags=-s -w`, and through `strip`; on two Go versions.
//! For each: build info, the same function addresses and probe offsets as the plain build (from
//! `.gopclntab` and the module data when stripped), and the goroutine's TLS slot read from the
//! runtime's code equal to what `runtime.tlsg` and `PT_TLS` give. Needs Go, gcc and binutils'
//! `strip`; under `CI=true` a missing one fails the test.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use wirespan::{
    golang::{GoBinary, discover, grpc, tls},
    testing::cannot_run,
};

const FUNCTIONS: [&str; 6] = [
    "net/http.serverHandler.ServeHTTP",
    "net/http.(*Transport).roundTrip",
    "runtime.newproc1",
    "runtime.goexit1",
    discover::NEWPROC_CLOSURE,
    discover::RUNQPUT,
];
/// The functions probed at their entry and RETs (the others are call sites or addresses).
const PROBED: [&str; 4] = [FUNCTIONS[0], FUNCTIONS[1], FUNCTIONS[2], FUNCTIONS[3]];
/// The machine's Go (1.26) and an older one fetched with GOTOOLCHAIN (cached after the first).
const TOOLCHAINS: [Option<&str>; 2] = [None, Some("go1.22.12")];

/// How a variant is linked: its name, `go build` arguments, and the goroutine slot's offset
/// from the thread pointer it must have.
const LINKS: [(&str, &[&str], i32); 4] = [
    ("internal", &[], -8),
    ("external", &["-ldflags=-linkmode=external"], -8),
    // The C `__thread` counter sits after runtime.tlsg in the 16-byte TLS block.
    ("cgo", &["-tags", "cgotls"], -16),
    ("cgo-pie", &["-tags", "cgotls", "-buildmode=pie"], -16),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strip {
    No,
    /// `-s -w` added to the link flags.
    LinkerFlags,
    /// binutils `strip` on the plain build.
    Tool,
}

fn build(toolchain: Option<&str>, link: &str, args: &[&str], strip: Strip) -> Option<PathBuf> {
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/http-hello"
    ));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "link-{}-{link}-{strip:?}",
        toolchain.unwrap_or("local")
    ));
    if strip == Strip::Tool {
        let plain = build(toolchain, link, args, Strip::No)?;
        std::fs::copy(plain, &out).ok()?;
        let status = Command::new("strip").arg(&out).status().ok()?;
        return status.success().then_some(out);
    }
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if strip == Strip::LinkerFlags {
        match args.iter_mut().find(|a| a.starts_with("-ldflags=")) {
            Some(flags) => flags.push_str(" -s -w"),
            None => args.push("-ldflags=-s -w".into()),
        }
    }
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .arg("-o")
        .arg(&out)
        .args(&args)
        .current_dir(example);
    if let Some(t) = toolchain {
        cmd.env("GOTOOLCHAIN", t);
    }
    let status = cmd.arg(".").status().ok()?;
    status.success().then_some(out)
}

#[test]
fn every_link_mode_stripped_or_not_gives_functions_and_the_goroutine_tls_slot() {
    let mut checked = 0;
    for toolchain in TOOLCHAINS {
        for (link, args, slot) in LINKS {
            let Some(plain) = build(toolchain, link, args, Strip::No) else {
                return cannot_run(&format!(
                    "building examples/http-hello ({link}) with Go {} failed",
                    toolchain.unwrap_or("(local)")
                ));
            };
            let plain_bin = GoBinary::open(&plain, &FUNCTIONS).unwrap();
            let what = format!("{} {link}", plain_bin.build_info.go_version);
            assert!(!plain_bin.stripped, "{what}");
            assert_eq!(plain_bin.g_tls, Ok(slot), "{what}");
            // Go's own linker writes no runtime.tlsg symbol (its slot is -8 by construction);
            // a host linker's symbol table has it, and the code must agree with it.
            let from_symbols = tls::g_offset_from_symbols(&std::fs::read(&plain).unwrap());
            let want = (link != "internal").then_some(i64::from(slot));
            assert_eq!(from_symbols, want, "{what}: runtime.tlsg and PT_TLS");
            for strip in [Strip::LinkerFlags, Strip::Tool] {
                let Some(stripped) = build(toolchain, link, args, strip) else {
                    return cannot_run(&format!("{what}: building stripped ({strip:?}) failed"));
                };
                let bin = GoBinary::open(&stripped, &FUNCTIONS)
                    .unwrap_or_else(|e| panic!("{what} {strip:?}: {e}"));
                let what = format!("{what} {strip:?}");
                assert!(bin.stripped, "{what}");
                assert_eq!(bin.build_info, plain_bin.build_info, "{what}");
                assert_eq!(bin.g_tls, Ok(slot), "{what}");
                // The spawn probe's place: newproc's call to runqput, found alike.
                let call = |b: &GoBinary| {
                    b.call_site(discover::NEWPROC_CLOSURE, discover::RUNQPUT)
                        .map(|p| p.entry_offset)
                };
                assert!(call(&plain_bin).is_some(), "{what}: no call to runqput");
                assert_eq!(call(&bin), call(&plain_bin), "{what}");
                for name in PROBED {
                    let want = plain_bin.probe(name).unwrap();
                    let got = bin
                        .probe(name)
                        .unwrap_or_else(|| panic!("{what}: {name} not found"));
                    // Stripping drops symbols, not code: the same function at the same place.
                    // (.gopclntab sizes run to the next function, padding included.)
                    assert_eq!(got.range.address, want.range.address, "{what} {name}");
                    assert_eq!(got.entry_offset, want.entry_offset, "{what} {name}");
                    assert_eq!(got.return_offsets, want.return_offsets, "{what} {name}");
                    assert!(!got.return_offsets.is_empty(), "{what} {name}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, TOOLCHAINS.len() * LINKS.len() * 2);
}

/// grpc-go's functions in examples/grpc-echo linked by the host linker, plain and `-s -w`: the
/// same places and probe offsets, and the goroutine slot where Go's linker would put it.
#[test]
fn grpc_functions_of_an_externally_linked_stripped_binary_are_where_the_plain_one_has_them() {
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grpc-echo"
    ));
    let mut built = Vec::new();
    for (name, flags) in [
        ("plain", "-linkmode=external"),
        ("s-w", "-linkmode=external -s -w"),
    ] {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("link-grpc-echo-{name}"));
        let ok = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(format!("-ldflags={flags}"))
            .arg(".")
            .current_dir(example)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return cannot_run("building examples/grpc-echo with -linkmode=external failed");
        }
        built.push(out);
    }
    let names: Vec<&str> = grpc::PROBES
        .iter()
        .map(|(name, _, _)| *name)
        .chain(grpc::SPAWN_SITES)
        .chain([grpc::STATUS_ERROR_METHOD])
        .collect();
    let plain = GoBinary::open(&built[0], &names).unwrap();
    let stripped = GoBinary::open(&built[1], &names).unwrap();
    assert!(stripped.stripped && !plain.stripped);
    assert_eq!(
        (plain.g_tls.clone(), stripped.g_tls.clone()),
        (Ok(-8), Ok(-8))
    );
    for name in names {
        let want = plain.function(name).unwrap_or_else(|| panic!("{name}"));
        let got = stripped
            .function(name)
            .unwrap_or_else(|| panic!("stripped: {name}"));
        assert_eq!(got.address, want.address, "{name}");
        if let (Some(want), Some(got)) = (plain.probe(name), stripped.probe(name)) {
            assert_eq!(
                (got.entry_offset, &got.return_offsets),
                (want.entry_offset, &want.return_offsets),
                "{name}"
            );
        }
    }
}
