//! The HTTP/protobuf exporters' client: reqwest with our TLS settings (`tls`) and timeout,
//! wrapped so that a request that fails before any response says why. opentelemetry-otlp
//! reports every such failure as `HTTP export failed: network error` (it keeps the cause for its
//! debug log, as the cause may name the URL), which cannot tell a refused connection, which
//! passes when the backend returns, from a certificate the backend rejects, which does not.
//! The wrapper keeps the last cause; the export loop adds it to the error it logs and
//! classifies (`Cause::explain`).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};

use super::{otlp::ExportError, tls::TlsSetup};

/// The last transport failure of a client, shared with the code that reads its errors.
#[derive(Debug, Clone, Default)]
pub struct Cause(Arc<Mutex<Option<String>>>);

impl Cause {
    fn set(&self, cause: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(cause);
    }

    /// `error` with the cause of the failure behind it, when the exporter hid it (and the
    /// cause is taken: each is told once).
    #[must_use]
    pub fn explain(&self, error: &str) -> String {
        let cause = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match cause {
            Some(cause) if error.contains("network error") => format!("{error} ({cause})"),
            _ => error.to_owned(),
        }
    }
}

/// reqwest, remembering why its last request failed.
#[derive(Debug)]
pub struct ExplainingClient {
    inner: reqwest::Client,
    cause: Cause,
}

impl ExplainingClient {
    /// A client with `timeout` per request and `tls` for `https://` (None: the endpoint is
    /// plain http, and TLS is never used).
    pub fn new(timeout: Duration, tls: Option<&TlsSetup>) -> Result<(Self, Cause), ExportError> {
        super::tls::install_provider();
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(tls.rustls());
        }
        let inner = builder
            .build()
            .map_err(|e| ExportError::Build(format!("the HTTP client: {}", chain(&e))))?;
        let cause = Cause::default();
        Ok((
            Self {
                inner,
                cause: cause.clone(),
            },
            cause,
        ))
    }
}

#[async_trait::async_trait]
impl HttpClient for ExplainingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let result = self.inner.send_bytes(request).await;
        if let Err(e) = &result {
            self.cause.set(chain(e.as_ref()));
        }
        result
    }
}

/// An error and its sources, `a: b: c`, each said once (reqwest and hyper repeat their inner
/// error's text in their own).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The export timeout as opentelemetry-otlp would take it when it makes the client itself: the
/// flag, else `OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` (ms),
/// else 10 s.
#[must_use]
pub fn timeout(flag: Option<Duration>, signal_var: &str) -> Duration {
    flag.or_else(|| {
        [signal_var, "OTEL_EXPORTER_OTLP_TIMEOUT"]
            .iter()
            .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
            .map(Duration::from_millis)
    })
    .unwrap_or(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_cause_is_told_once_and_only_for_network_errors() {
        let cause = Cause::default();
        cause.set("error sending request: received fatal alert: CertificateRequired".into());
        assert_eq!(
            cause.explain("HTTP export failed with status code: 401"),
            "HTTP export failed with status code: 401"
        );
        cause.set("connection refused".into());
        assert_eq!(
            cause.explain("HTTP export failed: network error"),
            "HTTP export failed: network error (connection refused)"
        );
        assert_eq!(
            cause.explain("HTTP export failed: network error"),
            "HTTP export failed: network error"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: inner")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("sending")]
    struct Wrap(#[source] std::io::Error);

    #[test]
    fn chains_skip_repeated_text() {
        assert_eq!(
            chain(&Outer(std::io::Error::other("inner"))),
            "outer: inner"
        );
        assert_eq!(
            chain(&Wrap(std::io::Error::other("refused"))),
            "sending: refused"
        );
    }
}
