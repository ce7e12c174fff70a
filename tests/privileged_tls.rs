//! Privileged end to end (needs root, a kernel, Go, Python, curl and the openssl command): spans
//! and parents through TLS, with certificates made here.
//! - OpenSSL (libssl 3): curl → a Python `http.server` wrapped in `ssl`; curl → Python whose
//!   handler calls a Go HTTPS server with `urllib`.
//! - Go crypto/tls: curl → examples/http-hello over HTTPS, whose handlers call another
//!   http-hello over HTTPS from child goroutines (HTTP/2 by ALPN; stripped, over HTTP/1.1); grpc-go with
//!   TLS credentials (unary with an error code, server streaming); a Go program that only calls
//!   out (tests/support/https_client) → Python.
//! - One side readable: a statically linked client with its own TLS (busybox wget) and Python
//!   asyncio (OpenSSL through memory BIOs) → Go HTTPS.
//!
//! Each server span's parent is the client span at the other end, every span carries method,
//! path and status, and the programs answer whole before, while and after the agent runs.

mod support;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;
use support::{
    Listening, require_privileges,
    span_run::{Run, agent_to_file, attr, check_http},
    tls::{certs, curl, go_https, python_https, serial},
};
use wirespan::testing::cannot_run;

#[test]
fn privileged_tls_curl_to_a_python_https_server_is_one_trace_per_request() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let server = python_https(certs, "py-https");
    let port = server.port();
    let url = format!("https://localhost:{port}/hello.txt");
    assert_eq!(
        curl(certs, "--http1.1", &url),
        (200, "hello over tls\n".into())
    );
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-curl-python.jsonl");
    let agent = agent_to_file(&file, &[&port]);
    assert!(
        agent
            .report
            .iter()
            .any(|l| l.contains("tls: OpenSSL") && l.contains("attached")),
        "{:?}",
        agent.report
    );
    for _ in 0..3 {
        assert_eq!(
            curl(certs, "--http1.1", &url),
            (200, "hello over tls\n".into())
        );
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // After the agent detached: still answering whole.
    assert_eq!(
        curl(certs, "--http1.1", &url),
        (200, "hello over tls\n".into())
    );

    let run = Run::read(&file);
    let servers = run.find("py-https", 2, "/hello.txt");
    assert_eq!(servers.len(), 3, "{}", run.describe());
    let mut clients = Vec::new();
    for server in servers {
        check_http(server, "GET", "200");
        assert_eq!(
            attr(server, "network.protocol.version").as_deref(),
            Some("1.1")
        );
        let client = run.expect_parent(server, "curl-client", 3);
        check_http(client, "GET", "200");
        clients.push(client["spanId"].clone());
    }
    clients.dedup();
    assert_eq!(
        clients.len(),
        3,
        "one curl span per request: {}",
        run.describe()
    );
}

#[test]
fn privileged_tls_curl_to_python_calling_go_over_https_is_one_trace() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let Some(hello) = support::go_build("examples/http-hello", "tls-http-hello") else {
        return cannot_run("go cannot build examples/http-hello");
    };
    let back = go_https(&hello, certs, "go-back", &[]);
    let front = python_https(certs, "py-front");
    let (back_port, front_port) = (back.port(), front.port());
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-python-go.jsonl");
    let agent = agent_to_file(&file, &[&back_port, &front_port]);
    let url = format!("https://localhost:{front_port}/via/{back_port}/hello?name=py");
    for _ in 0..2 {
        assert_eq!(curl(certs, "--http1.1", &url), (200, "hello py\n".into()));
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert_eq!(curl(certs, "--http1.1", &url), (200, "hello py\n".into()));

    let run = Run::read(&file);
    let backs = run.find("go-back", 2, "/hello");
    assert_eq!(backs.len(), 2, "{}", run.describe());
    for back in backs {
        check_http(back, "GET", "200");
        let py_client = run.expect_parent(back, "py-front", 3);
        check_http(py_client, "GET", "200");
        let py_server = run.expect_parent(py_client, "py-front", 2);
        check_http(py_server, "GET", "200");
        let curl_client = run.expect_parent(py_server, "curl-client", 3);
        assert!(run.parent_of(curl_client).is_none(), "{}", run.describe());
    }
}

