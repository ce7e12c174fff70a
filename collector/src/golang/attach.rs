//! Finding Go programs and attaching the Go uprobes to them. At start the agent scans /proc, and
//! later every exec event names a new program; each executable is examined once per inode
//! (programs of one binary share one attachment), and each process of a usable binary gets its
//! layout written into `GO_PROCS` (the probes forget it when the process exits). A binary whose
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
use wirespan_shared::{GoOffsets, GrpcOffsets};

use super::{GoBinary, grpc};
use crate::load::error_chain;

pub const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";
pub const NEWPROC1: &str = "runtime.newproc1";
pub const ROUND_TRIP: &str = "net/http.(*Transport).roundTrip";
pub const GOEXIT1: &str = "runtime.goexit1";
pub const PERSIST_ROUND_TRIP: &str = "net/http.(*persistConn).roundTrip";
/// The first methods of the itabs the probes recognise (see `ITAB_FIRST_METHOD`): found by
/// name in the symbol table or, when stripped, in `.gopclntab`.
const TCP_CONN_METHOD: &str = "net.(*TCPConn).Close";
const RESPONSE_METHOD: &str = "net/http.(*response).Header";
const MEMBERS: [(&str, &str); 13] = [
    ("net/http.response", "conn"),
    ("net/http.conn", "rwc"),
    ("net/http.persistConn", "conn"),
    ("net.conn", "fd"),
    ("internal/poll.FD", "Sysfd"),
    ("net/url.URL", "Host"),
    ("net/http.Response", "StatusCode"),
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
    /// `go1.22.12` and the notable modules (`grpc-go v1.56.3`), when the build info was readable.
    pub go_version: Option<String>,
    /// None when attached; otherwise why the binary was skipped.
    pub skipped: Option<String>,
    /// Where the layout came from when not from the binary's own DWARF, and what was left out.
    pub note: Option<String>,
    /// The functions attached (short names).
    pub functions: Vec<String>,
}

impl std::fmt::Display for GoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.go_version.as_deref().unwrap_or("Go");
        let pids: Vec<String> = self.pids.iter().map(ToString::to_string).collect();
        match &self.skipped {
            None => {
                write!(
                    f,
                    "go: {} ({version}, pids {}): attached {}",
                    self.binary.display(),
                    pids.join(","),
                    self.functions.join(", ")
                )?;
                match &self.note {
                    Some(note) => write!(f, " ({note})"),
                    None => Ok(()),
                }
            }
            Some(why) => write!(
                f,
                "go: {} ({version}, pids {}): skipped: {why}",
                self.binary.display(),
                pids.join(",")
            ),
        }
    }
}

/// The layout the probes need: from DWARF, else from the committed table by Go version and
/// grpc-go version, with notes on where it came from and on what was left out; or why it cannot
/// be had at all.
fn layout_of(binary: &GoBinary) -> Result<(GoOffsets, Vec<String>), String> {
    let mut notes = Vec::new();
    let grpc_version = binary.build_info.module_version(grpc::GRPC_MODULE);
    let (mut offsets, grpc_layout) = match dwarf_layout(binary) {
        Ok(found) => found,
        Err(dwarf_error) => {
            let version = &binary.build_info.go_version;
            let table = super::offsets_table::committed();
            let (entry, known) =
                super::offsets_table::lookup(&table.go, version).ok_or_else(|| {
                    format!("{dwarf_error}, and no offsets table entry near {version}")
                })?;
            notes.push(if known == version {
                format!("layout from the offsets table ({known})")
            } else {
                format!("layout from the offsets table of the nearest known version, {known}")
            });
            let grpc_layout = grpc_version.map(|v| {
                super::offsets_table::lookup_grpc(&table.grpc, v)
                    .map(|(layout, known)| {
                        if known != v {
                            notes.push(format!(
                                "grpc-go layout of the nearest known version, {known}"
                            ));
                        }
                        let mut layout = *layout;
                        layout.status_error_fn = address_of(binary, grpc::STATUS_ERROR_METHOD);
                        (layout.handler_spawn_lo, layout.handler_spawn_hi) =
                            grpc::spawn_site_range(binary);
                        layout
                    })
                    .ok_or_else(|| format!("no offsets table entry near grpc-go {v}"))
            });
            let mut offsets = entry.to_offsets();
            offsets.tcp_conn_close_fn = address_of(binary, TCP_CONN_METHOD);
            offsets.response_header_fn = address_of(binary, RESPONSE_METHOD);
            (offsets, grpc_layout)
        }
    };
    match grpc_layout {
        Some(Ok(layout)) => offsets.grpc = layout,
        Some(Err(why)) => notes.push(format!("gRPC not traced: {why}")),
        None => {}
    }
    Ok((offsets, notes))
}

