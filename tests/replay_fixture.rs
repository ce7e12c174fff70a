//! Unprivileged: recorded event streams replay through the `source` stage, and damaged or foreign
//! files are refused with a clear error (exit 1, one line, no panic).

use std::process::{Command, Output};

use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_wirespan");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/http_keepalive.rec"
);

fn replay(path: &str, json: bool) -> Output {
    let mut cmd = Command::new(AGENT);
    cmd.args(["events", "--replay", path]);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn events(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn fixture_replays_the_whole_keep_alive_conversation() {
    let out = replay(FIXTURE, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = events(&out);
    let kinds = |k: &str| events.iter().filter(|e| e["type"] == k).count();
    assert_eq!(kinds("connect"), 1);
    assert_eq!(kinds("accept"), 1);
    assert_eq!(kinds("close"), 2);
    let connect = events.iter().find(|e| e["type"] == "connect").unwrap();
    let accept = events.iter().find(|e| e["type"] == "accept").unwrap();
    // The two ends of one connection, mirrored.
    assert_eq!(connect["sport"], accept["dport"]);
    assert_eq!(connect["dport"], accept["sport"]);
    let data = |conn: &Value, dir: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["type"] == "data" && e["conn_id"] == *conn && e["direction"] == dir)
            .collect()
    };
    let client_out = data(&connect["conn_id"], "egress");
    let server_in = data(&accept["conn_id"], "ingress");
    let requests: Vec<&str> = client_out
        .iter()
        .map(|e| e["payload"].as_str().unwrap())
        .collect();
    assert_eq!(requests.len(), 3);
    for (request, path) in requests.iter().zip(["/a.txt", "/b.txt", "/a.txt"]) {
        assert!(
            request.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{request}"
        );
    }
    // What the client wrote is what the server read, at the same sequence numbers.
    let seqs = |evs: &[&Value]| -> Vec<(u64, u64)> {
        evs.iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["bytes"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(seqs(&client_out), seqs(&server_in));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 malformed"));
}

#[test]
fn console_replay_shows_the_recorded_wall_clock_times() {
    let out = replay(FIXTURE, false);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    // Recorded on 2026-11-23 between 11:00 and 12:00 UTC (tests/fixtures/README.md).
    assert!(first.starts_with("11:"), "{first}");
    assert!(
        text.lines()
            .any(|l| l.contains(" egress ") && l.contains("\"GET /a.txt HTTP/1.1\\r\\n")),
        "{text}"
    );
}

#[test]
fn damaged_or_foreign_recordings_fail_with_one_clear_line() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let dir = std::env::temp_dir();
    let truncated = dir.join(format!("wirespan-truncated-{}.rec", std::process::id()));
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let foreign = dir.join(format!("wirespan-foreign-{}.rec", std::process::id()));
    std::fs::write(&foreign, b"\x7fELF not a recording at all").unwrap();
    let missing = dir.join("wirespan-no-such-file.rec");

    let out = replay(truncated.to_str().unwrap(), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is truncated at record"), "{stderr}");
    // The complete records before the cut were still delivered.
    assert!(
        events(&out).len() >= 5,
        "complete records before the cut are delivered"
    );

    for (path, message) in [
        (&foreign, "is not a wirespan recording"),
        (&missing, "cannot open recording"),
    ] {
        let out = replay(path.to_str().unwrap(), false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "one line, no backtrace: {stderr}"
        );
    }
    let _ = std::fs::remove_file(truncated);
    let _ = std::fs::remove_file(foreign);
}
