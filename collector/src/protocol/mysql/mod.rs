//! MySQL client/server protocol (MariaDB speaks it too): one exchange per command with a
//! response, paired in order on a connection.
//!
//! Framing (`framing`) is per direction: packets of a 3-byte length and a sequence id, payloads
//! skipped by count once their first bytes are read. The conversation (`MysqlConn`) is the
//! server's greeting (protocol 10, with its capabilities), the client's login (capabilities, and
//! the database with CLIENT_CONNECT_WITH_DB: the namespace; user and auth data are skipped), the
//! authentication packets until OK or ERR, then commands: each starts with sequence id 0 from the
//! client and gets a response whose end `response` works out. An SSLRequest means TLS follows:
//! nothing more of the socket's bytes is decoded (counted), nor with compression. The TLS
//! plaintext, where the library is traced, goes to a fresh decoder and starts with the login
//! (sequence id 2), which is recognised and decoded like the one in the clear.
//!
//! Exchanges: COM_QUERY (operation, collection and text with literals replaced, from `sql`),
//! COM_STMT_PREPARE (operation `PREPARE`; the statement id in the response ties the text to
//! later executions, remembered up to a bound), COM_STMT_EXECUTE (the remembered statement's
//! operation and text, or `EXECUTE` with the id when the prepare was not seen), COM_INIT_DB
//! (`INIT_DB`, the namespace from then on), COM_PING and the other commands with a response by
//! their names. COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA and COM_QUIT get no response and make no
//! exchange. ERR gives `status_code`, the error number in decimal; its message is not kept. Rows
//! and bind parameters are never read.
//!
//! Joining mid-connection (no greeting seen): the decoder waits for a client segment that starts
//! with a plausible command (`looks_like_command`: sequence id 0, a known command byte, a length
//! that ends the segment, contents that parse), counted in `stats.mid_connection`; the namespace
//! is unknown until COM_INIT_DB or `USE`. A gap that hides a packet header loses that direction:
//! the client resyncs the same way, the server at its first read after the next command; the
//! response in between keeps its byte count but no status (`truncated`).

mod commands;
mod framing;
mod packets;
mod response;

use std::collections::{HashMap, VecDeque};

pub use self::packets::looks_like_command;
use self::{
    framing::{Message, Reader},
    packets::{Hello, caps},
    response::{OnOk, Pending, Resp, Step},
};
use super::{
    Segment,
    db::Db,
    exchange::{Detail, Exchange, Flags, WireSeqs},
};
use crate::event::Direction;

/// Client payload bytes kept per command: the query text beyond this is not read (`truncated`).
pub const MAX_QUERY: usize = 16 * 1024;

/// Client head bytes: the text of COM_QUERY, COM_STMT_PREPARE, COM_INIT_DB and COM_CHANGE_USER;
/// the login (sequence id 1, or 2 inside TLS) up to 1 KiB; of other commands (COM_STMT_EXECUTE's
/// bind values, LOCAL INFILE contents) the first bytes only.
fn client_cap(seq: u8, first: u8) -> usize {
    use self::packets::com;
    match (seq, first) {
        (0, com::QUERY | com::STMT_PREPARE | com::INIT_DB | com::CHANGE_USER) => MAX_QUERY,
        (0, _) => 16,
        _ => 1024,
    }
}

/// Server head bytes: the greeting whole; of an OK, EOF or PREPARE_OK (and binary rows, which
/// start alike) enough for their fields; an ERR's code, never its message; a byte or a few of
/// anything else (column counts and definitions, text rows).
fn server_cap(seq: u8, first: u8) -> usize {
    match (seq, first) {
        (0, 0x0a) => 256,
        (_, 0x00 | 0xfe) => 32,
        (_, 0xff) => 3,
        _ => 16,
    }
}
/// Commands waiting for responses (pipelining depth) kept at most.
pub const MAX_PENDING: usize = 32;
/// Prepared statements remembered per connection, and their total text bytes.
pub const MAX_STATEMENTS: usize = 256;
pub const MAX_STATEMENT_BYTES: usize = 256 * 1024;

