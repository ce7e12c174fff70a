//! Privilege checks before anything touches the kernel, so a user without them gets one clear
//! line naming what is missing and what it is for, instead of a permission error from deep
//! inside a load, or, worse, programs left untraced without a word.
//!
//! The set was found by running the agent as an unprivileged user (uid 65534) with ambient
//! capabilities, one left out at a time (tests/privileged_capabilities.rs does it on every run):
//! - CAP_SYS_ADMIN: uprobes (Go programs, TLS libraries). Since "perf: Revert to requiring
//!   CAP_SYS_ADMIN for uprobes" (CVE-2025-38466: Linux 6.16, and the stable kernels from
//!   5.10.240, 5.15.189, 6.1.146, 6.6.99, 6.12.39 and 6.15.7) `perf_event_open` of a uprobe
//!   wants CAP_SYS_ADMIN itself; CAP_PERFMON fails with EACCES. It also passes `bpf_capable()`
//!   and `perfmon_capable()`, so CAP_BPF and CAP_PERFMON add nothing beside it.
//! - CAP_SYS_PTRACE: /proc/<pid>/exe, maps, environ, fd, root and mem of other users' (and
//!   more privileged) processes: the kernel's ptrace access check guards them, and CAP_SYS_ADMIN
//!   does not pass it. Without it Go programs and TLS libraries are not found at all, and
//!   services lose their names and routes.
//! - CAP_DAC_READ_SEARCH: tracefs (/sys/kernel/tracing is root-only, 0700), and executables
//!   and libraries behind directories the agent's user may not search. CAP_DAC_OVERRIDE passes
//!   the same checks (and more); CAP_SYS_ADMIN passes none of them.
//!
//! CAP_SYS_RESOURCE is not needed: BPF memory is charged to the memory cgroup (a failed
//! RLIMIT_MEMLOCK raise only warns).

use std::fmt;

/// A Linux capability, by its number in `linux/capability.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    DacOverride = 1,
    DacReadSearch = 2,
    SysPtrace = 19,
    SysAdmin = 21,
}

impl Capability {
    /// The capability's name as the kernel and capabilities(7) spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::DacOverride => "CAP_DAC_OVERRIDE",
            Self::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Self::SysPtrace => "CAP_SYS_PTRACE",
            Self::SysAdmin => "CAP_SYS_ADMIN",
        }
    }

    /// Whether the capability set `caps` (a `CapEff:` mask) holds this one.
    #[must_use]
    pub const fn is_in(self, caps: u64) -> bool {
        caps & (1u64 << self as u32) != 0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability the agent needs, what it is for, and the ones the kernel accepts in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    /// What fails without it, as the error line says it.
    pub purpose: &'static str,
    /// Capabilities that pass the same kernel checks.
    pub instead: &'static [Capability],
}

impl Need {
    /// Whether `caps` satisfies this need, by the capability itself or a stand-in.
    #[must_use]
    pub fn met_by(&self, caps: u64) -> bool {
        self.capability.is_in(caps) || self.instead.iter().any(|c| c.is_in(caps))
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.capability, self.purpose)
    }
}

/// Everything the agent needs, in the order the error names them.
pub const NEEDED: [Need; 3] = [
    Need {
        capability: Capability::SysAdmin,
        purpose: "loading the probes (bpf), attaching tracepoints and uprobes to Go programs and \
                  TLS libraries (perf_event_open: CAP_BPF and CAP_PERFMON no longer suffice for \
                  uprobes since Linux 6.16 and its stable updates, CVE-2025-38466)",
        instead: &[],
    },
    Need {
        capability: Capability::SysPtrace,
        purpose: "reading traced programs' executables, memory maps, environment and memory \
                  through /proc/<pid>",
        instead: &[],
    },
    Need {
        capability: Capability::DacReadSearch,
        purpose: "reading tracefs (/sys/kernel/tracing, root-only) and executables in directories \
                  the agent's user cannot search",
        instead: &[Capability::DacOverride],
    },
];

