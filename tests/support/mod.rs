//! Shared helpers of the privileged end-to-end tests: run the real `wirespan` binary as its own
//! process (the agent never captures its own process, so the test process must be another one),
//! wait until it reports ready, stop it with SIGTERM, and collect what it printed.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod churn;
pub mod db_servers;
pub mod faults;
pub mod go_builds;
pub mod hostile;
pub mod hosts_agent_output;
pub mod hosts_checks;
pub mod hosts_gateway;
pub mod hosts_lab;
pub mod hosts_services;
pub mod hosts_spans;
pub mod jaeger;
pub mod keep_alive;
pub mod nat_lab;
pub mod nghttp2;
pub mod secrets;
pub mod semconv;
pub mod shapes;
pub mod span_run;
pub mod tls;
pub mod webdriver;
pub mod zipkin;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use wirespan::testing::{cannot_run, privileged};

pub const AGENT: &str = env!("CARGO_BIN_EXE_wirespan");

/// True when the test may go on; otherwise reports why not (a failure under `CI=true`).
pub fn require_privileges() -> bool {
    if privileged() {
        return true;
    }
    cannot_run(
        "needs root, or CAP_SYS_ADMIN + CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH, to load probes",
    );
    false
}

/// A running agent. Dropped still running (a test that failed before it stopped the agent),
/// it is killed: a stray agent would trace every test after it.
pub struct Agent {
    child: Child,
    /// The start-up report (stderr lines up to and including `ready`).
    pub report: Vec<String>,
    stderr_rest: mpsc::Receiver<String>,
    /// Taken when the agent is stopped.
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the agent printed, once stopped.
pub struct Stopped {
    pub stdout: String,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

impl Agent {
    /// Start `wirespan <args>` and wait (up to 60 s) until it is attached and ready.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_stdout(args, Stdio::piped())
    }

    /// `start` with `--port P` added for each of `ports`: only their connections.
    pub fn start_on_ports(args: &[&str], ports: &[&str]) -> Self {
        let mut args = args.to_vec();
        for port in ports {
            args.extend(["--port", port]);
        }
        Self::start(&args)
    }

    /// Like `start`, with the agent's standard output going to `stdout` (then `Stopped.stdout`
    /// stays empty).
    pub fn start_with_stdout(args: &[&str], stdout: Stdio) -> Self {
        Self::start_with_env(args, stdout, &[])
    }

    /// Like `start_with_stdout`, with extra environment variables for the agent.
    pub fn start_with_env(args: &[&str], stdout: Stdio, env: &[(&str, &str)]) -> Self {
        Self::try_start(args, stdout, env)
            .unwrap_or_else(|printed| panic!("agent did not become ready; it printed:\n{printed}"))
    }

    /// Start the agent; what it printed if it exited (or hung for 60 s) before it was ready.
    pub fn try_start(args: &[&str], stdout: Stdio, env: &[(&str, &str)]) -> Result<Self, String> {
        let mut command = Command::new(AGENT);
        command.args(args).envs(env.iter().copied()).stdout(stdout);
        Self::try_start_command(command)
    }

    /// Start the agent through `command` (its program and arguments set; e.g. `setpriv` with
    /// the agent after it), capturing its standard error; what it printed if it exited (or hung
    /// for 60 s) before it was ready.
    pub fn try_start_command(mut command: Command) -> Result<Self, String> {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the wirespan binary");
        let out = child.stdout.take();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut out) = out {
                out.read_to_string(&mut text).unwrap();
            }
            text
        });
        let (tx, rx) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut report = Vec::new();
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(report.join("\n"));
            };
            let ready = line.starts_with("wirespan: ready");
            report.push(line);
            if ready {
                break;
            }
        }
        Ok(Self {
            child,
            report,
            stderr_rest: rx,
            stdout: Some(stdout),
        })
    }

    /// SIGTERM, then wait for a clean exit and collect the output.
    pub fn stop(self) -> Stopped {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id().cast_signed(), libc::SIGTERM) };
        self.stop_after_exit()
    }

    /// Wait for the agent to exit by itself (`--duration`), then collect the output.
    pub fn stop_after_exit(mut self) -> Stopped {
        let status = self.child.wait().unwrap();
        let stdout = self
            .stdout
            .take()
            .map(|out| out.join().unwrap())
            .unwrap_or_default();
        let mut stderr = self.report.join("\n");
        while let Ok(line) = self.stderr_rest.recv_timeout(Duration::from_secs(5)) {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        Stopped {
            stdout,
            stderr,
            status,
        }
    }
}

