//! Privileged end to end (needs root, a kernel, Go, Python, curl and the openssl command): TLS
//! plaintext keeps its heads and loses its bodies before anything keeps it, and credentials
//! (header values, query values) are blanked in every output that shows captured bytes.
//!
//! curl POSTs a secret over HTTPS to Python (OpenSSL; HTTP/1.1, a chunked answer) and to
//! examples/http-hello (Go crypto/tls; HTTP/2 by ALPN). Three agents watch at once: `record`,
//! `record --capture-tls-bodies` and the `events` view. The secrets and the answers' bodies
//! must be in the second recording only (so the test can see them at all), the first must
//! still hold the heads, and replayed it must give the same requests as spans.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use support::{
    Agent, require_privileges,
    secrets::contains,
    span_run::replay_to_file,
    tls::{Certs, certs, go_https, python_https, serial},
};
use wirespan::testing::cannot_run;

/// What the requests send; none of it may stay in a default capture.
const PY_SECRET: &str = "card=4111-1111-1111-1111&cvv=737";
const GO_SECRET: &str = "password=correct-horse-battery";

/// curl (OpenSSL) POSTs `body` to `url` with `http_version`: (status, answer). The body goes
/// through a file: on the command line, the exec event's arguments would hold it.
fn curl_post(certs: &Certs, http_version: &str, url: &str, body: &str) -> (u16, String) {
    let file = temp("privacy-body");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", http_version, "--cacert"])
        .arg(&certs.cert)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), answer.to_owned())
}

fn temp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn record(output: &Path, ports: &[&str], extra: &[&str]) -> Agent {
    let mut args = vec!["record", "--output", output.to_str().unwrap()];
    args.extend_from_slice(extra);
    Agent::start_on_ports(&args, ports)
}

#[test]
fn privileged_tls_privacy_bodies_are_blanked_and_heads_kept_and_replayed() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let Some(hello) = support::go_build("examples/http-hello", "privacy-http-hello") else {
        return cannot_run("go cannot build examples/http-hello");
    };
    let python = python_https(certs, "py-https");
    let go = go_https(&hello, certs, "go-https", &[]);
    let (py_port, go_port) = (python.port(), go.port());
    let ports = [py_port.as_str(), go_port.as_str()];
    let (blanked, kept) = (temp("privacy-blanked.rec"), temp("privacy-kept.rec"));
    let blanking = record(&blanked, &ports, &[]);
    let keeping = record(&kept, &ports, &["--capture-tls-bodies"]);
    let events = Agent::start_on_ports(&["events", "--json"], &ports);

    let py_url = format!("https://localhost:{py_port}/echo");
    let go_url = format!("https://localhost:{go_port}/hello");
    let py_answer: String = PY_SECRET.chars().rev().collect();
    for _ in 0..2 {
        assert_eq!(
            curl_post(certs, "--http1.1", &py_url, PY_SECRET),
            (200, py_answer.clone())
        );
        assert_eq!(
            curl_post(certs, "--http2", &go_url, GO_SECRET),
            (200, "hello \n".into())
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events = events.stop();
    for agent in [blanking.stop(), keeping.stop()] {
        assert!(agent.status.success(), "{}", agent.stderr);
    }

    let blanked_bytes = std::fs::read(&blanked).unwrap();
    let kept_bytes = std::fs::read(&kept).unwrap();
    // Bodies both ways, OpenSSL and Go: the kept recording shows the test can see them. The
    // Python answer comes in two chunks.
    let (answer_start, answer_end) = py_answer.split_at(py_answer.len() / 2);
    for body in [PY_SECRET, answer_start, answer_end, GO_SECRET, "hello \n"] {
        assert!(
            contains(&kept_bytes, body),
            "--capture-tls-bodies keeps {body:?}"
        );
        assert!(
            !contains(&blanked_bytes, body),
            "the default recording holds {body:?}"
        );
        assert!(
            !events.stdout.contains(body),
            "the events view shows {body:?}"
        );
    }
    // Heads stay: the HTTP/1.1 request line and the chunked answer's head.
    assert!(contains(&blanked_bytes, "POST /echo HTTP/1.1"));
    assert!(contains(&blanked_bytes, "Transfer-Encoding: chunked"));
    assert!(events.stdout.contains("POST /echo HTTP/1.1"));
    for file in [&blanked, &kept] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }

    // Replayed, the blanked recording gives every request as a span, as the kept one does.
    for recording in [&blanked, &kept] {
        assert_replays_to_the_posts(recording);
    }
}

