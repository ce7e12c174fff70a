//! `cargo xtask`: the project's commands. `setup` installs what is missing (idempotent, fast when
//! nothing is); `run` and `test` call it first, so the README's two commands work on a fresh
//! machine.

mod bench;
mod demo;
mod faults;
mod fresh;
mod setup;
mod vm;
mod zipkin;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use setup::Need;

#[derive(Parser)]
#[command(about = "wirespan's project commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing for every command: the user-space toolchain and the eBPF nightly
    /// with rust-src, bpf-linker built against its LLVM, Graphviz (`wirespan map --format svg`),
    /// and what the tests use (bpftool, qemu and busybox, nftables, nghttp2, cargo-fuzz, the musl
    /// target and musl-gcc); check Go. `build`, `run` and `demo` install only what building needs.
    Setup,
    /// Set up and build the agent (release): `target/release/wirespan`.
    Build,
    /// Reproduce a fresh machine's rustup (only the default stable, auto-install off) in a
    /// temporary RUSTUP_HOME and check that `cargo xtask build` gets from there to a working
    /// agent. `cargo xtask test` runs it.
    FreshCheck,
    /// Set up, build, and run the agent with the live console view. Extra arguments go to
    /// `wirespan run` (e.g. `cargo xtask run -- --duration 30`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build the agent and the example services (and Jaeger v2, once, with go install),
    /// start them on loopback with a little traffic, and show the live trace trees. Ctrl-C stops
    /// everything it started.
    Demo {
        /// Stop after this many seconds instead of waiting for Ctrl-C.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
    },
    /// Boot Debian's kernels under qemu (software emulation) and run the privileged smoke tests
    /// inside each: connections, data and Go uprobes, with kprobe, fentry, tp_btf and tracepoint
    /// modes forced in turn. Kernels are fetched once and cached.
    VmTest {
        /// A kernel to test (6.1, 6.12); repeat for several. Default: all.
        #[arg(long = "kernel", value_name = "NAME")]
        kernels: Vec<String>,
    },
    /// Measure what tracing costs: four targets (net/http hello, plain and over HTTPS, the
    /// three-tier example, a gRPC echo) under load at saturation and at 10k req/s, with no agent, floor A (empty programs
    /// on the 12 socket syscall tracepoints), floor B (A + one empty uprobe per request, at
    /// ServeHTTP or grpc-go's operateHeaders), wirespan (OTLP/gRPC to a receiver that discards
    /// spans) and go.opentelemetry.io/auto, alternating; per request also the kernel's counts:
    /// uprobe and RET-probe hits and BPF time by program. The floors are attached by the
    /// `wirespan-floor` helper (`wirespan-floor --help`). Results in bench/results/ (Markdown,
    /// JSON, PNG).
    Bench {
        /// A smoke run under 2 minutes: one short round, go-auto only if already built.
        #[arg(long)]
        quick: bool,
    },
    /// Run the fault suite (tests/faults_*.rs) at full size: backend outages, connection churn,
    /// agent restarts, hostile traffic and binaries, the traced-program safety soak. Each case
    /// writes its figures; they go to faults/RESULTS.md. Needs root. `cargo xtask test` runs the
    /// short form of every case.
    Faults {
        /// The short form (what CI runs), with its results in target/faults/RESULTS-short.md.
        #[arg(long)]
        short: bool,
        /// Run only this case's test binary again (e.g. faults_churn), keeping the others'
        /// figures from the last run; repeatable.
        #[arg(long = "case", value_name = "NAME")]
        cases: Vec<String>,
    },
    /// Regenerate collector/src/golang/offsets.json, the Go struct layouts for stripped binaries,
    /// from real builds of examples/http-hello with each supported Go toolchain.
    Offsets,
    /// Set up, check that the README's commands work from a fresh rustup state (fresh-check),
    /// build Jaeger v2 once for the end-to-end test, then check formatting and lints,
    /// run every test (privileged ones need root), run the privileged smoke tests inside
    /// Debian's kernels under qemu (vm-test), the benchmark's --quick smoke run, and each
    /// decoder fuzz target for a bounded time.
    Test,
}

