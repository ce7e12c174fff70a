//! Views of exchanges (`wirespan exchanges`): one line per request/response on the console, or
//! one JSON object per line.

use std::io::Write;

use serde::Serialize;

use super::ExchangeSink;
use crate::clock::WallClock;
use crate::{
    conn::ConnExchange,
    protocol::{Detail, Http},
};

/// `11:06:43.123456 curl pid=42 conn=4097 127.0.0.1:40000 -> 127.0.0.1:8080 1.234ms HTTP/1.1 GET / -> 200 ...`
pub struct ConsoleExchanges<W: Write> {
    out: W,
    clock: WallClock,
}

impl<W: Write> ConsoleExchanges<W> {
    pub fn new(out: W, clock: WallClock) -> Self {
        Self { out, clock }
    }
}

impl<W: Write> ExchangeSink for ConsoleExchanges<W> {
    fn exchange(&mut self, x: &ConnExchange) -> std::io::Result<()> {
        let e = &x.exchange;
        let micros = e.end_ns.saturating_sub(e.start_ns) / 1_000;
        let millis = format!("{}.{:03}", micros / 1_000, micros % 1_000);
        writeln!(
            self.out,
            "{} {} pid={} conn={} {} -> {} {millis}ms {e}",
            self.clock.time_of_day(e.start_ns),
            x.comm,
            x.pid,
            x.conn_id,
            x.local,
            x.remote
        )
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[derive(Serialize)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "the exchange's flags, one JSON field each"
)]
struct Record<'a> {
    conn_id: u64,
    pid: u32,
    comm: &'a str,
    saddr: String,
    sport: u16,
    daddr: String,
    dport: u16,
    /// `client` when this process sent the request, `server` when it received it.
    role: &'static str,
    protocol: &'static str,
    version: Option<&'static str>,
    method: &'a str,
    target: &'a str,
    host: Option<&'a str>,
    status: Option<u16>,
    stream_id: Option<u32>,
    grpc_service: Option<&'a str>,
    grpc_method: Option<&'a str>,
    grpc_status: Option<u32>,
    grpc_message: Option<&'a str>,
    /// Database commands: `db.*` as in their spans (the query text sanitized).
    db_operation: Option<&'a str>,
    db_collection: Option<&'a str>,
    db_namespace: Option<&'a str>,
    db_query_text: Option<&'a str>,
    db_status_code: Option<&'a str>,
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
    user_agent: Option<&'a str>,
    start_ns: u64,
    end_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
    headers_unknown: bool,
    truncated: bool,
    reset: bool,
    no_response: bool,
}

pub struct JsonExchanges<W: Write> {
    out: W,
}

impl<W: Write> JsonExchanges<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> ExchangeSink for JsonExchanges<W> {
    fn exchange(&mut self, x: &ConnExchange) -> std::io::Result<()> {
        let e = &x.exchange;
        let no_http = Http::default();
        let http = e.detail.http().unwrap_or(&no_http);
        let (grpc, db) = match &e.detail {
            Detail::Grpc(g) => (Some(g), None),
            Detail::Db(d) => (None, Some(d)),
            Detail::Http(_) | Detail::Tcp => (None, None),
        };
        let record = Record {
            conn_id: x.conn_id,
            pid: x.pid,
            comm: &x.comm,
            saddr: x.local.ip().to_string(),
            sport: x.local.port(),
            daddr: x.remote.ip().to_string(),
            dport: x.remote.port(),
            role: if e.request_direction == crate::event::Direction::Egress {
                "client"
            } else {
                "server"
            },
            protocol: match (grpc, db) {
                (Some(_), _) => "grpc",
                (_, Some(d)) => d.system.as_str(),
                _ if e.detail == Detail::Tcp => "tcp",
                _ => "http",
            },
            version: http.version.map(crate::protocol::HttpVersion::as_str),
            method: &http.method,
            target: &http.target,
            host: http.host.as_deref(),
            status: http.status,
            stream_id: http.stream_id,
            grpc_service: grpc.map(|g| g.service.as_str()),
            grpc_method: grpc.map(|g| g.method.as_str()),
            grpc_status: grpc.and_then(|g| g.status),
            grpc_message: grpc.and_then(|g| g.message.as_deref()),
            db_operation: db.map(|d| d.operation.as_str()),
            db_collection: db.and_then(|d| d.collection.as_deref()),
            db_namespace: db.and_then(|d| d.namespace.as_deref()),
            db_query_text: db.and_then(|d| d.query_text.as_deref()),
            db_status_code: db.and_then(|d| d.status_code.as_deref()),
            traceparent: http.headers.traceparent.as_deref(),
            tracestate: http.headers.tracestate.as_deref(),
            user_agent: http.headers.user_agent.as_deref(),
            start_ns: e.start_ns,
            end_ns: e.end_ns,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            headers_unknown: e.flags.headers_unknown,
            truncated: e.flags.truncated,
            reset: e.flags.reset,
            no_response: e.flags.no_response,
        };
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
