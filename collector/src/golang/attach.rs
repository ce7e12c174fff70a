//! Finding Go programs and attaching the Go uprobes to them. At start the agent scans /proc;
//! every executable is examined once per inode (programs of one binary share one attachment),
//! and each process of a usable binary gets its layout written into `GO_PROCS`. A binary whose
//! layout cannot be determined is skipped with one report line; its syscalls are still traced.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::HashMap as BpfHashMap,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use wirespan_shared::GoOffsets;

use super::GoBinary;
use crate::load::error_chain;

pub const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";
const RESPONSE_ITAB: &str = "go:itab.*net/http.response,net/http.ResponseWriter";
const MEMBERS: [(&str, &str); 6] = [
    ("runtime.g", "goid"),
    ("net/http.Request", "Method"),
    ("net/http.Request", "URL"),
    ("net/http.Request", "Host"),
    ("net/url.URL", "Path"),
    ("net/http.response", "status"),
];

/// One line of the start-up report per Go binary found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoReport {
    pub binary: PathBuf,
    pub pids: Vec<u32>,
    /// `go1.22.12`, when the build info was readable.
    pub go_version: Option<String>,
    /// None when attached; otherwise why the binary was skipped.
    pub skipped: Option<String>,
}

impl std::fmt::Display for GoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.go_version.as_deref().unwrap_or("Go");
        let pids: Vec<String> = self.pids.iter().map(ToString::to_string).collect();
        match &self.skipped {
            None => write!(
                f,
                "go: {} ({version}, pids {}): attached {SERVE_HTTP}",
                self.binary.display(),
                pids.join(",")
            ),
            Some(why) => write!(
                f,
                "go: {} ({version}, pids {}): skipped: {why}",
                self.binary.display(),
                pids.join(",")
            ),
        }
    }
}

/// The layout the probes need, or why it cannot be had.
fn offsets_of(binary: &GoBinary) -> Result<GoOffsets, String> {
    let members = binary
        .member_offsets(&MEMBERS)
        .map_err(|e| format!("{e} (struct layouts unknown)"))?;
    let at = |s: &str, m: &str| {
        members
            .get(&(s.to_owned(), m.to_owned()))
            .map(|o| *o as u32)
            .ok_or_else(|| format!("no {s}.{m} in DWARF"))
    };
    Ok(GoOffsets {
        g_goid: at("runtime.g", "goid")?,
        request_method: at("net/http.Request", "Method")?,
        request_url: at("net/http.Request", "URL")?,
        request_host: at("net/http.Request", "Host")?,
        url_path: at("net/url.URL", "Path")?,
        // Without these the start is still traced; only the status stays unknown.
        response_status: at("net/http.response", "status").unwrap_or(0),
        response_itab: binary.symbol_address(RESPONSE_ITAB).unwrap_or(0),
    })
}

/// Processes by executable inode: (dev, inode) → (a path to it, pids).
fn go_candidates(agent_pid: u32) -> HashMap<(u64, u64), (PathBuf, Vec<u32>)> {
    let mut by_inode: HashMap<(u64, u64), (PathBuf, Vec<u32>)> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return by_inode;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == agent_pid {
            continue;
        }
        let exe = entry.path().join("exe");
        // Kernel threads have no exe; processes gone meanwhile fail here too.
        let Ok(meta) = std::fs::metadata(&exe) else {
            continue;
        };
        by_inode
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| (exe, Vec::new()))
            .1
            .push(pid);
    }
    by_inode
}

/// Attach the Go uprobes to every Go program running now (only the `only_pids` ones when that is
/// not empty; the probes also apply the cgroup filter themselves).
pub fn attach_running(ebpf: &mut Ebpf, agent_pid: u32, only_pids: &[u32]) -> Vec<GoReport> {
    let mut reports = Vec::new();
    for (_, (exe, mut pids)) in go_candidates(agent_pid) {
        pids.retain(|p| only_pids.is_empty() || only_pids.contains(p));
        if pids.is_empty() {
            continue;
        }
        pids.sort_unstable();
        // Not a Go program (no build info), or unreadable: nothing to report.
        let Ok(binary) = GoBinary::open(&exe, &[SERVE_HTTP]) else {
            continue;
        };
        let real_path = std::fs::read_link(&exe).unwrap_or_else(|_| exe.clone());
        let mut report = GoReport {
            binary: real_path,
            pids: pids.clone(),
            go_version: Some(binary.build_info.go_version.clone()),
            skipped: None,
        };
        if let Err(why) = attach_binary(ebpf, &binary, &exe, &pids) {
            report.skipped = Some(why);
        }
        reports.push(report);
    }
    reports.sort_by(|a, b| a.binary.cmp(&b.binary));
    reports
}

fn attach_binary(
    ebpf: &mut Ebpf,
    binary: &GoBinary,
    exe: &Path,
    pids: &[u32],
) -> Result<(), String> {
    let Some(probe) = binary.probe(SERVE_HTTP) else {
        return Err(format!(
            "no {SERVE_HTTP} (the program does not serve net/http)"
        ));
    };
    if probe.return_offsets.is_empty() {
        return Err(format!("no RET instruction found in {SERVE_HTTP}"));
    }
    let offsets = offsets_of(binary)?;
    {
        let map = ebpf
            .map_mut("GO_PROCS")
            .ok_or("the probes object has no GO_PROCS map")?;
        let mut procs: BpfHashMap<_, u32, GoOffsets> =
            BpfHashMap::try_from(map).map_err(|e| error_chain(&e))?;
        for pid in pids {
            procs
                .insert(pid, &offsets, 0)
                .map_err(|e| error_chain(&e))?;
        }
    }
    let entry = [UProbeAttachLocation::AbsoluteOffset(probe.entry_offset)];
    let returns: Vec<UProbeAttachLocation<'_>> = probe
        .return_offsets
        .iter()
        .map(|o| UProbeAttachLocation::AbsoluteOffset(*o))
        .collect();
    for (program, points) in [
        ("go_serve_http", &entry[..]),
        ("go_serve_http_return", &returns[..]),
    ] {
        let uprobe: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("the probes object has no program {program}"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| error_chain(&e))?;
        if uprobe.fd().is_err() {
            uprobe.load().map_err(|e| error_chain(&e))?;
        }
        uprobe
            .attach(points.iter().copied(), exe, UProbeScope::AllProcesses)
            .map_err(|e| error_chain(&e))?;
    }
    Ok(())
}