/// The `setcap`/`capsh` spelling of the whole set (`cap_bpf,cap_perfmon,...`).
#[must_use]
pub fn needed_list() -> String {
    NEEDED
        .iter()
        .map(|n| n.capability.name().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "this process lacks {}. Run wirespan as root, or grant it the whole set {list} \
         (systemd: AmbientCapabilities=; or setcap {list}+ep <path to wirespan>)",
        .missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        list = needed_list()
    )]
    Missing { missing: Vec<Need> },
    #[error("cannot read this process's capabilities from /proc/self/status: {0}")]
    Status(#[source] std::io::Error),
}

/// Parse the effective capability set (`CapEff:` in hex) from a `/proc/<pid>/status` text.
#[must_use]
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Which of the needs the effective set `caps` leaves unmet.
#[must_use]
pub fn missing_from(caps: u64) -> Vec<Need> {
    NEEDED.into_iter().filter(|n| !n.met_by(caps)).collect()
}

/// The needs this process leaves unmet (empty when it may load, attach and read what it traces).
pub fn missing_capabilities() -> Result<Vec<Need>, PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(PrivilegeError::Status)?;
    Ok(effective_caps(&status).map_or_else(|| NEEDED.to_vec(), missing_from))
}

/// Fail with one line naming each missing capability and what it is for.
pub fn check() -> Result<(), PrivilegeError> {
    let missing = missing_capabilities()?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(caps: &[Capability]) -> u64 {
        caps.iter().fold(0, |m, c| m | 1 << *c as u32)
    }

    fn names(missing: &[Need]) -> Vec<Capability> {
        missing.iter().map(|n| n.capability).collect()
    }

    const SET: [Capability; 3] = [
        Capability::SysAdmin,
        Capability::SysPtrace,
        Capability::DacReadSearch,
    ];
    /// CAP_BPF (39) and CAP_PERFMON (38).
    const BPF_PERFMON: u64 = 0xc0_0000_0000;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000280004\n";
        assert_eq!(effective_caps(status), Some(mask(&SET)));
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn full_root_and_the_three_suffice() {
        // Root's full set here (no CAP_SYS_RESOURCE in this VM's bounding set).
        assert_eq!(names(&missing_from(0x1ff_feff_ffff)), []);
        assert_eq!(names(&missing_from(mask(&SET))), []);
    }

    #[test]
    fn each_left_out_is_named() {
        for left_out in SET {
            let caps = mask(&SET) & !mask(&[left_out]);
            assert_eq!(names(&missing_from(caps)), vec![left_out], "{left_out}");
        }
        assert_eq!(names(&missing_from(0)), SET.to_vec());
    }

    #[test]
    fn bpf_and_perfmon_do_not_stand_in_for_sys_admin() {
        let caps = BPF_PERFMON | mask(&[Capability::SysPtrace, Capability::DacReadSearch]);
        assert_eq!(names(&missing_from(caps)), vec![Capability::SysAdmin]);
    }

    #[test]
    fn dac_override_stands_in_for_dac_read_search() {
        let caps = mask(&[
            Capability::SysAdmin,
            Capability::SysPtrace,
            Capability::DacOverride,
        ]);
        assert_eq!(names(&missing_from(caps)), []);
    }

    #[test]
    fn the_error_is_one_line_naming_each_missing_one_and_its_purpose() {
        let missing = missing_from(BPF_PERFMON | mask(&[Capability::DacReadSearch]));
        let msg = PrivilegeError::Missing { missing }.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.starts_with(
                "this process lacks CAP_SYS_ADMIN: loading the probes (bpf), attaching tracepoints \
                 and uprobes to Go programs and TLS libraries (perf_event_open: CAP_BPF and \
                 CAP_PERFMON no longer suffice for uprobes since Linux 6.16 and its stable \
                 updates, CVE-2025-38466); CAP_SYS_PTRACE: reading traced programs' executables"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("setcap cap_sys_admin,cap_sys_ptrace,cap_dac_read_search+ep"),
            "{msg}"
        );
        assert!(!msg.contains("CAP_DAC_READ_SEARCH:"), "{msg}");
    }
}
