//! The resources of the processes a run sees, kept from the moment a process starts until its
//! spans are out (DESIGN.md rule 4: a process's resource is read when it starts).
//!
//! - A process started after the agent: its exec event carries its executable, arguments and
//!   environment, read in the kernel before it could exit. An environment longer than the
//!   event's cap is read whole from `/proc` if the process is still there (and is still that
//!   program: the block must start with what the kernel captured); otherwise its captured part
//!   is used, without the entry the cap cut through, and counted.
//! - A process older than the agent: read from `/proc` when the run starts
//!   ([`Resources::scan_running`]), or when its first span needs it (an exec event lost in a
//!   full ring buffer ends up here too). A process gone by then is named after its command.
//! - A replay reads no `/proc` (its pids are other processes now): the recording's exec events
//!   name its processes.
//!
//! Spans look their resource up by pid and start time: a pid that executes another program, or
//! is reused after an exit, has one generation per program, and a span gets the one that was
//! running when it started. Exporters take the resource (an `Arc`) with the span when it is
//! handed to them, so a queued span keeps its resource however late it is sent. A process's
//! generations are dropped `RETAIN_AFTER_EXIT_NS` of event time after it exits, which is longer
//! than the correlator holds a span.
//!
//! One table per run, shared by every sink (`Resources` is a cheap handle); the pipeline feeds
//! it exec and exit events in stream order, before any span of those processes is delivered.
//!
//! A live run reads the agent's own `OTEL_RESOURCE_ATTRIBUTES` once, when the table is made:
//! the host's attributes every resource gets (see [`super::resource`] for who wins a key).

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use super::resource::{HostAttributes, ProcessImage, Resource, ResourceStyle};
use crate::{
    correlate::DEFAULT_WINDOW_NS,
    source::{Exec, ProcessExit},
};

/// How long an exited process's resource is kept (event time): its last exchanges complete when
/// its connections close (just after the exit) and then wait up to the correlator's window.
pub const RETAIN_AFTER_EXIT_NS: u64 = 6 * DEFAULT_WINDOW_NS;
/// Exited processes kept at most; beyond it the earliest exits are forgotten sooner.
const MAX_EXITED: usize = 16_384;
/// Processes kept at most (exit events can be lost); beyond it the half that started earliest
/// is forgotten.
const MAX_PROCESSES: usize = 65_536;

/// What the table did, for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Exec events that carried the program's executable, arguments and environment.
    pub started: u64,
    /// Of those, environments longer than the event's cap...
    pub env_cut: u64,
    /// ...read whole from `/proc` (the process was still there)...
    pub env_completed: u64,
    /// ...and the rest, used as far as captured (a variable beyond the cap is not seen).
    pub env_partial: u64,
    /// Processes read from `/proc` (older than the agent, or their exec event was lost).
    pub read_from_proc: u64,
    /// Processes known only by their command name (gone before anything was read).
    pub command_name_only: u64,
    /// Exited processes forgotten after their spans were out.
    pub forgotten: u64,
    /// Processes forgotten early because a bound was reached.
    pub evicted: u64,
    /// Entries of processes' `OTEL_RESOURCE_ATTRIBUTES` skipped as malformed.
    pub malformed_attributes: u64,
}

impl ProcessStats {
    /// `12 started (1 environment over the cap: 1 read from /proc, 0 cut), ...`.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{} started ({} environments over the cap: {} read whole from /proc, {} cut), {} read from /proc, {} by command name only, {} forgotten after exit, {} evicted, {} malformed OTEL_RESOURCE_ATTRIBUTES entries skipped",
            self.started,
            self.env_cut,
            self.env_completed,
            self.env_partial,
            self.read_from_proc,
            self.command_name_only,
            self.forgotten,
            self.evicted,
            self.malformed_attributes
        )
    }
}

/// One program a pid ran, from its exec (0: before the agent looked) to its exit.
#[derive(Debug)]
struct Generation {
    started_ns: u64,
    exited_ns: Option<u64>,
    resource: Arc<Resource>,
}

/// How the table makes resources: the same for every process of a run.
#[derive(Debug)]
struct Maker {
    style: ResourceStyle,
    /// The agent's host attributes but `host.name` (which is in `style`).
    defaults: Vec<(String, String)>,
}

impl Maker {
    fn make(&self, image: &ProcessImage<'_>, stats: &mut ProcessStats) -> Resource {
        let (resource, malformed) = Resource::on_host(image, &self.style, &self.defaults);
        stats.malformed_attributes += malformed as u64;
        resource
    }
}

#[derive(Debug)]
struct Table {
    /// `/proc`, or `None` for a replay.
    proc_root: Option<PathBuf>,
    maker: Maker,
    /// pid → its generations, in exec order.
    procs: HashMap<u32, Vec<Generation>>,
    /// (exit time, pid, that generation's start), in exit order.
    exited: VecDeque<(u64, u32, u64)>,
    stats: ProcessStats,
}

/// A handle on the run's process table; clones share it.
#[derive(Debug, Clone)]
pub struct Resources(Arc<Mutex<Table>>);