impl Stopped {
    /// The JSON-lines events, failing on any line that is not JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (up to 30 s) for a stderr line after `ready` that contains `text`; the lines read
    /// are kept in the report.
    pub fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Ok(line) = self.stderr_rest.recv_timeout(left) else {
                break;
            };
            self.report.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
        panic!(
            "no line with {text:?} from the agent; it printed:\n{}",
            self.report.join("\n")
        );
    }
}

/// A Python HTTP/1.1 keep-alive file server (tests/support/http_server.py) on a free port.
pub struct HttpServer {
    child: Child,
    pub port: u16,
    pub dir: std::path::PathBuf,
}

impl HttpServer {
    /// Serve `files` (name, contents) from a fresh directory on `host`.
    pub fn start(host: &str, files: &[(&str, &[u8])]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("wirespan-http-{}-{}", std::process::id(), gettid()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        let mut child = python_server(&dir)
            .arg(host)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first.trim().parse().expect("the server prints its port");
        Self { child, port, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `python3 tests/support/http_server.py <dir>`, to add arguments and environment to: the
/// test servers' script, serving `dir`.
pub fn python_server(dir: &std::path::Path) -> Command {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/support/http_server.py"
    );
    let mut command = Command::new("python3");
    command.arg(script).arg(dir);
    command
}

/// Data events of one connection end, selected by pid and this end's port.
pub fn data_of<'a>(
    events: &'a [serde_json::Value],
    pid: u32,
    sport: u16,
    direction: &str,
) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| {
            e["type"] == "data"
                && e["pid"] == pid
                && e["sport"] == sport
                && e["direction"] == direction
        })
        .collect()
}

/// Sum of `bytes` over events.
pub fn total_bytes(events: &[&serde_json::Value]) -> u64 {
    events.iter().map(|e| e["bytes"].as_u64().unwrap()).sum()
}

/// Events of one direction are in order and contiguous: each starts at the TCP sequence number
/// where the previous one ended. Returns (first seq, total bytes).
pub fn contiguous_range(events: &[&serde_json::Value]) -> (u32, u64) {
    let first = events.first().expect("at least one data event")["seq"]
        .as_u64()
        .unwrap() as u32;
    let mut next = first;
    for e in events {
        let seq = e["seq"].as_u64().unwrap() as u32;
        assert_eq!(seq, next, "data events out of order or with a gap: {e}");
        next = seq.wrapping_add(e["bytes"].as_u64().unwrap() as u32);
    }
    (first, total_bytes(events))
}

/// This thread's kernel tid.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// A program that prints the address it listens on as its first line (the Go examples do);
/// killed when dropped.
pub struct Listening {
    pub child: Child,
    pub addr: String,
}

