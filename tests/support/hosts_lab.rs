//! Hosts simulated on this machine for the multi-host test (privileged_hosts): three "hosts" (A,
//! B, C), a Redis host and a gateway host (where an OpenTelemetry Collector and Jaeger run, see
//! hosts_gateway), each a network namespace with its own address, joined by veth pairs to a
//! bridge in a sixth, switch-only namespace, so their traffic never touches this machine's
//! own namespace or addresses. Each host also has a cgroup v2 directory that holds its
//! processes, which its agent selects with `--cgroup`; each agent runs in its host's network
//! namespace (so it reaches Redis the way its host does). A virtual service address in front of
//! host B is a DNAT rule in host A's output path, as kube-proxy rewrites a Service's address on
//! the client's node. Addresses: 10.232.0.0/16 (nat_lab has 10.231.0.0/16), only inside the
//! lab's namespaces. Everything is removed when the lab is dropped, on failure too.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{Agent, Stopped, nat_lab::sh};

pub const HOST_A: &str = "10.232.1.1";
pub const HOST_B: &str = "10.232.1.2";
pub const HOST_C: &str = "10.232.1.3";
pub const REDIS_ADDR: &str = "10.232.1.9";
/// The gateway host, where the agents may send OTLP.
pub const GATEWAY_ADDR: &str = "10.232.1.8";
/// Virtual service addresses (port 80), rewritten in host A to services on host B.
pub const RELAY_VIP: &str = "10.232.9.1";
pub const PYTHON_VIP: &str = "10.232.9.2";

/// One simulated host: its `host.name`, network namespace, address and cgroup.
#[derive(Debug, Clone)]
pub struct Host {
    /// `host-a`, `host-b`, `host-c`: what its agent puts in `host.name`.
    pub name: &'static str,
    pub ns: String,
    pub addr: &'static str,
    /// Its cgroup v2 directory (absolute): what its agent's `--cgroup` names.
    pub cgroup: PathBuf,
}

impl Host {
    /// `command` run on this host: in its cgroup (entered before the program starts, so the
    /// agent's kernel filter sees its exec) and its network namespace. Program, arguments,
    /// environment and working directory are copied; set standard streams on the result.
    pub fn command(&self, command: &Command) -> Command {
        // The shell puts itself in the cgroup, then becomes nsenter, which becomes the program:
        // the child's pid is the program's.
        let mut wrapped = shell(
            "cg=$0; ns=$1; shift; echo $$ > \"$cg/cgroup.procs\" && exec nsenter --net=\"$ns\" -- \"$@\"",
        );
        wrapped
            .arg(&self.cgroup)
            .arg(netns_path(&self.ns))
            .arg(command.get_program())
            .args(command.get_args());
        copy_env(command, &mut wrapped);
        wrapped
    }
}

fn shell(script: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.args(["-c", script]);
    sh
}

fn copy_env(from: &Command, to: &mut Command) {
    for (key, value) in from.get_envs() {
        match value {
            Some(value) => to.env(key, value),
            None => to.env_remove(key),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
}

fn netns_path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// `program args` in network namespace `ns` only (no cgroup): the agents, Redis, redis-cli.
pub fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns_path(ns)))
        .arg("--")
        .arg(program);
    command
}

/// `f` run on a thread of its own that has entered network namespace `ns`: its sockets are the
/// namespace's (how the test, itself outside the lab, talks to a server that listens only on a
/// namespace's loopback). An error when the namespace cannot be entered.
pub fn on_netns_thread<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = netns_path(ns);
    let file = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                use std::os::fd::AsRawFd as _;
                // SAFETY: setns(2) on an open namespace file; it changes this thread only (a
                // network namespace may be entered by one thread of a process).
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The lab: hosts A, B, C, the Redis and gateway namespaces and the switch between them.
pub struct HostsLab {
    tag: String,
    pub hosts: [Host; 3],
    pub redis_ns: String,
    pub gateway_ns: String,
    /// Namespaces made so far, removed on drop (the switch's too).
    namespaces: Vec<String>,
}

