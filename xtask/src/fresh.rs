//! `cargo xtask fresh-check`: the README's entry point from a fresh rustup state.
//!
//! Fresh machines here have only their default stable Rust, and rustup's auto-install is off
//! (`RUSTUP_AUTO_INSTALL=0`). A toolchain pin that is not installed yet then breaks every `cargo`
//! command in the clone, `cargo xtask` included; the machines this project is developed on keep
//! what was installed by hand, so only a reproduced fresh state can catch it. This check makes
//! one: a temporary `RUSTUP_HOME` that holds only the default stable (linked, not copied) with
//! auto-install off, and runs `cargo xtask build` there, which must install the pinned toolchains
//! itself and build the agent.
//!
//! Cost: about 40 s (the user-space and eBPF toolchains are downloaded into the temporary home,
//! about 1.5 GB unpacked, removed afterwards). It shares the clone's target directory, and the
//! toolchains it installs are the same versions as the real ones, so the build it proves is the
//! one the rest of `cargo xtask test` reuses.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{run_checked, setup, workspace_root};

pub fn run() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let real_home = rustup_home();
    let default = default_toolchain()?;
    let home = workspace_root().join("target/fresh-rustup");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join("toolchains"))?;
    std::os::unix::fs::symlink(
        real_home.join("toolchains").join(&default),
        home.join("toolchains").join(&default),
    )
    .context("cannot link the default toolchain into the temporary RUSTUP_HOME")?;
    std::fs::write(
        home.join("settings.toml"),
        format!(
            "version = \"12\"\ndefault_toolchain = \"{default}\"\nprofile = \"minimal\"\n\
             auto_self_update = \"disable\"\n\n[overrides]\n"
        ),
    )?;
    let fresh = |program: &str| {
        let mut cmd = Command::new(program);
        cmd.current_dir(workspace_root())
            .env("RUSTUP_HOME", &home)
            .env("RUSTUP_AUTO_INSTALL", "0")
            // What rustup and cargo set for xtask itself must not leak into the fresh state.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC");
        cmd
    };
    // The state is fresh: the pinned toolchain is not there.
    let pinned = fresh("rustup")
        .args(["run", setup::USER_TOOLCHAIN, "rustc", "--version"])
        .output()?;
    if pinned.status.success() {
        bail!("the temporary RUSTUP_HOME already has {}", setup::USER_TOOLCHAIN);
    }
    eprintln!(
        "xtask: fresh-check: RUSTUP_HOME with only {default}, auto-install off: cargo xtask build"
    );
    let result = run_checked(fresh("cargo").args(["xtask", "build"])).and_then(|()| {
        let agent = workspace_root().join("target/release/wirespan");
        run_checked(fresh(agent.to_str().context("non-UTF-8 path")?).arg("--version"))
    });
    let _ = std::fs::remove_dir_all(&home);
    result.context("the README's entry point fails from a fresh rustup state")?;
    eprintln!(
        "xtask: fresh-check passed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

fn rustup_home() -> PathBuf {
    std::env::var_os("RUSTUP_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".rustup"),
        PathBuf::from,
    )
}

/// The machine's default toolchain, by its full name (`stable-x86_64-unknown-linux-gnu`).
fn default_toolchain() -> anyhow::Result<String> {
    let out = Command::new("rustup")
        .arg("default")
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("cannot run rustup")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .filter(|_| out.status.success())
        .map(str::to_owned)
        .with_context(|| format!("rustup default printed no toolchain: {text}"))
}
