//! nghttp2's server, `nghttpd` (Debian's nghttp2-server): HTTP/2 from C (OpenSSL over TLS,
//! or h2c), raw HPACK with no Go runtime to read headers from.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `nghttpd`, killed when dropped.
pub struct Nghttpd(Child);

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `nghttp` and `nghttpd` run; the reason to give when they do not.
pub fn missing() -> Option<&'static str> {
    (Command::new("nghttp").arg("--version").output().is_err()
        || Command::new("nghttpd").arg("--version").output().is_err())
    .then_some("nghttp/nghttpd are not installed (apt-get install nghttp2-client nghttp2-server)")
}

/// nghttpd serving `www` on 127.0.0.1:`port`, over TLS with a certificate made in `tmp`, or
/// plain (h2c), once it listens; None when no certificate could be made.
pub fn start(tmp: &Path, www: &Path, port: &str, tls: bool) -> Option<Nghttpd> {
    let mut nghttpd = Command::new("nghttpd");
    nghttpd.args(["-a", "127.0.0.1", "-d", www.to_str().unwrap(), port]);
    if tls {
        let (key, cert) = (tmp.join("key.pem"), tmp.join("cert.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output();
        if !made.is_ok_and(|o| o.status.success()) {
            return None;
        }
        nghttpd.arg(&key).arg(&cert);
    } else {
        nghttpd.arg("--no-tls");
    }
    let server = Nghttpd(nghttpd.stdout(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        assert!(Instant::now() < deadline, "nghttpd did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}
