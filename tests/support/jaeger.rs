//! Real backends for the privileged tests: the Jaeger v2 binary (`cargo xtask test` builds it
//! once from its Go module and passes it in `WIRESPAN_JAEGER`), run with a configuration from
//! `otel-config/` on free loopback ports, stopped with SIGTERM when dropped.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::http_get as get;

pub const JAEGER_VERSION: &str = "v1.76.0";

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `WIRESPAN_JAEGER`, else the binary `cargo xtask demo` or `test` cached.
pub fn jaeger_binary() -> Option<PathBuf> {
    given_or_cached(
        "WIRESPAN_JAEGER",
        &format!("jaeger-{JAEGER_VERSION}/jaeger"),
    )
}

/// The path in the variable `env`, else `path` in xtask's cache (`WIRESPAN_CACHE`, default
/// `~/.cache/wirespan`) when it is there.
pub fn given_or_cached(env: &str, path: &str) -> Option<PathBuf> {
    if let Some(given) = std::env::var_os(env) {
        return Some(PathBuf::from(given));
    }
    let cache = std::env::var_os("WIRESPAN_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wirespan"),
        PathBuf::from,
    );
    let cached = cache.join(path);
    cached.exists().then_some(cached)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend process (Jaeger, the collector): SIGTERM when dropped, then killed if it lingers.
pub struct Backend {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Backend {
    /// Start the Jaeger binary with `config` and `env`; wait until `port` accepts connections.
    pub fn start(
        name: &'static str,
        binary: &Path,
        config: &Path,
        env: &[(&str, String)],
        port: u16,
    ) -> Self {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let backend = Self { name, child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {port}:\n{}",
                backend.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        backend
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id().cast_signed(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                eprintln!("{} did not stop on SIGTERM; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = get(addr, path, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    // Jaeger answers with chunked encoding: take the JSON object between the chunk sizes.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |i| i + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The ports of a Jaeger all-in-one (`otel-config/jaeger-all-in-one.yaml`), fixed so that a
/// restart comes back on the same ones.
#[derive(Debug, Clone, Copy)]
pub struct AllInOnePorts {
    pub otlp_grpc: u16,
    pub otlp_http: u16,
    pub query_http: u16,
    pub query_grpc: u16,
    pub prometheus: u16,
}

impl AllInOnePorts {
    #[must_use]
    pub fn free() -> Self {
        Self {
            otlp_grpc: free_port(),
            otlp_http: free_port(),
            query_http: free_port(),
            query_grpc: free_port(),
            prometheus: free_port(),
        }
    }

    /// Start Jaeger all-in-one (in memory) on these ports; ready when its query API listens.
    pub fn start(&self, binary: &Path) -> Backend {
        let port = |p: u16| p.to_string();
        let jaeger = Backend::start(
            "jaeger",
            binary,
            &repo("otel-config/jaeger-all-in-one.yaml"),
            &[
                ("JAEGER_OTLP_GRPC_PORT", port(self.otlp_grpc)),
                ("JAEGER_OTLP_HTTP_PORT", port(self.otlp_http)),
                ("JAEGER_QUERY_HTTP_PORT", port(self.query_http)),
                ("JAEGER_QUERY_GRPC_PORT", port(self.query_grpc)),
                ("JAEGER_PROMETHEUS_PORT", port(self.prometheus)),
            ],
            self.query_http,
        );
        // The receivers may come up after the query API.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.otlp_http)).is_err() {
            assert!(
                Instant::now() < deadline,
                "jaeger's OTLP receiver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        jaeger
    }

    /// The query API's address.
    #[must_use]
    pub fn query(&self) -> String {
        format!("127.0.0.1:{}", self.query_http)
    }
}

/// Whether the trace `trace_id` is in Jaeger (its query API at `query`).
#[must_use]
pub fn has_trace(query: &str, trace_id: &str) -> bool {
    get(query, &format!("/api/traces/{trace_id}"), "").0 == 200
}
