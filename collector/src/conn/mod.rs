//! `conn`: the connection table between `source` and `protocol`. Each connection (by the
//! probes' connection id) gets a protocol decoder; data events become [`Segment`]s (captured
//! bytes plus the count that was not captured), close events flush the decoder, and the
//! exchanges come out tagged with the connection's process and addresses.
//!
//! Bounded: at most `max_conns` connections are tracked (the least recently active is flushed
//! and dropped when a new one needs room), the decoders together hold at most `memory_budget`
//! bytes (the least recently active go first when it is exceeded), and connections idle longer
//! than `idle_timeout_ns` release their state. All of it is counted.
//!
//! TLS: a connection whose first bytes are TLS records is encrypted, and its syscall bytes are
//! not decoded (they would only desynchronise a decoder). When TLS plaintext arrives for it (a
//! TLS library's calls, `Data::tls`), the connection is decoded from the plaintext alone, with a
//! fresh decoder. Its message content (bodies, DATA payloads) is noted per event so the caller
//! can blank it before anything keeps the bytes (`blanks`; see `protocol::content`), and so
//! are the credentials in HTTP/1 heads of every connection when asked (`note_secrets`).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use crate::{
    protocol::{
        ConnDecoder, DecoderStats, Detected, Exchange, Origin, Segment,
        content::{Blank, CONTENT_FILL, SecretNames},
    },
    source::{ConnKind, Event},
};

/// Defaults: enough connections for a busy host, and the idle time after which a keep-alive
/// connection's parse state is given up.
pub const DEFAULT_MAX_CONNS: usize = 65_536;
pub const DEFAULT_IDLE_TIMEOUT_NS: u64 = 300 * 1_000_000_000;
/// What all connections' decoders may hold together.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// An exchange with the connection it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnExchange {
    pub conn_id: u64,
    pub pid: u32,
    pub comm: String,
    /// This process's end and the peer.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub exchange: Exchange,
}

/// What the table dropped or gave up on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    /// Dropped to make room for a new connection.
    pub evicted: u64,
    /// Dropped because the decoders together went over the memory budget.
    pub evicted_for_memory: u64,
    pub expired: u64,
    /// Connections whose protocol was not recognised.
    pub unknown_protocol: u64,
    /// Connections that carried TLS records and no plaintext (a TLS stack the agent does not
    /// read, or a connection older than the agent's probes): counted at close.
    pub tls_encrypted: u64,
    /// Connections decoded from TLS plaintext: counted at close.
    pub tls_plaintext: u64,
    /// What the decoders of closed connections had to drop.
    pub decoders: DecoderStats,
}

struct Entry {
    decoder: ConnDecoder,
    pid: u32,
    comm: String,
    local: SocketAddr,
    remote: SocketAddr,
    last_ns: u64,
    counted_unknown: bool,
    tls: Tls,
    /// Whether any bytes reached the decoder (TLS records are recognised at the start only).
    fed: bool,
    /// The decoder's size when last measured (its share of `ConnTable::buffered`).
    buffered: usize,
}

/// What a connection's bytes are, as far as TLS goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// Nothing says TLS (yet).
    No,
    /// Its first bytes were TLS records, and no plaintext came (yet).
    Encrypted,
    /// A TLS library's plaintext: the only bytes decoded from now on.
    Plaintext,
}

/// Whether `payload` starts with a TLS record header: content type (change_cipher_spec,
/// alert, handshake, application_data), then protocol version 3.x.
fn starts_with_tls_record(payload: &[u8]) -> bool {
    matches!(payload, [20..=23, 3, 0..=4, ..])
}

/// Every tracked connection's decoder.
pub struct ConnTable {
    conns: HashMap<u64, Entry>,
    max_conns: usize,
    idle_timeout_ns: u64,
    memory_budget: usize,
    /// Sum of the entries' `buffered`.
    buffered: usize,
    pub stats: ConnStats,
    scratch: Vec<Exchange>,
    /// Whether TLS plaintext keeps its message content (off by default: heads only).
    keep_tls_content: bool,
    /// Credential headers whose values are noted for blanking (None: credentials are not).
    secrets: Option<Arc<SecretNames>>,
    /// What to blank in the last event (see `blanks`).
    blanks: Vec<Blank>,
}

impl Default for ConnTable {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CONNS, DEFAULT_IDLE_TIMEOUT_NS)
    }
}

impl ConnTable {
    #[must_use]
    pub fn new(max_conns: usize, idle_timeout_ns: u64) -> Self {
        Self {
            conns: HashMap::new(),
            max_conns: max_conns.max(1),
            idle_timeout_ns,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            buffered: 0,
            stats: ConnStats::default(),
            scratch: Vec::new(),
            keep_tls_content: false,
            secrets: None,
            blanks: Vec::new(),
        }
    }

