//! Raw ring-buffer records → [`Event`]s. Pure check-then-parse over a byte slice: the record's
//! length and tag are checked before any field is read, and a bad record is an error value,
//! never a panic (a newer probe, a torn record).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wirespan_shared::{
    AF_INET, AF_INET6, COMM_LEN, ConnectEvent, EVENT_CONNECT, MODE_FENTRY, MODE_KPROBE,
    MODE_TRACEPOINT,
};

use crate::load::AttachMode;

/// A TCP connect, seen on the connecting side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// This process's end, with the source port the kernel chose.
    pub local: SocketAddr,
    /// The peer.
    pub remote: SocketAddr,
    /// `CLOCK_MONOTONIC` nanoseconds when the connect was issued.
    pub ts_ns: u64,
    /// The attach mode whose probe saw it.
    pub mode: AttachMode,
}

/// One decoded kernel event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connect(Connect),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is too short for its type (needs {need})")]
    TooShort { need: usize, got: usize },
    #[error("unknown event type {0} (probes and collector from different builds?)")]
    UnknownKind(u32),
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("unknown attach mode {0}")]
    Mode(u16),
}

/// Decode one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let kind = record
        .first_chunk::<4>()
        .map(|b| u32::from_ne_bytes(*b))
        .ok_or(DecodeError::TooShort {
            need: 4,
            got: record.len(),
        })?;
    match kind {
        EVENT_CONNECT => decode_connect(&read_struct::<ConnectEvent>(record)?).map(Event::Connect),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Copy a `#[repr(C)]` plain-data struct out of the record after checking its length.
fn read_struct<T: Copy>(record: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if record.len() < need {
        return Err(DecodeError::TooShort {
            need,
            got: record.len(),
        });
    }
    // SAFETY: the length is checked above, T is a plain-data kernel contract type (every bit
    // pattern valid), and read_unaligned tolerates the record's alignment.
    Ok(unsafe { record.as_ptr().cast::<T>().read_unaligned() })
}

fn decode_connect(raw: &ConnectEvent) -> Result<Connect, DecodeError> {
    let (local, remote) = match raw.family {
        AF_INET => (ipv4(&raw.saddr), ipv4(&raw.daddr)),
        AF_INET6 => (
            IpAddr::V6(Ipv6Addr::from(raw.saddr)),
            IpAddr::V6(Ipv6Addr::from(raw.daddr)),
        ),
        other => return Err(DecodeError::Family(other)),
    };
    Ok(Connect {
        pid: raw.pid,
        tid: raw.tid,
        comm: comm(&raw.comm),
        local: SocketAddr::new(local, raw.sport),
        remote: SocketAddr::new(remote, raw.dport),
        ts_ns: raw.ts_ns,
        mode: mode(raw.mode)?,
    })
}

fn ipv4(bytes: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
}

fn comm(raw: &[u8; COMM_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn mode(raw: u16) -> Result<AttachMode, DecodeError> {
    match raw {
        MODE_KPROBE => Ok(AttachMode::Kprobe),
        MODE_FENTRY => Ok(AttachMode::Fentry),
        MODE_TRACEPOINT => Ok(AttachMode::Tracepoint),
        other => Err(DecodeError::Mode(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(ev: &ConnectEvent) -> Vec<u8> {
        // SAFETY: ConnectEvent is #[repr(C)] plain data without implicit padding.
        unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(ev).cast::<u8>(),
                size_of::<ConnectEvent>(),
            )
        }
        .to_vec()
    }

    fn sample() -> ConnectEvent {
        let mut ev = ConnectEvent::zeroed();
        ev.family = AF_INET;
        ev.sport = 40_000;
        ev.dport = 8080;
        ev.mode = MODE_TRACEPOINT;
        ev.pid = 10;
        ev.tid = 11;
        ev.ts_ns = 99;
        ev.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        ev.comm[..4].copy_from_slice(b"curl");
        ev
    }

    #[test]
    fn decodes_ipv4_connect() {
        let Event::Connect(c) = decode(&bytes_of(&sample())).unwrap();
        assert_eq!(c.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(c.remote, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(
            (c.pid, c.tid, c.comm.as_str(), c.ts_ns),
            (10, 11, "curl", 99)
        );
        assert_eq!(c.mode, AttachMode::Tracepoint);
    }

    #[test]
    fn decodes_ipv6_connect() {
        let mut ev = sample();
        ev.family = AF_INET6;
        ev.saddr = Ipv6Addr::LOCALHOST.octets();
        ev.daddr = "::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        let Event::Connect(c) = decode(&bytes_of(&ev)).unwrap();
        assert_eq!(c.local, "[::1]:40000".parse().unwrap());
        assert_eq!(c.remote, "[::ffff:10.0.0.1]:8080".parse().unwrap());
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let good = bytes_of(&sample());
        assert_eq!(decode(&[]), Err(DecodeError::TooShort { need: 4, got: 0 }));
        assert_eq!(
            decode(&good[..20]),
            Err(DecodeError::TooShort { need: 80, got: 20 })
        );
        let mut unknown = good.clone();
        unknown[0] = 200;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(200)));
        let mut ev = sample();
        ev.family = 1;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Family(1)));
        ev = sample();
        ev.mode = 9;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Mode(9)));
        // Every prefix of a valid record, and arbitrary bytes, decode without panicking.
        for len in 0..good.len() {
            let _ = decode(&good[..len]);
        }
        for seed in 0u8..=255 {
            let noise: Vec<u8> = (0..96u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
                .collect();
            let _ = decode(&noise);
        }
    }
}
