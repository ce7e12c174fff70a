//! Privileged end to end (needs root, a kernel, Go and Python): failed outbound calls become
//! client spans with `error.type`, status Error and the right parent. Each caller serves a
//! request and calls out to a port nothing listens on (connection refused) and to a listener in
//! this test that accepts and closes with `SO_LINGER` 0 (connection reset), net/http also to one
//! that never answers (its call times out): `net/http`
//! (examples/http-hello `/call`), grpc-go (examples/grpc-echo `relay`), and Python `urllib`
//! on a `http.server` handler's thread (tests/support/http_server.py `/via/<port>/`). Spans go
//! through the file exporter (OTLP JSON lines).

mod support;

use std::{
    net::TcpListener,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use serde_json::Value;
use support::{Agent, Listening, http_get, require_privileges};
use wirespan::testing::cannot_run;

/// The tests run agents that watch each other's ports; one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free loopback port for a service to listen on.
fn free_port() -> u16 {
    closed_port()
}

/// A listener that accepts every connection and closes it at once with `SO_LINGER` 0, so the
/// kernel answers with a reset. Runs until the test process exits.
fn resetting_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on an open socket with a correctly sized linger struct.
            let rc = unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_LINGER");
            drop(stream);
        }
    });
    port
}

/// A listener that accepts every connection and never answers (the connections stay open until
/// the test process exits).
fn silent_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            open.push(stream);
        }
    });
    port
}

fn go_build(example: &str, name: &str) -> Option<PathBuf> {
    support::go_build(&format!("examples/{example}"), name)
}

/// A span attribute's value, as text.
fn attr(span: &Value, key: &str) -> Option<String> {
    let value = &span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"];
    value["stringValue"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| match &value["intValue"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// The agent's closing summary (counts of spans, orphans, unclaimed connects): printed so a
/// failed check shows it ahead of the spans.
fn print_summary(stderr: &str) {
    for line in stderr.lines().filter(|l| l.contains("stopped:")) {
        println!("{line}");
    }
}

/// The one client span of `service` to `port`, checked: `error.type`, status Error, and a
/// parent that is `service`'s server span named `parent_name`.
fn check_failed_call(
    spans: &[(String, Value)],
    service: &str,
    port: u16,
    error_type: &str,
    name: &str,
    parent_name: &str,
) {
    let calls: Vec<&Value> = spans
        .iter()
        .filter(|(s, span)| {
            s.starts_with(service)
                && span["kind"] == 3
                && attr(span, "server.port") == Some(port.to_string())
        })
        .map(|(_, span)| span)
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "{service}: one client span to port {port}; all spans:\n{}",
        support::describe_spans(spans)
    );
    let call = calls[0];
    assert_eq!(call["name"], name, "{call:#}");
    assert_eq!(
        attr(call, "error.type").as_deref(),
        Some(error_type),
        "{call:#}"
    );
    let code = &call["status"]["code"];
    assert!(
        *code == 2 || *code == "STATUS_CODE_ERROR",
        "status Error: {call:#}"
    );
    let parent = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s["spanId"] == call["parentSpanId"])
        .unwrap_or_else(|| panic!("{service}: the failed call has no parent span: {call:#}"));
    assert_eq!(parent["kind"], 2, "{parent:#}");
    assert!(
        parent["name"].as_str().unwrap().starts_with(parent_name),
        "{parent:#}"
    );
    assert_eq!(parent["traceId"], call["traceId"]);
}

fn agent_to_file(file: &Path, ports: &[u16]) -> Agent {
    let _ = std::fs::remove_file(file);
    let mut args = vec![
        "run".to_owned(),
        "--exporter".into(),
        "file".into(),
        "--output".into(),
        file.to_str().unwrap().to_owned(),
    ];
    for port in ports {
        args.push("--port".into());
        args.push(port.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args)
}

#[test]
fn privileged_failed_net_http_calls_are_client_spans_with_error_type_under_their_handler() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = go_build("http-hello", "failed-http-hello") else {
        return cannot_run("go cannot build examples/http-hello");
    };
    net_http_case(&hello);
}

/// The same from a stripped, host-linked cgo build (how cgo programs ship).
#[test]
fn privileged_failed_net_http_calls_of_a_stripped_cgo_binary() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = support::go_build_with(
        "examples/http-hello",
        "failed-http-hello-cgo-stripped",
        &["-tags", "cgotls", "-ldflags=-linkmode=external -s -w"],
    ) else {
        return cannot_run("go cannot build examples/http-hello with cgo (gcc)");
    };
    net_http_case(&hello);
}

