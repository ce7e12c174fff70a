// The toolchains wirespan builds with, named once and `include!`d by both `xtask` (which installs
// them) and `collector/build.rs` (which uses the eBPF one), so the two never disagree.
// Kept as plain items (no `//!`): it is spliced into other files.

/// Stable toolchain for user space (the agent, tests): aya 0.16 needs rustc >= 1.98. Deliberately
/// not a `rust-toolchain.toml` pin: with rustup's auto-install off (`RUSTUP_AUTO_INSTALL=0`, as on
/// fresh machines here) a pin that is not installed yet makes every `cargo` command in the clone
/// fail, `cargo xtask` included, so nothing could install it. `cargo xtask` builds with the
/// machine's default stable, installs this one and runs every build under it.
pub const USER_TOOLCHAIN: &str = "1.99.1";

/// Dated nightly for `probes-ebpf` (needs rust-src for `-Z build-std=core`). Its LLVM (23.1) is
/// the one bpf-linker is built against: an LLVM-22 linker fed LLVM-23 bitcode fails.
pub const EBPF_NIGHTLY: &str = "nightly-2026-10-30";

/// bpf-linker version installed by `cargo xtask setup`.
pub const BPF_LINKER_VERSION: &str = "0.13";

/// Where wirespan keeps what is slow to fetch or build, outside any clone:
/// `$WIRESPAN_CACHE`, else `$XDG_CACHE_HOME/wirespan`, else `$HOME/.cache/wirespan`.
#[must_use]
pub fn cache_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("WIRESPAN_CACHE") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return std::path::PathBuf::from(dir).join("wirespan");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::PathBuf::from(home).join(".cache").join("wirespan")
}

/// `cargo install --root` of bpf-linker, keyed by the nightly whose LLVM it links.
#[must_use]
pub fn bpf_linker_root() -> std::path::PathBuf {
    cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-{EBPF_NIGHTLY}"))
}

/// The bpf-linker binary; its runpath points at `llvm_prefix()/lib`, so both must be kept.
#[must_use]
pub fn bpf_linker_bin() -> std::path::PathBuf {
    bpf_linker_root().join("bin").join("bpf-linker")
}

/// `LLVM_PREFIX` bpf-linker was built with: links to the nightly's own libLLVM.
#[must_use]
pub fn llvm_prefix() -> std::path::PathBuf {
    cache_dir().join(format!("llvm-{EBPF_NIGHTLY}"))
}