impl Listening {
    /// Spawn `cmd` and wait for its address.
    pub fn start(cmd: &mut Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut addr = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut addr)
            .unwrap();
        Self {
            child,
            addr: addr.trim().to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> String {
        self.addr.rsplit(':').next().unwrap().to_owned()
    }

    /// Still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on a new connection to `addr`, with `headers` (each line ending in CRLF) added;
/// (status, body). One write, as real clients do, so the server reads the request whole.
pub fn http_get(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Make sure `python3` can import `module`, installing `package` with pip when it cannot
/// (idempotent: a present module costs one import). The error says what to install by hand.
pub fn python_module(module: &str, package: &str) -> Result<(), String> {
    let importable = || {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable() {
        return Ok(());
    }
    let pip = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", package])
        .output()
        .map_err(|e| format!("python3 -m pip cannot run ({e}): install {package} by hand"))?;
    if importable() {
        return Ok(());
    }
    Err(format!(
        "python3 cannot import {module}, and `python3 -m pip install {package}` did not fix it: {}",
        String::from_utf8_lossy(&pip.stderr).trim()
    ))
}

/// `go build` of the Go program in `dir` (relative to the repository, e.g. `examples/http-hello`)
/// into the tests' scratch directory as `name`; None when it does not build.
pub fn go_build(dir: &str, name: &str) -> Option<std::path::PathBuf> {
    go_build_with(dir, name, &[])
}

/// Like `go_build`, with extra `go build` arguments (tags, `-ldflags`).
pub fn go_build_with(dir: &str, name: &str, args: &[&str]) -> Option<std::path::PathBuf> {
    go_build_toolchain(dir, name, None, args)
}

/// Like `go_build_with`, with another Go `toolchain` (`GOTOOLCHAIN`, e.g. `go1.22.12`).
pub fn go_build_toolchain(
    dir: &str,
    name: &str,
    toolchain: Option<&str>,
    args: &[&str],
) -> Option<std::path::PathBuf> {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut go = Command::new("go");
    if let Some(toolchain) = toolchain {
        go.env("GOTOOLCHAIN", toolchain);
    }
    go.args(["build", "-o"])
        .arg(&out)
        .args(args)
        .arg(".")
        .current_dir(source)
        .status()
        .ok()?
        .success()
        .then_some(out)
}

/// Spans of an `--exporter file` output (OTLP JSON lines): (service.name, span) pairs. Every
/// attribute key of the spans and their resources must conform to the semantic conventions.
pub fn file_spans(path: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut spans = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    let mut collect = |attributes: &serde_json::Value| {
        for attribute in attributes.as_array().into_iter().flatten() {
            keys.insert(attribute["key"].as_str().unwrap_or_default().to_owned());
        }
    };
    for line in text.lines() {
        let request: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            collect(&rs["resource"]["attributes"]);
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    collect(&span["attributes"]);
                    spans.push((service.clone(), span.clone()));
                }
            }
        }
    }
    semconv::assert_conforming(
        keys.iter().map(String::as_str),
        &format!("the spans in {}", path.display()),
    );
    for (service, span) in &spans {
        let name = span["name"].as_str().unwrap_or_default();
        assert_no_id_in_name(name, &format!("{service} in {}", path.display()));
    }
    spans
}

/// A path segment that looks like an id (digits, long hex, a UUID): what no span name may
/// carry, or every request would be an operation of its own.
pub fn looks_like_id(segment: &str) -> bool {
    let digits = !segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit());
    let hex = segment.len() >= 8
        && segment.chars().all(|c| c.is_ascii_hexdigit())
        && segment.chars().any(|c| c.is_ascii_digit());
    let uuid = segment.len() == 36 && segment.matches('-').count() == 4;
    digits || hex || uuid
}

/// An HTTP span's name (`METHOD /route`) has no id segment.
pub fn assert_no_id_in_name(name: &str, context: &str) {
    if let Some((_, path)) = name.split_once(' ')
        && path.starts_with('/')
    {
        assert!(
            !path.split('/').any(looks_like_id),
            "{context}: an id in the span name {name:?}"
        );
    }
}

/// A span attribute's value (string or integer), as JSON.
pub fn span_attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

/// One line per span (service, kind, name, server.port, error.type, span and parent ids): what
/// a failed assertion prints, short enough that CI's log keeps all of it.
pub fn describe_spans(spans: &[(String, serde_json::Value)]) -> String {
    use std::fmt::Write as _;
    let text = |v: Option<&serde_json::Value>| {
        v.map_or("-".to_owned(), |v| {
            v.get("stringValue")
                .or_else(|| v.get("intValue"))
                .map_or_else(
                    || v.to_string(),
                    |s| s.as_str().map_or(s.to_string(), str::to_owned),
                )
        })
    };
    let mut out = String::new();
    for (service, span) in spans {
        let _ = writeln!(
            out,
            "{service} kind={} {:?} port={} error={} id={} parent={} start={}",
            span["kind"],
            span["name"].as_str().unwrap_or_default(),
            text(span_attr(span, "server.port")),
            text(span_attr(span, "error.type")),
            span["spanId"].as_str().unwrap_or_default(),
            span["parentSpanId"].as_str().unwrap_or_default(),
            span["startTimeUnixNano"].as_str().unwrap_or_default(),
        );
    }
    out
}
