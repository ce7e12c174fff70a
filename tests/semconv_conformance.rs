//! Unprivileged: every attribute key wirespan puts on a span or a resource is defined, and not
//! deprecated, in the pinned OpenTelemetry semantic conventions (the Python package
//! `opentelemetry-semantic-conventions`, read by tests/support/semconv.rs). Spans of every kind
//! are built through the library — HTTP and gRPC, server and client, answered, failed and cut
//! short, and a failed connect — so a key added to any branch of `Span::attributes` is checked.
//! The end-to-end tests check what the agent really exported the same way (`file_spans`).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::semconv::{self, assert_conforming};
use wirespan::{
    protocol::HttpVersion,
    span::{
        AttributeOptions, ErrorType, GrpcSpan, HttpSpan, ParentLink, Payload, RpcConventions, Span,
        SpanId, SpanKind, TraceId,
        resource::{ProcessImage, Resource, ResourceStyle},
    },
};

fn span(kind: SpanKind, payload: Payload, error: Option<ErrorType>) -> Span {
    Span {
        trace_id: TraceId([1; 16]),
        span_id: SpanId([2; 8]),
        parent_span_id: Some(SpanId([3; 8])),
        link: ParentLink::Peer,
        kind,
        start_ns: 1,
        end_ns: 2,
        pid: 42,
        comm: "svc".into(),
        local: "127.0.0.1:8080".parse().unwrap(),
        remote: "127.0.0.1:40000".parse().unwrap(),
        payload,
        incomplete: error.is_some(),
        error,
    }
}

fn http(target: &str, status: Option<u16>) -> Payload {
    Payload::Http(HttpSpan {
        method: "GET".into(),
        target: target.into(),
        host: Some("localhost:8080".into()),
        status,
        version: Some(HttpVersion::Http11),
        user_agent: Some("curl/8.5".into()),
        route: Some(wirespan::span::Route {
            template: "/users/{id}".into(),
            source: wirespan::span::RouteSource::Heuristic,
        }),
    })
}

fn grpc(status: Option<u32>) -> Payload {
    Payload::Grpc(GrpcSpan {
        service: "wirespan.echo.Echo".into(),
        method: "Say".into(),
        status,
        message: status.filter(|s| *s != 0).map(|_| "asked to fail".into()),
        authority: Some("localhost:50051".into()),
    })
}

/// One span of each shape the agent makes.
fn every_kind_of_span() -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for kind in [SpanKind::Server, SpanKind::Client] {
        let shapes = [
            (
                "HTTP 200 with a query",
                http("/order/17?id=3", Some(200)),
                None,
            ),
            ("HTTP 404", http("/missing", Some(404)), None),
            ("HTTP 503", http("/busy", Some(503)), None),
            (
                "HTTP without a response",
                http("/slow", None),
                Some(ErrorType::NoResponse),
            ),
            (
                "HTTP reset",
                http("/reset", None),
                Some(ErrorType::ConnectionReset),
            ),
            (
                "HTTP with no method",
                Payload::Http(HttpSpan {
                    method: String::new(),
                    target: String::new(),
                    host: None,
                    status: None,
                    version: None,
                    user_agent: None,
                    route: None,
                }),
                None,
            ),
            ("gRPC OK", grpc(Some(0)), None),
            ("gRPC NOT_FOUND", grpc(Some(5)), None),
            ("gRPC INTERNAL", grpc(Some(13)), None),
            (
                "gRPC without a status",
                grpc(None),
                Some(ErrorType::Timeout),
            ),
        ];
        for (what, payload, error) in shapes {
            spans.push((format!("{what} ({kind:?})"), span(kind, payload, error)));
        }
    }
    for error in [
        ErrorType::ConnectionRefused,
        ErrorType::Timeout,
        ErrorType::Other,
    ] {
        spans.push((
            format!("failed connect ({error:?})"),
            span(SpanKind::Client, Payload::Connect, Some(error)),
        ));
    }
    spans
}