/// Counters of what the decoder could not decode or had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MysqlStats {
    /// Connections joined mid-conversation (no greeting seen): namespace and capabilities unknown.
    pub mid_connection: u64,
    /// Client segments skipped while waiting for a command to resync on.
    pub unsynced_segments: u64,
    /// Times a direction lost its framing (a gap hid a packet header).
    pub desyncs: u64,
    /// Responses not decoded to their end (framing lost, out-of-order sequence ids, a cut head):
    /// their exchanges carry no status and are marked truncated.
    pub responses_undecoded: u64,
    /// Connections that switched to TLS (SSLRequest): not decoded further.
    pub tls: u64,
    /// Connections not decoded further: compression, a replication stream, a pre-4.1 login.
    pub opaque: u64,
    /// Logins refused (ERR during authentication, or as the greeting).
    pub auth_failures: u64,
    /// Commands dropped because more than `MAX_PENDING` waited.
    pub pending_overflow: u64,
    /// Prepared statements forgotten over the caps (their executions are named `EXECUTE`).
    pub statements_evicted: u64,
    /// Executions of statements whose prepare was not seen.
    pub unknown_statements: u64,
    /// Server messages with no command waiting.
    pub unexpected_responses: u64,
}

/// Whether a connection's first captured bytes are MySQL. In the response direction: the
/// server's greeting: sequence id 0, a payload of 18..=1024 bytes starting with protocol
/// version 10, a printable version string starting with a digit and ending in NUL, a zero filler
/// after the 8 bytes of auth data, and CLIENT_PROTOCOL_41 set. In the request direction: only a
/// login sent inside TLS (the first plaintext of a connection that sent an SSLRequest, see
/// `packets::tls_login`). HTTP (`GET `, `HTTP/`), TLS records (`16 03`) and random bytes fail
/// the sequence id, the length bound, the 0x0a or the zero filler.
#[must_use]
pub fn looks_like_mysql(data: &[u8], direction_is_request: bool) -> bool {
    if direction_is_request {
        return packets::tls_login(data);
    }
    let Some(hdr) = data.get(..4) else {
        return false;
    };
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize;
    hdr[3] == 0
        && (18..=1024).contains(&len)
        && packets::greeting(&data[4..data.len().min(4 + len)]).is_some()
}

/// A prepared statement as remembered: sanitized, never its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Statement {
    operation: String,
    collection: Option<String>,
    text: String,
    truncated: bool,
}

impl Statement {
    fn size(&self) -> usize {
        self.operation.len()
            + self.text.len()
            + self.collection.as_ref().map_or(0, String::len)
            + 64
    }
}

/// Statements by id, bounded in count and bytes (oldest forgotten first).
#[derive(Debug, Default)]
struct Statements {
    map: HashMap<u32, Statement>,
    order: VecDeque<u32>,
    bytes: usize,
}

impl Statements {
    fn insert(&mut self, id: u32, s: Statement, stats: &mut MysqlStats) {
        self.remove(id);
        while !self.map.is_empty()
            && (self.map.len() >= MAX_STATEMENTS || self.bytes + s.size() > MAX_STATEMENT_BYTES)
        {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if self.remove(old) {
                stats.statements_evicted += 1;
            }
        }
        if self.order.len() > 2 * MAX_STATEMENTS {
            let map = &self.map;
            self.order.retain(|id| map.contains_key(id));
        }
        self.bytes += s.size();
        self.map.insert(id, s);
        self.order.push_back(id);
    }

    fn remove(&mut self, id: u32) -> bool {
        let Some(s) = self.map.remove(&id) else {
            return false;
        };
        self.bytes -= s.size();
        true
    }
}

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing decoded yet: the greeting, or else a mid-connection join.
    Start,
    /// Greeting seen (with the server's capabilities): the client's login is next.
    Login(u32),
    /// Authentication packets until the server's OK or ERR.
    Auth,
    Command,
    /// TLS, compression, replication, a refused login: bytes are not decoded.
    Opaque,
}

/// MySQL state of one connection.
#[derive(Debug)]
pub struct MysqlConn {
    request_direction: Direction,
    phase: Phase,
    client: Reader,
    server: Reader,
    /// Capabilities both sides set, when the handshake was seen.
    caps: Option<u32>,
    namespace: Option<String>,
    pending: VecDeque<Pending>,
    statements: Statements,
    /// The statement last sent for preparing (MariaDB's "last prepared" id, 0xffffffff).
    last_prepared: Option<Statement>,
    tls: bool,
    msgs: Vec<Message>,
    pub stats: MysqlStats,
}

impl MysqlConn {
    /// A decoder for a connection whose requests (commands) travel in `request_direction`.
    #[must_use]
    pub fn new(request_direction: Direction) -> Self {
        Self {
            request_direction,
            phase: Phase::Start,
            client: Reader::new(client_cap, true),
            server: Reader::new(server_cap, true),
            caps: None,
            namespace: None,
            pending: VecDeque::new(),
            statements: Statements::default(),
            last_prepared: None,
            tls: false,
            msgs: Vec::new(),
            stats: MysqlStats::default(),
        }
    }

