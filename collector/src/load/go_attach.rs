//! Attaching the Go uprobes: carries out `golang::discover`'s plan in the kernel. At start the
//! agent scans /proc, and later every exec event names a new program; each executable is
//! examined once per inode (programs of one binary share one attachment), and each process of a
//! usable binary gets its layout written into `GO_PROCS` (the probes forget it when the process
//! exits). A binary whose layout cannot be determined is skipped with one report line; its
//! syscalls are still traced.
//!
//! Only processes the agent's `--pid` and `--cgroup` filters select get a layout entry, as the
//! kernel's filter selects them (either matching): an agent per host (or per container) must not
//! attach to, report or keep the serving probes of another host's Go programs.

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
    /// With `--pid`: these processes.
    only_pids: Vec<u32>,
    /// With `--cgroup`: processes in these cgroup v2 directories (their ids, the directories'
    /// inode numbers, which is what the kernel's `bpf_get_current_cgroup_id` compares).
    only_cgroups: Vec<u64>,
    /// Where cgroup v2 is mounted, to find a process's cgroup directory (None: not mounted).
    cgroup2_mount: Option<PathBuf>,
    binaries: HashMap<(u64, u64), Binary>,
    /// Process → its binary, for the processes of attached binaries.
    binary_of: HashMap<u32, (u64, u64)>,
    /// How long a binary's serving tier stays on while none of its processes calls out; None:
    /// always on.
    quiet_after: Option<Duration>,
}

impl GoAttacher {
    /// `only_pids` and `only_cgroups` (cgroup ids) are the agent's `--pid` and `--cgroup`
    /// filters; both empty, every process but the agent's own is wanted.
    #[must_use]
    pub fn new(
        agent_pid: u32,
        only_pids: &[u32],
        only_cgroups: &[u64],
        quiet_after: Option<Duration>,
    ) -> Self {
        Self {
            agent_pid,
            only_pids: only_pids.to_vec(),
            only_cgroups: only_cgroups.to_vec(),
            cgroup2_mount: (!only_cgroups.is_empty())
                .then(super::filters::cgroup2_mount)
                .flatten(),
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
        wanted_by(
            self.agent_pid,
            &self.only_pids,
            &self.only_cgroups,
            pid,
            || {
                let mount = self.cgroup2_mount.as_deref()?;
                let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
                cgroup_id(mount, cgroup2_path(&text)?)
            },
        )
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

/// Whether process `pid` is wanted by an agent (`agent_pid`) with these `--pid` and `--cgroup`
/// filters, as the kernel's `process_passes` decides: never the agent itself; with neither
/// filter every process; otherwise a process that either selects. `cgroup_of` gives the
/// process's cgroup v2 id (asked only when the cgroups decide; None: unknown, e.g. it exited).
fn wanted_by(
    agent_pid: u32,
    only_pids: &[u32],
    only_cgroups: &[u64],
    pid: u32,
    cgroup_of: impl FnOnce() -> Option<u64>,
) -> bool {
    if pid == agent_pid {
        return false;
    }
    if only_pids.is_empty() && only_cgroups.is_empty() {
        return true;
    }
    only_pids.contains(&pid)
        || (!only_cgroups.is_empty() && cgroup_of().is_some_and(|id| only_cgroups.contains(&id)))
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` text: the `0::<path>` line (on a hybrid
/// system the v1 hierarchies' lines come first). Relative to the cgroup v2 mount as the reader
/// sees it (the agent's cgroup namespace).
fn cgroup2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|path| path.starts_with('/'))
}

/// The id of cgroup `path` (from `cgroup2_path`) under the cgroup v2 `mount`: its directory's
/// inode number, as for `--cgroup` (`filters::cgroup_ids`).
fn cgroup_id(mount: &Path, path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    // A process in a cgroup that was removed shows ` (deleted)` after its path: no directory.
    std::fs::metadata(mount.join(path.trim_start_matches('/')))
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|meta| meta.ino())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_filters_every_process_but_the_agent_is_wanted() {
        let never = || -> Option<u64> { panic!("no cgroup is needed without --cgroup") };
        assert!(wanted_by(1, &[], &[], 7, never));
        assert!(!wanted_by(7, &[], &[], 7, never));
    }

    #[test]
    fn pid_and_cgroup_filters_select_either_matching_process() {
        // --pid 7 --cgroup <id 42>: 7 whatever its cgroup, others only in cgroup 42.
        assert!(wanted_by(1, &[7], &[42], 7, || Some(9)));
        assert!(wanted_by(1, &[7], &[42], 8, || Some(42)));
        assert!(!wanted_by(1, &[7], &[42], 8, || Some(9)));
        // An unreadable cgroup (the process exited) is not a match.
        assert!(!wanted_by(1, &[], &[42], 8, || None));
        // --pid alone: the cgroup is never asked.
        assert!(!wanted_by(1, &[7], &[], 8, || panic!("no --cgroup given")));
        // The agent itself, even inside a selected cgroup.
        assert!(!wanted_by(1, &[], &[42], 1, || Some(42)));
    }

    #[test]
    fn the_cgroup_v2_line_is_found_on_unified_and_hybrid_systems() {
        assert_eq!(
            cgroup2_path("0::/system.slice/nginx.service\n"),
            Some("/system.slice/nginx.service")
        );
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/4d11\n1:cpu:/\n0::/wirespan-host-a\n";
        assert_eq!(cgroup2_path(hybrid), Some("/wirespan-host-a"));
        // cgroup v1 only: no v2 path, so no --cgroup match.
        assert_eq!(cgroup2_path("4:memory:/a\n1:cpu:/\n"), None);
    }

    #[test]
    fn a_process_cgroup_id_is_its_cgroup_directory_inode() {
        use std::os::unix::fs::MetadataExt as _;
        let Some(mount) = super::super::filters::cgroup2_mount() else {
            eprintln!("no cgroup v2 mounted here: nothing to compare");
            return;
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = cgroup2_path(&text).expect("a 0:: line where cgroup v2 is mounted");
        let dir = mount.join(path.trim_start_matches('/'));
        assert_eq!(
            cgroup_id(&mount, path),
            Some(std::fs::metadata(&dir).unwrap().ino())
        );
        // A removed cgroup (`... (deleted)`) or a path that is not there: no id.
        assert_eq!(cgroup_id(&mount, "/no/such/cgroup (deleted)"), None);
    }
}
