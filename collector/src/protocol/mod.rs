//! `protocol`: a connection's two byte streams → request/response exchanges. Pure, no I/O.
//!
//! The input is one [`Segment`] per syscall: the bytes that were captured, the count that was
//! not (a gap after them), and the syscall's times. [`ConnDecoder`] recognises the protocol from
//! the first bytes (an HTTP/1 request or status line, the HTTP/2 preface, or valid HTTP/2 frames
//! when the capture joined mid-connection), caches it, and hands the segments to that decoder.
//! Unknown protocols are counted, never guessed.

pub mod content;
pub mod db;
pub mod exchange;
pub mod fuzzing;
pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sql;
pub mod turns;

pub use exchange::{Detail, Exchange, Flags, Grpc, Http, HttpVersion, Interesting, WireSeqs};

use std::sync::Arc;

use self::content::{Blank, SecretNames};
use crate::event::{Direction, Window};

/// One syscall's worth of a connection's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// From this process's point of view.
    pub direction: Direction,
    /// Who moved the bytes: the TCP sequence number of the first, the thread and goroutine.
    pub origin: Origin,
    /// The captured prefix.
    pub data: &'a [u8],
    /// Bytes the syscall moved beyond `data` (not captured).
    pub missing: u64,
    /// Captured windows inside the missing bytes (HTTP/2 frame starts), in offset order.
    pub windows: &'a [Window],
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    /// TLS plaintext: `origin.seq` is the encrypted bytes' sequence number, which joins the two
    /// ends but does not count plaintext bytes, so segments' continuity cannot be checked by it.
    pub tls: bool,
}

/// A run of a segment's bytes: captured, or known only by count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Bytes(&'a [u8]),
    Gap(u64),
}

/// Who moved bytes: the TCP sequence number of the first byte (a client's write and the
/// server's read of the same request carry the same), the thread, and the goroutine when known.
/// Correlation ties requests together with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    pub seq: u32,
    pub tid: u32,
    pub goid: Option<u64>,
}

impl<'a> Segment<'a> {
    /// The segment in order: the captured prefix, then the windows and the gaps between them,
    /// up to the syscall's exact byte count. Window bytes before the segment (negative offsets)
    /// or already covered are left out, so the pieces never overlap.
    #[must_use]
    pub fn pieces(&self) -> Vec<Piece<'a>> {
        let total = self.data.len() as u64 + self.missing;
        let mut out = Vec::new();
        if !self.data.is_empty() {
            out.push(Piece::Bytes(self.data));
        }
        let mut pos = self.data.len() as u64;
        for w in self.windows {
            // Bytes before the segment's start (a negative offset) were the previous segment's.
            let before = w.offset.min(0).unsigned_abs();
            let start = w.offset.max(0).unsigned_abs();
            let len = w.bytes.len() as u64;
            if before >= len {
                continue;
            }
            let end = (start + len - before).min(total);
            if end <= pos {
                continue;
            }
            let from = pos.max(start);
            if from >= end {
                continue;
            }
            if from > pos {
                out.push(Piece::Gap(from - pos));
            }
            let skip = (before + from - start) as usize;
            let w_bytes: &'a [u8] = &w.bytes;
            out.push(Piece::Bytes(&w_bytes[skip..skip + (end - from) as usize]));
            pos = end;
        }
        if pos < total {
            out.push(Piece::Gap(total - pos));
        }
        out
    }

    /// The origin of the byte `buffered` bytes before the end of this segment's data, for a
    /// decoder whose buffer ends with this segment and holds `buffered` bytes: a message that
    /// starts at the buffer's front may have started in an earlier segment.
    #[must_use]
    pub fn origin_of_buffer_front(&self, buffered: usize) -> Origin {
        // Sequence numbers wrap: (len - buffered) mod 2^32, computed in u32.
        let ahead = (self.data.len() as u32).wrapping_sub(buffered as u32);
        Origin {
            seq: self.origin.seq.wrapping_add(ahead),
            ..self.origin
        }
    }

    /// When the segment's first byte moved: a write's entry, but a read's exit. A blocking read
    /// enters long before bytes arrive (an idle keep-alive connection waits there), so its entry
    /// time would stretch a server's request by the idle time.
    #[must_use]
    pub fn first_byte_ns(&self) -> u64 {
        match self.direction {
            Direction::Egress => self.ts_enter_ns,
            Direction::Ingress => self.ts_exit_ns,
        }
    }
}

/// Segments looked at before a connection is declared of unknown protocol.
const DETECT_SEGMENTS: u32 = 4;