    /// Note the credentials in HTTP/1 heads (of connections seen from now on) for blanking:
    /// values of headers named in `names`, and query values. None: do not.
    pub fn note_secrets(&mut self, names: Option<Arc<SecretNames>>) {
        self.secrets = names;
    }

    /// Keep TLS plaintext's message content (bodies) instead of noting it for blanking.
    pub fn keep_tls_content(&mut self, keep: bool) {
        self.keep_tls_content = keep;
    }

    /// What to blank in the last event, in its segment's offsets: the message content of TLS
    /// plaintext (unless kept) and the credentials noted (see `note_secrets`). The caller
    /// blanks these bytes (event and raw record alike) before anything keeps or shows them.
    #[must_use]
    pub fn blanks(&self) -> &[Blank] {
        &self.blanks
    }

    /// Set what all decoders may hold together, in bytes.
    #[must_use]
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Connections currently tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Take one event; exchanges it completes are appended to `out`.
    pub fn on_event(&mut self, event: &Event, out: &mut Vec<ConnExchange>) {
        self.blanks.clear();
        match event {
            Event::Conn(c) => match c.kind {
                ConnKind::Connect | ConnKind::Accept => {
                    // A new connection under this id: whatever was there is over.
                    self.close(c.conn_id, c.ts_ns, out);
                    self.ensure(c.conn_id, c.pid, &c.comm, c.local, c.remote, c.ts_ns, out);
                }
                ConnKind::Close => self.close(c.conn_id, c.ts_ns, out),
            },
            // Go context joins in the correlation stage, not here; a failed connect has no bytes.
            Event::ConnectFailed(_)
            | Event::GoServe(_)
            | Event::GoSpawn(_)
            | Event::GoExit(_)
            | Event::GoConnUse(_)
            | Event::GoHeaders(_)
            | Event::GoGrpcCall(_)
            | Event::Exec(_)
            | Event::Exit(_) => {}
            Event::Data(d) => {
                let seg = Segment {
                    direction: d.direction,
                    origin: Origin {
                        seq: d.seq,
                        tid: d.tid,
                        goid: d.goid,
                    },
                    data: &d.payload,
                    missing: d.bytes.saturating_sub(d.payload.len() as u64),
                    windows: &d.windows,
                    ts_enter_ns: d.ts_enter_ns,
                    ts_exit_ns: d.ts_exit_ns,
                    tls: d.tls,
                };
                self.ensure(
                    d.conn_id,
                    d.pid,
                    &d.comm,
                    d.local,
                    d.remote,
                    d.ts_exit_ns,
                    out,
                );
                let entry = self.conns.get_mut(&d.conn_id).expect("ensured above");
                entry.last_ns = d.ts_exit_ns;
                let blank_content = d.tls && !self.keep_tls_content;
                let whole = Blank {
                    range: 0..d.payload.len() as u64 + seg.missing,
                    fill: CONTENT_FILL,
                };
                if !admit_tls(entry, d.tls, &d.payload, self.secrets.as_ref()) {
                    if blank_content {
                        self.blanks.push(whole);
                    }
                    return;
                }
                entry.decoder.feed(&seg, &mut self.scratch);
                match entry.decoder.content() {
                    Some(blanks) => self.blanks.extend(
                        blanks
                            .iter()
                            .filter(|b| blank_content || b.fill != CONTENT_FILL)
                            .cloned(),
                    ),
                    None if blank_content => self.blanks.push(whole),
                    None => {}
                }
                if entry.decoder.detected() == Detected::Unknown && !entry.counted_unknown {
                    entry.counted_unknown = true;
                    self.stats.unknown_protocol += 1;
                }
                let now = entry.decoder.buffered_bytes();
                self.buffered = self.buffered + now - entry.buffered;
                entry.buffered = now;
                // Most segments complete nothing: the name is copied only for an exchange.
                for exchange in self.scratch.drain(..) {
                    out.push(ConnExchange {
                        conn_id: d.conn_id,
                        pid: entry.pid,
                        comm: entry.comm.clone(),
                        local: entry.local,
                        remote: entry.remote,
                        exchange,
                    });
                }
                self.enforce_budget(d.ts_exit_ns, out);
            }
        }
    }

    /// Over the memory budget: flush and drop the least recently active connections.
    fn enforce_budget(&mut self, ts_ns: u64, out: &mut Vec<ConnExchange>) {
        while self.buffered > self.memory_budget {
            let Some(oldest) = self
                .conns
                .iter()
                .min_by_key(|(_, e)| e.last_ns)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.stats.evicted_for_memory += 1;
            self.close(oldest, ts_ns, out);
        }
    }

