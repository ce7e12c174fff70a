//! Privileged end to end (needs root, a kernel and Go): grpc-go servers and clients traced with
//! uprobes, across Go and grpc-go versions (go1.22 + grpc-go 1.56, go1.24 + 1.70, the machine's
//! newest Go + 1.85), each built with DWARF and stripped. The server starts before the agent and
//! the client after it. For 1,000 unary calls and 5 server-streaming calls the test checks, call
//! by call: the method, the `traceparent` each call sent (read on both sides), the stream ids,
//! the five-tuple, the gRPC status (OK, or NotFound on every fifth call), the handler goroutine
//! of each stream, the grandchild goroutine it starts and the handler's end; and that nothing
//! crashed.

mod support;

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;
use support::{Agent, Listening, require_privileges};
use wirespan::testing::cannot_run;

/// (Go toolchain, grpc-go version): spread from the oldest supported to the newest.
const MATRIX: [(&str, &str); 3] = [
    ("go1.22.12", "v1.56.3"),
    ("go1.24.11", "v1.70.0"),
    ("go1.26.8", "v1.85.0"),
];
const CALLS: usize = 1000;
const STREAMS: usize = 5;
const SAY: &str = "/wirespan.echo.Echo/Say";
const COUNT: &str = "/wirespan.echo.Echo/Count";

/// Run the client to completion; its pid and whether every call came back as expected. With
/// an agent, the client waits until the agent reports it attached (it was found by its exec),
/// so that no call happens before the uprobes are there.
fn run_client(
    binary: &Path,
    addr: &str,
    calls: usize,
    streams: usize,
    agent: Option<&mut Agent>,
) -> (u32, bool, String) {
    let mut child = Command::new(binary)
        .args(["client", "--target", addr, "--wait-stdin"])
        .args(["--requests", &calls.to_string()])
        .args(["--streams", &streams.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    if let Some(agent) = agent {
        agent.wait_for_line(&format!("pids {pid}): attached"));
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let output = child.wait_with_output().unwrap();
    (
        pid,
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn of_type<'a>(events: &'a [Value], kind: &str, pid: u32) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["pid"] == pid)
        .collect()
}

fn header<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    event["fields"]
        .as_array()?
        .iter()
        .find(|f| f[0] == name)
        .and_then(|f| f[1].as_str())
}

/// Header blocks with a field the probe could not read, at most, per variant and side: a probe
/// cannot fault pages in, so a constant string on a page the program has not touched yet (the
/// first "0" status of a fresh process, say) reads as unreadable. Never as a wrong value.
const UNREADABLE_BUDGET: usize = 5;

/// Whether header `name` of `event` is `want`; a block with an unreadable field counts against
/// the budget instead.
fn expect_header(event: &Value, name: &str, want: &str, unreadable: &mut usize, context: &str) {
    match header(event, name) {
        Some(got) if got == want => {}
        got if event["fields"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f[0].is_null() || f[1].is_null())) =>
        {
            *unreadable += 1;
            assert!(
                *unreadable <= UNREADABLE_BUDGET,
                "{context}: {name} {got:?}: {event}"
            );
        }
        got => panic!("{context}: {name} is {got:?}, want {want:?}: {event}"),
    }
}

/// Call i's traceparent, as the client sends it.
fn traceparent(i: usize) -> String {
    format!("00-0af7651916cd43dd8448eb211c80319c-{:016x}-01", i + 1)
}

#[test]
fn privileged_grpc_go_calls_are_traced_across_go_and_grpc_versions_stripped_or_not() {
    if !require_privileges() {
        return;
    }
    for (toolchain, grpc) in MATRIX {
        for stripped in [false, true] {
            let binary = match support::go_builds::grpc_echo(toolchain, grpc, stripped) {
                Ok(binary) => binary,
                Err(why) => return cannot_run(&format!("cannot build grpc-echo: {why}")),
            };
            let variant = format!("{toolchain} grpc-go {grpc} stripped={stripped}");
            check_variant(&binary, &variant, stripped);
        }
    }
}

