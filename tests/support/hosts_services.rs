//! The multi-host test's services (privileged_hosts) on the hosts lab (hosts_lab): curl and
//! front (gin) on host A, relay (net/http) and Python's http.server on host B, echo-grpc
//! (grpc-go) on host C, each in its host's cgroup and network namespace, host B's two reached
//! from A through virtual addresses (DNAT); and the requests the test sends from host A, each
//! with a `msg=` of its own and (to the Go routes) a traceparent naming its trace.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use wirespan::testing::cannot_run;

use super::{
    Listening,
    hosts_lab::{HOST_A, HOST_B, HOST_C, HostsLab, PYTHON_VIP, RELAY_VIP},
    hosts_spans::{Route, Sent},
    python_server, require_privileges,
    shapes::tmp,
};

/// The services of each host, as their agents must see them.
pub const SERVICES: [(&str, &[&str]); 3] = [
    ("host-a", &["curl-a", "front"]),
    ("host-b", &["relay", "py-b"]),
    ("host-c", &["echo-grpc"]),
];

/// The lab with its services running. Fields drop in order: the programs before the lab.
pub struct Setup {
    pub front: Listening,
    pub relay: Listening,
    pub echo: Listening,
    /// Kept running until the lab goes.
    _python: Listening,
    pub lab: HostsLab,
    pub started: Instant,
    /// Trace ids of this run start with it.
    pub run_id: String,
}

impl Setup {
    /// Build the examples, make the lab and start the services; None (after `cannot_run`)
    /// when something the test needs is missing.
    pub fn new() -> Option<Self> {
        if !require_privileges() {
            return None;
        }
        let started = Instant::now();
        if !tools_present() {
            return None;
        }
        let (Some(grpc_echo), Some(gin_front)) = (
            super::go_build("examples/grpc-echo", "hosts-grpc-echo"),
            super::go_build("examples/gin-front", "hosts-gin-front"),
        ) else {
            cannot_run("cannot build examples/grpc-echo and examples/gin-front");
            return None;
        };
        let lab = match HostsLab::up() {
            Ok(lab) => lab,
            Err(why) => {
                cannot_run(&format!("cannot build the hosts lab: {why}"));
                return None;
            }
        };
        let start = |host: &str, program: &PathBuf, name: &str, args: &[&str]| {
            let mut command = Command::new(program);
            command.args(args).env("OTEL_SERVICE_NAME", name);
            Listening::start(&mut lab.host(host).command(&command))
        };
        let echo_addr = format!("{HOST_C}:9090");
        let echo = start(
            "host-c",
            &grpc_echo,
            "echo-grpc",
            &["server", "--listen", &echo_addr],
        );
        let relay = start(
            "host-b",
            &grpc_echo,
            "relay",
            &[
                "relay",
                "--listen",
                &format!("{HOST_B}:8080"),
                "--target",
                &echo_addr,
            ],
        );
        let page_dir = tmp("hosts-pages");
        std::fs::create_dir_all(&page_dir).unwrap();
        std::fs::write(page_dir.join("page.txt"), b"a page on host b\n").unwrap();
        let mut py = python_server(&page_dir);
        py.arg(HOST_B).env("OTEL_SERVICE_NAME", "py-b");
        let python = Listening::start(&mut lab.host("host-b").command(&py));
        let python_port: u16 = python
            .addr
            .parse()
            .expect("the Python server prints its port");
        if let Err(why) = lab
            .dnat(RELAY_VIP, HOST_B, 8080)
            .and_then(|()| lab.dnat(PYTHON_VIP, HOST_B, python_port))
        {
            panic!("cannot add the virtual addresses: {why}");
        }
        let front = start(
            "host-a",
            &gin_front,
            "front",
            &[
                "--listen",
                &format!("{HOST_A}:8080"),
                "--backend",
                &format!("{RELAY_VIP}:80"),
            ],
        );
        eprintln!("hosts: lab and services up in {}", secs(started.elapsed()));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Some(Self {
            front,
            relay,
            echo,
            _python: python,
            lab,
            started,
            run_id: format!("{:016x}{:08x}", nanos as u64, std::process::id()),
        })
    }

    /// The pids of each host's Go programs.
    pub fn go_pids(&self) -> [(&'static str, Vec<u32>); 3] {
        [
            ("host-a", vec![self.front.pid()]),
            ("host-b", vec![self.relay.pid()]),
            ("host-c", vec![self.echo.pid()]),
        ]
    }

    /// curl on host A, with a traceparent of its own: the request's trace.
    /// The Go routes carry a `traceparent` of their own, which names the request's trace (front,
    /// on the same host, does not pass it on: the hops to other hosts join through the store
    /// alone). The Python route carries none, or Python's server span could adopt it rather
    /// than join through the store: its trace is the one curl's client span starts.
    pub fn send(&self, route: Route, n: u32) -> Sent {
        let msg = format!("q{n:03}x");
        let (trace, parent) = if route == Route::Python {
            (String::new(), String::new())
        } else {
            (
                format!("{}{n:08x}", self.run_id),
                format!("{:016x}", 0xa11c_e000_u64 + u64::from(n)),
            )
        };
        let url = match route {
            Route::Echo => format!("http://{HOST_A}:8080/echo?msg={msg}"),
            Route::Fanout => format!("http://{HOST_A}:8080/fanout?msg={msg}"),
            Route::Python => format!("http://{PYTHON_VIP}/page.txt?msg={msg}"),
        };
        let at = self.started.elapsed();
        let mut curl = Command::new("curl");
        curl.args(["-sS", "-f", "--max-time", "10"])
            .arg(&url)
            .env("OTEL_SERVICE_NAME", "curl-a");
        if !trace.is_empty() {
            curl.arg("-H")
                .arg(format!("traceparent: 00-{trace}-{parent}-01"));
        }
        let out = self
            .lab
            .host("host-a")
            .command(&curl)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {url} on host A failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Sent {
            route,
            msg,
            trace,
            parent,
            at,
        }
    }
}

/// Whether every program the test runs is installed (`cannot_run` names the first missing).
fn tools_present() -> bool {
    for (program, arg, package) in [
        ("nft", "--version", "nftables"),
        ("curl", "--version", "curl"),
        ("nsenter", "--version", "util-linux"),
        ("redis-server", "--version", "redis-server"),
        ("redis-cli", "--version", "redis-tools"),
        ("python3", "--version", "python3"),
    ] {
        if !Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            cannot_run(&format!(
                "{program} is missing (Debian package {package}; cargo xtask setup installs it)"
            ));
            return false;
        }
    }
    true
}

/// The spans files of a case, one per host.
pub fn files(case: &str) -> [PathBuf; 3] {
    ["a", "b", "c"].map(|h| tmp(&format!("hosts-{case}-{}-{h}.jsonl", std::process::id())))
}

/// Seconds, for the report.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