    /// Bytes all decoders hold together (as last measured).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Give up connections idle since before `now_ns - idle_timeout`: flush and forget them.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<ConnExchange>) {
        let cutoff = now_ns.saturating_sub(self.idle_timeout_ns);
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, e)| e.last_ns < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.stats.expired += 1;
            self.close(id, now_ns, out);
        }
    }

    /// The end of the event stream: flush every connection.
    pub fn finish(&mut self, ts_ns: u64, out: &mut Vec<ConnExchange>) {
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(id, ts_ns, out);
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of a new entry, taken from either event kind"
    )]
    /// Make sure the connection has an entry, making room if the table is full.
    fn ensure(
        &mut self,
        conn_id: u64,
        pid: u32,
        comm: &str,
        local: SocketAddr,
        remote: SocketAddr,
        ts_ns: u64,
        out: &mut Vec<ConnExchange>,
    ) {
        if !self.conns.contains_key(&conn_id) && self.conns.len() >= self.max_conns {
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(_, e)| e.last_ns)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.stats.evicted += 1;
                self.close(oldest, ts_ns, out);
            }
        }
        self.conns.entry(conn_id).or_insert_with(|| Entry {
            decoder: ConnDecoder::new().noting_secrets(self.secrets.clone()),
            pid,
            comm: comm.to_owned(),
            local,
            remote,
            last_ns: ts_ns,
            counted_unknown: false,
            tls: Tls::No,
            fed: false,
            buffered: 0,
        });
    }

    fn close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<ConnExchange>) {
        let Some(mut entry) = self.conns.remove(&conn_id) else {
            return;
        };
        self.buffered -= entry.buffered;
        entry.decoder.close(ts_ns, &mut self.scratch);
        self.stats.decoders.add(&entry.decoder.stats());
        match entry.tls {
            Tls::No => {}
            Tls::Encrypted => self.stats.tls_encrypted += 1,
            Tls::Plaintext => self.stats.tls_plaintext += 1,
        }
        for exchange in self.scratch.drain(..) {
            out.push(ConnExchange {
                conn_id,
                pid: entry.pid,
                comm: entry.comm.clone(),
                local: entry.local,
                remote: entry.remote,
                exchange,
            });
        }
    }
}

