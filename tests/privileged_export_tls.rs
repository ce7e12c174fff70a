//! Privileged end to end (needs root, a kernel, Python, openssl and the Jaeger binary that
//! `cargo xtask test` builds): OTLP over TLS to a backend that requires a client certificate
//! (mutual TLS) and a password (the Collector's `basicauth` extension, which this Jaeger build
//! includes; it has no bearer-token authenticator).
//!
//! The test makes its own CA, a server certificate for 127.0.0.1 and a client certificate with
//! openssl, and runs Jaeger with both OTLP receivers (gRPC and HTTP) on TLS, asking for client
//! certificates from that CA and for basic authentication. For each protocol the agent exports
//! a traced request (its `traceparent` chosen here, so its trace id is known) and the trace must
//! show in Jaeger's query API. gRPC takes its settings from the standard variables, HTTP from
//! the flags. Then the failures: without a client certificate the handshake is refused, and
//! with a wrong password the export is; either way the agent says why in its log, counts the
//! spans as dropped (export failed), and stops within its close grace instead of retrying. A
//! CA file that is not PEM stops the agent at start, naming the file and the variable.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{
    Agent, HttpServer, http_get,
    jaeger::{AllInOnePorts, Backend, has_trace, jaeger_binary},
    require_privileges,
};
use wirespan::testing::cannot_run;

const USER: &str = "wirespan";
const PASSWORD: &str = "s3cret-for-tls-test";

/// The test's CA and the certificates it signed.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn make() -> Result<Self, String> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("export-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pki = Self { dir };
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&pki.dir)
                .output()
                .map_err(|e| format!("the openssl command cannot run: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=wirespan test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        )?;
        for (name, subject, usage) in [
            (
                "server",
                "/CN=localhost",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=wirespan-agent",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let ext = format!("{name}.ext");
            std::fs::write(
                pki.path(&ext),
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{usage}"),
            )
            .map_err(|e| e.to_string())?;
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &["-subj", subject, "-keyout", &key, "-out", &csr],
                ]
                .concat(),
            )?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-days",
                "2",
                "-set_serial",
                &format!("{}", std::process::id()),
                "-extfile",
                &ext,
                "-out",
                &pem,
            ])?;
        }
        std::fs::write(pki.path("not-pem.txt"), "this is not a certificate\n")
            .map_err(|e| e.to_string())?;
        Ok(pki)
    }
}

/// Jaeger all-in-one whose OTLP receivers require TLS with a client certificate from the test's
/// CA, and basic authentication.
fn start_jaeger(binary: &Path, pki: &Pki, ports: &AllInOnePorts) -> Backend {
    let tls = format!(
        "        tls:\n          cert_file: {}\n          key_file: {}\n          client_ca_file: {}\n        auth:\n          authenticator: basicauth/server\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
        pki.path("ca.pem").display(),
    );
    let config = format!(
        "service:
  extensions: [jaeger_storage, jaeger_query, basicauth/server]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
  telemetry:
    metrics:
      level: none
extensions:
  basicauth/server:
    htpasswd:
      inline: |
        {USER}:{PASSWORD}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
{tls}      http:
        endpoint: 127.0.0.1:{http}
{tls}processors:
  batch: {{}}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
  prometheus:
    endpoint: 127.0.0.1:{prometheus}
",
        query_http = ports.query_http,
        query_grpc = ports.query_grpc,
        grpc = ports.otlp_grpc,
        http = ports.otlp_http,
        prometheus = ports.prometheus,
    );
    let path = pki.path("jaeger-tls.yaml");
    std::fs::write(&path, config).unwrap();
    // Jaeger's query API traces itself to localhost:4317, where nothing listens, and its stop
    // waits 10 s on that export: it makes no spans to export with the sampler off.
    let quiet = [("OTEL_TRACES_SAMPLER", "always_off".to_owned())];
    let jaeger = Backend::start("jaeger-tls", binary, &path, &quiet, ports.query_http);
    for port in [ports.otlp_grpc, ports.otlp_http] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "jaeger's OTLP receiver did not listen on {port}:\n{}",
                jaeger.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    jaeger
}

/// How the agent is set up for one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// CA, client certificate and key, and the right password.
    Full,
    /// CA and the right password, no client certificate.
    NoClientCertificate,
    /// CA, client certificate and key, a wrong password.
    WrongPassword,
}