fn check_variant(binary: &Path, variant: &str, stripped: bool) {
    // The server starts before the agent (found by the /proc scan), the client after it (found
    // by its exec event).
    let mut server = Listening::start(Command::new(binary).arg("server"));
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let mut agent = Agent::start(&["events", "--json", "--port", &port]);
    let report = agent.report.join("\n");
    let server_line = report
        .lines()
        .find(|l| l.contains(&format!("pids {})", server.child.id())))
        .unwrap_or_else(|| panic!("{variant}: no report line for the server:\n{report}"));
    for function in [
        "(*http2Server).operateHeaders",
        "(*loopyWriter).writeHeader",
    ] {
        assert!(server_line.contains(function), "{variant}: {server_line}");
    }
    // The build info names the Go and grpc-go versions.
    let versions = variant
        .split(" stripped")
        .next()
        .unwrap()
        .replace(" grpc-go", ", grpc-go");
    assert!(server_line.contains(&versions), "{variant}: {server_line}");
    assert_eq!(
        server_line.contains("layout from the offsets table"),
        stripped,
        "{variant}: {server_line}"
    );
    let (client_pid, client_ok, client_out) =
        run_client(binary, &server.addr, CALLS, STREAMS, Some(&mut agent));
    assert!(
        client_ok,
        "{variant}: the client saw wrong answers: {client_out}"
    );
    let stopped = agent.stop();
    // Detached, the server still answers.
    assert!(server.alive(), "{variant}: the server died");
    assert!(
        run_client(binary, &server.addr, 5, 1, None).1,
        "{variant}: after detach"
    );
    let events = stopped.events();
    let summary = stopped.stderr.lines().last().unwrap_or("").to_owned();

    check_client(&events, client_pid, &server.addr, variant, &summary);
    check_server(&events, server.child.id(), &server.addr, variant, &summary);
}

/// The client's calls: method, caller goroutine, stream, connection, headers sent and status.
fn check_client(
    events: &[Value],
    client_pid: u32,
    server_addr: &str,
    variant: &str,
    summary: &str,
) {
    // Client side: one call start and end per unary call, in order on the caller goroutine.
    let starts = of_type(events, "go_grpc_call_start", client_pid);
    let ends = of_type(events, "go_grpc_call_end", client_pid);
    assert_eq!(starts.len(), CALLS, "{variant}: {summary}");
    assert_eq!(ends.len(), CALLS, "{variant}: {summary}");
    let client_sent: HashMap<u64, &Value> = of_type(events, "go_headers", client_pid)
        .into_iter()
        .filter(|h| h["source"] == "sent")
        .map(|h| (h["stream_id"].as_u64().unwrap(), h))
        .collect();
    let client_trailers: HashMap<u64, &Value> = of_type(events, "go_headers", client_pid)
        .into_iter()
        // The last block received on a stream is its trailers.
        .filter(|h| h["source"] == "client_received")
        .map(|h| (h["stream_id"].as_u64().unwrap(), h))
        .collect();
    let mut call_streams = Vec::new();
    let mut unreadable = 0;
    for (i, (start, end)) in starts.iter().zip(&ends).enumerate() {
        assert_eq!(start["method"], SAY, "{variant}");
        assert_eq!(start["goid"], end["goid"], "{variant}: call {i}");
        let want_code = if i % 5 == 4 { 5 } else { 0 };
        let stream = end["stream_id"].as_u64().unwrap();
        assert!(
            stream % 2 == 1,
            "{variant}: call {i}: client stream ids are odd: {end}"
        );
        assert_eq!(end["conn"]["remote"], server_addr, "{variant}: {end}");
        // The headers sent on the call's stream are the call's own.
        let sent = client_sent
            .get(&stream)
            .unwrap_or_else(|| panic!("{variant}: no headers sent on stream {stream}"));
        let context = format!("{variant}: call {i}");
        expect_header(sent, ":path", SAY, &mut unreadable, &context);
        expect_header(
            sent,
            "traceparent",
            &traceparent(i),
            &mut unreadable,
            &context,
        );
        // The status, read from the returned error, agrees with the trailers received.
        let trailers = client_trailers[&stream];
        expect_header(
            trailers,
            "grpc-status",
            &want_code.to_string(),
            &mut unreadable,
            &context,
        );
        assert_eq!(end["status"], want_code, "{variant}: call {i}: {end}");
        call_streams.push(stream);
    }
    let unique: std::collections::HashSet<_> = call_streams.iter().collect();
    assert_eq!(unique.len(), CALLS, "{variant}: one stream per call");
}