/// The layout from the binary's DWARF: net/http and runtime (or why it cannot be had), and the
/// grpc-go part when the program uses grpc-go (or why that part cannot be had).
pub fn dwarf_layout(
    binary: &GoBinary,
) -> Result<(GoOffsets, Option<Result<GrpcOffsets, String>>), String> {
    let uses_grpc = binary
        .build_info
        .module_version(grpc::GRPC_MODULE)
        .is_some();
    let mut members = MEMBERS.to_vec();
    let mut functions = Vec::new();
    if uses_grpc {
        members.extend(grpc::MEMBERS);
        functions.extend(grpc::FUNCTIONS);
    }
    let facts = binary
        .inspect(&members, &functions)
        .map_err(|e| format!("{e} (struct layouts unknown)"))?;
    let at = |s: &str, m: &str| {
        facts
            .members
            .get(&(s.to_owned(), m.to_owned()))
            .map(|m| m.offset as u32)
            .ok_or_else(|| format!("no {s}.{m} in DWARF"))
    };
    let offsets = GoOffsets {
        g_goid: at("runtime.g", "goid")?,
        request_method: at("net/http.Request", "Method")?,
        request_url: at("net/http.Request", "URL")?,
        request_host: at("net/http.Request", "Host")?,
        url_path: at("net/url.URL", "Path")?,
        // Without these the start is still traced; only the status stays unknown.
        response_status: at("net/http.response", "status").unwrap_or(0),
        response_header_fn: address_of(binary, RESPONSE_METHOD),
        url_host: at("net/url.URL", "Host")?,
        client_status_code: at("net/http.Response", "StatusCode").unwrap_or(0),
        // Absent (u32::MAX) when the program has no net/http server or client.
        response_conn: at("net/http.response", "conn").unwrap_or(u32::MAX),
        conn_rwc: at("net/http.conn", "rwc").unwrap_or(u32::MAX),
        persist_conn: at("net/http.persistConn", "conn").unwrap_or(u32::MAX),
        conn_fd: at("net.conn", "fd")?,
        // netFD embeds poll.FD first (`pfd`).
        netfd_sysfd: at("internal/poll.FD", "Sysfd")?,
        pad0: 0,
        tcp_conn_close_fn: address_of(binary, TCP_CONN_METHOD),
        grpc: GrpcOffsets::default(),
    };
    let grpc_layout = uses_grpc.then(|| grpc::layout_from_dwarf(&facts, binary));
    Ok((offsets, grpc_layout))
}

/// The executable of a process: a path to it and its (device, inode).
fn executable(pid: u32) -> Option<(PathBuf, (u64, u64))> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    // Kernel threads have no exe; processes gone meanwhile fail here too.
    let meta = std::fs::metadata(&exe).ok()?;
    Some((exe, (meta.dev(), meta.ino())))
}

/// What was decided about one binary (by inode), so each is examined and attached once.
enum Binary {
    /// Not a Go program, or unreadable.
    NotGo,
    /// A Go program whose layout is unknown: reported once, left to syscall tracing.
    Skipped,
    /// Attached; its processes get this layout.
    Attached {
        offsets: Box<GoOffsets>,
        go_version: String,
        path: PathBuf,
        functions: Vec<String>,
    },
}

/// Finds Go programs and attaches the Go uprobes to each binary once.
pub struct GoAttacher {
    agent_pid: u32,
    /// With `--pid`: only these processes.
    only_pids: Vec<u32>,
    binaries: HashMap<(u64, u64), Binary>,
}

impl GoAttacher {
    #[must_use]
    pub fn new(agent_pid: u32, only_pids: &[u32]) -> Self {
        Self {
            agent_pid,
            only_pids: only_pids.to_vec(),
            binaries: HashMap::new(),
        }
    }

