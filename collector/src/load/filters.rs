//! In-kernel filters (`--pid`, `--port`, `--cgroup`): user space turns them into map entries and
//! `SETTINGS.filters` bits, so ignored traffic is dropped at the first probe it reaches.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

use aya::{Ebpf, maps::HashMap};
use wirespan_shared::names::{MAP_FILTER_CGROUPS, MAP_FILTER_PIDS, MAP_FILTER_PORTS};
use wirespan_shared::{FILTER_CGROUP, FILTER_PID, FILTER_PORT};

use super::error_chain;

/// What to capture; empty lists mean "everything".
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// cgroup v2 directories (absolute, or relative to the cgroup v2 mount).
    pub cgroups: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("--cgroup {path}: not a cgroup v2 directory ({mount})")]
    NotCgroup2 { path: String, mount: String },
    #[error(
        "--cgroup {path}: {source} (give a cgroup v2 directory, e.g. /sys/fs/cgroup/system.slice/nginx.service)"
    )]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
    #[error("filter map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

impl Filters {
    /// The `FILTER_*` bits of the filters that are on.
    #[must_use]
    pub fn bits(&self) -> u32 {
        let mut bits = 0;
        if !self.pids.is_empty() {
            bits |= FILTER_PID;
        }
        if !self.ports.is_empty() {
            bits |= FILTER_PORT;
        }
        if !self.cgroups.is_empty() {
            bits |= FILTER_CGROUP;
        }
        bits
    }

    /// cgroup v2 ids: the inode number of each cgroup directory, which is what
    /// bpf_get_current_cgroup_id returns. Relative paths are under the cgroup v2 mount; a path on
    /// another filesystem (a cgroup v1 hierarchy, a plain directory) is refused, since no task
    /// could ever match it.
    pub fn cgroup_ids(&self) -> Result<Vec<u64>, FilterError> {
        if self.cgroups.is_empty() {
            return Ok(Vec::new());
        }
        let mount = cgroup2_mount();
        self.cgroups
            .iter()
            .map(|path| {
                let full = match (&mount, path.is_absolute()) {
                    (_, true) => path.clone(),
                    (Some(root), false) => root.join(path),
                    (None, false) => PathBuf::from("/sys/fs/cgroup").join(path),
                };
                let shown = full.display().to_string();
                let meta = std::fs::metadata(&full).map_err(|source| FilterError::Cgroup {
                    path: shown.clone(),
                    source,
                })?;
                if !is_cgroup2(&full) {
                    let mount = mount.as_ref().map_or_else(
                        || "this system mounts no cgroup v2".to_owned(),
                        |m| format!("cgroup v2 is mounted at {}", m.display()),
                    );
                    return Err(FilterError::NotCgroup2 { path: shown, mount });
                }
                Ok(meta.ino())
            })
            .collect()
    }

    /// Fill the filter maps of a loaded (not yet attached) probes object.
    pub fn write_maps(&self, ebpf: &mut Ebpf, cgroup_ids: &[u64]) -> Result<(), FilterError> {
        fill(ebpf, MAP_FILTER_PIDS, &self.pids)?;
        fill(ebpf, MAP_FILTER_PORTS, &self.ports)?;
        fill(ebpf, MAP_FILTER_CGROUPS, cgroup_ids)
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid systems).
#[must_use]
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // `id parent major:minor root mountpoint options ... - fstype source options`
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

fn is_cgroup2(path: &std::path::Path) -> bool {
    const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a zeroed statfs buffer for the call to fill.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `stat` is a writable statfs.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &raw mut stat) };
    // `f_type` is i64 on glibc and u64 on musl; the magic fits either.
    #[allow(
        clippy::cast_sign_loss,
        clippy::unnecessary_cast,
        reason = "f_type's type differs between libcs"
    )]
    let f_type = stat.f_type as u64;
    rc == 0 && f_type == CGROUP2_SUPER_MAGIC
}

fn fill<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, keys: &[K]) -> Result<(), FilterError> {
    let map_error = |reason: String| FilterError::Map { map: name, reason };
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| map_error("missing from the probes object".into()))?;
    let mut map: HashMap<_, K, u8> =
        HashMap::try_from(map).map_err(|e| map_error(error_chain(&e)))?;
    for key in keys {
        map.insert(key, &1, 0)
            .map_err(|e| map_error(error_chain(&e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_filters_that_are_on() {
        assert_eq!(Filters::default().bits(), 0);
        let f = Filters {
            pids: vec![1],
            ports: vec![80],
            cgroups: vec!["/".into()],
        };
        assert_eq!(f.bits(), FILTER_PID | FILTER_PORT | FILTER_CGROUP);
    }

    #[test]
    fn cgroup_paths_must_be_cgroup_v2_directories() {
        let missing = Filters {
            cgroups: vec!["no/such/group".into()],
            ..Filters::default()
        };
        let err = missing.cgroup_ids().unwrap_err().to_string();
        assert!(err.contains("no/such/group"), "{err}");
        let plain = Filters {
            cgroups: vec![std::env::temp_dir()],
            ..Filters::default()
        };
        let err = plain.cgroup_ids().unwrap_err().to_string();
        assert!(err.contains("not a cgroup v2 directory"), "{err}");
        if let Some(root) = cgroup2_mount() {
            let root_filter = Filters {
                cgroups: vec![root],
                ..Filters::default()
            };
            assert_eq!(root_filter.cgroup_ids().unwrap().len(), 1);
        }
    }
}
