//! The service graph as OTLP metrics, named like Grafana Tempo's metrics generator so existing
//! dashboards work: `traces_service_graph_request_total`, `..._request_failed_total` (counters)
//! and `..._request_server_seconds`, `..._request_client_seconds` (histograms), each with
//! `client` and `server` labels. An edge is a server span whose parent is a client span of
//! another process (`map::EdgeFinder`), the same pairing `wirespan map` uses.
//!
//! The SDK aggregates (cumulative, as Prometheus expects). Its periodic reader, on a thread of
//! its own, collects every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s, read by the SDK) and
//! once more when the agent stops, so a short run still exports its graph; the OTLP exporter
//! runs on an async runtime of its own, so the agent's loop never waits on the network.
//! `OTEL_METRICS_EXPORTER=none` turns the metrics off. The endpoint, protocol, headers and
//! timeout are the span exporter's. The metrics' resource is the agent's: `service.name`
//! `wirespan` and the host's attributes every process's resource has (`host.name`, the agent's
//! `OTEL_RESOURCE_ATTRIBUTES`), so a graph from each node of a cluster is told apart.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, MeterProvider as _},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        PeriodicReader, SdkMeterProvider, Temporality, data::ResourceMetrics,
        exporter::PushMetricExporter,
    },
};

use super::{
    SpanSink,
    http_client::Cause,
    otlp::{ExportError, OtlpConfig, Protocol, configure_grpc, configure_http},
    retry::{self, Failure},
    tls::Signal,
};
use crate::span::{Span, processes::Resources};
use crate::views::map::{EdgeFinder, EdgeSample};

pub const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
pub const REQUEST_FAILED_TOTAL: &str = "traces_service_graph_request_failed_total";
pub const REQUEST_SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
pub const REQUEST_CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";

/// Histogram bucket bounds, seconds: Tempo's defaults (0.1 s up) with finer buckets below, where
/// most calls between services on one network land.
const LATENCY_BOUNDS: [f64; 15] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8,
];

/// Whether metrics are wanted: `OTEL_METRICS_EXPORTER` unset, `otlp`, or anything but `none`.
#[must_use]
pub fn enabled() -> bool {
    std::env::var("OTEL_METRICS_EXPORTER").map_or(true, |v| v.trim() != "none")
}

/// The four instruments.
pub struct GraphInstruments {
    requests: Counter<u64>,
    failed: Counter<u64>,
    server_seconds: Histogram<f64>,
    client_seconds: Histogram<f64>,
}

impl GraphInstruments {
    #[must_use]
    pub fn new(meter: &Meter) -> Self {
        let histogram = |name: &'static str, what: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(what)
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build()
        };
        Self {
            requests: meter
                .u64_counter(REQUEST_TOTAL)
                .with_description("Requests between two services")
                .build(),
            failed: meter
                .u64_counter(REQUEST_FAILED_TOTAL)
                .with_description("Requests between two services that failed")
                .build(),
            server_seconds: histogram(
                REQUEST_SERVER_SECONDS,
                "Time the server took for a request between two services",
            ),
            client_seconds: histogram(
                REQUEST_CLIENT_SECONDS,
                "Time the client waited for a request between two services",
            ),
        }
    }

    pub fn record(&self, edge: &EdgeSample) {
        let labels = [
            KeyValue::new("client", edge.client.clone()),
            KeyValue::new("server", edge.server.clone()),
        ];
        self.requests.add(1, &labels);
        if edge.failed {
            self.failed.add(1, &labels);
        }
        let seconds = |ns: u64| Duration::from_nanos(ns).as_secs_f64();
        self.server_seconds.record(seconds(edge.server_ns), &labels);
        self.client_seconds.record(seconds(edge.client_ns), &labels);
    }
}

/// A meter provider whose resource is the agent on its host (the graph's services are labels)
/// and that exports through `exporter` periodically. `host` is [`Resources::host_attributes`].
#[must_use]
pub fn provider<E: PushMetricExporter>(exporter: E, host: &[(String, String)]) -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("wirespan")
                .with_attributes(
                    host.iter()
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
                )
                .build(),
        )
        .with_reader(PeriodicReader::builder(exporter).build())
        .build()
}

