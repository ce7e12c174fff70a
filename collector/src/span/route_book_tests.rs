use super::*;
use crate::{
    event::{Conn, ConnKind, GoServe, ProcessExit},
    span::{HttpSpan, ParentLink, SpanId, TraceId},
};

const SERVER_PID: u32 = 10;
const CLIENT_PID: u32 = 20;

/// Routes like a `ServeMux` with `/items/{id}`: what a program's table answers in these tests.
struct Items;

impl ProgramRoutes for Items {
    fn route(&self, _method: &str, _host: Option<&str>, path: &str) -> Option<String> {
        path.starts_with("/items/")
            .then(|| "/items/{id}".to_owned())
    }
}

fn book(readable: bool) -> RouteBook {
    let reader: TableReader = Box::new(move |pid, server| {
        assert_eq!((pid, server), (SERVER_PID, 0xc000_1000));
        if readable {
            Ok(Box::new(Items) as Box<dyn ProgramRoutes>)
        } else {
            Err("handler type main.logger is not a known router".to_owned())
        }
    });
    RouteBook::new(RouteRules::default(), Some(reader))
}

fn serve_start(server: u64) -> Event {
    Event::GoServe(GoServe {
        client: false,
        start: true,
        pid: SERVER_PID,
        tid: SERVER_PID,
        goid: 7,
        method: "GET".into(),
        path: "/items/17".into(),
        host: String::new(),
        status: None,
        server,
        ts_ns: 1,
    })
}

fn accept() -> Event {
    Event::Conn(Conn {
        kind: ConnKind::Accept,
        pid: SERVER_PID,
        tid: SERVER_PID,
        comm: "svc".into(),
        conn_id: 1,
        local: "127.0.0.1:8080".parse().unwrap(),
        remote: "127.0.0.1:40000".parse().unwrap(),
        ts_ns: 1,
        mode: crate::event::AttachMode::Tracepoint,
        errno: None,
    })
}

fn http_span(kind: SpanKind, pid: u32, target: &str) -> Span {
    let (local, remote) = match kind {
        SpanKind::Server => ("127.0.0.1:8080", "127.0.0.1:40000"),
        SpanKind::Client => ("127.0.0.1:40000", "127.0.0.1:8080"),
    };
    Span {
        trace_id: TraceId([1; 16]),
        span_id: SpanId([2; 8]),
        parent_span_id: None,
        link: ParentLink::Root,
        kind,
        start_ns: 0,
        end_ns: 1,
        pid,
        comm: "svc".into(),
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        payload: Payload::Http(HttpSpan {
            method: "GET".into(),
            target: target.into(),
            host: Some("localhost:8080".into()),
            status: Some(200),
            version: None,
            user_agent: None,
            route: None,
        }),
        incomplete: false,
        error: None,
    }
}

fn route_of(span: &Span) -> Option<(String, RouteSource)> {
    match &span.payload {
        Payload::Http(h) => h.route.as_ref().map(|r| (r.template.clone(), r.source)),
        _ => None,
    }
}

#[test]
fn a_programs_own_pattern_names_its_server_and_its_local_callers() {
    let mut book = book(true);
    book.on_event(&accept());
    book.on_event(&serve_start(0xc000_1000));
    // The same server again is not read twice.
    book.on_event(&serve_start(0xc000_1000));
    assert_eq!(book.stats.tables, 1);

    let mut server = http_span(SpanKind::Server, SERVER_PID, "/items/17?x=1");
    book.assign(&mut server);
    assert_eq!(
        route_of(&server),
        Some(("/items/{id}".into(), RouteSource::Program))
    );
    assert_eq!(server.name(), "GET /items/{id}");

    let mut client = http_span(SpanKind::Client, CLIENT_PID, "/items/99");
    book.assign(&mut client);
    assert_eq!(
        route_of(&client),
        Some(("/items/{id}".into(), RouteSource::Program)),
        "the callee listens on this host: the caller's span carries its route"
    );
    assert_eq!(book.take_wanted(), Vec::<u32>::new());
}

#[test]
fn without_a_readable_table_the_rules_decide_and_unknown_servers_are_asked_for_once() {
    let mut book = book(false);
    let mut server = http_span(SpanKind::Server, SERVER_PID, "/items/17");
    book.assign(&mut server);
    book.assign(&mut server.clone());
    assert_eq!(book.take_wanted(), vec![SERVER_PID], "asked for once");
    assert_eq!(book.take_wanted(), Vec::<u32>::new());

    book.on_event(&serve_start(0xc000_1000));
    assert_eq!(book.stats.unreadable, 1);
    let mut again = http_span(SpanKind::Server, SERVER_PID, "/items/17");
    book.assign(&mut again);
    assert!(
        book.take_wanted().is_empty(),
        "known server, unreadable: not asked again"
    );

    // A callee on this host with no table: the heuristic names its server span, not the call.
    book.on_event(&accept());
    let mut local_call = http_span(SpanKind::Client, CLIENT_PID, "/items/99");
    book.assign(&mut local_call);
    assert_eq!(route_of(&local_call), None);
    book.listeners.clear();
    // A callee on another host (no accept seen for the address called): no route.
    let mut client = http_span(SpanKind::Client, CLIENT_PID, "/items/99");
    book.assign(&mut client);
    assert_eq!(route_of(&client), None);
    assert_eq!(client.name(), "GET");

    book.on_event(&Event::Exit(ProcessExit {
        pid: SERVER_PID,
        ts_ns: 2,
    }));
    book.assign(&mut http_span(SpanKind::Server, SERVER_PID, "/"));
    assert_eq!(
        book.take_wanted(),
        vec![SERVER_PID],
        "a new process of that pid is asked for"
    );
}

#[test]
fn a_server_span_in_the_same_batch_names_its_listener_for_the_client_before_it() {
    let mut book = book(true);
    book.on_event(&serve_start(0xc000_1000));
    // No accept seen (the connection predates the agent); the client comes first.
    let mut batch = vec![
        http_span(SpanKind::Client, CLIENT_PID, "/items/5"),
        http_span(SpanKind::Server, SERVER_PID, "/items/5"),
    ];
    book.assign_all(&mut batch);
    assert_eq!(batch[0].name(), "GET /items/{id}");
    assert_eq!(batch[1].name(), "GET /items/{id}");
}

#[test]
fn replays_use_the_rules_alone() {
    let mut book = RouteBook::new(RouteRules::default(), None);
    book.on_event(&serve_start(0xc000_1000));
    let mut server = http_span(SpanKind::Server, SERVER_PID, "/items/17");
    book.assign(&mut server);
    assert_eq!(book.take_wanted(), Vec::<u32>::new());
    assert_eq!(book.stats.tables, 0);
}