    fn wanted(&self, pid: u32) -> bool {
        pid != self.agent_pid && (self.only_pids.is_empty() || self.only_pids.contains(&pid))
    }

    /// Attach to every Go program running now; one report per Go binary.
    pub fn attach_running(&mut self, ebpf: &mut Ebpf) -> Vec<GoReport> {
        let mut by_inode: HashMap<(u64, u64), (PathBuf, Vec<u32>)> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if !self.wanted(pid) {
                    continue;
                }
                if let Some((exe, inode)) = executable(pid) {
                    by_inode
                        .entry(inode)
                        .or_insert_with(|| (exe, Vec::new()))
                        .1
                        .push(pid);
                }
            }
        }
        let mut reports: Vec<GoReport> = by_inode
            .into_iter()
            .filter_map(|(inode, (exe, mut pids))| {
                pids.sort_unstable();
                self.attach(ebpf, inode, &exe, &pids)
            })
            .collect();
        reports.sort_by(|a, b| a.binary.cmp(&b.binary));
        reports
    }

    /// A process started a new program: attach if it is Go (a report for a Go process, unless
    /// its binary was already skipped).
    pub fn attach_pid(&mut self, ebpf: &mut Ebpf, pid: u32) -> Option<GoReport> {
        if !self.wanted(pid) {
            return None;
        }
        let (exe, inode) = executable(pid)?;
        self.attach(ebpf, inode, &exe, &[pid])
    }

    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        inode: (u64, u64),
        exe: &Path,
        pids: &[u32],
    ) -> Option<GoReport> {
        if let Some(known) = self.binaries.get(&inode) {
            // Already decided: a new process of an attached binary only needs its layout entry.
            let Binary::Attached {
                offsets,
                go_version,
                path,
                functions,
            } = known
            else {
                return None;
            };
            let skipped = write_offsets(ebpf, pids, **offsets).err();
            return Some(GoReport {
                binary: path.clone(),
                pids: pids.to_vec(),
                go_version: Some(go_version.clone()),
                skipped,
                note: None,
                functions: functions.clone(),
            });
        }
        // Not a Go program (no build info), or unreadable: nothing to report. The cheap check
        // first, so that the many non-Go programs exec'd on a machine are not read whole.
        let binary = super::looks_like_go(exe)
            .then(|| GoBinary::open(exe, &wanted_functions()).ok())
            .flatten();
        let Some(binary) = binary else {
            self.binaries.insert(inode, Binary::NotGo);
            return None;
        };
        let mut report = GoReport {
            binary: std::fs::read_link(exe).unwrap_or_else(|_| exe.to_path_buf()),
            pids: pids.to_vec(),
            go_version: Some(binary.build_info.versions()),
            skipped: None,
            note: None,
            functions: Vec::new(),
        };
        match attach_binary(ebpf, &binary, exe, pids) {
            Ok(attached) => {
                report.note = (!attached.notes.is_empty()).then(|| attached.notes.join("; "));
                report.functions.clone_from(&attached.functions);
                self.binaries.insert(
                    inode,
                    Binary::Attached {
                        offsets: Box::new(attached.offsets),
                        go_version: binary.build_info.versions(),
                        path: report.binary.clone(),
                        functions: attached.functions,
                    },
                )
            }
            Err(why) => {
                report.skipped = Some(why);
                self.binaries.insert(inode, Binary::Skipped)
            }
        };
        Some(report)
    }
}

fn write_offsets(ebpf: &mut Ebpf, pids: &[u32], offsets: GoOffsets) -> Result<(), String> {
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
    Ok(())
}

/// Attach `entry_program` at the function's entry and `return_program` at each of its RETs.
fn attach_function(
    ebpf: &mut Ebpf,
    exe: &Path,
    probe: &super::FunctionProbe,
    entry_program: &str,
    return_program: &str,
) -> Result<(), String> {
    let entry = [UProbeAttachLocation::AbsoluteOffset(probe.entry_offset)];
    let returns: Vec<UProbeAttachLocation<'_>> = probe
        .return_offsets
        .iter()
        .map(|o| UProbeAttachLocation::AbsoluteOffset(*o))
        .collect();
    for (program, points) in [(entry_program, &entry[..]), (return_program, &returns[..])] {
        if program.is_empty() {
            continue;
        }
        let failed = |e: &dyn std::error::Error| format!("{program}: {}", error_chain(e));
        let uprobe: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("the probes object has no program {program}"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| failed(&e))?;
        if uprobe.fd().is_err() {
            uprobe.load().map_err(|e| failed(&e))?;
        }
        uprobe
            .attach(points.iter().copied(), exe, UProbeScope::AllProcesses)
            .map_err(|e| failed(&e))?;
    }
    Ok(())
}

