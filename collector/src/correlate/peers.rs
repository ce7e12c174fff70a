//! Which connection end on this host is the other end of a given one, even when NAT rewrote
//! addresses and ports between them.
//!
//! Without NAT the other end of (local, remote) is (remote, local). Behind a virtual service
//! address on the same host (a Kubernetes Service that lands on a pod of the same node, `docker
//! run -p`, any DNAT rule; with or without SNAT) the client's end names the virtual address and
//! the server's end its real one, so the mirrored pair matches nothing. TCP sequence numbers are
//! not rewritten by NAT: the first byte the client sent and the first byte the server received
//! carry the same sequence number (its initial sequence number + 1), and so do the first bytes
//! the server sent and the client received. Both ends are paired on those two numbers: 64 bits
//! that both ends observe unchanged, so unrelated connections do not collide.
//!
//! An end first seen mid-connection (older than the agent) records a later byte as its first,
//! which the other end does not share: such pairs are not found, never mispaired.

use std::collections::HashMap;

use super::{
    END_GRACE_NS,
    closed_ends::{ClosedEnds, Reader},
    end_key::EndKey,
};
use crate::event::{ConnKind, Direction, Event};

/// A connection end: (local, remote) as that process's socket names them.
pub type End = EndKey;

/// Ends kept at most; beyond it the table starts over (joins through NAT of older connections
/// are then lost, never wrong).
const MAX_ENDS: usize = 262_144;

/// The sequence numbers of the first bytes an end was seen to send and to receive.
#[derive(Debug, Default, Clone, Copy)]
struct FirstBytes {
    sent: Option<u32>,
    received: Option<u32>,
    /// When the connection under this address pair began (or was first seen): a close older
    /// than that belongs to an earlier connection on the same pair.
    since_ns: u64,
}

/// First bytes of every connection end this host has seen data on; a closed end's are
/// forgotten `END_GRACE_NS` after its close (the closes are the contexts' queue, which the
/// peers read with a cursor of their own: see `closed_ends`).
#[derive(Debug, Default)]
pub struct Peers {
    first: HashMap<End, FirstBytes>,
    /// The end that sent a first byte with this sequence number.
    by_first_sent: HashMap<u32, End>,
}

