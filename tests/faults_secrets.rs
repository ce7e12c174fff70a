//! Fault suite, secrets (needs root, a kernel, Go, Python, curl, the openssl command and
//! nghttp2's `nghttpd`): a marker secret in every place a credential goes, through every
//! protocol, and every output of the agent searched for it. Issue 19: "Secrets never leave the
//! agent, on any output".
//!
//! The legs, each request sent twice on one connection (the second HTTP/2 use of a header
//! hits HPACK's dynamic table):
//! - `h1py`: curl → Python's http.server, HTTP/1.1;
//! - `h1go`: curl → examples/http-hello, HTTP/1.1 (Go's handler probes read the request);
//! - `h1tls`: curl → Python over HTTPS, HTTP/1.1 (OpenSSL both ends);
//! - `h2tls`: curl → examples/http-hello over HTTPS, HTTP/2 (OpenSSL, Go crypto/tls);
//! - `h2c`: Python's h2 → nghttpd, HTTP/2 with prior knowledge (HPACK from Python and C, no Go
//!   runtime to read headers from; curl 7.88 cannot reuse an h2c connection);
//! - `grpc`: examples/grpc-echo's client → its server, credentials as metadata;
//! - `env`: no request, a variable in the environment of a program started while the agents
//!   watch (the gRPC client), which exec events carry.
//!
//! Each leg has a marker of its own for each of `Authorization: Bearer`,
//! `Proxy-Authorization`, `Cookie`, `X-Api-Key`, a query value (not gRPC), and the answer's
//! `Set-Cookie` where the server can be made to send one (Python and Go's net/http; not nghttpd
//! or grpc-echo). Markers go through files, never command lines (which every user sees) or
//! environments (but `env`'s).
//!
//! The outputs, all watching at once: `record` (its file), `events`, `events --json`,
//! `exchanges`, `exchanges --json` and `run --exporter file` (its file), each with its standard
//! output and error; then the recording replayed to spans (file and standard error), which must
//! still give each leg's requests as server spans. Each is searched for each marker as sent and
//! HPACK Huffman-coded (`support::secrets`).
//!
//! So that a pass is not vacuous, each leg's requests must show as server exchanges and spans,
//! and each leg also sends a probe: a marker in a header that is no credential
//! (`X-Wsp-Probe`), which the recording and `events --json` must show. It proves that the
//! header blocks reached those outputs and that the search finds a value there, HPACK-coded
//! or not. (`run --exporter console`, the spans of `--exporter file` drawn as trees, is left
//! out, as is a `record --show-secrets` control: every agent costs seconds to stop, as
//! detaching its tracepoints and uprobes waits for RCU grace periods, one agent after another.)

mod support;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Agent, Listening, Stopped,
    faults::Figures,
    go_build,
    jaeger::free_port,
    nghttp2, python_module, python_server, require_privileges,
    secrets::{Marker, Output, Shown, huffman_code},
    span_run::{Run, attr, replay_to_file},
    tls::{Certs, certs, go_https, python_https_command},
};
use wirespan::testing::cannot_run;

/// The places a marker goes: field name, and what it stands in for.
const FIELDS: [(&str, &str); 7] = [
    ("auth", "Authorization: Bearer"),
    ("proxy", "Proxy-Authorization"),
    ("cookie", "Cookie"),
    ("apikey", "X-Api-Key"),
    ("query", "a query value"),
    ("setcookie", "Set-Cookie in the answer"),
    ("env", "an environment variable"),
];

/// Requests per leg.
const REQUESTS: usize = 2;

/// One protocol path and its markers.
struct Leg {
    name: &'static str,
    what: &'static str,
    /// The server's port, once it listens.
    port: String,
    markers: Vec<Marker>,
    /// The value of a header that is no credential, which outputs show.
    probe: Marker,
}

impl Leg {
    fn new(name: &'static str, what: &'static str, fields: &[&str]) -> Self {
        let markers = FIELDS
            .iter()
            .filter(|(f, _)| fields.contains(f))
            .map(|(f, _)| Marker::new(name, f))
            .collect();
        Self {
            name,
            what,
            port: String::new(),
            markers,
            probe: Marker::new(name, "probe"),
        }
    }

    fn marker(&self, field: &str) -> &str {
        &self
            .markers
            .iter()
            .find(|m| m.field == field)
            .unwrap_or_else(|| panic!("{} has no {field} marker", self.name))
            .text
    }

