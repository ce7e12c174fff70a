//! The console view: one readable line per event, both ends as `addr:port`.

use std::io::Write;

use super::{EventSink, clock::WallClock};
use crate::source::{Connect, Event};

pub struct ConsoleSink<W: Write> {
    out: W,
    clock: WallClock,
}

impl<W: Write> ConsoleSink<W> {
    pub fn new(out: W, clock: WallClock) -> Self {
        Self { out, clock }
    }
}

/// `11:06:43.123456 connect curl pid=42 tid=42 127.0.0.1:40000 -> 127.0.0.1:8080`
#[must_use]
pub fn connect_line(c: &Connect, clock: &WallClock) -> String {
    format!(
        "{} connect {} pid={} tid={} {} -> {}",
        clock.time_of_day(c.ts_ns),
        c.comm,
        c.pid,
        c.tid,
        c.local,
        c.remote
    )
}

impl<W: Write> EventSink for ConsoleSink<W> {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        match event {
            Event::Connect(c) => writeln!(self.out, "{}", connect_line(c, &self.clock)),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::AttachMode;

    #[test]
    fn prints_both_ends_as_addr_port() {
        let connect = Connect {
            pid: 42,
            tid: 43,
            comm: "curl".into(),
            local: "[::1]:40000".parse().unwrap(),
            remote: "[::1]:8080".parse().unwrap(),
            ts_ns: 0,
            mode: AttachMode::Tracepoint,
        };
        let mut sink = ConsoleSink::new(Vec::new(), WallClock::with_offset(3_600_000_000_000));
        sink.event(&Event::Connect(connect)).unwrap();
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "01:00:00.000000 connect curl pid=42 tid=43 [::1]:40000 -> [::1]:8080\n"
        );
    }
}
