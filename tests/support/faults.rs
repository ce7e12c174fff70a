//! The fault suite's common parts (`tests/faults_*.rs`): the short or full scale of a case,
//! the agent's peak memory and the kernel objects left behind, and the figures each case writes
//! for `faults/RESULTS.md`.
//!
//! Every case runs in two sizes. `cargo xtask test` (and so CI) runs the short one, which keeps
//! the shape of the fault at a fraction of the load. `cargo xtask faults` sets
//! `WIRESPAN_FAULTS=full` for the sizes the issue names, collects each case's figures (JSON, one
//! file per case, in `WIRESPAN_FAULTS_OUT`) and renders them into `faults/RESULTS.md`.
//!
//! A case writes its figures before it asserts, so a failing case still shows what it measured.

use std::{path::PathBuf, process::Command, time::Instant};

use serde_json::{Value, json};

/// True under `cargo xtask faults` (the full sizes), false for the short form.
pub fn full() -> bool {
    std::env::var("WIRESPAN_FAULTS").is_ok_and(|v| v == "full")
}

/// The short-form value, or the full one under `cargo xtask faults`.
pub fn pick<T>(short: T, full_size: T) -> T {
    if full() { full_size } else { short }
}

/// Where figures go: `WIRESPAN_FAULTS_OUT`, else `target/tmp/faults`.
pub fn out_dir() -> PathBuf {
    std::env::var_os("WIRESPAN_FAULTS_OUT").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults"),
        PathBuf::from,
    )
}

/// A process's peak resident memory so far (`VmHWM`), in KiB; `None` once it has exited.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A process's resident memory now (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The BPF programs and links the kernel holds, by `bpftool` (ids), to compare before an agent
/// starts and after it stopped: what an agent leaves behind shows as new ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelObjects {
    pub programs: Vec<u64>,
    pub links: Vec<u64>,
}

impl KernelObjects {
    pub fn now() -> Self {
        Self {
            programs: bpftool_ids("prog"),
            links: bpftool_ids("link"),
        }
    }

    /// What is left since `before`, waiting up to `wait` for it to go: the kernel frees an
    /// exited agent's programs after it has closed their uprobe links, one RCU grace period
    /// each, so they may outlive the process by seconds.
    pub fn left_after(before: &Self, wait: std::time::Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = Self::left_since(before);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// What is here now and was not in `before`, described; empty when nothing was left.
    pub fn left_since(before: &Self) -> Vec<String> {
        let now = Self::now();
        let new = |ids: &[u64], old: &[u64], what: &str| -> Vec<String> {
            ids.iter()
                .filter(|id| !old.contains(id))
                .map(|id| format!("{what} {id}"))
                .collect()
        };
        let mut left = new(&now.programs, &before.programs, "program");
        left.extend(new(&now.links, &before.links, "link"));
        left
    }
}

fn bpftool_ids(object: &str) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["--json", object, "show"])
        .output()
        .unwrap_or_else(|e| panic!("bpftool {object} show: {e} (cargo xtask setup installs it)"));
    assert!(
        out.status.success(),
        "bpftool {object} show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

/// One case's figures, as `faults/RESULTS.md` shows them.
pub struct Figures {
    /// Stable identifier, also the file name (`backend-outage-down`).
    pub case: &'static str,
    /// The order in RESULTS.md (cases sort by it, then by name).
    pub order: u32,
    /// What was done to the agent or its inputs.
    pub done: String,
    /// The traffic meanwhile.
    pub load: String,
    /// What was lost (the promise: nothing within the stated buffers).
    pub lost: String,
    /// What the agent counted as skipped or dropped.
    pub counted: String,
    /// The agent's peak resident memory, KiB (the largest over its runs in this case).
    pub agent_peak_rss_kib: Option<u64>,
    /// Every traced program and how it ended (or that it was still answering correctly).
    pub programs: Vec<(String, String)>,
    /// Anything else measured.
    pub notes: Vec<String>,
    started: Instant,
}

impl Figures {
    pub fn new(case: &'static str, order: u32) -> Self {
        Self {
            case,
            order,
            done: String::new(),
            load: String::new(),
            lost: String::new(),
            counted: String::new(),
            agent_peak_rss_kib: None,
            programs: Vec::new(),
            notes: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Keep the larger of the peak RSS seen so far and this agent's (read while it runs).
    pub fn agent_rss(&mut self, agent_pid: u32) {
        if let Some(kib) = peak_rss_kib(agent_pid) {
            self.agent_peak_rss_kib = Some(self.agent_peak_rss_kib.map_or(kib, |k| k.max(kib)));
        }
    }

    pub fn program(&mut self, name: impl Into<String>, outcome: impl Into<String>) {
        self.programs.push((name.into(), outcome.into()));
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Write `<out_dir>/<case>.json`. `passed` is what the case's checks concluded.
    pub fn write(&self, passed: bool) {
        let dir = out_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let value = json!({
            "case": self.case,
            "order": self.order,
            "size": if full() { "full" } else { "short" },
            "passed": passed,
            "seconds": self.started.elapsed().as_secs(),
            "done": self.done,
            "load": self.load,
            "lost": self.lost,
            "counted": self.counted,
            "agent_peak_rss_kib": self.agent_peak_rss_kib,
            "programs": self.programs.iter().map(|(p, o)| json!([p, o])).collect::<Vec<_>>(),
            "notes": self.notes,
        });
        let path = dir.join(format!("{}.json", self.case));
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
