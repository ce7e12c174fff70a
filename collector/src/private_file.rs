//! Output files that may hold what the agent captured (recordings, exported spans): created
//! for the owner only (0600, an existing file narrowed too), and never through a symlink. An
//! agent runs as root; a symlink planted at its output path in a world-writable directory
//! (`/tmp/spans.jsonl -> /etc/shadow`) would otherwise make it overwrite any file.

use std::{
    fs::{File, OpenOptions, Permissions},
    io,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

/// Create or replace `path` for writing, readable by the owner only. A symlink at `path` is
/// refused with an error that says so.
pub fn create(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symlink; wirespan does not write through one (remove it or choose another path)",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    // An existing file keeps its mode through open: narrow it too.
    file.set_permissions(Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_the_owners_only_and_symlinks_are_refused() {
        let dir = std::env::temp_dir().join(format!("wirespan-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let existing = dir.join("spans.jsonl");
        std::fs::write(&existing, "old").unwrap();
        std::fs::set_permissions(&existing, Permissions::from_mode(0o644)).unwrap();
        drop(create(&existing).unwrap());
        let meta = std::fs::metadata(&existing).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 0, "replaced");

        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("planted");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = create(&link).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
