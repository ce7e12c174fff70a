//! Fault suite, hostile binaries (needs root, a kernel and Go): programs whose files lie to the
//! agent's Go discovery, and a storm of programs that exec and exit at once.
//!
//! From one build of examples/http-hello the test makes: a copy cut to half its size (an ELF
//! whose segments run past the end of the file), a copy whose `.gopclntab` is garbage (the Go
//! runtime itself dies on it), a stripped copy whose function-name table is garbage but whose
//! runtime still runs, and a copy whose DWARF (`.debug_info`) is garbage. Each is started once
//! before the agent (found by its /proc scan) and once, as a copy of its own, while the agent
//! runs (found by its exec event). Meanwhile a Go binary that exits at once is exec'd about
//! 1,000 times a second.
//!
//! What it proves: every bad binary is skipped in at most one report line, or attached
//! correctly; the storm costs at most one report line, not one per exec; the agent never
//! panics, keeps its memory, exits cleanly and leaves no BPF program or link in the kernel; and
//! while all that happens a normal Go server started meanwhile is attached and its requests
//! become spans named by the routes its uprobes read.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use object::{Object as _, ObjectSection as _};
use support::{
    Listening,
    faults::{Figures, KernelObjects, pick},
    http_get, require_privileges,
    span_run::{Run, agent_to_file, attr},
};
use wirespan::testing::cannot_run;

/// The corrupted variants, by name.
const VARIANTS: [&str; 4] = [
    "truncated",
    "gopclntab-garbage",
    "funcnames-garbage",
    "dwarf-garbage",
];

/// Garbage that is not all one byte (a constant fill could pass for padding).
fn garbage(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// The file range of section `name` in the ELF `bytes`.
fn section_range(bytes: &[u8], name: &str) -> Option<(usize, usize)> {
    let file = object::File::parse(bytes).ok()?;
    let (offset, size) = file.section_by_name(name)?.file_range()?;
    Some((usize::try_from(offset).ok()?, usize::try_from(size).ok()?))
}

/// Overwrite `bytes[start..start + len]` with garbage.
fn scribble(bytes: &mut [u8], start: usize, len: usize, seed: u32) {
    bytes[start..start + len].copy_from_slice(&garbage(len, seed));
}

/// The bytes of variant `name`, made from the plain build `plain` and the stripped `stripped`.
fn corrupt(name: &str, plain: &[u8], stripped: &[u8]) -> Vec<u8> {
    match name {
        "truncated" => plain[..plain.len() / 2].to_vec(),
        "gopclntab-garbage" => {
            let mut out = plain.to_vec();
            let (start, len) = section_range(plain, ".gopclntab").expect("a .gopclntab section");
            scribble(&mut out, start, len, 7);
            out
        }
        "funcnames-garbage" => {
            // The pclntab header (Go 1.18+): magic, pad, sizes, then 8-byte words nfunc,
            // nfiles, textStart, funcnameOffset, cuOffset, ... The runtime reads function
            // names only for tracebacks, so garbage names leave the program running while
            // every symbol lookup by name through the table fails or finds nonsense.
            let mut out = stripped.to_vec();
            let (start, _) = section_range(stripped, ".gopclntab").expect("a .gopclntab section");
            let word = |i: usize| {
                let at = start + 8 + 8 * i;
                usize::try_from(u64::from_le_bytes(out[at..at + 8].try_into().unwrap())).unwrap()
            };
            let (names, cu) = (word(3), word(4));
            scribble(&mut out, start + names, cu - names, 11);
            out
        }
        "dwarf-garbage" => {
            let mut out = plain.to_vec();
            let (start, len) = section_range(plain, ".debug_info")
                .or_else(|| section_range(plain, ".zdebug_info"))
                .expect("DWARF in the plain build");
            // Keep the compression header (ELF Chdr, 24 bytes) so that the section still
            // claims to be compressed: the garbage is then what the inflater meets.
            scribble(&mut out, start + 24, len - 24, 13);
            out
        }
        other => panic!("no variant {other}"),
    }
}

/// Write `bytes` as an executable file `dir/name`.
fn write_exe(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A bad binary started for the case, and what became of it.
struct Started {
    name: String,
    child: Option<Child>,
    /// Why it did not start, or how it ended by itself.
    outcome: String,
}

impl Started {
    /// Start `path` serving on a loopback port; wait a moment to see whether it dies at once.
    fn run(path: &Path) -> Self {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let spawned = Command::new(path)
            .args(["-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Self {
                    name,
                    child: None,
                    outcome: format!("exec failed: {e}"),
                };
            }
        };
        // A running one prints its address; a dying one closes its output.
        let mut first = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut first);
        std::thread::sleep(Duration::from_millis(200));
        let outcome = match child.try_wait().unwrap() {
            Some(status) => format!("died by itself at start: {status}"),
            None => format!("running, serving on {}", first.trim()),
        };
        Self {
            name,
            child: Some(child),
            outcome,
        }
    }

    /// How it is now (still running, or how it ended), and stop it.
    fn finish(mut self) -> (String, String) {
        let now = match self.child.as_mut().map(|c| c.try_wait().unwrap()) {
            None => self.outcome.clone(),
            Some(Some(status)) => format!("{}; ended: {status}", self.outcome),
            Some(None) => format!("{}; still running at the end", self.outcome),
        };
        if let Some(mut child) = self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        (self.name, now)
    }
}

