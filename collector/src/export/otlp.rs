//! OTLP export over gRPC or HTTP/protobuf with opentelemetry-otlp, behind the shared export
//! thread of `pipeline` (bounded queue, batches per process, retries, counts). This module is
//! the configuration and the last step: a process's spans as `SpanData` with its resource.
//!
//! Configuration follows the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `_PROTOCOL`,
//! `_HEADERS`, `_TIMEOUT`, `_INSECURE` and their `_TRACES_` forms, which opentelemetry-otlp
//! reads itself; `_CERTIFICATE`, `_CLIENT_CERTIFICATE` and `_CLIENT_KEY`, which `tls` reads);
//! the matching flags override them.

use std::{collections::HashMap, time::Duration};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SpanExporter as _;

use super::{
    http_client::{self, Cause, ExplainingClient},
    pipeline::{Backend, Export, ExportSink, PipelineConfig},
    spandata,
    tls::{Signal, TlsError, TlsFlags, TlsSetup},
};
use crate::clock::WallClock;
use crate::span::{AttributeOptions, Span, processes::Resources, resource::Resource};

/// Spans waiting for export at most; more are dropped and counted.
pub const DEFAULT_QUEUE: usize = 65_536;

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// `grpc` or `http/protobuf`, as in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(text: &str) -> Result<Self, ExportError> {
        match text.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(ExportError::Protocol(other.to_owned())),
        }
    }

    /// From the flag, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, else the specification's default, HTTP/protobuf.
    pub fn resolve(flag: Option<&str>) -> Result<Self, ExportError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        flag.map(str::to_owned)
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .map_or(Ok(Self::HttpProtobuf), |p| Self::parse(&p))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown OTLP protocol {0:?}: use grpc or http/protobuf")]
    Protocol(String),
    #[error("bad OTLP header {0:?}: expected key=value")]
    Header(String),
    #[error("cannot set up the OTLP exporter: {0}")]
    Build(String),
    #[error("cannot set up TLS for the OTLP exporter: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot start the export thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the flags said (each None falls back to the standard variables).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    /// The base endpoint (`http://host:4318`); for HTTP, `/v1/traces` is added when it has no
    /// path, as for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// CA, client certificate and key files for `https://` endpoints.
    pub tls: TlsFlags,
    pub queue: usize,
    /// How long a failing batch is retried (see `retry`).
    pub retry_max: Duration,
    /// How span attributes are written (query redaction, RPC conventions).
    pub attributes: AttributeOptions,
}

/// Parse `key=value,key=value` (the `OTEL_EXPORTER_OTLP_HEADERS` form).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ExportError> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| ExportError::Header(pair.to_owned()))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(ExportError::Header(pair.to_owned()));
            }
            Ok((k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Build the exporter (failing now on a bad configuration) and start the export thread.
/// Spans are paired with their resources from `resources` as they come.
pub fn start(
    config: OtlpConfig,
    clock: WallClock,
    resources: Resources,
) -> Result<ExportSink, ExportError> {
    let pipeline = PipelineConfig {
        label: match config.protocol {
            Protocol::Grpc => "otlp (grpc)",
            Protocol::HttpProtobuf => "otlp (http/protobuf)",
        },
        queue: config.queue,
        retry_max: config.retry_max,
    };
    ExportSink::start(&pipeline, resources, move || {
        let (exporter, cause) = build(&config)?;
        Ok(OtlpBackend {
            exporter,
            cause,
            clock,
            attributes: config.attributes,
        })
    })
}

/// The last step of the export thread: opentelemetry-otlp's exporter.
struct OtlpBackend {
    exporter: opentelemetry_otlp::SpanExporter,
    cause: Cause,
    clock: WallClock,
    attributes: AttributeOptions,
}

impl Backend for OtlpBackend {
    fn set_resource(&mut self, resource: &Resource) {
        self.exporter
            .set_resource(&spandata::sdk_resource(resource));
    }

    fn export<'a>(&'a self, _: &'a Resource, spans: &'a [Span]) -> Export<'a> {
        let data = spans
            .iter()
            .map(|s| spandata::span_data(s, &self.clock, self.attributes))
            .collect();
        let export = self.exporter.export(data);
        Box::pin(async move { export.await.map_err(|e| self.cause.explain(&e.to_string())) })
    }

    fn shutdown(&mut self) {
        let _ = self.exporter.shutdown();
    }
}