#[derive(Debug, Default)]
struct MetricCounts {
    edges: AtomicU64,
    exports: AtomicU64,
    failed: AtomicU64,
}

/// The OTLP metric exporter, run to completion on its own async runtime (tonic and reqwest need
/// one; the SDK's reader thread has none), counting and logging what fails.
struct OnRuntime {
    exporter: opentelemetry_otlp::MetricExporter,
    /// Why the HTTP client's last request failed (the exporter hides it).
    cause: Cause,
    runtime: tokio::runtime::Runtime,
    counts: Arc<MetricCounts>,
    last_failure_log: Mutex<Option<Instant>>,
}

impl OnRuntime {
    fn new(config: &OtlpConfig, counts: Arc<MetricCounts>) -> Result<Self, ExportError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ExportError::Build(e.to_string()))?;
        let builder =
            opentelemetry_otlp::MetricExporter::builder().with_temporality(Temporality::Cumulative);
        // Built inside the runtime: tonic's channel wants one.
        let (exporter, cause) = runtime.block_on(async {
            let (built, cause) = match config.protocol {
                Protocol::Grpc => (
                    configure_grpc(builder.with_tonic(), config, Signal::Metrics)?.build(),
                    Cause::default(),
                ),
                Protocol::HttpProtobuf => {
                    let (b, cause) = configure_http(builder.with_http(), config, Signal::Metrics)?;
                    (b.build(), cause)
                }
            };
            Ok::<_, ExportError>((built.map_err(|e| ExportError::Build(e.to_string()))?, cause))
        })?;
        Ok(Self {
            exporter,
            cause,
            runtime,
            counts,
            last_failure_log: Mutex::new(None),
        })
    }
}

impl PushMetricExporter for OnRuntime {
    fn export(
        &self,
        metrics: &ResourceMetrics,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let result = self.runtime.block_on(self.exporter.export(metrics));
        match &result {
            Ok(()) => {
                self.counts.exports.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                let mut last = self
                    .last_failure_log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    let error = self.cause.explain(&e.to_string());
                    let hint = match retry::classify(&error) {
                        Failure::Tls => retry::TLS_HINT,
                        Failure::Credentials => retry::CREDENTIALS_HINT,
                        Failure::Passing | Failure::Refused => {
                            "a backend without a metrics pipeline refuses them; OTEL_METRICS_EXPORTER=none turns them off"
                        }
                    };
                    eprintln!("wirespan: service graph metrics export failed: {error} ({hint})");
                    *last = Some(Instant::now());
                }
            }
        }
        std::future::ready(result)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The sink: pairs spans into edges and records them; the SDK's reader exports the aggregates.
pub struct GraphMetrics {
    finder: EdgeFinder,
    instruments: GraphInstruments,
    provider: Option<SdkMeterProvider>,
    counts: Arc<MetricCounts>,
}

impl GraphMetrics {
    /// Build the exporter (failing now on a bad configuration) and start the reader.
    pub fn start(config: &OtlpConfig, resources: Resources) -> Result<Self, ExportError> {
        let counts = Arc::new(MetricCounts::default());
        let provider = provider(
            OnRuntime::new(config, Arc::clone(&counts))?,
            &resources.host_attributes(),
        );
        Ok(Self {
            finder: EdgeFinder::new(resources),
            instruments: GraphInstruments::new(&provider.meter("wirespan")),
            provider: Some(provider),
            counts,
        })
    }

    /// Export the last aggregates, stop, and report the counts.
    pub fn close(&mut self) -> String {
        if let Some(provider) = self.provider.take() {
            // Shutting down collects and exports once more.
            let _ = provider.shutdown();
        }
        let c = &self.counts;
        format!(
            "service graph metrics: {} edge requests, {} exports, {} failed",
            c.edges.load(Ordering::Relaxed),
            c.exports.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed)
        )
    }
}

impl Drop for GraphMetrics {
    fn drop(&mut self) {
        if self.provider.is_some() {
            eprintln!("wirespan: {}", self.close());
        }
    }
}

