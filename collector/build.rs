//! Builds `probes-ebpf` for the bpfel target with the pinned nightly and bpf-linker, and puts the
//! object at `$OUT_DIR/probes` for `load` to embed. Without that toolchain it stops with one line
//! naming the fix.
//!
//! This is what aya-build does, with two differences: success is quiet (aya-build turns every
//! line of the nested cargo into a warning), and the nested build shares one target directory
//! (`target/probes-ebpf`) across profiles, so `cargo build`, `clippy` and `test` compile the
//! probes once.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};

include!("../build-support/toolchains.rs");

const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("collector is one level down")?;
    for watched in ["probes-ebpf", "shared", "build-support"] {
        println!(
            "cargo::rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo::rerun-if-env-changed=WIRESPAN_CACHE");

    if let Some(missing) = missing_toolchain() {
        println!("cargo::error=the eBPF toolchain is missing ({missing}): run `cargo xtask setup`");
        return Ok(());
    }
    let linker = bpf_linker_bin();
    println!("cargo::rerun-if-changed={}", linker.display());

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from)
        .join("probes-ebpf");
    let out = build_probes(workspace, &target_dir, &linker)?;
    if !out.status.success() {
        // Show the compiler's own messages: they say what to fix in the probes.
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("cargo::warning={line}");
        }
        println!(
            "cargo::error=building probes-ebpf for {TARGET} failed ({}); see the warnings above",
            out.status
        );
        return Ok(());
    }
    let object = target_dir.join(TARGET).join("release").join("probes");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::copy(&object, out_dir.join("probes"))
        .with_context(|| format!("copying {} into OUT_DIR", object.display()))?;
    Ok(())
}

fn build_probes(
    workspace: &Path,
    target_dir: &Path,
    linker: &Path,
) -> anyhow::Result<std::process::Output> {
    // The bpfel target links with `bpf-linker` from PATH: put ours first.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![
        linker
            .parent()
            .context("bpf-linker has a directory")?
            .to_path_buf(),
    ];
    dirs.extend(std::env::split_paths(&path));
    let rustflags = [
        &format!(
            "--cfg=bpf_target_arch=\"{}\"",
            std::env::var("CARGO_CFG_TARGET_ARCH")?
        ),
        "-Cdebuginfo=2",
        // BTF in the object lets aya and the verifier check the programs' types.
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        EBPF_NIGHTLY,
        "cargo",
        "build",
        "--package",
        "probes-ebpf",
        "--bins",
    ])
    .args([
        "--release",
        "--target",
        TARGET,
        "-Z",
        "build-std=core",
        "--target-dir",
    ])
    .arg(target_dir)
    .current_dir(workspace)
    .env("PATH", std::env::join_paths(dirs)?)
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
    // The outer cargo's settings name the stable compiler; the nested build must use the
    // nightly's own.
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER")
    .env_remove("RUSTC_WRAPPER")
    .env_remove("CARGO")
    .env_remove("RUSTUP_TOOLCHAIN");
    cmd.output()
        .map_err(|e| anyhow!("cannot run rustup to build the probes: {e}"))
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
