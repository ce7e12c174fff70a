//! Privileged (root, a kernel): calls in a protocol no decoder knows still show in their trace.
//! A Go handler (examples/http-hello `/line`) talks a made-up line protocol to a Python TCP echo
//! server: each line and its answer is a `tcp` client span under the handler's server span,
//! and the echo server's side of each turn is a `tcp` server span under that client span.
//! `--no-tcp-spans` leaves them out.

mod support;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use support::{
    Agent, Listening, http_get, require_privileges,
    span_run::{Run, agent_to_file, attr},
};
use wirespan::testing::cannot_run;

const REQUESTS: usize = 3;
const LINES: usize = 3;

/// A line echo server on loopback (one thread per connection); prints its address first.
const ECHO: &str = r"
import socket, socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b'PONG ' + line)
server = socketserver.ThreadingTCPServer(('127.0.0.1', 0), Echo)
print('127.0.0.1:%d' % server.server_address[1], flush=True)
server.serve_forever()
";

fn services() -> Option<(Listening, Listening)> {
    let Some(hello) = support::go_build("examples/http-hello", "tcp-http-hello") else {
        cannot_run("cannot build examples/http-hello");
        return None;
    };
    let echo = Listening::start(Command::new("python3").args(["-c", ECHO]));
    let liner = Listening::start(
        Command::new(hello)
            .env("OTEL_SERVICE_NAME", "liner")
            .stderr(Stdio::null()),
    );
    Some((echo, liner))
}

fn drive(liner: &Listening, echo: &Listening) {
    for _ in 0..REQUESTS {
        let (status, body) = http_get(
            &liner.addr,
            &format!("/line?target={}&lines={LINES}", echo.addr),
            "",
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.matches("PONG").count(), LINES, "{body}");
    }
}

fn run_with(extra: &[&str], file: &Path, liner: &Listening, echo: &Listening) -> Run {
    let _ = std::fs::remove_file(file);
    let agent = if extra.is_empty() {
        agent_to_file(file, &[&liner.port(), &echo.port()])
    } else {
        let mut args = vec!["run", "--exporter", "file", "--output"];
        args.push(file.to_str().unwrap());
        args.extend_from_slice(extra);
        Agent::start_on_ports(&args, &[&liner.port(), &echo.port()])
    };
    drive(liner, echo);
    agent.stop();
    Run::read(file)
}

#[test]
fn privileged_tcp_spans_of_an_unknown_line_protocol_sit_under_the_handler_that_made_them() {
    if !require_privileges() {
        return;
    }
    let Some((echo, liner)) = services() else {
        return;
    };
    let file = std::env::temp_dir().join("wirespan-tcp-spans.jsonl");
    let run = run_with(&[], &file, &liner, &echo);
    let name = format!("tcp {}", echo.addr);
    let servers = run.find("liner", 2, "/line");
    assert_eq!(servers.len(), REQUESTS, "{}", run.describe());
    let clients: Vec<_> = run
        .spans
        .iter()
        .filter(|(service, s)| service == "liner" && s["kind"] == 3 && s["name"] == name.as_str())
        .map(|(_, s)| s)
        .collect();
    assert_eq!(clients.len(), REQUESTS * LINES, "{}", run.describe());
    for client in &clients {
        let parent = run.expect_parent(client, "liner", 2);
        assert!(
            attr(parent, "url.path").is_some_and(|p| p == "/line"),
            "{parent:#}"
        );
        assert_eq!(attr(client, "network.transport").as_deref(), Some("tcp"));
        assert_eq!(attr(client, "server.port"), Some(echo.port()), "{client:#}");
    }
    // The echo server's side of every turn, each under the client's span of the same bytes.
    let echoed: Vec<_> = run
        .spans
        .iter()
        .filter(|(_, s)| s["kind"] == 2 && s["name"] == name.as_str())
        .map(|(_, s)| s)
        .collect();
    assert_eq!(echoed.len(), REQUESTS * LINES, "{}", run.describe());
    for server in &echoed {
        run.expect_parent(server, "liner", 3);
    }

    let off = run_with(&["--no-tcp-spans"], &file, &liner, &echo);
    assert_eq!(off.find("liner", 2, "/line").len(), REQUESTS);
    assert!(
        off.spans
            .iter()
            .all(|(_, s)| !s["name"].as_str().unwrap_or_default().starts_with("tcp ")),
        "{}",
        off.describe()
    );
}
