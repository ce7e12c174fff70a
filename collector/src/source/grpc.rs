//! Decoding of the Go events that name connections: grpc-go header blocks ([`GoHeaders`]),
//! unary gRPC client calls ([`GoGrpcCall`]) and the connection a net/http request uses
//! ([`GoConnUse`]). Check-then-parse like the rest of `decode`.

use std::mem::offset_of;

use wirespan_shared::{
    EVENT_GO_GRPC_CLIENT_START, EVENT_GO_GRPC_STREAM_OPENED, GO_CONN_CLIENT, GO_CONN_SERVER,
    GO_CONN_SERVER_STREAM, GO_GRPC_STATUS_UNKNOWN, GO_HEADER_FIELDS, GO_HEADER_NAME_LEN,
    GO_HEADER_UNREADABLE, GO_HEADER_VALUE_LEN, GO_HEADERS_CLIENT_RECEIVED, GO_HEADERS_SENT,
    GO_HEADERS_SERVER_RECEIVED, GoConn, GoConnEvent, GoGrpcCallEvent, GoHeadersEvent,
};

use super::decode::{DecodeError, endpoints, go_text};
use crate::event::{
    CallPhase, ConnRole, GoConnUse, GoConnection, GoGrpcCall, GoHeaders, HeaderField, HeadersSource,
};
use crate::protocol::content::{SECRET_FILL, SecretNames};

