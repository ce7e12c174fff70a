//! `--exporter file --output FILE`: OTLP JSON lines, one `ExportTraceServiceRequest` per line
//! (the OpenTelemetry Collector file exporter's format, which its `otlpjsonfile` receiver reads
//! back), written at each flush with the spans since the last, grouped one resource per process.

use std::{fs::File, io::Write, path::Path, sync::Arc};

use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};

use super::{SpanSink, spandata};
use crate::clock::WallClock;
use crate::span::{AttributeOptions, Span, processes::Resources, resource::Resource};

pub struct FileSink {
    out: std::io::BufWriter<File>,
    clock: WallClock,
    resources: Resources,
    attributes: AttributeOptions,
    /// Spans since the last flush, each with its process's resource as it was when the span
    /// came (the process may be gone and forgotten by the flush).
    waiting: Vec<(Arc<Resource>, Span)>,
}

impl FileSink {
    /// Create (or replace) `path`, for its owner only, never through a symlink.
    pub fn create(
        path: &Path,
        clock: WallClock,
        resources: Resources,
        attributes: AttributeOptions,
    ) -> std::io::Result<Self> {
        Ok(Self {
            out: std::io::BufWriter::new(crate::private_file::create(path)?),
            clock,
            resources,
            attributes,
            waiting: Vec::new(),
        })
    }
}

impl SpanSink for FileSink {
    fn span(&mut self, span: &Span) -> std::io::Result<()> {
        let resource = self.resources.of(span.pid, &span.comm, span.start_ns);
        self.waiting.push((resource, span.clone()));
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.waiting.is_empty() {
            return self.out.flush();
        }
        let mut request = ExportTraceServiceRequest::default();
        for (resource, spans) in spandata::by_resource(self.waiting.drain(..)) {
            let resource = ResourceAttributesWithSchema::from(&spandata::sdk_resource(&resource));
            let data = spans
                .iter()
                .map(|s| spandata::span_data(s, &self.clock, self.attributes))
                .collect();
            request
                .resource_spans
                .extend(group_spans_by_resource_and_scope(data, &resource));
        }
        serde_json::to_writer(&mut self.out, &request)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
