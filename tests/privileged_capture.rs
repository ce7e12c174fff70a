//! Privileged end to end (needs root and a kernel): the whole lifecycle and every byte of TCP
//! conversations between real programs, with exact counts, TCP sequence numbers that pair the two
//! ends, connection ids, payload capture, and no feedback from the agent's own traffic.

mod support;

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, OwnedFd},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use support::{Agent, HttpServer, contiguous_range, data_of, require_privileges, total_bytes};

/// Send keep-alive GETs on one connection and read each response whole; returns
/// (bytes written, bytes read).
fn keep_alive_gets(stream: &mut TcpStream, paths: &[&str]) -> (u64, u64) {
    let (mut written, mut read) = (0u64, 0u64);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for path in paths {
        let request = format!("GET /{path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        written += request.len() as u64;
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            read += reader.read_line(&mut line).unwrap() as u64;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).unwrap();
        read += content_length as u64;
    }
    (written, read)
}

fn of_type<'a>(events: &'a [Value], kind: &str, conn_id: &Value) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["conn_id"] == *conn_id)
        .collect()
}

#[test]
fn privileged_http_keep_alive_bytes_order_sequence_numbers_and_lifecycle() {
    if !require_privileges() {
        return;
    }
    let body = vec![b'x'; 20_000];
    let server = HttpServer::start("127.0.0.1", &[("a.txt", b"hello"), ("big.bin", &body)]);
    let agent = Agent::start(&["events", "--json"]);
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (written, read) = keep_alive_gets(&mut client, &["a.txt", "big.bin", "a.txt"]);
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = agent.stop();
    let events = stopped.events();
    let me = std::process::id();

    let client_out = data_of(&events, me, client_port, "egress");
    let client_in = data_of(&events, me, client_port, "ingress");
    let server_in = data_of(&events, server.pid(), server.port, "ingress");
    let server_out = data_of(&events, server.pid(), server.port, "egress");
    // The server's end of this connection only: its peer port is the client's.
    let server_in: Vec<_> = server_in
        .into_iter()
        .filter(|e| e["dport"] == client_port)
        .collect();
    let server_out: Vec<_> = server_out
        .into_iter()
        .filter(|e| e["dport"] == client_port)
        .collect();

    // Byte totals per direction equal what both ends counted.
    assert_eq!(total_bytes(&client_out), written, "client egress");
    assert_eq!(total_bytes(&client_in), read, "client ingress");
    assert_eq!(total_bytes(&server_in), written, "server ingress");
    assert_eq!(total_bytes(&server_out), read, "server egress");

    // In order, contiguous, and the writer's sequence range is the reader's.
    assert_eq!(contiguous_range(&client_out), contiguous_range(&server_in));
    assert_eq!(contiguous_range(&server_out), contiguous_range(&client_in));

    // The requests are there, in order, on both ends.
    let requests: Vec<String> = client_out
        .iter()
        .map(|e| e["payload"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        requests[0].starts_with("GET /a.txt HTTP/1.1"),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with("GET /big.bin")),
        "{requests:?}"
    );

    // One connection id per end, with its connect/accept and close.
    let client_conn = &client_out[0]["conn_id"];
    let server_conn = &server_in[0]["conn_id"];
    assert_ne!(client_conn, server_conn);
    assert!(
        client_out
            .iter()
            .chain(&client_in)
            .all(|e| e["conn_id"] == *client_conn)
    );
    assert!(
        server_in
            .iter()
            .chain(&server_out)
            .all(|e| e["conn_id"] == *server_conn)
    );
    assert_eq!(
        of_type(&events, "connect", client_conn).len(),
        1,
        "{}",
        stopped.stderr
    );
    assert_eq!(of_type(&events, "close", client_conn).len(), 1);
    let accept = of_type(&events, "accept", server_conn);
    assert_eq!(accept.len(), 1, "accept of the server end");
    assert_eq!(
        (accept[0]["pid"].as_u64(), accept[0]["sport"].as_u64()),
        (Some(u64::from(server.pid())), Some(u64::from(server.port)))
    );
    assert_eq!(accept[0]["dport"], client_port);
}