fn net_http_case(hello: &Path) {
    let (closed, reset, silent) = (closed_port(), resetting_listener(), silent_listener());
    let service = Listening::start(Command::new(hello).env("OTEL_SERVICE_NAME", "caller"));
    let port: u16 = service.port().parse().unwrap();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.jsonl", hello.file_name().unwrap().display()));
    let agent = agent_to_file(&file, &[port, closed, reset, silent]);
    for target in [closed, reset, silent] {
        let (status, body) = http_get(
            &service.addr,
            &format!("/call?target=127.0.0.1:{target}&timeout=300ms"),
            "",
        );
        assert_eq!(status, 502, "{body}");
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    print_summary(&stopped.stderr);
    let spans = support::file_spans(&file);
    check_failed_call(
        &spans,
        "caller",
        closed,
        "connection_refused",
        // A client span is named by its method: no callee answered to name a route.
        "GET",
        "GET /call",
    );
    check_failed_call(
        &spans,
        "caller",
        reset,
        "connection_reset",
        // A client span is named by its method: no callee answered to name a route.
        "GET",
        "GET /call",
    );
    // The request went out and no response came before the call's timeout.
    check_failed_call(
        &spans,
        "caller",
        silent,
        "timeout",
        // A client span is named by its method: no callee answered to name a route.
        "GET",
        "GET /call",
    );
}

#[test]
fn privileged_failed_grpc_go_calls_are_client_spans_with_error_type_under_their_handler() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(echo) = go_build("grpc-echo", "failed-grpc-echo") else {
        return cannot_run("go cannot build examples/grpc-echo");
    };
    grpc_case(&echo);
}

/// The same from a stripped, host-linked build.
#[test]
fn privileged_failed_grpc_go_calls_of_a_stripped_host_linked_binary() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(echo) = support::go_build_with(
        "examples/grpc-echo",
        "failed-grpc-echo-external-stripped",
        &["-ldflags=-linkmode=external -s -w"],
    ) else {
        return cannot_run("go cannot build examples/grpc-echo with the host linker (gcc)");
    };
    grpc_case(&echo);
}

fn grpc_case(echo: &Path) {
    let (closed, reset) = (closed_port(), resetting_listener());
    let (refused_port, reset_port) = (free_port(), free_port());
    let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.jsonl", echo.file_name().unwrap().display()));
    // The agent first: the relays connect (and fail) as soon as they start.
    let agent = agent_to_file(&file, &[refused_port, reset_port, closed, reset]);
    let relay = |name: &str, listen: u16, target: u16| {
        Listening::start(
            Command::new(echo)
                .args([
                    "relay",
                    "--listen",
                    &format!("127.0.0.1:{listen}"),
                    "--target",
                    &format!("127.0.0.1:{target}"),
                ])
                .env("OTEL_SERVICE_NAME", name),
        )
    };
    let refusing = relay("relay-refused", refused_port, closed);
    let resetting = relay("relay-reset", reset_port, reset);
    // Let the agent attach its uprobes to the new programs.
    std::thread::sleep(Duration::from_secs(3));
    for relay in [&refusing, &resetting] {
        let (status, body) = http_get(&relay.addr, "/relay?msg=hi", "");
        assert_eq!(status, 502, "{body}");
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    print_summary(&stopped.stderr);
    let spans = support::file_spans(&file);
    let say = "wirespan.echo.Echo/Say";
    check_failed_call(
        &spans,
        "relay-refused",
        closed,
        "connection_refused",
        say,
        "GET /relay",
    );
    check_failed_call(
        &spans,
        "relay-reset",
        reset,
        "connection_reset",
        say,
        "GET /relay",
    );
    // The relays' own connects (at start and in grpc-go's backoff) are not spans of their own.
    for service in ["relay-refused", "relay-reset"] {
        let clients = spans
            .iter()
            .filter(|(s, span)| s == service && span["kind"] == 3)
            .count();
        assert_eq!(clients, 1, "{service}: only the failed call: {spans:#?}");
    }
    let call = spans
        .iter()
        .find(|(s, span)| s == "relay-refused" && span["kind"] == 3)
        .unwrap();
    assert_eq!(
        attr(&call.1, "rpc.response.status_code").as_deref(),
        Some("UNAVAILABLE")
    );
}

#[test]
fn privileged_failed_python_urllib_connect_is_a_client_span_under_the_serving_thread() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let closed = closed_port();
    let front = support::HttpServer::start("127.0.0.1", &[]);
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("failed-python.jsonl");
    let agent = agent_to_file(&file, &[front.port, closed]);
    let (status, body) = http_get(
        &format!("127.0.0.1:{}", front.port),
        &format!("/via/{closed}/a.txt"),
        "",
    );
    assert_eq!(status, 502, "{body}");
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    print_summary(&stopped.stderr);
    let spans = support::file_spans(&file);
    check_failed_call(
        &spans,
        "python3",
        closed,
        "connection_refused",
        "connect",
        "GET /via/",
    );
}
