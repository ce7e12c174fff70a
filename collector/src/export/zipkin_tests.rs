use super::*;
use crate::protocol::HttpVersion;
use crate::protocol::db::{Db, DbSystem};
use crate::span::{HttpSpan, ParentLink, SpanId, TraceId};

fn span(kind: SpanKind, payload: Payload) -> Span {
    Span {
        trace_id: TraceId([0xab; 16]),
        span_id: SpanId([0x02; 8]),
        parent_span_id: Some(SpanId([0x01; 8])),
        link: ParentLink::Peer,
        kind,
        start_ns: 5_000_000,
        end_ns: 7_500_000,
        pid: 42,
        comm: "relay".into(),
        local: "[::ffff:127.0.0.1]:8080".parse().unwrap(),
        remote: "127.0.0.1:40000".parse().unwrap(),
        payload,
        incomplete: false,
        error: None,
    }
}

fn http(status: u16) -> Payload {
    Payload::Http(HttpSpan {
        method: "GET".into(),
        target: "/fanout?token=secret".into(),
        host: Some("relay:8080".into()),
        status: Some(status),
        version: Some(HttpVersion::Http11),
        user_agent: None,
        route: None,
    })
}

fn resource() -> Resource {
    Resource {
        service_name: "relay".into(),
        attributes: vec![
            ("service.name".into(), "relay".into()),
            ("host.name".into(), "host-b".into()),
            ("process.pid".into(), "42".into()),
        ],
    }
}

fn encode(span: &Span) -> Json {
    // 1 s after the epoch at monotonic 0.
    zipkin_span(
        span,
        &resource(),
        &WallClock::with_offset(1_000_000_000),
        AttributeOptions::default(),
    )
}

#[test]
fn ids_parent_kind_times_and_endpoints_are_the_agents() {
    let z = encode(&span(SpanKind::Server, http(200)));
    assert_eq!(z["traceId"], "abababababababababababababababab");
    assert_eq!(z["id"], "0202020202020202");
    assert_eq!(z["parentId"], "0101010101010101");
    assert_eq!(z["kind"], "SERVER");
    assert_eq!(z["name"], "GET");
    assert_eq!(z["timestamp"], 1_005_000);
    assert_eq!(z["duration"], 2_500);
    // The local end is the process's own service and address, IPv4-mapped made plain.
    assert_eq!(
        z["localEndpoint"],
        json!({"serviceName": "relay", "ipv4": "127.0.0.1", "port": 8080})
    );
    // An HTTP peer gets no service name: if it is traced, its own span names it.
    assert_eq!(
        z["remoteEndpoint"],
        json!({"ipv4": "127.0.0.1", "port": 40000})
    );
}

#[test]
fn attributes_and_resource_become_tags_and_errors_are_marked() {
    let ok = encode(&span(SpanKind::Server, http(200)));
    let tags = &ok["tags"];
    assert_eq!(tags["http.request.method"], "GET");
    assert_eq!(tags["http.response.status_code"], "200");
    assert_eq!(tags["url.query"], "REDACTED", "the query stays redacted");
    assert_eq!(tags["host.name"], "host-b");
    assert_eq!(tags["process.pid"], "42");
    assert_eq!(tags["otel.scope.name"], "wirespan");
    assert!(
        tags.get("service.name").is_none(),
        "it is the local endpoint's"
    );
    assert!(tags.get("error").is_none());

    let failed = encode(&span(SpanKind::Server, http(503)));
    assert_eq!(failed["tags"]["otel.status_code"], "ERROR");
    assert!(
        failed["tags"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
}

#[test]
fn a_database_call_names_its_server_by_system_and_lasts_at_least_a_microsecond() {
    let mut call = span(
        SpanKind::Client,
        Payload::Db(Db {
            system: DbSystem::Redis,
            operation: "GET".into(),
            collection: None,
            namespace: None,
            query_text: Some("GET ?".into()),
            statement: None,
            status_code: None,
            batch_size: 1,
        }),
    );
    call.remote = "[::1]:6379".parse().unwrap();
    call.end_ns = call.start_ns;
    call.parent_span_id = None;
    let z = encode(&call);
    assert_eq!(z["kind"], "CLIENT");
    assert!(z.get("parentId").is_none(), "a root has no parentId");
    assert_eq!(
        z["remoteEndpoint"],
        json!({"serviceName": "redis", "ipv6": "::1", "port": 6379})
    );
    assert_eq!(z["duration"], 1, "zero would read as unfinished");
    assert_eq!(z["tags"]["db.system.name"], "redis");
}

#[test]
fn endpoints_resolve_from_flag_variable_or_default_and_bad_ones_are_refused() {
    let resolve = |flag: Option<&str>| {
        ZipkinConfig::resolve(
            flag,
            10,
            Duration::from_secs(1),
            AttributeOptions::default(),
        )
    };
    assert_eq!(
        resolve(Some("http://127.0.0.1:9411/api/v2/spans"))
            .unwrap()
            .endpoint,
        "http://127.0.0.1:9411/api/v2/spans"
    );
    for bad in ["127.0.0.1:9411", "ftp://h/api", "not a url"] {
        let e = resolve(Some(bad)).unwrap_err().to_string();
        assert!(e.contains("Zipkin endpoint"), "{bad}: {e}");
    }
}
