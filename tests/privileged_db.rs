//! Privileged (root, a kernel): database calls are client spans under the request that made
//! them (issue 21). Real Redis, PostgreSQL and MariaDB servers run on loopback ports in
//! temporary directories (`support::db_servers`); examples/db-shop (Go: go-redis, pgx,
//! go-sql-driver/mysql) serves `/redis`, `/pg` and `/mysql`, and tests/support/db_clients.py
//! (Python's thread-per-request `ThreadingHTTPServer`: psycopg, redis-py) serves `/py`.
//!
//! Each request is one trace: its server span and, under it, a client span per command or
//! statement, named per the database semantic conventions (`SET`, `SELECT orders`), with
//! `db.system.name`, `db.namespace`, sanitized `db.query.text` (literals become `?`),
//! `db.response.status_code` on the calls that fail (`WRONGTYPE`, SQLSTATE `42P01`, MySQL
//! `1146`), `server.address` and `server.port`. No span carries a value the programs wrote
//! (each contains `db-shop-secret`). The checks go in two steps: first where the spans are
//! (every call under its request's server span, whatever its name: without a decoder a call is
//! a `tcp <address>` span), then what the decoders make of them.

mod support;

use std::{collections::BTreeMap, path::Path, process::Command, time::Instant};

use serde_json::Value;
use support::{
    Listening,
    db_servers::{DATABASE, DbServers, Server},
    http_get, python_module, require_privileges,
    span_run::{Run, agent_to_file, attr},
};
use wirespan::testing::cannot_run;

const REQUESTS: usize = 3;
/// In every value the programs write.
const SECRET: &str = "db-shop-secret";

struct Services {
    db: DbServers,
    shop: Listening,
    py: Listening,
}

/// The database servers, db-shop (built meanwhile) and the Python server; None (after
/// `cannot_run`) when one of them cannot be had.
fn services() -> Option<Services> {
    let build = std::thread::spawn(|| support::go_build("examples/db-shop", "db-shop"));
    let db = match DbServers::start() {
        Ok(db) => db,
        Err(e) => {
            cannot_run(&format!("database servers: {e}"));
            return None;
        }
    };
    let Some(shop_bin) = build.join().unwrap() else {
        cannot_run("cannot build examples/db-shop");
        return None;
    };
    for (module, package) in [("psycopg", "psycopg[binary]"), ("redis", "redis")] {
        if let Err(e) = python_module(module, package) {
            cannot_run(&e);
            return None;
        }
    }
    let shop = Listening::start(
        Command::new(shop_bin)
            .env("OTEL_SERVICE_NAME", "db-shop")
            .args(["-redis", &db.redis.addr()])
            .args(["-pg", &db.postgres_url()])
            .args(["-mysql", &db.mysql_dsn()]),
    );
    assert!(!shop.addr.is_empty(), "db-shop exited at start");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/db_clients.py");
    let py = Listening::start(
        Command::new("python3")
            .arg(script)
            .arg(db.redis.addr())
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname={DATABASE}",
                db.postgres.port
            ))
            .env("OTEL_SERVICE_NAME", "db-py"),
    );
    assert!(!py.addr.is_empty(), "db_clients.py exited at start");
    Some(Services { db, shop, py })
}

/// `REQUESTS` requests to each handler, each answered 200.
fn drive(services: &Services) {
    let targets = [
        (&services.shop, "/redis"),
        (&services.shop, "/pg"),
        (&services.shop, "/mysql"),
        (&services.py, "/py"),
    ];
    for (server, path) in targets {
        for _ in 0..REQUESTS {
            let (status, body) = http_get(&server.addr, path, "");
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
}

fn to_port(span: &Value, port: u16) -> bool {
    span["kind"] == 3 && attr(span, "server.port") == Some(port.to_string())
}

/// The client spans of `service` to `db`'s port under each of its `REQUESTS` server spans of
/// `path`: each request's calls, in start order, at least one.
fn calls_per_request<'a>(
    run: &'a Run,
    service: &str,
    path: &str,
    db: &Server,
) -> Vec<Vec<&'a Value>> {
    let servers = run.find(service, 2, path);
    assert_eq!(
        servers.len(),
        REQUESTS,
        "{service} {path}:\n{}",
        run.describe()
    );
    servers
        .iter()
        .map(|server| {
            let mut calls: Vec<&Value> = run
                .spans
                .iter()
                .filter(|(s, span)| {
                    s == service
                        && to_port(span, db.port)
                        && span["parentSpanId"] == server["spanId"]
                })
                .map(|(_, span)| span)
                .collect();
            calls.sort_by_key(|span| {
                span["startTimeUnixNano"]
                    .as_str()
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0)
            });
            assert!(
                !calls.is_empty(),
                "no call to {} under {service}'s {}:\n{}",
                db.name,
                server["name"],
                run.describe()
            );
            calls
        })
        .collect()
}

