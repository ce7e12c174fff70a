//! wirespan spans → OpenTelemetry `SpanData` (with our own ids and timestamps) and resources →
//! SDK resources: the common input of the OTLP network and file exporters.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::clock::WallClock;
use crate::span::{AttributeOptions, ParentLink, Span, Value, resource::Resource};

/// The instrumentation scope of every exported span.
#[must_use]
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("wirespan")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn system_time(clock: &WallClock, monotonic_ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(clock.unix_ns(monotonic_ns))
}

/// Spans grouped by their process's resource (one export request per resource), in order of
/// first appearance. Grouped by the resource itself, not the pid: a reused pid is two processes.
pub fn by_resource(
    spans: impl IntoIterator<Item = (Arc<Resource>, Span)>,
) -> Vec<(Arc<Resource>, Vec<Span>)> {
    let mut groups: Vec<(Arc<Resource>, Vec<Span>)> = Vec::new();
    for (resource, span) in spans {
        match groups.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &resource)) {
            Some((_, spans)) => spans.push(span),
            None => groups.push((resource, vec![span])),
        }
    }
    groups
}

/// One span as `SpanData`.
#[must_use]
pub fn span_data(span: &Span, clock: &WallClock, options: AttributeOptions) -> SpanData {
    let context = SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(span.trace_id.0),
        opentelemetry::trace::SpanId::from_bytes(span.span_id.0),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let attributes = span
        .attributes(options)
        .into_iter()
        .map(|(key, value)| match value {
            Value::Str(s) => KeyValue::new(key, s),
            Value::Int(i) => KeyValue::new(key, i),
        })
        .collect();
    let status = if span.is_error() {
        Status::error(span.status_message())
    } else {
        Status::Unset
    };
    SpanData {
        span_context: context,
        parent_span_id: span
            .parent_span_id
            .map_or(opentelemetry::trace::SpanId::INVALID, |p| {
                opentelemetry::trace::SpanId::from_bytes(p.0)
            }),
        // The parent is in another process: the client at the other end, or an instrumented
        // caller that sent a traceparent.
        parent_span_is_remote: matches!(
            span.link,
            ParentLink::Peer | ParentLink::RemotePeer | ParentLink::TraceParent
        ),
        span_kind: match span.kind {
            crate::span::SpanKind::Server => SpanKind::Server,
            crate::span::SpanKind::Client => SpanKind::Client,
        },
        name: Cow::Owned(span.name()),
        start_time: system_time(clock, span.start_ns),
        end_time: system_time(clock, span.end_ns.max(span.start_ns)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope(),
    }
}

/// A process's resource for the SDK.
#[must_use]
pub fn sdk_resource(resource: &Resource) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(resource.attributes.iter().map(|(k, v)| {
            match (k.as_str(), v.parse::<i64>()) {
                ("process.pid", Ok(pid)) => KeyValue::new(k.clone(), pid),
                _ => KeyValue::new(k.clone(), v.clone()),
            }
        }))
        .build()
}