/// What a connection turned out to carry.
#[derive(Debug)]
enum State {
    Detecting {
        seen: u32,
    },
    Http1(Box<http1::Http1Conn>),
    Http2(Box<http2::Http2Conn>),
    Redis(Box<redis::RedisConn>),
    Postgres(Box<postgres::PgConn>),
    Mysql(Box<mysql::MysqlConn>),
    /// No decoder knows it: an exchange per request/response turn (see `turns`).
    Turns(Box<turns::TurnsConn>),
    Unknown,
}

/// What the decoders had to drop, by protocol (summed over connections by the `conn` stage).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecoderStats {
    pub http1: http1::Http1Stats,
    pub http2: http2::Http2Stats,
    pub redis: redis::RedisStats,
    pub postgres: postgres::PostgresStats,
    pub mysql: mysql::MysqlStats,
    pub turns: turns::TurnStats,
}

impl DecoderStats {
    /// Add another decoder's counts.
    pub fn add(&mut self, other: &Self) {
        let (a, b) = (&mut self.http1, &other.http1);
        a.desyncs += b.desyncs;
        a.oversized_heads += b.oversized_heads;
        a.pending_overflow += b.pending_overflow;
        let (a, b) = (&mut self.http2, &other.http2);
        a.desyncs += b.desyncs;
        a.undecoded_header_blocks += b.undecoded_header_blocks;
        a.stream_overflow += b.stream_overflow;
        a.oversized_frames += b.oversized_frames;
        a.cut_frames += b.cut_frames;
        a.seq_gaps += b.seq_gaps;
        a.wrong_role_guesses += b.wrong_role_guesses;
        self.redis.add(&other.redis);
        let (a, b) = (&mut self.postgres, &other.postgres);
        a.desyncs += b.desyncs;
        a.unpaired += b.unpaired;
        a.pending_overflow += b.pending_overflow;
        a.encrypted += b.encrypted;
        a.mid_connection += b.mid_connection;
        let (a, b) = (&mut self.mysql, &other.mysql);
        a.desyncs += b.desyncs;
        a.responses_undecoded += b.responses_undecoded;
        a.pending_overflow += b.pending_overflow;
        a.tls += b.tls;
        a.mid_connection += b.mid_connection;
        let (a, b) = (&mut self.turns, &other.turns);
        a.turns += b.turns;
        a.folded += b.folded;
        a.unrequested += b.unrequested;
    }

    /// The nonzero counts, named for people (`http/2 header blocks not decoded 3`), or none.
    #[must_use]
    pub fn describe(&self) -> Vec<String> {
        let (h1, h2) = (&self.http1, &self.http2);
        [
            ("http/1 lost sync", h1.desyncs),
            ("http/1 heads too large", h1.oversized_heads),
            ("http/1 requests over the waiting cap", h1.pending_overflow),
            ("http/2 lost framing", h2.desyncs),
            (
                "http/2 header blocks not decoded",
                h2.undecoded_header_blocks,
            ),
            ("http/2 streams over the cap", h2.stream_overflow),
            ("http/2 frames too large, skipped", h2.oversized_frames),
            (
                "http/2 frames cut by uncaptured bytes (framing kept)",
                h2.cut_frames,
            ),
            ("http/2 lost framing after lost events", h2.seq_gaps),
            (
                "http/2 mid-connection roles guessed wrong",
                h2.wrong_role_guesses,
            ),
            (
                "tcp turns folded into their connection's last span (over the cap)",
                self.turns.folded,
            ),
            ("postgresql lost framing", self.postgres.desyncs),
            ("postgresql requests not paired", self.postgres.unpaired),
            (
                "postgresql requests over the waiting cap",
                self.postgres.pending_overflow,
            ),
            (
                "postgresql connections encrypted (not decoded)",
                self.postgres.encrypted,
            ),
            (
                "postgresql connections joined mid-way (database unknown)",
                self.postgres.mid_connection,
            ),
            ("mysql lost framing", self.mysql.desyncs),
            (
                "mysql responses not decoded",
                self.mysql.responses_undecoded,
            ),
            (
                "mysql commands over the waiting cap",
                self.mysql.pending_overflow,
            ),
            ("mysql connections over TLS (not decoded)", self.mysql.tls),
            (
                "mysql connections joined mid-way (schema unknown)",
                self.mysql.mid_connection,
            ),
        ]
        .into_iter()
        .chain(self.redis.counts())
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what} {n}"))
        .collect()
    }
}

/// The protocol decoder of one connection.
#[derive(Debug)]
pub struct ConnDecoder {
    state: State,
    /// Credential headers its HTTP/1 heads and HTTP/2 header blocks note for blanking (None:
    /// none).
    secrets: Option<Arc<SecretNames>>,
    /// Whether a connection of unknown protocol gives an exchange per turn (it needs `client`).
    turns: bool,
    /// Which direction carries requests, as far as the connection's opening (connect or
    /// accept) or its ports tell: mid-connection database joins are recognised only from the
    /// client's side.
    client: Option<Direction>,
    /// The capture saw the connection open (a Redis connection's database is then 0).
    opened: bool,
    /// The segments seen while detecting, as counts, for the turns of an unknown protocol.
    early: Vec<Early>,
}

