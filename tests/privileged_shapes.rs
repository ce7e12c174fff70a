//! Privileged end to end (needs root, a kernel, Go and Python): parent links in the shapes real
//! programs have, not only the shape the examples happen to run in. Listeners on `127.0.0.1`,
//! `[::1]`, `:port` (a dual-stack IPv6 socket that sees IPv4 peers as `::ffff:a.b.c.d`) and
//! `0.0.0.0`, with IPv4 and IPv6 clients, Go to Go, Python to Go and Go to Python; programs that
//! call their own HTTP and gRPC servers; a long-lived worker goroutine fed by later requests; and
//! a virtual service address on the same host (DNAT, with and without SNAT) between network
//! namespaces this test makes. Spans go through the OTLP JSON file exporter and are read back.

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use support::{
    Agent, Listening,
    nat_lab::{BACK_VIP, FRONT_VIP, NatLab},
    require_privileges,
};
use wirespan::testing::cannot_run;

/// Agents of these tests would see each other's services: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ------------------------------------------------------------------ spans

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    /// 2 server, 3 client (OTLP JSON).
    kind: u64,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

impl Got {
    /// Whether any attribute names request `id` (`id=<id>` in a URL or query).
    fn carries(&self, id: u64) -> bool {
        let needle = format!("id={id}");
        self.attrs.values().any(|v| {
            v.split(['&', '?'])
                .any(|part| part == needle || part.ends_with(&format!("?{needle}")))
        })
    }
}

