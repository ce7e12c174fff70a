//! The input format of the decoder fuzz targets (collector/fuzz), kept here so the targets and
//! the seed corpus agree: a sequence of `[control][length][bytes...]` records, where control
//! bit 0 is the direction (0 egress, 1 ingress) and bits 1..8 scaled by 97 are the bytes that were
//! not captured after them.

use super::{Origin, Segment};
use crate::event::Direction;

/// Call `f` with each segment encoded in `data`; times increase by one per segment.
pub fn for_each_segment(mut data: &[u8], mut f: impl FnMut(Segment<'_>)) {
    let mut ts = 0;
    while let [control, len, rest @ ..] = data {
        let take = usize::from(*len).min(rest.len());
        let direction = if control & 1 == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        ts += 1;
        f(Segment {
            direction,
            origin: Origin::default(),
            data: &rest[..take],
            missing: u64::from(control >> 1) * 97,
            windows: &[],
            ts_enter_ns: ts,
            ts_exit_ns: ts,
            tls: false,
        });
        data = &rest[take..];
    }
}

/// Encode segments in the fuzz input format (for seed corpora).
#[must_use]
pub fn encode(segments: &[(Direction, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (direction, bytes) in segments {
        for piece in bytes.chunks(255) {
            out.push(u8::from(*direction == Direction::Ingress));
            out.push(piece.len() as u8);
            out.extend_from_slice(piece);
        }
    }
    out
}
