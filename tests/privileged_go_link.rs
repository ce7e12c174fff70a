//! Privileged end to end (needs root, a kernel, Go and gcc): parent links through Go services
//! however they were linked (DESIGN.md, rule 7). Three examples/http-hello services (front,
//! back, side), all built one way: `-linkmode=external`, or with a real cgo dependency (`-tags
//! cgotls`, a C `__thread` variable that moves Go's goroutine slot in TLS to -16), each plain,
//! `-s -w` and through `strip`. front's /fanout calls back twice from child goroutines; its
//! /chain, sent with `Host: side`, calls side from a grandchild goroutine. Every client span of
//! front must sit under the front server span of its request, in its trace, with exactly one
//! server span of back or side under it; and front's syscalls carry their goroutine (its reads
//! of /chain requests are on the handlers' goroutines). Under `CI=true` a missing tool fails the
//! test.

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use support::{Agent, Listening, require_privileges};
use wirespan::testing::cannot_run;

const REQUESTS: usize = 10;

/// One way to build the three services.
struct Variant {
    /// GOTOOLCHAIN (the machine's Go when None).
    toolchain: Option<&'static str>,
    name: &'static str,
    args: &'static [&'static str],
    /// Strip the build with binutils' `strip`.
    strip_tool: bool,
    /// What the agent's report line must say about the goroutine's TLS slot.
    tls_note: Option<&'static str>,
}

const fn variant(
    toolchain: Option<&'static str>,
    name: &'static str,
    args: &'static [&'static str],
    strip_tool: bool,
    tls_note: Option<&'static str>,
) -> Variant {
    Variant {
        toolchain,
        name,
        args,
        strip_tool,
        tls_note,
    }
}

const EXTERNAL: &[&str] = &["-ldflags=-linkmode=external"];
const CGO: &[&str] = &["-tags", "cgotls"];
const CGO_S_W: &[&str] = &["-tags", "cgotls", "-ldflags=-s -w"];
/// The C `__thread` counter moves Go's slot from -8 to -16.
const AT_16: Option<&str> = Some("goroutine TLS slot at -16");
const VARIANTS: [Variant; 7] = [
    variant(None, "external", EXTERNAL, false, None),
    variant(
        None,
        "external-s-w",
        &["-ldflags=-linkmode=external -s -w"],
        false,
        None,
    ),
    variant(None, "external-strip", EXTERNAL, true, None),
    variant(None, "cgo", CGO, false, AT_16),
    variant(None, "cgo-s-w", CGO_S_W, false, AT_16),
    variant(None, "cgo-strip", CGO, true, AT_16),
    variant(Some("go1.22.12"), "cgo-s-w", CGO_S_W, false, AT_16),
];

/// http-hello built with `args` (and stripped by `strip` when `strip_tool`).
fn build(toolchain: Option<&str>, name: &str, args: &[&str], strip_tool: bool) -> Option<PathBuf> {
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/http-hello"
    ));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("golink-{}-{name}", toolchain.unwrap_or("local")));
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .arg("-o")
        .arg(&out)
        .args(args)
        .current_dir(example);
    if let Some(t) = toolchain {
        cmd.env("GOTOOLCHAIN", t);
    }
    if !cmd.arg(".").status().ok()?.success() {
        return None;
    }
    if strip_tool && !Command::new("strip").arg(&out).status().ok()?.success() {
        return None;
    }
    Some(out)
}

/// GET `path` from `addr` with the given Host header on a new connection; the status.
fn get(addr: &str, host: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// (service, span) of every span in the agent's OTLP JSON lines file.
fn spans_of(file: &Path) -> Vec<(String, Value)> {
    let mut spans = Vec::new();
    for line in std::fs::read_to_string(file).unwrap().lines() {
        let request: Value = serde_json::from_str(line).unwrap();
        for rs in request["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    spans.push((service.clone(), span.clone()));
                }
            }
        }
    }
    spans
}

/// Run the topology on `binary` and check every parent; `what` names the variant.
fn check_topology(binary: &Path, what: &str, tls_note: Option<&str>) {
    let start = |name: &str, args: &[&str]| {
        Listening::start(
            Command::new(binary)
                .args(args)
                .env("OTEL_SERVICE_NAME", name),
        )
    };
    let back = start("back", &[]);
    let side = start("side", &[]);
    let front = start("front", &["--backend", &back.addr]);
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "golink-{}.jsonl",
        binary.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&file);
    let ports = [front.port(), back.port(), side.port()];
    let mut args = vec![
        "run",
        "--exporter",
        "file",
        "--output",
        file.to_str().unwrap(),
    ];
    for port in &ports {
        args.extend(["--port", port]);
    }
    let agent = Agent::start(&args);
    let report = agent.report.join("\n");
    let name = binary.file_name().unwrap().to_string_lossy();
    let line = report
        .lines()
        .find(|l| l.contains("go: ") && l.contains(&*name))
        .unwrap_or_else(|| panic!("{what}: no report line for {name}:\n{report}"));
    assert!(line.contains("attached"), "{what}: {line}");
    if let Some(note) = tls_note {
        assert!(line.contains(note), "{what}: {line}");
    }
    assert!(!line.contains("without goroutine ids"), "{what}: {line}");
    for id in 0..REQUESTS {
        assert_eq!(
            get(&front.addr, &front.addr, &format!("/fanout?id={id}")),
            200
        );
        assert_eq!(get(&front.addr, &side.addr, "/chain"), 200, "{what}");
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{what}: {}", stopped.stderr);
    check_parents(&spans_of(&file), what);
    check_syscall_goroutines(&front, &side, what);
}