/// The exporter, and where the HTTP client leaves the causes the exporter hides.
fn build(config: &OtlpConfig) -> Result<(opentelemetry_otlp::SpanExporter, Cause), ExportError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let (built, cause) = match config.protocol {
        Protocol::Grpc => (
            configure_grpc(builder.with_tonic(), config, Signal::Traces)?.build(),
            Cause::default(),
        ),
        Protocol::HttpProtobuf => {
            let (b, cause) = configure_http(builder.with_http(), config, Signal::Traces)?;
            (b.build(), cause)
        }
    };
    Ok((built.map_err(|e| ExportError::Build(e.to_string()))?, cause))
}

/// The flags on a gRPC exporter builder (spans or metrics).
pub(super) fn configure_grpc<B>(
    mut b: B,
    config: &OtlpConfig,
    signal: Signal,
) -> Result<B, ExportError>
where
    B: WithExportConfig + WithTonicConfig,
{
    if let Some(tls) = TlsSetup::resolve(
        &config.tls,
        signal,
        Protocol::Grpc,
        config.endpoint.as_deref(),
    )? {
        b = b.with_tls_config(tls.tonic());
    }
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        let mut map = tonic::metadata::MetadataMap::new();
        for (k, v) in &config.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.to_lowercase().as_bytes())
                .map_err(|_| ExportError::Header(k.clone()))?;
            // Decoded as the HTTP exporter and both exporters' variables decode them.
            let value = percent_decoded(v)
                .parse()
                .map_err(|_| ExportError::Header(v.clone()))?;
            map.insert(key, value);
        }
        b = b.with_metadata(map);
    }
    Ok(b)
}

/// The flags on an HTTP/protobuf exporter builder; `signal` names the path a base endpoint
/// gets (`/v1/traces`, `/v1/metrics`) and the variables that apply. The client is ours (TLS
/// files, the causes of failures; see `http_client`).
pub(super) fn configure_http<B>(
    b: B,
    config: &OtlpConfig,
    signal: Signal,
) -> Result<(B, Cause), ExportError>
where
    B: WithExportConfig + WithHttpConfig,
{
    let (path, timeout_var) = match signal {
        Signal::Traces => ("traces", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
        Signal::Metrics => ("metrics", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
    };
    let tls = TlsSetup::resolve(
        &config.tls,
        signal,
        Protocol::HttpProtobuf,
        config.endpoint.as_deref(),
    )?;
    let (client, cause) = ExplainingClient::new(
        http_client::timeout(config.timeout, timeout_var),
        tls.as_ref(),
    )?;
    let mut b = b
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client);
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(http_signal_url(endpoint, path));
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        b = b.with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>());
    }
    Ok((b, cause))
}

/// `%XX` escapes decoded (`Basic%20dXNlcg==` → `Basic dXNlcg==`), as the specification has
/// header values in `OTEL_EXPORTER_OTLP_HEADERS`; a broken escape stays as written.
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

/// A base endpoint gets the signal's path (`/v1/traces`), as `OTEL_EXPORTER_OTLP_ENDPOINT` does.
fn http_signal_url(endpoint: &str, signal: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .map_or(trimmed, |(_, rest)| rest)
        .contains('/');
    if has_path {
        // A traces URL given whole still names where the other signals go.
        match trimmed.strip_suffix("/v1/traces") {
            Some(base) if signal != "traces" => format!("{base}/v1/{signal}"),
            _ => trimmed.to_owned(),
        }
    } else {
        format!("{trimmed}/v1/{signal}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_protocols_and_endpoints_parse_like_the_standard_variables() {
        assert_eq!(
            parse_headers("api-key=abc, x-team = core").unwrap(),
            vec![
                ("api-key".into(), "abc".into()),
                ("x-team".into(), "core".into())
            ]
        );
        assert!(parse_headers("novalue").is_err());
        assert_eq!(percent_decoded("Basic%20dXNlcg=="), "Basic dXNlcg==");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz%41"), "%zzA");
        assert_eq!(Protocol::parse("grpc").unwrap(), Protocol::Grpc);
        assert!(Protocol::parse("http/json").is_err());
        assert_eq!(
            http_signal_url("http://h:4318", "traces"),
            "http://h:4318/v1/traces"
        );
        assert_eq!(
            http_signal_url("http://h:4318/", "metrics"),
            "http://h:4318/v1/metrics"
        );
        assert_eq!(
            http_signal_url("http://h:4318/custom", "traces"),
            "http://h:4318/custom"
        );
        assert_eq!(
            http_signal_url("http://h:4318/v1/traces", "metrics"),
            "http://h:4318/v1/metrics"
        );
    }
}