impl Resources {
    /// Resources of a live run, reading `/proc` under `proc_root` where events say too little,
    /// with the host attributes of the agent's own `OTEL_RESOURCE_ATTRIBUTES` (read here, once;
    /// what it leaves out is said once, as a warning).
    #[must_use]
    pub fn new(proc_root: PathBuf, show_command_args: bool) -> Self {
        let hostname = std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
            .map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned());
        // Not UTF-8: as unset (the SDKs read it as a string too).
        let own = std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok();
        let host = HostAttributes::parse(own.as_deref());
        if let Some(problems) = host.problems() {
            eprintln!("wirespan: warning: {problems}");
        }
        Self::with(Some(proc_root), hostname, show_command_args, host)
    }

    /// Resources of a replayed recording: its processes are gone (their pids may now be other
    /// processes'), so only what the events said is used. Neither the hostname nor the agent's
    /// `OTEL_RESOURCE_ATTRIBUTES` is used: they describe the host replaying, not the one
    /// recorded.
    #[must_use]
    pub fn offline() -> Self {
        Self::with(None, "unknown".to_owned(), false, HostAttributes::default())
    }

    /// The table, from what [`Self::new`] reads (`hostname`, the agent's `host`).
    fn with(
        proc_root: Option<PathBuf>,
        hostname: String,
        show_command_args: bool,
        host: HostAttributes,
    ) -> Self {
        Self(Arc::new(Mutex::new(Table {
            proc_root,
            maker: Maker {
                style: ResourceStyle {
                    // The agent's host.name over the hostname (a containerised agent's hostname
                    // is its pod's, not the node's it was told).
                    host_name: host.host_name.unwrap_or(hostname),
                    show_command_args,
                },
                defaults: host.defaults,
            },
            procs: HashMap::new(),
            exited: VecDeque::new(),
            stats: ProcessStats::default(),
        })))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere leaves the table consistent (every change is one insert or remove).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The host's attributes, as every process's resource has them when it sets none of their
    /// keys (the agent's `OTEL_RESOURCE_ATTRIBUTES`, then `host.name`): for resources that
    /// describe the agent rather than a process (the service graph's metrics).
    #[must_use]
    pub fn host_attributes(&self) -> Vec<(String, String)> {
        let table = self.table();
        let mut attributes = table.maker.defaults.clone();
        attributes.push(("host.name".to_owned(), table.maker.style.host_name.clone()));
        attributes
    }

    /// Read every running process from `/proc` (live runs; call once the exec probe is
    /// attached, so no process falls between the two).
    pub fn scan_running(&self) {
        let mut guard = self.table();
        let table = &mut *guard;
        let Some(root) = table.proc_root.clone() else {
            return;
        };
        let Ok(dir) = std::fs::read_dir(&root) else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if table.procs.contains_key(&pid) {
                continue;
            }
            let comm = std::fs::read_to_string(root.join(pid.to_string()).join("comm"))
                .unwrap_or_default();
            if let Some(resource) =
                read_proc(&root, pid, comm.trim(), &table.maker, &mut table.stats)
            {
                table.stats.read_from_proc += 1;
                table.insert(pid, 0, Arc::new(resource));
            }
        }
    }

    /// A process executed a program: its resource from what the event carries.
    pub fn on_exec(&self, exec: &Exec) {
        let mut guard = self.table();
        let table = &mut *guard;
        let resource = match &exec.image {
            Some(image) => {
                table.stats.started += 1;
                let root = table.proc_root.clone();
                let env = if image.env_cut {
                    table.stats.env_cut += 1;
                    if let Some(whole) =
                        root.and_then(|r| whole_block(&r, exec.pid, "environ", &image.env))
                    {
                        table.stats.env_completed += 1;
                        whole
                    } else {
                        table.stats.env_partial += 1;
                        complete_entries(&image.env).to_vec()
                    }
                } else {
                    image.env.clone()
                };
                let args = if image.args_cut {
                    table
                        .proc_root
                        .as_deref()
                        .and_then(|r| whole_block(r, exec.pid, "cmdline", &image.args))
                        .unwrap_or_else(|| complete_entries(&image.args).to_vec())
                } else {
                    image.args.clone()
                };
                let process = ProcessImage {
                    pid: exec.pid,
                    exe: &image.exe,
                    comm: &exec.comm,
                    args: &args,
                    env: &env,
                };
                table.maker.make(&process, &mut table.stats)
            }
            // A recording from before exec events carried the program.
            None => table.unread(exec.pid, &exec.comm),
        };
        // The program this pid ran before ends here (an exec replaces it).
        table.mark_exited(exec.pid, exec.ts_ns);
        table.insert(exec.pid, exec.ts_ns, Arc::new(resource));
        table.prune(exec.ts_ns);
    }

    /// A process exited: its resource stays until its last spans are out.
    pub fn on_exit(&self, exit: &ProcessExit) {
        let mut table = self.table();
        table.mark_exited(exit.pid, exit.ts_ns);
        table.prune(exit.ts_ns);
    }

    /// The resource of process `pid` (whose events named it `comm`) for a span that started at
    /// `ts_ns`: the program it was running then.
    #[must_use]
    pub fn of(&self, pid: u32, comm: &str, ts_ns: u64) -> Arc<Resource> {
        let mut table = self.table();
        if let Some(generations) = table.procs.get(&pid) {
            let running = generations
                .iter()
                .rev()
                .find(|g| g.started_ns <= ts_ns)
                .or(generations.first());
            if let Some(g) = running {
                return Arc::clone(&g.resource);
            }
        }
        let resource = Arc::new(table.unread(pid, comm));
        table.insert(pid, 0, Arc::clone(&resource));
        resource
    }

    #[must_use]
    pub fn stats(&self) -> ProcessStats {
        self.table().stats
    }
}

