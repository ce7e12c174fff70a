//! Redis (RESP2 and RESP3): one exchange per command, replies paired in order.
//!
//! The request stream is scanned into commands (RESP arrays of bulk strings, or the inline
//! form) and the reply stream into top-level values (`request`, `reply`); neither buffers a
//! value: bulk strings are skipped by their length, uncaptured bytes included, and only a
//! command's name and first argument are looked at (to name it, and for `SELECT n` and
//! `CLIENT SETNAME`-style subcommands). Keys, values and passwords (`AUTH`, `HELLO .. AUTH`)
//! are never kept: `db.query.text` is the command with one `?` per argument.
//!
//! Pairing: every command is answered by one reply, in order (pipelining, `MULTI`'s `QUEUED`
//! replies, `EXEC`'s array), except in pub/sub: RESP3 pushes (`>`) and, after a RESP2
//! `SUBSCRIBE`, arrays whose first element is `message`/`pmessage`/`smessage` are published
//! messages, counted and never paired. A (un)subscription is answered by one confirmation per
//! channel: the first ends its exchange, the rest are counted as pushes. A reply that starts
//! before the command it would pair with was sent answers an earlier, unseen command (the
//! capture joined mid-connection, or lost commands to a gap): it is counted, not paired.
//!
//! Gaps: uncaptured bytes inside a bulk string are skipped by count. A gap where framing is
//! needed (a `*`/`$` header, a reply's type line) costs that stream its framing. A cut command
//! is kept, flagged truncated, with its name if seen (its reply will come next); the request
//! stream resumes at a syscall that starts a command (`looks_like_redis`). A reply stream that
//! loses framing ends every waiting command as truncated, without a status, and resumes at a
//! syscall that starts with a RESP type byte.
//!
//! `db.namespace`: the database from a successful `SELECT n`, or 0 when the connection's start
//! was seen (`saw_connection_start`); otherwise unknown (a join mid-connection), counted.
//!
//! Not handled: `CLIENT REPLY OFF|SKIP` (commands then go unanswered and later replies pair
//! with the wrong command), `MONITOR`'s stream (its lines are counted as unmatched replies),
//! the quoting of inline commands (words are split at blanks), and which of two back-to-back
//! unsubscriptions of the same kind an `UNSUBSCRIBE`-without-arguments confirmation answers.

use std::collections::VecDeque;

mod command;
mod reply;
mod request;

pub use self::{command::looks_like_redis, reply::MAX_DEPTH};

use self::{
    command::{Confirm, Kind, Words, command_start, is_message},
    reply::{Replies, Reply, is_type},
    request::Requests,
};
use super::{
    Origin, Piece, Segment,
    db::{Db, DbSystem},
    exchange::{Detail, Exchange, Flags, WireSeqs},
};
use crate::event::Direction;

/// Commands waiting for their replies (pipelining depth) kept at most; beyond it the oldest
/// is dropped and its reply skipped when it comes.
pub const MAX_PENDING: usize = 1024;

/// Counters of what the decoder had to drop or could not pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RedisStats {
    /// Times the request stream lost its framing (bytes that are not RESP, a header cut by
    /// the capture limit).
    pub request_desyncs: u64,
    /// Times the reply stream lost its framing.
    pub response_desyncs: u64,
    /// Commands whose header was not captured whole: kept, flagged truncated.
    pub cut_commands: u64,
    /// Commands ended without their reply because the reply stream lost its framing.
    pub lost_replies: u64,
    /// Replies with no command to pair with (a join mid-connection, commands lost to a gap).
    pub unmatched_replies: u64,
    /// Pushes and published messages (pub/sub, client tracking), and extra confirmations.
    pub pushes: u64,
    /// Commands dropped because more than `MAX_PENDING` waited.
    pub pending_overflow: u64,
    /// Replies nested deeper than `MAX_DEPTH`.
    pub too_deep: u64,
    /// Exchanges without `db.namespace`: no `SELECT` and no connection start seen.
    pub namespace_unknown: u64,
}