    /// Feed one syscall's bytes; completed exchanges are appended to `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        let is_request = seg.direction == self.request_direction;
        self.tls |= seg.tls;
        match self.phase {
            Phase::Opaque => return,
            // The plaintext of a TLS connection starts with the login (the greeting and the
            // SSLRequest went before, unencrypted): the client's capabilities stand for both.
            Phase::Start if is_request && packets::tls_login(seg.data) => {
                self.phase = Phase::Login(u32::MAX);
            }
            Phase::Start
                if is_request || (self.server.at_boundary() && !starts_greeting(seg.data)) =>
            {
                self.join_mid();
            }
            _ => {}
        }
        let total = seg.data.len() as u64 + seg.missing;
        if is_request {
            if self.client.is_lost() {
                if !looks_like_command(seg.data, total) {
                    self.stats.unsynced_segments += 1;
                    return;
                }
                self.client.restart();
            }
        } else if self.server.is_lost() && !self.server.resuming() {
            self.lost_response_bytes(total, seg.ts_exit_ns);
            return;
        }
        let mut msgs = std::mem::take(&mut self.msgs);
        let reader = if is_request {
            &mut self.client
        } else {
            &mut self.server
        };
        let lost = reader.feed(seg, &mut msgs);
        for m in msgs.drain(..) {
            if is_request {
                self.on_client(&m, out);
            } else {
                self.on_server(&m, out);
            }
        }
        self.msgs = msgs;
        if let Some(bytes) = lost {
            self.stats.desyncs += 1;
            if matches!(self.phase, Phase::Login(_) | Phase::Auth) {
                // Where authentication ends is unknown now: wait for a command.
                self.phase = Phase::Command;
                self.client.lose();
                self.server.lose();
            }
            if !is_request {
                self.lost_response_bytes(bytes, seg.ts_exit_ns);
            }
        }
    }

    /// Bytes this connection holds.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.client.buffered()
            + self.server.buffered()
            + self.statements.bytes
            + self.last_prepared.as_ref().map_or(0, Statement::size)
            + self.pending.len() * 256
    }

    /// The connection closed: commands still waiting are emitted, without a response or cut.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        let deprecate_eof = self.deprecate_eof();
        while let Some(p) = self.pending.pop_front() {
            let settled = p.ends_at_next_command(deprecate_eof);
            self.emit(p, settled, ts_ns, out);
        }
    }

    fn deprecate_eof(&self) -> Option<bool> {
        self.caps.map(|c| c & caps::DEPRECATE_EOF != 0)
    }

    fn join_mid(&mut self) {
        self.stats.mid_connection += 1;
        self.phase = Phase::Command;
        self.client.lose();
        self.server.lose();
    }

    /// Response bytes the server reader could not frame: the waiting command's, undecoded.
    fn lost_response_bytes(&mut self, bytes: u64, end_ns: u64) {
        if let Some(p) = self.pending.front_mut() {
            if !p.undecoded {
                self.stats.responses_undecoded += 1;
                p.undecodable();
            }
            p.response_bytes += bytes;
            p.end_ns = end_ns;
        }
    }

    fn on_client(&mut self, m: &Message, out: &mut Vec<Exchange>) {
        match self.phase {
            Phase::Login(server_caps) => self.on_login(m, server_caps),
            Phase::Command => self.on_command(m, out),
            // Authentication data: never read.
            Phase::Start | Phase::Auth | Phase::Opaque => {}
        }
    }

    fn on_login(&mut self, m: &Message, server_caps: u32) {
        match packets::hello(&m.head, m.len, m.whole()) {
            Some(Hello::Login { caps, database }) => {
                self.caps = Some(caps & server_caps);
                self.namespace = database;
                self.phase = Phase::Auth;
            }
            Some(Hello::Ssl) => {
                self.stats.tls += 1;
                self.phase = Phase::Opaque;
            }
            Some(Hello::Old) | None => {
                self.stats.opaque += 1;
                self.phase = Phase::Opaque;
            }
        }
    }

    fn on_server(&mut self, m: &Message, out: &mut Vec<Exchange>) {
        match self.phase {
            Phase::Start => match packets::greeting(&m.head) {
                Some(g) => self.phase = Phase::Login(g.caps),
                None if m.head.first() == Some(&0xff) => {
                    self.stats.auth_failures += 1;
                    self.phase = Phase::Opaque;
                }
                None => self.join_mid(),
            },
            Phase::Auth => match m.head.first() {
                Some(0x00) => {
                    let compressed = caps::COMPRESS | caps::ZSTD_COMPRESSION;
                    if self.caps.unwrap_or(0) & compressed == 0 {
                        self.phase = Phase::Command;
                    } else {
                        self.stats.opaque += 1;
                        self.phase = Phase::Opaque;
                    }
                }
                Some(0xff) => {
                    self.stats.auth_failures += 1;
                    self.phase = Phase::Opaque;
                }
                _ => {}
            },
            Phase::Command => self.on_response(m, out),
            Phase::Login(_) | Phase::Opaque => {}
        }
    }

    fn on_response(&mut self, m: &Message, out: &mut Vec<Exchange>) {
        let deprecate_eof = self.deprecate_eof();
        loop {
            let Some(p) = self.pending.front_mut() else {
                self.stats.unexpected_responses += 1;
                return;
            };
            let step = p.step(m, deprecate_eof);
            if step == Step::NotMine {
                let p = self.pending.pop_front().expect("front exists");
                self.emit(p, true, 0, out);
                continue;
            }
            if p.response_bytes == 0 {
                p.response_seq = m.origin.seq;
            }
            p.response_bytes += m.wire;
            p.end_ns = m.end_ns;
            if let Some(id) = p.prepared_id.take()
                && let OnOk::Prepare(s) = &p.on_ok
            {
                let s = s.clone();
                self.statements.insert(id, s, &mut self.stats);
            }
            match step {
                Step::Done => {
                    let p = self.pending.pop_front().expect("front exists");
                    self.emit(p, true, 0, out);
                }
                Step::Undecodable => self.stats.responses_undecoded += 1,
                Step::More | Step::NotMine => {}
            }
            return;
        }
    }

    fn push_pending(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            self.stats.pending_overflow += 1;
            self.pending.pop_front();
        }
        self.pending.push_back(p);
    }

    /// Emit a command's exchange; `settled`: its response ended (else it was cut by the close
    /// at `close_ns`).
    fn emit(&mut self, p: Pending, settled: bool, close_ns: u64, out: &mut Vec<Exchange>) {
        let no_response = p.response_bytes == 0;
        let db = p.db;
        if settled && db.status_code.is_none() && !p.undecoded {
            match p.on_ok {
                OnOk::Namespace(ns) => self.namespace = ns,
                OnOk::Nothing | OnOk::Prepare(_) => {}
            }
        }
        out.push(Exchange {
            request_direction: self.request_direction,
            start_ns: p.start_ns,
            origin: p.origin,
            end_ns: if no_response { close_ns } else { p.end_ns },
            request_bytes: p.request_bytes,
            response_bytes: p.response_bytes,
            wire: if self.tls {
                WireSeqs::default()
            } else {
                WireSeqs::of(p.origin.seq, p.response_seq)
            },
            detail: Detail::Db(db),
            flags: Flags {
                headers_unknown: p.headers_unknown,
                truncated: p.truncated || p.undecoded,
                reset: !settled && !no_response,
                no_response,
                request_unseen: false,
            },
        });
    }
}

/// Whether a segment can start the greeting (sequence id 0, protocol 10, a length of at most
/// 1 KiB), as far as its bytes go; checked before framing so that a mid-connection server
/// segment is not framed from a random length.
fn starts_greeting(data: &[u8]) -> bool {
    !data.is_empty()
        && data.get(2).is_none_or(|&b| b == 0)
        && data.get(1).is_none_or(|&b| b <= 3)
        && data.get(3).is_none_or(|&b| b == 0)
        && data.get(4).is_none_or(|&b| b == 0x0a)
}

/// A `Pending` for a command message, with nothing of its response yet.
fn pending(db: Db, resp: Resp, m: &Message) -> Pending {
    Pending {
        db,
        resp,
        on_ok: OnOk::Nothing,
        start_ns: m.start_ns,
        origin: m.origin,
        request_bytes: m.wire,
        truncated: false,
        headers_unknown: false,
        undecoded: false,
        next_seq: m.last_seq.wrapping_add(1),
        response_bytes: 0,
        response_seq: 0,
        end_ns: m.end_ns,
        prepared_id: None,
    }
}

#[cfg(test)]
mod tests;
