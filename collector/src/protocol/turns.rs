//! Exchanges of a protocol no decoder knows: each request/response **turn** is one exchange,
//! so an outbound call in an unknown protocol still shows in its trace (a `tcp` span with its
//! peer, bytes each way and duration) rather than leaving a hole.
//!
//! A turn is a run of bytes in the request direction (the client's writes, one or many
//! syscalls) and then the bytes that answer it, up to the next request byte after some
//! response. Which end is the client comes from the connection's opening (connect or accept),
//! or, for a connection older than the agent, from its ports (see [`client_direction`]).
//! Bytes from the server before any request (a banner) belong to no turn and are counted.
//!
//! Bounded: after [`MAX_TURNS`] turns on one connection, the rest of it is folded into one
//! last exchange (a chatty stream is not a span per message), counted.

use std::net::SocketAddr;

use super::{Origin, Segment, WireSeqs};
use crate::{
    event::Direction,
    protocol::exchange::{Detail, Exchange, Flags},
};

/// Turns made into exchanges per connection, at most; the rest is one folded exchange.
pub const MAX_TURNS: u32 = 1_000;

/// What the turn decoder counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TurnStats {
    /// Turns made into exchanges.
    pub turns: u64,
    /// Turns folded into a connection's last exchange past [`MAX_TURNS`].
    pub folded: u64,
    /// Server bytes before any request (banners, pushes), in no turn.
    pub unrequested: u64,
}

#[derive(Debug)]
struct Turn {
    start_ns: u64,
    origin: Origin,
    response_seq: u32,
    end_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
}

/// The turns of one connection.
#[derive(Debug)]
pub struct TurnsConn {
    request_direction: Direction,
    turn: Option<Turn>,
    made: u32,
    /// Any segment was TLS plaintext: no wire numbers (see `Exchange::wire`).
    tls: bool,
    pub stats: TurnStats,
}

impl TurnsConn {
    #[must_use]
    pub fn new(request_direction: Direction) -> Self {
        Self {
            request_direction,
            turn: None,
            made: 0,
            tls: false,
            stats: TurnStats::default(),
        }
    }

    /// Feed one syscall's bytes; completed turns are appended to `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        let bytes = seg.data.len() as u64 + seg.missing;
        if bytes == 0 {
            return;
        }
        self.tls |= seg.tls;
        if seg.direction == self.request_direction {
            let answered = self.turn.as_ref().is_some_and(|t| t.response_bytes > 0);
            if answered && self.made + 1 < MAX_TURNS {
                self.emit(out, Flags::default());
            } else if answered {
                self.stats.folded += 1;
            }
            let turn = self.turn.get_or_insert_with(|| Turn {
                start_ns: seg.first_byte_ns(),
                origin: seg.origin,
                response_seq: 0,
                end_ns: seg.ts_exit_ns,
                request_bytes: 0,
                response_bytes: 0,
            });
            turn.request_bytes += bytes;
            turn.end_ns = turn.end_ns.max(seg.ts_exit_ns);
        } else if let Some(turn) = &mut self.turn {
            if turn.response_bytes == 0 {
                turn.response_seq = seg.origin.seq;
            }
            turn.response_bytes += bytes;
            turn.end_ns = turn.end_ns.max(seg.ts_exit_ns);
        } else {
            self.stats.unrequested += bytes;
        }
    }

    /// The connection closed at `ts_ns`: a turn still open is emitted (without a response if
    /// none came).
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if let Some(turn) = &mut self.turn {
            turn.end_ns = turn.end_ns.max(ts_ns.min(turn.end_ns.saturating_add(1)));
            let flags = Flags {
                no_response: turn.response_bytes == 0,
                ..Flags::default()
            };
            self.emit(out, flags);
        }
    }

    fn emit(&mut self, out: &mut Vec<Exchange>, flags: Flags) {
        let Some(t) = self.turn.take() else {
            return;
        };
        self.made += 1;
        self.stats.turns += 1;
        out.push(Exchange {
            request_direction: self.request_direction,
            start_ns: t.start_ns,
            origin: t.origin,
            end_ns: t.end_ns,
            request_bytes: t.request_bytes,
            response_bytes: t.response_bytes,
            wire: if self.tls {
                WireSeqs::default()
            } else {
                WireSeqs::of(t.origin.seq, t.response_seq)
            },
            detail: Detail::Tcp,
            flags,
        });
    }
}

