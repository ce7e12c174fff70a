//! The OpenTelemetry resource of each traced process: who made a span. `service.name` is the
//! process's own `OTEL_SERVICE_NAME` (read from its environment, so a service configured for an
//! SDK keeps its name), else its executable's name. Read from `/proc` once per process and
//! cached; a process gone by then keeps what its events said (its command name).

use std::{collections::HashMap, path::PathBuf};

/// One process's resource attributes, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub service_name: String,
    pub attributes: Vec<(String, String)>,
}

/// Reads and caches resources; `/proc` is injected so tests can use a directory of their own.
pub struct Resources {
    proc_root: PathBuf,
    host_name: String,
    show_command_args: bool,
    cache: HashMap<u32, Resource>,
}

/// At most this many processes are cached; the oldest half is dropped beyond it.
const MAX_CACHED: usize = 16_384;

impl Resources {
    #[must_use]
    pub fn new(proc_root: PathBuf, show_command_args: bool) -> Self {
        let host_name = std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
            .map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned());
        Self {
            proc_root,
            host_name,
            show_command_args,
            cache: HashMap::new(),
        }
    }

    /// Resources of a replayed recording: its processes are gone (their pids may now be other
    /// processes'), so only what the events said is used.
    #[must_use]
    pub fn offline() -> Self {
        Self {
            proc_root: PathBuf::from("/nonexistent/wirespan-offline"),
            host_name: "unknown".to_owned(),
            show_command_args: false,
            cache: HashMap::new(),
        }
    }

    /// The resource of process `pid` (whose events named it `comm`).
    pub fn of(&mut self, pid: u32, comm: &str) -> &Resource {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(&pid) {
            let drop: Vec<u32> = self.cache.keys().take(MAX_CACHED / 2).copied().collect();
            for pid in drop {
                self.cache.remove(&pid);
            }
        }
        let (root, host, show_args) = (&self.proc_root, &self.host_name, self.show_command_args);
        self.cache
            .entry(pid)
            .or_insert_with(|| read(root, host, show_args, pid, comm))
    }
}

fn read(root: &std::path::Path, host: &str, show_args: bool, pid: u32, comm: &str) -> Resource {
    let dir = root.join(pid.to_string());
    let env = std::fs::read(dir.join("environ")).unwrap_or_default();
    let env_value = |name: &str| {
        env.split(|b| *b == 0).find_map(|entry| {
            let entry = std::str::from_utf8(entry).ok()?;
            let (key, value) = entry.split_once('=')?;
            (key == name && !value.is_empty()).then(|| value.to_owned())
        })
    };
    let executable = std::fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map_or_else(
            || comm.to_owned(),
            |n| n.trim_end_matches(" (deleted)").to_owned(),
        );
    let service_name = env_value("OTEL_SERVICE_NAME").unwrap_or_else(|| executable.clone());
    let mut attributes = vec![
        ("service.name".to_owned(), service_name.clone()),
        ("process.pid".to_owned(), pid.to_string()),
        ("process.executable.name".to_owned(), executable),
    ];
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    if !cmdline.is_empty() {
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let shown = if show_args {
            args.join(" ")
        } else {
            // Arguments can hold secrets: only the program unless asked.
            args.first().cloned().unwrap_or_default()
        };
        attributes.push(("process.command_args".to_owned(), shown));
    }
    // The process's own OTEL_RESOURCE_ATTRIBUTES (k=v,k=v), as an SDK in it would report them.
    if let Some(extra) = env_value("OTEL_RESOURCE_ATTRIBUTES") {
        for pair in extra.split(',') {
            if let Some((k, v)) = pair.split_once('=')
                && !k.trim().is_empty()
                && k.trim() != "service.name"
            {
                attributes.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    attributes.push(("host.name".to_owned(), host.to_owned()));
    attributes.push(("telemetry.distro.name".to_owned(), "wirespan".to_owned()));
    attributes.push((
        "telemetry.distro.version".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    ));
    Resource {
        service_name,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_from_the_process_environment_else_its_executable() {
        let root = std::env::temp_dir().join(format!("wirespan-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, env) in [(10, "A=1\0OTEL_SERVICE_NAME=front\0"), (11, "A=1\0")] {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("environ"), env).unwrap();
            std::fs::write(dir.join("cmdline"), "/srv/bin\0--token\0secret\0").unwrap();
        }
        let mut resources = Resources::new(root.clone(), false);
        let front = resources.of(10, "bin").clone();
        assert_eq!(front.service_name, "front");
        assert!(
            front
                .attributes
                .contains(&("process.command_args".into(), "/srv/bin".into()))
        );
        assert_eq!(
            resources.of(11, "bin").service_name,
            "bin",
            "the command name when no exe"
        );
        // Gone: what the events said.
        assert_eq!(resources.of(99, "gone").service_name, "gone");
        let _ = std::fs::remove_dir_all(&root);
    }
}
