//! Raw ring-buffer records → [`Event`]s. Pure check-then-parse over a byte slice: the record's
//! length and tag are checked before any field is read, and a bad record is an error value,
//! never a panic (a newer probe, a torn record, a corrupt recording).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wirespan_shared::{
    AF_INET, AF_INET6, COMM_LEN, ConnEvent, DATA_FLAG_GOID_KNOWN, DATA_FLAG_TLS_PLAINTEXT,
    DIR_EGRESS, DIR_INGRESS, DataHeader, EVENT_ACCEPT, EVENT_CLOSE, EVENT_CONNECT,
    EVENT_CONNECT_FAILED, EVENT_DATA, EVENT_EXEC, EVENT_GO_ANCESTRY, EVENT_GO_CLIENT_END,
    EVENT_GO_CLIENT_START, EVENT_GO_CONN, EVENT_GO_EXIT, EVENT_GO_GRPC_CLIENT_END,
    EVENT_GO_GRPC_CLIENT_START, EVENT_GO_GRPC_STREAM_OPENED, EVENT_GO_HEADERS, EVENT_GO_SERVE_END,
    EVENT_GO_SERVE_START, EVENT_GO_SPAWN, EVENT_PROCESS_EXIT, EVENT_PROCESS_START, GoConnEvent,
    GoExitEvent, GoGrpcCallEvent, GoHeadersEvent, GoServeEvent, GoSpawnEvent, MAX_CAPTURE,
    MODE_FENTRY, MODE_KPROBE, MODE_TP_BTF, MODE_TRACEPOINT,
};