impl RedisStats {
    /// Add another connection's counts.
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.counts_mut().into_iter().zip(other.counts()) {
            *a += b.1;
        }
    }

    /// Each count with what it means for people (`redis replies without a command 3`).
    #[must_use]
    pub fn counts(&self) -> [(&'static str, u64); 9] {
        [
            ("redis commands lost framing", self.request_desyncs),
            ("redis replies lost framing", self.response_desyncs),
            ("redis commands cut by the capture", self.cut_commands),
            (
                "redis commands ended without their reply",
                self.lost_replies,
            ),
            ("redis replies without a command", self.unmatched_replies),
            ("redis pushes and pub/sub messages", self.pushes),
            ("redis commands over the waiting cap", self.pending_overflow),
            ("redis replies nested too deep", self.too_deep),
            (
                "redis commands without a known database",
                self.namespace_unknown,
            ),
        ]
    }

    fn counts_mut(&mut self) -> [&mut u64; 9] {
        [
            &mut self.request_desyncs,
            &mut self.response_desyncs,
            &mut self.cut_commands,
            &mut self.lost_replies,
            &mut self.unmatched_replies,
            &mut self.pushes,
            &mut self.pending_overflow,
            &mut self.too_deep,
            &mut self.namespace_unknown,
        ]
    }
}

/// Where a message in progress started, and its bytes so far.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    start_ns: u64,
    origin: Origin,
    bytes: u64,
}

/// A command waiting for its reply.
#[derive(Debug)]
struct Pending {
    operation: String,
    text: Option<String>,
    kind: Kind,
    at: Progress,
    truncated: bool,
}

/// Redis state of one connection.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent conditions: each stream's framing, RESP2 pub/sub mode, TLS"
)]
pub struct RedisConn {
    request_direction: Direction,
    requests: Requests,
    requests_synced: bool,
    request: Option<Progress>,
    replies: Replies,
    replies_synced: bool,
    pending: VecDeque<Pending>,
    /// Replies owed to commands dropped at `MAX_PENDING`, skipped as they come.
    skip_replies: u64,
    namespace: Option<String>,
    /// RESP2 pub/sub mode: arrays may be published messages.
    pubsub: bool,
    /// Confirmations still to come for the last (un)subscription paired.
    owed: Option<(Confirm, u64)>,
    pub stats: RedisStats,
    /// TLS plaintext: no wire numbers (see `Exchange::wire`).
    tls: bool,
}

/// The origin of the byte `offset` bytes into a segment.
fn origin_at(seg: &Segment<'_>, offset: u64) -> Origin {
    Origin {
        seq: seg.origin.seq.wrapping_add(offset as u32),
        ..seg.origin
    }
}

impl RedisConn {
    /// A decoder for a connection whose commands travel in `request_direction`, joined at an
    /// unknown point: the database is unknown until a `SELECT`, the request stream is taken up
    /// at the first syscall that starts a command (`looks_like_redis`), and the reply stream at
    /// the first that starts with a RESP type byte.
    #[must_use]
    pub fn new(request_direction: Direction) -> Self {
        Self {
            request_direction,
            requests: Requests::new(),
            requests_synced: false,
            request: None,
            replies: Replies::new(),
            replies_synced: false,
            pending: VecDeque::new(),
            skip_replies: 0,
            namespace: None,
            pubsub: false,
            owed: None,
            stats: RedisStats::default(),
            tls: false,
        }
    }

    /// The capture saw the connection open: the database is 0 until a `SELECT`, and both
    /// streams start at a message.
    pub fn saw_connection_start(&mut self) {
        self.namespace = Some("0".to_owned());
        self.requests_synced = true;
        self.replies_synced = true;
    }

