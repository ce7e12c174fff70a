//! Privileged end to end (needs root, a kernel and Go): Go `net/http` handlers and client round
//! trips traced with uprobes on the function entry and on every RET (no uretprobes), in real
//! programs built with three Go toolchains (1.22, 1.24 and the machine's newest), each with
//! DWARF and stripped (layout from the committed table), started before and after the agent.
//! Method, path, host, status, goroutine ids, goroutine ancestry, the connection each request
//! uses and the `traceparent` on it are checked on 1,000 requests; the program never crashes,
//! and keeps serving after the agent detaches. A binary of an unknown layout is skipped with one
//! report line, its syscalls traced.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use support::{Agent, Listening, require_privileges};
use wirespan::testing::cannot_run;

/// examples/http-hello built with `toolchain` (the machine's Go when None). A prebuilt plain
/// build may be named in `WIRESPAN_GO_HELLO` (the qemu guests of `cargo xtask vm-test` have no
/// Go to build with).
fn build(toolchain: Option<&str>, stripped: bool) -> Option<PathBuf> {
    if toolchain.is_none()
        && !stripped
        && let Some(prebuilt) = std::env::var_os("WIRESPAN_GO_HELLO")
    {
        return Some(PathBuf::from(prebuilt));
    }
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/http-hello"
    ));
    let name = format!(
        "go-e2e-{}{}",
        toolchain.unwrap_or("local"),
        if stripped { "-stripped" } else { "" }
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut cmd = Command::new("go");
    cmd.arg("build").arg("-o").arg(&out).current_dir(example);
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    if let Some(t) = toolchain {
        cmd.env("GOTOOLCHAIN", t);
    }
    cmd.arg(".").status().ok()?.success().then_some(out)
}

/// A running http-hello and the address it serves on.
type Service = Listening;

fn start(binary: &Path) -> Service {
    Listening::start(&mut Command::new(binary))
}

/// GET `path` on a new connection; returns the status code and body.
fn get(service: &Service, path: &str) -> (u16, String) {
    get_traced(service, path, None)
}

/// GET `path`, with a `traceparent` whose parent span id is `span` when given.
fn get_traced(service: &Service, path: &str, span: Option<u64>) -> (u16, String) {
    let traceparent = span.map_or_else(String::new, |span| {
        format!("traceparent: {}\r\n", traceparent(span))
    });
    support::http_get(&service.addr, path, &traceparent)
}

/// The one start-up report line about the Go process `pid` (panics unless there is exactly one).
fn report_line(stderr: &str, pid: u32) -> &str {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&format!("pids {pid})")))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
}

/// The tests of this file build and trace the same binaries; run at the same time, their agents'
/// uprobes sit on the same inodes, and a full-suite run once saw a handler count off by one.
/// They run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn traceparent(span: u64) -> String {
    format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span:016x}-01")
}