#[test]
fn privileged_tls_go_https_chain_over_http2_with_fan_out() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = support::go_build("examples/http-hello", "tls-http-hello") else {
        return cannot_run("go cannot build examples/http-hello");
    };
    go_chain_case(&hello, &Shape::default());
}

/// Stripped, and the front calls the back over HTTP/1.1.
#[test]
fn privileged_tls_go_https_chain_of_stripped_binaries() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = support::go_build_with(
        "examples/http-hello",
        "tls-http-hello-stripped",
        &["-ldflags=-s -w"],
    ) else {
        return cannot_run("go cannot build examples/http-hello stripped");
    };
    go_chain_case(
        &hello,
        &Shape {
            back_http1: true,
            ..Shape::default()
        },
    );
}

/// As users deploy: the front listens on `:port` (dual-stack: curl's IPv4 arrives mapped), the
/// back on `[::1]`, the front's pooled HTTP/2 connection to the back is opened before the agent
/// starts (its HPACK tables and TLS session predate the probes), built with older Go versions
/// (stripped, so their layouts come from the offsets table).
#[test]
fn privileged_tls_go_chain_on_dual_stack_and_ipv6_with_a_pool_older_than_the_agent() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    for (toolchain, stripped) in [("go1.22.12", true), ("go1.24.11", false)] {
        let name = format!("tls-shapes-http-hello-{toolchain}-{stripped}");
        let args: &[&str] = if stripped { &["-ldflags=-s -w"] } else { &[] };
        let Some(hello) =
            support::go_build_toolchain("examples/http-hello", &name, Some(toolchain), args)
        else {
            return cannot_run(&format!(
                "cannot build examples/http-hello with {toolchain}"
            ));
        };
        go_chain_case(
            &hello,
            &Shape {
                back_http1: false,
                front_listen: ":0",
                back_listen: "[::1]:0",
                front_host: "127.0.0.1",
                warm_pool: true,
            },
        );
    }
}

/// How a Go chain is deployed.
struct Shape {
    /// The front calls the back over HTTP/1.1, not HTTP/2.
    back_http1: bool,
    front_listen: &'static str,
    back_listen: &'static str,
    /// The address curl calls the front at.
    front_host: &'static str,
    /// One request goes through before the agent starts, opening the front's pool.
    warm_pool: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            back_http1: false,
            front_listen: "127.0.0.1:0",
            back_listen: "127.0.0.1:0",
            front_host: "localhost",
            warm_pool: false,
        }
    }
}

