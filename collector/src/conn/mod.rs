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
//! Lost closes: when the kernel's ring buffer overflows, a connection's close event can be
//! lost. A new connection with the same local and remote address then means the old one is
//! over (the kernel cannot hold two connections with the same four-tuple), so it is flushed and
//! counted as replaced, found through an index by address pair (O(1) per new connection).
//! Whatever the table gives up on without a close event (replaced, expired, evicted) can be
//! reported (`report_gone`, `take_gone`) so later stages forget their state of it too.
//! The events do not name a network namespace: two namespaces using the same address pair at
//! once (loopback in two containers) would replace each other's entries, counted as replaced.
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
        content::{Blank, BlankKind, SecretNames},
        turns,
    },
    source::{ConnKind, Direction, Event},
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
    /// Connections given up because a new connection came with the same local and remote
    /// address: the kernel cannot hold both, so the old one's close event was lost.
    pub replaced: u64,
    /// Connections still open when the stream ended (`finish`): at a stop after every traced
    /// connection closed, 0 unless a close event was lost and nothing replaced the connection.
    pub open_at_end: u64,
}

/// A connection the table gave up on without its close event (replaced, expired idle, evicted),
/// for the stages after it to forget their state of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    pub conn_id: u64,
    pub pid: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The connection's last event: nothing of it is known after that.
    pub last_ns: u64,
}

/// The key of the index by address pair, when the pair names one connection: an end the
/// probes could not name (an unspecified address or port 0) would pair unrelated connections.
fn ends_key(local: SocketAddr, remote: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
    let named = |a: SocketAddr| a.port() != 0 && !a.ip().is_unspecified();
    (named(local) && named(remote)).then_some((local, remote))
}

