//! `cargo xtask demo`: the example services, the agent and, when it can be built, Jaeger v2,
//! all on loopback. gin-front (/echo, /fanout) calls relay (net/http), which calls echo-grpc
//! (grpc-go) for each request; a little traffic flows every two seconds. hello-https
//! (examples/http-hello over HTTPS, HTTP/2 by ALPN, with a certificate made here) calls itself
//! over HTTPS on /chain, which the traffic asks for with curl too. db-shop (examples/db-shop)
//! talks to a redis-server of the demo's own (loopback, no persistence) on /redis, which the
//! traffic asks for too: its SET, GET, ... are client spans under db-shop's server span.
//! The console shows each trace as a tree; Zipkin's server (its UI: the trace list, waterfalls,
//! the dependency graph) gets the same spans as Zipkin JSON, and Jaeger (all-in-one,
//! in-memory; its query API and service-graph metrics, no UI in a build from its module) over
//! OTLP. Ctrl-C (or `--duration`) stops everything this started (redis-server too).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{build_examples, module_source, run_checked, setup, workspace_root, zipkin};

/// Jaeger v2 is built from its Go module (`cmd/jaeger`, the all-in-one binary).
const JAEGER_MODULE: &str = "github.com/jaegertracing/jaeger";
const JAEGER_PACKAGE: &str = "./cmd/jaeger";
const JAEGER_VERSION: &str = "v1.76.0";

/// Everything the demo started; stopped (the agent first, so it drains) when dropped.
#[derive(Default)]
struct Started {
    children: Vec<(String, Child)>,
}

impl Started {
    /// Start a service that prints its address on its first line; its address.
    fn service(&mut self, name: &str, program: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("OTEL_SERVICE_NAME", name)
            .stdout(Stdio::piped());
        let mut child =
            spawn_unblocked(&mut cmd).with_context(|| format!("cannot start {name}"))?;
        let mut addr = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut addr)?;
        self.children.push((name.to_owned(), child));
        let addr = addr.trim().to_owned();
        if addr.is_empty() {
            bail!("{name} exited before it listened");
        }
        Ok(addr)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // Last started first: the agent, then the services it watched, then Jaeger.
        for (name, child) in self.children.iter_mut().rev() {
            // SIGTERM, not SIGINT: a shell starting the demo in the background makes its
            // children ignore SIGINT, and Go programs keep it ignored.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id().cast_signed(), libc::SIGTERM) };
            // The agent detaches one uprobe at a time, each waiting for an RCU grace period in
            // the kernel: with hundreds of RET uprobes that takes a while, then it drains.
            let patience = if name == "wirespan" {
                eprintln!("xtask: waiting for the agent to detach its probes and export the rest");
                Duration::from_secs(120)
            } else {
                Duration::from_secs(10)
            };
            let deadline = std::time::Instant::now() + patience;
            while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("xtask: {name} did not stop on SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The signals that end the demo, blocked in this process (they are waited for) and unblocked
/// again in every child, so Ctrl-C reaches them too.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        set
    }
}

fn spawn_unblocked(cmd: &mut Command) -> std::io::Result<Child> {
    let set = stop_signals();
    // SAFETY: pthread_sigmask is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const set, std::ptr::null_mut());
            Ok(())
        })
    };
    cmd.spawn()
}