/// curl → front (Go, HTTPS; HTTP/2 and HTTP/1.1) → back (Go, HTTPS, HTTP/2 by the client's
/// ALPN, or HTTP/1.1) from two child goroutines per request, deployed as `shape` says.
fn go_chain_case(hello: &Path, shape: &Shape) {
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let back = go_https(hello, certs, "go-back", &["-listen", shape.back_listen]);
    let mut front_args = vec![
        "-backend",
        back.addr.as_str(),
        "-listen",
        shape.front_listen,
    ];
    if shape.back_http1 {
        front_args.push("-tls-http1");
    }
    let front = go_https(hello, certs, "go-front", &front_args);
    let back_version = if shape.back_http1 { "1.1" } else { "2" };
    let (back_port, front_port) = (back.port(), front.port());
    let front_url = |path: &str| format!("https://{}:{front_port}{path}", shape.front_host);
    if shape.warm_pool {
        let (status, body) = curl(certs, "--http2", &front_url("/fanout"));
        assert_eq!((status, body.as_str()), (200, "hello fan0\nhello fan1\n"));
    }
    let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.jsonl", hello.file_name().unwrap().display()));
    let agent = agent_to_file(&file, &[&back_port, &front_port]);
    for (i, version) in ["--http2", "--http1.1", "--http2"].iter().enumerate() {
        let url = front_url(&format!("/fanout?id={i}"));
        let (status, body) = curl(certs, version, &url);
        assert_eq!(
            (status, body.as_str()),
            (200, "hello fan0\nhello fan1\n"),
            "{version}"
        );
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let (status, body) = curl(certs, "--http2", &front_url("/fanout"));
    assert_eq!((status, body.as_str()), (200, "hello fan0\nhello fan1\n"));

    let run = Run::read(&file);
    let fronts = run.find("go-front", 2, "/fanout");
    assert_eq!(fronts.len(), 3, "{}", run.describe());
    let mut traces = Vec::new();
    for front in &fronts {
        check_http(front, "GET", "200");
        assert_eq!(
            attr(front, "http.route").as_deref(),
            Some("/fanout"),
            "{front:#}"
        );
        let curl_client = run.expect_parent(front, "curl-client", 3);
        assert_eq!(
            attr(front, "network.protocol.version"),
            attr(curl_client, "network.protocol.version"),
            "both ends agree on the negotiated version"
        );
        traces.push(front["traceId"].clone());
    }
    let versions: Vec<Option<String>> = fronts
        .iter()
        .map(|f| attr(f, "network.protocol.version"))
        .collect();
    assert!(versions.contains(&Some("2".into())), "{versions:?}");
    assert!(versions.contains(&Some("1.1".into())), "{versions:?}");
    traces.sort_by_key(ToString::to_string);
    traces.dedup();
    assert_eq!(traces.len(), 3, "one trace per request: {}", run.describe());

    // With a pool older than the agent, the back's read that was already blocked when the
    // probes attached returns the first requests' plaintext unseen; their server spans come
    // from the responses and the handlers' probes (`Flags::request_unseen`).
    let backs = run.find("go-back", 2, "/hello");
    assert_eq!(backs.len(), 6, "{}", run.describe());
    for back in backs {
        check_http(back, "GET", "200");
        assert_eq!(
            attr(back, "http.route").as_deref(),
            Some("/hello"),
            "{back:#}"
        );
        assert_eq!(
            attr(back, "network.protocol.version").as_deref(),
            Some(back_version),
            "{back:#}"
        );
        let client = run.expect_parent(back, "go-front", 3);
        check_http(client, "GET", "200");
        // Served over HTTP/1.1 or HTTP/2, the handler's calls from child goroutines are its.
        let server = run.expect_parent(client, "go-front", 2);
        assert!(
            fronts.iter().any(|f| f["spanId"] == server["spanId"]),
            "{}",
            run.describe()
        );
    }
}

#[test]
fn privileged_tls_grpc_go_unary_and_streaming_calls_over_tls() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let Some(echo) = support::go_build("examples/grpc-echo", "tls-grpc-echo") else {
        return cannot_run("go cannot build examples/grpc-echo");
    };
    let server = Listening::start(
        Command::new(&echo)
            .args(["server", "--tls-cert"])
            .arg(&certs.cert)
            .arg("--tls-key")
            .arg(&certs.key)
            .env("OTEL_SERVICE_NAME", "grpc-tls-server"),
    );
    let port = server.port();
    // The client waits for a line, so that the agent is attached before its first byte.
    let mut client = Command::new(&echo)
        .args([
            "client",
            "--target",
            &format!("localhost:{port}"),
            "--wait-stdin",
        ])
        .args(["--requests", "10", "--streams", "2", "--tls-ca"])
        .arg(&certs.cert)
        .env("OTEL_SERVICE_NAME", "grpc-tls-client")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-grpc.jsonl");
    let agent = agent_to_file(&file, &[&port]);
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = client.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("done: 10 unary, 2 streams"), "{printed}");
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let run = Run::read(&file);
    let servers: Vec<&Value> = run
        .spans
        .iter()
        .filter(|(s, span)| s == "grpc-tls-server" && span["kind"] == 2)
        .map(|(_, span)| span)
        .collect();
    let method = |m: &str| {
        servers
            .iter()
            .filter(|s| attr(s, "rpc.method").as_deref() == Some(m))
            .copied()
            .collect::<Vec<_>>()
    };
    let (says, counts) = (
        method("wirespan.echo.Echo/Say"),
        method("wirespan.echo.Echo/Count"),
    );
    assert_eq!((says.len(), counts.len()), (10, 2), "{}", run.describe());
    let not_found = says
        .iter()
        .filter(|s| attr(s, "rpc.response.status_code").as_deref() == Some("NOT_FOUND"))
        .count();
    assert_eq!(not_found, 2, "every fifth call fails: {}", run.describe());
    for server in says.iter().chain(&counts) {
        assert_eq!(attr(server, "rpc.system.name").as_deref(), Some("grpc"));
        let client = run.expect_parent(server, "grpc-tls-client", 3);
        assert_eq!(attr(client, "rpc.method"), attr(server, "rpc.method"));
        assert_eq!(
            attr(client, "rpc.response.status_code"),
            attr(server, "rpc.response.status_code")
        );
    }
}