fn main() -> std::process::ExitCode {
    let command = Cli::parse().command;
    match setup::use_user_toolchain().and_then(|()| dispatch(command)) {
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
        Cmd::Setup => setup::run(Need::All),
        Cmd::Build => {
            setup::run(Need::Build)?;
            build_agent().map(drop)
        }
        Cmd::FreshCheck => fresh::run(),
        Cmd::Run { args } => {
            setup::run(Need::Build)?;
            run_agent(&args)
        }
        Cmd::Demo { duration } => {
            setup::run(Need::Build)?;
            let agent = build_agent()?;
            let duration = duration
                .map(std::time::Duration::try_from_secs_f64)
                .transpose()
                .context("--duration: expected seconds")?;
            demo::run(&agent, duration)
        }
        Cmd::VmTest { kernels } => {
            setup::run(Need::All)?;
            vm::run(&kernels)
        }
        Cmd::Bench { quick } => {
            setup::run(Need::All)?;
            bench::run(build_bench()?, quick)
        }
        Cmd::Faults { short, cases } => {
            setup::run(Need::All)?;
            faults::run(short, &cases)
        }
        Cmd::Offsets => {
            setup::run(Need::All)?;
            offsets()
        }
        Cmd::Test => {
            setup::run(Need::All)?;
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

/// Run a command (in the workspace root unless it names a directory); fail with the command
/// line when it fails.
fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(workspace_root());
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A Go module's source at `module@version`, fetched through the module proxy (`go mod
/// download`) and copied to `dest`, writable (the module cache is read-only), to build in:
/// `go install module/cmd@version` refuses modules whose go.mod has replace directives.
fn module_source(module: &str, version: &str, dest: &Path) -> anyhow::Result<()> {
    let download = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .output()
        .context("cannot run go")?;
    if !download.status.success() {
        bail!(
            "go mod download {module}@{version} failed: {}",
            String::from_utf8_lossy(&download.stdout).trim()
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&download.stdout)?;
    let dir = info["Dir"]
        .as_str()
        .context("go mod download gave no Dir")?;
    let _ = std::fs::remove_dir_all(dest);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    run_checked(Command::new("cp").arg("-r").arg(dir).arg(dest))?;
    run_checked(Command::new("chmod").args(["-R", "u+w"]).arg(dest))
}

/// Build examples/<name> into `bin/<name>` through the Go module proxy.
fn build_examples(bin: &Path, names: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(bin)?;
    for example in names {
        eprintln!("xtask: building examples/{example}");
        run_checked(
            Command::new("go")
                .args(["build", "-o"])
                .arg(bin.join(example))
                .arg(".")
                .current_dir(workspace_root().join("examples").join(example)),
        )?;
    }
    Ok(())
}

/// rustup's `cargo`, which runs the user-space toolchain (`RUSTUP_TOOLCHAIN`): not `$CARGO`, the
/// default stable's own cargo that built xtask.
fn cargo() -> Command {
    Command::new("cargo")
}

/// The release directory cargo builds into (`CARGO_TARGET_DIR` when set).
fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("release")
}

/// Build what the bench runs (release): the agent, its floor helper `wirespan-floor` and the
/// OTLP receiver `otlp-sink`.
fn build_bench() -> anyhow::Result<bench::Built> {
    run_checked(cargo().args([
        "build",
        "--release",
        "--package",
        "wirespan",
        "--bin",
        "wirespan",
        "--bin",
        "wirespan-floor",
        "--package",
        "otlp-sink",
        "--bin",
        "otlp-sink",
    ]))?;
    let release = release_dir();
    Ok(bench::Built {
        agent: release.join("wirespan"),
        floor: release.join("wirespan-floor"),
        sink: release.join("otlp-sink"),
    })
}

/// Build the agent (release); its path.
fn build_agent() -> anyhow::Result<PathBuf> {
    run_checked(cargo().args([
        "build",
        "--release",
        "--package",
        "wirespan",
        "--bin",
        "wirespan",
    ]))?;
    Ok(release_dir().join("wirespan"))
}

fn run_agent(args: &[String]) -> anyhow::Result<()> {
    let agent = build_agent()?;
    let is_root = setup::is_root();
    let mut cmd = if is_root {
        Command::new(&agent)
    } else {
        eprintln!(
            "xtask: the agent needs root (or the capabilities in the README's Security section); running it with sudo"
        );
        let mut sudo = Command::new("sudo");
        sudo.arg(&agent);
        sudo
    };
    cmd.args(["run", "--exporter", "console"]).args(args);
    run_checked(&mut cmd)
}

fn test() -> anyhow::Result<()> {
    // First: the README's commands must work on a machine that has only its default stable.
    fresh::run()?;
    run_checked(cargo().args(["fmt", "--all", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    run_checked(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    clippy_probes()?;
    if !setup::is_root() {
        eprintln!("xtask: not root: privileged tests will be skipped (they fail under CI=true)");
    }
    // The end-to-end test's Jaeger, built once from its module (cached outside the clone).
    let mut test = cargo();
    test.arg("test");
    // The fault cases (short form) write their figures here; rendered after the run.
    let figures = faults::figures_dir();
    let _ = std::fs::remove_dir_all(&figures);
    test.env("WIRESPAN_FAULTS_OUT", &figures);
    match demo::jaeger_binary() {
        Ok(jaeger) => {
            test.env("WIRESPAN_JAEGER", jaeger);
        }
        Err(why) => eprintln!("xtask: cannot build Jaeger ({why:#}); its test will say so"),
    }
    // The browser test's Zipkin server, fetched once (cached outside the clone).
    match zipkin::jar() {
        Ok(jar) => {
            test.env("WIRESPAN_ZIPKIN_JAR", jar);
        }
        Err(why) => eprintln!("xtask: cannot fetch Zipkin ({why:#}); its test will say so"),
    }
    run_checked(&mut test)?;
    if figures.exists() {
        faults::render_short()?;
    }
    // The same privileged smoke tests inside Debian's kernels, which allow kprobes and fentry.
    vm::run(&[])?;
    // The benchmark's smoke run: every target and configuration end to end, briefly (its
    // figures are not a measurement; `cargo xtask bench` is).
    if setup::is_root() {
        bench::run(build_bench()?, true)?;
    }
    fuzz()
}

/// Clippy on the kernel programs, which the workspace clippy leaves out (not a default member):
/// with the eBPF nightly, for the bpfel target with `-Z build-std=core` and the release profile,
/// as collector/build.rs builds them (the target aborts on panic; `main.rs` has the handler).
/// Its own target directory, so it never invalidates the build's artifacts.
fn clippy_probes() -> anyhow::Result<()> {
    let nightly = setup::EBPF_NIGHTLY;
    let has_clippy = Command::new("rustup")
        .args(["run", nightly, "cargo-clippy", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_clippy {
        run_checked(Command::new("rustup").args([
            "component",
            "add",
            "--toolchain",
            nightly,
            "clippy",
        ]))?;
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("probes-clippy");
    run_checked(
        Command::new("rustup")
            .args([
                "run",
                nightly,
                "cargo",
                "clippy",
                "--package",
                "probes-ebpf",
                "--lib",
                "--bins",
            ])
            .args([
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .args(["--", "-D", "warnings"])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
            )
            // The user-space toolchain's settings must not reach the nightly's cargo.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO"),
    )
    .context("clippy found problems in probes-ebpf")
}

/// Go toolchains whose layouts the offsets table records (fetched through GOTOOLCHAIN).
const GO_VERSIONS: [&str; 3] = ["go1.22.12", "go1.24.11", "go1.26.8"];
/// grpc-go versions the table records, each built with the Go toolchain the tests pair it with.
const GRPC_VERSIONS: [(&str, &str); 3] = [
    ("v1.56.3", "go1.22.12"),
    ("v1.70.0", "go1.24.11"),
    ("v1.85.0", "go1.26.8"),
];

/// gin versions whose route-tree layout the table records, each built (examples/gin-front) with
/// the Go toolchain the tests pair it with.
const GIN_VERSIONS: [(&str, &str); 1] = [("v1.12.0", "go1.26.8")];

fn go_checked(dir: &Path, toolchain: &str, args: &[&str]) -> anyhow::Result<()> {
    run_checked(
        Command::new("go")
            .args(args)
            .current_dir(dir)
            .env("GOTOOLCHAIN", toolchain),
    )
}

fn offsets() -> anyhow::Result<()> {
    let out_dir = workspace_root().join("target/go-offsets");
    std::fs::create_dir_all(&out_dir)?;
    let mut binaries = Vec::new();
    for version in GO_VERSIONS {
        let binary = out_dir.join(format!("http-hello-{version}"));
        eprintln!("xtask: building examples/http-hello with {version}");
        let out = binary.to_str().context("non-UTF-8 path")?;
        go_checked(
            &workspace_root().join("examples/http-hello"),
            version,
            &["build", "-o", out, "."],
        )?;
        binaries.push(binary);
    }
    // grpc-echo against each grpc-go version, in a module directory of its own (the example's
    // go.mod pins the newest grpc-go).
    for (grpc, toolchain) in GRPC_VERSIONS {
        let module = out_dir.join(format!("grpc-echo-{grpc}"));
        std::fs::create_dir_all(&module)?;
        std::fs::copy(
            workspace_root().join("examples/grpc-echo/main.go"),
            module.join("main.go"),
        )?;
        std::fs::write(
            module.join("go.mod"),
            "module wirespan.dev/examples/grpc-echo\n\ngo 1.22\n",
        )?;
        eprintln!("xtask: building examples/grpc-echo against grpc-go {grpc} with {toolchain}");
        go_checked(
            &module,
            toolchain,
            &["get", &format!("google.golang.org/grpc@{grpc}")],
        )?;
        go_checked(&module, toolchain, &["mod", "tidy"])?;
        let binary = out_dir.join(format!("grpc-echo-{grpc}-{toolchain}"));
        let out = binary.to_str().context("non-UTF-8 path")?;
        go_checked(&module, toolchain, &["build", "-o", out, "."])?;
        binaries.push(binary);
    }
    // gin-front against each gin version, likewise (its go.mod pins the newest gin).
    for (gin, toolchain) in GIN_VERSIONS {
        let module = out_dir.join(format!("gin-front-{gin}"));
        std::fs::create_dir_all(&module)?;
        for file in ["main.go", "go.mod", "go.sum"] {
            std::fs::copy(
                workspace_root().join("examples/gin-front").join(file),
                module.join(file),
            )?;
        }
        eprintln!("xtask: building examples/gin-front against gin {gin} with {toolchain}");
        go_checked(
            &module,
            toolchain,
            &["get", &format!("github.com/gin-gonic/gin@{gin}")],
        )?;
        let binary = out_dir.join(format!("gin-front-{gin}-{toolchain}"));
        let out = binary.to_str().context("non-UTF-8 path")?;
        go_checked(&module, toolchain, &["build", "-o", out, "."])?;
        binaries.push(binary);
    }
    let output = cargo()
        .args([
            "run",
            "--quiet",
            "--package",
            "wirespan",
            "--bin",
            "wirespan",
            "--",
            "go-offsets",
        ])
        .args(&binaries)
        .current_dir(workspace_root())
        .output()
        .context("cannot run wirespan go-offsets")?;
    if !output.status.success() {
        bail!(
            "wirespan go-offsets failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let table = workspace_root().join("collector/src/golang/offsets.json");
    std::fs::write(&table, &output.stdout)?;
    eprintln!("xtask: wrote {}", table.display());
    Ok(())
}

/// The decoder fuzz targets of collector/fuzz, each for a bounded time (`WIRESPAN_FUZZ_SECONDS`,
/// default 20). New inputs go to a corpus in the cache, beside the committed seeds, so longer
/// runs (`cargo fuzz run <target>` by hand) pick up where these left off.
fn fuzz() -> anyhow::Result<()> {
    const TARGETS: [&str; 7] = [
        "http1", "http2", "hpack", "events", "redis", "postgres", "mysql",
    ];
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
