//! `cargo xtask setup`: make the machine able to build and test wirespan. Each step checks first
//! and only installs what is missing, so a second run takes well under a second.
//!
//! The user-space toolchain comes first and is not a `rust-toolchain.toml` pin: see
//! [`USER_TOOLCHAIN`] for why. [`use_user_toolchain`] installs it and makes every `cargo` and
//! `rustup` that xtask starts use it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

include!("../../build-support/toolchains.rs");

/// What a command needs set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Building and running the agent (`build`, `run`, `demo`): the eBPF toolchain, and Graphviz
    /// for `wirespan map --format svg`. A new user's first command does not wait for what only
    /// the tests use (qemu, the fuzzer, ...).
    Build,
    /// Everything the tests, the kernel matrix and the benchmark use as well.
    All,
}

pub fn run(need: Need) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(cache_dir()).with_context(|| {
        format!(
            "cannot create the cache directory {}",
            cache_dir().display()
        )
    })?;
    nightly_with_rust_src()?;
    bpf_linker()?;
    debian_packages(need)?;
    if need == Need::All {
        musl_target()?;
        cargo_fuzz()?;
    }
    check_go();
    eprintln!("xtask: setup complete in {:.1?}", started.elapsed());
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn output_ok(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Install [`USER_TOOLCHAIN`] (with clippy and rustfmt) if it is missing, and make it the
/// toolchain of every command xtask starts (`RUSTUP_TOOLCHAIN`, which only an explicit
/// `+toolchain` overrides). Runs before anything else, on every xtask command.
pub fn use_user_toolchain() -> anyhow::Result<()> {
    let installed = output_ok(Command::new("rustup").args([
        "run",
        USER_TOOLCHAIN,
        "cargo",
        "clippy",
        "--version",
    ]))
    .is_some()
        && output_ok(Command::new("rustup").args(["run", USER_TOOLCHAIN, "rustfmt", "--version"]))
            .is_some();
    if !installed {
        eprintln!(
            "xtask: installing Rust {USER_TOOLCHAIN} with clippy and rustfmt (about 20 s, once)"
        );
        let status = Command::new("rustup")
            .args([
                "toolchain",
                "install",
                USER_TOOLCHAIN,
                "--profile",
                "minimal",
            ])
            .args(["--component", "clippy", "--component", "rustfmt"])
            // Leave rustup itself and the default toolchain as the machine has them.
            .arg("--no-self-update")
            .env_remove("RUSTUP_TOOLCHAIN")
            .status()
            .context("cannot run rustup (install it from https://rustup.rs)")?;
        if !status.success() {
            bail!("rustup toolchain install {USER_TOOLCHAIN} failed ({status})");
        }
    }
    // SAFETY: called at the start of `main`, before xtask starts any thread, so nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("RUSTUP_TOOLCHAIN", USER_TOOLCHAIN) };
    Ok(())
}

fn nightly_sysroot() -> Option<String> {
    output_ok(Command::new("rustup").args(["run", EBPF_NIGHTLY, "rustc", "--print", "sysroot"]))
}

fn nightly_with_rust_src() -> anyhow::Result<()> {
    let ready = nightly_sysroot().is_some_and(|root| {
        Path::new(&root)
            .join("lib/rustlib/src/rust/library/core")
            .exists()
    });
    if ready {
        return Ok(());
    }
    eprintln!("xtask: installing {EBPF_NIGHTLY} with rust-src (for the eBPF probes)");
    let status = Command::new("rustup")
        .args([
            "toolchain",
            "install",
            EBPF_NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ])
        .status()
        .context("cannot run rustup (install it from https://rustup.rs)")?;
    if !status.success() {
        bail!("rustup toolchain install {EBPF_NIGHTLY} failed ({status})");
    }
    Ok(())
}

/// bpf-linker must link against the nightly's own LLVM: there is no system libLLVM here, and an
/// older LLVM rejects the nightly's bitcode ("Invalid record").
fn bpf_linker() -> anyhow::Result<()> {
    let linker = bpf_linker_bin();
    if output_ok(Command::new(&linker).arg("--version")).is_some() {
        return Ok(());
    }
    let sysroot = nightly_sysroot().context("the eBPF nightly is missing after installing it")?;
    let lib_dir = Path::new(&sysroot).join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The real library is `libLLVM.so.<ver>`; `libLLVM-<ver>.so` beside it is a linker script.
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("{EBPF_NIGHTLY} ships no libLLVM in {}", lib_dir.display()))?;
    // The linker's runpath is <prefix>/lib and it loads the versioned name: link both.
    let prefix_lib = llvm_prefix().join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {libllvm} (about a minute, once)"
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            &format!("^{BPF_LINKER_VERSION}"),
            "--root",
        ])
        .arg(bpf_linker_root())
        .env("LLVM_PREFIX", llvm_prefix())
        // A tool install, outside the workspace.
        .current_dir(cache_dir())
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status})");
    }
    output_ok(Command::new(&linker).arg("--version"))
        .with_context(|| format!("{} was installed but does not run", linker.display()))?;
    Ok(())
}

/// cargo-fuzz version `cargo xtask test` runs the decoder fuzz targets with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The cargo-fuzz binary, kept in the cache by version.
pub fn cargo_fuzz_bin() -> std::path::PathBuf {
    cache_dir()
        .join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"))
        .join("bin")
        .join("cargo-fuzz")
}

fn cargo_fuzz() -> anyhow::Result<()> {
    if output_ok(Command::new(cargo_fuzz_bin()).arg("--version")).is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about 40 s, once)");
    let status = Command::new("cargo")
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
            "--root",
        ])
        .arg(cache_dir().join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}")))
        .current_dir(cache_dir())
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

