//! Attaching the Go uprobes: carries out `golang::discover`'s plan in the kernel. At start the
//! agent scans /proc, and later every exec event names a new program; each executable is
//! examined once per inode (programs of one binary share one attachment), and each process of a
//! usable binary gets its layout written into `GO_PROCS` (the probes forget it when the process
//! exits). A binary whose layout cannot be determined is skipped with one report line; its
//! syscalls are still traced.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aya::sys::{UProbeMultiFeature, is_uprobe_multi_supported};
use aya::{
    Ebpf,
    maps::HashMap as BpfHashMap,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};
use wirespan_shared::GoOffsets;
use wirespan_shared::names::{MAP_GO_PROCS, MULTI_TWINS};

use super::{
    error_chain,
    serving::{Keep, ServingTier, has_open_connections},
};
use crate::golang::{
    FunctionProbe, GoBinary,
    discover::{self, GoReport, PlanError, Tier, executable, short_name},
};

/// Why a planned Go binary could not be attached; the text is the report's `skipped:` reason.
#[derive(Debug, thiserror::Error)]
pub enum GoAttachError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the probes object has no {0}")]
    Missing(String),
    #[error("{program}: {reason}")]
    Program {
        program: &'static str,
        reason: String,
    },
    #[error("GO_PROCS: {0}")]
    Map(String),
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
        serving: ServingTier,
    },
}

/// Finds Go programs and attaches the Go uprobes to each binary once.
pub struct GoAttacher {
    agent_pid: u32,
    /// With `--pid`: only these processes.
    only_pids: Vec<u32>,
    binaries: HashMap<(u64, u64), Binary>,
    /// Process → its binary, for the processes of attached binaries.
    binary_of: HashMap<u32, (u64, u64)>,
    /// How long a binary's serving tier stays on while none of its processes calls out; None:
    /// always on.
    quiet_after: Option<Duration>,
}

impl GoAttacher {
    #[must_use]
    pub fn new(agent_pid: u32, only_pids: &[u32], quiet_after: Option<Duration>) -> Self {
        Self {
            agent_pid,
            only_pids: only_pids.to_vec(),
            binaries: HashMap::new(),
            binary_of: HashMap::new(),
            quiet_after,
        }
    }

    /// Process `pid` made an outbound call: its binary's serving tier stays on from now on, and
    /// goes back on if it was taken off. A report line when something changed.
    pub fn calls_out(&mut self, ebpf: &mut Ebpf, pid: u32) -> Option<String> {
        let inode = self.binary_of.get(&pid)?;
        let Some(Binary::Attached { serving, path, .. }) = self.binaries.get_mut(inode) else {
            return None;
        };
        serving.keep(Keep::CallsOut);
        serving.ensure_on(ebpf, path).map(|result| match result {
            Ok(()) => format!(
                "go: {}: serving probes back on: pid {pid} calls out",
                path.display()
            ),
            Err(e) => format!(
                "go: {}: serving probes could not go back on: {e}",
                path.display()
            ),
        })
    }

    /// Process `pid` served HTTP while its routes were unknown: its binary's serving tier goes
    /// back on (not for good: it comes off again after a quiet period), so the next request's
    /// `ServeHTTP` hit names its `*http.Server` and the route table can be read. A report line
    /// when the tier went back on.
    pub fn wants_routes(&mut self, ebpf: &mut Ebpf, pid: u32) -> Option<String> {
        let inode = self.binary_of.get(&pid)?;
        let Some(Binary::Attached { serving, path, .. }) = self.binaries.get_mut(inode) else {
            return None;
        };
        serving.ensure_on(ebpf, path).map(|result| match result {
            Ok(()) => format!(
                "go: {}: serving probes back on for a while: pid {pid} serves HTTP, its routes are not read yet",
                path.display()
            ),
            Err(e) => format!(
                "go: {}: serving probes could not go back on: {e}",
                path.display()
            ),
        })
    }

