//! Privileged end to end (needs root and a kernel): TCP connects go from the kernel through the
//! ring buffer to the agent's output with the right five-tuple, pid and tid, in whichever attach
//! mode this kernel allows.

mod support;

use std::{
    collections::HashSet,
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{Arc, Mutex},
};

use support::{Agent, gettid, require_privileges};

fn connects_to(events: &[serde_json::Value], port: u16) -> Vec<&serde_json::Value> {
    let pid = std::process::id();
    events
        .iter()
        .filter(|e| e["type"] == "connect" && e["pid"] == pid && e["dport"] == port)
        .collect()
}

fn socket_addr(event: &serde_json::Value, addr: &str, port: &str) -> SocketAddr {
    let ip = event[addr].as_str().unwrap().parse().unwrap();
    SocketAddr::new(ip, event[port].as_u64().unwrap() as u16)
}

#[test]
fn privileged_connect_event_has_the_client_five_tuple_pid_and_tid() {
    if !require_privileges() {
        return;
    }
    let agent = Agent::start(&["events", "--json"]);
    let mut expected = Vec::new();
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let listener = TcpListener::bind(bind).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        expected.push((client.local_addr().unwrap(), client.peer_addr().unwrap()));
    }
    let tid = gettid();
    let stopped = agent.stop();
    assert!(stopped.status.success(), "agent failed: {}", stopped.stderr);
    let events = stopped.events();
    for (local, peer) in expected {
        let seen = connects_to(&events, peer.port());
        assert_eq!(
            seen.len(),
            1,
            "one event for {local} -> {peer}, got {seen:?}"
        );
        let event = seen[0];
        assert_eq!(socket_addr(event, "saddr", "sport"), local);
        assert_eq!(socket_addr(event, "daddr", "dport"), peer);
        assert_eq!(event["pid"], std::process::id());
        assert_eq!(event["tid"], tid);
        assert!(event["comm"].as_str().is_some_and(|c| !c.is_empty()));
    }
}

#[test]
fn privileged_startup_report_names_the_mode_of_each_hook_and_why_others_failed() {
    if !require_privileges() {
        return;
    }
    let stopped = Agent::start(&["events", "--json"]).stop();
    let report = stopped.stderr;
    for hook in wirespan::load::HOOKS {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("wirespan: hook {}: attached ", hook.name)))
            .unwrap_or_else(|| panic!("no attach line for {} in:\n{report}", hook.name));
        let mode = line
            .split("attached ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        // Every mode before the attached one must be listed with its error.
        for earlier in hook.modes.iter().take_while(|m| m.mode.to_string() != mode) {
            let prefix = format!("wirespan:   {} (", earlier.mode);
            assert!(
                report
                    .lines()
                    .any(|l| l.starts_with(&prefix) && l.contains(") failed: ")),
                "no failure line for {} in:\n{report}",
                earlier.mode
            );
        }
    }
    // This machine class refuses kprobes (no kprobe PMU) and fentry: tracepoint mode, and the
    // report carries each exact reason.
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert!(
            report.contains(
                "kprobe (tcp_connect) failed: `/sys/bus/event_source/devices/kprobe/type`"
            ),
            "{report}"
        );
        if report.contains("hook tcp_connect: attached tracepoint") {
            assert!(report.contains("fentry (tcp_connect) failed: "), "{report}");
        }
    }
}

#[test]
fn privileged_200_connects_from_8_threads_give_exactly_200_events() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let acceptor = std::thread::spawn(move || {
        for _ in 0..200 {
            drop(listener.accept().unwrap());
        }
    });
    let agent = Agent::start(&["events", "--json"]);
    let clients = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let clients = Arc::clone(&clients);
            std::thread::spawn(move || {
                let tid = gettid();
                for _ in 0..25 {
                    let stream = TcpStream::connect(server).unwrap();
                    clients
                        .lock()
                        .unwrap()
                        .push((stream.local_addr().unwrap().port(), tid));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    acceptor.join().unwrap();
    let stopped = agent.stop();
    let events = stopped.events();
    let seen = connects_to(&events, server.port());
    let expected: HashSet<(u64, u64)> = clients
        .lock()
        .unwrap()
        .iter()
        .map(|&(port, tid)| (u64::from(port), u64::from(tid)))
        .collect();
    let got: Vec<(u64, u64)> = seen
        .iter()
        .map(|e| (e["sport"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        got.len(),
        200,
        "exactly 200 events; stderr:\n{}",
        stopped.stderr
    );
    let unique: HashSet<_> = got.iter().copied().collect();
    assert_eq!(unique.len(), 200, "no duplicates");
    assert_eq!(
        unique, expected,
        "every event has the port and thread of a real client"
    );
    assert!(
        stopped.stderr.contains("lost in kernel: none"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn privileged_duration_ends_the_run_cleanly_and_keeps_late_events() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = Agent::start(&["events", "--duration", "1.5"]);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let started = std::time::Instant::now();
    let stopped = agent.stop_after_exit();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let line = format!(
        "{} -> {}",
        client.local_addr().unwrap(),
        client.peer_addr().unwrap()
    );
    assert!(
        stopped
            .stdout
            .lines()
            .any(|l| l.contains(" connect ") && l.ends_with(&line)),
        "no `{line}` in:\n{}",
        stopped.stdout
    );
    assert!(
        stopped.stderr.contains("wirespan: stopped: "),
        "{}",
        stopped.stderr
    );
}

#[test]
fn privileged_without_bpf_capabilities_exits_1_naming_them() {
    if !require_privileges() {
        return;
    }
    // Root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN in its bounding set: exec leaves
    // them out of the effective set.
    let out = std::process::Command::new("setpriv")
        .args([
            "--bounding-set",
            "-bpf,-perfmon,-sys_admin",
            support::AGENT,
            "run",
            "--duration",
            "1",
        ])
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lacks CAP_BPF and CAP_PERFMON"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, no backtrace: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn privileged_a_required_hook_without_a_working_mode_stops_the_agent_naming_each_error() {
    if !require_privileges() {
        return;
    }
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        // Kprobes work here: forcing them cannot fail (the qemu kernel tests cover that mode).
        return;
    }
    // Only kprobes allowed, on a kernel without them: tcp_connect has no mode left.
    let out = std::process::Command::new(support::AGENT)
        .args(["events", "--attach-mode", "kprobe", "--duration", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no attach mode of required hook tcp_connect worked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kprobe (tcp_connect): `/sys/bus/event_source/devices/kprobe/type`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}