    /// A file in `dir` with this leg's Set-Cookie value, for its server to answer with.
    fn set_cookie_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.set-cookie", self.name));
        let value = format!("id={}; HttpOnly", self.marker("setcookie"));
        std::fs::write(&path, value).unwrap();
        path
    }

    /// curl with this leg's credential headers and query marker, `REQUESTS` times to `url` on
    /// one connection, all from a configuration file; whether every answer was 200, and what
    /// curl printed.
    fn curl(&self, dir: &Path, certs: &Certs, version: &str, url: &str) -> (bool, String) {
        let mut config = format!(
            "header = \"Authorization: Bearer {}\"\nheader = \"Proxy-Authorization: Basic {}\"\n\
             header = \"Cookie: session={}\"\nheader = \"X-Api-Key: {}\"\n\
             header = \"X-Wsp-Probe: {}\"\n",
            self.marker("auth"),
            self.marker("proxy"),
            self.marker("cookie"),
            self.marker("apikey"),
            self.probe.text,
        );
        for _ in 0..REQUESTS {
            let _ = writeln!(
                config,
                "url = \"{url}?token={}\"\noutput = \"/dev/null\"",
                self.marker("query")
            );
        }
        let file = dir.join(format!("{}.curl", self.name));
        std::fs::write(&file, config).unwrap();
        let out = Command::new("curl")
            .args(["-s", "-S", "--max-time", "10", version, "--cacert"])
            .arg(&certs.cert)
            .arg("--config")
            .arg(&file)
            .args(["-w", "status=%{http_code}\n"])
            .output()
            .expect("curl runs");
        answered(&out)
    }
}

/// Whether a client that prints `status=<code>` per answer exited 0 with `REQUESTS` answers of
/// 200, and what it printed.
fn answered(out: &std::process::Output) -> (bool, String) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && printed.matches("status=200").count() == REQUESTS;
    (ok, printed.trim().to_owned())
}

/// The scratch directory, emptied, with `www/hello.txt` for the file servers.
fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-secrets");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/hello.txt"), "hello\n").unwrap();
    dir
}

/// The traced servers, one a leg, and the legs with their ports.
struct Servers {
    _running: Vec<Listening>,
    _nghttpd: nghttp2::Nghttpd,
    grpc_addr: String,
    echo: PathBuf,
    legs: Vec<Leg>,
}

impl Servers {
    fn start(dir: &Path, certs: &Certs) -> Result<Self, String> {
        if let Some(why) = nghttp2::missing() {
            return Err(why.to_owned());
        }
        let hello = go_build("examples/http-hello", "faults-secrets-hello")
            .ok_or("go cannot build examples/http-hello")?;
        let echo = go_build("examples/grpc-echo", "faults-secrets-echo")
            .ok_or("go cannot build examples/grpc-echo")?;
        python_module("h2", "h2")?;
        let fields: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        let (all, requests, metadata) = (&fields[..6], &fields[..5], &fields[..4]);
        let mut legs = vec![
            Leg::new("h1py", "HTTP/1.1, curl → Python http.server", all),
            Leg::new("h1go", "HTTP/1.1, curl → Go net/http", all),
            Leg::new("h1tls", "HTTP/1.1 over TLS, curl → Python (OpenSSL)", all),
            Leg::new("h2tls", "HTTP/2 over TLS, curl → Go net/http", all),
            Leg::new("h2c", "HTTP/2 cleartext, Python h2 → nghttpd", requests),
            Leg::new("grpc", "gRPC, grpc-go → grpc-go", metadata),
            Leg::new("env", "the environment of the gRPC client", &["env"]),
        ];
        let www = dir.join("www");
        let python = Listening::start(
            python_server(&www)
                .env("SET_COOKIE_FILE", legs[0].set_cookie_file(dir))
                .env("OTEL_SERVICE_NAME", "secrets-h1py"),
        );
        let go = Listening::start(
            Command::new(&hello)
                .arg("-set-cookie-file")
                .arg(legs[1].set_cookie_file(dir))
                .env("OTEL_SERVICE_NAME", "secrets-h1go"),
        );
        let python_tls = Listening::start(
            python_https_command(certs, "secrets-h1tls")
                .env("SET_COOKIE_FILE", legs[2].set_cookie_file(dir)),
        );
        let cookie = legs[3].set_cookie_file(dir);
        let go_tls = go_https(
            &hello,
            certs,
            "secrets-h2tls",
            &["-set-cookie-file", cookie.to_str().unwrap()],
        );
        let h2c_port = free_port().to_string();
        let nghttpd = nghttp2::start(dir, &www, &h2c_port, false).ok_or("nghttpd did not start")?;
        let grpc = Listening::start(
            Command::new(&echo)
                .arg("server")
                .env("OTEL_SERVICE_NAME", "secrets-grpc"),
        );
        let ports = [
            python.port(),
            go.port(),
            python_tls.port(),
            go_tls.port(),
            h2c_port,
            grpc.port(),
        ];
        // `env` has no server of its own.
        for (leg, port) in legs.iter_mut().zip(ports) {
            leg.port = port;
        }
        Ok(Self {
            grpc_addr: grpc.addr.clone(),
            _running: vec![python, go, python_tls, go_tls, grpc],
            _nghttpd: nghttpd,
            echo,
            legs,
        })
    }

