//! Zipkin's server, the demo's trace UI (Lens: trace search, waterfalls, the dependency graph)
//! and the browser test's backend. It is an executable jar on Maven Central, fetched once into
//! the cache and checked against the SHA-1 Maven Central publishes beside it (pinned here, so
//! a changed file is refused), and run on the machine's Java (17 or newer; Debian's
//! openjdk-17-jre-headless is installed if no `java` runs). In-memory storage, on loopback only.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::setup;

pub const VERSION: &str = "3.5.1";
/// The SHA-1 of `zipkin-server-3.5.1-exec.jar` on Maven Central.
const SHA1: &str = "38091e0934648a5dc884ad17c62cf2f6502f4ff2";
const URL: &str = "https://repo.maven.apache.org/maven2/io/zipkin/zipkin-server/3.5.1/zipkin-server-3.5.1-exec.jar";

/// The jar in the cache, fetched (and checked) the first time, with Java installed if missing.
pub fn jar() -> anyhow::Result<PathBuf> {
    setup::debian_package(
        "openjdk-17-jre-headless",
        Command::new("java").arg("-version"),
    )?;
    let dir = setup::cache_dir().join(format!("zipkin-{VERSION}"));
    let jar = dir.join("zipkin-server-exec.jar");
    if jar.exists() {
        return Ok(jar);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "xtask: fetching Zipkin {VERSION} from Maven Central (once, 125 MiB; cached in {})",
        dir.display()
    );
    let partial = dir.join("download.part");
    let status = Command::new("curl")
        .args(["-sSfL", "--retry", "3", "-o"])
        .arg(&partial)
        .arg(URL)
        .status()
        .context("cannot run curl")?;
    if !status.success() {
        bail!("downloading {URL} failed ({status})");
    }
    let sum = String::from_utf8(
        Command::new("sha1sum")
            .arg(&partial)
            .output()
            .context("cannot run sha1sum")?
            .stdout,
    )?;
    if sum.split_whitespace().next() != Some(SHA1) {
        let _ = std::fs::remove_file(&partial);
        bail!("{URL} does not have the SHA-1 Maven Central publishes ({SHA1}); not used");
    }
    std::fs::rename(&partial, &jar)?;
    Ok(jar)
}

/// The command that runs Zipkin on `127.0.0.1:port` with in-memory storage, logging to `log`.
pub fn command(jar: &Path, port: u16, log: &Path) -> anyhow::Result<Command> {
    let log = std::fs::File::create(log)?;
    let mut cmd = Command::new("java");
    // A small heap: the demo keeps minutes of spans (at most MEM_MAX_SPANS of them).
    cmd.args(["-Xms64m", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-jar"])
        .arg(jar)
        // Loopback only: the whole port entry is replaced, so all three keys are given.
        .arg("--armeria.ports[0].ip=127.0.0.1")
        .arg(format!("--armeria.ports[0].port={port}"))
        .arg("--armeria.ports[0].protocols[0]=http")
        .env("STORAGE_TYPE", "mem")
        .env("MEM_MAX_SPANS", "200000")
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

/// Wait (up to 60 s: a JVM on a busy 2-core machine) until Zipkin on `port` says it is up.
pub fn wait_ready(port: u16, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = super::demo::http_get(&format!("127.0.0.1:{port}"), "/health");
        if health.is_ok_and(|body| body.contains("\"UP\"")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "Zipkin did not come up on port {port}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
