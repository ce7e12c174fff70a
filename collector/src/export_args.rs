//! `wirespan run`'s flags for where spans go: the exporters (console, OTLP, an OTLP file,
//! Zipkin) and their settings, with the standard `OTEL_*` variables as defaults.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use wirespan::{
    clock::WallClock,
    export::{
        file::FileSink,
        graph_metrics::{self, GraphMetrics},
        otlp::{self, OtlpConfig, Protocol, parse_headers},
        tls::TlsFlags,
        tree::TreeSink,
        zipkin::{self, ZipkinConfig},
    },
    sink::SpanSink,
    span::{AttributeOptions, RpcConventions, processes::Resources},
};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Exporter {
    /// Each trace as an indented tree on standard output (service, kind, name, status,
    /// duration), once its root span is complete.
    Console,
    /// OTLP to a collector, Jaeger or Tempo (gRPC or HTTP/protobuf; see --otlp-*).
    Otlp,
    /// OTLP JSON lines into --output (the OpenTelemetry Collector file exporter's format).
    File,
    /// Zipkin's JSON v2 to a Zipkin server, or anything that takes it (see --zipkin-endpoint).
    Zipkin,
}

impl Exporter {
    /// A name of `OTEL_TRACES_EXPORTER`; `none` is no exporter.
    fn from_standard(name: &str) -> anyhow::Result<Option<Self>> {
        Ok(Some(match name.trim() {
            "otlp" => Self::Otlp,
            "zipkin" => Self::Zipkin,
            "console" => Self::Console,
            "none" => return Ok(None),
            other => anyhow::bail!(
                "OTEL_TRACES_EXPORTER names {other:?}: this agent knows otlp, zipkin, console and none"
            ),
        }))
    }
}

#[derive(Args)]
pub struct ExportArgs {
    /// Where spans go; repeat to combine. Default: the names in OTEL_TRACES_EXPORTER
    /// (comma-separated: otlp, zipkin, console, none), else otlp when
    /// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, else
    /// console. otlp also sends the
    /// service graph as metrics named like Tempo's (traces_service_graph_request_total, ...,
    /// labels client and server) every OTEL_METRIC_EXPORT_INTERVAL ms (60000) and at exit;
    /// OTEL_METRICS_EXPORTER=none turns them off.
    #[arg(long, value_enum)]
    exporter: Vec<Exporter>,
    /// OTLP endpoint, e.g. http://127.0.0.1:4317 for grpc or http://127.0.0.1:4318 for
    /// http/protobuf; https:// for TLS (see --otlp-certificate). A grpc endpoint without a
    /// scheme is TLS unless OTEL_EXPORTER_OTLP_INSECURE=true [env: OTEL_EXPORTER_OTLP_ENDPOINT,
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT].
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// grpc or http/protobuf [env: OTEL_EXPORTER_OTLP_PROTOCOL,
    /// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL; default http/protobuf].
    #[arg(long, value_name = "PROTOCOL")]
    otlp_protocol: Option<String>,
    /// Extra headers, key=value,key=value, e.g. authorization=Bearer%20TOKEN (values
    /// percent-encoded in the variables) [env: OTEL_EXPORTER_OTLP_HEADERS,
    /// OTEL_EXPORTER_OTLP_TRACES_HEADERS].
    #[arg(long, value_name = "HEADERS")]
    otlp_headers: Option<String>,
    /// PEM file of the CA(s) the https:// backend's certificate must chain to, instead of the
    /// system's roots (/etc/ssl/certs) [env: OTEL_EXPORTER_OTLP_CERTIFICATE,
    /// OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE; metrics: OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE].
    /// Read and checked at start.
    #[arg(long, value_name = "PEM")]
    otlp_certificate: Option<PathBuf>,
    /// PEM file of the agent's own certificate (chain), for a backend that requires client
    /// certificates (mutual TLS); needs --otlp-client-key [env:
    /// OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE;
    /// metrics: OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE].
    #[arg(long, value_name = "PEM")]
    otlp_client_certificate: Option<PathBuf>,
    /// PEM file of the private key of --otlp-client-certificate (PKCS#8, RSA or EC) [env:
    /// OTEL_EXPORTER_OTLP_CLIENT_KEY, OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY; metrics:
    /// OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY].
    #[arg(long, value_name = "PEM")]
    otlp_client_key: Option<PathBuf>,
    /// Export timeout in seconds [env: OTEL_EXPORTER_OTLP_TIMEOUT (ms),
    /// OTEL_EXPORTER_OTLP_TRACES_TIMEOUT (ms); default 10].
    #[arg(long, value_name = "SECS")]
    otlp_timeout: Option<f64>,
    /// Spans waiting for the OTLP exporter (and, apart, for the Zipkin exporter) at most; more
    /// are dropped and counted. While the backend is down, new spans wait here.
    #[arg(long, value_name = "N", default_value_t = wirespan::export::otlp::DEFAULT_QUEUE)]
    otlp_queue: usize,
    /// How long a batch the backend does not take (down, restarting, 429/503, UNAVAILABLE) is
    /// retried, with backoff up to 5 s, before it is dropped and counted. Refusals (400, 401,
    /// 403, InvalidArgument, ...) are not retried. On stop, failing batches get 5 s in all.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = wirespan::export::retry::DEFAULT_RETRY_MAX.as_secs(),
        env = "WIRESPAN_OTLP_RETRY_MAX_SECS"
    )]
    otlp_retry_max_secs: u64,
    /// Where --exporter zipkin posts spans (Zipkin's JSON v2), e.g.
    /// http://127.0.0.1:9411/api/v2/spans; https:// checks the server against the system's
    /// roots. The queue and retries are the OTLP exporter's settings above. Timeout:
    /// OTEL_EXPORTER_ZIPKIN_TIMEOUT (ms; default 10000) [env: OTEL_EXPORTER_ZIPKIN_ENDPOINT;
    /// default http://localhost:9411/api/v2/spans].
    #[arg(long, value_name = "URL")]
    zipkin_endpoint: Option<String>,
    /// The file of --exporter file (replaced if it exists).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Export `url.query` as sent (by default its value is REDACTED: queries carry tokens).
    #[arg(long)]
    show_query: bool,
    /// Export `process.command_args` whole (by default only the program: arguments can hold
    /// secrets).
    #[arg(long)]
    show_command_args: bool,
}