#[test]
fn privileged_connection_opened_before_the_agent_is_traced_from_its_next_byte() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let agent = Agent::start(&["events", "--json"]);
    client.write_all(b"ping-before").unwrap();
    let mut buf = [0; 11];
    server.read_exact(&mut buf).unwrap();
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut buf[..4]).unwrap();
    let stopped = agent.stop();
    let events = stopped.events();
    let me = std::process::id();
    for (stream, sent, received) in [
        (&client, "ping-before", "pong"),
        (&server, "pong", "ping-before"),
    ] {
        let (local, peer) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
        let out = data_of(&events, me, local.port(), "egress");
        let inn = data_of(&events, me, local.port(), "ingress");
        assert_eq!(out.len(), 1, "{local}: {out:?}");
        assert_eq!(inn.len(), 1, "{local}: {inn:?}");
        for e in [out[0], inn[0]] {
            assert_eq!(e["saddr"], local.ip().to_string());
            assert_eq!(e["daddr"], peer.ip().to_string());
            assert_eq!(e["dport"], peer.port());
            assert_ne!(e["conn_id"], 0);
        }
        assert_eq!(out[0]["payload"], sent);
        assert_eq!(inn[0]["payload"], received);
        assert_eq!(out[0]["conn_id"], inn[0]["conn_id"]);
    }
    // The client's write and the server's read of the same bytes carry the same number.
    let client_out = data_of(&events, me, client.local_addr().unwrap().port(), "egress");
    let server_in = data_of(&events, me, server.local_addr().unwrap().port(), "ingress");
    assert_eq!(client_out[0]["seq"], server_in[0]["seq"]);
}

#[test]
fn privileged_64_concurrent_connections_never_mix_payloads() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let workers: Vec<_> = (0..64)
            .map(|_| {
                let (mut s, _) = listener.accept().unwrap();
                std::thread::spawn(move || {
                    let mut buf = vec![0; 4096];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => s.write_all(&buf[..n]).unwrap(),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    let agent = Agent::start(&[
        "events",
        "--json",
        "--port",
        &server_addr.port().to_string(),
    ]);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(server_addr).unwrap();
                let port = s.local_addr().unwrap().port();
                let message = format!("conn-{i:02}-").repeat(40);
                for _ in 0..5 {
                    s.write_all(message.as_bytes()).unwrap();
                    let mut back = vec![0; message.len()];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, message.as_bytes());
                }
                (port, i)
            })
        })
        .collect();
    let tag_of_port: HashMap<u16, String> = clients
        .into_iter()
        .map(|c| {
            let (port, i) = c.join().unwrap();
            (port, format!("conn-{i:02}-"))
        })
        .collect();
    echo.join().unwrap();
    let stopped = agent.stop();
    let events = stopped.events();
    let mut seen = HashSet::new();
    let mut checked = 0;
    for e in events.iter().filter(|e| e["type"] == "data") {
        // The client port is this end's port on the client, the peer's on the server.
        let client_port = if e["dport"] == server_addr.port() {
            &e["sport"]
        } else {
            &e["dport"]
        };
        let tag = &tag_of_port[&(client_port.as_u64().unwrap() as u16)];
        let payload = e["payload"].as_str().unwrap();
        // Reads may split anywhere; every 7-byte window of the payload must still be this tag's.
        let doubled = tag.repeat(2);
        assert!(
            payload
                .split(tag.as_str())
                .all(|piece| doubled.contains(piece)),
            "payload of {tag} carries another connection's bytes: {payload}"
        );
        seen.insert(tag.clone());
        checked += 1;
    }
    assert_eq!(seen.len(), 64, "every connection's data was seen");
    assert!(
        checked >= 64 * 4,
        "both ends of every exchange: {checked} events"
    );
    assert!(
        stopped.stderr.contains("lost in kernel: none"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn privileged_one_mib_write_is_counted_exactly_and_cut_at_capture_bytes() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all.len()
    });
    let agent = Agent::start(&[
        "events",
        "--json",
        "--capture-bytes",
        "1000",
        "--port",
        &port.to_string(),
    ]);
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    client.write_all(&payload).unwrap();
    drop(client);
    assert_eq!(reader.join().unwrap(), 1 << 20);
    let stopped = agent.stop();
    let events = stopped.events();
    let writes = data_of(&events, std::process::id(), client_port, "egress");
    assert_eq!(total_bytes(&writes), 1 << 20, "exact byte count");
    assert!(
        writes[0]["bytes"].as_u64().unwrap() > 1000,
        "the write was larger than the cut"
    );
    for w in &writes {
        let expected = w["bytes"].as_u64().unwrap().min(1000);
        assert_eq!(
            w["captured"].as_u64(),
            Some(expected),
            "payload cut at --capture-bytes: {w}"
        );
    }
    assert_eq!(
        writes[0]["payload"].as_str().unwrap().as_bytes(),
        &payload[..1000]
    );
    contiguous_range(&writes);
}