/// `recording`, replayed to spans, has both POSTs to Python's `/echo` (HTTP/1.1) and both to
/// Go's `/hello` (HTTP/2) as server spans with method and status.
fn assert_replays_to_the_posts(recording: &Path) {
    let spans = temp("privacy-replay.jsonl");
    replay_to_file(recording, &spans);
    let spans = support::file_spans(&spans);
    for (path, version) in [("/echo", "1.1"), ("/hello", "2")] {
        let servers: Vec<_> = spans
            .iter()
            .filter(|(_, s)| {
                s["kind"] == 2
                    && support::span_attr(s, "url.path").and_then(|v| v["stringValue"].as_str())
                        == Some(path)
            })
            .collect();
        assert_eq!(
            servers.len(),
            2,
            "{path} from {}: {}",
            recording.display(),
            support::describe_spans(&spans)
        );
        for (_, span) in servers {
            let attr = |key| {
                support::span_attr(span, key)
                    .and_then(|v| v["stringValue"].as_str().or(v["intValue"].as_str()))
                    .map(str::to_owned)
            };
            assert_eq!(attr("http.request.method").as_deref(), Some("POST"));
            assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
            assert_eq!(attr("network.protocol.version").as_deref(), Some(version));
        }
    }
}

/// A marker credential sent in a header, a cookie and a query over plain HTTP/1.1.
const MARKER: &str = "wsp-marker-credential-7f3a";

#[test]
fn privileged_tls_privacy_credentials_are_blanked_in_the_events_view_and_recordings() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let server = support::HttpServer::start("127.0.0.1", &[("a.txt", b"hello")]);
    let port = server.port.to_string();
    let recording = temp("privacy-credentials.rec");
    let recorder = record(&recording, &[&port], &[]);
    let events = Agent::start(&["events", "--json", "--port", &port]);
    let addr = format!("127.0.0.1:{port}");
    let headers = format!(
        "Authorization: Bearer {MARKER}\r\nCookie: session={MARKER}\r\nX-Api-Key: {MARKER}\r\n"
    );
    for _ in 0..2 {
        let (status, body) = support::http_get(&addr, &format!("/a.txt?token={MARKER}"), &headers);
        assert_eq!((status, body.as_str()), (200, "hello"));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events = events.stop();
    let recorder = recorder.stop();
    assert!(recorder.status.success(), "{}", recorder.stderr);
    let kept = std::fs::read(&recording).unwrap();
    assert!(
        !contains(&kept, MARKER),
        "the recording holds the credential"
    );
    assert!(
        !events.stdout.contains(MARKER),
        "the events view shows the credential"
    );
    // The heads are still there, blanked in place.
    assert!(contains(&kept, "GET /a.txt?token=***"));
    assert!(contains(&kept, "Authorization: ******"));
    // Replayed, the blanked recording still makes both requests' spans; no output has it.
    let spans = temp("privacy-credentials.jsonl");
    replay_to_file(&recording, &spans);
    let exported = std::fs::read(&spans).unwrap();
    assert!(!contains(&exported, MARKER));
    let servers = support::file_spans(&spans)
        .into_iter()
        .filter(|(_, s)| s["kind"] == 2)
        .count();
    assert_eq!(servers, 2);
}