/// Every client span of front under the front server span of its request, in its trace, with
/// exactly one server span of back (/fanout) or side (/chain) under it.
fn check_parents(spans: &[(String, Value)], what: &str) {
    let by_id: HashMap<&Value, &(String, Value)> =
        spans.iter().map(|s| (&s.1["spanId"], s)).collect();
    let of = |service: &str, kind: u64| -> Vec<&Value> {
        spans
            .iter()
            .filter(|(s, span)| s == service && span["kind"] == kind)
            .map(|(_, span)| span)
            .collect()
    };
    let servers = of("front", 2);
    let clients = of("front", 3);
    let summary = format!(
        "{what}: {} front server spans, {} front client spans, {} spans in all",
        servers.len(),
        clients.len(),
        spans.len()
    );
    assert_eq!(servers.len(), 2 * REQUESTS, "{summary}");
    assert_eq!(clients.len(), 3 * REQUESTS, "{summary}");
    let mut right = 0;
    for client in &clients {
        let parent = by_id
            .get(&client["parentSpanId"])
            .unwrap_or_else(|| panic!("{summary}: client span without its parent: {client}"));
        assert_eq!(parent.0, "front", "{summary}: {client}");
        assert_eq!(parent.1["kind"], 2, "{summary}: {client}");
        assert_eq!(parent.1["traceId"], client["traceId"], "{summary}");
        let name = parent.1["name"].as_str().unwrap();
        let callee = if name == "GET /fanout" {
            "back"
        } else {
            assert_eq!(name, "GET /chain", "{summary}");
            "side"
        };
        let served: Vec<_> = of(callee, 2)
            .into_iter()
            .filter(|s| s["parentSpanId"] == client["spanId"])
            .collect();
        assert_eq!(served.len(), 1, "{summary}: {client}");
        assert_eq!(served[0]["traceId"], client["traceId"], "{summary}");
        right += 1;
    }
    // Each /fanout has its two calls under it, each /chain its one.
    for server in &servers {
        let under = clients
            .iter()
            .filter(|c| c["parentSpanId"] == server["spanId"])
            .count();
        let want = if server["name"] == "GET /fanout" {
            2
        } else {
            1
        };
        assert_eq!(under, want, "{summary}: {server}");
    }
    eprintln!(
        "{summary}: {right} of {} client spans with every parent right",
        clients.len()
    );
}

/// The syscalls of front carry the goroutine that made them (read through the goroutine's TLS
/// slot, wherever the link put it): each /chain request's read is on its handler's goroutine.
fn check_syscall_goroutines(front: &Listening, side: &Listening, what: &str) {
    let pid = front.pid().to_string();
    let agent = Agent::start(&["events", "--json", "--pid", &pid]);
    for _ in 0..REQUESTS {
        assert_eq!(get(&front.addr, &side.addr, "/chain"), 200, "{what}");
    }
    let events = agent.stop().events();
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "go_serve_start" && e["path"] == "/chain")
        .collect();
    let reads: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["type"] == "data"
                && e["direction"] == "ingress"
                && e["payload"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("GET /chain "))
        })
        .collect();
    assert_eq!((starts.len(), reads.len()), (REQUESTS, REQUESTS), "{what}");
    for read in &reads {
        assert_eq!(read["goid_known"], true, "{what}: {read}");
        assert!(
            starts.iter().any(|s| s["goid"] == read["goid"]),
            "{what}: no /chain handler on the read's goroutine: {read}"
        );
    }
    eprintln!(
        "{what}: {} of {REQUESTS} request reads on their handler's goroutine",
        reads.len()
    );
}

#[test]
fn privileged_go_link_modes_keep_every_parent_stripped_or_not() {
    if !require_privileges() {
        return;
    }
    for v in VARIANTS {
        let Some(binary) = build(v.toolchain, v.name, v.args, v.strip_tool) else {
            return cannot_run(&format!(
                "cannot build examples/http-hello {} ({:?})",
                v.name, v.toolchain
            ));
        };
        let what = format!("{} {}", v.toolchain.unwrap_or("local"), v.name);
        check_topology(&binary, &what, v.tls_note);
    }
}