fn go_events<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[test]
fn privileged_go_net_http_handlers_are_traced_with_goroutines_across_go_versions() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let variants = [None, Some("go1.22.12"), Some("go1.24.11")]
        .into_iter()
        .flat_map(|toolchain| [(toolchain, false), (toolchain, true)]);
    for (toolchain, stripped) in variants {
        let Some(binary) = build(toolchain, stripped) else {
            return cannot_run(&format!(
                "cannot build examples/http-hello with Go {toolchain:?}"
            ));
        };
        let toolchain = format!("{toolchain:?} stripped={stripped}");
        // Started before the agent.
        let service = start(&binary);
        assert_eq!(get(&service, "/hello?name=warmup").0, 200);
        let agent = Agent::start(&[
            "events",
            "--json",
            // The checks read query values (`?name=`) from the captured requests.
            "--show-secrets",
            "--pid",
            &service.pid().to_string(),
        ]);
        let line = report_line(&agent.report.join("\n"), service.pid()).to_owned();
        assert!(
            line.contains(
                "attached runtime.newproc.func1 → runtime.runqput, runtime.goexit1, http.serverHandler.ServeHTTP, \
                 http.(*Transport).roundTrip, http.(*persistConn).roundTrip"
            ),
            "{line}"
        );
        // A stripped binary has no DWARF: its layout comes from the committed table.
        assert_eq!(
            line.contains("layout from the offsets table"),
            stripped,
            "{line}"
        );
        let mut expected = Vec::new();
        for i in 0..1000 {
            let path = if i % 10 == 9 {
                "/chain".to_owned()
            } else {
                format!("/hello?name=n{i}")
            };
            let (status, _) = get_traced(&service, &path, Some(i + 1));
            assert_eq!(
                status, 200,
                "request {i} failed: the program must keep working"
            );
            expected.push(path);
        }
        let stopped = agent.stop();
        // Detached: the program still serves.
        assert_eq!(get(&service, "/hello?name=after").0, 200);
        let events = stopped.events();
        let starts = go_events(&events, "go_serve_start");
        let ends = go_events(&events, "go_serve_end");
        // /chain serves itself and, from a grandchild goroutine, one /hello: 1,100 handlers.
        let summary = stopped.stderr.lines().last().unwrap_or("").to_owned();
        assert_eq!(starts.len(), 1100, "{toolchain:?}: {summary}");
        assert_eq!(ends.len(), 1100, "{toolchain:?}: {summary}");
        let mut next_expected = expected
            .iter()
            .map(|p| p.split('?').next().unwrap())
            .peekable();
        for start in &starts {
            assert_eq!(start["method"], "GET");
            assert_eq!(start["host"], service.addr.as_str());
            assert!(start["goid"].as_u64().unwrap() > 0);
            // Each handler's end carries its goroutine and the status it wrote.
            let end = ends.iter().find(|e| {
                e["goid"] == start["goid"] && e["ts_ns"].as_u64() > start["ts_ns"].as_u64()
            });
            let end = end.unwrap_or_else(|| panic!("no end for {start}"));
            assert_eq!(end["status"], 200, "{end}");
        }
        // Requests come in the order they were made (a /chain's inner /hello in between).
        for start in &starts {
            let path = start["path"].as_str().unwrap();
            if next_expected.peek() == Some(&path) {
                next_expected.next();
            }
        }
        assert!(
            next_expected.next().is_none(),
            "every request was seen, in order"
        );
        assert_eq!(starts.iter().filter(|s| s["path"] == "/chain").count(), 100);
        let reads = check_reads_carry_goroutines(&events, &starts, service.pid());
        check_connections(&events, &starts, &reads, &service.addr);
        drop(service);
    }
}

/// The syscalls that read each request carry the goroutine that served it: the Go request
/// context sits next to its syscall events. Returns the service's reads.
fn check_reads_carry_goroutines<'a>(
    events: &'a [Value],
    starts: &[&Value],
    pid: u32,
) -> Vec<&'a Value> {
    let reads: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "data" && e["pid"] == pid && e["direction"] == "ingress")
        .collect();
    let mut joined = 0;
    // net/http's background read (started while a handler runs on a keep-alive connection)
    // reads one byte: a request that arrives then is read as "G" on that goroutine, and the
    // rest ("ET /path ...") by the connection's goroutine, which serves it.
    let mut last_on_conn: std::collections::HashMap<u64, &str> = std::collections::HashMap::new();
    for read in &reads {
        let payload = read["payload"].as_str().unwrap_or("");
        let conn = read["conn_id"].as_u64().unwrap_or_default();
        let after_g = last_on_conn.insert(conn, payload) == Some("G");
        let head = if after_g {
            payload.strip_prefix("ET ")
        } else {
            payload.strip_prefix("GET ")
        };
        let Some(target) = head.and_then(|p| p.split(' ').next()) else {
            continue;
        };
        assert_eq!(read["goid_known"], true, "{read}");
        let path = target.split('?').next().unwrap();
        let served = starts
            .iter()
            .find(|s| s["goid"] == read["goid"] && s["path"] == path);
        assert!(
            served.is_some(),
            "no handler on goroutine {} for {target}: {read}",
            read["goid"]
        );
        joined += 1;
    }
    assert_eq!(
        joined, 1100,
        "every request read was tied to its handler's goroutine"
    );
    reads
}