/// Whether a segment goes to the connection's decoder, as far as TLS goes; moves the
/// connection to `Encrypted` at TLS records, and to `Plaintext` (a fresh decoder) at its first
/// plaintext.
fn admit_tls(
    entry: &mut Entry,
    plaintext: bool,
    payload: &[u8],
    secrets: Option<&Arc<SecretNames>>,
) -> bool {
    match (entry.tls, plaintext) {
        (Tls::Plaintext, true) => true,
        // Encrypted bytes outside the library's read and write calls (handshakes, alerts,
        // shutdown): nothing to decode.
        (Tls::Plaintext | Tls::Encrypted, false) => false,
        (Tls::No | Tls::Encrypted, true) => {
            entry.tls = Tls::Plaintext;
            entry.decoder = ConnDecoder::new().noting_secrets(secrets.cloned());
            entry.fed = true;
            true
        }
        (Tls::No, false) => {
            if !entry.fed && starts_with_tls_record(payload) {
                entry.tls = Tls::Encrypted;
                return false;
            }
            entry.fed = true;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AttachMode;
    use crate::event::{Conn, Data, Direction};

    fn data(conn_id: u64, direction: Direction, payload: &[u8], bytes: u64, ts: u64) -> Event {
        Event::Data(Data {
            direction,
            pid: 1,
            tid: 1,
            comm: "c".into(),
            fd: 3,
            conn_id,
            local: "127.0.0.1:1000".parse().unwrap(),
            remote: "127.0.0.1:80".parse().unwrap(),
            bytes,
            seq: 0,
            goid: None,
            ts_enter_ns: ts,
            ts_exit_ns: ts + 1,
            payload: payload.to_vec(),
            windows: Vec::new(),
            tls: false,
        })
    }

    fn close(conn_id: u64, ts: u64) -> Event {
        Event::Conn(Conn {
            kind: ConnKind::Close,
            errno: None,
            pid: 1,
            tid: 1,
            comm: "c".into(),
            conn_id,
            local: "127.0.0.1:1000".parse().unwrap(),
            remote: "127.0.0.1:80".parse().unwrap(),
            ts_ns: ts,
            mode: AttachMode::Tracepoint,
        })
    }

    #[test]
    fn connections_are_decoded_apart_and_flushed_at_close() {
        let mut table = ConnTable::default();
        let mut out = Vec::new();
        table.on_event(
            &data(1, Direction::Egress, b"GET /one HTTP/1.1\r\n\r\n", 21, 10),
            &mut out,
        );
        table.on_event(
            &data(2, Direction::Egress, b"GET /two HTTP/1.1\r\n\r\n", 21, 11),
            &mut out,
        );
        table.on_event(
            &data(
                2,
                Direction::Ingress,
                b"HTTP/1.1 204 No Content\r\n\r\n",
                27,
                12,
            ),
            &mut out,
        );
        table.on_event(&close(1, 20), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].conn_id, 2);
        assert_eq!(out[1].conn_id, 1);
        assert!(out[1].exchange.flags.no_response);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn decoders_together_stay_within_the_memory_budget() {
        let mut table = ConnTable::default().with_memory_budget(10_000);
        let mut out = Vec::new();
        // Incomplete heads are buffered: each connection holds a few KiB.
        let head = [b"GET / HTTP/1.1\r\nX-Pad: ".as_slice(), &[b'p'; 3000]].concat();
        for id in 0..10 {
            table.on_event(
                &data(id, Direction::Egress, &head, head.len() as u64, id * 10),
                &mut out,
            );
            assert!(
                table.buffered_bytes() <= 10_000,
                "over budget: {}",
                table.buffered_bytes()
            );
        }
        assert!(table.stats.evicted_for_memory > 0);
        assert!(table.len() < 10);
    }

    #[test]
    fn what_the_decoders_dropped_is_summed_when_connections_close() {
        let mut table = ConnTable::default();
        let mut out = Vec::new();
        table.on_event(
            &data(1, Direction::Egress, b"GET /a HTTP/1.1\r\n\r\n", 19, 10),
            &mut out,
        );
        // Not a response: the response direction loses sync.
        table.on_event(
            &data(
                1,
                Direction::Ingress,
                b"\x00\x01 not http at all\r\n\r\n",
                23,
                11,
            ),
            &mut out,
        );
        assert_eq!(
            table.stats.decoders,
            DecoderStats::default(),
            "counted at close"
        );
        table.on_event(&close(1, 20), &mut out);
        assert_eq!(table.stats.decoders.http1.desyncs, 1);
        assert_eq!(
            table.stats.decoders.describe(),
            vec!["http/1 lost sync 1".to_owned()]
        );
    }

    #[test]
    fn tls_records_are_not_decoded_and_the_plaintext_is() {
        let mut table = ConnTable::default();
        let mut out = Vec::new();
        let tls = |mut e: Event| {
            if let Event::Data(d) = &mut e {
                d.tls = true;
            }
            e
        };
        // A ClientHello, then the library's plaintext, then an encrypted alert.
        let hello = b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03";
        table.on_event(&data(1, Direction::Egress, hello, 47, 1), &mut out);
        table.on_event(
            &tls(data(
                1,
                Direction::Egress,
                b"GET /a HTTP/1.1\r\n\r\n",
                19,
                2,
            )),
            &mut out,
        );
        table.on_event(
            &data(1, Direction::Ingress, b"\x17\x03\x03\x00\x20", 37, 3),
            &mut out,
        );
        table.on_event(
            &tls(data(
                1,
                Direction::Ingress,
                b"HTTP/1.1 200 OK\r\n\r\n",
                19,
                4,
            )),
            &mut out,
        );
        // An encrypted connection whose plaintext never comes.
        table.on_event(&data(2, Direction::Egress, hello, 47, 5), &mut out);
        table.on_event(&close(1, 10), &mut out);
        table.on_event(&close(2, 11), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].conn_id, 1);
        assert!(!out[0].exchange.flags.no_response);
        assert_eq!(table.stats.unknown_protocol, 0);
        assert_eq!(
            (table.stats.tls_plaintext, table.stats.tls_encrypted),
            (1, 1)
        );
    }

    #[test]
    fn the_table_is_bounded_and_idle_connections_expire() {
        let mut table = ConnTable::new(2, 100);
        let mut out = Vec::new();
        for id in 0..5 {
            table.on_event(
                &data(
                    id,
                    Direction::Egress,
                    b"GET / HTTP/1.1\r\n\r\n",
                    18,
                    id * 10,
                ),
                &mut out,
            );
        }
        assert_eq!(table.len(), 2);
        assert_eq!(table.stats.evicted, 3);
        table.expire(1_000, &mut out);
        assert!(table.is_empty());
        assert_eq!(table.stats.expired, 2);
        assert_eq!(
            out.len(),
            5,
            "every request was flushed as an exchange without response"
        );
    }
}