/// Every client span of `service` to `db`'s port sits under a server span of `path` of
/// `service`, in its trace: none is left without its request.
fn expect_all_under(run: &Run, service: &str, path: &str, db: &Server) {
    for (s, span) in &run.spans {
        if s == service && to_port(span, db.port) {
            let parent = run.expect_parent(span, service, 2);
            assert!(
                attr(parent, "url.path").is_some_and(|p| p == path),
                "{service}'s call to {} {} is under {}, not a server span of {path}:\n{}",
                db.name,
                span["name"],
                parent["name"],
                run.describe()
            );
        }
    }
}

fn names(calls: &[&Value]) -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    for call in calls {
        *names
            .entry(call["name"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    names
}

/// One request's calls hold at least `count` spans of each `name`; every call is of `systems`
/// (the first when decoded, another where the server tells: MariaDB), of `namespace` if
/// given, at `db`.
fn check_calls(
    calls: &[&Value],
    expected: &[(&str, usize)],
    systems: &[&str],
    namespace: Option<&str>,
    db: &Server,
) {
    let seen = names(calls);
    for (name, count) in expected {
        assert!(
            seen.get(*name).copied().unwrap_or(0) >= *count,
            "{count} × {name:?} expected among one request's calls to {}: {seen:?}",
            db.name
        );
    }
    for call in calls {
        let system = attr(call, "db.system.name");
        assert!(
            system.as_deref().is_some_and(|s| systems.contains(&s)),
            "db.system.name {system:?}, not one of {systems:?}: {call:#}"
        );
        if let Some(namespace) = namespace {
            assert_eq!(
                attr(call, "db.namespace").as_deref(),
                Some(namespace),
                "{call:#}"
            );
        }
        assert_eq!(
            attr(call, "server.address").as_deref(),
            Some("127.0.0.1"),
            "{call:#}"
        );
        assert_eq!(
            attr(call, "server.port"),
            Some(db.port.to_string()),
            "{call:#}"
        );
        let name = call["name"].as_str().unwrap_or_default();
        if let Some((operation, collection)) = name.split_once(' ') {
            assert_eq!(
                attr(call, "db.operation.name").as_deref(),
                Some(operation),
                "{call:#}"
            );
            assert_eq!(
                attr(call, "db.collection.name").as_deref(),
                Some(collection),
                "{call:#}"
            );
        }
    }
}

/// A call named `name` whose sanitized `db.query.text` is `text`.
fn expect_text(calls: &[&Value], name: &str, text: &str) {
    assert!(
        calls
            .iter()
            .any(|c| c["name"] == name && attr(c, "db.query.text").as_deref() == Some(text)),
        "no {name:?} call with db.query.text {text:?}: {:#?}",
        calls
            .iter()
            .map(|c| (c["name"].as_str(), attr(c, "db.query.text")))
            .collect::<Vec<_>>()
    );
}

/// A failed call named `name` with `db.response.status_code` `code`, its status an error.
fn expect_failure(calls: &[&Value], name: &str, code: &str) {
    let call = calls
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name:?} call among {:?}", names(calls)));
    assert_eq!(
        attr(call, "db.response.status_code").as_deref(),
        Some(code),
        "{call:#}"
    );
    assert_eq!(
        call["status"]["code"], 2,
        "a failed call's status is an error: {call:#}"
    );
}

/// db-shop's calls, one request's at a time, as the decoders name them.
fn check_go(db: &DbServers, redis: &[Vec<&Value>], pg: &[Vec<&Value>], mysql: &[Vec<&Value>]) {
    for calls in redis {
        let expected = [
            ("SET", 1),
            ("GET", 1),
            ("HSET", 1),
            ("HGET", 1),
            ("DEL", 1),
            ("LPUSH", 1),
        ];
        check_calls(calls, &expected, &["redis"], None, &db.redis);
        // One `?` per argument: keys and values alike.
        expect_text(calls, "SET", "SET ? ?");
        expect_text(calls, "GET", "GET ?");
        expect_text(calls, "HSET", "HSET ? ? ?");
        expect_text(calls, "LPUSH", "LPUSH ? ?");
        expect_failure(calls, "LPUSH", "WRONGTYPE");
    }
    for calls in pg {
        // pgx prepares a statement (Parse, Describe, Sync) before it executes it: a missing
        // table fails there, so the failed call is the prepare, named for its statement.
        let expected = [
            ("SELECT orders", 2),
            ("INSERT orders", 2),
            ("PREPARE missing_orders", 1),
        ];
        check_calls(
            calls,
            &expected,
            &["postgresql"],
            Some(DATABASE),
            &db.postgres,
        );
        expect_text(
            calls,
            "SELECT orders",
            "SELECT id, item FROM orders WHERE id = ?",
        );
        expect_text(
            calls,
            "SELECT orders",
            "SELECT item FROM orders WHERE id = $1",
        );
        expect_text(
            calls,
            "INSERT orders",
            "INSERT INTO orders (item) VALUES (?)",
        );
        expect_text(
            calls,
            "INSERT orders",
            "INSERT INTO orders (item) VALUES ($1)",
        );
        expect_failure(calls, "PREPARE missing_orders", "42P01");
    }
    for calls in mysql {
        let expected = [
            ("SELECT users", 2),
            ("INSERT users", 1),
            ("SELECT missing_users", 1),
        ];
        check_calls(
            calls,
            &expected,
            &["mysql", "mariadb"],
            Some(DATABASE),
            &db.mariadb,
        );
        expect_text(
            calls,
            "SELECT users",
            "SELECT id, name FROM users WHERE id = ?",
        );
        expect_text(calls, "SELECT users", "SELECT name FROM users WHERE id = ?");
        expect_text(calls, "INSERT users", "INSERT INTO users (name) VALUES (?)");
        expect_failure(calls, "SELECT missing_users", "1146");
    }
}

/// db_clients.py's calls, one request's at a time, as the decoders name them.
fn check_py(db: &DbServers, py_pg: &[Vec<&Value>], py_redis: &[Vec<&Value>]) {
    for calls in py_pg {
        check_calls(
            calls,
            &[("SELECT orders", 2)],
            &["postgresql"],
            Some(DATABASE),
            &db.postgres,
        );
        expect_text(
            calls,
            "SELECT orders",
            "SELECT item FROM orders WHERE id = ?",
        );
        expect_text(
            calls,
            "SELECT orders",
            "SELECT item FROM orders WHERE id = $1",
        );
    }
    for calls in py_redis {
        check_calls(
            calls,
            &[("SET", 1), ("GET", 1)],
            &["redis"],
            None,
            &db.redis,
        );
    }
}

#[test]
fn privileged_db_calls_are_spans_under_the_request_that_made_them() {
    if !require_privileges() {
        return;
    }
    let started = Instant::now();
    let Some(services) = services() else {
        return;
    };
    let db = &services.db;
    eprintln!(
        "servers, db-shop and db-py up after {:?}",
        started.elapsed()
    );
    let file = std::env::temp_dir().join("wirespan-db.jsonl");
    let ports = [
        services.shop.port(),
        services.py.port(),
        db.redis.port.to_string(),
        db.postgres.port.to_string(),
        db.mariadb.port.to_string(),
    ];
    let recording = std::env::temp_dir().join("wirespan-db.rec");
    let recorder = start_recorder(&recording, &ports);
    let agent = agent_to_file(&file, &ports.iter().map(String::as_str).collect::<Vec<_>>());
    drive(&services);
    agent.stop();
    if let Some(recorder) = recorder {
        save_fixture(recorder, &recording);
    }
    eprintln!("requests done, agent stopped after {:?}", started.elapsed());
    let run = Run::read(&file);

    // Where the spans are, decoded or not.
    let redis = calls_per_request(&run, "db-shop", "/redis", &db.redis);
    let pg = calls_per_request(&run, "db-shop", "/pg", &db.postgres);
    let mysql = calls_per_request(&run, "db-shop", "/mysql", &db.mariadb);
    let py_pg = calls_per_request(&run, "db-py", "/py", &db.postgres);
    let py_redis = calls_per_request(&run, "db-py", "/py", &db.redis);
    for (what, calls) in [
        ("/redis", &redis),
        ("/pg", &pg),
        ("/mysql", &mysql),
        ("/py pg", &py_pg),
        ("/py redis", &py_redis),
    ] {
        eprintln!(
            "{what}: calls per request: {:?}",
            calls.iter().map(|c| names(c)).collect::<Vec<_>>()
        );
    }
    expect_all_under(&run, "db-shop", "/redis", &db.redis);
    expect_all_under(&run, "db-shop", "/pg", &db.postgres);
    expect_all_under(&run, "db-shop", "/mysql", &db.mariadb);
    expect_all_under(&run, "db-py", "/py", &db.postgres);
    expect_all_under(&run, "db-py", "/py", &db.redis);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(SECRET),
        "a span carries a value the programs wrote ({SECRET}...)"
    );

    // What the decoders make of them.
    check_go(db, &redis, &pg, &mysql);
    check_py(db, &py_pg, &py_redis);
    eprintln!("checked after {:?}", started.elapsed());
}

/// With WIRESPAN_RECORD_FIXTURES set, `wirespan record` on the same ports for the whole run
/// (started first, so it sees every connection open); `save_fixture` writes it to
/// tests/fixtures/db_shop.rec, replayed, unprivileged, by tests/protocol_golden.rs and
/// tests/span_golden.rs.
fn start_recorder(recording: &Path, ports: &[String]) -> Option<support::Agent> {
    std::env::var_os("WIRESPAN_RECORD_FIXTURES")?;
    let mut args = vec!["record", "--output", recording.to_str().unwrap()];
    for port in ports {
        args.extend(["--port", port.as_str()]);
    }
    Some(support::Agent::start(&args))
}

fn save_fixture(recorder: support::Agent, recording: &Path) {
    let stopped = recorder.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/db_shop.rec");
    std::fs::copy(recording, fixture).unwrap();
    let _ = std::fs::remove_file(recording);
    eprintln!(
        "recorded {fixture}: {} bytes",
        std::fs::metadata(fixture).unwrap().len()
    );
}
