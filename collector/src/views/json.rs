//! JSON lines: one object per event. Every event has `type` (connect | accept | close | data),
//! `pid`, `tid`, `comm`, `conn_id`, `saddr`/`sport` (this process's end), `daddr`/`dport` (the
//! peer) and `ts_ns` (CLOCK_MONOTONIC). Lifecycle events add `mode` (the attach mode that saw
//! them); data events add `direction`, `bytes` (exact), `seq`, `goid` with `goid_known`, `fd`,
//! `ts_exit_ns`, `captured` and `payload` (the captured bytes as text, invalid UTF-8 replaced),
//! and on HTTP/2 connections `windows`, the probe's frame windows beyond the capture as
//! `[offset, length]` pairs (left out when there are none).
//! Go handler events are `go_serve_start` (`method`, `path`, `host`) and `go_serve_end`
//! (`status`), Go client requests `go_client_start` and `go_client_end` likewise, all with
//! `pid`, `tid`, `goid` and `ts_ns`; `go_spawn` has `parent_goid` and
//! `child_goid`, and so has `go_ancestry` (a goroutine that made an outbound call named its
//! parent); `exec` has `pid`, `comm` and `exe` (the executable's name); `exit` has `pid`.

use std::io::Write;

use serde::Serialize;

use super::EventSink;
use super::console::shown_header_value;
use crate::event::{CallPhase, Conn, ConnRole, Data, Event, GoConnection, GoHeaders, GoServe};

#[derive(Serialize)]
struct ConnRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    conn_id: u64,
    saddr: String,
    sport: u16,
    daddr: String,
    dport: u16,
    ts_ns: u64,
    mode: String,
    /// The socket error of a close or failed connect (a positive errno), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<u32>,
}

#[derive(Serialize)]
struct DataRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    conn_id: u64,
    saddr: String,
    sport: u16,
    daddr: String,
    dport: u16,
    direction: &'static str,
    bytes: u64,
    seq: u32,
    goid: u64,
    goid_known: bool,
    fd: i32,
    ts_ns: u64,
    ts_exit_ns: u64,
    captured: usize,
    payload: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    windows: Vec<(i64, usize)>,
}

fn conn_record<'a>(c: &'a Conn, kind: &'static str) -> ConnRecord<'a> {
    ConnRecord {
        kind,
        pid: c.pid,
        tid: c.tid,
        comm: &c.comm,
        conn_id: c.conn_id,
        saddr: c.local.ip().to_string(),
        sport: c.local.port(),
        daddr: c.remote.ip().to_string(),
        dport: c.remote.port(),
        ts_ns: c.ts_ns,
        mode: c.mode.to_string(),
        errno: c.errno,
    }
}

fn data_record(d: &Data) -> DataRecord<'_> {
    DataRecord {
        kind: "data",
        pid: d.pid,
        tid: d.tid,
        comm: &d.comm,
        conn_id: d.conn_id,
        saddr: d.local.ip().to_string(),
        sport: d.local.port(),
        daddr: d.remote.ip().to_string(),
        dport: d.remote.port(),
        direction: d.direction.as_str(),
        bytes: d.bytes,
        seq: d.seq,
        goid: d.goid.unwrap_or(0),
        goid_known: d.goid.is_some(),
        fd: d.fd,
        ts_ns: d.ts_enter_ns,
        ts_exit_ns: d.ts_exit_ns,
        captured: d.payload.len(),
        payload: String::from_utf8_lossy(&d.payload).into_owned(),
        windows: d
            .windows
            .iter()
            .map(|w| (w.offset, w.bytes.len()))
            .collect(),
    }
}

#[derive(Serialize)]
struct GoServeRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    tid: u32,
    goid: u64,
    method: &'a str,
    path: &'a str,
    host: &'a str,
    status: Option<u16>,
    ts_ns: u64,
}

fn go_serve_record(g: &GoServe) -> GoServeRecord<'_> {
    GoServeRecord {
        kind: match (g.client, g.start) {
            (false, true) => "go_serve_start",
            (false, false) => "go_serve_end",
            (true, true) => "go_client_start",
            (true, false) => "go_client_end",
        },
        pid: g.pid,
        tid: g.tid,
        goid: g.goid,
        method: &g.method,
        path: &g.path,
        host: &g.host,
        status: g.status,
        ts_ns: g.ts_ns,
    }
}

fn connection_json(c: &GoConnection) -> serde_json::Value {
    serde_json::json!({
        "fd": c.fd,
        "local": c.endpoints.map(|(l, _)| l.to_string()),
        "remote": c.endpoints.map(|(_, r)| r.to_string()),
    })
}

/// A header block; credential values are redacted (see `console::shown_header_value`).
fn go_headers_json(h: &GoHeaders) -> serde_json::Value {
    let fields: Vec<serde_json::Value> = h
        .fields
        .iter()
        .map(|f| {
            if f.unreadable {
                // What the probe could not read is null, never a made-up value.
                let name = (!f.name.is_empty()).then_some(f.name.as_str());
                let value = (!f.value.is_empty()).then_some(f.value.as_str());
                return serde_json::json!([name, value]);
            }
            let value = shown_header_value(&f.name, &f.value);
            serde_json::json!([f.name, value])
        })
        .collect();
    serde_json::json!({
        "type": "go_headers", "source": h.source.as_str(), "pid": h.pid, "tid": h.tid,
        "goid": h.goid, "stream_id": h.stream_id, "end_stream": h.end_stream,
        "conn": connection_json(&h.conn), "fields": fields,
        "fields_left_out": h.fields_left_out, "ts_ns": h.ts_ns,
    })
}