    /// Bytes this connection holds (scanner state, plus an estimate per waiting command).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        256 + self.replies.held() + self.pending.len() * 128
    }

    /// Feed one syscall's bytes; completed exchanges are appended to `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        self.tls |= seg.tls;
        if seg.direction == self.request_direction {
            self.feed_requests(seg);
        } else {
            self.feed_replies(seg, out);
        }
    }

    /// The connection closed: a reply in progress ends its command as truncated; commands
    /// still waiting are emitted without a response.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if self.replies_synced
            && let Some(partial) = self.replies.cut()
            && self.skip_replies == 0
            && let Some(p) = self.pending.pop_front()
        {
            self.emit(p, Some(&partial), ts_ns, true, out);
        }
        while let Some(p) = self.pending.pop_front() {
            let flags = Flags {
                no_response: true,
                truncated: p.truncated,
                ..Flags::default()
            };
            out.push(self.exchange(p, None, ts_ns, flags));
        }
    }

    fn feed_requests(&mut self, seg: &Segment<'_>) {
        if !self.requests_synced {
            if !command_start(seg.data) {
                return;
            }
            self.requests_synced = true;
            self.requests = Requests::new();
            self.request = None;
        }
        let mut offset = 0;
        for piece in seg.pieces() {
            match piece {
                Piece::Bytes(bytes) => {
                    let mut i = 0;
                    while i < bytes.len() {
                        if self.requests.idle() {
                            self.request = Some(Progress {
                                start_ns: seg.first_byte_ns(),
                                origin: origin_at(seg, offset + i as u64),
                                bytes: 0,
                            });
                        }
                        let (used, event) = self.requests.scan(&bytes[i..]);
                        i += used;
                        if let Some(p) = self.request.as_mut() {
                            p.bytes += used as u64;
                        }
                        match event {
                            request::Event::More => {}
                            request::Event::Command(words) => self.push_command(&words, false),
                            request::Event::Nothing => self.request = None,
                            request::Event::Invalid => {
                                self.stats.request_desyncs += 1;
                                self.requests_synced = false;
                                return;
                            }
                        }
                    }
                    offset += bytes.len() as u64;
                }
                Piece::Gap(n) => {
                    let (skipped, done) = self.requests.skip(n);
                    if let Some(p) = self.request.as_mut() {
                        p.bytes += skipped;
                    }
                    if let Some(words) = done {
                        self.push_command(&words, false);
                    }
                    if skipped < n {
                        self.cut_command(seg, offset + skipped, n - skipped);
                        return;
                    }
                    offset += n;
                }
            }
        }
    }

    /// `missing` bytes at `offset` were not captured where the framing needed them: the
    /// command they cut (or start) is kept as truncated, so that its reply, next in order,
    /// pairs with it; the stream waits for a syscall that starts a command.
    fn cut_command(&mut self, seg: &Segment<'_>, offset: u64, missing: u64) {
        self.stats.cut_commands += 1;
        self.stats.request_desyncs += 1;
        let words = self.requests.cut();
        let mut at = self.request.take().unwrap_or(Progress {
            start_ns: seg.first_byte_ns(),
            origin: origin_at(seg, offset),
            bytes: 0,
        });
        at.bytes += missing;
        self.request = Some(at);
        self.push_command(&words, true);
        self.requests_synced = false;
    }

    fn push_command(&mut self, words: &Words, truncated: bool) {
        let at = self.request.take().unwrap_or_default();
        let (operation, text, kind) = words.describe();
        if self.pending.len() >= MAX_PENDING {
            self.stats.pending_overflow += 1;
            self.pending.pop_front();
            self.skip_replies += 1;
        }
        self.pending.push_back(Pending {
            operation,
            text,
            kind,
            at,
            // A name the capture did not hold whole is part of the head not captured.
            truncated: truncated || words.name.is_none(),
        });
    }

    fn feed_replies(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if !self.replies_synced {
            if !seg.data.first().is_some_and(|&b| is_type(b)) {
                return;
            }
            self.replies_synced = true;
            self.replies = Replies::new();
        }
        let mut offset = 0;
        for piece in seg.pieces() {
            match piece {
                Piece::Bytes(bytes) => {
                    let mut i = 0;
                    while i < bytes.len() {
                        if self.replies.idle() {
                            let seq = origin_at(seg, offset + i as u64).seq;
                            self.replies.begin(seg.first_byte_ns(), seq);
                        }
                        let (used, event) = self.replies.scan(&bytes[i..]);
                        i += used;
                        match event {
                            reply::Event::More => {}
                            reply::Event::Reply(r) => self.on_reply(&r, seg.ts_exit_ns, out),
                            reply::Event::Invalid => {
                                self.reply_desync(seg.ts_exit_ns, out);
                                return;
                            }
                            reply::Event::TooDeep => {
                                self.stats.too_deep += 1;
                                self.reply_desync(seg.ts_exit_ns, out);
                                return;
                            }
                        }
                    }
                    offset += bytes.len() as u64;
                }
                Piece::Gap(n) => {
                    let (skipped, done) = self.replies.skip(n);
                    if let Some(r) = done {
                        self.on_reply(&r, seg.ts_exit_ns, out);
                    }
                    if skipped < n {
                        self.reply_desync(seg.ts_exit_ns, out);
                        return;
                    }
                    offset += n;
                }
            }
        }
    }

    /// The reply stream lost its framing: the reply in progress answered the first waiting
    /// command; which replies answer the others can no longer be told, so they end here,
    /// truncated.
    fn reply_desync(&mut self, end_ns: u64, out: &mut Vec<Exchange>) {
        self.stats.response_desyncs += 1;
        self.replies_synced = false;
        let partial = self.replies.cut();
        let mut partial = partial.as_ref().filter(|_| self.skip_replies == 0);
        self.skip_replies = 0;
        self.owed = None;
        while let Some(p) = self.pending.pop_front() {
            self.stats.lost_replies += 1;
            self.emit(p, partial.take(), end_ns, true, out);
        }
    }

    /// A complete top-level reply: a push, a confirmation, or the answer to the first waiting
    /// command.
    fn on_reply(&mut self, r: &Reply, end_ns: u64, out: &mut Vec<Exchange>) {
        if self.skip_replies > 0 {
            self.skip_replies -= 1;
            self.stats.unmatched_replies += 1;
            return;
        }
        let front = self.pending.front().map(|p| (p.kind, p.at.start_ns));
        // A reply cannot answer a command sent after it started.
        let causal = front.is_some_and(|(_, start)| r.start_ns >= start);
        let confirm = match r.kind {
            b'>' => Confirm::of_reply(&r.first),
            b'*' if self.pubsub || matches!(front, Some((Kind::Pubsub(..), _))) => {
                Confirm::of_reply(&r.first)
            }
            _ => None,
        };
        if let Some(c) = confirm {
            if r.kind == b'*' {
                self.pubsub = r.count != Some(0);
            }
            if let Some((kind, left)) = self.owed.as_mut()
                && *kind == c
                && *left > 0
            {
                *left -= 1;
                self.stats.pushes += 1;
            } else if let Some((Kind::Pubsub(kind, args), _)) = front
                && kind == c
                && causal
            {
                self.owed = Some((c, args.saturating_sub(1)));
                if let Some(p) = self.pending.pop_front() {
                    self.emit(p, Some(r), end_ns, false, out);
                }
            } else {
                self.stats.pushes += 1;
            }
            return;
        }
        if r.kind == b'>' || (r.kind == b'*' && self.pubsub && is_message(&r.first)) {
            self.stats.pushes += 1;
            return;
        }
        if !causal {
            self.stats.unmatched_replies += 1;
            return;
        }
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        match p.kind {
            Kind::Select(db) if r.kind == b'+' && r.simple == b"OK" => {
                self.namespace = Some(db.to_string());
            }
            Kind::Reset if r.kind == b'+' && r.simple == b"RESET" => {
                self.namespace = Some("0".to_owned());
                self.pubsub = false;
                self.owed = None;
            }
            _ => {}
        }
        self.emit(p, Some(r), end_ns, false, out);
    }

    fn emit(
        &mut self,
        p: Pending,
        reply: Option<&Reply>,
        end_ns: u64,
        cut: bool,
        out: &mut Vec<Exchange>,
    ) {
        let flags = Flags {
            truncated: p.truncated || cut,
            ..Flags::default()
        };
        out.push(self.exchange(p, reply, end_ns, flags));
    }

    fn exchange(
        &mut self,
        p: Pending,
        reply: Option<&Reply>,
        end_ns: u64,
        flags: Flags,
    ) -> Exchange {
        let mut db = Db::new(DbSystem::Redis, p.operation);
        db.query_text = p.text;
        db.namespace.clone_from(&self.namespace);
        if db.namespace.is_none() {
            self.stats.namespace_unknown += 1;
        }
        db.status_code = reply.and_then(|r| r.status.clone());
        Exchange {
            request_direction: self.request_direction,
            start_ns: p.at.start_ns,
            origin: p.at.origin,
            end_ns,
            request_bytes: p.at.bytes,
            response_bytes: reply.map_or(0, |r| r.bytes),
            wire: if self.tls {
                WireSeqs::default()
            } else {
                WireSeqs::of(p.at.origin.seq, reply.map_or(0, |r| r.seq))
            },
            detail: Detail::Db(db),
            flags,
        }
    }
}

#[cfg(test)]
mod tests;
