//! TLS helpers of the privileged tests: a self-signed certificate made once per test binary,
//! curl (OpenSSL) trusting it, and the HTTPS servers the tests trace (Python's `ssl`, which is
//! OpenSSL, and examples/http-hello over Go's crypto/tls).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use super::Listening;

/// The tests run agents that watch each other's ports; one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A self-signed certificate for localhost, 127.0.0.1 and ::1 (also its own CA), and a directory
/// the Python server serves.
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub www: PathBuf,
}

pub fn certs() -> Result<&'static Certs, String> {
    static CERTS: OnceLock<Result<Certs, String>> = OnceLock::new();
    CERTS
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-certs");
            let www = dir.join("www");
            std::fs::create_dir_all(&www).map_err(|e| e.to_string())?;
            std::fs::write(www.join("hello.txt"), "hello over tls\n").map_err(|e| e.to_string())?;
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let made = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=localhost"])
                .args([
                    "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .map_err(|e| format!("the openssl command cannot run: {e}"))?;
            if !made.status.success() {
                return Err(format!(
                    "openssl req failed: {}",
                    String::from_utf8_lossy(&made.stderr)
                ));
            }
            Ok(Certs { cert, key, www })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `curl` (OpenSSL) GET of `url` trusting the test's certificate: (status, body).
pub fn curl(certs: &Certs, http_version: &str, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", http_version, "--cacert"])
        .arg(&certs.cert)
        .args(["-w", "\n%{http_code}", url])
        .env("OTEL_SERVICE_NAME", "curl-client")
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The Python HTTPS server (OpenSSL), named `service`; `/via/` calls out over HTTPS.
pub fn python_https(certs: &Certs, service: &str) -> Listening {
    Listening::start(&mut python_https_command(certs, service))
}

/// The command `python_https` starts, to add environment to.
pub fn python_https_command(certs: &Certs, service: &str) -> Command {
    let mut command = super::python_server(&certs.www);
    command
        .env("HTTPS_CERT", &certs.cert)
        .env("HTTPS_KEY", &certs.key)
        .env("HTTPS_CA", &certs.cert)
        .env("OTEL_SERVICE_NAME", service);
    command
}

/// examples/http-hello serving HTTPS and calling out over HTTPS, named `service`.
pub fn go_https(binary: &Path, certs: &Certs, service: &str, extra: &[&str]) -> Listening {
    Listening::start(
        Command::new(binary)
            .arg("-tls-cert")
            .arg(&certs.cert)
            .arg("-tls-key")
            .arg(&certs.key)
            .arg("-tls-ca")
            .arg(&certs.cert)
            .args(extra)
            .env("OTEL_SERVICE_NAME", service),
    )
}