/// Exec `binary` (which exits at once) at about `rate` per second for `duration` from four
/// threads; how many execs were made.
fn exec_storm(binary: &Path, rate: u32, duration: Duration, stop: &AtomicBool) -> u64 {
    let made = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
                    // Keep to the schedule: at most `rate` per second since the start.
                    let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                    if made.load(Ordering::Relaxed) >= due {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    made.fetch_add(1, Ordering::Relaxed);
                    let _ = Command::new(binary)
                        .arg("-exit-at-once")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            });
        }
    });
    made.into_inner()
}

/// A free loopback port (bound and released: the control server takes it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The files of one run: the bad variants (an early and a late copy of each), the storm binary
/// and the control server, in a scratch directory removed at the end.
struct Files {
    dir: PathBuf,
    storm: PathBuf,
    control: PathBuf,
}

impl Files {
    fn make() -> Option<Self> {
        let plain = support::go_build("examples/http-hello", "faults-binaries-hello")?;
        let stripped = support::go_build_with(
            "examples/http-hello",
            "faults-binaries-hello-stripped",
            &["-ldflags=-s -w"],
        )?;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("faults-hostile-binaries-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (plain, stripped) = (
            std::fs::read(plain).unwrap(),
            std::fs::read(stripped).unwrap(),
        );
        for name in VARIANTS {
            let bytes = corrupt(name, &plain, &stripped);
            // Two files, two inodes: the agent decides once per binary, and each copy must be
            // decided by a different path (the /proc scan, an exec event).
            write_exe(&dir, &format!("{name}-early"), &bytes);
            write_exe(&dir, &format!("{name}-late"), &bytes);
        }
        Some(Self {
            storm: write_exe(&dir, "exec-storm", &plain),
            control: write_exe(&dir, "control-hello", &plain),
            dir,
        })
    }

