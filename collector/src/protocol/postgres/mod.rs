//! PostgreSQL frontend/backend protocol v3: one exchange per simple Query, and one per
//! Sync-terminated batch of the extended protocol, paired with the server's messages up to and
//! including its ReadyForQuery, in order (pipelined batches pair in order too).
//!
//! Framing (`framing`): every message is a type byte and an int32 length (the client's startup
//! messages have no type byte), so bodies are skipped by length, uncaptured bytes included;
//! only the first bytes of the messages read are kept. A gap where a header should be loses
//! that direction's framing.
//!
//! Start: the client's first message (`looks_like_postgres`) is a StartupMessage (its
//! `database` parameter is `db.namespace`; the user name and every other value are not kept),
//! or an SSLRequest/GSSENCRequest, which the server answers with one byte: `N` and the startup
//! follows in the clear; `S`/`G` and the rest is encrypted: segments that are not TLS
//! plaintext (`Segment::tls`) are skipped from then on, counted; plaintext from the TLS
//! library's probes is decoded as usual (a StartupMessage comes first). The authentication
//! exchange (`R`, `p`: passwords and SASL) is skipped by length and makes no exchange. A
//! CancelRequest is counted.
//!
//! Requests: `Q` → operation, table and sanitized text from its text (`sql`); several
//! statements in one `Q` give `batch_size` = the number of CommandCompletes, the first
//! statement's operation, no table. Parse `P` remembers each statement's sanitized text by name
//! (bounded, per connection; Close forgets it); Bind ties a portal to a statement, Execute runs
//! a portal; Sync `S` ends the batch: its exchange is named by its first Execute's statement
//! (`statement` = the name, `""` for the unnamed one, `batch_size` = the Executes), or, when the
//! text was prepared before the capture saw it, operation `EXECUTE` with the name and no text.
//! A batch without Execute is `PREPARE` (Parse and Describe), `CLOSE`, `DESCRIBE` or `SYNC`.
//! FunctionCall is `FUNCTION CALL`. COPY data in either direction is counted and skipped (its
//! bytes count toward the exchange).
//!
//! Responses: ErrorResponse's SQLSTATE (field `C`) is `status_code` (the message is never
//! read); CommandComplete's tag gives the operation when the text did not; ReadyForQuery ends
//! the exchange.
//!
//! Joining mid-connection (`PgConn::mid_connection`, or a `new` connection whose first client
//! bytes are not a startup message, or whose server speaks first): a direction starts decoding only at a syscall that begins
//! with a plausible chain of messages (`framing::valid_chain`): client chains start with one
//! of `Q P B E S D C H F X`, lengths under 1 MiB, and bodies that parse (a Query is printable
//! UTF-8 ending in its NUL, names are printable, fixed-size messages have their size); the
//! namespace stays unknown (counted). Pairing: a request is only queued when the responses'
//! order is known: from the start, or once the server was seen idle (its last message a
//! ReadyForQuery) when the request was sent; requests sent otherwise are counted as unpaired,
//! never paired with a response that may answer another. A direction that loses its framing
//! resyncs the same way; a lost server framing drops the waiting requests (counted); a lost
//! client framing makes the server's idleness unknown until its next ReadyForQuery. A
//! response whose first byte moved before its request's did answers an unseen request: it is
//! counted, not paired.
//!
//! Not handled: a pipelining client joined mid-pipeline can pair its first requests with the
//! answers of unseen ones (the server looks idle between two pipelined responses); replication
//! (CopyBoth) streams are skipped as COPY; protocol 2; GSS encryption plaintext; `FunctionCall`
//! names no function.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

mod framing;
mod messages;

use self::{
    framing::{Fed, Framer, Msg},
    messages::{Startup, Stmt},
};
use super::{
    Origin, Segment,
    db::{Db, DbSystem},
    exchange::{Detail, Exchange, Flags, WireSeqs},
};
use crate::event::Direction;

/// Requests waiting for their responses kept at most; beyond it pairing starts over.
pub const MAX_PENDING: usize = 256;
/// Prepared statements remembered per connection (oldest forgotten first).
pub const MAX_STATEMENTS: usize = 256;
/// Portals bound in one batch remembered.
const MAX_PORTALS: usize = 16;

