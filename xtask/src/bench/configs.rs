//! Starting and stopping a configuration: wirespan (exporting over OTLP/gRPC to the bench's
//! discarding receiver, as users run it), the floors (`wirespan-floor`), go-auto.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Config, Env, Proc, Target, floor};

/// What a configuration started: the processes that hold its BPF programs, and wirespan's
/// OTLP receiver.
pub struct Started {
    pub agents: Vec<Agent>,
    pub sink: Option<Sink>,
}

impl Env {
    /// Start the configuration's agents and wait until they are attached.
    pub(super) fn start_config(
        &self,
        config: Config,
        target: Target,
        pids: &[u32],
    ) -> anyhow::Result<Started> {
        let mut sink = None;
        let agents = match config {
            Config::NoAgent => Vec::new(),
            Config::FloorA | Config::FloorB => {
                let mut cmd = Command::new(&self.floor);
                if config == Config::FloorB {
                    for point in floor::uprobe_args(&self.bin, target)? {
                        cmd.args(["--uprobe", &point]);
                    }
                }
                vec![Agent::start(cmd, "wirespan-floor: attached", None)?]
            }
            Config::Wirespan => {
                let started = Sink::start(&self.sink, &self.dir)?;
                let mut cmd = Command::new(&self.agent);
                cmd.args(["run", "--exporter", "otlp", "--otlp-protocol", "grpc"])
                    .args(["--otlp-endpoint", &format!("http://{}", started.addr)])
                    // Steady state sooner than the default 5 s: a program that has served
                    // this long without calling out loses its per-request probes (the warm-up
                    // outlasts it).
                    .args([
                        "--serving-probes-quiet-secs",
                        &SERVING_QUIET_SECS.to_string(),
                    ]);
                for pid in pids {
                    cmd.args(["--pid", &pid.to_string()]);
                }
                sink = Some(started);
                vec![Agent::start(cmd, "wirespan: ready", None)?]
            }
            Config::GoAuto => {
                let binary = self.go_auto.as_ref().context("go-auto was not built")?;
                // One instrumentation process per traced process (the CLI's model).
                let mut agents = Vec::new();
                for pid in pids {
                    let mut cmd = Command::new(binary);
                    cmd.args(["-target-pid", &pid.to_string()])
                        .env("OTEL_TRACES_EXPORTER", "console")
                        .env("OTEL_SERVICE_NAME", "bench");
                    let log = self.dir.join(format!("go-auto-{pid}.out"));
                    agents.push(Agent::start(
                        cmd,
                        "instrumentation loaded successfully",
                        Some(&log),
                    )?);
                }
                agents
            }
        };
        Ok(Started { agents, sink })
    }
}

/// The agent's `--serving-probes-quiet-secs` in the bench; the warm-up is longer.
pub const SERVING_QUIET_SECS: u64 = 1;

/// The bench's OTLP/gRPC receiver (xtask/otlp-sink): it discards spans, keeping per span what
/// the checks read in `records`.
pub struct Sink {
    proc: Proc,
    addr: String,
    pub records: PathBuf,
    stderr: PathBuf,
}

impl Sink {
    fn start(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        let records = dir.join("spans.tsv");
        let stderr = dir.join("otlp-sink.err");
        let mut child = Command::new(binary)
            .arg("--records")
            .arg(&records)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr)?))
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut addr = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut addr)?;
        let addr = addr.trim().to_owned();
        if addr.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "otlp-sink did not start: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default().trim()
            );
        }
        Ok(Self {
            proc: Proc { child },
            addr,
            records,
            stderr,
        })
    }

    /// Stop it (after the agent, which flushes its spans at exit); the spans it received.
    pub fn stop(&mut self) -> Option<u64> {
        self.proc.terminate(Duration::from_secs(30));
        super::measure::sink_spans(&std::fs::read_to_string(&self.stderr).unwrap_or_default())
    }
}

/// An agent process and what it printed on stderr.
pub struct Agent {
    proc: Proc,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Agent {
    /// Start `cmd`; wait (60 s) for a stderr line containing `ready`. Stdout goes to `stdout`
    /// (or nowhere).
    fn start(mut cmd: Command, ready: &str, stdout: Option<&Path>) -> anyhow::Result<Self> {
        let out = match stdout {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start the agent")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let err = BufReader::new(child.stderr.take().context("no stderr")?);
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut printed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                bail!("it did not become ready: {}", last_error(&printed));
            };
            let done = line.contains(ready);
            printed.push(line);
            if done {
                break;
            }
        }
        Ok(Self {
            proc: Proc { child },
            stderr: rx,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stop it (SIGTERM; detaching takes a while) and return what it printed since it was
    /// ready (the agent's exit summary).
    pub fn stop(&mut self) -> String {
        self.proc.terminate(Duration::from_secs(120));
        // The reader thread ends when the agent's stderr closes.
        let mut rest = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            rest.push(line);
        }
        rest.join("\n")
    }
}

/// The error that stopped an agent: the `msg` and `error` of its last JSON log line at level
/// ERROR (go-auto logs so; earlier ERROR lines may be ones it survived), else its last line.
fn last_error(printed: &[String]) -> String {
    printed
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "ERROR")
        .map(|v| {
            format!(
                "{}: {}",
                v["msg"].as_str().unwrap_or_default(),
                v["error"].as_str().unwrap_or_default()
            )
        })
        .or_else(|| printed.last().cloned())
        .unwrap_or_else(|| "it printed nothing".to_owned())
}
