//! Privileged end to end (needs root, a kernel, Go, Python and util-linux's `setpriv`): least
//! privilege. The agent runs as an unprivileged user (uid 65534) holding only the capabilities
//! `load::privilege::NEEDED` names, as ambient capabilities within a bounding set of just those
//! (what systemd's `User=`, `AmbientCapabilities=` and `CapabilityBoundingSet=` give), and
//! traces servers owned by root: a Python `http.server`, and a Go `net/http` server kept in a
//! root-only directory, whose uprobes must attach, whose route comes from its memory and whose
//! service name from its environment. Then, for each of those capabilities, an agent without
//! it stops at start with one line naming it and what it is for.

mod support;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use support::{Agent, HttpServer, Listening, file_spans, http_get, require_privileges, span_attr};
use wirespan::{load::privilege::NEEDED, testing::cannot_run};

/// The user the agent runs as: `nobody`, which owns nothing the test touches.
const NOBODY: &str = "65534";

/// A scratch directory the unprivileged agent can use, removed when dropped: the agent binary
/// copied to where uid 65534 may execute it (the checkout may sit under a root-only directory),
/// an output directory it owns, and a root-only directory for the traced Go binary.
struct Scratch {
    root: PathBuf,
    agent: PathBuf,
    out: PathBuf,
    private: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        // The tests of this file run at once: one directory each.
        let root = std::env::temp_dir().join(format!(
            "wirespan-caps-{}-{}",
            std::process::id(),
            support::gettid()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let out = root.join("out");
        let private = root.join("private");
        for (dir, mode) in [(&root, 0o755), (&out, 0o755), (&private, 0o700)] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
        let agent = root.join("wirespan");
        std::fs::copy(support::AGENT, &agent).unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            root,
            agent,
            out,
            private,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `setpriv` running `agent` as uid/gid 65534 with exactly `caps` (capabilities(7) names, e.g.
/// `CAP_SYS_PTRACE`) as its ambient, inheritable and bounding sets.
fn as_nobody_with(agent: &Path, caps: &[&str]) -> Command {
    let mut list = String::new();
    for cap in caps {
        list.push_str(",+");
        list.push_str(&cap.trim_start_matches("CAP_").to_ascii_lowercase());
    }
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps=-all{list}"))
        .arg(format!("--ambient-caps=-all{list}"))
        .arg(format!("--bounding-set=-all{list}"))
        .arg(agent);
    command
}

fn needed_names() -> Vec<&'static str> {
    NEEDED.iter().map(|n| n.capability.name()).collect()
}

/// Whatever keeps this test from running here, as `cannot_run` words it.
fn missing_tools() -> Option<String> {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs("setpriv", "--version") {
        return Some("util-linux's setpriv is not installed".into());
    }
    if !runs("python3", "--version") {
        return Some("python3 is not installed".into());
    }
    None
}

#[test]
fn privileged_unprivileged_user_with_only_the_needed_capabilities_traces_root_servers() {
    if !require_privileges() {
        return;
    }
    if let Some(why) = missing_tools() {
        return cannot_run(&why);
    }
    let Some(built) = support::go_build("examples/http-hello", "caps-http-hello") else {
        return cannot_run("cannot build examples/http-hello with Go");
    };
    let scratch = Scratch::new();
    // Root's binary in a root-only directory: the agent reads it through /proc/<pid>/exe
    // (uprobes) and by its path (routes), as it would a service's binary under /root or /srv.
    let go_binary = scratch.private.join("caps-http-hello");
    std::fs::copy(&built, &go_binary).unwrap();
    let mut go = Command::new(&go_binary);
    go.env("OTEL_SERVICE_NAME", "caps-go");
    let go = Listening::start(&mut go);
    let python = HttpServer::start("127.0.0.1", &[("a.txt", b"least privilege\n")]);
    let spans_file = scratch.out.join("spans.jsonl");

    let mut command = as_nobody_with(&scratch.agent, &needed_names());
    command
        .args(["run", "--exporter", "file", "--output"])
        .arg(&spans_file)
        .args(["--pid", &go.pid().to_string()])
        .args(["--pid", &python.pid().to_string()])
        .stdout(Stdio::piped());
    let agent = Agent::try_start_command(command).unwrap_or_else(|printed| {
        panic!("the agent did not become ready as uid 65534:\n{printed}")
    });
    let report = agent.report.join("\n");
    for _ in 0..3 {
        assert_eq!(http_get(&go.addr, "/items/42", "").0, 200);
        let python_addr = format!("127.0.0.1:{}", python.port);
        assert_eq!(http_get(&python_addr, "/a.txt", "").0, 200);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    // The Go binary was found through /proc/<pid>/exe and its uprobes attached.
    let go_line = report
        .lines()
        .find(|l| l.contains(&format!("pids {})", go.pid())))
        .unwrap_or_else(|| panic!("no report line about the Go server:\n{report}"));
    assert!(
        go_line.contains("attached") && go_line.contains("http.serverHandler.ServeHTTP"),
        "{go_line}"
    );
    for line in report
        .lines()
        .filter(|l| l.contains("go:") || l.contains("tls:"))
    {
        assert!(
            !line.contains("denied") && !line.contains("not permitted"),
            "a probe was refused: {line}\n{report}"
        );
    }

    let spans = file_spans(&spans_file);
    let described = support::describe_spans(&spans);
    // The Go server's spans: named from its environment (/proc/<pid>/environ, or the exec
    // event), routed by the pattern read from its memory (/proc/<pid>/mem) at the server the
    // ServeHTTP uprobe reported.
    let go_server: Vec<_> = spans
        .iter()
        .filter(|(service, span)| service == "caps-go" && span["kind"] == 2)
        .collect();
    assert_eq!(go_server.len(), 3, "{described}");
    for (_, span) in &go_server {
        assert_eq!(span["name"], "GET /items/{id}", "{described}");
        assert_eq!(
            span_attr(span, "wirespan.route.source").and_then(|v| v["stringValue"].as_str()),
            Some("program"),
            "{span}"
        );
    }
    let python_server = spans
        .iter()
        .filter(|(_, span)| span["kind"] == 2 && span["name"] == "GET /a.txt")
        .count();
    assert_eq!(python_server, 3, "{described}");
}

#[test]
fn privileged_each_needed_capability_left_out_stops_the_agent_at_start_naming_it() {
    if !require_privileges() {
        return;
    }
    if let Some(why) = missing_tools() {
        return cannot_run(&why);
    }
    let scratch = Scratch::new();
    let all = needed_names();
    for need in NEEDED {
        let name = need.capability.name();
        let rest: Vec<&str> = all.iter().copied().filter(|c| *c != name).collect();
        let out = as_nobody_with(&scratch.agent, &rest)
            .args(["run", "--exporter", "file", "--output"])
            .arg(scratch.out.join("never.jsonl"))
            .args(["--duration", "1"])
            .output()
            .expect("setpriv runs the agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "without {name}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "without {name}, one line: {stderr}");
        let expected = format!("wirespan: error: this process lacks {need}. ");
        assert!(lines[0].starts_with(&expected), "without {name}: {stderr}");
        for other in rest {
            assert!(
                !lines[0].contains(&format!("{other}:")),
                "without {name}, {other} is named missing too: {stderr}"
            );
        }
    }
}
