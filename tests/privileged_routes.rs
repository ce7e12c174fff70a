//! Privileged end-to-end tests of span names and routes: Go programs name their spans by the
//! routes they registered (`ServeMux` patterns, gin full paths), read from their memory with no
//! probe per request, on Go 1.22, 1.24 and the newest, stripped or not; a program with no
//! routes to read (Python's `http.server`) gets heuristic routes, and configured templates win
//! over the heuristic. No span name carries an id. Needs root (or the capabilities
//! `load::privilege` names).

mod support;

use std::{path::PathBuf, process::Command};

use support::{
    Listening, require_privileges,
    shapes::{Got, agent_with, get, go_service, read_spans, tmp},
};

/// The machine's Go, and older ones fetched with GOTOOLCHAIN (cached by Go after the first).
const TOOLCHAINS: [Option<&str>; 3] = [None, Some("go1.22.12"), Some("go1.24.11")];

fn build(example: &str, toolchain: Option<&str>, stripped: bool) -> PathBuf {
    let name = format!(
        "routes-{example}-{}{}",
        toolchain.unwrap_or("go"),
        if stripped { "-stripped" } else { "" }
    );
    let out = tmp(&name);
    let mut cmd = Command::new("go");
    cmd.args(["build", "-o"]).arg(&out);
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg(".").current_dir(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(example),
    );
    if let Some(t) = toolchain {
        cmd.env("GOTOOLCHAIN", t);
    }
    let status = cmd.status().expect("go runs");
    assert!(status.success(), "go build {name} failed");
    out
}

fn assert_no_id_in_names(spans: &[Got]) {
    for span in spans {
        support::assert_no_id_in_name(&span.name, &span.service);
    }
}

/// The server spans of `service` whose `url.path` is `path`.
fn served<'a>(spans: &'a [Got], service: &str, path: &str) -> Vec<&'a Got> {
    spans
        .iter()
        .filter(|s| {
            s.kind == 2
                && s.service == service
                && s.attrs.get("url.path").map(String::as_str) == Some(path)
        })
        .collect()
}

/// `path` served by `service` is one span named `GET {route}`, whose route came from `source`.
fn assert_route(spans: &[Got], service: &str, path: &str, route: &str, source: &str) {
    let got = served(spans, service, path);
    assert!(!got.is_empty(), "{service}: no server span for {path}");
    for span in got {
        assert_eq!(
            span.name,
            format!("GET {route}"),
            "{service} {path}: {span:?}"
        );
        assert_eq!(
            span.attrs.get("http.route").map(String::as_str),
            Some(route),
            "{service} {path}: {span:?}"
        );
        assert_eq!(
            span.attrs.get("wirespan.route.source").map(String::as_str),
            Some(source),
            "{service} {path}: {span:?}"
        );
    }
}

