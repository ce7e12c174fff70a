//! What the benchmark runs: the load generator (oha, built once with cargo install), the example
//! services (built through the Go module proxy), and go.opentelemetry.io/auto, built once from its
//! module source (its BPF objects are generated with bpf2go and Debian's clang; they are not in
//! the module, so `go install` alone cannot build it). All cached outside the clone.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{build_examples, cargo, module_source, run_checked, setup};

pub const OHA_VERSION: &str = "1.16.0";
pub const GO_AUTO_MODULE: &str = "go.opentelemetry.io/auto";
pub const GO_AUTO_VERSION: &str = "v0.24.0";

/// oha, the HTTP load generator: fixed concurrency, optionally a fixed rate, JSON results.
pub fn oha() -> anyhow::Result<PathBuf> {
    let root = setup::cache_dir().join(format!("oha-{OHA_VERSION}"));
    let binary = root.join("bin/oha");
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!("xtask: installing oha {OHA_VERSION} (once; a few minutes)");
    run_checked(
        cargo()
            .args([
                "install",
                "oha",
                "--locked",
                "--version",
                OHA_VERSION,
                "--root",
            ])
            .arg(&root),
    )?;
    Ok(binary)
}

/// The example services the targets run: http-hello, gin-front and grpc-echo (server, relay
/// and the gRPC load generator).
pub fn services(bin: &Path) -> anyhow::Result<()> {
    build_examples(bin, &["http-hello", "gin-front", "grpc-echo"])
}

fn go_auto_binary() -> PathBuf {
    setup::cache_dir()
        .join(format!("go-auto-{GO_AUTO_VERSION}"))
        .join("otel-go-instrumentation")
}

/// Whether go-auto was built already.
pub fn go_auto_cached() -> bool {
    go_auto_binary().exists()
}

/// go.opentelemetry.io/auto's CLI, or why it could not be built.
pub fn go_auto() -> Result<PathBuf, String> {
    let binary = go_auto_binary();
    let dir = binary.parent().map(Path::to_path_buf).unwrap_or_default();
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!("xtask: building {GO_AUTO_MODULE}@{GO_AUTO_VERSION} from its module (once)");
    build_go_auto(&dir, &binary).map_err(|e| format!("{e:#}"))?;
    Ok(binary)
}

fn build_go_auto(dir: &Path, binary: &Path) -> anyhow::Result<()> {
    // bpf2go compiles the probes with clang and strips them with llvm-strip.
    setup::debian_package("clang", Command::new("clang").arg("--version"))?;
    setup::debian_package("llvm", Command::new("llvm-strip").arg("--version"))?;
    setup::debian_package("libbpf-dev", &mut setup::dpkg_installed("libbpf-dev"))?;
    let source = dir.join("src");
    module_source(GO_AUTO_MODULE, GO_AUTO_VERSION, &source)?;
    // `make generate` only regenerates objects that already exist (none in the module);
    // `generate/all` runs every go:generate (bpf2go) directive.
    run_checked(
        Command::new("make")
            .arg("generate/all")
            .current_dir(&source),
    )
    .context("make generate/all (bpf2go with clang) failed")?;
    // The module's go.mod points its sdk at a sibling directory the module zip does not carry;
    // the published sdk module is the same code.
    run_checked(
        Command::new("go")
            .args(["mod", "edit", "-dropreplace=go.opentelemetry.io/auto/sdk"])
            .current_dir(&source),
    )?;
    run_checked(
        Command::new("go")
            .args(["build", "-o"])
            .arg(binary)
            .arg("./cli")
            .env("GOFLAGS", "-mod=mod")
            .current_dir(&source),
    )?;
    let _ = std::fs::remove_dir_all(&source);
    Ok(())
}