    fn ports(&self) -> Vec<&str> {
        self.legs
            .iter()
            .map(|l| l.port.as_str())
            .filter(|p| !p.is_empty())
            .collect()
    }

    fn leg(&self, name: &str) -> &Leg {
        self.legs.iter().find(|l| l.name == name).unwrap()
    }

    /// Every leg's requests: (leg, whether all were answered right, what the client printed).
    fn traffic(&self, dir: &Path, certs: &Certs) -> Vec<(&'static str, bool, String)> {
        let mut done = Vec::new();
        for leg in self.legs.iter().filter(|l| !l.port.is_empty()) {
            let p = &leg.port;
            let (ok, printed) = match leg.name {
                "h1py" => leg.curl(
                    dir,
                    certs,
                    "--http1.1",
                    &format!("http://127.0.0.1:{p}/hello.txt"),
                ),
                "h1go" => leg.curl(
                    dir,
                    certs,
                    "--http1.1",
                    &format!("http://127.0.0.1:{p}/hello"),
                ),
                "h1tls" => leg.curl(
                    dir,
                    certs,
                    "--http1.1",
                    &format!("https://localhost:{p}/hello.txt"),
                ),
                "h2tls" => leg.curl(
                    dir,
                    certs,
                    "--http2",
                    &format!("https://localhost:{p}/hello"),
                ),
                "h2c" => h2c_requests(dir, leg),
                _ => self.grpc_calls(dir, leg),
            };
            done.push((leg.name, ok, printed));
        }
        done
    }

    /// grpc-echo's client: `REQUESTS` unary calls with the leg's markers as metadata, and the
    /// `env` leg's marker in its environment.
    fn grpc_calls(&self, dir: &Path, leg: &Leg) -> (bool, String) {
        let file = dir.join("grpc.metadata");
        let metadata = format!(
            "authorization: Bearer {}\nproxy-authorization: Basic {}\ncookie: session={}\n\
             x-api-key: {}\nx-wsp-probe: {}\n",
            leg.marker("auth"),
            leg.marker("proxy"),
            leg.marker("cookie"),
            leg.marker("apikey"),
            leg.probe.text,
        );
        std::fs::write(&file, metadata).unwrap();
        let out = Command::new(&self.echo)
            .args(["client", "--target", &self.grpc_addr, "--streams", "0"])
            .args(["--requests", &REQUESTS.to_string(), "--metadata-file"])
            .arg(&file)
            .env("OTEL_SERVICE_NAME", "secrets-grpc-client")
            .env("WSP_TEST_TOKEN", self.leg("env").marker("env"))
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let ok = out.status.success() && printed.contains(&format!("done: {REQUESTS} unary"));
        (ok, printed)
    }
}

/// tests/support/h2c_client.py: `REQUESTS` GETs of nghttpd's hello.txt on one connection with
/// the leg's credential headers and query marker, all from a request file.
fn h2c_requests(dir: &Path, leg: &Leg) -> (bool, String) {
    let request = format!(
        "/hello.txt?token={}\nauthorization: Bearer {}\nproxy-authorization: Basic {}\n\
         cookie: session={}\nx-api-key: {}\nx-wsp-probe: {}\n",
        leg.marker("query"),
        leg.marker("auth"),
        leg.marker("proxy"),
        leg.marker("cookie"),
        leg.marker("apikey"),
        leg.probe.text,
    );
    let file = dir.join("h2c.request");
    std::fs::write(&file, request).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/h2c_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .args(["127.0.0.1", &leg.port, &REQUESTS.to_string()])
        .output()
        .unwrap();
    answered(&out)
}

