//! TLS for the OTLP exporters, both protocols: which CA the backend's certificate must chain
//! to, and the client certificate and key that mutual TLS asks for. The files come from the
//! flags or the standard variables (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE`,
//! `_CLIENT_KEY`, each also in its `_TRACES_` or `_METRICS_` form, which wins over the general
//! one), and are read and checked once at start: a file that cannot be read, holds no PEM
//! certificate or key, or a key that does not go with its certificate stops the agent with the
//! file and the flag or variable named, rather than failing every export later.
//!
//! Without a CA file an `https://` endpoint is checked against the system's roots (Debian:
//! /etc/ssl/certs), so a backend with a public certificate needs no configuration. One rustls
//! configuration (ring, no aws-lc build) serves the HTTP client; tonic gets the same roots and
//! identity, and adds its own HTTP/2 ALPN.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Once},
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};

use super::otlp::Protocol;

/// Which signal's variables apply (`OTEL_EXPORTER_OTLP_TRACES_*` or `..._METRICS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn var(self, name: &str) -> String {
        let signal = match self {
            Self::Traces => "TRACES",
            Self::Metrics => "METRICS",
        };
        format!("OTEL_EXPORTER_OTLP_{signal}_{name}")
    }
}

/// What the flags said; each None falls back to the variables.
#[derive(Debug, Clone, Default)]
pub struct TlsFlags {
    pub certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path} (from {from}): {source}; give a readable PEM file")]
    Read {
        path: PathBuf,
        from: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} (from {from}) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf, from: String },
    #[error("{path} (from {from}) holds a certificate that cannot be used: {reason}")]
    BadCertificate {
        path: PathBuf,
        from: String,
        reason: String,
    },
    #[error(
        "{path} (from {from}) holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {reason}"
    )]
    NoKey {
        path: PathBuf,
        from: String,
        reason: String,
    },
    #[error(
        "a client certificate needs its key and a key its certificate: {given} is set, {missing} is not"
    )]
    Unpaired { given: String, missing: String },
    #[error("the client certificate {cert} and the key {key} cannot be used together: {reason}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error(
        "no trusted CA certificates for {endpoint}: the system has none ({detail}); give the backend's CA with --otlp-certificate or OTEL_EXPORTER_OTLP_CERTIFICATE"
    )]
    NoRoots { endpoint: String, detail: String },
}

/// A file and the flag or variable that named it (said in every error about it).
#[derive(Debug, Clone)]
struct Named {
    path: PathBuf,
    from: String,
}

impl Named {
    /// The flag, else the signal's variable, else the general one.
    fn resolve(flag: Option<&Path>, flag_name: &str, var: &str, signal: Signal) -> Option<Self> {
        if let Some(path) = flag {
            return Some(Self {
                path: path.to_owned(),
                from: flag_name.to_owned(),
            });
        }
        [signal.var(var), format!("OTEL_EXPORTER_OTLP_{var}")]
            .into_iter()
            .find_map(|name| {
                let value = std::env::var_os(&name).filter(|v| !v.is_empty())?;
                Some(Self {
                    path: PathBuf::from(value),
                    from: name,
                })
            })
    }

    fn read(&self) -> Result<Vec<u8>, TlsError> {
        std::fs::read(&self.path).map_err(|source| TlsError::Read {
            path: self.path.clone(),
            from: self.from.clone(),
            source,
        })
    }

    /// The PEM certificates in the file, at least one.
    fn certificates(&self) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsError> {
        let pem = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCertificate {
                path: self.path.clone(),
                from: self.from.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.path.clone(),
                from: self.from.clone(),
            });
        }
        Ok((pem, certs))
    }
}

