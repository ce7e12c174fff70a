//! `cargo xtask vm-test [--kernel NAME]...`: wirespan's privileged smoke tests inside other
//! kernels. This machine's kernel refuses kprobes and fentry; Debian's kernels allow both, so
//! each is booted under qemu with software emulation (TCG: the paravirtual KVM here crashes
//! stock kernels) to a busybox initramfs that carries static (musl) builds of the agent and the
//! test binaries, and runs them as root with /proc, /sys, tracefs, debugfs, bpffs and devtmpfs
//! mounted and loopback up. Each test's exit status comes back on the serial console; the host
//! command fails if any guest test fails, and then shows the guest's console log.
//!
//! Kernels come from Debian's archive (`apt-get download`, unpacked with `dpkg -x`, never
//! installed) and cached by package name (only the kernel image is kept); the initramfs is
//! rebuilt each run from the current binaries. Kernels boot in parallel, up to the number of
//! cores.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    cargo, run_checked,
    setup::{self, MUSL, MUSL_CC},
    workspace_root,
};

/// A Debian kernel: the package pinned (the cache key) and the series to fall back on when the
/// archive has moved past it.
struct KernelSpec {
    name: &'static str,
    package: &'static str,
    series: &'static str,
}

const KERNELS: [KernelSpec; 2] = [
    KernelSpec {
        name: "6.1",
        package: "linux-image-6.1.0-56-amd64-unsigned",
        series: "linux-image-6.1.0-",
    },
    KernelSpec {
        name: "6.12",
        package: "linux-image-6.12.111+deb12-amd64-unsigned",
        series: "linux-image-6.12.",
    },
];

/// Test binaries run in every guest, with the tests left out (they need programs the minimal
/// guest does not have: Python, or Go to build with).
const GUEST_TESTS: [(&str, &[&str]); 3] = [
    ("privileged_connect", &[]),
    (
        "privileged_capture",
        &[
            "--skip",
            "privileged_http_keep_alive_bytes_order_sequence_numbers_and_lifecycle",
            "--skip",
            "privileged_pid_and_cgroup_filters_keep_only_the_chosen_processes",
            "--skip",
            "privileged_recording_replays_unprivileged_to_the_events_seen_live",
        ],
    ),
    (
        "privileged_go",
        &[
            "--exact",
            "privileged_go_program_started_after_the_agent_is_found_by_its_exec_and_traced",
        ],
    ),
];

/// A guest that has not finished by then is stopped and counted as failed.
const GUEST_TIMEOUT: Duration = Duration::from_mins(20);