/// The agents that watch at once: a name, and the output file (if any) of each.
struct Watchers {
    agents: Vec<(String, Option<PathBuf>, Agent)>,
}

impl Watchers {
    /// Start them all at once (each takes seconds to attach).
    fn start(dir: &Path, ports: &[&str]) -> Self {
        let file = |name: &str| dir.join(name);
        let kinds: Vec<(&str, Vec<String>, Option<PathBuf>)> = vec![
            ("record", vec!["record".into()], Some(file("record.rec"))),
            ("events", vec!["events".into()], None),
            (
                "events --json",
                vec!["events".into(), "--json".into()],
                None,
            ),
            ("exchanges", vec!["exchanges".into()], None),
            (
                "exchanges --json",
                vec!["exchanges".into(), "--json".into()],
                None,
            ),
            (
                "run --exporter file",
                vec!["run".into(), "--exporter".into(), "file".into()],
                Some(file("spans.jsonl")),
            ),
        ];
        let agents = std::thread::scope(|scope| {
            let started: Vec<_> = kinds
                .into_iter()
                .map(|(name, mut args, output)| {
                    scope.spawn(move || {
                        if let Some(output) = &output {
                            args.extend(["--output".into(), output.to_str().unwrap().into()]);
                        }
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let agent = Agent::start_on_ports(&args, ports);
                        (name.to_owned(), output, agent)
                    })
                })
                .collect();
            started.into_iter().map(|s| s.join().unwrap()).collect()
        });
        Self { agents }
    }

    /// Stop them all at once: each one's name, output file and what it printed.
    fn stop(self, figures: &mut Figures) -> Vec<(String, Option<PathBuf>, Stopped)> {
        for (_, _, agent) in &self.agents {
            figures.agent_rss(agent.pid());
        }
        std::thread::scope(|scope| {
            let stopping: Vec<_> = self
                .agents
                .into_iter()
                .map(|(name, output, agent)| scope.spawn(move || (name, output, agent.stop())))
                .collect();
            stopping.into_iter().map(|s| s.join().unwrap()).collect()
        })
    }
}

/// Server spans (kind 2) on `port`.
fn server_spans(run: &Run, port: &str) -> usize {
    run.spans
        .iter()
        .filter(|(_, s)| s["kind"] == 2 && attr(s, "server.port").as_deref() == Some(port))
        .count()
}

/// Server exchanges (`exchanges --json`) on `port`.
fn server_exchanges(stdout: &str, port: &str) -> usize {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|x| x["role"] == "server" && x["sport"].as_u64() == port.parse().ok())
        .count()
}

/// Where a leg's markers showed in one output, and how: `auth (plain+huffman)`.
fn shown(leg: &Leg, output: &Output) -> Vec<String> {
    leg.markers
        .iter()
        .filter_map(|m| {
            let forms = m.forms_in(output);
            let forms: Vec<String> = forms.iter().map(ToString::to_string).collect();
            (!forms.is_empty()).then(|| format!("{} ({})", m.field, forms.join("+")))
        })
        .collect()
}

fn describe(found: &[String]) -> String {
    if found.is_empty() {
        "none".to_owned()
    } else {
        found.join(", ")
    }
}

/// What the agents left: every output to search, and what the checks read.
struct Collected {
    outputs: Vec<Output>,
    exchanges_json: String,
    live: Run,
    replay: Run,
    /// Agents that did not exit 0.
    failed: Vec<String>,
}