/// A segment seen while the protocol was being recognised: what turns need of it.
#[derive(Debug, Clone, Copy)]
struct Early {
    direction: Direction,
    origin: Origin,
    bytes: u64,
    ts_enter_ns: u64,
    ts_exit_ns: u64,
    tls: bool,
}

/// Which protocol a decoder settled on, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Pending,
    Http1,
    Http2,
    /// Redis, PostgreSQL or MySQL.
    Database,
    Unknown,
}

impl Default for ConnDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnDecoder {
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: State::Detecting { seen: 0 },
            secrets: None,
            turns: false,
            client: None,
            opened: false,
            early: Vec::new(),
        }
    }

    /// What the connection's opening said: which direction carries requests (None: not
    /// known), and whether the capture saw it open.
    #[must_use]
    pub fn with_opening(mut self, client: Option<Direction>, opened: bool) -> Self {
        self.client = client;
        self.opened = opened;
        self
    }

    /// Give an exchange per request/response turn if no decoder knows the protocol (when the
    /// opening told which way requests go, see `with_opening`).
    #[must_use]
    pub fn with_turns(mut self, on: bool) -> Self {
        self.turns = on;
        self
    }

    /// Note the credentials in HTTP/1 heads (see `content`), of headers named in `names`.
    #[must_use]
    pub fn noting_secrets(mut self, names: Option<Arc<SecretNames>>) -> Self {
        self.secrets = names;
        self
    }

    #[must_use]
    pub fn detected(&self) -> Detected {
        match self.state {
            State::Detecting { .. } => Detected::Pending,
            State::Http1(_) => Detected::Http1,
            State::Http2(_) => Detected::Http2,
            State::Redis(_) | State::Postgres(_) | State::Mysql(_) => Detected::Database,
            State::Turns(_) | State::Unknown => Detected::Unknown,
        }
    }

    /// What this connection's decoder had to drop so far.
    #[must_use]
    pub fn stats(&self) -> DecoderStats {
        match &self.state {
            State::Http1(conn) => DecoderStats {
                http1: conn.stats,
                ..DecoderStats::default()
            },
            State::Http2(conn) => DecoderStats {
                http2: conn.stats,
                ..DecoderStats::default()
            },
            State::Turns(conn) => DecoderStats {
                turns: conn.stats,
                ..DecoderStats::default()
            },
            State::Redis(conn) => DecoderStats {
                redis: conn.stats,
                ..DecoderStats::default()
            },
            State::Postgres(conn) => DecoderStats {
                postgres: conn.stats,
                ..DecoderStats::default()
            },
            State::Mysql(conn) => DecoderStats {
                mysql: conn.stats,
                ..DecoderStats::default()
            },
            State::Detecting { .. } | State::Unknown => DecoderStats::default(),
        }
    }

    /// Bytes the decoder holds, for the connection table's memory budget.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        match &self.state {
            State::Http1(conn) => conn.buffered_bytes(),
            State::Http2(conn) => conn.buffered_bytes(),
            State::Redis(conn) => conn.buffered_bytes(),
            State::Postgres(conn) => conn.buffered_bytes(),
            State::Mysql(conn) => conn.buffered_bytes(),
            State::Detecting { .. } | State::Turns(_) | State::Unknown => 0,
        }
    }

    /// Feed one syscall's bytes; completed exchanges are appended to `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if let State::Detecting { seen } = self.state {
            self.state = detect(seg, seen, self.client);
            if let State::Redis(conn) = &mut self.state
                && self.opened
            {
                conn.saw_connection_start();
            }
            match &mut self.state {
                State::Http1(conn) => conn.marks.set_secrets(self.secrets.clone()),
                State::Http2(conn) => conn.marks.set_secrets(self.secrets.clone()),
                State::Detecting { .. } => self.early.push(Early {
                    direction: seg.direction,
                    origin: seg.origin,
                    bytes: seg.data.len() as u64 + seg.missing,
                    ts_enter_ns: seg.ts_enter_ns,
                    ts_exit_ns: seg.ts_exit_ns,
                    tls: seg.tls,
                }),
                State::Unknown => self.start_turns(out),
                State::Turns(_) | State::Redis(_) | State::Postgres(_) | State::Mysql(_) => {}
            }
            if !matches!(self.state, State::Detecting { .. }) {
                self.early = Vec::new();
            }
        }
        match &mut self.state {
            State::Http1(conn) => conn.feed(seg, out),
            State::Http2(conn) => conn.feed(seg, out),
            State::Turns(conn) => conn.feed(seg, out),
            State::Redis(conn) => conn.feed(seg, out),
            State::Postgres(conn) => conn.feed(seg, out),
            State::Mysql(conn) => conn.feed(seg, out),
            State::Detecting { .. } | State::Unknown => {}
        }
    }

    /// The message content of the segment last fed, in its offsets (noted for TLS plaintext
    /// only; see [`content`]), or `None` when the decoder did not read that segment because
    /// its protocol is not known: then nothing says what any of it is.
    #[must_use]
    pub fn content(&self) -> Option<&[Blank]> {
        match &self.state {
            State::Http1(conn) => Some(conn.marks.ranges()),
            State::Http2(conn) => Some(conn.marks.ranges()),
            State::Detecting { .. }
            | State::Turns(_)
            | State::Redis(_)
            | State::Postgres(_)
            | State::Mysql(_)
            | State::Unknown => None,
        }
    }

    /// The connection closed at `ts_ns`: flush what is still open.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        match &mut self.state {
            State::Http1(conn) => conn.close(ts_ns, out),
            State::Http2(conn) => conn.close(ts_ns, out),
            State::Turns(conn) => conn.close(ts_ns, out),
            State::Redis(conn) => conn.close(ts_ns, out),
            State::Postgres(conn) => conn.close(ts_ns, out),
            State::Mysql(conn) => conn.close(ts_ns, out),
            State::Detecting { .. } | State::Unknown => {}
        }
    }

    /// No decoder knows the protocol: with a known client, its turns from the first segment
    /// on (those seen while detecting, by their counts, then the rest as they come).
    fn start_turns(&mut self, out: &mut Vec<Exchange>) {
        let Some(client) = self.client.filter(|_| self.turns) else {
            return;
        };
        let mut turns = turns::TurnsConn::new(client);
        for e in &self.early {
            turns.feed(
                &Segment {
                    direction: e.direction,
                    origin: e.origin,
                    data: &[],
                    missing: e.bytes,
                    windows: &[],
                    ts_enter_ns: e.ts_enter_ns,
                    ts_exit_ns: e.ts_exit_ns,
                    tls: e.tls,
                },
                out,
            );
        }
        self.state = State::Turns(Box::new(turns));
    }
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

