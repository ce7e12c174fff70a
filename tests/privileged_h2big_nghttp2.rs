//! Privileged end to end (needs root, a kernel and nghttp2's `nghttp`/`nghttpd`, Debian's
//! nghttp2-client and nghttp2-server): plain HTTP/2 (h2c) between two C programs, with bodies
//! of 64 KiB to 4 MiB each way between small ones on concurrent streams of one connection, and
//! the same over TLS (both use OpenSSL). Every request, on both sides, keeps its method, path
//! and status, and every server span its parent, without raising `--capture-bytes`.

mod support;

use std::{collections::HashMap, path::Path, process::Command};

use serde_json::Value;
use support::{Agent, file_spans, jaeger::free_port, nghttp2, require_privileges, span_attr};
use wirespan::testing::cannot_run;

/// Files the server holds: name and size.
const FILES: [(&str, usize); 4] = [
    ("small", 3),
    ("b64k", 64 << 10),
    ("b1m", 1 << 20),
    ("b4m", 4 << 20),
];

fn status_code(span: &Value) -> Option<String> {
    let v = span_attr(span, "http.response.status_code")?;
    v["intValue"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
}

#[test]
fn privileged_h2big_nghttp2_requests_keep_method_path_status_and_parent_through_large_bodies() {
    large_bodies_case(false);
}

/// The same over TLS: nghttp and nghttpd use OpenSSL, whose plaintext the agent reads (frame
/// sync through large bodies then rests on windows in plaintext positions).
#[test]
fn privileged_h2big_nghttp2_over_tls_keeps_them_too() {
    large_bodies_case(true);
}

fn large_bodies_case(tls: bool) {
    if !require_privileges() {
        return;
    }
    if let Some(why) = nghttp2::missing() {
        return cannot_run(why);
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(if tls {
        "h2big-nghttp2-tls"
    } else {
        "h2big-nghttp2"
    });
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for (name, size) in FILES {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        std::fs::write(www.join(name), body).unwrap();
    }
    let upload = tmp.join("upload.bin");
    std::fs::write(&upload, vec![b'u'; 2_000_000]).unwrap();
    let port = free_port().to_string();
    let Some(_server) = nghttp2::start(&tmp, &www, &port, tls) else {
        return cannot_run("the openssl command cannot make a certificate");
    };
    let file = tmp.join("spans.jsonl");
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "file",
        "--output",
        file.to_str().unwrap(),
        "--port",
        &port,
    ]);
    // One connection per nghttp run, all its requests at once (concurrent streams): large
    // downloads between small ones, then uploads of 2 MB.
    let scheme = if tls { "https" } else { "http" };
    let url = |path: &str| format!("{scheme}://127.0.0.1:{port}/{path}");
    let gets: Vec<String> = [
        "small?1", "b4m?1", "small?2", "b1m?1", "small?3", "b64k?1", "b4m?2", "small?4",
    ]
    .iter()
    .map(|p| url(p))
    .collect();
    let posts: Vec<String> = ["small?5", "b1m?2", "small?6"]
        .iter()
        .map(|p| url(p))
        .collect();
    let runs: [Vec<&str>; 2] = [
        gets.iter().map(String::as_str).collect(),
        ["-d", upload.to_str().unwrap()]
            .into_iter()
            .chain(posts.iter().map(String::as_str))
            .collect(),
    ];
    for args in &runs {
        let out = Command::new("nghttp")
            .arg("-n")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nghttp {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let summary = stopped.stderr.lines().last().unwrap_or_default().to_owned();
    // The decoder never lost frame sync: every frame header was seen, captured or windowed.
    assert!(!summary.contains("http/2 lost framing"), "{summary}");

    let mut want: HashMap<String, usize> = HashMap::new();
    for path in gets.iter().chain(&posts) {
        let method = if posts.contains(path) { "POST" } else { "GET" };
        let path = path.split_once(&port).unwrap().1.trim_start_matches(':');
        *want
            .entry(format!("{method} {}", path.split('?').next().unwrap()))
            .or_default() += 1;
    }
    let servers = check_spans(&file, &want, &summary);
    eprintln!(
        "{servers} requests ({} with bodies of 64 KiB to 4 MiB), every method, path, status and parent right; {summary}",
        gets.iter()
            .chain(&posts)
            .filter(|p| !p.contains("small") || posts.contains(p))
            .count()
    );
}

/// Each side has one span per request, named `METHOD /path`, with status 200; every server
/// span's parent is the client span of the same request. Returns the number of server spans.
fn check_spans(file: &Path, want: &HashMap<String, usize>, summary: &str) -> usize {
    let spans = file_spans(file);
    let of = |service: &str, kind: u64| -> Vec<&Value> {
        spans
            .iter()
            .filter(|(s, span)| s == service && span["kind"] == kind)
            .map(|(_, span)| span)
            .collect()
    };
    let (clients, servers) = (of("nghttp", 3), of("nghttpd", 2));
    // Server spans are named by their route (the heuristic's, here: the paths carry no ids);
    // client spans by their method alone (nghttpd registers no route to carry over).
    let mut want_clients: HashMap<String, usize> = HashMap::new();
    for (name, n) in want {
        let method = name.split(' ').next().unwrap().to_owned();
        *want_clients.entry(method).or_default() += n;
    }
    for (side, side_spans, want) in [
        ("client", &clients, &want_clients),
        ("server", &servers, want),
    ] {
        let mut names: HashMap<String, usize> = HashMap::new();
        for span in side_spans {
            *names
                .entry(span["name"].as_str().unwrap().to_owned())
                .or_default() += 1;
            assert_eq!(status_code(span).as_deref(), Some("200"), "{side}: {span}");
        }
        assert_eq!(&names, want, "{side} spans by name; {summary}");
    }
    let by_id: HashMap<&Value, &Value> = clients.iter().map(|s| (&s["spanId"], *s)).collect();
    for span in &servers {
        let parent = by_id
            .get(&span["parentSpanId"])
            .unwrap_or_else(|| panic!("server span without its client span as parent: {span}"));
        assert_eq!(
            span_attr(parent, "url.path"),
            span_attr(span, "url.path"),
            "{span}"
        );
        assert_eq!(parent["traceId"], span["traceId"], "{span}");
    }
    servers.len()
}
