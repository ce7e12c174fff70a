//! HTTP/2 exchanges whose header blocks could not be decoded from the bytes (the capture joined
//! a connection mid-way, so its HPACK table was unknown) take their headers from the Go
//! uprobes instead. This is what the uprobes are for: warm connections keep full headers.
//! - grpc-go hands them over already decoded (`GoHeaders`), keyed by process, connection and
//!   stream.
//! - A net/http handler served over HTTP/2 reports its request's method, path and host
//!   (`GoServe`) and its stream and connection (`GoConnUse`) from the same `ServeHTTP` entry
//!   (in that order, as the probe reserves them; either order is taken).
//! - A net/http client call reports its request on the calling goroutine (`GoServe`); HTTP/2
//!   writes the request from a goroutine it starts for the call, so the exchange's writer or
//!   that writer's parent is the caller.

use std::{collections::HashMap, net::SocketAddr};

use crate::{
    conn::ConnExchange,
    event::Direction,
    protocol::{Detail, Grpc, Http, HttpVersion},
    source::{ConnRole, GoConnUse, GoHeaders, GoServe, HeadersSource},
};

/// Header blocks kept at most; the table starts over beyond it (blocks are used within
/// milliseconds of arriving).
const MAX_BLOCKS: usize = 65_536;

type Key = (u32, SocketAddr, SocketAddr, u32);

/// What grpc-go said about a stream.
#[derive(Debug, Default, Clone)]
struct StreamHeaders {
    request: Vec<(String, String)>,
    trailers: Vec<(String, String)>,
    /// When a Go handler began serving the stream.
    served_from_ns: Option<u64>,
}

#[derive(Debug, Default)]
pub struct GoHeaderStore {
    streams: HashMap<Key, StreamHeaders>,
    /// net/http handlers' requests, waiting for the handler's HTTP/2 stream: by (pid,
    /// goroutine). A handler served over HTTP/1 reports a connection without a stream, which
    /// removes its entry; the handler's return removes what is still unpaired.
    handler_requests: HashMap<(u32, u64), HandlerRequest>,
    /// net/http handlers whose HTTP/2 stream came first, waiting for their request.
    handler_streams: HashMap<(u32, u64), Key>,
    /// net/http client calls in progress: by (pid, calling goroutine), the request's fields.
    client_calls: HashMap<(u32, u64), Vec<(String, String)>>,
}

/// A handler's request fields and when its `ServeHTTP` began.
type HandlerRequest = (Vec<(String, String)>, u64);

/// A net/http request's fields as HTTP/2 pseudo-headers.
fn request_fields(g: &GoServe) -> Vec<(String, String)> {
    let mut fields = vec![
        (":method".to_owned(), g.method.clone()),
        (":path".to_owned(), g.path.clone()),
    ];
    if !g.host.is_empty() {
        fields.push((":authority".to_owned(), g.host.clone()));
    }
    fields
}

impl GoHeaderStore {
    /// A handler's connection, and its HTTP/2 stream if it has one (`ServeHTTP` entry).
    pub fn on_conn_use(&mut self, u: &GoConnUse) {
        if u.role == ConnRole::Server && u.stream_id.is_none() {
            // Served over HTTP/1: its bytes name the request, so the fields are not needed
            // (without this, every HTTP/1 request would stay until the table is cleared).
            self.handler_requests.remove(&(u.pid, u.goid));
            return;
        }
        if let (ConnRole::Server, Some(stream), Some((local, remote))) =
            (u.role, u.stream_id, u.conn.endpoints)
        {
            let key = (u.pid, local, remote, stream);
            if let Some(request) = self.handler_requests.remove(&(u.pid, u.goid)) {
                self.stream_request(key, request);
            } else {
                if self.handler_streams.len() >= MAX_BLOCKS {
                    self.handler_streams.clear();
                }
                self.handler_streams.insert((u.pid, u.goid), key);
            }
        }
    }

    fn stream_request(&mut self, key: Key, (request, served_from_ns): HandlerRequest) {
        if self.streams.len() >= MAX_BLOCKS {
            self.streams.clear();
        }
        let entry = self.streams.entry(key).or_default();
        entry.request = request;
        entry.served_from_ns = Some(served_from_ns);
    }

