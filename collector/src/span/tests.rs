use super::*;

fn span(kind: SpanKind, payload: Payload) -> Span {
    Span {
        trace_id: TraceId([1; 16]),
        span_id: SpanId([2; 8]),
        parent_span_id: None,
        link: ParentLink::Root,
        kind,
        start_ns: 0,
        end_ns: 1,
        pid: 1,
        comm: "svc".into(),
        local: "127.0.0.1:8080".parse().unwrap(),
        remote: "127.0.0.1:40000".parse().unwrap(),
        payload,
        incomplete: false,
        error: None,
    }
}

fn http(status: u16) -> Payload {
    Payload::Http(HttpSpan {
        method: "GET".into(),
        target: "/users/7?token=secret".into(),
        host: Some("svc:8080".into()),
        status: Some(status),
        version: Some(HttpVersion::Http11),
        user_agent: Some("curl/8".into()),
        route: None,
    })
}

#[test]
fn http_names_use_the_route_never_the_path() {
    let mut server = span(SpanKind::Server, http(404));
    assert_eq!(server.name(), "GET", "no route known: the method alone");
    assert!(!server.is_error(), "4xx is not a server error");
    assert!(span(SpanKind::Client, http(404)).is_error());
    assert!(span(SpanKind::Server, http(503)).is_error());
    if let Payload::Http(h) = &mut server.payload {
        h.route = Some(Route {
            template: "/users/{id}".into(),
            source: RouteSource::Heuristic,
        });
    }
    assert_eq!(server.name(), "GET /users/{id}");
    let mut unnamed = server.clone();
    if let Payload::Http(h) = &mut unnamed.payload {
        h.route = Some(Route {
            template: String::new(),
            source: RouteSource::Path,
        });
    }
    assert_eq!(unnamed.name(), "GET", "an empty route names nothing");
    let attrs = server.attributes(AttributeOptions::default());
    assert!(attrs.contains(&("http.route", Value::Str("/users/{id}".into()))));
    assert!(attrs.contains(&("wirespan.route.source", Value::Str("heuristic".into()))));
    assert!(attrs.contains(&("url.query", Value::Str("REDACTED".into()))));
    assert!(attrs.contains(&("client.port", Value::Int(40000))));
    // The name the client used, not the peer's address.
    assert!(attrs.contains(&("server.address", Value::Str("svc".into()))));
    assert!(attrs.contains(&("server.port", Value::Int(8080))));
    assert!(attrs.contains(&("network.peer.address", Value::Str("127.0.0.1".into()))));
    let mut odd = span(SpanKind::Client, http(200));
    if let Payload::Http(h) = &mut odd.payload {
        h.method = "PURGE".into();
    }
    assert_eq!(odd.name(), "HTTP");
    let attrs = odd.attributes(AttributeOptions::default());
    assert!(attrs.contains(&("http.request.method", Value::Str("_OTHER".into()))));
    assert!(attrs.contains(&("http.request.method_original", Value::Str("PURGE".into()))));
}

#[test]
fn host_values_split_into_address_and_port() {
    assert_eq!(
        split_host("localhost:8080"),
        Some(("localhost", Some(8080)))
    );
    assert_eq!(split_host("example.com"), Some(("example.com", None)));
    assert_eq!(split_host("[::1]:9090"), Some(("::1", Some(9090))));
    assert_eq!(split_host("[::1]"), Some(("::1", None)));
    assert_eq!(split_host("::1"), Some(("::1", None)));
    assert_eq!(split_host(""), None);
    assert_eq!(split_host(":80"), None);
}

fn grpc(kind: SpanKind, status: u32) -> Span {
    span(
        kind,
        Payload::Grpc(GrpcSpan {
            service: "wirespan.echo.Echo".into(),
            method: "Say".into(),
            status: Some(status),
            message: Some("asked to fail".into()),
            authority: Some("localhost:50051".into()),
        }),
    )
}

#[test]
fn grpc_follows_the_current_rpc_conventions() {
    let client = grpc(SpanKind::Client, 5);
    assert_eq!(client.name(), "wirespan.echo.Echo/Say");
    assert_eq!(client.status_message(), "NOT_FOUND: asked to fail");
    assert!(
        client.is_error(),
        "a client span fails on every code but OK"
    );
    let attrs = client.attributes(AttributeOptions::default());
    for want in [
        ("rpc.system.name", Value::Str("grpc".into())),
        ("rpc.method", Value::Str("wirespan.echo.Echo/Say".into())),
        ("rpc.response.status_code", Value::Str("NOT_FOUND".into())),
        ("server.address", Value::Str("localhost".into())),
        ("server.port", Value::Int(50051)),
    ] {
        assert!(attrs.contains(&want), "{want:?} in {attrs:?}");
    }
    assert!(
        !attrs
            .iter()
            .any(|(k, _)| *k == "rpc.system" || *k == "rpc.service")
    );
    let dup = client.attributes(AttributeOptions {
        rpc: RpcConventions::from_opt_in(Some("http, rpc/dup")),
        ..AttributeOptions::default()
    });
    assert!(dup.contains(&("rpc.grpc.status_code", Value::Int(5))));
    assert!(dup.contains(&("rpc.service", Value::Str("wirespan.echo.Echo".into()))));
    assert!(dup.contains(&("rpc.system.name", Value::Str("grpc".into()))));
    assert_eq!(
        RpcConventions::from_opt_in(Some("rpc")),
        RpcConventions::Current
    );

    // A server span is an error only for the codes that are the server's own fault.
    assert!(!grpc(SpanKind::Server, 5).is_error(), "NOT_FOUND");
    assert!(!grpc(SpanKind::Server, 3).is_error(), "INVALID_ARGUMENT");
    assert_eq!(grpc(SpanKind::Server, 5).error_type(), None);
    for code in [2, 4, 12, 13, 14, 15] {
        assert!(grpc(SpanKind::Server, code).is_error(), "code {code}");
    }
    assert_eq!(
        grpc(SpanKind::Server, 13).error_type().as_deref(),
        Some("INTERNAL")
    );
    assert!(!grpc(SpanKind::Client, 0).is_error());
}