/// `cargo xtask vm-test [--kernel NAME]...` (every kernel when none is named).
pub fn run(names: &[String]) -> anyhow::Result<()> {
    let specs: Vec<&KernelSpec> = if names.is_empty() {
        KERNELS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                KERNELS.iter().find(|k| k.name == n).with_context(|| {
                    let known: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
                    format!("unknown kernel {n:?}; known: {}", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    which("qemu-system-x86_64", "qemu-system-x86")?;
    if musl_cc_is_ours() {
        which(MUSL_CC, "musl-tools")?;
    }
    let busybox = static_busybox()?;
    let dir = setup::cache_dir().join("vm");
    std::fs::create_dir_all(&dir)?;
    let kernels: Vec<(String, PathBuf)> = specs
        .iter()
        .map(|spec| Ok((spec.name.to_owned(), fetch_kernel(spec)?)))
        .collect::<anyhow::Result<_>>()?;
    let initramfs = dir.join("initramfs.cpio");
    build_initramfs(&busybox, &initramfs)?;

    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut outcomes = Vec::new();
    for batch in kernels.chunks(cores) {
        let smp = (cores / batch.len()).max(1);
        let guests: Vec<_> = batch
            .iter()
            .map(|(name, vmlinuz)| {
                let log = dir.join(format!("console-{name}.log"));
                eprintln!("xtask: booting Debian {name} under qemu (TCG, {smp} CPU)");
                Guest::boot(name, vmlinuz, &initramfs, &log, smp)
            })
            .collect::<anyhow::Result<_>>()?;
        for guest in guests {
            outcomes.push(guest.wait());
        }
    }
    report(&outcomes)
}

/// Fail with the Debian package to install when `program` is missing (setup installs both).
fn which(program: &str, package: &str) -> anyhow::Result<()> {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!("{program} is missing: apt-get install {package} (cargo xtask setup does, as root)");
    }
    Ok(())
}

/// The variable cc-rs takes the musl target's C compiler from.
const MUSL_CC_VAR: &str = "CC_x86_64_unknown_linux_musl";

/// Whether the musl build uses [`MUSL_CC`]: a compiler of your own in [`MUSL_CC_VAR`] wins.
fn musl_cc_is_ours() -> bool {
    std::env::var_os(MUSL_CC_VAR).is_none_or(|cc| cc.is_empty())
}

/// Busybox built static (Debian's busybox-static), the guest's shell and tools.
fn static_busybox() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from("/bin/busybox");
    // A dynamic build names its loader; the static one has none.
    let is_static = std::fs::read(&path).is_ok_and(|elf| {
        !elf.windows(b"/lib64/ld-linux".len())
            .any(|w| w == b"/lib64/ld-linux")
    });
    if !is_static {
        bail!("no static busybox at /bin/busybox: apt-get install busybox-static");
    }
    Ok(path)
}

/// The kernel image of `spec`, downloaded and unpacked once into the cache.
fn fetch_kernel(spec: &KernelSpec) -> anyhow::Result<PathBuf> {
    let kernels = setup::cache_dir().join("kernels");
    for package in [Some(spec.package.to_owned()), newest_of_series(spec.series)]
        .into_iter()
        .flatten()
    {
        let vmlinuz = kernels.join(&package).join("vmlinuz");
        if vmlinuz.exists() {
            return Ok(vmlinuz);
        }
        eprintln!(
            "xtask: fetching {package} (once; cached in {})",
            kernels.display()
        );
        match download_kernel(&package, &vmlinuz) {
            Ok(()) => return Ok(vmlinuz),
            Err(e) => eprintln!("xtask: {package}: {e:#}"),
        }
    }
    bail!(
        "cannot fetch a Debian {} kernel ({} or the newest of {}*)",
        spec.name,
        spec.package,
        spec.series
    )
}

/// The newest `*-amd64-unsigned` package of a kernel series the archive offers now.
fn newest_of_series(series: &str) -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", series])
        .output()
        .ok()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.ends_with("-amd64-unsigned") && !n.contains("-cloud-") && !n.contains("-rt-"))
        .map(str::to_owned)
        .collect();
    let key = |n: &String| -> Vec<u64> {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    names.sort_by_key(key);
    names.pop()
}

fn download_kernel(package: &str, vmlinuz: &Path) -> anyhow::Result<()> {
    let work = setup::cache_dir().join("kernels").join(".download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&work)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        // The package lists may predate the package.
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        if !download() {
            bail!("apt-get download {package} failed");
        }
    }
    let deb = std::fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = work.join("x");
    run_checked(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = std::fs::read_dir(unpacked.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the package has no boot/vmlinuz-*")?;
    std::fs::create_dir_all(vmlinuz.parent().context("no parent")?)?;
    std::fs::copy(&image, vmlinuz)?;
    // Only the image is kept: the guests load no modules.
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Build the agent and the guest test binaries for musl (static); (agent, [(test, binary)]).
fn build_static() -> anyhow::Result<(PathBuf, Vec<(String, PathBuf)>)> {
    eprintln!("xtask: building the agent and the guest tests for {MUSL}");
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--target",
        MUSL,
        "--package",
        "wirespan",
        "--bin",
        "wirespan",
        "--message-format=json-render-diagnostics",
    ]);
    for (test, _) in GUEST_TESTS {
        cmd.args(["--test", test]);
    }
    if musl_cc_is_ours() {
        // ring (under the OTLP exporter's TLS) compiles C and assembly for the target.
        cmd.env(MUSL_CC_VAR, MUSL_CC);
    }
    let out = cmd
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo build")?;
    if !out.status.success() {
        bail!("cargo build --target {MUSL} failed");
    }
    let mut agent = None;
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        if msg["profile"]["test"] == true {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        } else if name == "wirespan" {
            agent = Some(PathBuf::from(exe));
        }
    }
    Ok((agent.context("cargo built no wirespan binary")?, tests))
}

/// examples/http-hello without cgo, so it runs where there is no libc.
fn build_go_hello(out: &Path) -> anyhow::Result<()> {
    run_checked(
        Command::new("go")
            .args(["build", "-o"])
            .arg(out)
            .arg(".")
            .env("CGO_ENABLED", "0")
            .current_dir(workspace_root().join("examples/http-hello")),
    )
}

/// A file for the initramfs: where it goes in the guest, and its bytes.
struct GuestFile {
    path: String,
    data: Vec<u8>,
    mode: u32,
}

/// `strip`ped bytes of a binary (the debug builds are large; the guest keeps all in RAM).
fn stripped(binary: &Path, scratch: &Path) -> anyhow::Result<Vec<u8>> {
    let out = scratch.join(binary.file_name().context("no file name")?);
    run_checked(Command::new("strip").arg("-o").arg(&out).arg(binary))?;
    Ok(std::fs::read(&out)?)
}

/// The guest's /init: mount what the agent needs, print the agent's start-up report (which
/// mode attached for each hook), run each test binary, and say how each ended. Nothing is
/// mounted over /tmp: the root is already in memory and writable, and the binaries may sit
/// under /tmp (a clone there keeps its absolute paths).
fn init_script(agent: &str, tests: &[(String, String)], tmpdir: &str) -> String {
    let mut script = format!(
        "#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mkdir -p {tmpdir}
ip link set lo up
export CI=true HOME=/tmp PATH=/bin WIRESPAN_REQUIRE_ATTACH_MODES=kprobe,fentry,tp_btf,tracepoint
export WIRESPAN_GO_HELLO=/go/http-hello
echo \"WIRESPAN-KERNEL $(uname -r)\"
{agent} events --duration 1 > /dev/null
"
    );
    for (name, command) in tests {
        let _ = write!(
            script,
            "echo \"WIRESPAN-BEGIN {name}\"\n{command}\necho \"WIRESPAN-EXIT {name} $?\"\n"
        );
    }
    script.push_str("echo WIRESPAN-DONE\npoweroff -f\n");
    script
}

fn build_initramfs(busybox: &Path, out: &Path) -> anyhow::Result<()> {
    let (agent, tests) = build_static()?;
    let scratch = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let hello = scratch.join("http-hello");
    build_go_hello(&hello)?;
    // The test binaries name the agent and their scratch directory by absolute host paths:
    // the guest gets both at the same paths.
    let agent_path = agent.to_string_lossy().into_owned();
    let tmpdir = workspace_root().join("target/tmp");
    let mut files = vec![
        GuestFile {
            path: "bin/busybox".into(),
            data: std::fs::read(busybox)?,
            mode: 0o755,
        },
        GuestFile {
            path: agent_path.trim_start_matches('/').to_owned(),
            data: stripped(&agent, &scratch)?,
            mode: 0o755,
        },
        GuestFile {
            path: "go/http-hello".into(),
            data: std::fs::read(&hello)?,
            mode: 0o755,
        },
    ];
    let mut commands = Vec::new();
    for (name, args) in GUEST_TESTS {
        let binary = tests
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b)
            .with_context(|| format!("cargo built no {name}"))?;
        files.push(GuestFile {
            path: format!("tests/{name}"),
            data: stripped(binary, &scratch)?,
            mode: 0o755,
        });
        commands.push((
            name.to_owned(),
            format!("/tests/{name} --test-threads=1 {}", args.join(" ")),
        ));
    }
    files.push(GuestFile {
        path: "init".into(),
        data: init_script(&agent_path, &commands, &tmpdir.to_string_lossy()).into_bytes(),
        mode: 0o755,
    });
    std::fs::write(out, cpio(&files))?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A `newc` cpio archive (the initramfs format) of `files`, with their parent directories and
/// the mount points the init script uses.
fn cpio(files: &[GuestFile]) -> Vec<u8> {
    let mut dirs: Vec<String> = ["proc", "sys", "dev", "tmp", "bin", "root"]
        .map(str::to_owned)
        .to_vec();
    for f in files {
        let mut parent = Path::new(&f.path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut out = Vec::new();
    let mut ino = 1;
    for dir in &dirs {
        cpio_entry(&mut out, ino, dir, 0o040_755, &[]);
        ino += 1;
    }
    for f in files {
        cpio_entry(&mut out, ino, &f.path, 0o100_000 | f.mode, &f.data);
        ino += 1;
    }
    cpio_entry(&mut out, ino, "TRAILER!!!", 0, &[]);
    out
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let pad = |out: &mut Vec<u8>| {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    let size = u32::try_from(data.len()).expect("a guest file under 4 GiB");
    let name_size = u32::try_from(name.len() + 1).expect("a short name");
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    // Magic, then ino, mode, uid, gid, nlink, mtime, filesize, dev major/minor, rdev
    // major/minor, name size, check: eight hex digits each.
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_size, 0];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

/// A booted guest.
struct Guest {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    started: Instant,
}

/// What one guest said.
struct Outcome {
    name: String,
    log: PathBuf,
    console: String,
    elapsed: Duration,
    timed_out: bool,
}

impl Guest {
    fn boot(
        name: &str,
        vmlinuz: &Path,
        initramfs: &Path,
        log: &Path,
        smp: usize,
    ) -> anyhow::Result<Self> {
        let console = std::fs::File::create(log)?;
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2G"])
            .args(["-smp", &smp.to_string()])
            .args(["-nographic", "-no-reboot", "-kernel"])
            .arg(vmlinuz)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", "console=ttyS0 quiet loglevel=3 panic=-1"])
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .context("cannot start qemu-system-x86_64")?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            started: Instant::now(),
        })
    }

    fn wait(mut self) -> Outcome {
        let mut timed_out = false;
        while self.child.try_wait().ok().flatten().is_none() {
            if self.started.elapsed() > GUEST_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let console = String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default())
            .replace('\r', "");
        Outcome {
            name: self.name,
            log: self.log,
            console,
            elapsed: self.started.elapsed(),
            timed_out,
        }
    }
}

impl Outcome {
    /// Each test binary's exit status (None: it never ended).
    fn exits(&self) -> BTreeMap<&'static str, Option<i32>> {
        GUEST_TESTS
            .iter()
            .map(|(name, _)| {
                let prefix = format!("WIRESPAN-EXIT {name} ");
                let code = self
                    .console
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&prefix)?.trim().parse().ok());
                (*name, code)
            })
            .collect()
    }

    /// hook → the mode it attached in, from the start-up report.
    fn modes(&self) -> BTreeMap<String, String> {
        self.console
            .lines()
            .filter_map(|l| {
                let rest = l.trim().strip_prefix("wirespan: hook ")?;
                let (hook, attached) = rest.split_once(": attached ")?;
                let mode = attached.split(' ').next()?;
                Some((hook.to_owned(), mode.to_owned()))
            })
            .collect()
    }

    fn passed(&self) -> bool {
        !self.timed_out
            && self.console.contains("WIRESPAN-DONE")
            && self.exits().values().all(|c| *c == Some(0))
    }

    fn release(&self) -> &str {
        // The first console line may carry the firmware's terminal escapes before ours.
        self.console
            .lines()
            .find_map(|l| Some(l.split_once("WIRESPAN-KERNEL ")?.1.trim()))
            .unwrap_or("?")
    }
}