impl Peers {
    /// Take in one event: data records first bytes (closes are forgotten later, see
    /// `forget_closed`).
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Data(d) => {
                let end = End::new(d.local, d.remote);
                if self.first.len() >= MAX_ENDS && !self.first.contains_key(&end) {
                    self.first.clear();
                    self.by_first_sent.clear();
                }
                let first = self.first.entry(end).or_insert(FirstBytes {
                    since_ns: d.ts_exit_ns,
                    ..FirstBytes::default()
                });
                match d.direction {
                    Direction::Egress if first.sent.is_none() => {
                        first.sent = Some(d.seq);
                        self.by_first_sent.insert(d.seq, end);
                    }
                    Direction::Ingress if first.received.is_none() => {
                        first.received = Some(d.seq);
                    }
                    _ => {}
                }
            }
            // A new connection on an address pair used before (ports are reused): its first
            // bytes are new too.
            Event::Conn(c) if matches!(c.kind, ConnKind::Connect | ConnKind::Accept) => {
                let end = End::new(c.local, c.remote);
                self.forget(end, u64::MAX);
                self.first.insert(
                    end,
                    FirstBytes {
                        since_ns: c.ts_ns,
                        ..FirstBytes::default()
                    },
                );
            }
            _ => {}
        }
    }

    /// The other end of `end` on this host: the mirrored pair when no NAT is in between (or
    /// nothing better is known), else the end whose first bytes match this one's.
    #[must_use]
    pub fn other_end(&self, end: End) -> End {
        let mirrored = end.mirrored();
        if self.first.contains_key(&mirrored) {
            return mirrored;
        }
        self.translated(end).unwrap_or(mirrored)
    }

    /// The end across NAT: it sent the first byte this end received, and (once both are known)
    /// received the first byte this end sent.
    fn translated(&self, end: End) -> Option<End> {
        let mine = self.first.get(&end)?;
        let other = *self.by_first_sent.get(&mine.received?)?;
        let theirs = self.first.get(&other)?;
        let consistent = match (mine.sent, theirs.received) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        (other != end && consistent).then_some(other)
    }

    /// Ends tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Forget the ends closed `END_GRACE_NS` or more before `now` (a close, a connection
    /// given up on, or the clock). Their closes are in `closed`, the contexts' queue.
    pub(super) fn forget_closed(&mut self, now: u64, closed: &mut ClosedEnds) {
        while let Some(c) =
            closed.take_if(Reader::Peers, |c| now.saturating_sub(c.at) >= END_GRACE_NS)
        {
            self.forget(c.end, c.at);
        }
    }

    /// Forget `end` if its connection began no later than `closed_ns`.
    fn forget(&mut self, end: End, closed_ns: u64) {
        if self.first.get(&end).is_none_or(|f| f.since_ns > closed_ns) {
            return;
        }
        if let Some(first) = self.first.remove(&end)
            && let Some(sent) = first.sent
            && self.by_first_sent.get(&sent) == Some(&end)
        {
            self.by_first_sent.remove(&sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{correlate::closed_ends::Closed, event::Data};

    fn data(local: &str, remote: &str, direction: Direction, seq: u32) -> Event {
        Event::Data(Data {
            direction,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            conn_id: 1,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            seq,
            bytes: 10,
            goid: None,
            fd: 3,
            ts_enter_ns: 1,
            ts_exit_ns: 2,
            payload: Vec::new(),
            windows: Vec::new(),
            tls: false,
        })
    }

    fn end(local: &str, remote: &str) -> End {
        End::new(local.parse().unwrap(), remote.parse().unwrap())
    }

    #[test]
    fn ends_behind_dnat_and_snat_pair_on_their_first_bytes() {
        let mut p = Peers::default();
        // The client calls a virtual address; the server sees its real address and (SNAT) a
        // rewritten client address.
        let client = ("10.0.1.2:40000", "10.96.0.10:80");
        let server = ("10.0.2.2:8080", "10.0.2.1:61000");
        p.on_event(&data(client.0, client.1, Direction::Egress, 1000));
        p.on_event(&data(server.0, server.1, Direction::Ingress, 1000));
        p.on_event(&data(server.0, server.1, Direction::Egress, 5000));
        p.on_event(&data(client.0, client.1, Direction::Ingress, 5000));
        assert_eq!(
            p.other_end(end(server.0, server.1)),
            end(client.0, client.1)
        );
        assert_eq!(
            p.other_end(end(client.0, client.1)),
            end(server.0, server.1)
        );
    }

    fn conn(kind: ConnKind, local: &str, remote: &str, ts_ns: u64) -> Event {
        Event::Conn(crate::event::Conn {
            kind,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            conn_id: 1,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            ts_ns,
            mode: crate::event::AttachMode::Tracepoint,
            errno: None,
        })
    }

    /// A close as the correlator passes it on: the contexts queue it, then the peers forget
    /// what is due.
    fn close(p: &mut Peers, closed: &mut ClosedEnds, (local, remote): (&str, &str), at: u64) {
        closed.push(Closed {
            at,
            pid: 1,
            end: end(local, remote),
        });
        p.forget_closed(at, closed);
    }

    #[test]
    fn a_reused_address_pair_pairs_on_its_new_connection_first_bytes() {
        let mut p = Peers::default();
        let mut closed = ClosedEnds::default();
        let client = ("10.0.1.2:40000", "10.96.0.10:80");
        let server = ("10.0.2.2:8080", "10.0.1.2:40000");
        p.on_event(&data(client.0, client.1, Direction::Egress, 1000));
        close(&mut p, &mut closed, client, 5);
        // The same pair again: a new connection with new sequence numbers.
        p.on_event(&conn(ConnKind::Connect, client.0, client.1, 10));
        p.on_event(&data(client.0, client.1, Direction::Egress, 7000));
        p.on_event(&data(server.0, server.1, Direction::Ingress, 7000));
        assert_eq!(
            p.other_end(end(server.0, server.1)),
            end(client.0, client.1)
        );
        // The old connection's close, forgotten later, leaves the new one alone.
        close(
            &mut p,
            &mut closed,
            ("127.0.0.1:1", "127.0.0.1:2"),
            5 + END_GRACE_NS,
        );
        assert_eq!(closed.len(Reader::Peers), 1, "the old close was taken");
        assert_eq!(
            p.other_end(end(server.0, server.1)),
            end(client.0, client.1)
        );
    }

    #[test]
    fn without_nat_the_mirrored_end_and_mismatches_are_never_paired() {
        let mut p = Peers::default();
        p.on_event(&data(
            "127.0.0.1:40000",
            "127.0.0.1:80",
            Direction::Egress,
            7,
        ));
        p.on_event(&data(
            "127.0.0.1:80",
            "127.0.0.1:40000",
            Direction::Ingress,
            7,
        ));
        assert_eq!(
            p.other_end(end("127.0.0.1:80", "127.0.0.1:40000")),
            end("127.0.0.1:40000", "127.0.0.1:80")
        );
        // Same first request byte, different first response byte: not the same connection.
        p.on_event(&data("10.0.0.1:1", "10.0.0.9:80", Direction::Egress, 99));
        p.on_event(&data("10.0.0.1:1", "10.0.0.9:80", Direction::Ingress, 300));
        p.on_event(&data("10.0.0.5:80", "10.0.0.7:2", Direction::Ingress, 99));
        p.on_event(&data("10.0.0.5:80", "10.0.0.7:2", Direction::Egress, 301));
        assert_eq!(
            p.other_end(end("10.0.0.5:80", "10.0.0.7:2")),
            end("10.0.0.7:2", "10.0.0.5:80")
        );
    }
}