pub(super) fn decode_conn_use(raw: &GoConnEvent) -> Result<GoConnUse, DecodeError> {
    let role = match raw.role {
        GO_CONN_SERVER | GO_CONN_SERVER_STREAM => ConnRole::Server,
        GO_CONN_CLIENT => ConnRole::Client,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(GoConnUse {
        role,
        stream_id: (raw.role == GO_CONN_SERVER_STREAM && raw.conn.stream_id != 0)
            .then_some(raw.conn.stream_id),
        pid: raw.pid,
        tid: raw.tid,
        goid: raw.goid,
        conn: connection(&raw.conn),
        ts_ns: raw.ts_ns,
    })
}

fn connection(raw: &GoConn) -> GoConnection {
    GoConnection {
        fd: raw.fd,
        endpoints: endpoints(raw.family, &raw.saddr, raw.sport, &raw.daddr, raw.dport).ok(),
    }
}

pub(super) fn decode_headers(raw: &GoHeadersEvent) -> Result<GoHeaders, DecodeError> {
    let source = match raw.source {
        GO_HEADERS_SERVER_RECEIVED => HeadersSource::ServerReceived,
        GO_HEADERS_CLIENT_RECEIVED => HeadersSource::ClientReceived,
        GO_HEADERS_SENT => HeadersSource::Sent,
        other => return Err(DecodeError::Direction(other)),
    };
    let carried = (raw.field_count as usize).min(GO_HEADER_FIELDS);
    let fields = (0..carried)
        .map(|i| {
            let (name_len, value_len) = (raw.name_len[i], raw.value_len[i]);
            let readable = |len: u16| len != GO_HEADER_UNREADABLE;
            HeaderField {
                name: if readable(name_len) {
                    go_text(&raw.names[i], name_len)
                } else {
                    String::new()
                },
                value: if readable(value_len) {
                    go_text(&raw.values[i], value_len)
                } else {
                    String::new()
                },
                cut: (readable(name_len) && usize::from(name_len) > GO_HEADER_NAME_LEN)
                    || (readable(value_len) && usize::from(value_len) > GO_HEADER_VALUE_LEN),
                unreadable: !readable(name_len) || !readable(value_len),
            }
        })
        .collect();
    Ok(GoHeaders {
        source,
        pid: raw.pid,
        tid: raw.tid,
        goid: raw.goid,
        stream_id: raw.stream_id,
        end_stream: raw.end_stream != 0,
        conn: connection(&raw.conn),
        fields,
        fields_left_out: raw.field_count.saturating_sub(carried as u32),
        ts_ns: raw.ts_ns,
    })
}

/// Mask in place, in a raw [`GoHeadersEvent`] record, the values of the fields named in
/// `names` (credentials: `authorization` metadata, cookies, API keys), so that a recording
/// keeps none; whether any was masked.
pub fn mask_header_record(record: &mut [u8], names: &SecretNames) -> bool {
    let Ok(raw) = super::decode::read_struct::<GoHeadersEvent>(record) else {
        return false;
    };
    let mut masked = false;
    for i in 0..(raw.field_count as usize).min(GO_HEADER_FIELDS) {
        let (name_len, value_len) = (raw.name_len[i], raw.value_len[i]);
        if name_len == GO_HEADER_UNREADABLE || value_len == GO_HEADER_UNREADABLE {
            continue;
        }
        let name = &raw.names[i][..usize::from(name_len).min(GO_HEADER_NAME_LEN)];
        if !names.contains(name) {
            continue;
        }
        let at = offset_of!(GoHeadersEvent, values) + i * GO_HEADER_VALUE_LEN;
        let len = usize::from(value_len).min(GO_HEADER_VALUE_LEN);
        if let Some(value) = record.get_mut(at..at + len) {
            value.fill(SECRET_FILL);
            masked = true;
        }
    }
    masked
}

/// The same masking on a decoded event.
pub fn mask_header_fields(headers: &mut GoHeaders, names: &SecretNames) {
    for field in &mut headers.fields {
        if !field.unreadable && names.contains(field.name.as_bytes()) {
            field.value = char::from(SECRET_FILL)
                .to_string()
                .repeat(field.value.len());
        }
    }
}

pub(super) fn decode_call(raw: &GoGrpcCallEvent) -> GoGrpcCall {
    let phase = match raw.kind {
        EVENT_GO_GRPC_CLIENT_START => CallPhase::Start,
        EVENT_GO_GRPC_STREAM_OPENED => CallPhase::StreamOpened,
        _ => CallPhase::End,
    };
    GoGrpcCall {
        phase,
        pid: raw.pid,
        tid: raw.tid,
        goid: raw.goid,
        method: go_text(&raw.method, raw.method_len),
        status: (phase == CallPhase::End && raw.status != GO_GRPC_STATUS_UNKNOWN)
            .then_some(raw.status),
        stream_id: raw.stream_id,
        conn: connection(&raw.conn),
        ts_ns: raw.ts_ns,
    }
}

#[cfg(test)]
mod tests {
    use wirespan_shared::EVENT_GO_HEADERS;

    use super::*;
    use crate::source::decode::raw::bytes_of;

    #[test]
    fn credential_values_are_masked_in_the_record_and_the_event_alike() {
        // SAFETY: a plain-data contract type, for which all zeros is a valid value.
        let mut raw: GoHeadersEvent = unsafe { std::mem::zeroed() };
        raw.kind = EVENT_GO_HEADERS;
        raw.source = GO_HEADERS_SERVER_RECEIVED;
        raw.field_count = 2;
        for (i, (name, value)) in [("authorization", "Bearer wsp-marker"), ("te", "trailers")]
            .iter()
            .enumerate()
        {
            raw.name_len[i] = name.len() as u16;
            raw.value_len[i] = value.len() as u16;
            raw.names[i][..name.len()].copy_from_slice(name.as_bytes());
            raw.values[i][..value.len()].copy_from_slice(value.as_bytes());
        }
        let names = SecretNames::with(&[]);
        let mut record = bytes_of(&raw);
        assert!(mask_header_record(&mut record, &names));
        assert!(!record.windows(10).any(|w| w == b"wsp-marker"));
        let Ok(crate::event::Event::GoHeaders(masked)) = crate::source::decode(&record) else {
            panic!("not headers");
        };
        assert_eq!(masked.get("authorization"), Some("*".repeat(17).as_str()));
        assert_eq!(masked.get("te"), Some("trailers"));
        let mut event = decode_headers(&raw).unwrap();
        mask_header_fields(&mut event, &names);
        assert_eq!(event, masked);
    }
}
