//! HTTP/2 exchanges whose header blocks could not be decoded from the bytes (the capture joined
//! a connection mid-way, so its HPACK table was unknown) take their headers from the Go
//! uprobes instead: grpc-go handed them over already decoded (`GoHeaders`), keyed by process,
//! connection and stream. This is what the uprobes are for: warm connections keep full headers.

use std::{collections::HashMap, net::SocketAddr};

use crate::{
    conn::ConnExchange,
    protocol::{Detail, Grpc, Http, HttpVersion},
    source::{GoHeaders, HeadersSource},
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
}

#[derive(Debug, Default)]
pub struct GoHeaderStore {
    streams: HashMap<Key, StreamHeaders>,
}

impl GoHeaderStore {
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
        let stream = x.exchange.detail.http().stream_id;
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

    /// Fill in an HTTP/2 exchange whose request headers the bytes did not give.
    pub fn fill(&mut self, x: &mut ConnExchange) {
        let (http, unknown) = match &x.exchange.detail {
            Detail::Http(h) => (h, h.method.is_empty() || x.exchange.flags.headers_unknown),
            Detail::Grpc(g) => (
                &g.http,
                g.http.method.is_empty() || x.exchange.flags.headers_unknown,
            ),
        };
        let Some(stream) = http.stream_id else {
            return;
        };
        if !unknown {
            return;
        }
        let Some(known) = self
            .streams
            .get(&(x.pid, x.local, x.remote, stream))
            .cloned()
        else {
            return;
        };
        if known.request.is_empty() {
            return;
        }
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
                Detail::Http(_) => (None, None, (0, 0)),
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
        // The headers are known now, from the program itself.
        x.exchange.flags.headers_unknown = false;
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
        store.fill(&mut x);
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
}