#[test]
fn every_span_attribute_key_is_a_current_semantic_convention() {
    let Some(conventions) = semconv::require("Span::attributes") else {
        return;
    };
    // Offending key → (what is wrong, the spans that carry it).
    let mut offending: BTreeMap<&str, (String, BTreeSet<String>)> = BTreeMap::new();
    for (what, span) in every_kind_of_span() {
        for (show_query, rpc) in [
            (false, RpcConventions::Current),
            (true, RpcConventions::Current),
        ] {
            let attributes = span.attributes(AttributeOptions { show_query, rpc });
            assert!(!attributes.is_empty(), "{what}: no attributes");
            for (key, _) in attributes {
                if let Some(problem) = conventions.problem(key) {
                    let entry = offending.entry(key).or_insert((problem, BTreeSet::new()));
                    entry.1.insert(what.clone());
                }
            }
        }
    }
    let list: Vec<String> = offending
        .iter()
        .map(|(key, (problem, carriers))| {
            let carriers: Vec<&str> = carriers.iter().map(String::as_str).collect();
            format!("  {key}: {problem}\n    on: {}", carriers.join("; "))
        })
        .collect();
    assert!(
        list.is_empty(),
        "span attribute keys that do not conform to the OpenTelemetry semantic conventions \
         (opentelemetry-semantic-conventions {}):\n{}",
        conventions.version,
        list.join("\n")
    );
}

#[test]
fn every_resource_attribute_key_is_a_current_semantic_convention() {
    let style = ResourceStyle {
        host_name: "host".into(),
        show_command_args: false,
    };
    let images = [
        // A process with nothing set: its executable names it.
        ProcessImage {
            pid: 7,
            exe: "/usr/bin/curl",
            comm: "curl",
            args: b"curl\0-s\0http://localhost/\0",
            env: b"PATH=/usr/bin\0",
        },
        // OTEL_SERVICE_NAME, and an exited process known only by its command name.
        ProcessImage {
            pid: 8,
            exe: "",
            comm: "python3",
            args: b"",
            env: b"OTEL_SERVICE_NAME=orders\0",
        },
    ];
    let keys: Vec<String> = images
        .iter()
        .flat_map(|image| Resource::of(image, &style).attributes)
        .map(|(key, _)| key)
        .collect();
    assert!(keys.iter().any(|k| k == "service.name"), "{keys:?}");
    // A process's own OTEL_RESOURCE_ATTRIBUTES are passed through as given: its keys are the
    // user's, not checked here.
    assert_conforming(keys.iter().map(String::as_str), "Resource::of");
}

/// The checker itself: it reads the package's definitions (not a list of ours), knows our
/// vendor namespace and template attributes, and names the replacement of a deprecated key.
#[test]
fn the_check_flags_undefined_and_deprecated_keys() {
    let Some(conventions) = semconv::require("the checker") else {
        return;
    };
    assert_eq!(conventions.version, semconv::SEMCONV_PY_VERSION);
    for fine in [
        "http.request.method",
        "service.name",
        "http.request.header.x-request-id",
        "wirespan.route.source",
        "rpc.system.name",
        "rpc.response.status_code",
    ] {
        assert_eq!(conventions.problem(fine), None, "{fine}");
    }
    assert_eq!(
        conventions.problem("http.request.header").as_deref(),
        Some("not defined"),
        "a template is only a prefix"
    );
    assert_eq!(
        conventions.problem("wirespan_route").as_deref(),
        Some("not defined")
    );
    let why = conventions.problem("http.method").unwrap_or_default();
    assert!(
        why.starts_with("deprecated") && why.contains("http.request.method"),
        "{why}"
    );
    let why = conventions.problem("rpc.system").unwrap_or_default();
    assert!(why.contains("rpc.system.name"), "{why}");
    let caught = std::panic::catch_unwind(|| {
        assert_conforming(["net.peer.name", "server.port", "no.such.key"], "a sample");
    });
    let message = caught
        .expect_err("deprecated and undefined keys fail")
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("net.peer.name: deprecated")
            && message.contains("no.such.key: not defined")
            && !message.contains("server.port"),
        "{message}"
    );
}