/// Every output: files, standard output and error of every agent, then the recording's replay
/// (file and standard error). Each is also written to `dir/outputs/` for a look after a failure.
fn collect(stopped: &[(String, Option<PathBuf>, Stopped)], dir: &Path) -> Collected {
    let mut outputs = Vec::new();
    let (mut exchanges_json, mut failed) = (String::new(), Vec::new());
    let (mut recording, mut live) = (None, None);
    for (name, file, agent) in stopped {
        if !agent.status.success() {
            failed.push(format!("{name}: {}", agent.status));
        }
        if name == "exchanges --json" {
            exchanges_json.clone_from(&agent.stdout);
        }
        if let Some(file) = file {
            outputs.push(Output::new(
                format!("`{name}`: file"),
                std::fs::read(file).unwrap_or_default(),
            ));
            if name == "record" {
                recording = Some(file.clone());
            } else {
                live = Some(Run::read(file));
            }
        }
        outputs.push(Output::new(
            format!("`{name}`: stdout"),
            agent.stdout.clone(),
        ));
        outputs.push(Output::new(
            format!("`{name}`: stderr"),
            agent.stderr.clone(),
        ));
    }
    let replayed = dir.join("replay.jsonl");
    let replay_stderr = replay_to_file(&recording.unwrap(), &replayed);
    outputs.push(Output::new(
        "`run --replay` of the recording: file",
        std::fs::read(&replayed).unwrap_or_default(),
    ));
    outputs.push(Output::new(
        "`run --replay` of the recording: stderr",
        replay_stderr,
    ));
    let kept = dir.join("outputs");
    std::fs::create_dir_all(&kept).unwrap();
    for output in &outputs {
        let name: String = output
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        std::fs::write(kept.join(name), &output.bytes).unwrap();
    }
    Collected {
        outputs,
        exchanges_json,
        live: live.unwrap(),
        replay: Run::read(&replayed),
        failed,
    }
}

/// Each leg with a server: its server exchanges, live server spans and replayed server spans
/// (`h1py 2/2/2`), and the legs with fewer than `REQUESTS` of any, described.
fn seen(legs: &[Leg], c: &Collected) -> (Vec<String>, Vec<String>) {
    let (mut counts, mut unseen) = (Vec::new(), Vec::new());
    for leg in legs.iter().filter(|l| !l.port.is_empty()) {
        let n = [
            server_exchanges(&c.exchanges_json, &leg.port),
            server_spans(&c.live, &leg.port),
            server_spans(&c.replay, &leg.port),
        ];
        counts.push(format!("{} {}/{}/{}", leg.name, n[0], n[1], n[2]));
        if n.iter().any(|n| *n < REQUESTS) {
            unseen.push(format!(
                "{}: {} server exchanges, {} live server spans, {} replayed (want {REQUESTS} each)",
                leg.name, n[0], n[1], n[2]
            ));
        }
    }
    (counts, unseen)
}

/// Where each leg's probe shows (`record`: `h1py plain, ...`), and the (output, leg) pairs
/// where it does not, described: the recording and `events --json` must show every one.
fn probes(legs: &[Leg], outputs: &[Output]) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut missing) = (Vec::new(), Vec::new());
    for name in ["`record`: file", "`events --json`: stdout"] {
        let output = outputs.iter().find(|o| o.name == name).unwrap();
        let mut shown = Vec::new();
        for leg in legs.iter().filter(|l| !l.port.is_empty()) {
            match leg.probe.shown_in(output) {
                Some(how) => shown.push(format!("{} {how}", leg.name)),
                None => missing.push(format!("{name} / {}", leg.name)),
            }
        }
        lines.push(format!("{name}: {}", shown.join(", ")));
    }
    (lines, missing)
}

/// Search every output for every marker: a line per output for the figures (each leg and
/// what of it showed), and each (output, leg) pair that showed a marker, described.
fn search(legs: &[Leg], outputs: &[Output]) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut leaks) = (Vec::new(), Vec::new());
    for output in outputs {
        let mut line = format!("{}:", output.name);
        for leg in legs {
            let found = shown(leg, output);
            if !found.is_empty() {
                leaks.push(format!(
                    "{} / {}: {}",
                    output.name,
                    leg.name,
                    describe(&found)
                ));
            }
            let _ = write!(line, " {} {};", leg.name, describe(&found));
        }
        lines.push(line.trim_end_matches(';').to_owned());
    }
    (lines, leaks)
}