/// A function's address, 0 when the binary does not have it.
fn address_of(binary: &GoBinary, function: &str) -> u64 {
    binary.function(function).map_or(0, |f| f.address)
}

/// Every function the probes may go on, or whose address they compare with.
fn wanted_functions() -> Vec<&'static str> {
    let mut wanted = vec![
        SERVE_HTTP,
        NEWPROC1,
        ROUND_TRIP,
        GOEXIT1,
        PERSIST_ROUND_TRIP,
        TCP_CONN_METHOD,
        RESPONSE_METHOD,
        grpc::STATUS_ERROR_METHOD,
    ];
    wanted.extend(grpc::PROBES.iter().map(|(name, _, _)| *name));
    wanted.extend(grpc::SPAWN_SITES);
    wanted
}

/// What `attach_binary` did.
struct Attached {
    offsets: GoOffsets,
    notes: Vec<String>,
    functions: Vec<String>,
}

/// The last path segment of a Go function name, for the report (`(*Transport).roundTrip`).
fn short_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

fn attach_binary(
    ebpf: &mut Ebpf,
    binary: &GoBinary,
    exe: &Path,
    pids: &[u32],
) -> Result<Attached, String> {
    // Each probed function with its entry and return programs ("" when only the entry is
    // needed), and whether its layout is known.
    let (offsets, mut notes) = layout_of(binary)?;
    let grpc_known = offsets.grpc.field_size != 0;
    let mut plan: Vec<(&str, &str, &str)> = vec![
        (SERVE_HTTP, "go_serve_http", "go_serve_http_return"),
        (ROUND_TRIP, "go_round_trip", "go_round_trip_return"),
        (PERSIST_ROUND_TRIP, "go_persist_conn_round_trip", ""),
    ];
    if grpc_known {
        plan.extend(grpc::PROBES);
    }
    let present: Vec<_> = plan
        .into_iter()
        .filter_map(|(name, entry, ret)| Some((binary.probe(name)?, entry, ret)))
        .collect();
    if !present
        .iter()
        .any(|(p, _, _)| p.name == SERVE_HTTP || p.name.starts_with(grpc::GRPC_MODULE))
    {
        return Err(format!(
            "neither {SERVE_HTTP} nor grpc-go's server or client (the program serves no requests wirespan reads)"
        ));
    }
    // Goroutine ancestry: without it only the handler's own goroutine is tied to its request.
    let spawn = binary
        .probe(NEWPROC1)
        .filter(|p| !p.return_offsets.is_empty())
        .ok_or_else(|| format!("no {NEWPROC1} with a RET instruction"))?;
    attach_function(ebpf, exe, &spawn, "go_newproc1", "go_newproc1_return")?;
    let mut functions = vec![short_name(NEWPROC1)];
    // Goroutine ends let both sides forget per-goroutine state; without them the bounded
    // tables still evict the oldest entries.
    if let Some(exit) = binary.probe(GOEXIT1) {
        attach_function(ebpf, exe, &exit, "go_goexit", "")?;
        functions.push(short_name(GOEXIT1));
    } else {
        notes.push(format!("no {GOEXIT1}: goroutine ends not seen"));
    }
    for (probe, entry, ret) in present {
        if !ret.is_empty() && probe.return_offsets.is_empty() {
            notes.push(format!(
                "no RET instruction found in {}: not attached",
                probe.name
            ));
            continue;
        }
        attach_function(ebpf, exe, &probe, entry, ret)?;
        functions.push(short_name(&probe.name));
    }
    // Last: until a process has its layout entry, the probes above ignore it, so a failure
    // part-way leaves nothing half-traced.
    write_offsets(ebpf, pids, offsets)?;
    Ok(Attached {
        offsets,
        notes,
        functions,
    })
}