#[test]
fn privileged_agent_never_captures_its_own_traffic() {
    if !require_privileges() {
        return;
    }
    // The agent's output goes to a TCP connection: if its own writes were captured, each would
    // be an event, written again, captured again, without end. The test reads that connection
    // with splice(2), which no probe watches, so its reads cannot loop either.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let output = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (collector, _) = listener.accept().unwrap();
    let collected = std::thread::spawn(move || splice_all(&collector));
    let agent = Agent::start_with_stdout(
        &["events", "--json", "--port", &port.to_string()],
        Stdio::from(OwnedFd::from(output)),
    );
    let agent_pid = agent.pid();
    // Legitimate traffic on the same port, from this process, must still be seen.
    let mut legit = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut legit_server, _) = listener.accept().unwrap();
    legit.write_all(b"legit").unwrap();
    let mut buf = [0; 5];
    legit_server.read_exact(&mut buf).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let text = String::from_utf8(collected.join().unwrap()).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["payload"] == "legit"),
        "legit traffic seen: {text}"
    );
    assert!(
        events.iter().all(|e| e["pid"] != agent_pid),
        "an event of the agent itself: {text}"
    );
    assert!(
        events
            .iter()
            .all(|e| !e["payload"].as_str().unwrap_or("").contains("\"type\"")),
        "the agent's own output was captured: {text}"
    );
    // A loop would be data on the port without end. (Other processes' exec events are not
    // filtered by port, so they are not counted: the machine may be busy.)
    let data = events.iter().filter(|e| e["type"] == "data").count();
    assert!(data < 50, "no feedback loop: {data} data events: {text}");
}

/// Everything a socket receives, read with splice(2) into a pipe.
fn splice_all(socket: &TcpStream) -> Vec<u8> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut out = Vec::new();
    loop {
        // SAFETY: valid fds; null offsets are allowed for sockets and pipes.
        let n = unsafe {
            libc::splice(
                socket.as_raw_fd(),
                std::ptr::null_mut(),
                fds[1],
                std::ptr::null_mut(),
                65_536,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        let mut chunk = vec![0; n as usize];
        // SAFETY: reading into a buffer of exactly n bytes from our own pipe.
        let got = unsafe { libc::read(fds[0], chunk.as_mut_ptr().cast(), n as usize) };
        assert_eq!(got, n);
        out.extend_from_slice(&chunk);
    }
    // SAFETY: closing the pipe fds this function opened.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    out
}

#[test]
fn privileged_every_read_and_write_syscall_is_captured_across_iovecs() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let agent = Agent::start(&["events", "--json", "--port", &port.to_string()]);
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
    let mut buf = [0u8; 64];
    let iov = |parts: &[&[u8]]| -> Vec<libc::iovec> {
        parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect()
    };
    // SAFETY: every call gets valid fds and buffers that outlive it.
    unsafe {
        assert_eq!(libc::write(c, b"w-write".as_ptr().cast(), 7), 7);
        assert_eq!(libc::read(s, buf.as_mut_ptr().cast(), 7), 7);

        let segments = iov(&[b"w-", b"writev-", b"3segs"]);
        assert_eq!(libc::writev(c, segments.as_ptr(), 3), 14);
        let (mut a, mut b) = ([0u8; 5], [0u8; 9]);
        let targets = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: 5,
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 9,
            },
        ];
        assert_eq!(libc::readv(s, targets.as_ptr(), 2), 14);

        let segments = iov(&[b"w-send", b"msg"]);
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = segments.as_ptr().cast_mut();
        msg.msg_iovlen = 2;
        assert_eq!(libc::sendmsg(c, &raw const msg, 0), 9);
        let targets = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: 4,
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 5,
            },
        ];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = targets.as_ptr().cast_mut();
        msg.msg_iovlen = 2;
        assert_eq!(libc::recvmsg(s, &raw mut msg, libc::MSG_WAITALL), 9);

        assert_eq!(libc::send(c, b"w-sendto".as_ptr().cast(), 8, 0), 8);
        assert_eq!(
            libc::recv(s, buf.as_mut_ptr().cast(), 8, libc::MSG_WAITALL),
            8
        );
    }
    let stopped = agent.stop();
    let events = stopped.events();
    let me = std::process::id();
    let sent: Vec<&str> = data_of(&events, me, client.local_addr().unwrap().port(), "egress")
        .iter()
        .map(|e| e["payload"].as_str().unwrap())
        .collect();
    let received: Vec<&str> = data_of(&events, me, port, "ingress")
        .iter()
        .map(|e| e["payload"].as_str().unwrap())
        .collect();
    let expected = ["w-write", "w-writev-3segs", "w-sendmsg", "w-sendto"];
    assert_eq!(
        sent, expected,
        "write, writev, sendmsg, send(to), iovecs joined in order"
    );
    assert_eq!(
        received, expected,
        "read, readv, recvmsg, recv(from), iovecs joined in order"
    );
}

