//! Zipkin's server for the UI test: the executable jar `cargo xtask test` fetches once from
//! Maven Central and passes in `WIRESPAN_ZIPKIN_JAR`, run on Java with in-memory storage on a
//! free loopback port, killed when dropped; and its query API (`/api/v2`), which tells the test
//! what the UI should show.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    http_get as get,
    jaeger::{free_port, given_or_cached},
};

pub const ZIPKIN_VERSION: &str = "3.5.1";

/// `WIRESPAN_ZIPKIN_JAR`, else the jar `cargo xtask demo` or `test` cached.
pub fn zipkin_jar() -> Option<PathBuf> {
    given_or_cached(
        "WIRESPAN_ZIPKIN_JAR",
        &format!("zipkin-{ZIPKIN_VERSION}/zipkin-server-exec.jar"),
    )
}

/// A running Zipkin server.
pub struct Zipkin {
    child: Child,
    pub addr: String,
    log: PathBuf,
}

impl Zipkin {
    /// Start the jar and wait (up to 90 s: a JVM on a busy 2-core machine) until it is up.
    pub fn start(jar: &Path) -> Self {
        let port = free_port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("zipkin.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("java")
            .args(["-Xms64m", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-jar"])
            .arg(jar)
            .arg("--armeria.ports[0].ip=127.0.0.1")
            .arg(format!("--armeria.ports[0].port={port}"))
            .arg("--armeria.ports[0].protocols[0]=http")
            .env("STORAGE_TYPE", "mem")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("java runs (the machine's OpenJDK)");
        let zipkin = Self {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            // Connect first: `http_get` fails the test on a refused connection.
            if TcpStream::connect(&zipkin.addr).is_ok() {
                let (status, body) = get(&zipkin.addr, "/health", "");
                if status == 200 && body.contains("\"UP\"") {
                    return zipkin;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Zipkin did not come up:\n{}",
                zipkin.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the agent posts spans.
    pub fn spans_url(&self) -> String {
        format!("http://{}/api/v2/spans", self.addr)
    }

    /// The UI's address for `path` (`/`, `/dependency`).
    pub fn ui(&self, path: &str) -> String {
        format!("http://{}/zipkin{path}", self.addr)
    }

    /// `GET /api/v2<path>` as JSON.
    pub fn api(&self, path: &str) -> Value {
        let (status, body) = get(&self.addr, &format!("/api/v2{path}"), "");
        assert_eq!(status, 200, "GET /api/v2{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The traces of the last 15 minutes with a span of `service` named `span_name`.
    pub fn traces(&self, service: &str, span_name: &str) -> Vec<Vec<Value>> {
        let name = span_name.replace(' ', "%20").replace('/', "%2F");
        let traces = self.api(&format!(
            "/traces?serviceName={service}&spanName={name}&lookback=900000&limit=50"
        ));
        traces
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t.as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Zipkin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Zipkin span's service (its local endpoint's).
pub fn service_of(span: &Value) -> &str {
    span["localEndpoint"]["serviceName"].as_str().unwrap_or("")
}
