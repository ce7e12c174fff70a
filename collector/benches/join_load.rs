//! What joining across hosts costs Redis: N agents (each a `RedisJoin`, as `wirespan run
//! --join-store` makes it) share one real `redis-server` on loopback, and R cross-host requests a
//! second go between them. Each request is what the agents do for it in a real run: the
//! server's agent asks for the key when its span is ready, and the client's agent publishes
//! the record 20 ms later (its span is emitted after the response reached it), so most asks
//! are retried once.
//!
//! Measured over the run: Redis's CPU (utime + stime from /proc), the commands it processed
//! and the bytes it received and sent (INFO), its memory at the end (records live 30 s), how
//! many asks found their record, and the time from ask to answer.
//!
//! `cargo bench -p wirespan --bench join_load` (`-- --seconds N --agents N --rates R,R`). Needs
//! `redis-server` (Debian's package; `cargo xtask setup` installs it).
#![expect(
    clippy::cast_precision_loss,
    reason = "counts and times become figures of a report"
)]

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use wirespan::{
    join::{Answer, JoinKey, JoinRecord, JoinStore, RedisJoin, RedisJoinOptions},
    span::{SpanId, TraceId},
};

/// How long after the server's ask the client's agent publishes.
const CLIENT_LAG: Duration = Duration::from_millis(20);
const TICK: Duration = Duration::from_millis(5);

struct Options {
    seconds: u64,
    agents: usize,
    rates: Vec<u64>,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 10,
        agents: 10,
        rates: vec![1_000, 5_000, 20_000],
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seconds" => o.seconds = value.parse().expect("--seconds N"),
            "--agents" => o.agents = value.parse().expect("--agents N"),
            "--rates" => {
                o.rates = value
                    .split(',')
                    .map(|r| r.parse().expect("--rates R,R"))
                    .collect();
            }
            // cargo bench passes --bench; other flags are not ours.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; `cargo xtask setup` installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    /// A field of `INFO`, as a number.
    fn info(&self, field: &str) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("redis");
        s.write_all(b"INFO\r\n").expect("write");
        let mut reader = BufReader::new(s);
        let mut header = String::new();
        reader.read_line(&mut header).expect("read");
        let len: usize = header.trim_start_matches('$').trim().parse().expect("bulk");
        let mut body = vec![0; len + 2];
        std::io::Read::read_exact(&mut reader, &mut body).expect("read");
        let body = String::from_utf8_lossy(&body);
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Redis's CPU time so far (user + system), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("redis's /proc stat");
        let after_comm = stat.rsplit_once(')').expect("stat").1;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 of stat(5); `after_comm` starts at field 3.
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Outcome {
    asks: u64,
    found: u64,
    latencies_ms: Vec<f64>,
}

/// R requests a second between `agents` agents for `seconds`.
fn drive(redis: &Redis, agents: usize, rate: u64, seconds: u64, run: u32) -> Outcome {
    let mut stores: Vec<RedisJoin> = (0..agents)
        .map(|_| {
            RedisJoin::start(RedisJoinOptions {
                url: format!("redis://127.0.0.1:{}", redis.port),
                prefix: format!("bench{run}"),
                wait: Duration::from_secs(3),
                ttl: Duration::from_secs(30),
            })
            .expect("store")
        })
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut next: u64 = 0;
    let mut to_publish: VecDeque<(Instant, usize, JoinKey)> = VecDeque::new();
    let mut asked_at = std::collections::HashMap::new();
    let mut outcome = Outcome {
        asks: 0,
        found: 0,
        latencies_ms: Vec::new(),
    };
    let mut answers = Vec::new();
    while Instant::now() < end || !asked_at.is_empty() {
        let now = Instant::now();
        if now < end {
            let due = (now - start).as_secs_f64() * rate as f64;
            while (next as f64) < due {
                let n = next;
                next += 1;
                let key = JoinKey {
                    request_seq: n as u32,
                    response_seq: (n as u32).wrapping_mul(2_654_435_761) ^ run,
                };
                let client = (n as usize) % agents;
                let server = (client + 1) % agents;
                stores[server].ask(key);
                asked_at.insert(key, (now, server));
                outcome.asks += 1;
                to_publish.push_back((now + CLIENT_LAG, client, key));
            }
        } else if now > end + Duration::from_secs(10) {
            break;
        }
        while to_publish.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, client, key) = to_publish.pop_front().expect("front");
            let id = key.request_seq.to_be_bytes();
            let mut span = [1; 8];
            span[..4].copy_from_slice(&id);
            stores[client].publish(
                key,
                JoinRecord {
                    trace_id: TraceId([7; 16]),
                    span_id: SpanId(span),
                    route_check: 1,
                },
            );
        }
        for s in &mut stores {
            s.answers(&mut answers);
        }
        for (key, answer) in answers.drain(..) {
            if let Some((at, _)) = asked_at.remove(&key) {
                if matches!(answer, Answer::Found(_)) {
                    outcome.found += 1;
                }
                outcome
                    .latencies_ms
                    .push(at.elapsed().as_secs_f64() * 1_000.0);
            }
        }
        thread::sleep(TICK);
    }
    outcome
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o = options();
    let redis = Redis::start();
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    println!(
        "join store load: {} agents, one redis-server on loopback, {} s per rate",
        o.agents, o.seconds
    );
    println!(
        "| requests/s | Redis CPU (% of a core) | commands/s | in KiB/s | out KiB/s | memory at end (MiB) | found | ask→answer p50 / p99 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (run, &rate) in o.rates.iter().enumerate() {
        let (cpu0, cmd0, in0, out0) = (
            redis.cpu_ticks(),
            redis.info("total_commands_processed"),
            redis.info("total_net_input_bytes"),
            redis.info("total_net_output_bytes"),
        );
        let began = Instant::now();
        let mut outcome = drive(&redis, o.agents, rate, o.seconds, run as u32);
        let secs = began.elapsed().as_secs_f64();
        let cpu = (redis.cpu_ticks() - cpu0) as f64 / ticks_per_sec / secs * 100.0;
        // INFO itself is a command: 3 per sample, negligible.
        let commands = (redis.info("total_commands_processed") - cmd0) as f64 / secs;
        let net_in = (redis.info("total_net_input_bytes") - in0) as f64 / secs / 1024.0;
        let net_out = (redis.info("total_net_output_bytes") - out0) as f64 / secs / 1024.0;
        let memory = redis.info("used_memory") as f64 / (1024.0 * 1024.0);
        outcome.latencies_ms.sort_by(f64::total_cmp);
        println!(
            "| {rate} | {cpu:.1} | {commands:.0} | {net_in:.0} | {net_out:.0} | {memory:.1} | {:.2}% | {:.0} / {:.0} |",
            outcome.found as f64 * 100.0 / outcome.asks.max(1) as f64,
            percentile(&outcome.latencies_ms, 0.5),
            percentile(&outcome.latencies_ms, 0.99)
        );
    }
}