/// Basic authentication as an `OTEL_EXPORTER_OTLP_HEADERS` value (percent-encoded space).
fn authorization(password: &str) -> String {
    let token = base64(format!("{USER}:{password}").as_bytes());
    format!("authorization=Basic%20{token}")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Run the agent against the TLS Jaeger over `protocol` set up as `setup`, make one traced
/// request, stop the agent; the trace id and what the agent printed.
fn run_case(
    pki: &Pki,
    ports: &AllInOnePorts,
    protocol: &str,
    setup: Setup,
    case: u32,
) -> (String, support::Stopped, Duration) {
    let server = HttpServer::start("127.0.0.1", &[("a.txt", b"hello")]);
    let port = if protocol == "grpc" {
        ports.otlp_grpc
    } else {
        ports.otlp_http
    };
    let endpoint = format!("https://127.0.0.1:{port}");
    let server_port = server.port.to_string();
    let password = if setup == Setup::WrongPassword {
        "wrong-password"
    } else {
        PASSWORD
    };
    let headers = authorization(password);
    let paths = [
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    ]
    .map(|p| p.to_str().unwrap().to_owned());
    let with_client = setup != Setup::NoClientCertificate;
    let mut args = vec![
        "run",
        "--exporter",
        "otlp",
        "--otlp-protocol",
        protocol,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-timeout",
        "3",
        "--port",
        &server_port,
    ];
    let mut env: Vec<(&str, &str)> = Vec::new();
    if protocol == "grpc" {
        // The standard variables, as a deployment sets them.
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", &paths[0]));
        env.push(("OTEL_EXPORTER_OTLP_HEADERS", &headers));
        if with_client {
            env.push(("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &paths[1]));
            env.push(("OTEL_EXPORTER_OTLP_CLIENT_KEY", &paths[2]));
        }
    } else {
        args.extend(["--otlp-certificate", &paths[0], "--otlp-headers", &headers]);
        if with_client {
            args.extend([
                "--otlp-client-certificate",
                &paths[1],
                "--otlp-client-key",
                &paths[2],
            ]);
        }
    }
    let agent = Agent::start_with_env(&args, Stdio::piped(), &env);
    let trace = format!("{:08x}{case:08x}{:016x}", std::process::id(), 0x7115_u64);
    let header = format!(
        "traceparent: 00-{trace}-{:016x}-01\r\n",
        u64::from(case) + 1
    );
    assert_eq!(
        http_get(&format!("127.0.0.1:{}", server.port), "/a.txt", &header),
        (200, "hello".into())
    );
    if setup == Setup::Full {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !has_trace(&ports.query(), &trace) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
        }
    } else {
        // Past the export thread's batch delay: the batch is tried before the stop.
        std::thread::sleep(Duration::from_secs(2));
    }
    let stopping = Instant::now();
    let stopped = agent.stop();
    (trace, stopped, stopping.elapsed())
}

/// The (exported, dropped because the export failed) counts of the agent's otlp summary line.
fn summary(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("spans exported"))
        .unwrap_or_else(|| panic!("no otlp summary:\n{stderr}"));
    let number_before = |marker: &str| -> u64 {
        let head = &line[..line.find(marker).unwrap()];
        head.rsplit([' ', ':', ','])
            .find(|w| !w.is_empty())
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        number_before(" spans exported"),
        number_before(" dropped (export failed)"),
    )
}

#[test]
fn privileged_export_tls_mutual_tls_and_basic_auth_to_jaeger_over_both_protocols() {
    if !require_privileges() {
        return;
    }
    let Some(binary) = jaeger_binary() else {
        return cannot_run("no Jaeger binary: run through `cargo xtask test`, which builds it");
    };
    let pki = match Pki::make() {
        Ok(pki) => pki,
        Err(e) => return cannot_run(&e),
    };

    // A CA file that is not PEM: the agent refuses to start and says which file and variable.
    let not_pem = pki.path("not-pem.txt");
    let printed = Agent::try_start(
        &[
            "run",
            "--exporter",
            "otlp",
            "--otlp-protocol",
            "grpc",
            "--otlp-endpoint",
            "https://127.0.0.1:1",
        ],
        Stdio::piped(),
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", not_pem.to_str().unwrap())],
    )
    .err()
    .expect("the agent must not start with a CA file that holds no certificate");
    assert!(
        printed.contains("not-pem.txt") && printed.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        "{printed}"
    );

    let ports = AllInOnePorts::free();
    let jaeger = start_jaeger(&binary, &pki, &ports);
    let mut case = 0;
    for protocol in ["grpc", "http/protobuf"] {
        for setup in [
            Setup::Full,
            Setup::NoClientCertificate,
            Setup::WrongPassword,
        ] {
            case += 1;
            let (trace, stopped, stop_took) = run_case(&pki, &ports, protocol, setup, case);
            let what = format!("{protocol}, {setup:?}");
            let (exported, failed) = summary(&stopped.stderr);
            assert!(stopped.status.success(), "{what}: {}", stopped.stderr);
            match setup {
                Setup::Full => {
                    assert!(
                        has_trace(&ports.query(), &trace),
                        "{what}: trace {trace} is not in Jaeger\nagent:\n{}\njaeger:\n{}",
                        stopped.stderr,
                        jaeger.log_text()
                    );
                    assert!(exported > 0 && failed == 0, "{what}: {}", stopped.stderr);
                }
                Setup::NoClientCertificate | Setup::WrongPassword => {
                    let hint = if setup == Setup::WrongPassword {
                        "refused the credentials"
                    } else {
                        "TLS handshake failed on a certificate"
                    };
                    assert!(
                        stopped.stderr.contains("otlp export failed")
                            && stopped.stderr.contains(hint),
                        "{what}: no clear error ({hint}):\n{}",
                        stopped.stderr
                    );
                    assert!(
                        !stopped.stderr.contains("otlp export failing"),
                        "{what}: a refusal must not be retried:\n{}",
                        stopped.stderr
                    );
                    assert!(
                        exported == 0 && failed > 0,
                        "{what}: spans must be counted as dropped (export failed):\n{}",
                        stopped.stderr
                    );
                    assert!(!has_trace(&ports.query(), &trace), "{what}: {trace} got in");
                }
            }
            // The agent stops in about 5 s here (probes detached, the last batch exported); a
            // batch still retried would add the close grace (5 s) and more.
            assert!(
                stop_took < Duration::from_secs(15),
                "{what}: the agent took {stop_took:?} to stop:\n{}",
                stopped.stderr
            );
            eprintln!(
                "{what}: ok ({exported} exported, {failed} dropped, stopped in {stop_took:.1?})"
            );
            for line in stopped.stderr.lines().filter(|l| l.contains("export")) {
                eprintln!("    {line}");
            }
        }
    }
    drop(jaeger);
    let _ = std::fs::remove_dir_all(&pki.dir);
}