#[test]
fn privileged_tls_a_go_program_that_only_calls_out_is_read_through_crypto_tls() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let Some(client_binary) = support::go_build("tests/support/https_client", "tls-https-client")
    else {
        return cannot_run("go cannot build tests/support/https_client");
    };
    let server = python_https(certs, "py-https");
    let port = server.port();
    let mut client = Command::new(client_binary)
        .arg(format!("https://localhost:{port}/hello.txt"))
        .env("SSL_CERT_FILE", &certs.cert)
        .env("OTEL_SERVICE_NAME", "go-client")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-go-client.jsonl");
    let agent = agent_to_file(&file, &[&port]);
    assert!(
        agent
            .report
            .iter()
            .any(|l| l.contains("tls-https-client") && l.contains("tls.(*Conn).Write")),
        "{:?}",
        agent.report
    );
    let mut stdin = client.stdin.take().unwrap();
    for _ in 0..3 {
        stdin.write_all(b"get\n").unwrap();
        let line = lines.next().unwrap().unwrap();
        assert_eq!(line, "200 15 HTTP/1.1");
    }
    drop(stdin);
    let _ = client.wait();
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let run = Run::read(&file);
    let servers = run.find("py-https", 2, "/hello.txt");
    assert_eq!(servers.len(), 3, "{}", run.describe());
    for server in servers {
        check_http(server, "GET", "200");
        let client = run.expect_parent(server, "go-client", 3);
        check_http(client, "GET", "200");
    }
}

/// A client whose TLS the agent cannot read: Python's asyncio encrypts through OpenSSL memory
/// BIOs (no socket under the library's calls) and writes the records itself.
const ASYNCIO_CLIENT: &str = r#"
import asyncio, ssl, sys
async def main(port, ca, n):
    context = ssl.create_default_context(cafile=ca)
    for _ in range(n):
        reader, writer = await asyncio.open_connection("localhost", port, ssl=context)
        writer.write(b"GET /hello?name=asyncio HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        print(data.split(b" ")[1].decode(), data.rsplit(b"\r\n\r\n", 1)[-1].decode().strip())
        writer.close()
asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"#;

#[test]
fn privileged_tls_only_the_server_side_readable_still_gives_right_server_spans() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let Some(hello) = support::go_build("examples/http-hello", "tls-http-hello") else {
        return cannot_run("go cannot build examples/http-hello");
    };
    let server = go_https(&hello, certs, "go-server", &[]);
    let port = server.port();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-one-side.jsonl");
    let agent = agent_to_file(&file, &[&port]);
    let out = Command::new("python3")
        .args(["-c", ASYNCIO_CLIENT, &port])
        .arg(&certs.cert)
        .arg("3")
        .env("OTEL_SERVICE_NAME", "py-asyncio")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 hello asyncio\n".repeat(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A statically linked client with a TLS of its own: busybox's wget (Debian's
    // busybox-static, which `cargo xtask setup` installs). With an `openssl` command on its
    // PATH it would hand TLS to `openssl s_client` (OpenSSL, readable); without one it uses its
    // built-in TLS.
    for _ in 0..3 {
        let Ok(out) = Command::new("/bin/busybox")
            .args(["wget", "--no-check-certificate", "-q", "-O", "-"])
            .arg(format!("https://localhost:{port}/hello?name=busybox"))
            .env_clear()
            .env("PATH", "/nonexistent")
            .env("OTEL_SERVICE_NAME", "busybox-wget")
            .output()
        else {
            return cannot_run("busybox (busybox-static) is not installed");
        };
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello busybox\n");
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let encrypted: u64 = stopped
        .stderr
        .split(" TLS without plaintext")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        encrypted >= 6,
        "the client's ends are encrypted, and counted: {}",
        stopped.stderr
    );

    let run = Run::read(&file);
    let servers = run.find("go-server", 2, "/hello");
    assert_eq!(servers.len(), 6, "{}", run.describe());
    for server in &servers {
        check_http(server, "GET", "200");
        assert_eq!(attr(server, "http.route").as_deref(), Some("/hello"));
    }
    assert!(
        run.spans
            .iter()
            .all(|(s, _)| s != "py-asyncio" && s != "busybox-wget"),
        "nothing is decoded from the encrypted side: {}",
        run.describe()
    );
}

