//! The join store against a real `redis-server` on loopback (no root needed): records published
//! by one agent's store are found by another's, a missing record is answered after the wait, a
//! password in the address works, and an outage (the server stopped) is answered at once and
//! ends by itself when the server is back.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use wirespan::{
    join::{Answer, JoinKey, JoinRecord, JoinStore, RedisJoin, RedisJoinOptions},
    span::{SpanId, TraceId},
    testing::cannot_run,
};

/// A redis-server of this test's own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(password: Option<&str>) -> Option<Self> {
        let extra: Vec<String> = password
            .map(|p| vec!["--requirepass".to_owned(), p.to_owned()])
            .unwrap_or_default();
        Self::start_with(&extra)
    }

    /// A node of a Redis Cluster, its state in `dir`.
    fn cluster_node(dir: &std::path::Path) -> Option<Self> {
        let conf = dir.join(format!("nodes-{}.conf", std::process::id()));
        let _ = std::fs::remove_file(&conf);
        let redis = Self::start_with(&[
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            conf.to_str()?.to_owned(),
        ])?;
        Some(redis)
    }

    fn start_with(extra: &[String]) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
        ];
        args.extend_from_slice(extra);
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_or_skip(password: Option<&str>) -> Option<Redis> {
    let redis = Redis::start(password);
    if redis.is_none() {
        cannot_run(
            "needs redis-server (Debian package redis-server; `cargo xtask setup` installs it)",
        );
    }
    redis
}

fn store(url: String, wait: Duration) -> RedisJoin {
    RedisJoin::start(RedisJoinOptions {
        url,
        prefix: format!("test{}", std::process::id()),
        wait,
        ttl: Duration::from_secs(30),
    })
    .expect("store starts")
}

fn record(n: u8) -> JoinRecord {
    JoinRecord {
        trace_id: TraceId([n; 16]),
        span_id: SpanId([n; 8]),
        route_check: 7,
    }
}

fn key(n: u32) -> JoinKey {
    JoinKey {
        request_seq: n,
        response_seq: !n,
    }
}

/// Collect answers until `want` came or `limit` passed.
fn answers(s: &mut RedisJoin, want: usize, limit: Duration) -> Vec<(JoinKey, Answer)> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        s.answers(&mut out);
        thread::sleep(Duration::from_millis(5));
    }
    out
}

#[test]
fn one_agent_finds_what_another_published_even_when_it_asked_first() {
    let Some(redis) = redis_or_skip(None) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut client_host = store(url.clone(), Duration::from_secs(3));
    let mut server_host = store(url, Duration::from_secs(3));
    // Published before the ask, and after it (the client's agent is often later).
    client_host.publish(key(1), record(1));
    thread::sleep(Duration::from_millis(100));
    server_host.ask(key(1));
    server_host.ask(key(2));
    thread::sleep(Duration::from_millis(200));
    client_host.publish(key(2), record(2));
    let mut got = answers(&mut server_host, 2, Duration::from_secs(3));
    got.sort_by_key(|(k, _)| k.request_seq);
    assert_eq!(
        got,
        vec![
            (key(1), Answer::Found(record(1))),
            (key(2), Answer::Found(record(2)))
        ]
    );
    assert_eq!(client_host.stats().published, 2);
}

#[test]
fn a_record_never_published_is_answered_not_found_after_the_wait() {
    let Some(redis) = redis_or_skip(None) else {
        return;
    };
    let mut s = store(
        format!("redis://127.0.0.1:{}", redis.port),
        Duration::from_millis(400),
    );
    let asked = Instant::now();
    s.ask(key(9));
    let got = answers(&mut s, 1, Duration::from_secs(3));
    assert_eq!(got, vec![(key(9), Answer::NotFound)]);
    assert!(asked.elapsed() >= Duration::from_millis(400));
}

#[test]
fn a_password_in_the_address_is_used_and_a_wrong_one_means_away() {
    let Some(redis) = redis_or_skip(Some("s3cret-pw")) else {
        return;
    };
    let good = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port);
    let mut s = store(good, Duration::from_secs(2));
    s.publish(key(3), record(3));
    s.ask(key(3));
    assert_eq!(
        answers(&mut s, 1, Duration::from_secs(3)),
        vec![(key(3), Answer::Found(record(3)))]
    );
    let wrong = format!("redis://:nope@127.0.0.1:{}", redis.port);
    let mut s = store(wrong, Duration::from_secs(2));
    s.ask(key(3));
    assert_eq!(
        answers(&mut s, 1, Duration::from_secs(3)),
        vec![(key(3), Answer::Away)]
    );
    assert!(s.stats().store_errors > 0);
}