    fn start(&self, when: &str) -> Vec<Started> {
        VARIANTS
            .iter()
            .map(|name| Started::run(&self.dir.join(format!("{name}-{when}"))))
            .collect()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The control server's requests during the storm: (trace id, path, route) of each.
fn control_traffic(addr: &str, count: usize) -> Vec<(String, &'static str, &'static str, u16)> {
    (0..count)
        .map(|i| {
            let (path, route) = if i % 2 == 0 {
                ("/items/17", "/items/{id}")
            } else {
                ("/hello", "/hello")
            };
            let trace = format!("{:08x}5b1a5b1a{i:016x}", std::process::id());
            let header = format!("traceparent: 00-{trace}-{:016x}-01\r\n", i + 1);
            let (status, _) = http_get(addr, path, &header);
            (trace, path, route, status)
        })
        .collect()
}

/// Control requests without exactly one server span of the right method, path, status and
/// route read from the program, described.
fn check_control(run: &Run, sent: &[(String, &str, &str, u16)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (trace, path, route, status) in sent {
        let spans: Vec<_> = run
            .spans
            .iter()
            .filter(|(_, s)| s["kind"] == 2 && s["traceId"] == trace.as_str())
            .map(|(_, s)| s)
            .collect();
        let [span] = spans.as_slice() else {
            wrong.push(format!("{trace} {path}: {} server spans", spans.len()));
            continue;
        };
        let got = (
            attr(span, "http.request.method"),
            attr(span, "url.path"),
            attr(span, "http.response.status_code"),
            attr(span, "http.route"),
            attr(span, "wirespan.route.source"),
        );
        let want = (
            Some("GET".to_owned()),
            Some((*path).to_owned()),
            Some(status.to_string()),
            Some((*route).to_owned()),
            Some("program".to_owned()),
        );
        if got != want || *status != 200 {
            wrong.push(format!("{trace} {path}: got {got:?}"));
        }
    }
    wrong
}

/// The agent's report lines about the binary `file`: what it attached, or why it skipped it.
/// (A later line saying an idle server's serving probes came off, after the quiet period, is
/// not a report of the binary.)
fn lines_naming<'a>(stderr: &'a str, file: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains(&format!("/{file}")))
        .filter(|l| l.contains("): attached ") || l.contains("): skipped"))
        .collect()
}

#[test]
fn faults_hostile_binaries_are_skipped_in_one_line_and_the_agent_stays_healthy() {
    if !require_privileges() {
        return;
    }
    let Some(files) = Files::make() else {
        return cannot_run("go cannot build examples/http-hello");
    };
    let mut figures = Figures::new("hostile-binaries", 50);
    let kernel_before = KernelObjects::now();
    let early = files.start("early");
    let control_port = free_port();
    let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-hostile-binaries.jsonl");
    let mut agent = agent_to_file(&output, &[&control_port.to_string()]);
    let agent_pid = agent.pid();
    let rss_before = support::faults::rss_kib(agent_pid);
    let late = files.start("late");

    let (rate, seconds) = (1000, pick(3, 10));
    let stop = AtomicBool::new(false);
    let (execs, storm_secs, control, sent) = std::thread::scope(|scope| {
        let storm = scope.spawn(|| {
            let start = Instant::now();
            let execs = exec_storm(&files.storm, rate, Duration::from_secs(seconds), &stop);
            (execs, start.elapsed().as_secs_f64())
        });
        // The control server starts in the middle of the storm: found by its exec event.
        std::thread::sleep(Duration::from_millis(500));
        let mut control = Listening::start(
            Command::new(&files.control)
                .args(["-listen", &format!("127.0.0.1:{control_port}")])
                .env("OTEL_SERVICE_NAME", "control-hello"),
        );
        agent.wait_for_line(&format!("pids {}): attached", control.pid()));
        let sent = control_traffic(&control.addr, pick(20, 200));
        figures.agent_rss(agent_pid);
        let (execs, secs) = storm.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        // Still answering after the storm.
        let after = http_get(&control.addr, "/hello?name=after", "");
        let state = format!(
            "alive={}, GET /hello after the storm: {}",
            control.alive(),
            after.0
        );
        (
            execs,
            secs,
            (state, after.0 == 200 && control.alive()),
            sent,
        )
    });
    figures.agent_rss(agent_pid);
    let rss_after = support::faults::rss_kib(agent_pid);
    let stopped = agent.stop();
    let left = KernelObjects::left_after(&kernel_before, Duration::from_secs(20));
    let run = Run::read(&output);
    let outcome = Outcome {
        early,
        late,
        execs,
        storm_secs,
        control,
        wrong_control: check_control(&run, &sent),
        sent: sent.len(),
        rss: (rss_before, rss_after),
        left,
        stopped,
    };
    finish(&mut figures, outcome);
}

/// What one run produced, for the figures and the checks.
struct Outcome {
    early: Vec<Started>,
    late: Vec<Started>,
    execs: u64,
    storm_secs: f64,
    control: (String, bool),
    wrong_control: Vec<String>,
    sent: usize,
    rss: (Option<u64>, Option<u64>),
    left: Vec<String>,
    stopped: support::Stopped,
}

/// Record the figures, then assert.
fn finish(figures: &mut Figures, o: Outcome) {
    let stderr = &o.stopped.stderr;
    let mut too_many = Vec::new();
    let mut counted = Vec::new();
    for started in o.early.into_iter().chain(o.late) {
        let (name, state) = started.finish();
        let lines = lines_naming(stderr, &name);
        counted.push(format!("{name}: {} report lines", lines.len()));
        if let Some(line) = lines.first() {
            figures.note(format!(
                "{name}: {}",
                line.chars().take(200).collect::<String>()
            ));
        }
        if lines.len() > 1 {
            too_many.push(format!(
                "{name}: {} lines, e.g. {:?}",
                lines.len(),
                lines[0]
            ));
        }
        figures.program(name, state);
    }
    let storm_lines = lines_naming(stderr, "exec-storm");
    counted.push(format!("exec-storm: {} report lines", storm_lines.len()));
    if storm_lines.len() > 1 {
        too_many.push(format!(
            "exec-storm: {} lines for {} execs, e.g. {:?}",
            storm_lines.len(),
            o.execs,
            storm_lines[0]
        ));
    }
    let rate = f64::from(u32::try_from(o.execs).unwrap_or(u32::MAX)) / o.storm_secs;
    figures.done = format!(
        "bad binaries (a truncated ELF, .gopclntab garbage, function names garbage in a stripped build, .debug_info garbage), each started before the agent and while it ran; an exec storm of a Go binary that exits at once: {} execs in {:.1} s ({rate:.0}/s)",
        o.execs, o.storm_secs
    );
    figures.load = format!(
        "{} requests to a control Go server started during the storm",
        o.sent
    );
    figures.lost = format!(
        "{} control requests without their span",
        o.wrong_control.len()
    );
    figures.counted = counted.join("; ");
    figures.program("control-hello", o.control.0.clone());
    figures.program(
        "exec-storm",
        format!("{} execs, each exiting at once (bad flag)", o.execs),
    );
    figures.note(format!("agent exit: {}", o.stopped.status));
    figures.note(format!(
        "agent RSS before the storm {:?} KiB, after {:?} KiB",
        o.rss.0, o.rss.1
    ));
    figures.note(format!("kernel objects left: {:?}", o.left));
    for off in too_many.iter().chain(&o.wrong_control).take(4) {
        figures.note(format!(
            "off: {}",
            off.chars().take(240).collect::<String>()
        ));
    }
    let panicked = stderr.contains("panicked");
    let passed = too_many.is_empty()
        && o.wrong_control.is_empty()
        && o.control.1
        && o.left.is_empty()
        && o.stopped.status.success()
        && !panicked;
    figures.write(passed);

    assert!(o.stopped.status.success() && !panicked, "agent: {stderr}");
    assert!(o.control.1, "control server: {}", o.control.0);
    assert!(o.left.is_empty(), "left in the kernel: {:?}", o.left);
    assert!(
        o.wrong_control.is_empty(),
        "control requests:\n{}",
        o.wrong_control.join("\n")
    );
    assert!(
        too_many.is_empty(),
        "report lines:\n{}",
        too_many.join("\n")
    );
}