    /// Take the serving tier off every binary whose processes served for `quiet_after`
    /// without calling out; a report line for each is printed once its probes are off (that
    /// takes a while: see `serving`).
    pub fn retire_quiet(&mut self, ebpf: &mut Ebpf) {
        let Some(quiet_after) = self.quiet_after else {
            return;
        };
        for binary in self.binaries.values_mut() {
            if let Binary::Attached { serving, path, .. } = binary {
                let path = path.display().to_string();
                serving.off_if_quiet(ebpf, quiet_after, move |functions| {
                    format!(
                        "go: {path}: serving probes off (no outbound call in {} s): {}",
                        quiet_after.as_secs(),
                        functions.join(", ")
                    )
                });
            }
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
        if self.binary_of.len() >= 65_536 {
            self.binary_of.clear();
        }
        for &pid in pids {
            self.binary_of.insert(pid, inode);
        }
        if let Some(known) = self.binaries.get_mut(&inode) {
            // Already decided: a new process of an attached binary only needs its layout entry,
            // and the serving tier on (nothing is known yet of what it will do).
            let Binary::Attached {
                offsets,
                go_version,
                path,
                functions,
                serving,
            } = known
            else {
                return None;
            };
            let mut skipped = write_offsets(ebpf, pids, **offsets)
                .err()
                .map(|e| e.to_string());
            if let Some(Err(e)) = serving.ensure_on(ebpf, path) {
                skipped = Some(e.to_string());
            }
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
        let binary = crate::golang::looks_like_go(exe)
            .then(|| GoBinary::open(exe, &discover::wanted_functions()).ok())
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
            Ok(mut attached) => {
                report.note = (!attached.notes.is_empty()).then(|| attached.notes.join("; "));
                report.functions.clone_from(&attached.functions);
                if attached.offsets.g_parent_goid == 0 {
                    // Without parentGoid, only the spawn probe ties a child's call to its
                    // handler.
                    attached.serving.keep(Keep::NoAncestry);
                }
                if self.quiet_after.is_none() {
                    attached.serving.keep(Keep::Asked);
                }
                if pids.iter().any(|&pid| has_open_connections(pid)) {
                    // Their HTTP/2 header tables (HPACK) predate the agent: only the header
                    // probes can read such connections' requests.
                    attached.serving.keep(Keep::OlderConnections);
                }
                self.binaries.insert(
                    inode,
                    Binary::Attached {
                        offsets: Box::new(attached.offsets),
                        go_version: binary.build_info.versions(),
                        path: report.binary.clone(),
                        functions: attached.functions,
                        serving: attached.serving,
                    },
                )
            }
            Err(why) => {
                report.skipped = Some(why.to_string());
                self.binaries.insert(inode, Binary::Skipped)
            }
        };
        Some(report)
    }
}

fn write_offsets(ebpf: &mut Ebpf, pids: &[u32], offsets: GoOffsets) -> Result<(), GoAttachError> {
    let map = ebpf
        .map_mut(MAP_GO_PROCS)
        .ok_or_else(|| GoAttachError::Missing(format!("{MAP_GO_PROCS} map")))?;
    let mut procs: BpfHashMap<_, u32, GoOffsets> =
        BpfHashMap::try_from(map).map_err(|e| GoAttachError::Map(error_chain(&e)))?;
    for pid in pids {
        procs
            .insert(pid, &offsets, 0)
            .map_err(|e| GoAttachError::Map(error_chain(&e)))?;
    }
    Ok(())
}

/// Attach `entry_program` at the function's entry and `return_program` at each of its RETs:
/// as one multi-uprobe link each where the kernel has them (see `multi_twin`), else one uprobe
/// per point. The links made, by program, so they can be taken off again.
pub(super) fn attach_function(
    ebpf: &mut Ebpf,
    exe: &Path,
    probe: &FunctionProbe,
    entry_program: &'static str,
    return_program: &'static str,
) -> Result<Vec<Link>, GoAttachError> {
    let mut links = Vec::with_capacity(2);
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
        let twin = multi_twin(program);
        if let Some(twin) = twin
            && let Ok(id) = attach_points(ebpf, exe, twin, points)
        {
            links.push((twin, id));
            continue;
        }
        let id = attach_points(ebpf, exe, program, points)?;
        links.push((program, id));
        if twin.is_some() {
            // The twin failed where the single-point program works: single-point from now on.
            MULTI_BROKEN.store(true, Ordering::Relaxed);
        }
    }
    Ok(links)
}

/// A program's link: which program, and the link's id in it.
pub(super) type Link = (&'static str, UProbeLinkId);

/// Set when a multi-uprobe twin failed although the kernel reported support.
static MULTI_BROKEN: AtomicBool = AtomicBool::new(false);

/// The multi-uprobe twin of a Go program (probes-ebpf/src/multi.rs), when this kernel attaches
/// multi-uprobe links (6.6 and later; probed once). Detaching per-point uprobes waits one RCU
/// grace period per point, so an agent attached to a few Go binaries took about 10 s to stop;
/// a multi link detaches all of its points at once.
fn multi_twin(program: &'static str) -> Option<&'static str> {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    let supported = *SUPPORTED.get_or_init(|| {
        is_uprobe_multi_supported(UProbeMultiFeature::LinkCreation).unwrap_or(false)
    });
    if !supported || MULTI_BROKEN.load(Ordering::Relaxed) {
        return None;
    }
    MULTI_TWINS
        .iter()
        .find(|(single, _)| *single == program)
        .map(|(_, multi)| *multi)
}

/// Load `program` if it is not yet, and attach it at `points` of `exe` in every process.
fn attach_points(
    ebpf: &mut Ebpf,
    exe: &Path,
    program: &'static str,
    points: &[UProbeAttachLocation<'_>],
) -> Result<UProbeLinkId, GoAttachError> {
    let failed = |e: &dyn std::error::Error| GoAttachError::Program {
        program,
        reason: error_chain(e),
    };
    let uprobe: &mut UProbe = ebpf
        .program_mut(program)
        .ok_or_else(|| GoAttachError::Missing(format!("program {program}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| failed(&e))?;
    if uprobe.fd().is_err() {
        uprobe.load().map_err(|e| failed(&e))?;
    }
    uprobe
        .attach(points.iter().copied(), exe, UProbeScope::AllProcesses)
        .map_err(|e| failed(&e))
}

/// What `attach_binary` did.
struct Attached {
    offsets: GoOffsets,
    notes: Vec<String>,
    functions: Vec<String>,
    serving: ServingTier,
}

fn attach_binary(
    ebpf: &mut Ebpf,
    binary: &GoBinary,
    exe: &Path,
    pids: &[u32],
) -> Result<Attached, GoAttachError> {
    let plan = discover::plan(binary)?;
    let mut functions = Vec::with_capacity(plan.probes.len());
    let mut serving_links = Vec::new();
    let mut serving_plan = Vec::new();
    for planned in &plan.probes {
        let links = attach_function(
            ebpf,
            exe,
            &planned.probe,
            planned.entry_program,
            planned.return_program,
        )?;
        if planned.tier == Tier::Serving {
            serving_links.extend(links);
            serving_plan.push(planned.clone());
        }
        functions.push(short_name(&planned.probe.name));
    }
    // Last: until a process has its layout entry, the probes above ignore it, so a failure
    // part-way leaves nothing half-traced.
    write_offsets(ebpf, pids, plan.offsets)?;
    Ok(Attached {
        offsets: plan.offsets,
        notes: plan.notes,
        functions,
        serving: ServingTier::new(serving_plan, serving_links),
    })
}