#[test]
fn privileged_routes_name_spans_by_registered_patterns_heuristics_and_templates() {
    if !require_privileges() {
        return;
    }
    // ServeMux patterns on every Go version, stripped and not; gin on the newest.
    let mut hellos: Vec<(String, Listening)> = Vec::new();
    for toolchain in TOOLCHAINS {
        for stripped in [false, true] {
            let service = format!(
                "hello-{}{}",
                toolchain.unwrap_or("go"),
                if stripped { "-stripped" } else { "" }
            )
            .replace('.', "-");
            let binary = build("http-hello", toolchain, stripped);
            hellos.push((service.clone(), go_service(&binary, &service, &[])));
        }
    }
    let mut gins: Vec<(String, Listening)> = Vec::new();
    for stripped in [false, true] {
        let service = format!("gin{}", if stripped { "-stripped" } else { "" });
        let binary = build("gin-front", None, stripped);
        gins.push((
            service.clone(),
            go_service(&binary, &service, &["--backend", "127.0.0.1:9"]),
        ));
    }
    let python = support::HttpServer::start("127.0.0.1", &[]);

    let file = tmp("routes.jsonl");
    let mut ports: Vec<String> = hellos.iter().chain(&gins).map(|(_, l)| l.port()).collect();
    ports.push(python.port.to_string());
    let agent = agent_with(&file, &ports, &["--routes", "pattern=/users/{user}/cart"]);
    for (_, hello) in &hellos {
        let port = hello.port();
        for path in [
            "/items/17",
            "/items/42",
            "/files/css/site.css",
            "/hello?name=x",
        ] {
            assert_eq!(get("127.0.0.1", &port, path), 200, "{path}");
        }
    }
    for (_, gin) in &gins {
        let port = gin.port();
        for path in ["/users/7", "/users/8", "/static/js/app.js"] {
            assert_eq!(get("127.0.0.1", &port, path), 200, "{path}");
        }
    }
    let python_port = python.port.to_string();
    for path in [
        "/order/17",
        "/users/42/cart",
        "/blob/550e8400-e29b-41d4-a716-446655440000",
        "/commit/0a1b2c3d4e5f60718293",
    ] {
        // The files are not there: 404, which is no error for a server span.
        assert_eq!(get("127.0.0.1", &python_port, path), 404, "{path}");
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans = read_spans(&file);
    let summary = stopped.stderr.lines().last().unwrap_or_default().to_owned();

    for (service, _) in &hellos {
        assert_route(&spans, service, "/items/17", "/items/{id}", "program");
        assert_route(&spans, service, "/items/42", "/items/{id}", "program");
        assert_route(
            &spans,
            service,
            "/files/css/site.css",
            "/files/{path...}",
            "program",
        );
        assert_route(&spans, service, "/hello", "/hello", "program");
    }
    for (service, _) in &gins {
        assert_route(&spans, service, "/users/7", "/users/:id", "program");
        assert_route(
            &spans,
            service,
            "/static/js/app.js",
            "/static/*path",
            "program",
        );
    }
    // Python's service is named by its program (`python3`, `python3.11`...).
    let python = spans
        .iter()
        .find(|s| s.kind == 2 && s.attrs.get("url.path").map(String::as_str) == Some("/order/17"))
        .map_or_else(
            || panic!("no span of the Python server; {summary}"),
            |s| s.service.clone(),
        );
    let python = python.as_str();
    assert_route(&spans, python, "/order/17", "/order/{id}", "heuristic");
    assert_route(
        &spans,
        python,
        "/users/42/cart",
        "/users/{user}/cart",
        "template",
    );
    assert_route(
        &spans,
        python,
        "/blob/550e8400-e29b-41d4-a716-446655440000",
        "/blob/{id}",
        "heuristic",
    );
    assert_route(
        &spans,
        python,
        "/commit/0a1b2c3d4e5f60718293",
        "/commit/{id}",
        "heuristic",
    );
    // The test's own calls are client spans named by the route their callee (on this host)
    // registered.
    let client = spans
        .iter()
        .find(|s| s.kind == 3 && s.attrs.get("url.path").map(String::as_str) == Some("/users/7"))
        .unwrap_or_else(|| panic!("no client span for /users/7; {summary}"));
    assert_eq!(client.name, "GET /users/:id", "{client:?}");
    assert_eq!(
        client.attrs.get("url.template").map(String::as_str),
        Some("/users/:id")
    );
    assert_no_id_in_names(&spans);
    eprintln!("{} spans, every route right; {summary}", spans.len());
}

/// A server that gets its first request after its serving probes came off (a plain server,
/// quiet since the agent started) has its routes read all the same: the probes come back on
/// for a moment, and its next requests carry the program's routes.
#[test]
fn privileged_routes_of_a_server_first_called_after_its_probes_came_off() {
    if !require_privileges() {
        return;
    }
    let binary = build("http-hello", None, true);
    let hello = go_service(&binary, "quiet-hello", &[]);
    let file = tmp("routes-quiet.jsonl");
    let mut agent = agent_with(
        &file,
        &[hello.port()],
        &["--serving-probes-quiet-secs", "1"],
    );
    let binary_name = binary.display().to_string();
    agent.wait_for_line(&format!("{binary_name}: serving probes off"));
    let port = hello.port();
    assert_eq!(get("127.0.0.1", &port, "/items/1"), 200);
    agent.wait_for_line(&format!(
        "{binary_name}: serving probes back on for a while"
    ));
    // The probes are attached once the line is printed: the next request names its server.
    assert_eq!(get("127.0.0.1", &port, "/items/2"), 200);
    assert_eq!(get("127.0.0.1", &port, "/items/3"), 200);
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans = read_spans(&file);
    // The first one, before the routes were read, falls back on the heuristic: same name.
    assert_route(
        &spans,
        "quiet-hello",
        "/items/1",
        "/items/{id}",
        "heuristic",
    );
    assert_route(&spans, "quiet-hello", "/items/3", "/items/{id}", "program");
    assert_no_id_in_names(&spans);
}
