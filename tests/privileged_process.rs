//! Privileged end to end (needs root, a kernel, curl, Python and Go): short-lived clients keep
//! their own service names. Each client calls a local server once and exits at once (a job, a
//! CLI, a cron task), started after the agent with its own `OTEL_SERVICE_NAME`; by the time its
//! spans are made it is gone, so its name can only come from what the exec probe read when it
//! started. Ten runs each of curl, a Go one-shot (tests/support/oneshot) and a Python one-shot:
//! every client span must carry its process's name and pid, 30 of 30. A replay of the run's
//! recording (no /proc) names them the same way.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use support::{Agent, HttpServer, require_privileges};
use wirespan::testing::cannot_run;

/// Runs of each client.
const RUNS: usize = 10;

fn build_oneshot() -> Option<PathBuf> {
    support::go_build("tests/support/oneshot", "process-oneshot")
}

/// (service.name, process.pid) of every client span in an OTLP JSON lines file.
fn client_spans(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let request: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in request["resourceSpans"].as_array().unwrap() {
            // Strings, and the pid as an int (a JSON string in the OTLP JSON mapping).
            let attribute = |key: &str| {
                rs["resource"]["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == key)
                    .map(|a| match &a["value"] {
                        v if v["stringValue"].is_string() => {
                            v["stringValue"].as_str().unwrap().to_owned()
                        }
                        v => v["intValue"].to_string().trim_matches('"').to_owned(),
                    })
                    .unwrap_or_default()
            };
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    if span["kind"] == 3 {
                        out.push((attribute("service.name"), attribute("process.pid")));
                    }
                }
            }
        }
    }
    out
}

/// Every run has one client span, named as its process was started.
fn check(spans: &[(String, String)], expected: &BTreeMap<String, String>, what: &str) {
    let got: BTreeMap<String, String> = spans
        .iter()
        .map(|(name, pid)| (pid.clone(), name.clone()))
        .collect();
    assert_eq!(
        spans.len(),
        3 * RUNS,
        "{what}: one client span per run: {spans:?}"
    );
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(pid, name)| got.get(*pid) != Some(name))
        .map(|(pid, name)| format!("pid {pid}: want {name}, got {:?}", got.get(pid)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} client spans misnamed: {wrong:#?}",
        wrong.len(),
        3 * RUNS
    );
}

/// Run each client `RUNS` times, one at a time, each with its own name; pid → that name.
fn run_clients(url: &str, oneshot: &Path) -> BTreeMap<String, String> {
    let python = format!("import urllib.request; urllib.request.urlopen({url:?}).read()");
    // pid → the name its process was started with.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..RUNS {
        let clients: [(String, Command); 3] = [
            (format!("curl-job{i}"), {
                let mut c = Command::new("curl");
                c.args(["-sf", "-o", "/dev/null", url]);
                c
            }),
            (format!("go-job{i}"), {
                let mut c = Command::new(oneshot);
                c.arg(url);
                c
            }),
            (format!("py-job{i}"), {
                let mut c = Command::new("python3");
                c.args(["-c", &python]);
                c
            }),
        ];
        for (name, mut command) in clients {
            let mut child = command
                .env("OTEL_SERVICE_NAME", &name)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let pid = child.id().to_string();
            assert!(child.wait().unwrap().success(), "{name} failed");
            expected.insert(pid, name);
        }
    }
    expected
}

#[test]
fn privileged_process_short_lived_clients_keep_their_service_names() {
    if !require_privileges() {
        return;
    }
    for tool in ["curl", "python3", "go"] {
        if Command::new(tool).arg("--version").output().is_err()
            && Command::new(tool).arg("version").output().is_err()
        {
            return cannot_run(&format!("{tool} is not installed"));
        }
    }
    let Some(oneshot) = build_oneshot() else {
        return cannot_run("go build of tests/support/oneshot failed");
    };
    let server = HttpServer::start("127.0.0.1", &[("a.txt", b"hello")]);
    let port = server.port.to_string();
    let url = format!("http://127.0.0.1:{port}/a.txt");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = tmp.join("process-short-lived.jsonl");
    let recording = tmp.join("process-short-lived.wsrec");
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "file",
        "--output",
        file.to_str().unwrap(),
        "--port",
        &port,
    ]);
    // Recorded by a second agent at the same time, for the replay below.
    let recording_agent = Agent::start(&[
        "record",
        "--output",
        recording.to_str().unwrap(),
        "--port",
        &port,
    ]);

    let expected = run_clients(&url, &oneshot);
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let recorded = recording_agent.stop();
    assert!(recorded.status.success(), "{}", recorded.stderr);

    check(&client_spans(&file), &expected, "live");
    assert!(
        stopped.stderr.contains("processes: "),
        "the summary counts processes: {}",
        stopped.stderr
    );

    // The replay has no /proc of those processes: the recorded exec events name them.
    let replayed = tmp.join("process-short-lived-replay.jsonl");
    let out = Command::new(support::AGENT)
        .args(["run", "--exporter", "file", "--output"])
        .arg(&replayed)
        .arg("--replay")
        .arg(&recording)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&client_spans(&replayed), &expected, "replay");
}

#[test]
fn privileged_process_an_environment_over_the_cap_is_read_whole_while_the_process_lives() {
    if !require_privileges() {
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        return cannot_run("python3 is not installed");
    }
    let server = HttpServer::start("127.0.0.1", &[("a.txt", b"hello")]);
    let port = server.port.to_string();
    let url = format!("http://127.0.0.1:{port}/a.txt");
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("process-big-env.jsonl");
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "file",
        "--output",
        file.to_str().unwrap(),
        "--port",
        &port,
    ]);
    // Variables are passed sorted by name: the padding comes first, so OTEL_SERVICE_NAME lies
    // beyond the event's environment cap. The client waits a moment before its call, alive
    // while the agent reads the rest from /proc.
    let padding = "x".repeat(wirespan_shared::PROCESS_ENV_CAP + 4096);
    let python = format!(
        "import time, urllib.request; time.sleep(1); urllib.request.urlopen({url:?}).read()"
    );
    let mut child = Command::new("python3")
        .args(["-c", &python])
        .env("AAA_PADDING", &padding)
        .env("OTEL_SERVICE_NAME", "big-env-job")
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    assert!(child.wait().unwrap().success());
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert_eq!(
        client_spans(&file),
        vec![("big-env-job".to_owned(), pid)],
        "{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("(0 environments over the cap"),
        "the cut is counted: {}",
        stopped.stderr
    );
}