impl ExportArgs {
    /// `--show-query`, and the RPC conventions `OTEL_SEMCONV_STABILITY_OPT_IN` asks for.
    pub fn attribute_options(&self) -> AttributeOptions {
        AttributeOptions {
            show_query: self.show_query,
            rpc: RpcConventions::from_opt_in(
                std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN")
                    .ok()
                    .as_deref(),
            ),
        }
    }

    /// The exporters asked for, or the default.
    pub fn exporters(&self) -> anyhow::Result<Vec<Exporter>> {
        if !self.exporter.is_empty() {
            return Ok(self.exporter.clone());
        }
        if let Ok(names) = std::env::var("OTEL_TRACES_EXPORTER")
            && !names.trim().is_empty()
        {
            let mut exporters = Vec::new();
            for name in names.split(',') {
                if let Some(e) = Exporter::from_standard(name)?
                    && !exporters.contains(&e)
                {
                    exporters.push(e);
                }
            }
            return Ok(exporters);
        }
        let endpoint_set = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|e| !e.trim().is_empty()));
        Ok(if endpoint_set || self.otlp_endpoint.is_some() {
            vec![Exporter::Otlp]
        } else {
            vec![Exporter::Console]
        })
    }

    /// The run's process resources (`offline` for a replay: the recorded processes are gone,
    /// /proc is not theirs; the recording's exec events name them).
    pub fn resources(&self, offline: bool) -> Resources {
        if offline {
            Resources::offline()
        } else {
            Resources::new(PathBuf::from("/proc"), self.show_command_args)
        }
    }

    /// The span sinks for a run whose times convert with `clock`, sharing `resources`.
    pub fn sinks(
        &self,
        clock: &WallClock,
        resources: &Resources,
    ) -> anyhow::Result<Vec<Box<dyn SpanSink>>> {
        let resources = || resources.clone();
        let mut sinks: Vec<Box<dyn SpanSink>> = Vec::new();
        for exporter in self.exporters()? {
            match exporter {
                Exporter::Console => {
                    sinks.push(Box::new(TreeSink::new(std::io::stdout(), resources())));
                }
                Exporter::File => {
                    let path = self
                        .output
                        .as_deref()
                        .context("--exporter file needs --output FILE")?;
                    let sink =
                        FileSink::create(path, *clock, resources(), self.attribute_options())
                            .with_context(|| format!("cannot create {}", path.display()))?;
                    sinks.push(Box::new(sink));
                }
                Exporter::Otlp => {
                    let timeout = self
                        .otlp_timeout
                        .map(|s| {
                            Duration::try_from_secs_f64(s).map_err(|_| {
                                anyhow::anyhow!("--otlp-timeout {s}: expected seconds")
                            })
                        })
                        .transpose()?;
                    let config = OtlpConfig {
                        protocol: Protocol::resolve(self.otlp_protocol.as_deref())?,
                        endpoint: self.otlp_endpoint.clone(),
                        headers: self
                            .otlp_headers
                            .as_deref()
                            .map(parse_headers)
                            .transpose()?
                            .unwrap_or_default(),
                        timeout,
                        tls: TlsFlags {
                            certificate: self.otlp_certificate.clone(),
                            client_certificate: self.otlp_client_certificate.clone(),
                            client_key: self.otlp_client_key.clone(),
                        },
                        queue: self.otlp_queue,
                        retry_max: Duration::from_secs(self.otlp_retry_max_secs),
                        attributes: self.attribute_options(),
                    };
                    if graph_metrics::enabled() {
                        sinks.push(Box::new(GraphMetrics::start(&config, resources())?));
                    }
                    sinks.push(Box::new(otlp::start(config, *clock, resources())?));
                }
                Exporter::Zipkin => {
                    let config = ZipkinConfig::resolve(
                        self.zipkin_endpoint.as_deref(),
                        self.otlp_queue,
                        Duration::from_secs(self.otlp_retry_max_secs),
                        self.attribute_options(),
                    )?;
                    sinks.push(Box::new(zipkin::start(config, *clock, resources())?));
                }
            }
        }
        Ok(sinks)
    }
}
