//! Privileged end to end (needs root, a kernel, Go and Python): parent links in the shapes real
//! programs have, not only the shape the examples happen to run in. Listeners on `127.0.0.1`,
//! `[::1]`, `:port` (a dual-stack IPv6 socket that sees IPv4 peers as `::ffff:a.b.c.d`) and
//! `0.0.0.0`, with IPv4 and IPv6 clients, Go to Go, Python to Go and Go to Python; programs that
//! call their own HTTP and gRPC servers; a long-lived worker goroutine fed by later requests;
//! each Go case also as a stripped, host-linked (cgo) build. Spans go through the OTLP JSON file
//! exporter and are read back. Same-host NAT is in privileged_nat.

mod support;

use std::{path::Path, process::Command, sync::Mutex};

use support::{
    Agent, Listening, require_privileges,
    shapes::{
        Got, agent, assert_child_of, assert_no_mapped_addresses, build_cgo_stripped, build_go,
        check_fanout, get, go_service, read_spans, tmp,
    },
};
use wirespan::testing::cannot_run;

/// Agents of these tests would see each other's services: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ------------------------------------------------------------------ tests

/// Go to Go: every listener form, IPv4 and IPv6 clients, a backend in another process and the
/// same process calling itself. Every parent right, and no `::ffff:` address exported.
#[test]
fn privileged_shapes_go_listeners_on_every_address_form_keep_every_parent() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = build_go("http-hello") else {
        return cannot_run("cannot build examples/http-hello");
    };
    go_listeners(&hello);
}

/// The same with http-hello built the way cgo programs are: a real cgo dependency (a C
/// `__thread` variable, which moves Go's goroutine slot in TLS), linked by the host linker, and
/// stripped.
#[test]
fn privileged_shapes_go_listeners_keep_every_parent_in_a_stripped_cgo_binary() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = build_cgo_stripped("http-hello") else {
        return cannot_run("cannot build examples/http-hello with cgo (gcc)");
    };
    go_listeners(&hello);
}

fn go_listeners(hello: &Path) {
    // (listen address, how the peers dial it)
    let forms = [
        ("127.0.0.1:0", "127.0.0.1"),
        ("[::1]:0", "[::1]"),
        (":0", "127.0.0.1"),
        (":0", "[::1]"),
        ("0.0.0.0:0", "127.0.0.1"),
    ];
    let mut running = Vec::new();
    for (i, (listen, dial)) in forms.iter().enumerate() {
        let back = go_service(hello, &format!("back{i}"), &["--listen", listen]);
        let backend = format!("{dial}:{}", back.port());
        let front = go_service(
            hello,
            &format!("front{i}"),
            &["--listen", listen, "--backend", &backend],
        );
        let own = go_service(hello, &format!("self{i}"), &["--listen", listen]);
        running.push((back, front, own));
    }
    let ports: Vec<String> = running
        .iter()
        .flat_map(|(b, f, o)| [b.port(), f.port(), o.port()])
        .collect();
    let file = tmp(&format!(
        "{}-listeners.jsonl",
        hello.file_name().unwrap().display()
    ));
    let agent = agent(&file, &ports);
    for (i, (_, front, own)) in running.iter().enumerate() {
        let dial = forms[i].1;
        for round in 0..3 {
            let id = 1000 + i as u64 * 10 + round;
            assert_eq!(get(dial, &front.port(), &format!("/fanout?id={id}")), 200);
            let id = 2000 + i as u64 * 10 + round;
            assert_eq!(get(dial, &own.port(), &format!("/fanout?id={id}")), 200);
        }
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans = read_spans(&file);
    assert_no_mapped_addresses(&spans);
    let test_service = spans
        .iter()
        .find(|s| s.kind == 3 && s.carries(1000))
        .map(|s| s.service.clone())
        .expect("the test's own client span");
    for (i, (listen, dial)) in forms.iter().enumerate() {
        eprintln!("listener {listen} dialled as {dial}");
        for round in 0..3 {
            let id = 1000 + i as u64 * 10 + round;
            check_fanout(
                &spans,
                id,
                &format!("front{i}"),
                Some(&test_service),
                &format!("back{i}"),
            );
            let id = 2000 + i as u64 * 10 + round;
            check_fanout(
                &spans,
                id,
                &format!("self{i}"),
                Some(&test_service),
                &format!("self{i}"),
            );
        }
    }
}

/// Python to Go and Go to Python, both servers on dual-stack `::` sockets reached over IPv4.
#[test]
fn privileged_shapes_python_and_go_across_dual_stack_listeners_keep_every_parent() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = build_go("http-hello") else {
        return cannot_run("cannot build examples/http-hello");
    };
    let python = support::HttpServer::start("::", &[("hello", b"hi from python")]);
    let python_port = python.port.to_string();
    let front = go_service(
        &hello,
        "front",
        &[
            "--listen",
            ":0",
            "--backend",
            &format!("127.0.0.1:{python_port}"),
        ],
    );
    let file = tmp("shapes-python-go.jsonl");
    let agent = agent(&file, &[front.port(), python_port.clone()]);
    for id in 3000..3003 {
        let url = format!("http://127.0.0.1:{}/fanout?id={id}", front.port());
        let status = Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()",
                &url,
            ])
            .env("OTEL_SERVICE_NAME", "pyclient")
            .status()
            .unwrap();
        assert!(status.success());
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans = read_spans(&file);
    assert_no_mapped_addresses(&spans);
    let python_service = spans
        .iter()
        .find(|s| s.kind == 2 && s.attrs.values().any(|v| v.contains("name=fan")))
        .map(|s| s.service.clone())
        .expect("python's server spans");
    assert!(python_service.starts_with("python"), "{python_service}");
    for id in 3000..3003 {
        check_fanout(&spans, id, "front", Some("pyclient"), &python_service);
    }
}