/// The TLS settings of one exporter, read and checked.
#[derive(Clone)]
pub struct TlsSetup {
    /// The trusted roots: the CA file's certificates, or the system's.
    roots: Arc<RootCertStore>,
    /// The client certificate chain and key, as PEM (for tonic) and as a rustls identity.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("roots", &self.roots.len())
            .field("client_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// The TLS an exporter to `endpoint` (the flag's, else the variables') needs: None for a
    /// plain endpoint given no TLS file. A file given for a plain `http://` endpoint is still
    /// read and checked (a typo should not wait for the day the endpoint turns https), and the
    /// agent says it goes unused.
    pub fn resolve(
        flags: &TlsFlags,
        signal: Signal,
        protocol: Protocol,
        endpoint: Option<&str>,
    ) -> Result<Option<Self>, TlsError> {
        let ca = Named::resolve(
            flags.certificate.as_deref(),
            "--otlp-certificate",
            "CERTIFICATE",
            signal,
        );
        let cert = Named::resolve(
            flags.client_certificate.as_deref(),
            "--otlp-client-certificate",
            "CLIENT_CERTIFICATE",
            signal,
        );
        let key = Named::resolve(
            flags.client_key.as_deref(),
            "--otlp-client-key",
            "CLIENT_KEY",
            signal,
        );
        let endpoint = endpoint_of(endpoint, signal);
        let secure = uses_tls(endpoint.as_deref(), protocol, signal);
        let any_file = ca.is_some() || cert.is_some() || key.is_some();
        if !secure && !any_file {
            return Ok(None);
        }
        let setup = Self::load(
            ca.as_ref(),
            cert.as_ref(),
            key.as_ref(),
            endpoint.as_deref().unwrap_or("the endpoint"),
        )?;
        if !secure {
            eprintln!(
                "wirespan: warning: OTLP {} endpoint {} is not https://: the TLS files given are checked but not used",
                match signal {
                    Signal::Traces => "traces",
                    Signal::Metrics => "metrics",
                },
                endpoint.as_deref().unwrap_or("(the default)")
            );
        }
        Ok(Some(setup))
    }

    /// TLS with the system's roots and no client certificate (for an exporter with no
    /// certificate settings of its own, such as Zipkin's).
    pub fn system_roots(endpoint: &str) -> Result<Self, TlsError> {
        Self::load(None, None, None, endpoint)
    }

    fn load(
        ca: Option<&Named>,
        cert: Option<&Named>,
        key: Option<&Named>,
        endpoint: &str,
    ) -> Result<Self, TlsError> {
        install_provider();
        let mut roots = RootCertStore::empty();
        if let Some(ca) = ca {
            for der in ca.certificates()?.1 {
                roots.add(der).map_err(|e| TlsError::BadCertificate {
                    path: ca.path.clone(),
                    from: ca.from.clone(),
                    reason: e.to_string(),
                })?;
            }
        } else {
            let system = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(system.certs);
            if added == 0 {
                let detail = system
                    .errors
                    .first()
                    .map_or_else(|| "no certificate found".to_owned(), ToString::to_string);
                return Err(TlsError::NoRoots {
                    endpoint: endpoint.to_owned(),
                    detail,
                });
            }
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots.clone());
        let (config, identity) = match (cert, key) {
            (None, None) => (builder.with_no_client_auth(), None),
            (Some(given), None) | (None, Some(given)) => {
                let missing = if cert.is_some() {
                    "--otlp-client-key or OTEL_EXPORTER_OTLP_CLIENT_KEY"
                } else {
                    "--otlp-client-certificate or OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
                };
                return Err(TlsError::Unpaired {
                    given: given.from.clone(),
                    missing: missing.to_owned(),
                });
            }
            (Some(cert), Some(key)) => {
                let (cert_pem, chain) = cert.certificates()?;
                let key_pem = key.read()?;
                let key_der =
                    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
                        path: key.path.clone(),
                        from: key.from.clone(),
                        reason: e.to_string(),
                    })?;
                let config = builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    TlsError::Identity {
                        cert: cert.path.clone(),
                        key: key.path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                (config, Some((cert_pem, key_pem)))
            }
        };
        Ok(Self {
            roots: Arc::new(roots),
            identity,
            config: Arc::new(config),
        })
    }

    /// The rustls configuration for the HTTP/protobuf client (HTTP/1.1: no ALPN).
    #[must_use]
    pub fn rustls(&self) -> ClientConfig {
        (*self.config).clone()
    }

