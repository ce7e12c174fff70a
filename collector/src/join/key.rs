//! The join key both ends of an exchange compute alike, and the record stored under it.
//!
//! **Key**: the TCP sequence numbers of the request's first byte and of the response's first
//! byte (see [`crate::protocol::WireSeqs`]). Each direction's numbers start at an initial
//! sequence number the kernel picks per connection from a keyed hash and a clock (RFC 6528), so
//! the pair is 64 bits that look random across connections, and on one connection every
//! exchange has its own pair (the numbers advance with the bytes; HTTP/2 streams sit at
//! different offsets).
//!
//! **Collisions.** A server span is joined wrongly only if another exchange, anywhere in the
//! cluster, published the same 64-bit pair while the record lives, *and* the request's method
//! and target hash to the same 32-bit [`route_check`]. With a cluster publishing R exchanges a
//! second and records living T seconds, N = R·T records are live. A lookup whose own client
//! was not published (an untraced client) meets one of them with probability about N / 2^64;
//! at R = 100,000/s and T = 30 s, N = 3·10^6: 1.6·10^-13 per lookup, about one wrong join every
//! 200 years of such traffic, before the route check divides it by 2^32 again. A sequence pair
//! repeats on one connection only after 4 GiB each way, long past the record's life.

use crate::span::{SpanId, TraceId};

/// Both ends' name for one exchange: the sequence numbers of its request's and its response's
/// first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JoinKey {
    pub request_seq: u32,
    pub response_seq: u32,
}

impl JoinKey {
    /// The store key under `prefix`: `prefix:` and 16 hex digits.
    #[must_use]
    pub fn store_key(self, prefix: &str) -> String {
        format!("{prefix}:{:08x}{:08x}", self.request_seq, self.response_seq)
    }
}

/// The format tag of a stored record: a reader skips values it does not know (counted).
const RECORD_V1: u8 = 1;
/// Encoded size: tag, trace id, span id, route check.
pub const RECORD_LEN: usize = 1 + 16 + 8 + 4;

/// What the client's agent leaves for the server's: the client span's ids, and a check of the
/// request both ends saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// [`route_check`] of the request, 0 when the client did not know it (headers unknown).
    pub route_check: u32,
}

impl JoinRecord {
    #[must_use]
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0; RECORD_LEN];
        out[0] = RECORD_V1;
        out[1..17].copy_from_slice(&self.trace_id.0);
        out[17..25].copy_from_slice(&self.span_id.0);
        out[25..29].copy_from_slice(&self.route_check.to_be_bytes());
        out
    }

    /// A record, or None when `bytes` is not one of this format.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != RECORD_LEN || bytes[0] != RECORD_V1 {
            return None;
        }
        let mut trace = [0; 16];
        trace.copy_from_slice(&bytes[1..17]);
        let mut span = [0; 8];
        span.copy_from_slice(&bytes[17..25]);
        let check = u32::from_be_bytes(bytes[25..29].try_into().ok()?);
        // All-zero ids are invalid in OpenTelemetry: not a record any agent wrote.
        (trace != [0; 16] && span != [0; 8]).then_some(Self {
            trace_id: TraceId(trace),
            span_id: SpanId(span),
            route_check: check,
        })
    }

    /// Whether this record may be the parent of a request with the check `server_check`: the
    /// two must agree where both ends knew the request (0 = unknown matches anything).
    #[must_use]
    pub fn matches(&self, server_check: u32) -> bool {
        self.route_check == 0 || server_check == 0 || self.route_check == server_check
    }
}

/// A 32-bit check of a request's method and target (FNV-1a), 0 when either is unknown: both
/// ends see the same request line (or `:method` and `:path`), whatever NAT did to addresses.
#[must_use]
pub fn route_check(method: &str, target: &str) -> u32 {
    if method.is_empty() || target.is_empty() {
        return 0;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in method.bytes().chain(*b" ").chain(target.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // 0 means unknown: a real route that hashes to it is moved off it.
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(check: u32) -> JoinRecord {
        JoinRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([9; 8]),
            route_check: check,
        }
    }

    #[test]
    fn records_round_trip_and_foreign_values_are_refused() {
        let r = record(route_check("GET", "/a"));
        assert_eq!(JoinRecord::decode(&r.encode()), Some(r));
        assert_eq!(JoinRecord::decode(b"hello"), None);
        let mut newer = r.encode();
        newer[0] = 2;
        assert_eq!(JoinRecord::decode(&newer), None);
        let zero_ids = JoinRecord {
            trace_id: TraceId([0; 16]),
            ..r
        };
        assert_eq!(JoinRecord::decode(&zero_ids.encode()), None);
    }

    #[test]
    fn keys_name_both_numbers_and_differ_when_either_does() {
        let a = JoinKey {
            request_seq: 0x0102_0304,
            response_seq: 0xa0b0_c0d0,
        };
        assert_eq!(a.store_key("wirespan"), "wirespan:01020304a0b0c0d0");
        let swapped = JoinKey {
            request_seq: a.response_seq,
            response_seq: a.request_seq,
        };
        assert_ne!(a.store_key("p"), swapped.store_key("p"));
    }

    /// Two exchanges whose keys collide (same sequence pair, which the arithmetic above makes
    /// negligible) are still told apart when their requests differ.
    #[test]
    fn the_route_check_refuses_a_colliding_record_for_another_request() {
        let client = record(route_check("GET", "/users/1"));
        assert!(client.matches(route_check("GET", "/users/1")));
        assert!(!client.matches(route_check("POST", "/users/1")));
        assert!(!client.matches(route_check("GET", "/users/2")));
        // Unknown on either side: the key alone decides.
        assert!(client.matches(0));
        assert!(record(0).matches(route_check("GET", "/x")));
        assert_eq!(route_check("", "/x"), 0);
    }
}
