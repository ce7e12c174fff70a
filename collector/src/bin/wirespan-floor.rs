//! `wirespan-floor`: the benchmark's floor, not part of the agent. It loads only the probes'
//! two empty programs (`floor_tracepoint`, `floor_uprobe`, probes-ebpf/src/floor.rs) from the
//! same embedded object the agent loads, attaches the tracepoint program to the twelve socket
//! syscall tracepoints the agent's data path uses, and the uprobe program at each `--uprobe
//! BINARY:OFFSET`, prints `wirespan-floor: attached` on stderr, and detaches on SIGTERM or
//! SIGINT. `cargo xtask bench` runs it to measure what merely running a BPF program at those
//! points costs, beside no agent and the agent.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use aya::{
    EbpfLoader,
    programs::{TracePoint, UProbe, uprobe::UProbeAttachLocation, uprobe::UProbeScope},
};
use clap::Parser;
use wirespan::load::{error_chain, privilege, tracefs};
use wirespan_shared::names::{
    MAP_EVENTS, MAP_SCRATCH, PROGRAM_FLOOR_TRACEPOINT, PROGRAM_FLOOR_UPROBE,
};

/// The same object the agent embeds (collector/build.rs builds it into OUT_DIR).
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes"));

/// The syscalls whose enter and exit tracepoints the floor takes: those the agent reads and
/// writes socket data in.
const SYSCALLS: [&str; 6] = ["read", "write", "recvfrom", "sendto", "readv", "writev"];

/// The benchmark's floor (used by `cargo xtask bench`; not needed to trace anything): attach
/// programs that do nothing to the 12 tracepoints sys_enter/sys_exit of read, write, recvfrom,
/// sendto, readv and writev and, with --uprobe, at Go functions; print "wirespan-floor:
/// attached" on stderr; detach on SIGTERM or SIGINT.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Also attach an empty uprobe at BINARY:OFFSET (OFFSET: a file offset, decimal or 0x hex);
    /// repeat for several. It fires in every process running BINARY.
    #[arg(long, value_name = "BINARY:OFFSET")]
    uprobe: Vec<String>,
}

fn parse_point(text: &str) -> anyhow::Result<(PathBuf, u64)> {
    let (binary, offset) = text
        .rsplit_once(':')
        .with_context(|| format!("--uprobe {text}: expected BINARY:OFFSET"))?;
    let offset = match offset.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => offset.parse(),
    }
    .with_context(|| format!("--uprobe {text}: bad offset"))?;
    Ok((PathBuf::from(binary), offset))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let points = cli
        .uprobe
        .iter()
        .map(|p| parse_point(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    privilege::check()?;
    tracefs::ensure_mounted()?;
    // Block the stop signals before any thread exists, so sigwait below receives them.
    let signals = stop_signals();
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("{path}: {e}"))?;
    // Every map of the object is created (aya creates them all); the ring buffer needs no more
    // than a page here, since nothing writes to it.
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_SCRATCH, cpus.get())
        .map_max_entries(MAP_EVENTS, 4096)
        .load(PROBES_OBJECT)
        .map_err(|e| anyhow::anyhow!("loading the probes object: {}", error_chain(&e)))?;
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(PROGRAM_FLOOR_TRACEPOINT)
        .context("the probes object has no floor_tracepoint")?
        .try_into()?;
    tracepoint.load()?;
    for syscall in SYSCALLS {
        for side in ["enter", "exit"] {
            let name = format!("sys_{side}_{syscall}");
            tracepoint
                .attach("syscalls", &name)
                .map_err(|e| anyhow::anyhow!("syscalls/{name}: {}", error_chain(&e)))?;
        }
    }
    if !points.is_empty() {
        let uprobe: &mut UProbe = ebpf
            .program_mut(PROGRAM_FLOOR_UPROBE)
            .context("the probes object has no floor_uprobe")?
            .try_into()?;
        uprobe.load()?;
        for (binary, offset) in &points {
            uprobe
                .attach(
                    [UProbeAttachLocation::AbsoluteOffset(*offset)],
                    binary,
                    UProbeScope::AllProcesses,
                )
                .map_err(|e| {
                    anyhow::anyhow!("{}:{offset:#x}: {}", binary.display(), error_chain(&e))
                })?;
        }
    }
    eprintln!(
        "wirespan-floor: attached ({} tracepoints, {} uprobes)",
        SYSCALLS.len() * 2,
        points.len()
    );
    wait(&signals)?;
    drop(ebpf);
    eprintln!("wirespan-floor: detached");
    Ok(())
}

/// SIGTERM and SIGINT, blocked in this thread (and so in any thread started later).
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls only write to it and to this thread's
    // signal mask.
    unsafe {
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
    }
    set
}

fn wait(set: &libc::sigset_t) -> anyhow::Result<()> {
    let mut signal = 0;
    // SAFETY: `set` is initialised and its signals are blocked; sigwait writes `signal`.
    let rc = unsafe { libc::sigwait(set, &raw mut signal) };
    if rc != 0 {
        bail!("sigwait failed: {}", std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}