/// Each handler names the connection it serves, and each outbound request the pooled
/// connection it goes out on; the bytes on that connection carry the request's own headers
/// (its `traceparent`), which is where wirespan reads them (see `GoConnEvent`).
fn check_connections(events: &[Value], starts: &[&Value], reads: &[&Value], addr: &str) {
    let conns = go_events(events, "go_conn");
    let conn_of = |start: &Value, role: &str| {
        conns
            .iter()
            .find(|c| {
                c["role"] == role
                    && c["goid"] == start["goid"]
                    && c["ts_ns"].as_u64() >= start["ts_ns"].as_u64()
            })
            .map_or_else(
                || panic!("no {role} connection for {start}"),
                |c| c["conn"].clone(),
            )
    };
    let mut traced = 0;
    for start in starts {
        let conn = conn_of(start, "server");
        assert_eq!(conn["local"], addr, "{conn}");
        let on_conn = |d: &&&Value| {
            format!("{}:{}", d["daddr"].as_str().unwrap(), d["dport"]) == conn["remote"]
        };
        // Ports are reused over a thousand connections: the request is the last read on this
        // address pair before the handler started.
        let request = reads
            .iter()
            .filter(on_conn)
            .filter(|d| d["ts_ns"].as_u64() <= start["ts_ns"].as_u64())
            .max_by_key(|d| d["ts_ns"].as_u64())
            .unwrap_or_else(|| panic!("no bytes on {conn} for {start}"));
        let payload = request["payload"].as_str().unwrap();
        // The client's own requests carry a traceparent naming the request's index.
        if let Some(name) = payload
            .split_once("name=n")
            .and_then(|(_, rest)| rest.split(' ').next())
        {
            let i: u64 = name.parse().unwrap();
            assert!(
                payload.contains(&format!("traceparent: {}", traceparent(i + 1))),
                "{payload}"
            );
            traced += 1;
        }
    }
    // 900 /hello?name=n<i> (the /chain requests carry their traceparent too, unchecked).
    assert_eq!(traced, 900);
    // Outbound: each /chain's round trip names the pooled connection it used, whichever
    // goroutine dialled it.
    let clients = go_events(events, "go_client_start");
    assert_eq!(clients.len(), 100);
    let mut remotes = std::collections::HashSet::new();
    for client in clients {
        let conn = conn_of(client, "client");
        assert_eq!(conn["remote"], addr, "{conn}");
        remotes.insert(conn["local"].as_str().unwrap().to_owned());
    }
    assert!(
        remotes.len() < 100,
        "keep-alive: requests reuse pooled connections ({} used)",
        remotes.len()
    );
}

#[test]
fn privileged_go_program_started_after_the_agent_is_found_by_its_exec_and_traced() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(binary) = build(None, false) else {
        return cannot_run("cannot build examples/http-hello");
    };
    let mut agent = Agent::start(&["events", "--json", "--show-secrets"]);
    let service = start(&binary);
    agent.wait_for_line(&format!(
        "pids {}): attached runtime.newproc.func1 → runtime.runqput, runtime.goexit1, http.serverHandler.ServeHTTP, http.(*Transport).roundTrip, http.(*persistConn).roundTrip",
        service.pid()
    ));
    for i in 0..20 {
        assert_eq!(get(&service, &format!("/hello?name=late{i}")).0, 200);
    }
    let stopped = agent.stop();
    let events = stopped.events();
    let starts: Vec<&Value> = go_events(&events, "go_serve_start")
        .into_iter()
        .filter(|e| e["pid"] == service.pid())
        .collect();
    assert_eq!(starts.len(), 20, "{}", stopped.stderr);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "exec" && e["pid"] == service.pid())
    );
}

#[test]
fn privileged_go_binary_of_an_unknown_layout_is_skipped_in_one_line_and_its_syscalls_still_traced()
{
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    // Go 1.19, stripped: no DWARF, and three minor versions from the nearest table entry.
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/http-hello"
    ));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-hello-go1.19");
    std::fs::create_dir_all(&dir).unwrap();
    // main.go, its HTTPS set-up and the cgo-free half of its build-tagged pair.
    for file in ["main.go", "tls.go", "nocgo.go"] {
        std::fs::copy(example.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("go.mod"),
        "module wirespan.dev/examples/http-hello\n\ngo 1.19\n",
    )
    .unwrap();
    let binary = dir.join("http-hello");
    let built = Command::new("go")
        .args(["build", "-ldflags=-s -w", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&dir)
        .env("GOTOOLCHAIN", "go1.19.13")
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        return cannot_run("cannot build examples/http-hello with go1.19.13");
    }
    let service = start(&binary);
    let agent = Agent::start(&[
        "events",
        "--json",
        // The checks read query values (`?name=`) from the captured requests.
        "--show-secrets",
        "--pid",
        &service.pid().to_string(),
    ]);
    assert_eq!(get(&service, "/hello?name=old").0, 200);
    let stopped = agent.stop();
    let line = report_line(&stopped.stderr, service.pid());
    assert!(line.contains("skipped: no DWARF"), "{}", line);
    assert!(
        line.contains("no offsets table entry near go1.19.13"),
        "{}",
        line
    );
    let events = stopped.events();
    assert_eq!(
        go_events(&events, "go_serve_start").len(),
        0,
        "no layout, no Go events"
    );
    assert!(events.iter().any(|e| {
        e["type"] == "data"
            && e["payload"]
                .as_str()
                .unwrap_or("")
                .starts_with("GET /hello?name=old")
    }));
}