impl HostsLab {
    /// Make the namespaces, the bridge, the addresses and the cgroups. An error says which
    /// command failed; whatever was made by then is removed.
    pub fn up() -> Result<Self, String> {
        // Unique per process and lab: several test processes may build labs at once.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mount = wirespan::load::filters::cgroup2_mount()
            .ok_or("this machine mounts no cgroup v2 (the agents select their hosts by cgroup)")?;
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let host = |letter: &str, name: &'static str, addr: &'static str| Host {
            name,
            ns: format!("wsh{letter}{tag}"),
            addr,
            cgroup: mount.join(format!("wirespan-hosts-{tag}-{letter}")),
        };
        let mut lab = Self {
            hosts: [
                host("a", "host-a", HOST_A),
                host("b", "host-b", HOST_B),
                host("c", "host-c", HOST_C),
            ],
            redis_ns: format!("wshr{tag}"),
            gateway_ns: format!("wshg{tag}"),
            namespaces: Vec::new(),
            tag,
        };
        let switch = format!("wshw{}", lab.tag);
        sh(&format!(
            "ip netns add {switch}
             ip -n {switch} link set lo up
             ip -n {switch} link add br0 type bridge
             ip -n {switch} link set br0 up"
        ))?;
        lab.namespaces.push(switch.clone());
        let mut members: Vec<(String, &str)> =
            lab.hosts.iter().map(|h| (h.ns.clone(), h.addr)).collect();
        members.push((lab.redis_ns.clone(), REDIS_ADDR));
        members.push((lab.gateway_ns.clone(), GATEWAY_ADDR));
        for (i, (ns, addr)) in members.into_iter().enumerate() {
            sh(&format!("ip netns add {ns}"))?;
            lab.namespaces.push(ns.clone());
            sh(&format!(
                "ip -n {switch} link add p{i} type veth peer name eth0 netns {ns}
                 ip -n {switch} link set p{i} master br0
                 ip -n {switch} link set p{i} up
                 ip -n {ns} addr add {addr}/24 dev eth0
                 ip -n {ns} link set eth0 up
                 ip -n {ns} link set lo up"
            ))?;
        }
        for host in &lab.hosts {
            std::fs::create_dir(&host.cgroup)
                .map_err(|e| format!("mkdir {}: {e}", host.cgroup.display()))?;
        }
        // The virtual addresses are routed out of host A, where the DNAT rules rewrite them.
        let a = &lab.hosts[0].ns;
        sh(&format!(
            "ip -n {a} route add 10.232.9.0/24 dev eth0
             ip netns exec {a} nft -f - <<NFT
table ip wirespan_hosts {{
  chain out {{
    type nat hook output priority -100;
  }}
}}
NFT"
        ))?;
        Ok(lab)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Connections from host A to `vip:80` go to `to:port` (DNAT in A's output path).
    pub fn dnat(&self, vip: &str, to: &str, port: u16) -> Result<(), String> {
        sh(&format!(
            "ip netns exec {} nft add rule ip wirespan_hosts out ip daddr {vip} tcp dport 80 dnat to {to}:{port}",
            self.hosts[0].ns
        ))
    }
}

impl Drop for HostsLab {
    fn drop(&mut self) {
        // Whatever still runs on a host (a test that failed half-way) goes first: a cgroup with
        // processes cannot be removed.
        for host in &self.hosts {
            let procs =
                std::fs::read_to_string(host.cgroup.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) with a pid read from the lab's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = sh(&format!("ip netns del {ns}"));
        }
        for host in &self.hosts {
            let deadline = Instant::now() + Duration::from_secs(5);
            while host.cgroup.exists()
                && std::fs::remove_dir(&host.cgroup).is_err()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A redis-server in the lab's Redis namespace, with a password and no persistence; killed
/// when dropped (stopped or not).
pub struct Redis {
    child: Child,
    ns: String,
    password: String,
    dir: PathBuf,
    /// `redis://:<password>@<addr>:6379/<db>`: what the agents are given.
    pub url: String,
    pub db: u32,
}

impl Redis {
    pub fn start(lab: &HostsLab) -> Result<Self, String> {
        let password = format!("lab-{}", lab.tag);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hosts-redis-{}", lab.tag));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("redis.log")).map_err(|e| e.to_string())?;
        let child = in_netns(&lab.redis_ns, "redis-server")
            .args(["--bind", REDIS_ADDR, "--port", "6379"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--requirepass", &password])
            .arg("--dir")
            .arg(&dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server cannot start: {e}"))?;
        let db = 2;
        let redis = Self {
            child,
            ns: lab.redis_ns.clone(),
            url: format!("redis://:{password}@{REDIS_ADDR}:6379/{db}"),
            password,
            dir,
            db,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(0, &["PING"]).trim() != "PONG" {
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING in 10 s; its log:\n{}",
                    std::fs::read_to_string(redis.dir.join("redis.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(redis)
    }

    /// `redis-cli` against database `db`: its standard output, and its standard error after it
    /// (what a failed command says shows where its answer was expected).
    pub fn cli(&self, db: u32, args: &[&str]) -> String {
        let out = in_netns(&self.ns, "redis-cli")
            .args(["-h", REDIS_ADDR, "-p", "6379", "--no-auth-warning", "-a"])
            .arg(&self.password)
            .args(["-n", &db.to_string()])
            .args(args)
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("redis-cli cannot run: {e}"),
        }
    }

    /// SIGSTOP: Redis keeps its connections open and accepts new ones into its backlog, but
    /// answers nothing (a hung store, the harder case for a client than a refused one).
    pub fn pause(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id().cast_signed(), libc::SIGSTOP) };
    }

    pub fn resume(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id().cast_signed(), libc::SIGCONT) };
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One agent per host, started at once: each in its host's network namespace, selecting its
/// host's cgroup, exporting to `files[i]`, with `host.name` in its own `OTEL_RESOURCE_ATTRIBUTES`
/// and `env` added (the join store's address), and `extra` arguments.
pub fn start_agents(
    lab: &HostsLab,
    files: &[PathBuf; 3],
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<Agent> {
    std::thread::scope(|scope| {
        let started: Vec<_> = lab
            .hosts
            .iter()
            .zip(files)
            .map(|(host, file)| {
                scope.spawn(move || {
                    let _ = std::fs::remove_file(file);
                    let mut command = in_netns(&host.ns, super::AGENT);
                    command
                        .args(["run", "--exporter", "file", "--output"])
                        .arg(file)
                        // Requests are told apart by their query (`msg=`).
                        .arg("--show-query")
                        .arg("--cgroup")
                        .arg(&host.cgroup)
                        .args(extra)
                        // Only what the test gives decides whether there is a store.
                        .env_remove("WIRESPAN_JOIN_STORE")
                        .env_remove("WIRESPAN_JOIN_WAIT_SECS")
                        .env_remove("WIRESPAN_JOIN_PREFIX")
                        .env(
                            "OTEL_RESOURCE_ATTRIBUTES",
                            format!("host.name={}", host.name),
                        )
                        .envs(env.iter().copied())
                        .stdout(Stdio::null());
                    Agent::try_start_command(command).unwrap_or_else(|printed| {
                        panic!(
                            "the agent of {} did not become ready:\n{printed}",
                            host.name
                        )
                    })
                })
            })
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// SIGTERM every agent at once (each waits for its programs to detach), and collect.
pub fn stop_agents(agents: Vec<Agent>) -> Vec<Stopped> {
    std::thread::scope(|scope| {
        let stopping: Vec<_> = agents
            .into_iter()
            .map(|agent| scope.spawn(move || agent.stop()))
            .collect();
        stopping.into_iter().map(|h| h.join().unwrap()).collect()
    })
}
