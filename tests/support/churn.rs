//! The churn case's parts (tests/faults_churn.rs): short and idle client connections spread
//! over loopback source addresses, the agent's RSS sampled over time, and the entries of the
//! agent's per-connection kernel maps counted with `bpftool`.

use super::keep_alive::keep_alive_get;
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::fd::{FromRawFd as _, OwnedFd},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Source addresses for the client ends, 127.0.0.2 onwards (see `connect_from`).
pub const SOURCES: u8 = 16;

/// The kernel maps that hold an entry per connection (names as the kernel keeps them: 15
/// characters at most).
pub const PER_CONNECTION_MAPS: [&str; 4] =
    ["CONNS", "PENDING_CONNECT", "FRAME_CHAINS", "TLS_POSITIONS"];

/// The sizes of one run.
pub struct Scale {
    pub short: usize,
    pub seconds: u64,
    pub idle: usize,
    pub threads: usize,
}

/// Raise the soft open-files limit to the hard one (the idle connections need a descriptor
/// each, here and in the server, which inherits the limit). The new soft limit.
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the one struct passed, which lives here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit);
        }
    }
    limit.rlim_cur
}

pub fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A connection to `server` from `source`.
///
/// Loopback has one source address by default and about 28k ephemeral ports, and a closed
/// connection's port stays in TIME_WAIT for 60 s at the end that closed first: 200k
/// connections in a minute would run out. Two things keep them apart: the server closes first
/// (`Connection: close`), so TIME_WAIT lands on its end and the client's port is free at once,
/// and the clients spread over 127.0.0.2..=127.0.0.17 (all of 127/8 is local), each bound
/// with IP_BIND_ADDRESS_NO_PORT so the port is chosen at connect for the whole four-tuple.
pub fn connect_from(source: Ipv4Addr, server: SocketAddrV4) -> std::io::Result<TcpStream> {
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket(2) takes plain integers.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns; OwnedFd closes it on every path.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let local = sockaddr(SocketAddrV4::new(source, 0));
    let remote = sockaddr(server);
    // SAFETY: each call gets our socket and a pointer to a live local of the size passed.
    let failed = unsafe {
        libc::setsockopt(
            raw,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
            || libc::bind(raw, (&raw const local).cast(), len) != 0
            || libc::connect(raw, (&raw const remote).cast(), len) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

pub fn source_for(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(SOURCES)) as u8)
}

/// One short connection: connect, one GET, read to the server's close, check the answer.
pub fn short_exchange(server: SocketAddrV4, i: usize) -> Result<(), String> {
    let source = source_for(i);
    let mut stream =
        connect_from(source, server).map_err(|e| format!("connect #{i} from {source}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request =
        format!("GET /hello?name=c{i} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_end(&mut response))
        .map_err(|e| format!("request #{i}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let body = format!("hello c{i}\n");
    if text.starts_with("HTTP/1.1 200 ") && text.ends_with(&body) {
        Ok(())
    } else {
        Err(format!("request #{i}: wrong answer {text:?}"))
    }
}

/// Open `n` keep-alive connections, each with one request answered, spread over 4 threads.
pub fn open_idle(server: SocketAddrV4, n: usize) -> (Vec<TcpStream>, Vec<String>) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut open = Vec::new();
                let mut failures = Vec::new();
                for j in (t..n).step_by(4) {
                    let opened = connect_from(source_for(j), server)
                        .map_err(|e| format!("idle connect #{j}: {e}"))
                        .and_then(|mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            keep_alive_get(
                                &mut s,
                                &format!("/items/idle{j}"),
                                None,
                                &format!("item idle{j}\n"),
                            )
                            .map(|()| s)
                        });
                    match opened {
                        Ok(s) => open.push((j, s)),
                        Err(e) => failures.push(e),
                    }
                }
                (open, failures)
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut failures = Vec::new();
    for t in threads {
        let (o, f) = t.join().unwrap();
        open.extend(o);
        failures.extend(f);
    }
    open.sort_by_key(|(j, _)| *j);
    (open.into_iter().map(|(_, s)| s).collect(), failures)
}

/// What the churn did.
pub struct Churn {
    pub done: usize,
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

/// `scale.short` short connections, paced evenly over `scale.seconds` (connection `i` starts
/// no earlier than `i / rate` seconds in) by `scale.threads` threads. While it runs, `during`
/// is called on this thread about every 3 s (it dumps maps: not too often, on two CPUs).
pub fn churn(server: SocketAddrV4, scale: &Scale, mut during: impl FnMut()) -> Churn {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let total = scale.short;
    let gap = Duration::from_secs(scale.seconds) / u32::try_from(total).unwrap();
    let threads: Vec<_> = (0..scale.threads)
        .map(|_| {
            let next = Arc::clone(&next);
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = start + gap * u32::try_from(i).unwrap();
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if let Err(e) = short_exchange(server, i) {
                        failures.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    let mut last = Instant::now();
    while !threads.iter().all(std::thread::JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(3) {
            during();
            last = Instant::now();
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    Churn {
        done: total,
        failures,
        elapsed: start.elapsed(),
    }
}

/// The agent's RSS, sampled every second on a thread of its own: (seconds since start, KiB).
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, u64)>>,
    started: Instant,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                if let Some(kib) = super::faults::rss_kib(pid) {
                    samples.push((started.elapsed().as_secs_f64(), kib));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        });
        Self {
            stop,
            thread,
            started,
        }
    }

    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The largest sample in `[from, to)` seconds, KiB.
pub fn peak(samples: &[(f64, u64)], from: f64, to: f64) -> u64 {
    samples
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0)
}

/// The agent's BPF maps (name → id), from the map descriptors it holds.
pub fn agent_maps(pid: u32) -> BTreeMap<String, u64> {
    let mut maps = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return maps;
    };
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let show = bpftool(&["map", "show", "id", &id.to_string()]);
        if let Some(name) = show["name"].as_str() {
            maps.insert(name.to_owned(), id);
        }
    }
    maps
}

pub fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("--json")
        .args(args)
        .output()
        .expect("bpftool runs (cargo xtask setup installs it)");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Entries in each per-connection map of the agent.
pub fn map_entries(maps: &BTreeMap<String, u64>) -> BTreeMap<&'static str, usize> {
    PER_CONNECTION_MAPS
        .iter()
        .filter_map(|name| {
            let id = maps.get(*name)?;
            let dump = bpftool(&["map", "dump", "id", &id.to_string()]);
            Some((*name, dump.as_array().map_or(0, Vec::len)))
        })
        .collect()
}

/// Owners of the entries left in the agent's `CONNS` map: pid → entries. A `ConnInfo` value
/// starts with the connection id (u64), then the owner's pid (u32, little-endian).
pub fn conns_owners(maps: &BTreeMap<String, u64>) -> BTreeMap<u32, usize> {
    let mut owners = BTreeMap::new();
    let Some(id) = maps.get("CONNS") else {
        return owners;
    };
    let dump = bpftool(&["map", "dump", "id", &id.to_string()]);
    for entry in dump.as_array().into_iter().flatten() {
        let bytes: Vec<u8> = entry["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
            .collect();
        if let Some(pid) = bytes.get(8..12) {
            let pid = u32::from_le_bytes(pid.try_into().unwrap());
            *owners.entry(pid).or_insert(0) += 1;
        }
    }
    owners
}

/// Runs of the agent's programs that the kernel skipped because another BPF program was
/// running on the same CPU (`recursion_misses` in each program descriptor's fdinfo), by
/// program name (programs with none left out). A classic tracepoint's program is skipped
/// whenever it fires inside any other tracing program, e.g. a socket state change in a softirq
/// that interrupted a syscall probe: its event is lost without a trace in the ring buffer.
pub fn recursion_misses(pid: u32) -> BTreeMap<String, u64> {
    let mut misses = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return misses;
    };
    let mut seen = std::collections::BTreeSet::new();
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(n)) = (field("prog_id:"), field("recursion_misses:")) else {
            continue;
        };
        if n == 0 || !seen.insert(id) {
            continue;
        }
        let show = bpftool(&["prog", "show", "id", &id.to_string()]);
        let name = show["name"].as_str().unwrap_or("?").to_owned();
        *misses.entry(name).or_insert(0) += n;
    }
    misses
}
