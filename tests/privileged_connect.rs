//! Privileged end to end (needs root and a kernel): TCP connects go from the kernel through the
//! ring buffer to the agent's output with the right five-tuple, pid and tid, in whichever attach
//! mode this kernel allows; and every attach mode the kernel allows, forced one at a time, gives
//! the same connections and byte counts (`cargo xtask vm-test` runs this in kernels that allow
//! kprobes and fentry).

mod support;

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
};

use support::{Agent, data_of, gettid, require_privileges, total_bytes};

/// Capability numbers (linux/capability.h).
const CAP_SYS_ADMIN: libc::c_ulong = 21;
const CAP_PERFMON: libc::c_ulong = 38;
const CAP_BPF: libc::c_ulong = 39;

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
    // This machine class refuses kprobes (no kprobe PMU) and fentry: tp_btf mode, and the
    // report carries each exact reason.
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert!(
            report.contains(
                "kprobe (tcp_connect) failed: `/sys/bus/event_source/devices/kprobe/type`"
            ),
            "{report}"
        );
        if report.contains("hook tcp_connect: attached tp_btf")
            || report.contains("hook tcp_connect: attached tracepoint")
        {
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
    // them out of the effective set. Dropped in the child itself, so no setpriv is needed (the
    // qemu guests have only busybox).
    let mut cmd = std::process::Command::new(support::AGENT);
    cmd.args(["run", "--duration", "1"]);
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            for cap in [CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF] {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("the agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // CAP_SYS_ADMIN is what the kernel asks for uprobes; without it CAP_BPF and CAP_PERFMON
    // are not enough (see load::privilege).
    assert!(stderr.contains("lacks CAP_SYS_ADMIN: "), "{stderr}");
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

/// The attach modes that must work on this kernel: `WIRESPAN_REQUIRE_ATTACH_MODES`
/// (comma-separated; `cargo xtask vm-test` sets all four in Debian's kernels), else tp_btf and
/// tracepoint (this machine class refuses kprobes and fentry).
fn required_modes() -> Vec<String> {
    std::env::var("WIRESPAN_REQUIRE_ATTACH_MODES")
        .unwrap_or_else(|_| "tp_btf,tracepoint".into())
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

/// One connection (1000 bytes up, 2000 down, then closed at both ends) seen by an agent forced
/// into `mode`, in the agent's words with the real addresses replaced by roles, so runs on
/// different ports compare; or what the agent printed when the mode could not attach.
fn one_connection_in_mode(mode: &str) -> Result<Vec<String>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let port = server_addr.port().to_string();
    let agent = Agent::try_start(
        &["events", "--json", "--attach-mode", mode, "--port", &port],
        Stdio::piped(),
        &[],
    )?;
    let mut client = TcpStream::connect(server_addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(&[b'u'; 1000]).unwrap();
    server.read_exact(&mut [0; 1000]).unwrap();
    server.write_all(&[b'd'; 2000]).unwrap();
    client.read_exact(&mut [0; 2000]).unwrap();
    drop(client);
    drop(server);
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{mode}: {}", stopped.stderr);
    let events = stopped.events();
    let role = |addr: SocketAddr| match addr {
        a if a == server_addr => "server",
        a if a == client_addr => "client",
        _ => "other",
    };
    let hook_modes = |hook: &str| {
        wirespan::load::HOOKS
            .iter()
            .find(|h| h.name == hook)
            .map(|h| {
                h.modes
                    .iter()
                    .map(|m| m.mode.to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let mut seen = Vec::new();
    for e in events.iter().filter(|e| e["pid"] == std::process::id()) {
        let (kind, hook) = match e["type"].as_str().unwrap() {
            "connect" => ("connect", "tcp_connect"),
            "accept" => ("accept", "tcp_accept"),
            "close" => ("close", "tcp_close"),
            _ => continue,
        };
        // A hook that has the forced mode used it; the others kept their own order.
        if hook_modes(hook).iter().any(|m| m == mode) {
            assert_eq!(e["mode"], mode, "{mode}: {e}");
        }
        seen.push(format!(
            "{kind} {} -> {}",
            role(socket_addr(e, "saddr", "sport")),
            role(socket_addr(e, "daddr", "dport"))
        ));
    }
    let pid = std::process::id();
    for (end, addr) in [("client", client_addr), ("server", server_addr)] {
        for direction in ["egress", "ingress"] {
            let bytes = total_bytes(&data_of(&events, pid, addr.port(), direction));
            seen.push(format!("{end} {direction} {bytes} bytes"));
        }
    }
    seen.sort();
    Ok(seen)
}

#[test]
fn privileged_every_attach_mode_gives_the_same_five_tuples_and_byte_counts() {
    if !require_privileges() {
        return;
    }
    let required = required_modes();
    let mut views = Vec::new();
    for mode in ["tp_btf", "tracepoint", "kprobe", "fentry"] {
        match one_connection_in_mode(mode) {
            Ok(view) => views.push((mode, view)),
            Err(printed) => {
                assert!(
                    !required.iter().any(|m| m == mode),
                    "{mode} must attach on this kernel:\n{printed}"
                );
                // Refused: the one line names the hook and the exact reason.
                assert!(
                    printed.contains("no attach mode of required hook")
                        && printed.contains(&format!("{mode} (")),
                    "{mode}: {printed}"
                );
            }
        }
    }
    let expected = [
        "accept server -> client",
        "client egress 1000 bytes",
        "client ingress 2000 bytes",
        "close client -> server",
        "close server -> client",
        "connect client -> server",
        "server egress 2000 bytes",
        "server ingress 1000 bytes",
    ];
    for (mode, view) in &views {
        assert_eq!(view, &expected, "{mode}");
    }
    for mode in &required {
        assert!(
            views.iter().any(|(m, _)| m == mode),
            "{mode} was required and did not run"
        );
    }
}