pub struct JsonLinesSink<W: Write> {
    out: W,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> EventSink for JsonLinesSink<W> {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        match event {
            Event::Conn(c) => {
                serde_json::to_writer(&mut self.out, &conn_record(c, c.kind.as_str()))?;
            }
            Event::ConnectFailed(c) => {
                serde_json::to_writer(&mut self.out, &conn_record(c, "connect_failed"))?;
            }
            Event::Data(d) => serde_json::to_writer(&mut self.out, &data_record(d))?,
            Event::GoServe(g) => serde_json::to_writer(&mut self.out, &go_serve_record(g))?,
            Event::GoSpawn(g) => serde_json::to_writer(
                &mut self.out,
                &serde_json::json!({
                    "type": if g.observed { "go_ancestry" } else { "go_spawn" }, "pid": g.pid, "tid": g.tid,
                    "parent_goid": g.parent_goid, "child_goid": g.child_goid,
                    "stream_id": g.stream_id, "ts_ns": g.ts_ns,
                }),
            )?,
            Event::GoConnUse(u) => serde_json::to_writer(
                &mut self.out,
                &serde_json::json!({
                    "type": "go_conn", "role": match u.role {
                        ConnRole::Server => "server",
                        ConnRole::Client => "client",
                    },
                    "pid": u.pid, "tid": u.tid, "goid": u.goid,
                    "conn": connection_json(&u.conn), "stream_id": u.stream_id, "ts_ns": u.ts_ns,
                }),
            )?,
            Event::GoExit(g) => serde_json::to_writer(
                &mut self.out,
                &serde_json::json!({
                    "type": "go_exit", "pid": g.pid, "tid": g.tid, "goid": g.goid, "ts_ns": g.ts_ns,
                }),
            )?,
            Event::GoHeaders(h) => serde_json::to_writer(&mut self.out, &go_headers_json(h))?,
            Event::GoGrpcCall(c) => serde_json::to_writer(
                &mut self.out,
                &serde_json::json!({
                    "type": match c.phase {
                        CallPhase::Start => "go_grpc_call_start",
                        CallPhase::StreamOpened => "go_grpc_stream_opened",
                        CallPhase::End => "go_grpc_call_end",
                    },
                    "pid": c.pid, "tid": c.tid, "goid": c.goid, "method": c.method,
                    "status": c.status, "stream_id": c.stream_id,
                    "conn": connection_json(&c.conn), "ts_ns": c.ts_ns,
                }),
            )?,
            // The environment is not printed: it can hold secrets.
            Event::Exec(e) => serde_json::to_writer(
                &mut self.out,
                &serde_json::json!({
                    "type": "exec", "pid": e.pid, "comm": e.comm, "ts_ns": e.ts_ns,
                    "exe": e.image.as_ref().map(|i| i.exe.as_str()),
                }),
            )?,
            Event::Exit(e) => serde_json::to_writer(
                &mut self.out,
                &serde_json::json!({ "type": "exit", "pid": e.pid, "ts_ns": e.ts_ns }),
            )?,
        }
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{decode, decode::raw};

    fn json_of(event: &Event) -> serde_json::Value {
        let mut sink = JsonLinesSink::new(Vec::new());
        sink.event(event).unwrap();
        let line = String::from_utf8(sink.out).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        serde_json::from_str(line.trim_end()).unwrap()
    }

    #[test]
    fn lifecycle_events_have_the_documented_fields() {
        let v = json_of(&decode(&raw::bytes_of(&raw::connect())).unwrap());
        assert_eq!(v["type"], "connect");
        assert_eq!(
            (v["pid"].as_u64(), v["tid"].as_u64(), v["conn_id"].as_u64()),
            (Some(10), Some(11), Some(7))
        );
        assert_eq!(
            (v["saddr"].as_str(), v["sport"].as_u64()),
            (Some("127.0.0.1"), Some(40_000))
        );
        assert_eq!(
            (v["daddr"].as_str(), v["dport"].as_u64()),
            (Some("127.0.0.2"), Some(8080))
        );
        assert_eq!(
            (v["comm"].as_str(), v["ts_ns"].as_u64()),
            (Some("curl"), Some(99))
        );
        assert_eq!(v["mode"], "tracepoint");
    }

    #[test]
    fn data_events_have_the_documented_fields() {
        let v = json_of(&decode(&raw::data(b"GET /\xff", 1 << 20)).unwrap());
        assert_eq!(v["type"], "data");
        assert_eq!(v["direction"], "egress");
        assert_eq!(v["bytes"], 1 << 20);
        assert_eq!(
            (v["seq"].as_u64(), v["captured"].as_u64()),
            (Some(1000), Some(6))
        );
        assert_eq!(
            (v["goid"].as_u64(), v["goid_known"].as_bool()),
            (Some(0), Some(false))
        );
        assert_eq!(v["payload"], "GET /\u{fffd}");
        assert_eq!(
            (v["saddr"].as_str(), v["dport"].as_u64()),
            (Some("::1"), Some(80))
        );
        assert_eq!(
            (v["ts_ns"].as_u64(), v["ts_exit_ns"].as_u64()),
            (Some(5), Some(6))
        );
    }
}