use super::windows::{WindowError, parse_windows, windows_in_place};
use crate::event::{AttachMode, Conn, ConnKind, Data, Direction, Event, GoExit, GoServe, GoSpawn};

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
    #[error("unknown direction {0}")]
    Direction(u16),
    #[error(
        "data event claims {captured} captured bytes (at most {MAX_CAPTURE} and what the record holds)"
    )]
    Captured { captured: u32 },
    #[error(
        "data event claims {window_bytes} window bytes beyond its capture (the record holds {got})"
    )]
    WindowBytes { window_bytes: u32, got: usize },
    #[error(transparent)]
    Window(#[from] WindowError),
    #[error(
        "process-start event claims {args_len} argument and {env_len} environment bytes (more than its caps or what the record holds)"
    )]
    Blocks { args_len: u32, env_len: u32 },
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
        EVENT_CONNECT | EVENT_ACCEPT | EVENT_CLOSE => {
            decode_conn(&read_struct::<ConnEvent>(record)?).map(Event::Conn)
        }
        EVENT_CONNECT_FAILED => {
            decode_conn(&read_struct::<ConnEvent>(record)?).map(Event::ConnectFailed)
        }
        EVENT_DATA => decode_data(record).map(Event::Data),
        EVENT_GO_SPAWN | EVENT_GO_ANCESTRY => {
            let raw = read_struct::<GoSpawnEvent>(record)?;
            Ok(Event::GoSpawn(GoSpawn {
                pid: raw.pid,
                tid: raw.tid,
                stream_id: raw.stream_id,
                parent_goid: raw.parent_goid,
                child_goid: raw.child_goid,
                ts_ns: raw.ts_ns,
                observed: raw.kind == EVENT_GO_ANCESTRY,
            }))
        }
        EVENT_GO_CONN => {
            super::grpc::decode_conn_use(&read_struct::<GoConnEvent>(record)?).map(Event::GoConnUse)
        }
        EVENT_GO_EXIT => {
            let raw = read_struct::<GoExitEvent>(record)?;
            Ok(Event::GoExit(GoExit {
                pid: raw.pid,
                tid: raw.tid,
                goid: raw.goid,
                ts_ns: raw.ts_ns,
            }))
        }
        EVENT_EXEC => super::process::decode_exec(record).map(Event::Exec),
        EVENT_PROCESS_START => super::process::decode_start(record).map(Event::Exec),
        EVENT_PROCESS_EXIT => super::process::decode_exit(record).map(Event::Exit),
        EVENT_GO_SERVE_START | EVENT_GO_SERVE_END | EVENT_GO_CLIENT_START | EVENT_GO_CLIENT_END => {
            Ok(Event::GoServe(decode_go_serve(&read_go_serve(record)?)))
        }
        EVENT_GO_HEADERS => super::grpc::decode_headers(&read_struct::<GoHeadersEvent>(record)?)
            .map(Event::GoHeaders),
        EVENT_GO_GRPC_CLIENT_START | EVENT_GO_GRPC_CLIENT_END | EVENT_GO_GRPC_STREAM_OPENED => {
            Ok(Event::GoGrpcCall(super::grpc::decode_call(&read_struct::<
                GoGrpcCallEvent,
            >(
                record
            )?)))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Copy a `#[repr(C)]` plain-data struct out of the record after checking its length.
/// Blank `ranges` (offsets in the syscall's bytes; see `protocol::content`) in a raw data
/// record, in its payload and its frame windows alike, so a recording keeps what the decoded
/// event keeps. A record that is not a well-formed data event is left as it is.
pub fn blank_data_record(record: &mut [u8], ranges: &[crate::protocol::content::Blank]) {
    let Ok(h) = read_struct::<DataHeader>(record) else {
        return;
    };
    let captured = h.captured as usize;
    let Some(rest) = record.get_mut(size_of::<DataHeader>()..) else {
        return;
    };
    if rest.len() < captured {
        return;
    }
    let (payload, area) = rest.split_at_mut(captured);
    let area_len = (h.window_bytes as usize).min(area.len());
    let mut windows = windows_in_place(&mut area[..area_len]);
    crate::protocol::content::blank(ranges, payload, &mut windows);
}

pub(crate) fn read_struct<T: Copy>(record: &[u8]) -> Result<T, DecodeError> {
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

fn decode_conn(raw: &ConnEvent) -> Result<Conn, DecodeError> {
    let (local, remote) = endpoints(raw.family, &raw.saddr, raw.sport, &raw.daddr, raw.dport)?;
    let kind = match raw.kind {
        EVENT_CONNECT | EVENT_CONNECT_FAILED => ConnKind::Connect,
        EVENT_ACCEPT => ConnKind::Accept,
        _ => ConnKind::Close,
    };
    Ok(Conn {
        kind,
        pid: raw.pid,
        tid: raw.tid,
        comm: comm(&raw.comm),
        conn_id: raw.conn_id,
        local,
        remote,
        ts_ns: raw.ts_ns,
        mode: mode(raw.mode)?,
        errno: (raw.error != 0).then_some(raw.error),
    })
}

fn decode_data(record: &[u8]) -> Result<Data, DecodeError> {
    let h: DataHeader = read_struct(record)?;
    let start = size_of::<DataHeader>();
    let captured = h.captured as usize;
    if captured > MAX_CAPTURE || record.len() < start + captured {
        return Err(DecodeError::Captured {
            captured: h.captured,
        });
    }
    let area_start = start + captured;
    let Some(area) = record.get(area_start..area_start + h.window_bytes as usize) else {
        return Err(DecodeError::WindowBytes {
            window_bytes: h.window_bytes,
            got: record.len() - area_start,
        });
    };
    let windows = parse_windows(area, h.bytes)?;
    let (local, remote) = endpoints(h.family, &h.saddr, h.sport, &h.daddr, h.dport)?;
    let direction = match h.direction {
        DIR_EGRESS => Direction::Egress,
        DIR_INGRESS => Direction::Ingress,
        other => return Err(DecodeError::Direction(other)),
    };
    Ok(Data {
        direction,
        pid: h.pid,
        tid: h.tid,
        comm: comm(&h.comm),
        fd: h.fd,
        conn_id: h.conn_id,
        local,
        remote,
        bytes: h.bytes,
        seq: h.seq,
        goid: (h.flags & DATA_FLAG_GOID_KNOWN != 0).then_some(h.goid),
        ts_enter_ns: h.ts_enter_ns,
        ts_exit_ns: h.ts_exit_ns,
        payload: record[start..start + captured].to_vec(),
        windows,
        tls: h.flags & DATA_FLAG_TLS_PLAINTEXT != 0,
    })
}

pub(super) fn go_text(bytes: &[u8], len: u16) -> String {
    String::from_utf8_lossy(&bytes[..usize::from(len).min(bytes.len())]).into_owned()
}

/// A `GoServeEvent`, also from recordings made before it carried `server` (its last field):
/// such a record is 8 bytes shorter and reads as server 0.
fn read_go_serve(record: &[u8]) -> Result<GoServeEvent, DecodeError> {
    const WITHOUT_SERVER: usize = size_of::<GoServeEvent>() - size_of::<u64>();
    if record.len() >= size_of::<GoServeEvent>() || record.len() < WITHOUT_SERVER {
        return read_struct::<GoServeEvent>(record);
    }
    let mut padded = [0u8; size_of::<GoServeEvent>()];
    padded[..WITHOUT_SERVER].copy_from_slice(&record[..WITHOUT_SERVER]);
    read_struct::<GoServeEvent>(&padded)
}

fn decode_go_serve(raw: &GoServeEvent) -> GoServe {
    GoServe {
        client: matches!(raw.kind, EVENT_GO_CLIENT_START | EVENT_GO_CLIENT_END),
        start: matches!(raw.kind, EVENT_GO_SERVE_START | EVENT_GO_CLIENT_START),
        pid: raw.pid,
        tid: raw.tid,
        goid: raw.goid,
        method: go_text(&raw.method, raw.method_len),
        path: go_text(&raw.path, raw.path_len),
        host: go_text(&raw.host, raw.host_len),
        // Go's response.status is 0 until WriteHeader; a valid code is 100..=999.
        status: u16::try_from(raw.status)
            .ok()
            .filter(|s| (100..1000).contains(s)),
        server: raw.server,
        ts_ns: raw.ts_ns,
    }
}

/// Both ends of a socket, canonical: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack listener on `:port` sees of an IPv4 peer) is that IPv4 address, so the two ends of
/// one connection name the same addresses whatever their sockets' families. Every address in the
/// event stream comes through here, so no later stage compares or exports a mapped address.
pub(super) fn endpoints(
    family: u16,
    saddr: &[u8; 16],
    sport: u16,
    daddr: &[u8; 16],
    dport: u16,
) -> Result<(SocketAddr, SocketAddr), DecodeError> {
    let (local, remote) = match family {
        AF_INET => (ipv4(saddr), ipv4(daddr)),
        AF_INET6 => (
            IpAddr::V6(Ipv6Addr::from(*saddr)),
            IpAddr::V6(Ipv6Addr::from(*daddr)),
        ),
        other => return Err(DecodeError::Family(other)),
    };
    Ok((
        SocketAddr::new(local.to_canonical(), sport),
        SocketAddr::new(remote.to_canonical(), dport),
    ))
}

fn ipv4(bytes: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
}

pub(super) fn comm(raw: &[u8; COMM_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn mode(raw: u16) -> Result<AttachMode, DecodeError> {
    match raw {
        MODE_KPROBE => Ok(AttachMode::Kprobe),
        MODE_FENTRY => Ok(AttachMode::Fentry),
        MODE_TP_BTF => Ok(AttachMode::TpBtf),
        MODE_TRACEPOINT => Ok(AttachMode::Tracepoint),
        other => Err(DecodeError::Mode(other)),
    }
}

/// Test helpers: raw records built the way the probes build them.
#[cfg(test)]
pub(crate) mod raw {
    use super::*;

    pub fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: only used with the #[repr(C)] contract types, which have no implicit padding.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
        }
        .to_vec()
    }

    pub fn connect() -> ConnEvent {
        let mut ev = ConnEvent::zeroed(EVENT_CONNECT);
        ev.family = AF_INET;
        ev.sport = 40_000;
        ev.dport = 8080;
        ev.mode = MODE_TRACEPOINT;
        ev.pid = 10;
        ev.tid = 11;
        ev.ts_ns = 99;
        ev.conn_id = 7;
        ev.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        ev.comm[..4].copy_from_slice(b"curl");
        ev
    }

    pub fn data(payload: &[u8], bytes: u64) -> Vec<u8> {
        // SAFETY: DataHeader is plain data; all-zero is a valid value.
        let mut h: DataHeader = unsafe { std::mem::zeroed() };
        h.kind = EVENT_DATA;
        h.direction = DIR_EGRESS;
        h.family = AF_INET6;
        h.pid = 10;
        h.tid = 12;
        h.fd = 3;
        h.sport = 40_000;
        h.dport = 80;
        h.seq = 1000;
        h.captured = payload.len() as u32;
        h.conn_id = 7;
        h.bytes = bytes;
        h.ts_enter_ns = 5;
        h.ts_exit_ns = 6;
        h.saddr = Ipv6Addr::LOCALHOST.octets();
        h.daddr = Ipv6Addr::LOCALHOST.octets();
        h.comm[..2].copy_from_slice(b"py");
        let mut record = bytes_of(&h);
        record.extend_from_slice(payload);
        record
    }
}

#[cfg(test)]
mod tests {
    use super::{raw::*, *};
    use crate::event::Window;

    #[test]
    fn decodes_ipv4_connect() {
        let Event::Conn(c) = decode(&bytes_of(&connect())).unwrap() else {
            panic!("not conn")
        };
        assert_eq!(c.kind, ConnKind::Connect);
        assert_eq!(c.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(c.remote, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(
            (c.pid, c.tid, c.comm.as_str(), c.ts_ns, c.conn_id),
            (10, 11, "curl", 99, 7)
        );
        assert_eq!(c.mode, AttachMode::Tracepoint);
    }

    #[test]
    fn decodes_a_failed_connect_and_a_closes_socket_error() {
        let mut ev = connect();
        ev.kind = EVENT_CONNECT_FAILED;
        ev.error = 111;
        let Event::ConnectFailed(c) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not a failed connect")
        };
        assert_eq!((c.kind, c.errno), (ConnKind::Connect, Some(111)));
        ev.kind = EVENT_CLOSE;
        ev.error = 0;
        let Event::Conn(c) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not conn")
        };
        assert_eq!((c.kind, c.errno), (ConnKind::Close, None), "0 is no error");
    }

    #[test]
    fn decodes_ipv6_and_canonicalizes_v4_mapped_addresses() {
        let mut ev = connect();
        ev.kind = EVENT_ACCEPT;
        ev.family = AF_INET6;
        ev.saddr = Ipv6Addr::LOCALHOST.octets();
        ev.daddr = "::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        let Event::Conn(c) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not conn")
        };
        assert_eq!(c.kind, ConnKind::Accept);
        // Real IPv6 stays IPv6; a mapped IPv4 address is its IPv4 address.
        assert_eq!(c.local, "[::1]:40000".parse().unwrap());
        assert_eq!(c.remote, "10.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn decodes_data_with_its_payload_and_exact_byte_count() {
        let Event::Data(d) = decode(&data(b"GET /", 1 << 20)).unwrap() else {
            panic!("not data")
        };
        assert_eq!(d.payload, b"GET /");
        assert_eq!(d.bytes, 1 << 20);
        assert_eq!(
            (d.direction, d.seq, d.conn_id, d.fd),
            (Direction::Egress, 1000, 7, 3)
        );
        assert_eq!(d.goid, None);
        assert_eq!(d.local, "[::1]:40000".parse().unwrap());
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let good = bytes_of(&connect());
        assert_eq!(decode(&[]), Err(DecodeError::TooShort { need: 4, got: 0 }));
        assert_eq!(
            decode(&good[..20]),
            Err(DecodeError::TooShort {
                need: size_of::<ConnEvent>(),
                got: 20
            })
        );
        let mut unknown = good.clone();
        unknown[0] = 200;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(200)));
        let mut ev = connect();
        ev.family = 1;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Family(1)));
        ev = connect();
        ev.mode = 9;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Mode(9)));
        // A data header that claims more payload than the record holds.
        let mut short = data(b"abcdef", 6);
        short.truncate(short.len() - 2);
        assert_eq!(decode(&short), Err(DecodeError::Captured { captured: 6 }));
        // Every prefix of a valid record, and arbitrary bytes, decode without panicking.
        let full = data(b"payload", 7);
        for len in 0..full.len() {
            let _ = decode(&full[..len]);
        }
        for seed in 0u8..=255 {
            let mut noise: Vec<u8> = (0..200u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
                .collect();
            noise[..4].copy_from_slice(&(u32::from(seed) % 6).to_ne_bytes());
            let _ = decode(&noise);
        }
    }

    #[test]
    fn blanking_a_raw_record_keeps_what_blanking_its_event_keeps() {
        let payload = b"HEADbodybody";
        let windows = [
            Window {
                offset: -2,
                bytes: b"hhWWWW".to_vec(),
            },
            Window {
                offset: 100,
                bytes: b"frame-body".to_vec(),
            },
        ];
        let area = super::super::windows::encode_windows(&windows);
        let plain = data(payload, 200);
        let mut h: DataHeader = read_struct(&plain).unwrap();
        h.window_bytes = area.len() as u32;
        let mut record = bytes_of(&h);
        record.extend_from_slice(payload);
        record.extend_from_slice(&area);
        let zeros = crate::protocol::content::Blank::content;
        let ranges = [zeros(4..12), zeros(103..110)];
        let Event::Data(mut expected) = decode(&record).unwrap() else {
            panic!("not data")
        };
        expected.blank(&ranges);
        assert_eq!(expected.payload, b"HEAD\0\0\0\0\0\0\0\0");
        assert_eq!(
            expected.windows[0].bytes, b"hhWWWW",
            "before and outside the ranges"
        );
        assert_eq!(expected.windows[1].bytes, b"fra\0\0\0\0\0\0\0");
        blank_data_record(&mut record, &ranges);
        assert_eq!(decode(&record).unwrap(), Event::Data(expected));
        // Records that are not whole data events are left alone, without panicking.
        for len in 0..record.len() {
            let mut cut = record[..len].to_vec();
            blank_data_record(&mut cut, &ranges);
        }
    }
}