/// Counters of what the decoder had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PostgresStats {
    /// Times a direction lost its framing (a gap where a header was, an impossible header).
    pub desyncs: u64,
    /// Syscalls skipped while a direction looked for a message boundary.
    pub skipped_segments: u64,
    /// Requests not paired: sent while the responses' order was unknown, or waiting when the
    /// server's framing was lost.
    pub unpaired: u64,
    /// Times more than `MAX_PENDING` requests waited.
    pub pending_overflow: u64,
    /// Prepared statements forgotten to stay under `MAX_STATEMENTS`.
    pub statements_evicted: u64,
    /// Executions of statements whose text was not seen (`EXECUTE`).
    pub unknown_statements: u64,
    /// Connections that switched to TLS or GSS encryption (SSLRequest answered `S`).
    pub encrypted: u64,
    /// Encrypted segments skipped.
    pub encrypted_segments: u64,
    /// COPY data messages skipped.
    pub copy_messages: u64,
    /// Connections joined mid-conversation (namespace unknown).
    pub mid_connection: u64,
    /// CancelRequests seen.
    pub cancel_requests: u64,
    /// Responses that started before the request waiting for one was sent (answers to
    /// unseen requests): not paired.
    pub stray_responses: u64,
}

/// Whether bytes are the first a PostgreSQL client sends on a connection (`data` is that
/// syscall's captured bytes, `direction_is_request` whether they travel the client's way): a
/// StartupMessage of protocol 3.x, its length exactly the syscall's bytes (or more, when the
/// capture cut it), its parameters printable NUL-terminated pairs including `user`; an
/// SSLRequest or GSSENCRequest (exactly 8 bytes); or a CancelRequest (16 bytes, up to 264 with
/// protocol 3.2's longer keys). HTTP and TLS cannot match: their first four bytes read as a
/// length over 10,000.
#[must_use]
pub fn looks_like_postgres(data: &[u8], direction_is_request: bool) -> bool {
    direction_is_request && messages::is_startup(data)
}

/// Whether a syscall's bytes are a chain of client messages as a mid-connection join would see
/// them (see the module docs): the strict check `PgConn` resyncs with, for a detector that
/// wants to recognise connections older than the capture. Must hold a Query or a Parse.
#[must_use]
pub fn looks_like_client_messages(data: &[u8]) -> bool {
    framing::valid_chain(data, true) && matches!(data.first(), Some(b'Q' | b'P'))
}

/// Extended-protocol messages since the last Sync.
#[derive(Debug, Default)]
struct Batch {
    start_ns: u64,
    origin: Origin,
    bytes: u64,
    truncated: bool,
    /// The first Parse: its name and statement.
    parse: Option<(String, Arc<Stmt>)>,
    portals: Vec<(String, String)>,
    /// The first Execute: its statement's name (None: a portal bound earlier) and text.
    execute: Option<(Option<String>, Option<Arc<Stmt>>)>,
    executes: u32,
    closes: u32,
    describes: u32,
}

/// A request waiting for (or receiving) its response.
#[derive(Debug)]
struct Pending {
    db: Db,
    start_ns: u64,
    origin: Origin,
    request_bytes: u64,
    truncated: bool,
    /// A simple Query: CommandCompletes count its statements.
    simple: bool,
    completes: u32,
    /// The response so far: first byte's sequence number and bytes.
    response: Option<(u32, u64)>,
}

/// PostgreSQL state of one connection.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent conditions of one connection"
)]
pub struct PgConn {
    request_direction: Direction,
    client: Framer,
    server: Framer,
    namespace: Option<String>,
    statements: HashMap<String, Arc<Stmt>>,
    /// Statement names in the order they were prepared, for eviction.
    statement_order: VecDeque<String>,
    statement_bytes: usize,
    batch: Option<Batch>,
    pending: VecDeque<Pending>,
    /// Requests can be queued: the responses' order is known.
    pairable: bool,
    /// The server's last message was a ReadyForQuery.
    server_idle: bool,
    /// The connection switched to encryption: only TLS plaintext segments are decoded.
    encrypted: bool,
    /// Joined mid-connection: exchanges carry `headers_unknown`.
    joined: bool,
    /// A client message was seen.
    client_seen: bool,
    tls: bool,
    pub stats: PostgresStats,
}