/// What a new user tries: examples/http-hello with `-tls` (a self-signed certificate it makes
/// itself) and `curl -k`: a tree of HTTP/2 spans, its call to itself included.
#[test]
fn privileged_tls_self_signed_example_with_curl_k_gives_an_http2_tree() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = support::go_build("examples/http-hello", "tls-http-hello") else {
        return cannot_run("go cannot build examples/http-hello");
    };
    let server = Listening::start(
        Command::new(&hello)
            .arg("-tls")
            .env("OTEL_SERVICE_NAME", "hello-https"),
    );
    let port = server.port();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-self-signed.jsonl");
    let agent = agent_to_file(&file, &[&port]);
    let out = Command::new("curl")
        .args(["-sk", &format!("https://localhost:{port}/chain")])
        .env("OTEL_SERVICE_NAME", "curl-client")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello grandchild\n");
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let run = Run::read(&file);
    let inner = run.find("hello-https", 2, "/hello");
    assert_eq!(inner.len(), 1, "{}", run.describe());
    let call = run.expect_parent(inner[0], "hello-https", 3);
    let outer = run.expect_parent(call, "hello-https", 2);
    assert_eq!(attr(outer, "url.path").as_deref(), Some("/chain"));
    run.expect_parent(outer, "curl-client", 3);
    for span in [inner[0], call, outer] {
        check_http(span, "GET", "200");
        assert_eq!(
            attr(span, "network.protocol.version").as_deref(),
            Some("2"),
            "{span:#}"
        );
    }
}

/// Calls that fail over TLS: a Go HTTPS handler calls a port nothing listens on (refused) and
/// a plain-HTTP server (the TLS handshake fails). Each call is a client span with `error.type`
/// under its handler's server span, which carries the handler's 502.
#[test]
fn privileged_tls_failed_calls_are_client_spans_with_errors_under_their_handler() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let Some(hello) = support::go_build("examples/http-hello", "tls-http-hello") else {
        return cannot_run("go cannot build examples/http-hello");
    };
    let front = go_https(&hello, certs, "go-front", &[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let plain = support::HttpServer::start("127.0.0.1", &[("hello", b"plain")]);
    let plain_port = plain.port.to_string();
    let front_port = front.port();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-failed.jsonl");
    let agent = agent_to_file(&file, &[&front_port, &closed, &plain_port]);
    for target in [&closed, &plain_port] {
        let url = format!("https://localhost:{front_port}/call?target=127.0.0.1:{target}");
        let (status, body) = curl(certs, "--http2", &url);
        assert_eq!(status, 502, "{target}: {body}");
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let run = Run::read(&file);
    let handlers = run.find("go-front", 2, "/call");
    assert_eq!(handlers.len(), 2, "{}", run.describe());
    for handler in handlers {
        check_http(handler, "GET", "502");
        let calls: Vec<&Value> = run
            .spans
            .iter()
            .filter(|(_, s)| s["kind"] == 3 && s["parentSpanId"] == handler["spanId"])
            .map(|(_, s)| s)
            .collect();
        assert_eq!(calls.len(), 1, "one call per handler: {}", run.describe());
        assert!(
            attr(calls[0], "error.type").is_some(),
            "{:#}\n{}",
            calls[0],
            run.describe()
        );
        assert_eq!(calls[0]["status"]["code"], 2, "{:#}", calls[0]);
    }
}