/// Print a table of kernels, modes and results; fail (showing the console) if a guest failed.
fn report(outcomes: &[Outcome]) -> anyhow::Result<()> {
    eprintln!("xtask: kernel matrix");
    for o in outcomes {
        let modes: Vec<String> = o
            .modes()
            .into_iter()
            .map(|(hook, mode)| format!("{hook}={mode}"))
            .collect();
        let tests: Vec<String> = o
            .exits()
            .into_iter()
            .map(|(name, code)| match code {
                Some(0) => format!("{name} ok"),
                Some(c) => format!("{name} FAILED ({c})"),
                None => format!("{name} did not finish"),
            })
            .collect();
        eprintln!(
            "xtask:   {} ({}, {:.0?}): {}; {}",
            o.name,
            o.release(),
            o.elapsed,
            modes.join(" "),
            tests.join(", ")
        );
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    for o in &failed {
        eprintln!(
            "xtask: ---- console of the {} guest ({}){} ----\n{}",
            o.name,
            o.log.display(),
            if o.timed_out {
                ", stopped after the timeout"
            } else {
                ""
            },
            o.console
        );
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|o| o.name.as_str()).collect();
        bail!("guest tests failed on {}", names.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_four_byte_aligned() {
        let archive = cpio(&[GuestFile {
            path: "a/b".into(),
            data: b"xyz".to_vec(),
            mode: 0o755,
        }]);
        assert!(archive.starts_with(b"070701"));
        assert!(archive.len().is_multiple_of(4));
        let text = String::from_utf8_lossy(&archive);
        // Parent directories come first, then the file, then the trailer.
        let (a, b, t) = (
            text.find("a\0").unwrap(),
            text.find("a/b\0").unwrap(),
            text.find("TRAILER!!!").unwrap(),
        );
        assert!(a < b && b < t);
        assert!(text.contains("xyz"));
    }
}