#[test]
fn privileged_pid_and_cgroup_filters_keep_only_the_chosen_processes() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A helper process in its own cgroup, sending one tagged message when told to.
    let root = wirespan::load::filters::cgroup2_mount().expect("a cgroup v2 mount");
    let cgroup = root.join(format!("wirespan-test-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup).expect("a new cgroup v2 directory");
    // The interpreter itself, not a wrapper: pyenv's `python3` shim is a script that runs
    // `readlink` and friends as it starts, and those children (in the cgroup too) are
    // processes of their own.
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let python = String::from_utf8(python.stdout).unwrap().trim().to_owned();
    let helper = |tag: &str| {
        std::process::Command::new(&python)
            .args(["-c", &format!(
                "import socket,sys\nsys.stdin.readline()\ns=socket.create_connection(('127.0.0.1',{port}))\ns.sendall(b'{tag}')\ns.close()"
            )])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut in_cgroup = helper("from-cgroup");
    std::fs::write(cgroup.join("cgroup.procs"), in_cgroup.id().to_string()).unwrap();
    let mut by_pid = helper("from-pid");
    let mut other = helper("from-other");
    let agent = Agent::start(&[
        "events",
        "--json",
        "--pid",
        &by_pid.id().to_string(),
        "--cgroup",
        cgroup.to_str().unwrap(),
    ]);
    let acceptor = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).unwrap();
        }
    });
    for child in [&mut in_cgroup, &mut by_pid, &mut other] {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(child.wait().unwrap().success());
    }
    acceptor.join().unwrap();
    let stopped = agent.stop();
    let _ = std::fs::remove_dir(&cgroup);
    let events = stopped.events();
    let payloads: HashSet<&str> = events
        .iter()
        .filter_map(|e| e["payload"].as_str())
        .collect();
    assert!(payloads.contains("from-cgroup"), "{payloads:?}");
    assert!(payloads.contains("from-pid"), "{payloads:?}");
    assert!(
        !payloads.contains("from-other"),
        "a filtered-out process was captured"
    );
    let pids: HashSet<u64> = events.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    let allowed = HashSet::from([u64::from(in_cgroup.id()), u64::from(by_pid.id())]);
    let foreign: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| !allowed.contains(&e["pid"].as_u64().unwrap()))
        .take(5)
        .collect();
    assert!(
        pids.is_subset(&allowed),
        "only the chosen processes: {pids:?}; for example {foreign:#?}"
    );
}

