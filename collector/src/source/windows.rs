//! HTTP/2 frame windows of a data event: the bytes at frame starts beyond the captured prefix
//! (see `wirespan_shared::FrameWindow` for how the probe picks them). Check-then-parse: the
//! descriptors are validated against the record and the syscall's byte count before any is
//! trusted.

use wirespan_shared::{FrameWindow, WINDOW_DESC_LEN, WINDOW_MAX_LEN};

use crate::event::Window;

/// Why a data event's window area was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("frame window area of {area} bytes ends inside a descriptor at byte {at}")]
    CutDescriptor { area: usize, at: usize },
    #[error(
        "frame window at byte {at} claims {len} bytes (at most {WINDOW_MAX_LEN} and what the area holds)"
    )]
    Length { at: usize, len: u16 },
    #[error("frame window at offset {offset} lies outside the syscall's {bytes} bytes")]
    Offset { offset: i32, bytes: u64 },
}

/// Parse a window area (descriptors, each followed by its bytes) of a syscall that moved
/// `bytes` bytes.
pub fn parse_windows(mut area: &[u8], bytes: u64) -> Result<Vec<Window>, WindowError> {
    let total = area.len();
    let mut out = Vec::new();
    while !area.is_empty() {
        let at = total - area.len();
        let Some((desc, rest)) = area.split_first_chunk::<WINDOW_DESC_LEN>() else {
            return Err(WindowError::CutDescriptor { area: total, at });
        };
        let window = FrameWindow {
            offset: i32::from_ne_bytes([desc[0], desc[1], desc[2], desc[3]]),
            len: u16::from_ne_bytes([desc[4], desc[5]]),
            pad0: 0,
        };
        let len = usize::from(window.len);
        if len == 0 || len > WINDOW_MAX_LEN || len > rest.len() {
            return Err(WindowError::Length {
                at,
                len: window.len,
            });
        }
        // A window starts at most a header's length before the syscall (a header cut by the
        // previous one) and inside the syscall's bytes.
        let distance = u64::from(window.offset.unsigned_abs());
        let inside = if window.offset < 0 {
            distance < len as u64
        } else {
            distance < bytes
        };
        if !inside {
            return Err(WindowError::Offset {
                offset: window.offset,
                bytes,
            });
        }
        out.push(Window {
            offset: i64::from(window.offset),
            bytes: rest[..len].to_vec(),
        });
        area = &rest[len..];
    }
    Ok(out)
}

/// The windows of a window area as (offset, bytes) in place, for blanking a raw record. A
/// descriptor that does not fit ends the walk (`parse_windows` refuses such an area anyway).
pub fn windows_in_place(mut area: &mut [u8]) -> Vec<(i64, &mut [u8])> {
    let mut out = Vec::new();
    while area.len() >= WINDOW_DESC_LEN {
        let (desc, rest) = std::mem::take(&mut area).split_at_mut(WINDOW_DESC_LEN);
        let offset = i32::from_ne_bytes([desc[0], desc[1], desc[2], desc[3]]);
        let len = usize::from(u16::from_ne_bytes([desc[4], desc[5]])).min(rest.len());
        let (bytes, rest) = rest.split_at_mut(len);
        out.push((i64::from(offset), bytes));
        area = rest;
    }
    out
}

/// Encode windows as the probe lays them out (tests and recordings made by hand).
#[must_use]
pub fn encode_windows(windows: &[Window]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in windows {
        out.extend_from_slice(&(w.offset as i32).to_ne_bytes());
        out.extend_from_slice(&(w.bytes.len() as u16).to_ne_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&w.bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip_and_bad_areas_are_refused() {
        let windows = vec![
            Window {
                offset: -3,
                bytes: vec![1; 9],
            },
            Window {
                offset: 20_000,
                bytes: vec![2; 25],
            },
        ];
        let area = encode_windows(&windows);
        assert_eq!(parse_windows(&area, 40_000), Ok(windows));
        assert!(matches!(
            parse_windows(&area[..area.len() - 1], 40_000),
            Err(WindowError::Length { .. })
        ));
        assert!(matches!(
            parse_windows(&area[..4], 40_000),
            Err(WindowError::CutDescriptor { .. })
        ));
        assert!(matches!(
            parse_windows(&area, 20_000),
            Err(WindowError::Offset { .. })
        ));
        assert_eq!(parse_windows(&[], 10), Ok(Vec::new()));
    }
}