/// The server's side of each call: the request headers it read, the goroutine that handled it
/// (and that goroutine's descendants), and the status in its trailers.
fn check_server(
    events: &[Value],
    server_pid: u32,
    server_addr: &str,
    variant: &str,
    summary: &str,
) {
    // Server side: each request's headers, its handler goroutine and its trailers.
    let received: Vec<&Value> = of_type(events, "go_headers", server_pid)
        .into_iter()
        .filter(|h| h["source"] == "server_received")
        .collect();
    assert_eq!(received.len(), CALLS + STREAMS, "{variant}: {summary}");
    let spawns = of_type(events, "go_spawn", server_pid);
    let exits: std::collections::HashSet<u64> = of_type(events, "go_exit", server_pid)
        .iter()
        .filter_map(|e| e["goid"].as_u64())
        .collect();
    let trailers: HashMap<u64, &Value> = of_type(events, "go_headers", server_pid)
        .into_iter()
        .filter(|h| h["source"] == "sent" && h["end_stream"] == true)
        .map(|h| (h["stream_id"].as_u64().unwrap(), h))
        .collect();
    let mut says = 0;
    let mut unreadable = 0;
    for request in &received {
        let stream = request["stream_id"].as_u64().unwrap();
        assert_eq!(
            request["conn"]["local"], server_addr,
            "{variant}: {request}"
        );
        let path = header(request, ":path").unwrap();
        let handler = spawns
            .iter()
            .find(|s| s["stream_id"] == stream && s["parent_goid"] == request["goid"])
            .unwrap_or_else(|| panic!("{variant}: no handler goroutine for stream {stream}"));
        // The handler goroutine ends, and the probes say so (per-goroutine state is dropped).
        assert!(
            exits.contains(&handler["child_goid"].as_u64().unwrap()),
            "{variant}: stream {stream}: handler goroutine never ended"
        );
        if path == SAY {
            let i = says;
            says += 1;
            let context = format!("{variant}: call {i}");
            // The server read call i's own headers.
            expect_header(
                request,
                "traceparent",
                &traceparent(i),
                &mut unreadable,
                &context,
            );
            let want = if i % 5 == 4 { "5" } else { "0" };
            expect_header(
                trailers[&stream],
                "grpc-status",
                want,
                &mut unreadable,
                &context,
            );
            // Successful Say handlers start a child that starts a grandchild: both descend
            // from the stream's handler goroutine.
            // (grpc-go may start goroutines of its own from the handler too.)
            if i % 5 != 4 {
                let children: Vec<&&Value> = spawns
                    .iter()
                    .filter(|s| s["parent_goid"] == handler["child_goid"])
                    .collect();
                assert!(
                    !children.is_empty(),
                    "{variant}: call {i}: no child goroutine"
                );
                assert!(
                    children.iter().any(|child| spawns
                        .iter()
                        .any(|s| s["parent_goid"] == child["child_goid"])),
                    "{variant}: call {i}: no grandchild goroutine: {children:?}"
                );
            }
        } else {
            assert_eq!(path, COUNT, "{variant}");
            expect_header(
                trailers[&stream],
                "grpc-status",
                "0",
                &mut unreadable,
                variant,
            );
        }
    }
    assert_eq!(says, CALLS, "{variant}");
}