impl SpanSink for GraphMetrics {
    fn span(&mut self, span: &Span) -> std::io::Result<()> {
        if let Some(edge) = self.finder.observe(span) {
            self.instruments.record(&edge);
            self.counts.edges.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ScopeMetrics};

    use super::*;

    fn edge(client: &str, server: &str, failed: bool, ms: u64) -> EdgeSample {
        EdgeSample {
            client: client.into(),
            server: server.into(),
            failed,
            server_ns: ms * 1_000_000,
            client_ns: (ms + 1) * 1_000_000,
        }
    }

    /// Keeps, per export, counter values and histogram counts per (metric, client, server).
    type Row = (String, String, String, u64);

    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<Vec<Row>>>>, Arc<Mutex<Vec<(String, String)>>>);

    impl PushMetricExporter for Collected {
        fn export(
            &self,
            rm: &ResourceMetrics,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            *self.1.lock().unwrap() = rm
                .resource()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut out = Vec::new();
            for metric in rm.scope_metrics().flat_map(ScopeMetrics::metrics) {
                let labels = |attrs: Vec<&KeyValue>| {
                    let get = |k: &str| {
                        attrs
                            .iter()
                            .find(|kv| kv.key.as_str() == k)
                            .map(|kv| kv.value.to_string())
                            .unwrap_or_default()
                    };
                    (get("client"), get("server"))
                };
                let name = metric.name().to_owned();
                match metric.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        assert!(sum.is_monotonic());
                        for p in sum.data_points() {
                            let (c, s) = labels(p.attributes().collect());
                            out.push((name.clone(), c, s, p.value()));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        assert_eq!(metric.unit(), "s");
                        for p in h.data_points() {
                            let (c, s) = labels(p.attributes().collect());
                            out.push((name.clone(), c, s, p.count()));
                        }
                    }
                    other => panic!("unexpected aggregation {other:?}"),
                }
            }
            out.sort();
            self.0.lock().unwrap().push(out);
            std::future::ready(Ok(()))
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }

        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    #[test]
    fn edges_become_tempo_named_metrics_with_client_and_server_labels() {
        let exported = Collected::default();
        let provider = provider(exported.clone(), &[]);
        let instruments = GraphInstruments::new(&provider.meter("test"));
        instruments.record(&edge("front", "relay", false, 2));
        instruments.record(&edge("front", "relay", true, 3));
        instruments.record(&edge("relay", "echo", false, 1));
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
        let row = |m: &str, c: &str, s: &str, n: u64| (m.to_owned(), c.into(), s.into(), n);
        let exports = exported.0.lock().unwrap().clone();
        assert_eq!(
            exports[0],
            vec![
                row(REQUEST_CLIENT_SECONDS, "front", "relay", 2),
                row(REQUEST_CLIENT_SECONDS, "relay", "echo", 1),
                row(REQUEST_FAILED_TOTAL, "front", "relay", 1),
                row(REQUEST_SERVER_SECONDS, "front", "relay", 2),
                row(REQUEST_SERVER_SECONDS, "relay", "echo", 1),
                row(REQUEST_TOTAL, "front", "relay", 2),
                row(REQUEST_TOTAL, "relay", "echo", 1),
            ]
        );
        // Cumulative: the export at shutdown still holds the totals.
        assert_eq!(exports.last(), exports.first());
    }

    #[test]
    fn the_metrics_resource_is_the_agent_on_its_host() {
        let exported = Collected::default();
        let host = [
            ("k8s.node.name".to_owned(), "n1".to_owned()),
            ("host.name".to_owned(), "node-a".to_owned()),
        ];
        let provider = provider(exported.clone(), &host);
        GraphInstruments::new(&provider.meter("test")).record(&edge("a", "b", false, 1));
        provider.shutdown().unwrap();
        let mut resource = exported.1.lock().unwrap().clone();
        resource.sort();
        let owned = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            resource,
            [
                owned("host.name", "node-a"),
                owned("k8s.node.name", "n1"),
                owned("service.name", "wirespan"),
            ]
        );
    }
}