    /// A net/http request at a handler's or a client call's start.
    pub fn on_serve(&mut self, g: &GoServe) {
        if !g.start && !g.client {
            // The handler returned: whatever it left unpaired will never pair. (A client
            // call's fields stay: an HTTP/2 response body is read after roundTrip returns.)
            self.handler_requests.remove(&(g.pid, g.goid));
            self.handler_streams.remove(&(g.pid, g.goid));
            return;
        }
        if !g.start || g.method.is_empty() {
            return;
        }
        if g.client {
            if self.client_calls.len() >= MAX_BLOCKS {
                self.client_calls.clear();
            }
            self.client_calls.insert((g.pid, g.goid), request_fields(g));
        } else if let Some(key) = self.handler_streams.remove(&(g.pid, g.goid)) {
            self.stream_request(key, (request_fields(g), g.ts_ns));
        } else {
            if self.handler_requests.len() >= MAX_BLOCKS {
                self.handler_requests.clear();
            }
            self.handler_requests
                .insert((g.pid, g.goid), (request_fields(g), g.ts_ns));
        }
    }

    /// The request fields of a client call whose HTTP/2 request was written by goroutine
    /// `writer` (or, from a goroutine the call started, by its parent `caller`).
    fn client_call(
        &self,
        pid: u32,
        writer: Option<u64>,
        caller: Option<u64>,
    ) -> Option<&[(String, String)]> {
        [writer, caller]
            .into_iter()
            .flatten()
            .find_map(|goid| self.client_calls.get(&(pid, goid)))
            .map(Vec::as_slice)
    }

    pub fn on_headers(&mut self, h: &GoHeaders) {
        let Some((local, remote)) = h.conn.endpoints else {
            return;
        };
        if self.streams.len() >= MAX_BLOCKS {
            self.streams.clear();
        }
        let entry = self
            .streams
            .entry((h.pid, local, remote, h.stream_id))
            .or_default();
        let fields = h.fields.iter().map(|f| (f.name.clone(), f.value.clone()));
        let is_request = h.fields.iter().any(|f| f.name == ":path");
        match h.source {
            HeadersSource::ServerReceived | HeadersSource::Sent if is_request => {
                entry.request = fields.collect();
            }
            _ if h.fields.iter().any(|f| f.name == "grpc-status") => {
                entry.trailers = fields.collect();
            }
            _ => {}
        }
    }

