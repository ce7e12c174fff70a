//! In-kernel filters (`--pid`, `--port`, `--cgroup`): user space turns them into map entries and
//! `SETTINGS.filters` bits, so ignored traffic is dropped at the first probe it reaches.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

use aya::{Ebpf, maps::HashMap};
use wirespan_shared::{FILTER_CGROUP, FILTER_PID, FILTER_PORT};

use super::error_chain;

/// What to capture; empty lists mean "everything".
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// cgroup v2 directories (absolute, or relative to /sys/fs/cgroup).
    pub cgroups: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
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
    /// bpf_get_current_cgroup_id returns.
    pub fn cgroup_ids(&self) -> Result<Vec<u64>, FilterError> {
        self.cgroups
            .iter()
            .map(|path| {
                let full = if path.is_absolute() {
                    path.clone()
                } else {
                    PathBuf::from("/sys/fs/cgroup").join(path)
                };
                std::fs::metadata(&full)
                    .map(|m| m.ino())
                    .map_err(|source| FilterError::Cgroup {
                        path: full.display().to_string(),
                        source,
                    })
            })
            .collect()
    }

    /// Fill the filter maps of a loaded (not yet attached) probes object.
    pub fn write_maps(&self, ebpf: &mut Ebpf, cgroup_ids: &[u64]) -> Result<(), FilterError> {
        fill(ebpf, "FILTER_PIDS", &self.pids)?;
        fill(ebpf, "FILTER_PORTS", &self.ports)?;
        fill(ebpf, "FILTER_CGROUPS", cgroup_ids)
    }
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
        assert_eq!(f.cgroup_ids().unwrap().len(), 1);
        let missing = Filters {
            cgroups: vec!["no/such/group".into()],
            ..Filters::default()
        };
        let err = missing.cgroup_ids().unwrap_err().to_string();
        assert!(err.contains("/sys/fs/cgroup/no/such/group"), "{err}");
    }
}
