//! Real database servers for the database-span tests, from Debian's packages (`cargo xtask
//! setup` installs `redis-server`, `postgresql` and `mariadb-server`): each listens on a free
//! loopback port, keeps its data in a temporary directory of its own and is stopped (and its
//! directory removed) when dropped. Debian's packages may also start system services on the
//! default ports; these servers never use those ports.
//!
//! - Redis: no persistence.
//! - PostgreSQL: `initdb` with trust authentication, run as the `postgres` user (PostgreSQL
//!   refuses to run as root), its socket in the temporary directory; database `shop` with a
//!   table `orders (id serial, item text)` holding row 1.
//! - MariaDB: `mariadb-install-db`, then `mariadbd --skip-grant-tables` (any user, no
//!   password); schema `shop` with a table `users (id int auto_increment, name text)` holding
//!   row 1.
//!
//! `DbServers::start` starts the three at once (a few seconds, most of it MariaDB's install).

use std::{
    fs::File,
    io::Read,
    net::TcpListener,
    os::unix::fs::chown,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a server has to start answering.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The PostgreSQL database and MySQL schema the servers hold.
pub const DATABASE: &str = "shop";

/// One running server.
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    dir: PathBuf,
    /// The signal that stops it quickly (it holds nothing worth keeping).
    stop_signal: i32,
}

impl Server {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed so far (its log file), for error messages.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.child.id().cast_signed(), self.stop_signal) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Redis, PostgreSQL and MariaDB, each on its own loopback port.
pub struct DbServers {
    pub redis: Server,
    pub postgres: Server,
    pub mariadb: Server,
}

impl DbServers {
    /// Start the three in parallel; what failed (and what to install) when one does not start.
    pub fn start() -> Result<Self, String> {
        let redis = std::thread::spawn(start_redis);
        let postgres = std::thread::spawn(start_postgres);
        let mariadb = std::thread::spawn(start_mariadb);
        let redis = redis.join().expect("redis start thread");
        let postgres = postgres.join().expect("postgres start thread");
        let mariadb = mariadb.join().expect("mariadb start thread");
        Ok(Self {
            redis: redis?,
            postgres: postgres?,
            mariadb: mariadb?,
        })
    }

    /// pgx's URL of the `shop` database (user `postgres`, trust authentication).
    pub fn postgres_url(&self) -> String {
        format!(
            "postgres://postgres@{}/{DATABASE}?sslmode=disable",
            self.postgres.addr()
        )
    }

    /// go-sql-driver/mysql's DSN of the `shop` schema.
    pub fn mysql_dsn(&self) -> String {
        format!("root@tcp({})/{DATABASE}", self.mariadb.addr())
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A fresh temporary directory for `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wirespan-{name}-{}-{}",
        std::process::id(),
        super::gettid()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make a temporary directory");
    dir
}

fn read_log(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(dir.join("server.log")) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Spawn `command` with its output into `dir/server.log`.
fn spawn_logged(command: &mut Command, dir: &Path, what: &str) -> Result<Child, String> {
    let log = File::create(dir.join("server.log")).map_err(|e| format!("{what}: log: {e}"))?;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{what} cannot start ({e})"))
}

/// Run `command` to completion; its output when it fails.
fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what} cannot run ({e})"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{what} failed ({}): {}", out.status, text.trim()))
    }
}

/// Retry `probe` until it succeeds, the server exits, or `READY_WITHIN` passes.
fn wait_ready(
    server: &mut Server,
    mut probe: impl FnMut() -> Result<String, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let Err(last) = probe() else {
            return Ok(());
        };
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before it answered; its log:\n{}",
                server.name,
                server.log()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer within {READY_WITHIN:?} ({last}); its log:\n{}",
                server.name,
                server.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_redis() -> Result<Server, String> {
    let dir = scratch("redis");
    let port = free_port();
    let child = spawn_logged(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir),
        &dir,
        "redis-server (install Debian's redis-server)",
    )?;
    let mut server = Server {
        name: "redis-server",
        port,
        child,
        dir,
        stop_signal: libc::SIGTERM,
    };
    wait_ready(&mut server, || {
        let reply = run(
            Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"]),
            "redis-cli PING",
        )?;
        if reply.contains("PONG") {
            Ok(reply)
        } else {
            Err(reply)
        }
    })?;
    Ok(server)
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no /usr/lib/postgresql ({e}): install Debian's postgresql"))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL server in /usr/lib/postgresql: install postgresql".into())
}

/// `program` run as the `postgres` user when this process is root (PostgreSQL refuses root),
/// as this process's user otherwise.
fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
    command
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        run(Command::new("id").args([flag, "postgres"]), "id postgres")?
            .trim()
            .parse()
            .map_err(|e| format!("id {flag} postgres: {e}"))
    };
    Ok((id("-u")?, id("-g")?))
}

fn start_postgres() -> Result<Server, String> {
    let bin = postgres_bin()?;
    let dir = scratch("postgres");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = postgres_ids()?;
        chown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    run(
        as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync"]),
        "initdb",
    )?;
    let port = free_port();
    let child = spawn_logged(
        as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            .arg("-k")
            .arg(&dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"]),
        &dir,
        "postgres",
    )?;
    let mut server = Server {
        name: "postgres",
        port,
        child,
        dir,
        // Immediate shutdown: the data is thrown away.
        stop_signal: libc::SIGQUIT,
    };
    let psql = |database: &str, sql: &str| {
        run(
            Command::new(bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql]),
            "psql",
        )
    };
    wait_ready(&mut server, || psql("postgres", "SELECT 1"))?;
    psql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
    psql(
        DATABASE,
        "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL); \
         INSERT INTO orders (item) VALUES ('widget')",
    )?;
    Ok(server)
}

fn start_mariadb() -> Result<Server, String> {
    let dir = scratch("mariadb");
    let data = dir.join("data");
    run(
        Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--auth-root-authentication-method=normal"])
            .args(["--skip-test-db", "--skip-name-resolve"]),
        "mariadb-install-db (install Debian's mariadb-server)",
    )?;
    let port = free_port();
    let child = spawn_logged(
        Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--user=root"])
            .args([
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--skip-log-bin",
            ])
            .args([
                "--innodb-buffer-pool-size=32M",
                "--innodb-flush-log-at-trx-commit=0",
            ]),
        &dir,
        "mariadbd (install Debian's mariadb-server)",
    )?;
    let mut server = Server {
        name: "mariadbd",
        port,
        child,
        dir,
        // The data is thrown away: no clean shutdown needed.
        stop_signal: libc::SIGKILL,
    };
    let sql = |statements: &str| {
        run(
            Command::new("mariadb")
                .arg("--no-defaults")
                .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "root"])
                .args(["-e", statements]),
            "mariadb",
        )
    };
    wait_ready(&mut server, || sql("SELECT 1"))?;
    sql(&format!(
        "CREATE DATABASE {DATABASE}; \
         CREATE TABLE {DATABASE}.users (id INT AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL); \
         INSERT INTO {DATABASE}.users (name) VALUES ('ada')"
    ))?;
    Ok(server)
}
