//! Unprivileged: recorded event streams (made by the privileged tests with `wirespan record`)
//! replay through the whole chain (conn → protocol → correlate) into span trees, compared with
//! golden files in tests/golden. The comparison leaves out ids and times and keeps the parent
//! structure, names, kinds, how each parent was found, status and attributes. On a mismatch the
//! actual tree is written beside the golden file as `<case>.actual.txt`. `wirespan map` is
//! checked on a recording too.

use std::{fmt::Write as _, path::PathBuf};

use wirespan::{
    agent::{self, Output},
    conn::ConnTable,
    correlate::{Correlator, DEFAULT_WINDOW_NS},
    export::SpanSink,
    source::recording::RecordingReader,
    span::{
        IdGenerator, Span, Value, processes::Resources, route::RouteRules, route_book::RouteBook,
    },
};

#[derive(Default)]
struct Collect(Vec<Span>);

impl SpanSink for Collect {
    fn span(&mut self, span: &Span) -> std::io::Result<()> {
        self.0.push(span.clone());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The spans of a fixture, and how many of them waited in vain for a parent.
fn spans_of(fixture: &str) -> (Vec<Span>, u64) {
    let path =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).join(fixture);
    let mut reader = RecordingReader::open(&path).unwrap();
    let mut sink = Collect::default();
    let output = Output::Spans {
        table: ConnTable::default(),
        correlator: Box::new(Correlator::new(
            DEFAULT_WINDOW_NS,
            IdGenerator::with_seed(7),
        )),
        sink: &mut sink,
        resources: Resources::offline(),
        routes: Box::new(RouteBook::new(RouteRules::default(), None)),
    };
    let summary = agent::replay(&mut reader, output).unwrap();
    (sink.0, summary.spans.unwrap().orphans)
}

/// Each trace as an indented tree, traces in the order of their roots' start; ids and times
/// left out.
fn render(spans: &[Span]) -> String {
    let mut out = String::new();
    let mut roots: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.parent_span_id
                .is_none_or(|p| !spans.iter().any(|o| o.span_id == p))
        })
        .collect();
    roots.sort_by_key(|s| s.start_ns);
    for root in roots {
        out.push_str("trace\n");
        let mut stack = vec![(root, 1)];
        while let Some((span, depth)) = stack.pop() {
            let mut attrs: Vec<String> = span
                .attributes(wirespan::span::AttributeOptions::default())
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Str(s) => format!("{k}={s}"),
                    Value::Int(i) => format!("{k}={i}"),
                })
                .collect();
            attrs.sort();
            let _ = writeln!(
                out,
                "{}{:?} {} [{:?}]{} {}",
                "  ".repeat(depth),
                span.kind,
                span.name(),
                span.link,
                if span.is_error() {
                    format!(" ERROR {}", span.status_message())
                } else {
                    String::new()
                },
                attrs.join(" ")
            );
            let mut children: Vec<&Span> = spans
                .iter()
                .filter(|c| c.parent_span_id == Some(span.span_id))
                .collect();
            children.sort_by_key(|c| std::cmp::Reverse(c.start_ns));
            stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        }
    }
    out
}

fn check(case: &str, actual: &str) {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden"));
    let golden = dir.join(format!("{case}.txt"));
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    if actual != expected {
        let written = dir.join(format!("{case}.actual.txt"));
        std::fs::write(&written, actual).unwrap();
        panic!(
            "{case}: span trees differ from {}; actual written to {}:\n{actual}",
            golden.display(),
            written.display()
        );
    }
}

#[test]
fn keep_alive_requests_from_curl_like_client_to_python_are_one_trace_each() {
    let (spans, orphans) = spans_of("http_keepalive.rec");
    assert_eq!(orphans, 0);
    // Three requests on one keep-alive connection: client and server span each, the server's
    // parent the client at the other end (five-tuple + sequence number).
    assert_eq!(spans.len(), 6);
    check("spans_http_keepalive", &render(&spans));
}

#[test]
fn http1_http2_and_grpc_exchanges_pair_up_by_sequence_number_or_stream() {
    let (spans, orphans) = spans_of("http_grpc.rec");
    // The recording's client and servers share one event-loop thread, which reads frames on
    // the HTTP/2 connection it serves between its own HTTP/1 calls: two of those calls wait for
    // a serving request that never contains them, then start from their traceparent. The
    // thread heuristic is for thread-per-request servers; this pins down its limit.
    assert_eq!(orphans, 2);
    check("spans_http_grpc", &render(&spans));
}

/// tests/fixtures/db_shop.rec (recorded by tests/privileged_db.rs with
/// WIRESPAN_RECORD_FIXTURES=1): examples/db-shop's `/redis`, `/pg` and `/mysql` and
/// tests/support/db_clients.py's `/py`, three requests each. Each request is one trace: its
/// server span with, under it, a client span per Redis command or SQL statement, named per the
/// database conventions, with the failing ones' codes; no span shows a value the programs wrote.
#[test]
fn redis_postgres_and_mysql_calls_are_client_spans_under_their_requests() {
    let (spans, orphans) = spans_of("db_shop.rec");
    let tree = render(&spans);
    assert!(
        !tree.contains("db-shop-secret"),
        "a span shows a value the programs wrote:\n{tree}"
    );
    for (name, code) in [
        ("LPUSH", "db.response.status_code=WRONGTYPE"),
        ("PREPARE missing_orders", "db.response.status_code=42P01"),
        ("SELECT missing_users", "db.response.status_code=1146"),
    ] {
        assert!(
            tree.lines()
                .any(|l| l.contains(&format!("Client {name} ")) && l.contains(code)),
            "no failing {name} ({code}):\n{tree}"
        );
    }
    assert_eq!(orphans, 0, "{tree}");
    // Three requests to each of the four handlers, a trace each.
    assert_eq!(tree.lines().filter(|l| *l == "trace").count(), 12, "{tree}");
    check("db_shop_spans", &tree);
}

#[test]
fn the_service_map_of_a_recording_has_its_edge_with_counts() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/http_keepalive.rec"
    );
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wirespan"))
            .args(["map", "--replay", fixture, "--format", format])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run("table");
    let row = table.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    // The recording's client (the test process that made it) called Python three times.
    assert_eq!(
        &cells[..4],
        ["privileged_reco", "python3", "3", "0"],
        "{table}"
    );
    let dot = run("dot");
    assert!(
        dot.contains("\"privileged_reco\" -> \"python3\" [label=\"3 req, 0 err"),
        "{dot}"
    );
}
