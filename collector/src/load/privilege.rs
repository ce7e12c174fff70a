//! Privilege checks before anything touches the kernel, so a user without them gets one clear
//! line instead of a verifier or permission error from deep inside a load.

use std::fmt;

/// A Linux capability wirespan needs, by its number in `linux/capability.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "wirespan needs root, or the CAP_BPF and CAP_PERFMON capabilities; this process lacks {}. \
         Run it as root (sudo), or grant them: sudo setcap cap_bpf,cap_perfmon+ep <path to wirespan>",
        .missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
    )]
    Missing { missing: Vec<Capability> },
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

/// Which of the needed capabilities the effective set lacks. CAP_SYS_ADMIN alone covers both
/// (kernels before 5.8 know no CAP_BPF/CAP_PERFMON).
#[must_use]
pub fn missing_from(caps: u64) -> Vec<Capability> {
    let has = |c: Capability| caps & (1u64 << c as u32) != 0;
    if has(Capability::SysAdmin) {
        return Vec::new();
    }
    [Capability::Bpf, Capability::Perfmon]
        .into_iter()
        .filter(|c| !has(*c))
        .collect()
}

/// The capabilities this process lacks (empty when it may load and attach probes).
pub fn missing_capabilities() -> Result<Vec<Capability>, PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(PrivilegeError::Status)?;
    Ok(effective_caps(&status)
        .map_or_else(|| vec![Capability::Bpf, Capability::Perfmon], missing_from))
}

/// Fail with a message naming each missing capability.
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

    #[test]
    fn reads_effective_set_and_names_what_is_missing() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000000\n";
        assert_eq!(effective_caps(status), Some(0xc0_0000_0000));
        assert!(
            missing_from(0xc0_0000_0000).is_empty(),
            "CAP_BPF + CAP_PERFMON suffice"
        );
        assert!(missing_from(1 << 21).is_empty(), "CAP_SYS_ADMIN suffices");
        assert_eq!(missing_from(1 << 39), vec![Capability::Perfmon]);
        assert_eq!(missing_from(0), vec![Capability::Bpf, Capability::Perfmon]);
        let msg = PrivilegeError::Missing {
            missing: missing_from(0),
        }
        .to_string();
        assert!(msg.contains("lacks CAP_BPF and CAP_PERFMON"), "{msg}");
    }
}
