//! `otlp-sink`: the OTLP/gRPC receiver `cargo xtask bench` exports wirespan's spans to, so the
//! agent runs as users run it (OTLP over gRPC, its batching and its protobuf encoding), while
//! the receiver costs as little as it can. It discards every span and metric, counting spans,
//! and keeps per span only what the bench's checks read (trace id, span id, parent id, service
//! name, kind) as tab-separated lines in a file, at most `--max-records` of them.
//!
//! `otlp-sink --records FILE [--max-records N]` prints its address (`127.0.0.1:PORT`) on the
//! first line of stdout, serves until SIGTERM or SIGINT, then flushes the file and prints
//! `otlp-sink: N spans received, M kept` on stderr.

use std::{
    fmt::Write as _,
    fs::File,
    io::{BufWriter, Write as _},
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::any_value,
};
use tokio::signal::unix::{SignalKind, signal};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

/// Records kept unless `--max-records` says otherwise: about 80 MB of lines.
const DEFAULT_MAX_RECORDS: u64 = 1_000_000;

/// What the receiver has seen, and the records file.
struct State {
    out: BufWriter<File>,
    spans: u64,
    kept: u64,
    max: u64,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<State>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for resource in &request.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map_or("", |v| match v {
                    any_value::Value::StringValue(s) => s.as_str(),
                    _ => "",
                });
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                kept.spans += 1;
                if kept.kept >= kept.max {
                    continue;
                }
                kept.kept += 1;
                let line = format!(
                    "{}\t{}\t{}\t{service}\t{}\n",
                    hex(&span.trace_id),
                    hex(&span.span_id),
                    hex(&span.parent_span_id),
                    span.kind
                );
                kept.out
                    .write_all(line.as_bytes())
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// `--records FILE [--max-records N]`.
fn parse_args() -> anyhow::Result<(String, u64)> {
    let usage = "usage: otlp-sink --records FILE [--max-records N]";
    let mut records = None;
    let mut max = DEFAULT_MAX_RECORDS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--records" => records = Some(args.next().context(usage)?),
            "--max-records" => {
                max = args.next().context(usage)?.parse().context(usage)?;
            }
            "--help" | "-h" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unexpected argument {other:?}; {usage}"),
        }
    }
    Ok((records.context(usage)?, max))
}

fn main() -> anyhow::Result<()> {
    let (records, max) = parse_args()?;
    let file = File::create(&records).with_context(|| format!("cannot create {records}"))?;
    let sink = Sink(Arc::new(Mutex::new(State {
        out: BufWriter::with_capacity(1 << 20, file),
        spans: 0,
        kept: 0,
        max,
    })));
    // Two worker threads: decoding is the receiver's only work, and the machine's cores belong
    // to what is measured.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())
            .map_err(|e| anyhow::anyhow!("cannot listen on loopback: {e}"))?;
        println!("{}", incoming.local_addr()?);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()))
            .serve_with_incoming_shutdown(incoming, async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
            .await?;
        anyhow::Ok(())
    })?;
    let mut kept = sink.0.lock().unwrap_or_else(PoisonError::into_inner);
    kept.out.flush()?;
    eprintln!(
        "otlp-sink: {} spans received, {} kept",
        kept.spans, kept.kept
    );
    Ok(())
}
