//! Zipkin export: spans as Zipkin's JSON v2 (`POST /api/v2/spans`), behind the shared export
//! thread of `pipeline`, so queueing, retries and counts are the OTLP exporter's.
//!
//! Why our own encoder, not opentelemetry-zipkin: its exporter has one local endpoint (one
//! service name) for everything it sends, while one agent exports many processes at once; and
//! it drops resource attributes and has no remote endpoint. Here each span carries its own
//! process's service and address, the peer's address, its ids and parent as the agent made
//! them, every attribute and resource attribute as a tag, and the OpenTelemetry status as
//! Zipkin's `error` tag (the mapping of the OpenTelemetry specification's Zipkin exporter).
//! A database or cache call names its server by its system (`remoteEndpoint.serviceName` =
//! `redis`, `postgresql`): Zipkin's dependency graph then shows the database as a node, as it
//! does for an uninstrumented server.
//!
//! Configuration: `--zipkin-endpoint` or `OTEL_EXPORTER_ZIPKIN_ENDPOINT` (default
//! `http://localhost:9411/api/v2/spans`), `OTEL_EXPORTER_ZIPKIN_TIMEOUT` in ms (default 10 s).

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use opentelemetry_http::HttpClient as _;
use serde_json::{Map, Value as Json, json};

use super::{
    http_client::{Cause, ExplainingClient},
    otlp::ExportError,
    pipeline::{Backend, Export, ExportSink, PipelineConfig},
    tls::TlsSetup,
};
use crate::clock::WallClock;
use crate::span::{
    AttributeOptions, Payload, Span, SpanKind, Value, processes::Resources, resource::Resource,
};

/// Where spans go when nothing says otherwise, as in the OpenTelemetry specification.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:9411/api/v2/spans";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the flags and variables said.
#[derive(Debug, Clone)]
pub struct ZipkinConfig {
    /// The full URL spans are posted to.
    pub endpoint: String,
    pub timeout: Duration,
    pub queue: usize,
    pub retry_max: Duration,
    pub attributes: AttributeOptions,
}

impl ZipkinConfig {
    /// The endpoint from the flag, else `OTEL_EXPORTER_ZIPKIN_ENDPOINT`, else the default; the
    /// timeout from `OTEL_EXPORTER_ZIPKIN_TIMEOUT` (ms).
    pub fn resolve(
        flag: Option<&str>,
        queue: usize,
        retry_max: Duration,
        attributes: AttributeOptions,
    ) -> Result<Self, ExportError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint = flag
            .map(str::to_owned)
            .or_else(|| env("OTEL_EXPORTER_ZIPKIN_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let endpoint = endpoint.trim().to_owned();
        endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .ok_or_else(|| {
                ExportError::Build(format!(
                    "the Zipkin endpoint {endpoint:?} is not an http:// or https:// URL \
                     (e.g. {DEFAULT_ENDPOINT})"
                ))
            })?;
        let timeout = match env("OTEL_EXPORTER_ZIPKIN_TIMEOUT") {
            None => DEFAULT_TIMEOUT,
            Some(ms) => ms
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    ExportError::Build(format!(
                        "OTEL_EXPORTER_ZIPKIN_TIMEOUT={ms}: expected milliseconds"
                    ))
                })?,
        };
        Ok(Self {
            endpoint,
            timeout,
            queue,
            retry_max,
            attributes,
        })
    }
}

/// Check the configuration and start the export thread.
pub fn start(
    config: ZipkinConfig,
    clock: WallClock,
    resources: Resources,
) -> Result<ExportSink, ExportError> {
    let pipeline = PipelineConfig {
        label: "zipkin",
        queue: config.queue,
        retry_max: config.retry_max,
    };
    ExportSink::start(&pipeline, resources, move || {
        // https:// uses the system's roots (the OTLP certificate flags are OTLP's).
        let tls = if config.endpoint.starts_with("https://") {
            Some(TlsSetup::system_roots(&config.endpoint)?)
        } else {
            None
        };
        let (client, cause) = ExplainingClient::new(config.timeout, tls.as_ref())?;
        Ok(ZipkinBackend {
            client,
            cause,
            endpoint: config.endpoint,
            clock,
            attributes: config.attributes,
        })
    })
}