impl Table {
    /// A process no exec event described: `/proc` (live runs), else its command name.
    fn unread(&mut self, pid: u32, comm: &str) -> Resource {
        if let Some(root) = &self.proc_root
            && let Some(resource) = read_proc(root, pid, comm, &self.maker, &mut self.stats)
        {
            self.stats.read_from_proc += 1;
            return resource;
        }
        self.stats.command_name_only += 1;
        let process = ProcessImage {
            pid,
            exe: "",
            comm,
            args: &[],
            env: &[],
        };
        self.maker.make(&process, &mut self.stats)
    }

    fn insert(&mut self, pid: u32, started_ns: u64, resource: Arc<Resource>) {
        if self.procs.len() >= MAX_PROCESSES && !self.procs.contains_key(&pid) {
            self.evict_half();
        }
        self.procs.entry(pid).or_default().push(Generation {
            started_ns,
            exited_ns: None,
            resource,
        });
    }

    fn mark_exited(&mut self, pid: u32, ts_ns: u64) {
        let Some(current) = self
            .procs
            .get_mut(&pid)
            .and_then(|g| g.last_mut())
            .filter(|g| g.exited_ns.is_none())
        else {
            return;
        };
        current.exited_ns = Some(ts_ns);
        self.exited.push_back((ts_ns, pid, current.started_ns));
    }

    /// Forget generations that exited long enough ago for their spans to be out.
    fn prune(&mut self, now_ns: u64) {
        while let Some(&(exited_ns, pid, started_ns)) = self.exited.front() {
            let expired = exited_ns.saturating_add(RETAIN_AFTER_EXIT_NS) < now_ns;
            let over = self.exited.len() > MAX_EXITED;
            if !expired && !over {
                break;
            }
            self.exited.pop_front();
            if expired {
                self.stats.forgotten += 1;
            } else {
                self.stats.evicted += 1;
            }
            if let Some(generations) = self.procs.get_mut(&pid) {
                generations.retain(|g| g.started_ns != started_ns || g.exited_ns.is_none());
                if generations.is_empty() {
                    self.procs.remove(&pid);
                }
            }
        }
    }

    fn evict_half(&mut self) {
        let mut by_start: Vec<(u64, u32)> = self
            .procs
            .iter()
            .map(|(pid, g)| (g.last().map_or(0, |g| g.started_ns), *pid))
            .collect();
        by_start.sort_unstable();
        for (_, pid) in by_start.iter().take(by_start.len() / 2) {
            self.procs.remove(pid);
            self.stats.evicted += 1;
        }
        let procs = &self.procs;
        self.exited.retain(|(_, pid, _)| procs.contains_key(pid));
    }
}

/// A process's resource from `/proc/<pid>` (`None` when it is gone).
fn read_proc(
    root: &Path,
    pid: u32,
    comm: &str,
    maker: &Maker,
    stats: &mut ProcessStats,
) -> Option<Resource> {
    let dir = root.join(pid.to_string());
    let env = std::fs::read(dir.join("environ"));
    let args = std::fs::read(dir.join("cmdline"));
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if env.is_err() && args.is_err() && exe.is_none() {
        return None;
    }
    let process = ProcessImage {
        pid,
        exe: exe.as_deref().unwrap_or_default(),
        comm,
        args: &args.unwrap_or_default(),
        env: &env.unwrap_or_default(),
    };
    Some(maker.make(&process, stats))
}

/// `/proc/<pid>/<file>` whole, if it still shows the block the kernel captured the start of
/// (the same process running the same program).
fn whole_block(root: &Path, pid: u32, file: &str, captured: &[u8]) -> Option<Vec<u8>> {
    let whole = std::fs::read(root.join(pid.to_string()).join(file)).ok()?;
    (whole.len() > captured.len() && whole.starts_with(captured)).then_some(whole)
}

/// A cut block without the entry the cut went through: `OTEL_SERVICE_NAME=jo` of
/// `OTEL_SERVICE_NAME=job3` must not name a service `jo`.
fn complete_entries(block: &[u8]) -> &[u8] {
    match block.iter().rposition(|b| *b == 0) {
        Some(last_nul) => &block[..=last_nul],
        None => &[],
    }
}

#[cfg(test)]
#[path = "processes_tests.rs"]
mod tests;
