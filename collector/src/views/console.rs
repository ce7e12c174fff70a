//! The console view: one readable line per event (tcpdump-like), both ends as `addr:port`.
//! `wirespan run` shows the connection lifecycle; `wirespan events` shows data too, with a short
//! escaped preview of the payload.

use std::{fmt::Write as _, io::Write};

use super::EventSink;
use crate::clock::WallClock;
use crate::event::{
    CallPhase, Conn, ConnRole, Data, Event, GoConnection, GoGrpcCall, GoHeaders, GoServe,
};
use crate::protocol::content::DEFAULT_SECRET_HEADERS;

/// How many payload bytes a data line previews.
const PREVIEW_BYTES: usize = 64;

pub struct ConsoleSink<W: Write> {
    out: W,
    clock: WallClock,
    show_data: bool,
}

impl<W: Write> ConsoleSink<W> {
    /// `show_data`: print data events too, not only connect, accept and close.
    pub fn new(out: W, clock: WallClock, show_data: bool) -> Self {
        Self {
            out,
            clock,
            show_data,
        }
    }
}

/// `11:06:43.123456 connect curl pid=42 tid=42 conn=4097 127.0.0.1:40000 -> 127.0.0.1:8080`
#[must_use]
pub fn conn_line(c: &Conn, clock: &WallClock) -> String {
    conn_line_as(c, c.kind.as_str(), clock)
}

/// `conn_line` under another name (`connect-failed`), with the socket error when there is one.
fn conn_line_as(c: &Conn, kind: &str, clock: &WallClock) -> String {
    let mut line = format!(
        "{} {} {} pid={} tid={} conn={} {} -> {}",
        clock.time_of_day(c.ts_ns),
        kind,
        c.comm,
        c.pid,
        c.tid,
        c.conn_id,
        c.local,
        c.remote
    );
    if let Some(errno) = c.errno {
        let _ = write!(line, " errno={errno}");
    }
    line
}

/// `11:06:43.123456 egress curl pid=42 tid=42 conn=4097 127.0.0.1:40000 -> 127.0.0.1:8080
/// seq=1 bytes=78 "GET / HTTP/1.1\r\n..."`
#[must_use]
pub fn data_line(d: &Data, clock: &WallClock) -> String {
    let mut line = format!(
        "{} {} {} pid={} tid={} conn={} {} -> {} seq={} bytes={}",
        clock.time_of_day(d.ts_enter_ns),
        d.direction.as_str(),
        d.comm,
        d.pid,
        d.tid,
        d.conn_id,
        d.local,
        d.remote,
        d.seq,
        d.bytes
    );
    if let Some(goid) = d.goid {
        let _ = write!(line, " goid={goid}");
    }
    let preview = &d.payload[..d.payload.len().min(PREVIEW_BYTES)];
    let more = if (d.bytes as usize) > preview.len() {
        "..."
    } else {
        ""
    };
    let _ = write!(line, " \"{}\"{more}", preview.escape_ascii());
    line
}

/// `11:06:43.123456 go-serve-start pid=42 tid=43 goid=17 GET svc:8080/hello` or
/// `... go-serve-end pid=42 tid=43 goid=17 status=200`; `go-client-*` for outbound requests.
#[must_use]
pub fn go_serve_line(g: &GoServe, clock: &WallClock) -> String {
    let time = clock.time_of_day(g.ts_ns);
    let side = if g.client { "client" } else { "serve" };
    if g.start {
        format!(
            "{time} go-{side}-start pid={} tid={} goid={} {} {}{}",
            g.pid, g.tid, g.goid, g.method, g.host, g.path
        )
    } else {
        let status = g.status.map_or_else(|| "?".to_owned(), |s| s.to_string());
        format!(
            "{time} go-{side}-end pid={} tid={} goid={} status={status}",
            g.pid, g.tid, g.goid
        )
    }
}

/// A header's value as shown: credentials (the default credential headers) are `<redacted>`,
/// whatever the pipeline masked before.
#[must_use]
pub fn shown_header_value<'a>(name: &str, value: &'a str) -> &'a str {
    if DEFAULT_SECRET_HEADERS
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
    {
        "<redacted>"
    } else {
        value
    }
}

fn connection_text(c: &GoConnection) -> String {
    match c.endpoints {
        Some((local, remote)) => format!("fd={} {local} -> {remote}", c.fd),
        None if c.fd >= 0 => format!("fd={}", c.fd),
        None => "conn=?".to_owned(),
    }
}