/// What was done and sent, for the figures.
fn describe_case(figures: &mut Figures, legs: &[Leg]) {
    figures.done = format!(
        "a marker secret of its own per leg and credential ({}) through {} legs; every output \
         of 6 agents watching at once (record, events, events --json, exchanges, exchanges \
         --json, run --exporter file: files, stdout, stderr) and of the recording's replay \
         searched for every marker, as sent and HPACK Huffman-coded",
        FIELDS
            .iter()
            .map(|(_, w)| *w)
            .collect::<Vec<_>>()
            .join(", "),
        legs.len()
    );
    figures.load = format!(
        "{REQUESTS} requests per leg on one connection: {}",
        legs.iter()
            .map(|l| format!("{} ({}; {} markers)", l.name, l.what, l.markers.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn faults_secrets_no_marker_secret_shows_in_any_output_of_any_protocol() {
    if !require_privileges() {
        return;
    }
    let certs = match certs() {
        Ok(c) => c,
        Err(e) => return cannot_run(&e),
    };
    let dir = scratch();
    let servers = match Servers::start(&dir, certs) {
        Ok(s) => s,
        Err(why) => return cannot_run(&why),
    };
    let mut figures = Figures::new("secrets", 70);
    let started = Instant::now();
    let watchers = Watchers::start(&dir, &servers.ports());
    let ready = started.elapsed();
    let clients = servers.traffic(&dir, certs);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    let stopped = watchers.stop(&mut figures);
    let stop = stopping.elapsed();
    let collected = collect(&stopped, &dir);
    let (counts, unseen) = seen(&servers.legs, &collected);
    let (probe_lines, missing) = probes(&servers.legs, &collected.outputs);
    let (lines, leaks) = search(&servers.legs, &collected.outputs);

    let pairs = collected.outputs.len() * servers.legs.len();
    describe_case(&mut figures, &servers.legs);
    figures.lost = format!(
        "markers found in {} of {pairs} (output, leg) pairs ({} outputs × {} legs)",
        leaks.len(),
        collected.outputs.len(),
        servers.legs.len()
    );
    figures.counted = format!(
        "per leg, server exchanges / live server spans / replayed server spans: {}; the probe \
         header (no credential) shows in {}",
        counts.join(", "),
        probe_lines.join("; ")
    );
    for (leg, ok, printed) in &clients {
        let outcome = if *ok {
            "every answer right".to_owned()
        } else {
            format!("failed: {printed}")
        };
        figures.program(format!("client of {leg}"), outcome);
    }
    figures.note(format!(
        "6 agents ready in {:.1} s, stopped in {:.1} s",
        ready.as_secs_f64(),
        stop.as_secs_f64()
    ));
    for line in lines {
        figures.note(line);
    }
    let clients_failed: Vec<_> = clients.iter().filter(|(_, ok, _)| !ok).collect();
    let passed = leaks.is_empty()
        && unseen.is_empty()
        && missing.is_empty()
        && collected.failed.is_empty()
        && clients_failed.is_empty();
    figures.write(passed);

    assert!(
        clients_failed.is_empty(),
        "clients failed: {clients_failed:?}"
    );
    assert!(
        collected.failed.is_empty(),
        "agents failed: {:?}",
        collected.failed
    );
    assert!(
        unseen.is_empty(),
        "traffic not seen:\n{}",
        unseen.join("\n")
    );
    assert!(
        missing.is_empty(),
        "probe headers not shown (their header blocks are missing, or the search fails): {missing:?}"
    );
    assert!(
        leaks.is_empty(),
        "marker secrets found in outputs (kept in {}):\n{}",
        dir.join("outputs").display(),
        leaks.join("\n")
    );
}

/// The search itself (no privileges): a marker is found Huffman-coded at any bit offset, in
/// raw bytes, in an `escape_ascii` preview and in lossy JSON text.
#[test]
fn faults_secrets_markers_are_found_huffman_coded_anywhere() {
    let marker = Marker::new("h2c", "auth");
    // Prefixes whose codes end 0, 5, 1, 3, 4, 6, 7 and 2 bits into a byte.
    for prefix in ["", "a", "aaaaa", "ab", "aaaa", "b", "x", "session-"] {
        let coded = huffman_code(&format!("{prefix}{}", marker.text));
        let raw = [b"\x00\x01".as_slice(), &coded, b"\xff"].concat();
        let found = |bytes: Vec<u8>| marker.shown_in(&Output::new("t", bytes));
        assert_eq!(found(raw.clone()), Some(Shown::Huffman), "{prefix:?}");
        let preview = format!("\"{}\"", raw.escape_ascii());
        assert_eq!(
            found(preview.into_bytes()),
            Some(Shown::Huffman),
            "{prefix:?}"
        );
        let json = serde_json::json!({ "payload": String::from_utf8_lossy(&raw) }).to_string();
        assert!(found(json.into_bytes()).is_some(), "{prefix:?}");
    }
    let other = Marker::new("h2c", "cookie");
    assert_eq!(other.shown_in(&Output::new("t", marker.text.clone())), None);
    assert_eq!(
        marker.shown_in(&Output::new("t", marker.text.clone())),
        Some(Shown::Plain)
    );
}