/// Recognise the protocol from a segment, or keep waiting (up to `DETECT_SEGMENTS`). `client`
/// is the direction the connection's requests go, when its opening or ports said.
fn detect(seg: &Segment<'_>, seen: u32, client: Option<Direction>) -> State {
    let data = seg.data;
    if data.starts_with(http2::PREFACE) {
        return State::Http2(Box::new(http2::Http2Conn::from_preface(seg.direction)));
    }
    if http1::looks_like_request(data) {
        return State::Http1(Box::new(http1::Http1Conn::new(seg.direction)));
    }
    if http1::looks_like_response(data) {
        return State::Http1(Box::new(http1::Http1Conn::new(opposite(seg.direction))));
    }
    if http2::frame::starts_with_frames(data) {
        // Joined mid-connection: HPACK state and roles unknown until header blocks show them.
        return State::Http2(Box::new(http2::Http2Conn::mid_connection()));
    }
    if let Some(state) = detect_database(seg, client) {
        return state;
    }
    if data.is_empty() || seen + 1 < DETECT_SEGMENTS {
        State::Detecting {
            seen: seen + u32::from(!data.is_empty()),
        }
    } else {
        State::Unknown
    }
}

/// A database protocol, from what starts a connection (a Redis command, PostgreSQL's startup
/// message, MySQL's greeting), or, from the client's side of a connection older than the
/// capture, a PostgreSQL or MySQL command (each decoder's strict check; see their modules).
fn detect_database(seg: &Segment<'_>, client: Option<Direction>) -> Option<State> {
    let data = seg.data;
    let this = seg.direction;
    if redis::looks_like_redis(data, true) {
        return Some(State::Redis(Box::new(redis::RedisConn::new(this))));
    }
    if redis::looks_like_redis(data, false) {
        return Some(State::Redis(Box::new(redis::RedisConn::new(opposite(
            this,
        )))));
    }
    if postgres::looks_like_postgres(data, true) {
        return Some(State::Postgres(Box::new(postgres::PgConn::new(this))));
    }
    if mysql::looks_like_mysql(data, false) {
        return Some(State::Mysql(Box::new(mysql::MysqlConn::new(opposite(
            this,
        )))));
    }
    if client != Some(this) {
        return None;
    }
    let total = data.len() as u64 + seg.missing;
    if postgres::looks_like_client_messages(data) {
        return Some(State::Postgres(Box::new(postgres::PgConn::mid_connection(
            this,
        ))));
    }
    if mysql::looks_like_command(data, total) {
        return Some(State::Mysql(Box::new(mysql::MysqlConn::new(this))));
    }
    None
}

#[cfg(test)]
mod tests;