fn read_spans(file: &Path) -> Vec<Got> {
    support::file_spans(file)
        .into_iter()
        .map(|(service, span)| {
            let attrs = span["attributes"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|a| {
                            let v = &a["value"];
                            let value = v["stringValue"]
                                .as_str()
                                .map_or_else(|| v.to_string(), str::to_owned);
                            (a["key"].as_str().unwrap().to_owned(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
            Got {
                service,
                name: text("name"),
                kind: span["kind"].as_u64().unwrap_or_default(),
                trace: text("traceId"),
                id: text("spanId"),
                parent: text("parentSpanId"),
                attrs,
            }
        })
        .collect()
}

/// No exported attribute names an IPv4-mapped IPv6 address.
fn assert_no_mapped_addresses(spans: &[Got]) {
    for span in spans {
        for (key, value) in &span.attrs {
            assert!(
                !value.contains("::ffff:"),
                "{key}={value} in {} {}",
                span.service,
                span.name
            );
        }
    }
}

/// Checks a trace: `child`'s parent is `parent`, in the same trace.
fn assert_child_of(child: &Got, parent: &Got, what: &str) {
    assert_eq!(
        (child.parent.as_str(), child.trace.as_str()),
        (parent.id.as_str(), parent.trace.as_str()),
        "{what}: {} {} should be a child of {} {}",
        child.service,
        child.name,
        parent.service,
        parent.name
    );
}

/// The agent, exporting to a file, watching `ports`.
fn agent(file: &Path, ports: &[String]) -> Agent {
    let _ = std::fs::remove_file(file);
    let mut args = vec![
        "run".to_owned(),
        "--exporter".to_owned(),
        "file".to_owned(),
        "--output".to_owned(),
        file.to_str().unwrap().to_owned(),
        // Requests are told apart by their query (`id=N`).
        "--show-query".to_owned(),
    ];
    for port in ports {
        args.extend(["--port".to_owned(), port.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args)
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

// ------------------------------------------------------------------ programs

fn build_go(example: &str) -> Option<PathBuf> {
    support::go_build(&format!("examples/{example}"), &format!("shapes-{example}"))
}

/// `example` with its cgo dependency (`-tags cgotls`), host-linked and stripped (`-s -w`).
fn build_cgo_stripped(example: &str) -> Option<PathBuf> {
    support::go_build_with(
        &format!("examples/{example}"),
        &format!("shapes-{example}-cgo-stripped"),
        &["-tags", "cgotls", "-ldflags=-linkmode=external -s -w"],
    )
}

fn go_service(binary: &Path, name: &str, args: &[&str]) -> Listening {
    Listening::start(
        Command::new(binary)
            .args(args)
            .env("OTEL_SERVICE_NAME", name),
    )
}

/// GET `path` from `host:port` on a new connection, in one write; the status.
fn get(host: &str, port: &str, path: &str) -> u16 {
    let addr = format!("{host}:{port}");
    let mut stream = TcpStream::connect(&addr).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The spans of request `id`: its entry server span named `entry` at `service`, and the client
/// spans (and their servers) below it. Checks the /fanout tree: entry ← caller client (if
/// `caller` names its service), two client calls under the entry, each with one server span.
fn check_fanout(spans: &[Got], id: u64, service: &str, caller: Option<&str>, backend: &str) {
    let entry: Vec<&Got> = spans
        .iter()
        .filter(|s| {
            s.kind == 2 && s.service == service && s.name.contains("/fanout") && s.carries(id)
        })
        .collect();
    assert_eq!(entry.len(), 1, "request {id}: entry spans {entry:#?}");
    let entry = entry[0];
    if let Some(caller) = caller {
        let parent = spans
            .iter()
            .find(|s| s.id == entry.parent)
            .unwrap_or_else(|| panic!("request {id}: the entry span has no parent {entry:#?}"));
        assert_eq!(
            (parent.kind, parent.service.as_str()),
            (3, caller),
            "request {id}"
        );
        assert_child_of(entry, parent, &format!("request {id}: caller → entry"));
    }
    let calls: Vec<&Got> = spans
        .iter()
        .filter(|s| s.kind == 3 && s.service == service && s.carries(id) && s.name.contains("GET"))
        .collect();
    assert_eq!(calls.len(), 2, "request {id}: calls {calls:#?}");
    for call in calls {
        assert_child_of(call, entry, &format!("request {id}: entry → call"));
        let served: Vec<&Got> = spans
            .iter()
            .filter(|s| s.kind == 2 && s.parent == call.id)
            .collect();
        assert_eq!(served.len(), 1, "request {id}: servers of {call:#?}");
        assert_eq!(served[0].service, backend, "request {id}");
        assert_child_of(served[0], call, &format!("request {id}: call → server"));
    }
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
    let relay = Listening::start(
        Command::new(relay)
            .args(["relay", "--listen", ":0", "--serve-grpc", ":0"])
            .env("OTEL_SERVICE_NAME", "selfgrpc"),
    );
    let file = tmp("shapes-self-grpc.jsonl");
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

// ------------------------------------------------------------------ DNAT on one host

/// A client in one namespace calls front through its virtual address; front (in the other
/// namespace) fans out to back through back's virtual address. Both hops cross DNAT (and SNAT
/// when asked): every server span must still be the child of the client span at the other end.
fn dnat_case(snat: bool) {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let Some(hello) = build_go("http-hello") else {
        return cannot_run("cannot build examples/http-hello");
    };
    if Command::new("nft").arg("--version").output().is_err() {
        return cannot_run(
            "nft is not installed (Debian package nftables; cargo xtask setup installs it)",
        );
    }
    if Command::new("curl").arg("--version").output().is_err() {
        return cannot_run("curl is not installed");
    }
    let lab = match NatLab::up(snat) {
        Ok(lab) => lab,
        Err(why) => return cannot_run(&format!("cannot build the NAT lab: {why}")),
    };
    let in_ns = |ns: &str, name: &str, args: &[&str]| {
        Listening::start(
            Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(&hello)
                .args(args)
                .env("OTEL_SERVICE_NAME", name),
        )
    };
    let back = in_ns(&lab.client_ns(), "back", &["--listen", ":8081"]);
    let front = in_ns(
        &lab.server_ns(),
        "front",
        &["--listen", ":8080", "--backend", &format!("{BACK_VIP}:80")],
    );
    let file = tmp(&format!("shapes-dnat-{snat}.jsonl"));
    let agent = agent(&file, &["80".into(), "8080".into(), "8081".into()]);
    for id in 5000..5005 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.client_ns(),
                "curl",
                "-sf",
                "--max-time",
                "5",
            ])
            .arg(format!("http://{FRONT_VIP}/fanout?id={id}"))
            .env("OTEL_SERVICE_NAME", "curl-client")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl through the virtual address failed: {out:?}"
        );
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // The programs leave the namespaces before the lab goes.
    drop((front, back));
    drop(lab);
    let spans = read_spans(&file);
    assert_no_mapped_addresses(&spans);
    for id in 5000..5005 {
        let entry = spans
            .iter()
            .find(|s| s.kind == 2 && s.service == "front" && s.carries(id))
            .unwrap_or_else(|| panic!("no front span of {id}: {spans:#?}"));
        let caller = spans
            .iter()
            .find(|s| s.id == entry.parent)
            .unwrap_or_else(|| panic!("request {id}: front lost its client parent (snat {snat})"));
        assert_eq!(caller.kind, 3, "request {id}");
        assert!(
            caller.attrs.values().any(|v| v.contains(FRONT_VIP)),
            "{caller:#?}"
        );
        check_fanout(&spans, id, "front", Some(&caller.service), "back");
    }
}

#[test]
fn privileged_shapes_dnat_to_a_virtual_address_on_this_host_keeps_every_parent() {
    dnat_case(false);
}

#[test]
fn privileged_shapes_dnat_and_snat_on_this_host_keep_every_parent() {
    dnat_case(true);
}