/// Wait for Ctrl-C or SIGTERM, or `duration`.
fn wait_for_stop(duration: Option<Duration>) {
    let set = stop_signals();
    // SAFETY: waiting on the set blocked in this thread.
    unsafe {
        if let Some(d) = duration {
            let timeout = libc::timespec {
                tv_sec: d.as_secs().cast_signed(),
                tv_nsec: i64::from(d.subsec_nanos()),
            };
            libc::sigtimedwait(&raw const set, std::ptr::null_mut(), &raw const timeout);
        } else {
            let mut signal = 0;
            libc::sigwait(&raw const set, &raw mut signal);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Jaeger's binary: built once from its Go module into the cache, or why it could not be.
/// `go install ...@version` refuses the module (its go.mod has a replace directive), so the
/// module is fetched through the proxy (`go mod download`) and built in a copy of itself.
pub fn jaeger_binary() -> anyhow::Result<PathBuf> {
    let dir = setup::cache_dir().join(format!("jaeger-{JAEGER_VERSION}"));
    let binary = dir.join("jaeger");
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!(
        "xtask: building Jaeger {JAEGER_VERSION} from its Go module (once, a few minutes; cached in {})",
        dir.display()
    );
    let source = dir.join("src");
    module_source(JAEGER_MODULE, JAEGER_VERSION, &source)?;
    run_checked(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(JAEGER_PACKAGE)
            .current_dir(&source),
    )?;
    let _ = std::fs::remove_dir_all(&source);
    Ok(binary)
}

/// Start a redis-server of the demo's own on a free loopback port, without persistence (its
/// working directory is `dir/redis`), and wait (up to 10 s) until it answers PING; its address.
fn start_redis(started: &mut Started, dir: &Path) -> anyhow::Result<String> {
    let port = free_port()?;
    let work = dir.join("redis");
    std::fs::create_dir_all(&work)?;
    let log = std::fs::File::create(dir.join("redis.log"))?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&work)
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = spawn_unblocked(&mut cmd).context("cannot start redis-server")?;
    started.children.push(("redis-server".into(), child));
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !redis_pong(&addr) {
        if std::time::Instant::now() > deadline {
            bail!(
                "redis-server did not answer PING; see {}",
                dir.join("redis.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(addr)
}

/// Whether a Redis server answers PING at `addr`.
fn redis_pong(addr: &str) -> bool {
    let ping = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    ping().unwrap_or(false)
}

/// Ports of a running Jaeger.
pub struct JaegerPorts {
    pub otlp_grpc: u16,
    pub query_http: u16,
    pub prometheus: u16,
}

/// Start Jaeger v2 all-in-one (otel-config/jaeger-all-in-one.yaml: OTLP in, in-memory storage,
/// query API, service-graph metrics for Prometheus, all on loopback) and wait (up to 30 s) until
/// its query API answers.
fn start_jaeger(started: &mut Started, binary: &Path, dir: &Path) -> anyhow::Result<JaegerPorts> {
    let ports = JaegerPorts {
        otlp_grpc: free_port()?,
        query_http: free_port()?,
        prometheus: free_port()?,
    };
    let log = std::fs::File::create(dir.join("jaeger.log"))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--config")
        .arg(workspace_root().join("otel-config/jaeger-all-in-one.yaml"))
        .env("JAEGER_OTLP_GRPC_PORT", ports.otlp_grpc.to_string())
        .env("JAEGER_OTLP_HTTP_PORT", free_port()?.to_string())
        .env("JAEGER_QUERY_HTTP_PORT", ports.query_http.to_string())
        .env("JAEGER_QUERY_GRPC_PORT", free_port()?.to_string())
        .env("JAEGER_PROMETHEUS_PORT", ports.prometheus.to_string())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = spawn_unblocked(&mut cmd).context("cannot start Jaeger")?;
    started.children.push(("jaeger".into(), child));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http_get(&format!("127.0.0.1:{}", ports.query_http), "/api/services").is_err() {
        if std::time::Instant::now() > deadline {
            bail!(
                "Jaeger did not answer on its query port; see {}",
                dir.join("jaeger.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ports)
}

/// Start Zipkin (fetched once) on a free loopback port; its port. Readiness is waited for
/// later (`zipkin::wait_ready`): the JVM starts while the services do.
fn start_zipkin(started: &mut Started, jar: &Path, dir: &Path) -> anyhow::Result<u16> {
    let port = free_port()?;
    let mut cmd = zipkin::command(jar, port, &dir.join("zipkin.log"))?;
    let child = spawn_unblocked(&mut cmd).context("cannot start Zipkin (java)")?;
    started.children.push(("zipkin".into(), child));
    Ok(port)
}

/// A GET on a new connection; the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// Where the demo's agent sends spans, besides the live trace trees.
enum Sink<'a> {
    /// The demo's own backends, those that started: Zipkin (its port) and Jaeger.
    Demo {
        zipkin: Option<u16>,
        jaeger: Option<&'a JaegerPorts>,
    },
    /// OTLP to the endpoint the standard variables name (the agent reads them).
    UserEndpoint,
}

/// Start the agent watching the services' ports and wait until it is ready.
fn start_agent(
    started: &mut Started,
    agent: &Path,
    services: &[&String],
    sink: &Sink,
) -> anyhow::Result<()> {
    let port = |addr: &str| addr.rsplit(':').next().unwrap_or_default().to_owned();
    let mut args: Vec<String> = vec!["run".into(), "--exporter".into()];
    args.push(match sink {
        Sink::UserEndpoint => "otlp".into(),
        Sink::Demo { .. } => "console".into(),
    });
    for addr in services {
        args.extend(["--port".into(), port(addr)]);
    }
    if let Sink::Demo { zipkin, jaeger } = sink {
        if let Some(port) = zipkin {
            args.extend([
                "--exporter".into(),
                "zipkin".into(),
                "--zipkin-endpoint".into(),
                format!("http://127.0.0.1:{port}/api/v2/spans"),
            ]);
        }
        if let Some(ports) = jaeger {
            args.extend([
                "--exporter".into(),
                "otlp".into(),
                "--otlp-protocol".into(),
                "grpc".into(),
                "--otlp-endpoint".into(),
                format!("http://127.0.0.1:{}", ports.otlp_grpc),
            ]);
        }
    }
    let mut cmd = if setup::is_root() {
        Command::new(agent)
    } else {
        eprintln!(
            "xtask: the agent needs root (or the capabilities in the README's Security section); running it with sudo"
        );
        let mut sudo = Command::new("sudo");
        sudo.arg(agent);
        sudo
    };
    // The service-graph metrics every 5 s, so the demo's Prometheus endpoint fills quickly.
    cmd.args(&args)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "5000")
        .stderr(Stdio::piped());
    let mut agent_child = spawn_unblocked(&mut cmd).context("cannot start the agent")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = agent_child.stderr.take().context("no agent stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.starts_with("wirespan: ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    started.children.push(("wirespan".into(), agent_child));
    ready_rx
        .recv_timeout(Duration::from_secs(120))
        .context("the agent did not become ready")
}

/// Where the demo's services, views and endpoints are.
fn announce(services: &[&String; 4], db: Option<&(String, String)>, sink: &Sink, agent: &Path) {
    let [front, relay, grpc, hello] = services;
    if let Sink::Demo {
        zipkin: Some(port), ..
    } = sink
    {
        eprintln!(
            "xtask: trace UI (Zipkin): http://127.0.0.1:{port}/zipkin/ (Run query, or serviceName=front; Dependencies for the graph)"
        );
    }
    eprintln!("xtask: demo running. front (gin): http://{front}/echo?msg=hi and /fanout");
    eprintln!(
        "xtask:   relay (net/http): http://{relay}/relay?msg=hi, /count?n=3; echo-grpc: {grpc}"
    );
    let hello_port = hello.rsplit(':').next().unwrap_or_default();
    eprintln!(
        "xtask:   hello-https (net/http over TLS, HTTP/2): curl -k https://localhost:{hello_port}/chain \
         or /items/42 (--http1.1 for HTTP/1.1)"
    );
    if let Some((redis, shop)) = db {
        eprintln!(
            "xtask:   db-shop (net/http, go-redis): http://{shop}/redis (SET, GET, a pipeline, WRONGTYPE) against the demo's redis-server {redis}"
        );
    }
    if let Sink::Demo {
        jaeger: Some(ports),
        ..
    } = sink
    {
        let q = ports.query_http;
        eprintln!(
            "xtask:   Jaeger query API (this Jaeger, built from its Go module, has no UI): http://127.0.0.1:{q}/api/services, /api/traces?service=front, /api/dependencies?endTs=<ms>&lookback=<ms>"
        );
        eprintln!(
            "xtask:   service graph metrics (Prometheus): http://127.0.0.1:{}/metrics",
            ports.prometheus
        );
    }
    eprintln!(
        "xtask:   service map: sudo {} map --duration 20 --format svg > map.svg (table without --format)",
        agent.display()
    );
}

/// A little traffic every two seconds until `stop`: front's /echo and /fanout, relay's /count,
/// db-shop's /redis (when the database leg runs) and hello-https's /chain through curl.
fn drive_traffic(
    stop: Arc<AtomicBool>,
    [front, relay, hello]: [String; 3],
    db_shop: Option<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match n % 5 {
                0 => drop(http_get(&front, &format!("/echo?msg=hello-{n}"))),
                1 => drop(http_get(&front, &format!("/fanout?msg=fan-{n}"))),
                2 => drop(http_get(&relay, "/count?n=3")),
                3 => {
                    if let Some(db_shop) = &db_shop {
                        drop(http_get(db_shop, "/redis"));
                    }
                }
                // HTTPS with HTTP/2 through curl (OpenSSL), when the machine has it.
                _ => drop(
                    Command::new("curl")
                        .args(["-sk", "-o", "/dev/null"])
                        .arg(format!("https://{hello}/chain"))
                        .status(),
                ),
            }
            n += 1;
            std::thread::sleep(Duration::from_secs(2));
        }
    })
}

/// The OTLP endpoint the standard variables name, if any: where the user wants the spans.
fn user_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
}

/// Jaeger's binary and Zipkin's jar, each built or fetched once, or None (said why): none
/// when the user named an OTLP endpoint, where the spans go instead.
fn trace_backends() -> (Option<PathBuf>, Option<PathBuf>) {
    if let Some(endpoint) = user_endpoint() {
        eprintln!(
            "xtask: OTLP endpoint configured ({endpoint}): spans go there, no Zipkin or Jaeger"
        );
        return (None, None);
    }
    let jaeger = jaeger_binary()
        .map_err(|why| eprintln!("xtask: no Jaeger ({why:#}); its query API is not available"))
        .ok();
    let zipkin = zipkin::jar()
        .map_err(|why| eprintln!("xtask: no Zipkin ({why:#}); the trace UI is not available"))
        .ok();
    (jaeger, zipkin)
}

/// `cargo xtask demo [--duration SECS]`.
pub fn run(agent: &Path, duration: Option<Duration>) -> anyhow::Result<()> {
    let dir = setup::cache_dir().join("demo");
    std::fs::create_dir_all(&dir)?;
    build_examples(&dir, &["grpc-echo", "gin-front", "http-hello", "db-shop"])?;
    // The database leg's server: not in what `build` needs, so installed here (as root).
    if let Err(why) = setup::debian_package(
        "redis-server",
        Command::new("redis-server").arg("--version"),
    ) {
        eprintln!(
            "xtask: cannot install redis-server ({why:#}); the demo runs without its database leg"
        );
    }
    let (cert, key) = setup::certificate(&dir)?;
    let (jaeger, zipkin_jar) = trace_backends();
    // Block the stop signals before any thread or child exists; they are waited for below.
    let set = stop_signals();
    // SAFETY: blocking signals in this thread; children unblock them (spawn_unblocked).
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };

    let mut started = Started::default();
    // Zipkin first: its JVM starts while the rest does.
    let zipkin_port = zipkin_jar.and_then(|jar| {
        start_zipkin(&mut started, &jar, &dir)
            .map_err(|why| eprintln!("xtask: no Zipkin UI ({why:#})"))
            .ok()
    });
    let jaeger_ports = match &jaeger {
        Some(binary) => match start_jaeger(&mut started, binary, &dir) {
            Ok(ports) => Some(ports),
            Err(why) => {
                eprintln!("xtask: Jaeger did not start ({why:#}); console view only");
                None
            }
        },
        None => None,
    };
    let grpc = started.service("echo-grpc", &dir.join("grpc-echo"), &["server"])?;
    let relay = started.service(
        "relay",
        &dir.join("grpc-echo"),
        &["relay", "--target", &grpc],
    )?;
    let front = started.service("front", &dir.join("gin-front"), &["--backend", &relay])?;
    let path = |p: &Path| p.to_str().map(str::to_owned).context("non-UTF-8 path");
    let (cert, key) = (path(&cert)?, path(&key)?);
    let hello = started.service(
        "hello-https",
        &dir.join("http-hello"),
        &["-tls-cert", &cert, "-tls-key", &key, "-tls-ca", &cert],
    )?;

    // The database leg: db-shop's /redis against a redis-server of the demo's own.
    let db = match start_redis(&mut started, &dir) {
        Ok(redis) => Some(
            started
                .service("db-shop", &dir.join("db-shop"), &["-redis", &redis])
                .map(|shop| (redis, shop))?,
        ),
        Err(why) => {
            eprintln!("xtask: no database leg ({why:#})");
            None
        }
    };

    let zipkin_port = zipkin_port.filter(|&port| {
        zipkin::wait_ready(port, &dir.join("zipkin.log"))
            .map_err(|why| eprintln!("xtask: no Zipkin UI ({why:#})"))
            .is_ok()
    });
    let sink = if user_endpoint().is_some() {
        Sink::UserEndpoint
    } else {
        Sink::Demo {
            zipkin: zipkin_port,
            jaeger: jaeger_ports.as_ref(),
        }
    };
    let mut watched = vec![&grpc, &relay, &front, &hello];
    if let Some((redis, shop)) = &db {
        watched.extend([shop, redis]);
    }
    start_agent(&mut started, agent, &watched, &sink)?;

    announce(&[&front, &relay, &grpc, &hello], db.as_ref(), &sink, agent);
    eprintln!("xtask: Ctrl-C stops everything the demo started.");

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = drive_traffic(
        Arc::clone(&stop),
        [front.clone(), relay.clone(), hello.clone()],
        db.as_ref().map(|(_, shop)| shop.clone()),
    );
    wait_for_stop(duration);
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    eprintln!("xtask: stopping the demo");
    drop(started);
    Ok(())
}