    /// When a span is made: a gRPC status the trailers' bytes did not give (an HPACK reference
    /// the capture could not resolve) may come from grpc-go, whose trailers event follows the
    /// read that completed the exchange. The stream's blocks are dropped then.
    pub fn fill_status(&mut self, x: &mut ConnExchange) {
        let stream = x.exchange.detail.stream_id();
        let Some(stream) = stream else {
            return;
        };
        let Some(known) = self.streams.remove(&(x.pid, x.local, x.remote, stream)) else {
            return;
        };
        if let Detail::Grpc(g) = &mut x.exchange.detail
            && g.status.is_none()
        {
            let get = |name: &str| {
                known
                    .trailers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            g.status = get("grpc-status").and_then(|s| s.parse().ok());
            g.message = g.message.take().or_else(|| get("grpc-message"));
        }
    }

    /// Fill in an HTTP/2 exchange whose request headers the bytes did not give. `parent_of`
    /// names a goroutine's parent (for a client call's writer goroutine).
    pub fn fill(&mut self, x: &mut ConnExchange, parent_of: impl Fn(u32, u64) -> Option<u64>) {
        let (http, unknown) = match &x.exchange.detail {
            Detail::Http(h) => (h, h.method.is_empty() || x.exchange.flags.headers_unknown),
            Detail::Grpc(g) => (
                &g.http,
                g.http.method.is_empty() || x.exchange.flags.headers_unknown,
            ),
            Detail::Db(_) | Detail::Tcp => return,
        };
        let Some(stream) = http.stream_id else {
            return;
        };
        if !unknown {
            return;
        }
        let known = match self.streams.get(&(x.pid, x.local, x.remote, stream)) {
            Some(known) if !known.request.is_empty() => known.clone(),
            _ if x.exchange.request_direction == Direction::Egress => {
                let writer = x.exchange.origin.goid;
                let caller = writer.and_then(|goid| parent_of(x.pid, goid));
                let Some(request) = self.client_call(x.pid, writer, caller) else {
                    return;
                };
                StreamHeaders {
                    request: request.to_vec(),
                    ..StreamHeaders::default()
                }
            }
            _ => return,
        };
        let get = |fields: &[(String, String)], name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut filled = Http {
            version: Some(HttpVersion::Http2),
            method: get(&known.request, ":method").unwrap_or_default(),
            target: get(&known.request, ":path").unwrap_or_default(),
            host: get(&known.request, ":authority"),
            status: http.status.or(Some(200)),
            stream_id: Some(stream),
            ..Http::default()
        };
        for (name, value) in &known.request {
            filled.headers.offer(name.as_bytes(), value.as_bytes());
        }
        let grpc = filled
            .headers
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/grpc"));
        x.exchange.detail = if grpc {
            let (service, method) = Grpc::split_path(&filled.target)
                .map(|(s, m)| (s.to_owned(), m.to_owned()))
                .unwrap_or_default();
            let (old_status, old_message, messages) = match &x.exchange.detail {
                Detail::Grpc(g) => (
                    g.status,
                    g.message.clone(),
                    (g.request_messages, g.response_messages),
                ),
                Detail::Http(_) | Detail::Db(_) | Detail::Tcp => (None, None, (0, 0)),
            };
            Detail::Grpc(Grpc {
                http: filled,
                service,
                method,
                status: old_status
                    .or_else(|| get(&known.trailers, "grpc-status").and_then(|s| s.parse().ok())),
                message: old_message.or_else(|| get(&known.trailers, "grpc-message")),
                request_messages: messages.0,
                response_messages: messages.1,
            })
        } else {
            Detail::Http(filled)
        };
        // The headers are known now, from the program itself; a request the bytes never showed
        // began when its handler did.
        x.exchange.flags.headers_unknown = false;
        if x.exchange.flags.request_unseen
            && let Some(start) = known.served_from_ns
        {
            x.exchange.start_ns = start.min(x.exchange.start_ns);
            x.exchange.flags.request_unseen = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        protocol::{Exchange, Flags, Origin},
        source::{Direction, GoConnection, HeaderField},
    };

    fn block(source: HeadersSource, fields: &[(&str, &str)]) -> GoHeaders {
        GoHeaders {
            source,
            pid: 7,
            tid: 7,
            goid: 3,
            stream_id: 5,
            end_stream: false,
            conn: GoConnection {
                fd: 9,
                endpoints: Some((
                    "127.0.0.1:1000".parse().unwrap(),
                    "127.0.0.1:2000".parse().unwrap(),
                )),
            },
            fields: fields
                .iter()
                .map(|(n, v)| HeaderField {
                    name: (*n).into(),
                    value: (*v).into(),
                    cut: false,
                    unreadable: false,
                })
                .collect(),
            fields_left_out: 0,
            ts_ns: 1,
        }
    }

    #[test]
    fn an_undecodable_http2_exchange_takes_grpc_gos_headers() {
        let mut store = GoHeaderStore::default();
        store.on_headers(&block(
            HeadersSource::Sent,
            &[
                (":method", "POST"),
                (":path", "/pkg.Svc/Do"),
                ("content-type", "application/grpc"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        ));
        store.on_headers(&block(
            HeadersSource::ClientReceived,
            &[("grpc-status", "5")],
        ));
        let mut x = ConnExchange {
            conn_id: 1,
            pid: 7,
            comm: "c".into(),
            local: "127.0.0.1:1000".parse().unwrap(),
            remote: "127.0.0.1:2000".parse().unwrap(),
            exchange: Exchange {
                request_direction: Direction::Egress,
                start_ns: 1,
                origin: Origin::default(),
                end_ns: 2,
                request_bytes: 1,
                response_bytes: 1,
                wire: crate::protocol::WireSeqs::default(),
                detail: Detail::Http(Http {
                    stream_id: Some(5),
                    ..Http::default()
                }),
                flags: Flags {
                    headers_unknown: true,
                    ..Flags::default()
                },
            },
        };
        store.fill(&mut x, |_, _| None);
        let Detail::Grpc(g) = &x.exchange.detail else {
            panic!("{:?}", x.exchange.detail);
        };
        assert_eq!(
            (g.service.as_str(), g.method.as_str(), g.status),
            ("pkg.Svc", "Do", Some(5))
        );
        assert!(g.http.headers.traceparent.is_some());
        assert!(!x.exchange.flags.headers_unknown);
    }

    fn go_request(client: bool, goid: u64, path: &str) -> GoServe {
        GoServe {
            client,
            start: true,
            pid: 7,
            tid: 7,
            goid,
            method: "GET".into(),
            path: path.into(),
            host: "localhost:2000".into(),
            status: None,
            server: 0,
            ts_ns: 1,
        }
    }

    /// An HTTP/2 exchange of process 7 on stream 5 whose headers were not decoded.
    fn undecoded(direction: Direction, writer: Option<u64>) -> ConnExchange {
        ConnExchange {
            conn_id: 1,
            pid: 7,
            comm: "c".into(),
            local: "127.0.0.1:2000".parse().unwrap(),
            remote: "127.0.0.1:1000".parse().unwrap(),
            exchange: Exchange {
                request_direction: direction,
                start_ns: 1,
                origin: Origin {
                    goid: writer,
                    ..Origin::default()
                },
                end_ns: 2,
                request_bytes: 1,
                response_bytes: 1,
                wire: crate::protocol::WireSeqs::default(),
                detail: Detail::Http(Http {
                    stream_id: Some(5),
                    status: Some(200),
                    ..Http::default()
                }),
                flags: Flags {
                    headers_unknown: true,
                    ..Flags::default()
                },
            },
        }
    }

    #[test]
    fn a_net_http_handler_served_over_http2_names_its_streams_request() {
        for stream_first in [false, true] {
            let mut store = GoHeaderStore::default();
            let mut x = undecoded(Direction::Ingress, None);
            let stream = GoConnUse {
                role: ConnRole::Server,
                stream_id: Some(5),
                pid: 7,
                tid: 7,
                goid: 40,
                conn: GoConnection {
                    fd: 3,
                    endpoints: Some((x.local, x.remote)),
                },
                ts_ns: 1,
            };
            if stream_first {
                store.on_conn_use(&stream);
                store.on_serve(&go_request(false, 40, "/hello"));
            } else {
                store.on_serve(&go_request(false, 40, "/hello"));
                store.on_conn_use(&stream);
            }
            x.exchange.flags.request_unseen = true;
            x.exchange.start_ns = 5;
            store.fill(&mut x, |_, _| None);
            // The request the bytes missed began when the handler did.
            assert!(!x.exchange.flags.request_unseen);
            assert_eq!(x.exchange.start_ns, 1);
            let http = x.exchange.detail.http().unwrap();
            assert_eq!(
                (http.method.as_str(), http.target.as_str(), http.status),
                ("GET", "/hello", Some(200))
            );
            assert_eq!(http.host.as_deref(), Some("localhost:2000"));
            assert!(!x.exchange.flags.headers_unknown);
        }
    }

    #[test]
    fn handlers_keep_nothing_once_served_over_http1_or_returned() {
        let mut store = GoHeaderStore::default();
        let http1 = GoConnUse {
            role: ConnRole::Server,
            stream_id: None,
            pid: 7,
            tid: 7,
            goid: 40,
            conn: GoConnection {
                fd: 3,
                endpoints: None,
            },
            ts_ns: 1,
        };
        for goid in 0..1000 {
            store.on_serve(&go_request(false, goid, "/hello"));
            store.on_conn_use(&GoConnUse { goid, ..http1 });
        }
        assert!(store.handler_requests.is_empty());
        // A handler whose stream never came (or came without endpoints) ends with its return.
        store.on_serve(&go_request(false, 41, "/hello"));
        let mut end = go_request(false, 41, "");
        end.start = false;
        store.on_serve(&end);
        assert!(store.handler_requests.is_empty() && store.handler_streams.is_empty());
    }

    #[test]
    fn a_net_http_client_call_names_the_request_its_writer_goroutine_sent() {
        let mut store = GoHeaderStore::default();
        store.on_serve(&go_request(true, 3, "/items/1"));
        // HTTP/2 writes the request from goroutine 4, which the call (goroutine 3) started.
        let mut x = undecoded(Direction::Egress, Some(4));
        store.fill(&mut x, |pid, goid| (pid, goid).eq(&(7, 4)).then_some(3));
        assert_eq!(x.exchange.detail.http().unwrap().target, "/items/1");
        // Without a known writer, nothing is guessed.
        let mut x = undecoded(Direction::Egress, None);
        store.fill(&mut x, |_, _| Some(3));
        assert!(x.exchange.flags.headers_unknown);
    }
}