impl PgConn {
    /// A decoder for a connection seen from its start, whose client messages travel in
    /// `request_direction`.
    #[must_use]
    pub fn new(request_direction: Direction) -> Self {
        let mut client = Framer::new(true, true);
        client.untyped = true;
        Self {
            request_direction,
            client,
            server: Framer::new(false, true),
            namespace: None,
            statements: HashMap::new(),
            statement_order: VecDeque::new(),
            statement_bytes: 0,
            batch: None,
            pending: VecDeque::new(),
            pairable: true,
            server_idle: true,
            encrypted: false,
            joined: false,
            client_seen: false,
            tls: false,
            stats: PostgresStats::default(),
        }
    }

    /// A decoder for a connection joined mid-conversation (see the module docs).
    #[must_use]
    pub fn mid_connection(request_direction: Direction) -> Self {
        let mut conn = Self::new(request_direction);
        conn.join_midway();
        conn
    }

    fn join_midway(&mut self) {
        self.client = Framer::new(true, false);
        self.server = Framer::new(false, false);
        self.pairable = false;
        self.server_idle = false;
        self.joined = true;
        self.stats.mid_connection += 1;
    }

    /// Bytes this connection holds.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.client.buffered_bytes()
            + self.server.buffered_bytes()
            + self.statement_bytes
            + self.statements.len() * 64
            + self.pending.len() * 256
    }

    /// Feed one syscall's bytes; completed exchanges are appended to `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if self.encrypted && !seg.tls {
            self.stats.encrypted_segments += 1;
            return;
        }
        self.tls |= seg.tls;
        let is_client = seg.direction == self.request_direction;
        let not_a_start = if is_client {
            self.client.at_boundary() && !messages::may_be_startup(seg.data)
        } else {
            // The server spoke before the client said anything.
            !self.client_seen
        };
        if self.client.untyped && !seg.data.is_empty() && not_a_start {
            // Not a connection's first bytes after all.
            self.join_midway();
        }
        let mut msgs = Vec::new();
        let framer = if is_client {
            &mut self.client
        } else {
            &mut self.server
        };
        let fed = framer.feed(seg, &mut msgs);
        for msg in msgs {
            if is_client {
                self.client_message(&msg);
            } else {
                self.server_message(&msg, seg.ts_exit_ns, out);
            }
        }
        match fed {
            Fed::Ok => {}
            Fed::Skipped => {
                self.stats.skipped_segments += 1;
                if !is_client {
                    self.server_idle = false;
                }
            }
            Fed::Desynced => {
                self.stats.desyncs += 1;
                self.server_idle = false;
                if is_client {
                    // Requests were lost: the server's idleness means nothing until it answers.
                    if self.batch.take().is_some() {
                        self.stats.unpaired += 1;
                    }
                } else {
                    self.stats.unpaired += self.pending.len() as u64;
                    self.pending.clear();
                }
                self.pairable = false;
            }
        }
    }

    /// The connection closed: requests still waiting are emitted without (a complete)
    /// response.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        while let Some(p) = self.pending.pop_front() {
            let flags = Flags {
                no_response: true,
                ..Flags::default()
            };
            out.push(self.exchange(p, ts_ns, flags));
        }
    }

    fn client_message(&mut self, msg: &Msg) {
        self.client_seen = true;
        if msg.ty == 0 {
            self.startup_message(msg);
            return;
        }
        match msg.ty {
            b'Q' => {
                let stmt = Stmt::new(messages::query_text(&msg.body), msg.cut);
                let mut db = self.db(stmt.operation);
                db.collection = stmt.collection;
                // A text not captured at all names nothing; the tag will name the command.
                db.query_text = Some(stmt.text).filter(|t| !t.is_empty());
                self.push_request(Pending {
                    db,
                    start_ns: msg.start_ns,
                    origin: msg.origin,
                    request_bytes: msg.wire_len,
                    truncated: msg.cut,
                    simple: true,
                    completes: 0,
                    response: None,
                });
            }
            b'F' => {
                let db = self.db("FUNCTION CALL".to_owned());
                self.push_request(Pending {
                    db,
                    start_ns: msg.start_ns,
                    origin: msg.origin,
                    request_bytes: msg.wire_len,
                    truncated: msg.cut,
                    simple: false,
                    completes: 0,
                    response: None,
                });
            }
            b'd' | b'c' | b'f' => {
                // COPY FROM STDIN data: part of the request being answered.
                self.stats.copy_messages += u64::from(msg.ty == b'd');
                if let Some(p) = self.pending.back_mut() {
                    p.request_bytes += msg.wire_len;
                } else if let Some(b) = self.batch.as_mut() {
                    b.bytes += msg.wire_len;
                }
            }
            b'X' | b'p' => {}
            _ => self.extended(msg),
        }
    }

    /// Parse, Bind, Describe, Execute, Close, Flush, Sync.
    fn extended(&mut self, msg: &Msg) {
        let mut batch = self.batch.take().unwrap_or_else(|| Batch {
            start_ns: msg.start_ns,
            origin: msg.origin,
            ..Batch::default()
        });
        batch.bytes += msg.wire_len;
        batch.truncated |= msg.cut;
        match msg.ty {
            b'P' => {
                if let Some((name, text)) = messages::parse(&msg.body) {
                    let stmt = Arc::new(Stmt::new(text, msg.cut));
                    if batch.parse.is_none() {
                        batch.parse = Some((name.clone(), Arc::clone(&stmt)));
                    }
                    self.remember(name, stmt);
                }
            }
            b'B' => {
                if let Some(bound) = messages::bind(&msg.body) {
                    batch.portals.retain(|(portal, _)| *portal != bound.0);
                    if batch.portals.len() < MAX_PORTALS {
                        batch.portals.push(bound);
                    }
                }
            }
            b'E' => {
                batch.executes += 1;
                if batch.execute.is_none() {
                    let portal = messages::execute(&msg.body);
                    let name = portal.and_then(|portal| {
                        batch
                            .portals
                            .iter()
                            .find(|(p, _)| *p == portal)
                            .map(|(_, s)| s.clone())
                    });
                    let stmt = name.as_ref().and_then(|n| self.statements.get(n)).cloned();
                    batch.execute = Some((name, stmt));
                }
            }
            b'C' => {
                batch.closes += 1;
                if let Some((true, name)) = messages::close(&msg.body)
                    && let Some(stmt) = self.statements.remove(&name)
                {
                    self.statement_bytes -= stmt.size();
                    self.statement_order.retain(|n| *n != name);
                }
            }
            b'D' => batch.describes += 1,
            b'S' => {
                self.end_batch(batch);
                return;
            }
            _ => {}
        }
        self.batch = Some(batch);
    }

    fn end_batch(&mut self, batch: Batch) {
        let mut db;
        if let Some((name, stmt)) = batch.execute {
            if let Some(stmt) = stmt {
                db = self.db(stmt.operation.clone());
                db.collection.clone_from(&stmt.collection);
                db.query_text = Some(stmt.text.clone());
            } else {
                self.stats.unknown_statements += 1;
                db = self.db("EXECUTE".to_owned());
            }
            db.statement = name;
            db.batch_size = batch.executes;
        } else if let Some((name, stmt)) = batch.parse {
            db = self.db("PREPARE".to_owned());
            db.collection.clone_from(&stmt.collection);
            db.query_text = Some(stmt.text.clone());
            db.statement = Some(name);
        } else {
            let op = if batch.closes > 0 {
                "CLOSE"
            } else if batch.describes > 0 {
                "DESCRIBE"
            } else {
                "SYNC"
            };
            db = self.db(op.to_owned());
        }
        self.push_request(Pending {
            db,
            start_ns: batch.start_ns,
            origin: batch.origin,
            request_bytes: batch.bytes,
            truncated: batch.truncated,
            simple: false,
            completes: 0,
            response: None,
        });
    }

    fn remember(&mut self, name: String, stmt: Arc<Stmt>) {
        self.statement_bytes += stmt.size();
        if let Some(old) = self.statements.insert(name.clone(), stmt) {
            self.statement_bytes -= old.size();
            return;
        }
        self.statement_order.push_back(name);
        if self.statement_order.len() > MAX_STATEMENTS
            && let Some(oldest) = self.statement_order.pop_front()
            && let Some(old) = self.statements.remove(&oldest)
        {
            self.statement_bytes -= old.size();
            self.stats.statements_evicted += 1;
        }
    }

    fn startup_message(&mut self, msg: &Msg) {
        match messages::startup(&msg.body) {
            Startup::Ssl | Startup::GssEnc => self.server.single_byte = true,
            Startup::Cancel => self.stats.cancel_requests += 1,
            Startup::Start { database } => {
                self.namespace = database;
                self.client.untyped = false;
            }
            Startup::Unknown => {
                self.client.untyped = false;
                self.join_midway();
            }
        }
    }

    fn db(&self, operation: String) -> Db {
        let mut db = Db::new(DbSystem::Postgresql, operation);
        db.namespace.clone_from(&self.namespace);
        db
    }

    fn push_request(&mut self, pending: Pending) {
        if !self.pairable {
            if self.server.synced && self.server_idle {
                self.pairable = true;
            } else {
                self.stats.unpaired += 1;
                return;
            }
        }
        if self.pending.len() >= MAX_PENDING {
            // Dropping one would shift every later pairing: start over.
            self.stats.pending_overflow += 1;
            self.stats.unpaired += self.pending.len() as u64 + 1;
            self.pending.clear();
            self.pairable = false;
            return;
        }
        self.pending.push_back(pending);
    }

    fn server_message(&mut self, msg: &Msg, ts_exit_ns: u64, out: &mut Vec<Exchange>) {
        if msg.single {
            if matches!(msg.ty, b'S' | b'G') {
                self.encrypted = true;
                self.stats.encrypted += 1;
            }
            return;
        }
        match msg.ty {
            b'Z' => self.server_idle = true,
            // Asynchronous messages leave the server as idle as it was.
            b'S' | b'N' | b'A' => {}
            _ => self.server_idle = false,
        }
        if matches!(msg.ty, b'd' | b'c') {
            self.stats.copy_messages += u64::from(msg.ty == b'd');
        }
        let Some(p) = self.pending.front_mut() else {
            return;
        };
        if p.response.is_none() && msg.start_ns < p.start_ns {
            // It started before the request was sent: it answers an unseen one.
            self.stats.stray_responses += u64::from(msg.ty == b'Z');
            return;
        }
        let response = p.response.get_or_insert((msg.origin.seq, 0));
        response.1 += msg.wire_len;
        p.truncated |= msg.cut;
        match msg.ty {
            b'C' => {
                p.completes += 1;
                if p.db.operation.is_empty()
                    && let Some(op) = messages::command_tag(&msg.body)
                {
                    p.db.operation = op;
                }
            }
            b'E' if p.db.status_code.is_none() => p.db.status_code = messages::sqlstate(&msg.body),
            b'Z' => {
                let mut p = self.pending.pop_front().expect("a pending request");
                if p.simple && p.completes > 1 {
                    p.db.batch_size = p.completes;
                    p.db.collection = None;
                }
                out.push(self.exchange(p, ts_exit_ns, Flags::default()));
            }
            _ => {}
        }
    }

    fn exchange(&self, p: Pending, end_ns: u64, flags: Flags) -> Exchange {
        let (response_seq, response_bytes) = p.response.unwrap_or((0, 0));
        Exchange {
            request_direction: self.request_direction,
            start_ns: p.start_ns,
            origin: p.origin,
            end_ns,
            request_bytes: p.request_bytes,
            response_bytes,
            wire: if self.tls {
                WireSeqs::default()
            } else {
                WireSeqs::of(p.origin.seq, response_seq)
            },
            detail: Detail::Db(p.db),
            flags: Flags {
                truncated: p.truncated,
                headers_unknown: self.joined,
                ..flags
            },
        }
    }
}

#[cfg(test)]
mod tests;
