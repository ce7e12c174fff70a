//! tracefs: mounted when missing (aya attaches tracepoints through it), and the source of each
//! tracepoint's record layout, which the probes receive as load-time offsets.

use std::path::{Path, PathBuf};

use wirespan_shared::SetStateFormat;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed: {0} (mount it: mount -t tracefs tracefs {TRACEFS})"
    )]
    Mount(#[source] std::io::Error),
    #[error("cannot read the format of tracepoint {tracepoint} at {path}: {source}")]
    ReadFormat {
        tracepoint: String,
        path: String,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field `{field}` in its format")]
    NoField { tracepoint: String, field: String },
}

/// The tracefs root, mounting it at /sys/kernel/tracing when no tracefs is reachable.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(root.into());
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; data is unused by tracefs.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    Ok(TRACEFS.into())
}

/// Offset of each named field in a tracepoint `format` text (`field:... name; offset:N; ...`).
#[must_use]
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        // The declaration ends in the field name, possibly with an array suffix: `__u8 saddr[4]`.
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line
            .split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

fn read_format(root: &Path, category: &str, name: &str) -> Result<String, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    std::fs::read_to_string(&path).map_err(|source| TracefsError::ReadFormat {
        tracepoint: format!("{category}:{name}"),
        path: path.display().to_string(),
        source,
    })
}

/// Field offsets of `sock:inet_sock_set_state`, read from this kernel's tracefs.
pub fn set_state_format(root: &Path) -> Result<SetStateFormat, TracefsError> {
    let text = read_format(root, "sock", "inet_sock_set_state")?;
    parse_set_state_format(&text)
}

pub fn parse_set_state_format(text: &str) -> Result<SetStateFormat, TracefsError> {
    let get = |field: &str| {
        field_offset(text, field).ok_or_else(|| TracefsError::NoField {
            tracepoint: "sock:inet_sock_set_state".into(),
            field: field.into(),
        })
    };
    Ok(SetStateFormat {
        skaddr: get("skaddr")?,
        oldstate: get("oldstate")?,
        newstate: get("newstate")?,
        protocol: get("protocol")?,
        sport: get("sport")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = "name: inet_sock_set_state
ID: 1530
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
";

    #[test]
    fn parses_field_offsets() {
        let f = parse_set_state_format(FORMAT_6_18).unwrap();
        assert_eq!(
            f,
            SetStateFormat {
                skaddr: 8,
                oldstate: 16,
                newstate: 20,
                protocol: 30,
                sport: 24,
            }
        );
        assert_eq!(field_offset(FORMAT_6_18, "saddr"), Some(32));
        assert_eq!(field_offset(FORMAT_6_18, "nope"), None);
        assert!(matches!(
            parse_set_state_format("format:\n"),
            Err(TracefsError::NoField { .. })
        ));
    }
}