/// `11:06:43.123456 go-grpc-headers sent pid=42 tid=43 goid=17 stream=1 end fd=7 a -> b
/// :status=200 grpc-status=5` (values of credentials headers are redacted).
#[must_use]
pub fn go_headers_line(h: &GoHeaders, clock: &WallClock) -> String {
    let fields: Vec<String> = h
        .fields
        .iter()
        .map(|f| {
            if f.unreadable {
                let or_unknown = |s: &str| {
                    if s.is_empty() {
                        "?".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                return format!("{}={}", or_unknown(&f.name), or_unknown(&f.value));
            }
            let value = shown_header_value(&f.name, &f.value);
            format!("{}={value}{}", f.name, if f.cut { "…" } else { "" })
        })
        .collect();
    format!(
        "{} go-grpc-headers {} pid={} tid={} goid={} stream={}{} {} {}{}",
        clock.time_of_day(h.ts_ns),
        h.source.as_str(),
        h.pid,
        h.tid,
        h.goid,
        h.stream_id,
        if h.end_stream { " end" } else { "" },
        connection_text(&h.conn),
        fields.join(" "),
        if h.fields_left_out > 0 {
            format!(" (+{} fields)", h.fields_left_out)
        } else {
            String::new()
        }
    )
}

/// `… go-grpc-call-start pid=42 tid=43 goid=17 /pkg.Svc/Method` or
/// `… go-grpc-call-end pid=42 tid=43 goid=17 code=5 stream=3 fd=7 a -> b`.
#[must_use]
pub fn go_grpc_call_line(c: &GoGrpcCall, clock: &WallClock) -> String {
    let time = clock.time_of_day(c.ts_ns);
    match c.phase {
        CallPhase::Start => {
            return format!(
                "{time} go-grpc-call-start pid={} tid={} goid={} {}",
                c.pid, c.tid, c.goid, c.method
            );
        }
        CallPhase::StreamOpened => {
            return format!(
                "{time} go-grpc-stream-opened pid={} tid={} goid={} stream={} {}",
                c.pid,
                c.tid,
                c.goid,
                c.stream_id,
                connection_text(&c.conn)
            );
        }
        CallPhase::End => {}
    }
    let code = c
        .status
        .map_or_else(|| "?".to_owned(), |code| code.to_string());
    format!(
        "{time} go-grpc-call-end pid={} tid={} goid={} code={code} stream={} {}",
        c.pid,
        c.tid,
        c.goid,
        c.stream_id,
        connection_text(&c.conn)
    )
}

impl<W: Write> EventSink for ConsoleSink<W> {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        match event {
            Event::Conn(c) => writeln!(self.out, "{}", conn_line(c, &self.clock)),
            Event::ConnectFailed(c) => writeln!(
                self.out,
                "{}",
                conn_line_as(c, "connect-failed", &self.clock)
            ),
            Event::Data(d) if self.show_data => writeln!(self.out, "{}", data_line(d, &self.clock)),
            Event::GoServe(g) => writeln!(self.out, "{}", go_serve_line(g, &self.clock)),
            Event::GoHeaders(h) => writeln!(self.out, "{}", go_headers_line(h, &self.clock)),
            Event::GoGrpcCall(c) => writeln!(self.out, "{}", go_grpc_call_line(c, &self.clock)),
            Event::GoSpawn(g) if self.show_data => writeln!(
                self.out,
                "{} {} pid={} tid={} goid={} -> goid={}{}",
                self.clock.time_of_day(g.ts_ns),
                if g.observed {
                    "go-ancestry"
                } else {
                    "go-spawn"
                },
                g.pid,
                g.tid,
                g.parent_goid,
                g.child_goid,
                if g.stream_id == 0 {
                    String::new()
                } else {
                    format!(" (handler of stream {})", g.stream_id)
                }
            ),
            Event::GoConnUse(u) => writeln!(
                self.out,
                "{} go-{}-conn pid={} tid={} goid={} {}",
                self.clock.time_of_day(u.ts_ns),
                match u.role {
                    ConnRole::Server => "serve",
                    ConnRole::Client => "client",
                },
                u.pid,
                u.tid,
                u.goid,
                connection_text(&u.conn)
            ),
            Event::GoExit(g) if self.show_data => writeln!(
                self.out,
                "{} go-exit pid={} tid={} goid={}",
                self.clock.time_of_day(g.ts_ns),
                g.pid,
                g.tid,
                g.goid
            ),
            Event::Exec(e) if self.show_data => {
                writeln!(
                    self.out,
                    "{} exec {} pid={}",
                    self.clock.time_of_day(e.ts_ns),
                    e.comm,
                    e.pid
                )
            }
            // `wirespan run` shows the connection lifecycle and Go handlers only.
            Event::Exit(e) if self.show_data => {
                writeln!(
                    self.out,
                    "{} exit pid={}",
                    self.clock.time_of_day(e.ts_ns),
                    e.pid
                )
            }
            Event::Data(_)
            | Event::GoSpawn(_)
            | Event::GoExit(_)
            | Event::Exec(_)
            | Event::Exit(_) => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{decode, decode::raw};

    #[test]
    fn prints_both_ends_as_addr_port() {
        let mut ev = raw::connect();
        ev.ts_ns = 0;
        let mut sink =
            ConsoleSink::new(Vec::new(), WallClock::with_offset(3_600_000_000_000), false);
        sink.event(&decode(&raw::bytes_of(&ev)).unwrap()).unwrap();
        sink.event(&decode(&raw::data(b"x", 1)).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "01:00:00.000000 connect curl pid=10 tid=11 conn=7 127.0.0.1:40000 -> 127.0.0.2:8080\n"
        );
    }

    #[test]
    fn data_lines_preview_the_payload_escaped() {
        let Event::Data(d) = decode(&raw::data(b"GET / HTTP/1.1\r\n", 100)).unwrap() else {
            panic!()
        };
        let line = data_line(&d, &WallClock::with_offset(0));
        assert!(
            line.ends_with(r#"egress py pid=10 tid=12 conn=7 [::1]:40000 -> [::1]:80 seq=1000 bytes=100 "GET / HTTP/1.1\r\n"..."#),
            "{line}"
        );
    }
}