    /// The same roots and identity for tonic (which adds the `h2` ALPN itself).
    #[must_use]
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let mut config =
            tonic::transport::ClientTlsConfig::new().trust_anchors(self.roots.roots.clone());
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        config
    }
}

/// The endpoint the exporter will use: the flag's, else the signal's variable, else the general
/// one (None: the exporter's default, plain `http://localhost`).
fn endpoint_of(flag: Option<&str>, signal: Signal) -> Option<String> {
    flag.map(str::to_owned).or_else(|| {
        [
            signal.var("ENDPOINT"),
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        ]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    })
}

/// Whether the connection to `endpoint` is TLS: an `https://` URL, or for gRPC one without a
/// scheme unless `OTEL_EXPORTER_OTLP_INSECURE` (or its signal form) is true, as the
/// specification says and opentelemetry-otlp does.
fn uses_tls(endpoint: Option<&str>, protocol: Protocol, signal: Signal) -> bool {
    let Some(endpoint) = endpoint.map(str::trim) else {
        return false;
    };
    match endpoint.split_once("://") {
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
            scheme.eq_ignore_ascii_case("https")
        }
        _ => {
            protocol == Protocol::Grpc
                && ![
                    signal.var("INSECURE"),
                    "OTEL_EXPORTER_OTLP_INSECURE".to_owned(),
                ]
                .iter()
                .find_map(|name| std::env::var(name).ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process's rustls provider: reqwest built without its own (no aws-lc) looks
/// for one when it makes a client, and would panic finding none.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err: another part of the process installed one first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_or_a_bare_grpc_address_means_tls() {
        assert!(uses_tls(
            Some("https://h:4318"),
            Protocol::HttpProtobuf,
            Signal::Traces
        ));
        assert!(uses_tls(
            Some("HTTPS://h:4317"),
            Protocol::Grpc,
            Signal::Traces
        ));
        assert!(!uses_tls(
            Some("http://h:4317"),
            Protocol::Grpc,
            Signal::Traces
        ));
        assert!(!uses_tls(None, Protocol::Grpc, Signal::Traces));
        assert!(!uses_tls(
            Some("h:4318"),
            Protocol::HttpProtobuf,
            Signal::Metrics
        ));
        // A bare gRPC address is TLS unless OTEL_EXPORTER_OTLP_INSECURE says otherwise; the
        // variable is not set in the unit tests.
        if std::env::var_os("OTEL_EXPORTER_OTLP_INSECURE").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_INSECURE").is_none()
        {
            assert!(uses_tls(Some("h:4317"), Protocol::Grpc, Signal::Traces));
        }
    }

    fn scratch(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wirespan-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn bad_files_are_refused_at_start_naming_the_file_and_its_flag() {
        let flags =
            |certificate: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>| TlsFlags {
                certificate,
                client_certificate: cert,
                client_key: key,
            };
        let resolve = |f: &TlsFlags| {
            TlsSetup::resolve(
                f,
                Signal::Traces,
                Protocol::HttpProtobuf,
                Some("https://127.0.0.1:4318"),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let e = resolve(&flags(Some(missing), None, None));
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("--otlp-certificate"),
            "{e}"
        );
        let junk = scratch("junk.pem", b"not a certificate\n");
        let e = resolve(&flags(Some(junk.clone()), None, None));
        assert!(
            e.contains("holds no PEM certificate") && e.contains("junk.pem"),
            "{e}"
        );
        let garbled = scratch(
            "garbled.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = resolve(&flags(Some(garbled.clone()), None, None));
        assert!(
            e.contains("cannot be used") && e.contains("garbled.pem"),
            "{e}"
        );
        let e = resolve(&flags(None, Some(garbled), None));
        assert!(
            e.contains("--otlp-client-certificate is set") && e.contains("CLIENT_KEY"),
            "{e}"
        );
        let e = resolve(&flags(None, None, Some(junk)));
        assert!(e.contains("--otlp-client-key is set"), "{e}");
    }
}