/// JSON events without connection ids and timestamps: two agents number connections
/// independently, and each probe reads the clock itself.
fn without_conn_ids(events: &[Value]) -> Vec<String> {
    let mut lines: Vec<String> = events
        .iter()
        // Process starts and exits are not filtered by port: each agent sees other processes
        // come and go.
        .filter(|e| e["type"] != "exec" && e["type"] != "exit")
        .map(|e| {
            let mut e = e.clone();
            for field in ["conn_id", "ts_ns", "ts_exit_ns"] {
                e.as_object_mut().unwrap().remove(field);
            }
            e.to_string()
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn privileged_recording_replays_unprivileged_to_the_events_seen_live() {
    if !require_privileges() {
        return;
    }
    let server = HttpServer::start("127.0.0.1", &[("a.txt", b"hello"), ("b.txt", b"world!")]);
    let port = server.port.to_string();
    let recording = std::env::temp_dir().join(format!("wirespan-{}.rec", std::process::id()));
    let live = Agent::start(&["events", "--json", "--port", &port]);
    let recorder = Agent::start(&[
        "record",
        "--output",
        recording.to_str().unwrap(),
        "--port",
        &port,
    ]);
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    keep_alive_gets(&mut client, &["a.txt", "b.txt", "a.txt"]);
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    let recorder_run = recorder.stop();
    assert!(recorder_run.status.success(), "{}", recorder_run.stderr);
    let live = live.stop();

    // Replay without any privilege: root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN.
    let replay = std::process::Command::new("setpriv")
        .args([
            "--bounding-set",
            "-bpf,-perfmon,-sys_admin",
            support::AGENT,
            "events",
            "--json",
            "--replay",
        ])
        .arg(&recording)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8(replay.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        replayed.iter().any(|e| e["type"] == "accept"),
        "the recording has the exchange"
    );
    assert_eq!(
        without_conn_ids(&replayed),
        without_conn_ids(&live.events())
    );

    if std::env::var_os("WIRESPAN_WRITE_FIXTURES").is_some() {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/http_keepalive.rec"
        );
        std::fs::copy(&recording, fixture).unwrap();
    }
    let _ = std::fs::remove_file(&recording);
}

#[test]
fn privileged_lost_events_are_counted_by_cause_logged_and_totalled() {
    if !require_privileges() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The agent writes into a pipe nobody reads yet: it blocks, the 1 MiB ring buffer fills.
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array for pipe(2); the fds are owned right after.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe(2) succeeded, so both fds are open and owned by nothing else; each is owned
    // exactly once from here on.
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    };
    let agent = Agent::start_with_stdout(
        &[
            "events",
            "--json",
            "--ring-buffer-mib",
            "1",
            "--port",
            &port.to_string(),
        ],
        Stdio::from(write_end),
    );
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let chunk = vec![b'z'; 4096];
    let (writes, mut reads) = (3000, 0u64);
    let mut buf = vec![0; 8192];
    for _ in 0..writes {
        client.write_all(&chunk).unwrap();
        let mut got = 0;
        while got < chunk.len() {
            got += server.read(&mut buf[..chunk.len() - got]).unwrap();
            reads += 1;
        }
    }
    drop(client);
    drop(server);
    // Let the 10 s loss log come due, then let the agent write again.
    std::thread::sleep(Duration::from_secs(11));
    let output = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(read_end).read_to_string(&mut text).unwrap();
        text
    });
    std::thread::sleep(Duration::from_secs(2));
    let stopped = agent.stop();
    // Process starts and exits of other processes are not filtered by port; they are lost and
    // counted apart.
    let seen = output
        .join()
        .unwrap()
        .lines()
        .filter(|l| !l.contains(r#""type":"exec""#) && !l.contains(r#""type":"exit""#))
        .count() as u64;
    let stderr = &stopped.stderr;
    assert!(stopped.status.success(), "{stderr}");
    let periodic = stderr
        .lines()
        .find(|l| l.starts_with("wirespan: lost in kernel so far: "));
    assert!(
        periodic.is_some_and(|l| l.contains("(ring buffer full)")),
        "periodic loss log: {stderr}"
    );
    let total = stderr
        .lines()
        .find(|l| l.starts_with("wirespan: stopped: "))
        .unwrap();
    let lost: u64 = total
        .split("lost in kernel: ")
        .nth(1)
        .and_then(|t| t.split(" (ring buffer full)").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ring-buffer loss count in {total:?}"));
    assert!(lost > 0, "{total}");
    // connect + accept + two closes + every write + every read: each delivered or counted lost.
    assert_eq!(seen + lost, 4 + writes + reads, "{total}");
}