/// A program that calls its own gRPC server on `:port` (relay --serve-grpc): the gRPC server
/// span is the child of the same process's client span, in the request's trace.
#[test]
fn privileged_shapes_a_program_calling_its_own_grpc_server_on_a_dual_stack_port() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(relay) = build_go("grpc-echo") else {
        return cannot_run("cannot build examples/grpc-echo");
    };
    own_grpc_server(&relay);
}

/// The same from a stripped, host-linked build.
#[test]
fn privileged_shapes_a_stripped_host_linked_program_calling_its_own_grpc_server() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(relay) = support::go_build_with(
        "examples/grpc-echo",
        "shapes-grpc-echo-external-stripped",
        &["-ldflags=-linkmode=external -s -w"],
    ) else {
        return cannot_run("cannot build examples/grpc-echo with the host linker (gcc)");
    };
    own_grpc_server(&relay);
}

fn own_grpc_server(binary: &Path) {
    let relay = Listening::start(
        Command::new(binary)
            .args(["relay", "--listen", ":0", "--serve-grpc", ":0"])
            .env("OTEL_SERVICE_NAME", "selfgrpc"),
    );
    let file = tmp(&format!(
        "{}-self.jsonl",
        binary.file_name().unwrap().display()
    ));
    // The gRPC port is not printed: watch the process instead.
    let _ = std::fs::remove_file(&file);
    let pid = relay.pid().to_string();
    let agent = Agent::start(&[
        "run",
        "--exporter",
        "file",
        "--output",
        file.to_str().unwrap(),
        "--show-query",
        "--pid",
        &pid,
    ]);
    for id in 0..3 {
        assert_eq!(
            get("127.0.0.1", &relay.port(), &format!("/relay?msg=m{id}")),
            200
        );
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans = read_spans(&file);
    assert_no_mapped_addresses(&spans);
    for id in 0..3 {
        let needle = format!("msg=m{id}");
        let entry: Vec<&Got> = spans
            .iter()
            .filter(|s| s.kind == 2 && s.attrs.values().any(|v| v.contains(&needle)))
            .collect();
        assert_eq!(entry.len(), 1, "{spans:#?}");
        let calls: Vec<&Got> = spans
            .iter()
            .filter(|s| s.kind == 3 && s.parent == entry[0].id)
            .collect();
        assert_eq!(calls.len(), 1, "call {id}: {spans:#?}");
        assert!(calls[0].name.contains("Say"), "{:?}", calls[0]);
        let served: Vec<&Got> = spans
            .iter()
            .filter(|s| s.kind == 2 && s.parent == calls[0].id)
            .collect();
        assert_eq!(served.len(), 1, "call {id}: {spans:#?}");
        assert!(served[0].name.contains("Say"));
        assert_child_of(served[0], calls[0], "own gRPC server");
    }
}

/// A worker goroutine started by the first /work request and fed by nine later ones over a
/// channel: only the first request's call is in the first request's trace; the others start
/// traces of their own (the agent counts them), never the first request's.
#[test]
fn privileged_shapes_a_long_lived_worker_does_not_pull_later_calls_into_the_first_trace() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = build_go("http-hello") else {
        return cannot_run("cannot build examples/http-hello");
    };
    worker(&hello);
}

/// The same in a stripped, host-linked cgo build.
#[test]
fn privileged_shapes_a_long_lived_worker_in_a_stripped_cgo_binary() {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = build_cgo_stripped("http-hello") else {
        return cannot_run("cannot build examples/http-hello with cgo (gcc)");
    };
    worker(&hello);
}

fn worker(hello: &Path) {
    let service = go_service(hello, "worker", &["--listen", ":0"]);
    let file = tmp(&format!(
        "{}-worker.jsonl",
        hello.file_name().unwrap().display()
    ));
    let agent = agent(&file, &[service.port()]);
    for id in 4000..4010 {
        assert_eq!(
            get("127.0.0.1", &service.port(), &format!("/work?id={id}")),
            200
        );
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans = read_spans(&file);
    let entry = |id: u64| {
        spans
            .iter()
            .find(|s| s.kind == 2 && s.name.contains("/work") && s.carries(id))
            .unwrap_or_else(|| panic!("no /work span of {id}"))
    };
    let call = |id: u64| {
        spans
            .iter()
            .find(|s| s.kind == 3 && s.service == "worker" && s.carries(id))
            .unwrap_or_else(|| panic!("no worker call of {id}"))
    };
    let first = entry(4000);
    assert_child_of(call(4000), first, "the first request's own call");
    for id in 4001..4010 {
        let c = call(id);
        assert_ne!(
            c.trace, first.trace,
            "call {id} landed in the first request's trace"
        );
        assert!(c.parent.is_empty(), "call {id} has a parent: {c:#?}");
        // Its server span follows it.
        let served = spans.iter().find(|s| s.kind == 2 && s.parent == c.id);
        assert!(served.is_some(), "call {id} has no server span");
    }
    let in_first = spans.iter().filter(|s| s.trace == first.trace).count();
    assert_eq!(
        in_first, 4,
        "the first trace: the test's call, /work, its call, /hello"
    );
    assert!(
        stopped
            .stderr
            .contains("9 new traces from goroutines that outlived their request"),
        "{}",
        stopped.stderr
    );
}
