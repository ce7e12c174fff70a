//! OpenSSL uprobes: `SSL_read`, `SSL_write` and their `_ex` forms in each libssl 3 file on the
//! machine (probes-ebpf/src/tls.rs), entry and return. A uprobe on a file fires in every
//! process that maps it, now or later, so one attach per library file covers programs started
//! after the agent too.
//!
//! The files: the ones running processes map (`/proc/PID/maps`), and the system's own (the
//! dynamic loader's directories), which programs started later will map. A libssl that only a
//! later process brings (a container image, a virtualenv's wheel) is found when such a process
//! is seen at exec time with it mapped, else not: that is said in the README.

use std::{
    collections::BTreeSet,
    fmt,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};
use wirespan_shared::names::{
    PROGRAM_SSL_READ, PROGRAM_SSL_READ_EX, PROGRAM_SSL_RETURN, PROGRAM_SSL_WRITE,
    PROGRAM_SSL_WRITE_EX,
};

use super::attach::error_chain;

/// Where Debian and most distributions keep the system's libssl.
const SYSTEM_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// Each OpenSSL function with its entry program; every one also gets `PROGRAM_SSL_RETURN`.
const FUNCTIONS: [(&str, &str); 4] = [
    ("SSL_read", PROGRAM_SSL_READ),
    ("SSL_read_ex", PROGRAM_SSL_READ_EX),
    ("SSL_write", PROGRAM_SSL_WRITE),
    ("SSL_write_ex", PROGRAM_SSL_WRITE_EX),
];

/// One line of the start-up report per libssl file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReport {
    pub library: PathBuf,
    /// The functions attached (entry and return).
    pub functions: Vec<&'static str>,
    /// Why the file was skipped (None when attached).
    pub skipped: Option<String>,
}

impl fmt::Display for TlsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.skipped {
            None => write!(
                f,
                "tls: OpenSSL {}: attached {} (plaintext of every process that maps it)",
                self.library.display(),
                self.functions.join(", ")
            ),
            Some(why) => write!(f, "tls: OpenSSL {}: skipped: {why}", self.library.display()),
        }
    }
}

/// The libssl files attached so far, by (device, inode): one file has many paths (symlinks,
/// `/lib` → `/usr/lib`), and a uprobe belongs to the file.
#[derive(Default)]
pub struct TlsAttacher {
    attached: BTreeSet<(u64, u64)>,
}

impl TlsAttacher {
    /// Attach to every libssl 3 the running processes map and the system's own.
    pub fn attach_running(&mut self, ebpf: &mut Ebpf) -> Vec<TlsReport> {
        let mut files = system_libraries();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                    files.extend(mapped_libraries(pid));
                }
            }
        }
        files
            .iter()
            .filter_map(|path| self.attach_file(ebpf, path))
            .collect()
    }

    /// A process started: attach to a libssl it maps that is new.
    pub fn exec(&mut self, ebpf: &mut Ebpf, pid: u32) -> Vec<TlsReport> {
        mapped_libraries(pid)
            .iter()
            .filter_map(|path| self.attach_file(ebpf, path))
            .collect()
    }

    /// Attach to `path` unless its file is attached already (None then).
    fn attach_file(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<TlsReport> {
        let meta = std::fs::metadata(path).ok()?;
        if !self.attached.insert((meta.dev(), meta.ino())) {
            return None;
        }
        let mut report = TlsReport {
            library: path.to_owned(),
            functions: Vec::new(),
            skipped: None,
        };
        for (function, entry) in FUNCTIONS {
            let attached = attach_one(ebpf, entry, function, path)
                .and_then(|()| attach_one(ebpf, PROGRAM_SSL_RETURN, function, path));
            match attached {
                Ok(()) => report.functions.push(function),
                // OpenSSL 1.1.0 has no _ex forms; anything else is worth saying.
                Err(e) if function.ends_with("_ex") && e.contains("symbol") => {}
                Err(e) => {
                    report.skipped = Some(format!("{function}: {e}"));
                    break;
                }
            }
        }
        if report.functions.is_empty() && report.skipped.is_none() {
            report.skipped = Some("no SSL_read or SSL_write symbol".to_owned());
        }
        Some(report)
    }
}

fn attach_one(ebpf: &mut Ebpf, program: &str, function: &str, path: &Path) -> Result<(), String> {
    let uprobe: &mut UProbe = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("the probes object has no program {program}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| error_chain(&e))?;
    if uprobe.fd().is_err() {
        uprobe.load().map_err(|e| error_chain(&e))?;
    }
    uprobe
        .attach([function], path, UProbeScope::AllProcesses)
        .map(drop)
        .map_err(|e| error_chain(&e))
}

/// The system's libssl 3 files (those a program started later will load).
fn system_libraries() -> Vec<PathBuf> {
    SYSTEM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join("libssl.so.3"))
        .filter(|path| path.is_file())
        .collect()
}

/// The libssl files process `pid` maps (as seen from its own root, for containers).
fn mapped_libraries(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    libraries_in_maps(&maps)
        .into_iter()
        .map(|path| {
            let rooted = PathBuf::from(format!("/proc/{pid}/root{}", path.display()));
            if rooted.is_file() { rooted } else { path }
        })
        .collect()
}

/// The distinct libssl paths in a `/proc/PID/maps` text.
fn libraries_in_maps(maps: &str) -> Vec<PathBuf> {
    let mut found = BTreeSet::new();
    for line in maps.lines() {
        // address perms offset dev inode path: the path is the sixth field and may hold spaces.
        let Some(path) = line.splitn(6, char::is_whitespace).nth(5).map(str::trim) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        if name.starts_with("libssl.so") && path.starts_with('/') {
            found.insert(PathBuf::from(path));
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libssl_is_found_in_a_maps_text_once() {
        let maps = "\
7f1c4a000000-7f1c4a020000 r--p 00000000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c4a020000-7f1c4a090000 r-xp 00020000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c4b000000-7f1c4b020000 r--p 00000000 fe:01 99 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7ffd000000-7ffd021000 rw-p 00000000 00:00 0                          [stack]
7f1c4c000000-7f1c4c001000 r-xp 00000000 fe:01 77 /opt/my app/lib/libssl.so.1.1
";
        assert_eq!(
            libraries_in_maps(maps),
            vec![
                PathBuf::from("/opt/my app/lib/libssl.so.1.1"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            ]
        );
    }

    #[test]
    fn a_report_line_says_what_was_attached_or_why_not() {
        let attached = TlsReport {
            library: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            functions: vec!["SSL_read", "SSL_write"],
            skipped: None,
        };
        assert_eq!(
            attached.to_string(),
            "tls: OpenSSL /usr/lib/x86_64-linux-gnu/libssl.so.3: attached SSL_read, SSL_write \
             (plaintext of every process that maps it)"
        );
        let skipped = TlsReport {
            skipped: Some("no SSL_read or SSL_write symbol".into()),
            functions: Vec::new(),
            ..attached
        };
        assert!(
            skipped
                .to_string()
                .ends_with("skipped: no SSL_read or SSL_write symbol")
        );
    }
}
