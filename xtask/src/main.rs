//! `cargo xtask`: the project's commands. `setup` installs what is missing (idempotent, fast when
//! nothing is); `run` and `test` call it first, so the README's two commands work on a fresh
//! machine.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "wirespan's project commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: the eBPF nightly with rust-src, bpf-linker built against its LLVM,
    /// bpftool (for tests); check Go.
    Setup,
    /// Set up, build, and run the agent with the live console view. Extra arguments go to
    /// `wirespan run` (e.g. `cargo xtask run -- --duration 30`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then check formatting and lints, run every test (privileged ones need root), and
    /// run each decoder fuzz target for a bounded time.
    Test,
}

fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One readable line; the commands' own output above says the rest.
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Setup => setup::run(),
        Cmd::Run { args } => {
            setup::run()?;
            run_agent(&args)
        }
        Cmd::Test => {
            setup::run()?;
            test()
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is one level down")
        .to_path_buf()
}

/// Run a command in the workspace root; fail with the command line when it fails.
fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run_agent(args: &[String]) -> anyhow::Result<()> {
    run_checked(cargo().args([
        "build",
        "--release",
        "--package",
        "wirespan",
        "--bin",
        "wirespan",
    ]))?;
    let agent = workspace_root().join("target/release/wirespan");
    let is_root = setup::is_root();
    let mut cmd = if is_root {
        Command::new(&agent)
    } else {
        eprintln!("xtask: the agent needs root (or CAP_BPF + CAP_PERFMON); running it with sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(&agent);
        sudo
    };
    cmd.args(["run", "--exporter", "console"]).args(args);
    run_checked(&mut cmd)
}

fn test() -> anyhow::Result<()> {
    run_checked(cargo().args(["fmt", "--all", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    run_checked(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    if !setup::is_root() {
        eprintln!("xtask: not root: privileged tests will be skipped (they fail under CI=true)");
    }
    run_checked(cargo().args(["test"]))?;
    fuzz()
}

/// The decoder fuzz targets of collector/fuzz, each for a bounded time (`WIRESPAN_FUZZ_SECONDS`,
/// default 20). New inputs go to a corpus in the cache, beside the committed seeds, so longer
/// runs (`cargo fuzz run <target>` by hand) pick up where these left off.
fn fuzz() -> anyhow::Result<()> {
    const TARGETS: [&str; 4] = ["http1", "http2", "hpack", "events"];
    let seconds = std::env::var("WIRESPAN_FUZZ_SECONDS").unwrap_or_else(|_| "20".to_owned());
    let fuzz_dir = workspace_root().join("collector/fuzz");
    for target in TARGETS {
        let corpus = setup::cache_dir().join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        run_checked(
            Command::new(setup::cargo_fuzz_bin())
                .args(["fuzz", "run", "--fuzz-dir"])
                .arg(&fuzz_dir)
                .arg(target)
                .arg(&corpus)
                .arg(fuzz_dir.join("seeds").join(target))
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-print_final_stats=1",
                ])
                // The targets build with the pinned nightly (sanitizers need it).
                .env("RUSTUP_TOOLCHAIN", setup::EBPF_NIGHTLY),
        )
        .with_context(|| {
            format!("fuzz target {target} found a failing input (see collector/fuzz/artifacts)")
        })?;
    }
    Ok(())
}
