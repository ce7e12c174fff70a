//! Routes read from live Go programs' memory, no BPF: tests/support/routes (net/http ServeMux
//! patterns on a NewServeMux, on DefaultServeMux, on a mux big enough to keep children in a Go
//! map, and a middleware that is no router) with the local Go, Go 1.22 and 1.24, and
//! tests/support/routes_gin (gin v1.12.0), each normal and stripped (`-s -w`: no symbols, no
//! DWARF, so the offsets table and the pclntab). Reads `/proc/PID/mem` of its own children.
//! Needs Go (and the module proxy for the older toolchains, cached after the first run); under
//! `CI=true` anything missing fails the test.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use wirespan::{
    golang::{
        GoBinary,
        routes::{RouteReader, RouteTable, RouteTableError, RouterKind, read_server_routes},
    },
    testing::cannot_run,
};

fn build(dir: &str, toolchain: Option<&str>, stripped: bool) -> Option<PathBuf> {
    build_with(
        dir,
        toolchain,
        if stripped { &["-ldflags=-s -w"] } else { &[] },
    )
}

fn build_with(dir: &str, toolchain: Option<&str>, args: &[&str]) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/support")
        .join(dir);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{dir}-{}{}",
        toolchain.unwrap_or("local"),
        args.concat().replace([' ', '=', '-'], "")
    ));
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .arg("-o")
        .arg(&out)
        .args(args)
        .current_dir(source);
    if let Some(t) = toolchain {
        cmd.env("GOTOOLCHAIN", t);
    }
    cmd.arg(".").status().ok()?.success().then_some(out)
}

/// A running test program and the `*http.Server` addresses it printed, by name.
struct Program {
    child: Child,
    servers: HashMap<String, u64>,
}

impl Program {
    fn start(binary: &Path) -> Self {
        let mut child = Command::new(binary)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut servers = HashMap::new();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines {
            let line = line.unwrap();
            if line == "ready" {
                break;
            }
            let (name, address) = line.split_once(" 0x").expect("NAME 0xADDRESS");
            servers.insert(name.to_owned(), u64::from_str_radix(address, 16).unwrap());
        }
        Self { child, servers }
    }

    fn routes(&self, reader: &RouteReader, name: &str) -> Result<RouteTable, RouteTableError> {
        reader.read(self.child.id(), self.servers[name])
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_mux_program(binary: &Path, what: &str) {
    let program = Program::start(binary);
    let go = GoBinary::open(binary, &[]).unwrap();
    let started = std::time::Instant::now();
    let reader = RouteReader::new(&go);
    let found = started.elapsed();

    let started = std::time::Instant::now();
    let mux = program
        .routes(&reader, "mux")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!(
        "{what}: layouts and functions found in {found:?}, 8 patterns read in {:?}",
        started.elapsed()
    );
    assert_eq!((mux.len(), mux.kind()), (8, RouterKind::ServeMux), "{what}");
    for (method, host, path, route) in [
        ("GET", None, "/items/17", Some("/items/{id}")),
        ("GET", None, "/items/special", Some("/items/special")),
        ("GET", None, "/files/a/b.txt", Some("/files/{path...}")),
        ("GET", None, "/hello/ann", Some("/hello/{name}")),
        ("HEAD", None, "/hello/ann", Some("/hello/{name}")),
        ("POST", None, "/hello/ann", Some("/hello/{name}")),
        ("PUT", None, "/hello/ann", None),
        ("GET", Some("example.com"), "/static/x", Some("/static/")),
        ("GET", None, "/static/x", None),
        ("GET", None, "/", Some("/{$}")),
        ("GET", None, "/docs/a/b", Some("/docs/")),
        ("GET", None, "/nothing", None),
    ] {
        assert_eq!(
            mux.route(method, host, path),
            route,
            "{what}: {method} {path}"
        );
    }

    // A nil handler: DefaultServeMux, from the symbol or, stripped, from serverHandler's code.
    let default = program
        .routes(&reader, "default")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(default.len(), 2, "{what}");
    assert_eq!(
        default.route("GET", None, "/default/7"),
        Some("/default/{id}")
    );
    assert_eq!(
        default.route("POST", None, "/default/submit"),
        Some("/default/submit")
    );

    // Twelve literals under one node: a Go map (swiss table from 1.24, buckets before).
    let big = program
        .routes(&reader, "big")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(big.len(), 12, "{what}");
    assert_eq!(
        big.route("GET", None, "/r11/x"),
        Some("/r11/{id}"),
        "{what}"
    );

    // Middlewares are looked through to the mux they call on to.
    for name in ["wrapped", "middleware"] {
        let table = program
            .routes(&reader, name)
            .unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
        assert_eq!(table, mux, "{what}: {name}");
    }
    match program.routes(&reader, "opaque") {
        Err(RouteTableError::UnknownHandler(name)) => {
            assert_eq!(name, "net/http.HandlerFunc", "{what}");
        }
        other => panic!("{what}: a plain HandlerFunc read as {other:?}"),
    }
    // The one-call form gives the same table.
    let again = read_server_routes(program.child.id(), &go, program.servers["mux"]).unwrap();
    assert_eq!(again, mux);
}

#[test]
fn servemux_patterns_are_read_from_memory_with_each_go_plain_and_stripped() {
    for toolchain in [None, Some("go1.22.12"), Some("go1.24.11")] {
        for stripped in [false, true] {
            let what = format!("{} stripped={stripped}", toolchain.unwrap_or("local Go"));
            let Some(binary) = build("routes", toolchain, stripped) else {
                return cannot_run(&format!("building tests/support/routes with {what} failed"));
            };
            check_mux_program(&binary, &what);
        }
    }
    // A position-independent executable, stripped: code addresses (the itab's method, the
    // DefaultServeMux loads) are found through the load bias from /proc/PID/maps.
    let Some(binary) = build_with("routes", None, &["-buildmode=pie", "-ldflags=-s -w"]) else {
        return cannot_run("building tests/support/routes as a PIE failed");
    };
    check_mux_program(&binary, "PIE stripped");
}

#[test]
fn gin_routes_are_read_from_memory_plain_and_stripped() {
    for stripped in [false, true] {
        let Some(binary) = build("routes_gin", None, stripped) else {
            return cannot_run("building tests/support/routes_gin (gin v1.12.0) failed");
        };
        let program = Program::start(&binary);
        let go = GoBinary::open(&binary, &[]).unwrap();
        let table = read_server_routes(program.child.id(), &go, program.servers["gin"])
            .unwrap_or_else(|e| panic!("stripped={stripped}: {e}"));
        assert_eq!((table.len(), table.kind()), (6, RouterKind::Gin));
        for (method, path, route) in [
            ("GET", "/users/42", Some("/users/:id")),
            ("GET", "/users/new", Some("/users/new")),
            ("GET", "/users/42/cart", Some("/users/:id/cart")),
            ("POST", "/users", Some("/users")),
            ("GET", "/static/css/site.css", Some("/static/*path")),
            ("GET", "/", Some("/")),
            ("DELETE", "/users/42", None),
        ] {
            assert_eq!(
                table.route(method, None, path),
                route,
                "stripped={stripped}: {path}"
            );
        }
    }
}
