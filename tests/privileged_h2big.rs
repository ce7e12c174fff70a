//! Privileged end to end (needs root, a kernel and Python with grpcio, installed with pip when
//! missing): HTTP/2 framing and HPACK state survive messages of any size without raising
//! `--capture-bytes`. A Python grpcio client calls a Python grpcio server on one connection
//! (no Go uprobes help there): small calls, then unary calls of 64 KiB to 4 MiB each way
//! interleaved with small ones, several at once on concurrent streams. Every call, on both
//! sides, must keep its gRPC method and status, and every server span its parent (the client
//! span at the other end), through the file exporter (OTLP JSON lines).

mod support;

use std::{collections::HashMap, path::Path, process::Command};

use serde_json::Value;
use support::{Agent, Listening, file_spans, python_module, require_privileges, span_attr};
use wirespan::testing::cannot_run;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/grpc_big.py");

/// Waves of calls on one channel: `s` is a small call, a number a large call of that many
/// bytes each way; `+` joins calls made at once (concurrent streams).
const PLAN: &str = "s,s,s,307200,307200,307200,s,s,s,s,s,65536,s+65536+s,1048576+s,\
                    s+4194304+s+s,2097152+307200+s+65536,s,s,4194304,s,s";

fn planned() -> (usize, usize) {
    let calls: Vec<&str> = PLAN.split([',', '+']).collect();
    let small = calls.iter().filter(|c| **c == "s").count();
    (small, calls.len() - small)
}

#[test]
fn privileged_h2big_grpc_python_calls_keep_method_status_and_parent_through_large_messages() {
    if !require_privileges() {
        return;
    }
    if let Err(why) = python_module("grpc", "grpcio") {
        return cannot_run(&why);
    }
    let mut server = Listening::start(
        Command::new("python3")
            .args([SCRIPT, "server"])
            .env("OTEL_SERVICE_NAME", "big-server"),
    );
    let port = server.addr.clone();
    assert!(port.parse::<u16>().is_ok(), "the server printed {port:?}");
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("h2big-spans.jsonl");
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "file",
        "--output",
        file.to_str().unwrap(),
        "--port",
        &port,
    ]);
    let client = Command::new("python3")
        .args([SCRIPT, "client", &port, PLAN])
        .env("OTEL_SERVICE_NAME", "big-client")
        .output()
        .unwrap();
    let stopped = agent.stop();
    assert!(server.alive(), "the server died");
    let answers = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "the client saw wrong answers: {answers}{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let summary = stopped.stderr.lines().last().unwrap_or_default().to_owned();
    // The decoder never lost frame sync: every frame header was seen, captured or windowed.
    assert!(!summary.contains("http/2 lost framing"), "{summary}");

    let spans = file_spans(&file);
    let of = |service: &str, kind: u64| -> Vec<&Value> {
        spans
            .iter()
            .filter(|(s, span)| s == service && span["kind"] == kind)
            .map(|(_, span)| span)
            .collect()
    };
    let (clients, servers) = (of("big-client", 3), of("big-server", 2));
    let (small, large) = planned();
    for (side, side_spans) in [("client", &clients), ("server", &servers)] {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for span in side_spans {
            *names.entry(span["name"].as_str().unwrap()).or_default() += 1;
            // The gRPC status of every call, decoded from the trailers that follow its data.
            let status =
                span_attr(span, "rpc.response.status_code").and_then(|v| v["stringValue"].as_str());
            assert_eq!(status, Some("OK"), "{side}: {span}");
        }
        assert_eq!(
            names,
            HashMap::from([("demo.Big/Small", small), ("demo.Big/Large", large)]),
            "{side} spans by name (each call once, none without its method); {summary}"
        );
    }
    let by_id: HashMap<&Value, &Value> = clients.iter().map(|s| (&s["spanId"], *s)).collect();
    for span in &servers {
        let parent = by_id
            .get(&span["parentSpanId"])
            .unwrap_or_else(|| panic!("server span without its client span as parent: {span}"));
        assert_eq!(parent["name"], span["name"], "{span}");
        assert_eq!(parent["traceId"], span["traceId"], "{span}");
    }
    eprintln!(
        "{} calls ({small} small, {large} of 64 KiB to 4 MiB), {} client and {} server spans, every method, status and parent right; {summary}",
        small + large,
        clients.len(),
        servers.len()
    );
}
