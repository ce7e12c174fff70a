//! JSON lines: one object per event, with the field names `wirespan events --json` documents
//! (`type`, `pid`, `tid`, `comm`, `saddr`, `sport` = this process's end, `daddr`, `dport` = the
//! peer, `ts_ns` = CLOCK_MONOTONIC, `mode` = the attach mode that saw it).

use std::io::Write;

use serde::Serialize;

use super::EventSink;
use crate::source::Event;

#[derive(Serialize)]
struct ConnectRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    saddr: String,
    sport: u16,
    daddr: String,
    dport: u16,
    ts_ns: u64,
    mode: String,
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
            Event::Connect(c) => {
                let record = ConnectRecord {
                    kind: "connect",
                    pid: c.pid,
                    tid: c.tid,
                    comm: &c.comm,
                    saddr: c.local.ip().to_string(),
                    sport: c.local.port(),
                    daddr: c.remote.ip().to_string(),
                    dport: c.remote.port(),
                    ts_ns: c.ts_ns,
                    mode: c.mode.to_string(),
                };
                serde_json::to_writer(&mut self.out, &record)?;
                self.out.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load::AttachMode, source::Connect};

    #[test]
    fn writes_one_object_per_line() {
        let mut sink = JsonLinesSink::new(Vec::new());
        let connect = Connect {
            pid: 1,
            tid: 2,
            comm: "c\"x".into(),
            local: "127.0.0.1:5".parse().unwrap(),
            remote: "127.0.0.1:6".parse().unwrap(),
            ts_ns: 7,
            mode: AttachMode::Kprobe,
        };
        sink.event(&Event::Connect(connect)).unwrap();
        let line = String::from_utf8(sink.out).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["type"], "connect");
        assert_eq!(v["comm"], "c\"x");
        assert_eq!(
            (v["saddr"].as_str(), v["sport"].as_u64()),
            (Some("127.0.0.1"), Some(5))
        );
        assert_eq!(
            (v["daddr"].as_str(), v["dport"].as_u64()),
            (Some("127.0.0.1"), Some(6))
        );
        assert_eq!(v["mode"], "kprobe");
    }
}