/// Which direction carries a connection's requests when its opening was not seen (older than
/// the agent): the end on an ephemeral port (32768 and up, Linux's default range) is the
/// client's, the other the server's. None when the ports do not tell (both or neither
/// ephemeral): such a connection gets no turns.
#[must_use]
pub fn client_direction(local: SocketAddr, remote: SocketAddr) -> Option<Direction> {
    const EPHEMERAL: u16 = 32_768;
    match (local.port() >= EPHEMERAL, remote.port() >= EPHEMERAL) {
        // This process is on the ephemeral port: it connected, its writes are requests.
        (true, false) => Some(Direction::Egress),
        (false, true) => Some(Direction::Ingress),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(direction: Direction, data: &[u8], t: u64, seq: u32) -> Segment<'_> {
        Segment {
            direction,
            origin: Origin {
                seq,
                tid: 1,
                goid: None,
            },
            data,
            missing: 0,
            windows: &[],
            ts_enter_ns: t,
            ts_exit_ns: t + 1,
            tls: false,
        }
    }

    #[test]
    fn each_request_run_and_its_answer_is_one_exchange() {
        let mut c = TurnsConn::new(Direction::Egress);
        let mut out = Vec::new();
        c.feed(&seg(Direction::Egress, b"HEL", 10, 100), &mut out);
        c.feed(&seg(Direction::Egress, b"LO\n", 20, 103), &mut out);
        c.feed(&seg(Direction::Ingress, b"HI", 30, 500), &mut out);
        c.feed(&seg(Direction::Ingress, b"!\n", 40, 502), &mut out);
        assert!(out.is_empty(), "the turn is open until the next request");
        c.feed(&seg(Direction::Egress, b"BYE\n", 50, 106), &mut out);
        c.close(60, &mut out);
        assert_eq!(out.len(), 2);
        let first = &out[0];
        assert_eq!((first.request_bytes, first.response_bytes), (6, 4));
        assert_eq!((first.start_ns, first.end_ns), (10, 41));
        assert_eq!(first.wire, WireSeqs::of(100, 500));
        assert_eq!(first.detail, Detail::Tcp);
        assert!(out[1].flags.no_response);
        assert_eq!(c.stats.turns, 2);
    }

    #[test]
    fn a_banner_before_any_request_is_counted_not_made_a_turn() {
        let mut c = TurnsConn::new(Direction::Egress);
        let mut out = Vec::new();
        c.feed(&seg(Direction::Ingress, b"220 ready\r\n", 1, 1), &mut out);
        c.close(2, &mut out);
        assert!(out.is_empty(), "no turn: {out:?}");
        assert_eq!(c.stats.unrequested, 11);
    }

    #[test]
    fn a_chatty_connection_is_folded_past_the_cap() {
        let mut c = TurnsConn::new(Direction::Ingress);
        let mut out = Vec::new();
        for i in 0..(u64::from(MAX_TURNS) + 50) {
            c.feed(&seg(Direction::Ingress, b"q", i * 10, 1), &mut out);
            c.feed(&seg(Direction::Egress, b"a", i * 10 + 5, 1), &mut out);
        }
        c.close(u64::MAX / 2, &mut out);
        assert_eq!(out.len(), MAX_TURNS as usize);
        assert_eq!(c.stats.folded, 50);
        let last = out.last().unwrap();
        assert_eq!(last.request_bytes, 51);
    }

    #[test]
    fn ephemeral_ports_tell_the_client_of_an_older_connection() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            client_direction(a("10.0.0.1:45000"), a("10.0.0.2:6379")),
            Some(Direction::Egress)
        );
        assert_eq!(
            client_direction(a("10.0.0.2:6379"), a("10.0.0.1:45000")),
            Some(Direction::Ingress)
        );
        assert_eq!(client_direction(a("10.0.0.2:80"), a("10.0.0.1:443")), None);
    }
}