struct Entry {
    decoder: ConnDecoder,
    /// Which direction carries its requests, when its opening (or its ports) said.
    client: Option<Direction>,
    /// The capture saw it open (connect or accept).
    opened: bool,
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
    /// The connection id holding each (local, remote) pair: kept in step with `conns` (every
    /// entry leaves through `close`), so a new connection finds the one it replaces in O(1).
    by_ends: HashMap<(SocketAddr, SocketAddr), u64>,
    /// Connections given up without their close event, when asked (see `report_gone`).
    gone: Vec<Gone>,
    report_gone: bool,
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
    /// Connections of unknown protocol give an exchange per request/response turn (see
    /// `protocol::turns`); on by default.
    tcp_turns: bool,
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
            by_ends: HashMap::new(),
            gone: Vec::new(),
            report_gone: false,
            max_conns: max_conns.max(1),
            idle_timeout_ns,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            buffered: 0,
            stats: ConnStats::default(),
            scratch: Vec::new(),
            keep_tls_content: false,
            secrets: None,
            blanks: Vec::new(),
            tcp_turns: true,
        }
    }

    /// Whether connections of unknown protocol give an exchange per turn (see
    /// `protocol::turns`), for connections seen from now on.
    pub fn tcp_turns(&mut self, on: bool) {
        self.tcp_turns = on;
    }

    /// A fresh decoder for a connection whose requests go `client` (None: not known), whose
    /// opening the capture saw or not.
    fn decoder(&self, client: Option<Direction>, opened: bool) -> ConnDecoder {
        fresh_decoder(self.secrets.as_ref(), self.tcp_turns, client, opened)
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

    /// Keep the connections given up without a close event for `take_gone` (off by default:
    /// nothing would take them).
    pub fn report_gone(&mut self, report: bool) {
        self.report_gone = report;
        self.gone.clear();
    }

    /// The connections given up without their close event since the last call (see `Gone`).
    pub fn take_gone(&mut self) -> std::vec::Drain<'_, Gone> {
        self.gone.drain(..)
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
                    // A new connection under this id: whatever was there is over (ids are
                    // not reused, so its close was lost).
                    self.give_up(c.conn_id, c.ts_ns, out);
                    let client = match c.kind {
                        ConnKind::Accept => Direction::Ingress,
                        _ => Direction::Egress,
                    };
                    let ends = (c.local, c.remote, (Some(client), true));
                    self.ensure(c.conn_id, c.pid, &c.comm, ends, c.ts_ns, out);
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
                // A connection older than the agent: its ports say which end is the client.
                let client = turns::client_direction(d.local, d.remote);
                self.ensure(
                    d.conn_id,
                    d.pid,
                    &d.comm,
                    (d.local, d.remote, (client, false)),
                    d.ts_exit_ns,
                    out,
                );
                let entry = self.conns.get_mut(&d.conn_id).expect("ensured above");
                entry.last_ns = d.ts_exit_ns;
                let blank_content = d.tls && !self.keep_tls_content;
                let whole = Blank::content(0..d.payload.len() as u64 + seg.missing);
                let (secrets, tcp_turns) = (self.secrets.as_ref(), self.tcp_turns);
                if !admit_tls(entry, d.tls, &d.payload, |client, opened| {
                    fresh_decoder(secrets, tcp_turns, client, opened)
                }) {
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
                            .filter(|b| blank_content || b.kind != BlankKind::Content)
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
            self.give_up(oldest, ts_ns, out);
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
            self.give_up(id, now_ns, out);
        }
    }

    /// The end of the event stream: flush every connection.
    pub fn finish(&mut self, ts_ns: u64, out: &mut Vec<ConnExchange>) {
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        self.stats.open_at_end += ids.len() as u64;
        ids.sort_unstable();
        for id in ids {
            self.close(id, ts_ns, out);
        }
    }

    /// Make sure the connection has an entry, making room if the table is full. Its ends come
    /// with what its opening said: which way requests go, and whether it was seen to open.
    fn ensure(
        &mut self,
        conn_id: u64,
        pid: u32,
        comm: &str,
        (local, remote, (client, opened)): (SocketAddr, SocketAddr, (Option<Direction>, bool)),
        ts_ns: u64,
        out: &mut Vec<ConnExchange>,
    ) {
        if self.conns.contains_key(&conn_id) {
            return;
        }
        if let Some(key) = ends_key(local, remote) {
            // The pair's older connection is over: its close event was lost (ring buffer
            // full), and it would otherwise wait for the idle timeout. First, so that it, not
            // a live connection, makes the room.
            if let Some(&older) = self.by_ends.get(&key) {
                self.stats.replaced += 1;
                self.give_up(older, ts_ns, out);
            }
        }
        if self.conns.len() >= self.max_conns {
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(_, e)| e.last_ns)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.stats.evicted += 1;
                self.give_up(oldest, ts_ns, out);
            }
        }
        if let Some(key) = ends_key(local, remote) {
            self.by_ends.insert(key, conn_id);
        }
        let decoder = self.decoder(client, opened);
        self.conns.entry(conn_id).or_insert_with(|| Entry {
            decoder,
            client,
            opened,
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

    /// Close a connection whose close event did not come, and report it (see `report_gone`).
    fn give_up(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<ConnExchange>) {
        if let Some(e) = self.conns.get(&conn_id)
            && self.report_gone
        {
            self.gone.push(Gone {
                conn_id,
                pid: e.pid,
                local: e.local,
                remote: e.remote,
                last_ns: e.last_ns,
            });
        }
        self.close(conn_id, ts_ns, out);
    }

    /// Flush a connection's decoder and forget it: the only way out of `conns`.
    fn close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<ConnExchange>) {
        let Some(mut entry) = self.conns.remove(&conn_id) else {
            return;
        };
        if let Some(key) = ends_key(entry.local, entry.remote)
            && self.by_ends.get(&key) == Some(&conn_id)
        {
            self.by_ends.remove(&key);
        }
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

/// A decoder noting `secrets`, giving turns of unknown protocols if `tcp_turns`, told which
/// way requests go (`client`) and whether the connection was seen to open.
fn fresh_decoder(
    secrets: Option<&Arc<SecretNames>>,
    tcp_turns: bool,
    client: Option<Direction>,
    opened: bool,
) -> ConnDecoder {
    ConnDecoder::new()
        .noting_secrets(secrets.cloned())
        .with_turns(tcp_turns)
        .with_opening(client, opened)
}

/// Whether a segment goes to the connection's decoder, as far as TLS goes; moves the
/// connection to `Encrypted` at TLS records, and to `Plaintext` (a fresh decoder) at its first
/// plaintext.
fn admit_tls(
    entry: &mut Entry,
    plaintext: bool,
    payload: &[u8],
    fresh_decoder: impl FnOnce(Option<Direction>, bool) -> ConnDecoder,
) -> bool {
    match (entry.tls, plaintext) {
        (Tls::Plaintext, true) => true,
        // Encrypted bytes outside the library's read and write calls (handshakes, alerts,
        // shutdown): nothing to decode.
        (Tls::Plaintext | Tls::Encrypted, false) => false,
        (Tls::No | Tls::Encrypted, true) => {
            entry.tls = Tls::Plaintext;
            entry.decoder = fresh_decoder(entry.client, entry.opened);
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
mod tests;