/// bpftool is the second, independent reader of the kernel's BTF in the offset tests;
/// Graphviz's `dot` renders `wirespan map --format svg`.
/// qemu and a static busybox boot the kernels of `cargo xtask vm-test`, and musl-tools compiles
/// the C of its static builds; nftables makes the NAT tests' rules; nghttp2's client and server
/// speak plain HTTP/2 in the large-message test; redis-server is the multi-host test's join
/// store and, with postgresql and mariadb-server, a server of the database-span test.
fn debian_packages(need: Need) -> anyhow::Result<()> {
    // openssl makes the certificate of the demo's and the bench's HTTPS example.
    let mut wanted = vec![
        ("graphviz", probe("dot", "-V")),
        ("openssl", probe("openssl", "version")),
    ];
    if need == Need::All {
        wanted.extend([
            ("bpftool", probe("bpftool", "version")),
            ("qemu-system-x86", probe("qemu-system-x86_64", "--version")),
            ("busybox-static", dpkg_installed("busybox-static")),
            // nft makes the DNAT rules of the same-host NAT tests (tests/support/nat_lab.rs).
            ("nftables", probe("nft", "--version")),
            // rsvg-convert turns the benchmark's plot into a PNG.
            ("librsvg2-bin", probe("rsvg-convert", "--version")),
            // nghttp and nghttpd: plain HTTP/2 with large bodies in privileged_h2big_nghttp2
            // (the Python grpcio of privileged_h2big is installed by that test itself, with pip).
            ("nghttp2-client", probe("nghttp", "--version")),
            ("nghttp2-server", probe("nghttpd", "--version")),
            // curl (OpenSSL) is the HTTPS client of privileged_tls.
            ("curl", probe("curl", "--version")),
            // redis-server is the join store of the multi-host test (privileged_hosts), run in
            // a network namespace of its own, with no persistence.
            ("redis-server", probe("redis-server", "--version")),
            // PostgreSQL and MariaDB servers (with their psql and mariadb clients) of the
            // database-span test (privileged_db), each started on a loopback port of its own in
            // a temporary directory. Installing them may start Debian's system services on the
            // default ports (5432, 3306); the test never uses those.
            ("postgresql", dpkg_installed("postgresql")),
            ("mariadb-server", dpkg_installed("mariadb-server")),
            // Headless Chromium, driven through chromedriver, is the browser of the trace UI
            // test (privileged_browser).
            ("chromium", probe("chromium", "--version")),
            ("chromium-driver", probe("chromedriver", "--version")),
            // musl-gcc compiles ring's C and assembly (the OTLP exporter's TLS) for the musl
            // builds of vm-test: Debian's gcc alone has no musl headers or x86_64-linux-musl-gcc.
            ("musl-tools", probe(MUSL_CC, "--version")),
        ]);
    }
    let mut missing = Vec::new();
    for (package, probe) in &mut wanted {
        if !probe.output().is_ok_and(|o| o.status.success()) {
            missing.push(*package);
        }
    }
    install_debian(&missing)
}

fn probe(program: &str, arg: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg(arg);
    cmd
}

/// A command that succeeds when the Debian package is installed.
pub fn dpkg_installed(package: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!(
            "[ \"$(dpkg-query -W -f='${{db:Status-Status}}' {package} 2>/dev/null)\" = installed ]"
        ),
    ]);
    cmd
}

/// The static target of the vm-test guests' binaries.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The C compiler for [`MUSL`] (Debian's musl-tools): ring, under the OTLP exporter's TLS, has
/// C and assembly that cc-rs would otherwise look for as `x86_64-linux-musl-gcc`.
pub const MUSL_CC: &str = "musl-gcc";

/// The musl target of the workspace's toolchain: the vm-test guests run static binaries.
fn musl_target() -> anyhow::Result<()> {
    let installed = output_ok(
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(super::workspace_root()),
    )
    .unwrap_or_default();
    if installed.lines().any(|l| l.trim() == MUSL) {
        return Ok(());
    }
    eprintln!("xtask: adding the {MUSL} target");
    let status = Command::new("rustup")
        .args(["target", "add", MUSL])
        .current_dir(super::workspace_root())
        .status()?;
    if !status.success() {
        bail!("rustup target add {MUSL} failed ({status})");
    }
    Ok(())
}

/// Install a Debian package unless `probe` already runs.
pub fn debian_package(package: &str, probe: &mut Command) -> anyhow::Result<()> {
    if probe.output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    install_debian(&[package])
}

/// Install Debian packages, all in one apt-get run (each run costs seconds of its own).
fn install_debian(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !is_root() {
        eprintln!("xtask: missing, and installing needs root: sudo apt-get install {list}");
        return Ok(());
    }
    eprintln!("xtask: installing {list} (Debian packages)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let ok = install().is_ok_and(|s| s.success()) || {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        install().is_ok_and(|s| s.success())
    };
    if !ok {
        bail!("apt-get install {list} failed");
    }
    Ok(())
}

/// Go builds the example services of later steps; only checked here.
fn check_go() {
    match output_ok(Command::new("go").arg("version")) {
        Some(version) => eprintln!("xtask: found {version}"),
        None => eprintln!("xtask: warning: Go is not installed; the Go examples will need it"),
    }
}

/// A self-signed certificate and key for localhost and 127.0.0.1, for the HTTPS examples of
/// the demo and the bench (made once with the openssl command, kept in `dir/tls`).
pub fn certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("tls/cert.pem"), dir.join("tls/key.pem"));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir.join("tls"))?;
    crate::run_checked(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )
    .context("making a certificate for the HTTPS example (needs the openssl command)")?;
    Ok((cert, key))
}