struct ZipkinBackend {
    client: ExplainingClient,
    cause: Cause,
    endpoint: String,
    clock: WallClock,
    attributes: AttributeOptions,
}

impl Backend for ZipkinBackend {
    fn set_resource(&mut self, _: &Resource) {}

    fn export<'a>(&'a self, resource: &'a Resource, spans: &'a [Span]) -> Export<'a> {
        let body: Vec<Json> = spans
            .iter()
            .map(|s| zipkin_span(s, resource, &self.clock, self.attributes))
            .collect();
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let request = http::Request::post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        Box::pin(async move {
            let request = request.map_err(|e| format!("Failed to build the request: {e}"))?;
            match self.client.send_bytes(request).await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!(
                    "Zipkin export failed with status code: {} ({})",
                    response.status().as_u16(),
                    String::from_utf8_lossy(response.body()).trim()
                )),
                Err(e) => Err(self
                    .cause
                    .explain(&format!("Zipkin export failed: network error: {e}"))),
            }
        })
    }
}

/// One span in Zipkin's JSON v2 model.
#[must_use]
pub fn zipkin_span(
    span: &Span,
    resource: &Resource,
    clock: &WallClock,
    options: AttributeOptions,
) -> Json {
    let micros = |ns: u64| clock.unix_ns(ns) / 1_000;
    let start = micros(span.start_ns);
    // Zipkin reads a missing or zero duration as "not finished".
    let duration = micros(span.end_ns.max(span.start_ns))
        .saturating_sub(start)
        .max(1);
    let mut tags = Map::new();
    for (key, value) in span.attributes(options) {
        let text = match value {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
        };
        tags.insert(key.to_owned(), Json::String(text));
    }
    for (key, value) in &resource.attributes {
        if key != "service.name" {
            tags.insert(key.clone(), Json::String(value.clone()));
        }
    }
    tags.insert("otel.scope.name".into(), json!("wirespan"));
    tags.insert(
        "otel.scope.version".into(),
        json!(env!("CARGO_PKG_VERSION")),
    );
    if span.is_error() {
        tags.insert("otel.status_code".into(), json!("ERROR"));
        let message = span.status_message();
        let message = if message.is_empty() {
            "true".to_owned()
        } else {
            message
        };
        tags.insert("error".into(), Json::String(message));
    }
    let mut out = Map::new();
    out.insert("traceId".into(), json!(span.trace_id.to_string()));
    out.insert("id".into(), json!(span.span_id.to_string()));
    if let Some(parent) = span.parent_span_id {
        out.insert("parentId".into(), json!(parent.to_string()));
    }
    out.insert(
        "kind".into(),
        json!(match span.kind {
            SpanKind::Server => "SERVER",
            SpanKind::Client => "CLIENT",
        }),
    );
    out.insert("name".into(), Json::String(span.name()));
    out.insert("timestamp".into(), json!(start));
    out.insert("duration".into(), json!(duration));
    out.insert(
        "localEndpoint".into(),
        endpoint(Some(&resource.service_name), span.local),
    );
    let remote_service = match &span.payload {
        Payload::Db(db) if span.kind == SpanKind::Client => Some(db.system.as_str()),
        _ => None,
    };
    out.insert(
        "remoteEndpoint".into(),
        endpoint(remote_service, span.remote),
    );
    out.insert("tags".into(), Json::Object(tags));
    Json::Object(out)
}

/// A Zipkin endpoint: a service name (when known) and an address.
fn endpoint(service: Option<&str>, address: SocketAddr) -> Json {
    let mut out = Map::new();
    if let Some(service) = service.filter(|s| !s.is_empty()) {
        out.insert("serviceName".into(), json!(service));
    }
    let ip = address.ip().to_canonical();
    let key = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    out.insert(key.into(), Json::String(ip.to_string()));
    if address.port() != 0 {
        out.insert("port".into(), json!(address.port()));
    }
    Json::Object(out)
}

#[cfg(test)]
#[path = "zipkin_tests.rs"]
mod tests;
