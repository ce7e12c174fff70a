//! Builds `probes-ebpf` for the bpfel target with the pinned nightly and bpf-linker, and embeds
//! the object (see `load`). Without that toolchain it stops with one line naming the fix.

use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow};

include!("../build-support/ebpf_toolchain.rs");

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=WIRESPAN_CACHE");
    if let Some(missing) = missing_toolchain() {
        println!("cargo::error=the eBPF toolchain is missing ({missing}): run `cargo xtask setup`");
        return Ok(());
    }
    let linker = bpf_linker_bin();
    println!("cargo::rerun-if-changed={}", linker.display());
    // aya-build runs the nightly cargo, whose bpfel target links with `bpf-linker` from PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![
        linker
            .parent()
            .context("bpf-linker path has a parent")?
            .to_path_buf(),
    ];
    dirs.extend(std::env::split_paths(&path));
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PATH", std::env::join_paths(dirs)?) };

    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let probes_dir = Path::new(&manifest_dir)
        .join("../probes-ebpf")
        .canonicalize()?;
    let probes_dir = probes_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "probes-ebpf",
            root_dir: probes_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_NIGHTLY),
    )
}

/// What of the eBPF toolchain is missing, if anything.
fn missing_toolchain() -> Option<String> {
    let sysroot = Command::new("rustup")
        .args(["run", EBPF_NIGHTLY, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(sysroot) = sysroot else {
        return Some(format!("toolchain {EBPF_NIGHTLY}"));
    };
    if !Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        return Some(format!("rust-src for {EBPF_NIGHTLY}"));
    }
    if !bpf_linker_bin().exists() {
        return Some(format!("bpf-linker at {}", bpf_linker_bin().display()));
    }
    None
}
