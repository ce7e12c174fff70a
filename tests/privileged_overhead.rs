//! Privileged (needs root and a kernel; under `CI=true` it fails rather than skips): what a
//! request costs the traced program in uprobe hits, counted from the kernel's `run_cnt` of the
//! agent's own programs (`kernel.bpf_stats_enabled`), not timed.
//!
//! Two copies of examples/http-hello (two binaries, so each gets its own attachment): `plain`
//! serves /hello and never calls out; `caller` serves /fanout, which calls plain twice from
//! child goroutines. Once plain has served without calling out for the agent's quiet period, its
//! requests trigger no uprobe program at all; caller's /fanout triggers only the probes meant
//! for it, one client probe pair per outbound call; and every /fanout trace still has its
//! parents right.

mod support;

use std::{collections::HashMap, fs, time::Duration};

use support::{
    require_privileges,
    shapes::{agent_with, build_go, check_fanout, get, go_service, read_spans, tmp},
};

/// Requests per phase.
const REQUESTS: u64 = 200;
const FANOUTS: u64 = 50;

/// Programs a /fanout request may trigger (kernel names, cut to 15 bytes): the handler and
/// goroutine probes of a program that calls out, and the client probes of its calls.
const FANOUT_PROGRAMS: [&str; 7] = [
    "go_serve_http",
    "go_serve_http_r",
    "go_spawned",
    "go_goexit",
    "go_round_trip",
    "go_round_trip_r",
    "go_persist_conn",
];

/// `run_cnt` of each BPF program process `pid` holds, by (kernel) name, summed over programs
/// of the same name (a multi-uprobe twin under its program's name).
fn program_runs(pid: u32) -> HashMap<String, u64> {
    let names: HashMap<u32, String> = aya::programs::loaded_programs()
        .flatten()
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect();
    let mut runs = HashMap::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(count)) = (field("prog_id:"), field("run_cnt:")) {
            let name = names.get(&(id as u32)).cloned().unwrap_or_default();
            // A multi-uprobe twin counts as its program (`go_round_trip_m`).
            let name = name.strip_suffix("_m").map_or(name.clone(), str::to_owned);
            *runs.entry(name).or_default() += count;
        }
    }
    runs
}

/// Hits per program between two readings, leaving out programs that did not run.
fn hits(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn privileged_a_plain_server_pays_no_uprobe_hit_and_a_fanout_only_its_calls() {
    if !require_privileges() {
        return;
    }
    let Some(hello) = build_go("http-hello") else {
        return;
    };
    let plain_binary = tmp("overhead-plain-hello");
    let _ = fs::remove_file(&plain_binary);
    fs::copy(&hello, &plain_binary).unwrap();
    // run_cnt counts only while statistics are on; the bench turns them on too.
    fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").unwrap();

    let plain = go_service(&plain_binary, "plain", &["--listen", "127.0.0.1:0"]);
    let backend = format!("127.0.0.1:{}", plain.port());
    let caller = go_service(
        &hello,
        "caller",
        &["--listen", "127.0.0.1:0", "--backend", &backend],
    );
    let file = tmp("overhead-spans.jsonl");
    // Only these two programs get probes: run_cnt counts every process's hits.
    let (plain_pid, caller_pid) = (plain.pid().to_string(), caller.pid().to_string());
    let mut agent = agent_with(
        &file,
        &[plain.port(), caller.port()],
        &[
            "--pid",
            &plain_pid,
            "--pid",
            &caller_pid,
            "--serving-probes-quiet-secs",
            "2",
        ],
    );
    // caller calls out at once, so its serving probes stay; plain only serves.
    for id in 0..3 {
        assert_eq!(
            get("127.0.0.1", &caller.port(), &format!("/fanout?id={id}")),
            200
        );
    }
    // (Other Go programs on the machine get lines of their own.)
    agent.wait_for_line("overhead-plain-hello: serving probes off");
    // caller's last goroutines of those requests may still be ending.
    std::thread::sleep(Duration::from_millis(500));

    let before = program_runs(agent.pid());
    for i in 0..REQUESTS {
        assert_eq!(
            get("127.0.0.1", &plain.port(), &format!("/hello?name=p{i}")),
            200
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let plain_hits = hits(&before, &program_runs(agent.pid()));
    let uprobe_hits: HashMap<_, _> = plain_hits
        .iter()
        .filter(|(name, _)| name.starts_with("go_"))
        .collect();
    assert!(
        uprobe_hits.is_empty(),
        "a plain /hello must trigger no uprobe program: {uprobe_hits:?}"
    );
    // The counting itself works: the syscall tracepoints ran for those requests.
    let tracepoint_runs: u64 = plain_hits
        .iter()
        .filter(|(name, _)| name.starts_with("sys_"))
        .map(|(_, n)| n)
        .sum();
    assert!(tracepoint_runs >= REQUESTS, "{plain_hits:?}");

    check_fanout_hits(agent.pid(), &caller.port());

    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans = read_spans(&file);
    for id in 0..3 + FANOUTS {
        check_fanout(&spans, id, "caller", None, "plain");
    }
    let plain_servers = spans
        .iter()
        .filter(|s| s.service == "plain" && s.kind == 2 && s.name.contains("/hello"))
        .count();
    // Its own /hello requests, and the two calls of each /fanout.
    assert_eq!(plain_servers as u64, REQUESTS + 2 * (3 + FANOUTS));
}

/// Hits of /fanout requests to `port`: only the intended probes, one client probe pair per
/// outbound call.
fn check_fanout_hits(agent: u32, port: &str) {
    let before = program_runs(agent);
    for id in 3..3 + FANOUTS {
        assert_eq!(get("127.0.0.1", port, &format!("/fanout?id={id}")), 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    let fanout_hits = hits(&before, &program_runs(agent));
    let unexpected: Vec<_> = fanout_hits
        .keys()
        .filter(|name| name.starts_with("go_") && !FANOUT_PROGRAMS.contains(&name.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "unexpected probes: {fanout_hits:?}");
    // One client probe pair per outbound call: two calls per /fanout.
    for program in ["go_round_trip", "go_persist_conn"] {
        assert_eq!(
            fanout_hits.get(program).copied().unwrap_or(0),
            2 * FANOUTS,
            "{program}: {fanout_hits:?}"
        );
    }
    let per_request: Vec<String> = FANOUT_PROGRAMS
        .iter()
        .map(|p| {
            let n = fanout_hits.get(*p).copied().unwrap_or(0);
            format!("{p} {}.{}", n / FANOUTS, (n % FANOUTS) * 10 / FANOUTS)
        })
        .collect();
    eprintln!("uprobe hits per /fanout: {}", per_request.join(", "));
}