#[test]
fn a_stopped_store_is_answered_away_at_once_and_joining_resumes_when_it_is_back() {
    let Some(redis) = redis_or_skip(None) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut s = store(url, Duration::from_secs(2));
    s.publish(key(4), record(4));
    s.ask(key(4));
    assert_eq!(answers(&mut s, 1, Duration::from_secs(3)).len(), 1);
    // Stopped: connections hang (the kernel still accepts them), as with a frozen server.
    redis.signal(libc::SIGSTOP);
    let asked = Instant::now();
    s.ask(key(5));
    s.publish(key(6), record(6));
    assert_eq!(
        answers(&mut s, 1, Duration::from_secs(5)),
        vec![(key(5), Answer::Away)]
    );
    assert!(
        asked.elapsed() < Duration::from_millis(1_500),
        "away is told within the I/O timeout, not after the wait: {:?}",
        asked.elapsed()
    );
    // Asks during the outage are answered away without waiting for the timeout again.
    let asked = Instant::now();
    s.ask(key(7));
    assert_eq!(
        answers(&mut s, 1, Duration::from_secs(5)),
        vec![(key(7), Answer::Away)]
    );
    assert!(asked.elapsed() < Duration::from_millis(1_500));
    // Later, while an attempt to connect again hangs on the frozen server, asks are still
    // answered at once: the attempt runs on a thread of its own.
    for n in 10..14 {
        thread::sleep(Duration::from_millis(400));
        let asked = Instant::now();
        s.ask(key(n));
        assert_eq!(
            answers(&mut s, 1, Duration::from_secs(5)),
            vec![(key(n), Answer::Away)]
        );
        assert!(
            asked.elapsed() < Duration::from_millis(300),
            "ask {n} waited {:?}",
            asked.elapsed()
        );
    }
    assert!(s.stats().publish_dropped >= 1);
    redis.signal(libc::SIGCONT);
    // Back: the store connects again by itself (nothing waits meanwhile), so the first request
    // after the pause is joined, as users' first request after an outage would be.
    thread::sleep(Duration::from_millis(2_500));
    s.publish(key(8), record(8));
    s.ask(key(8));
    assert_eq!(
        answers(&mut s, 1, Duration::from_secs(3)),
        vec![(key(8), Answer::Found(record(8)))],
        "joining resumed within 2.5 s of the store's return"
    );
}

/// A Redis Cluster of three masters (`redis-cli --cluster create`): the agents name two of its
/// nodes and find the third; records spread over all three by hash slot, and every one
/// published is found (the store reads a cluster with per-slot GETs, not a cross-slot MGET).
#[test]
fn a_redis_cluster_spreads_the_records_and_finds_every_one() {
    const N: u32 = 60;
    let dirs: Vec<_> = (0..3)
        .map(|i| {
            let d =
                std::env::temp_dir().join(format!("wirespan-cluster-{}-{i}", std::process::id()));
            let _ = std::fs::create_dir_all(&d);
            d
        })
        .collect();
    let nodes: Vec<Redis> = dirs.iter().filter_map(|d| Redis::cluster_node(d)).collect();
    if nodes.len() < 3 {
        return cannot_run("needs redis-server to start three cluster nodes");
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output();
    if !created.is_ok_and(|o| o.status.success()) {
        return cannot_run("needs redis-cli --cluster create (Debian package redis-tools)");
    }
    // The cluster is usable once every node says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &node.port.to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not come up");
            thread::sleep(Duration::from_millis(100));
        }
    }
    let url = format!("redis://{},redis://{}", addrs[0], addrs[1]);
    let mut client_host = store(url.clone(), Duration::from_secs(3));
    let mut server_host = store(url, Duration::from_secs(3));

    for n in 0..N {
        client_host.publish(key(100 + n), record((n % 200) as u8 + 1));
    }
    thread::sleep(Duration::from_millis(200));
    for n in 0..N {
        server_host.ask(key(100 + n));
    }
    let got = answers(&mut server_host, N as usize, Duration::from_secs(10));
    assert_eq!(got.len(), N as usize, "{got:?}");
    assert!(
        got.iter().all(|(_, a)| matches!(a, Answer::Found(_))),
        "{got:?}"
    );
    for node in &nodes {
        let size = Command::new("redis-cli")
            .args(["-p", &node.port.to_string(), "dbsize"])
            .output()
            .expect("redis-cli");
        let keys: u32 = String::from_utf8_lossy(&size.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(keys > 0, "node {} holds none of the records", node.port);
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
