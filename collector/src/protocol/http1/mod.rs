//! HTTP/1.x: requests and responses paired in order on a connection (keep-alive and pipelining).
//!
//! Each direction has its own parse state. Heads are parsed with `httparse` once complete;
//! bodies are skipped by `Content-Length` or chunked framing, counting bytes that were not
//! captured (a syscall's bytes beyond `--capture-bytes` arrive as a gap). When a gap falls where
//! framing is needed (inside a head or a chunk-size line), that direction loses sync and resumes
//! at the next syscall that starts with a request or status line; it never guesses.

use std::collections::VecDeque;

mod framing;

use self::framing::{Body, BodyStep, Chunk, consume_body, request_head, response_body, version_of};
use super::{
    Origin, Segment,
    content::ContentMarks,
    exchange::{Detail, Exchange, Flags, Http, WireSeqs},
};
use crate::event::Direction;

/// Heads longer than this are not buffered (the excess is counted, the side resyncs).
pub const MAX_HEAD: usize = 64 * 1024;
/// Requests waiting for their responses (pipelining depth) kept at most.
pub const MAX_PENDING: usize = 64;
const MAX_HEADERS: usize = 128;

/// Counters of what the decoder had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Http1Stats {
    /// Times a direction lost sync (unparseable bytes, a head cut by the capture limit).
    pub desyncs: u64,
    /// Heads over `MAX_HEAD`.
    pub oversized_heads: u64,
    /// Requests dropped because more than `MAX_PENDING` waited for responses.
    pub pending_overflow: u64,
}

/// A message in progress on one direction.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    start_ns: u64,
    origin: Origin,
    bytes: u64,
    truncated: bool,
}

#[derive(Debug)]
pub(super) struct Side {
    buf: Vec<u8>,
    body: Body,
    synced: bool,
    progress: Option<Progress>,
}

impl Side {
    fn new() -> Self {
        Self {
            buf: Vec::new(),
            body: Body::Head,
            synced: true,
            progress: None,
        }
    }

    /// Bytes waiting and no message in progress: one starts, in this segment.
    fn begin_message(&mut self, seg: &Segment<'_>) {
        if self.progress.is_none() && !self.buf.is_empty() {
            self.progress = Some(Progress {
                start_ns: seg.first_byte_ns(),
                origin: seg.origin_of_buffer_front(self.buf.len()),
                ..Progress::default()
            });
        }
    }
}

/// A request waiting for (or receiving) its response.
#[derive(Debug)]
struct Pending {
    http: Http,
    start_ns: u64,
    origin: Origin,
    request_bytes: u64,
    truncated: bool,
    /// HEAD requests get responses without a body.
    head_method: bool,
}

/// HTTP/1 state of one connection.
#[derive(Debug)]
pub struct Http1Conn {
    request_direction: Direction,
    requests: Side,
    responses: Side,
    pending: VecDeque<Pending>,
    /// The response in progress: its status, once its head is parsed.
    response_status: Option<u16>,
    pub stats: Http1Stats,
    /// The bodies in the segment last fed (TLS plaintext only).
    pub(crate) marks: ContentMarks,
    /// The bytes are TLS plaintext: their positions are not TCP sequence numbers, so exchanges
    /// carry no wire numbers (`Exchange::wire`).
    tls: bool,
}

/// Whether bytes look like the start of an HTTP/1 request (`METHOD SP`).
#[must_use]
pub fn looks_like_request(data: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| data.starts_with(m))
}

/// Whether bytes look like the start of an HTTP/1 response: `HTTP/1.x DDD`, so the tail of a
/// request line (`HTTP/1.1\r\n`) is not taken for one.
#[must_use]
pub fn looks_like_response(data: &[u8]) -> bool {
    data.len() >= 12
        && data.starts_with(b"HTTP/1.")
        && matches!(data[7], b'0' | b'1')
        && data[8] == b' '
        && data[9..12].iter().all(u8::is_ascii_digit)
}

impl Http1Conn {
    /// A decoder for a connection whose requests travel in `request_direction`.
    #[must_use]
    pub fn new(request_direction: Direction) -> Self {
        Self {
            request_direction,
            requests: Side::new(),
            responses: Side::new(),
            pending: VecDeque::new(),
            response_status: None,
            stats: Http1Stats::default(),
            marks: ContentMarks::default(),
            tls: false,
        }
    }

    /// Feed one syscall's bytes; completed exchanges are appended to `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        let is_request = seg.direction == self.request_direction;
        self.marks.begin(seg.tls);
        self.tls |= seg.tls;
        let total = seg.data.len() as u64 + seg.missing;
        {
            let side = if is_request {
                &mut self.requests
            } else {
                &mut self.responses
            };
            if !side.synced {
                let starts = if is_request {
                    looks_like_request(seg.data)
                } else {
                    looks_like_response(seg.data)
                };
                if !starts {
                    self.marks.rest(total);
                    return;
                }
                *side = Side::new();
            }
            if side.buf.len() + seg.data.len() > MAX_HEAD && side.body == Body::Head {
                self.stats.oversized_heads += 1;
                self.desync(is_request);
                self.marks.rest(total);
                return;
            }
            side.buf.extend_from_slice(seg.data);
            self.marks.took(seg.data.len() as u64);
        }
        if is_request {
            self.run_requests(seg);
        } else {
            self.run_responses(seg, out);
        }
        if seg.missing > 0 {
            self.gap(is_request, seg, out);
        }
        // The uncaptured bytes: HTTP/1 reads no frame windows there.
        self.marks.rest(total);
    }

    /// Bytes this connection holds (buffers, plus an estimate per waiting request).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.requests.buf.capacity() + self.responses.buf.capacity() + self.pending.len() * 256
    }

    /// The connection closed: a body that runs until close ends here; requests still waiting
    /// are emitted without a response.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if self.responses.body == Body::UntilClose && self.responses.synced {
            self.finish_response(ts_ns, out);
        }
        while let Some(p) = self.pending.pop_front() {
            out.push(self.exchange(
                p,
                None,
                (0, 0),
                ts_ns,
                Flags {
                    no_response: true,
                    ..Flags::default()
                },
            ));
        }
    }

    fn desync(&mut self, is_request: bool) {
        self.stats.desyncs += 1;
        let side = if is_request {
            &mut self.requests
        } else {
            &mut self.responses
        };
        side.synced = false;
        side.buf.clear();
        side.body = Body::Head;
        side.progress = None;
    }

    /// Bytes of a syscall that were not captured: body bytes are skipped by count; a gap where
    /// framing is needed (a head, a chunk-size line) costs the direction its sync.
    fn gap(&mut self, is_request: bool, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        let side = if is_request {
            &mut self.requests
        } else {
            &mut self.responses
        };
        if !side.synced {
            return;
        }
        if let Some(p) = side.progress.as_mut() {
            p.bytes += seg.missing;
        }
        let (skipped, completes) = match side.body {
            Body::Fixed(n) => {
                let skipped = n.min(seg.missing);
                side.body = if skipped == n {
                    Body::Head
                } else {
                    Body::Fixed(n - skipped)
                };
                (skipped, skipped == n)
            }
            Body::Chunked(Chunk::Data(n)) => {
                let skipped = n.min(seg.missing);
                side.body = Body::Chunked(if skipped == n {
                    Chunk::DataEnd(2)
                } else {
                    Chunk::Data(n - skipped)
                });
                (skipped, false)
            }
            Body::UntilClose | Body::Opaque => (seg.missing, false),
            _ => (0, false),
        };
        let in_cut_head = side.body == Body::Head && !side.buf.is_empty();
        if completes {
            if is_request {
                self.finish_request();
            } else {
                self.finish_response(seg.ts_exit_ns, out);
            }
        }
        if seg.missing > skipped {
            if in_cut_head {
                // A head cut by the capture limit: keep what its first line says.
                self.salvage_cut_head(is_request, seg, out);
            }
            self.desync(is_request);
        }
    }

    /// A head whose end was not captured: record the request line (or status) it starts with.
    fn salvage_cut_head(&mut self, is_request: bool, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        let side = if is_request {
            &self.requests
        } else {
            &self.responses
        };
        let line_end = side
            .buf
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(side.buf.len());
        let line = String::from_utf8_lossy(&side.buf[..line_end])
            .trim_end()
            .to_owned();
        let start_ns = side.progress.map_or(seg.first_byte_ns(), |p| p.start_ns);
        let origin = side
            .progress
            .map_or_else(|| seg.origin_of_buffer_front(side.buf.len()), |p| p.origin);
        let bytes = side.progress.map_or(0, |p| p.bytes);
        let mut parts = line.split(' ');
        if is_request {
            let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
                return;
            };
            let http = Http {
                version: parts.next().and_then(version_of),
                method: method.to_owned(),
                target: target.to_owned(),
                ..Http::default()
            };
            self.push_pending(Pending {
                http,
                start_ns,
                origin,
                request_bytes: bytes,
                truncated: true,
                head_method: method == "HEAD",
            });
        } else if let (Some(_), Some(status)) =
            (parts.next(), parts.next().and_then(|s| s.parse().ok()))
            && let Some(p) = self.pending.pop_front()
        {
            let flags = Flags {
                truncated: true,
                ..Flags::default()
            };
            out.push(self.exchange(p, Some(status), (bytes, origin.seq), seg.ts_exit_ns, flags));
        }
    }

    fn push_pending(&mut self, pending: Pending) {
        if self.pending.len() >= MAX_PENDING {
            self.stats.pending_overflow += 1;
            self.pending.pop_front();
        }
        self.pending.push_back(pending);
    }

    #[expect(
        clippy::single_match_else,
        reason = "mirrors run_responses, which has more arms"
    )]
    fn run_requests(&mut self, seg: &Segment<'_>) {
        loop {
            let side = &mut self.requests;
            if !side.synced {
                return;
            }
            side.begin_message(seg);
            match side.body {
                Body::Head => {
                    if side.buf.is_empty() {
                        return;
                    }
                    self.marks.secrets_in_head(&side.buf, side.buf.len());
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut req = httparse::Request::new(&mut headers);
                    let consumed = match req.parse(&side.buf) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => return,
                        Err(_) => {
                            self.marks.content_at_front(side.buf.len(), side.buf.len());
                            self.desync(true);
                            return;
                        }
                    };
                    let (http, body, head_method) = request_head(&req);
                    side.buf.drain(..consumed);
                    let progress = side.progress.get_or_insert_default();
                    progress.bytes += consumed as u64;
                    let (start_ns, origin, bytes) =
                        (progress.start_ns, progress.origin, progress.bytes);
                    side.body = body;
                    self.push_pending(Pending {
                        http,
                        start_ns,
                        origin,
                        request_bytes: bytes,
                        truncated: false,
                        head_method,
                    });
                    if body == Body::Head {
                        self.requests.progress = None;
                    }
                }
                _ => {
                    let before = side.buf.len();
                    match consume_body(side, &mut self.marks) {
                        BodyStep::Done => {
                            let used = (before - side.buf.len()) as u64;
                            self.add_request_bytes(used);
                            self.finish_request();
                        }
                        BodyStep::NeedMore => {
                            let used = (before - side.buf.len()) as u64;
                            self.add_request_bytes(used);
                            return;
                        }
                        BodyStep::Invalid => {
                            let side = &self.requests;
                            self.marks.content_at_front(side.buf.len(), side.buf.len());
                            self.desync(true);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn add_request_bytes(&mut self, n: u64) {
        if let Some(p) = self.requests.progress.as_mut() {
            p.bytes += n;
        }
        if let Some(last) = self.pending.back_mut() {
            last.request_bytes += n;
        }
    }

    fn finish_request(&mut self) {
        self.requests.progress = None;
        self.requests.body = Body::Head;
    }

    fn run_responses(&mut self, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        loop {
            let side = &mut self.responses;
            if !side.synced {
                return;
            }
            side.begin_message(seg);
            match side.body {
                Body::Head => {
                    if side.buf.is_empty() {
                        return;
                    }
                    self.marks.secrets_in_head(&side.buf, side.buf.len());
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let consumed = match resp.parse(&side.buf) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => return,
                        Err(_) => {
                            self.marks.content_at_front(side.buf.len(), side.buf.len());
                            self.desync(false);
                            return;
                        }
                    };
                    let status = resp.code.unwrap_or(0);
                    let head_method = self.pending.front().is_some_and(|p| p.head_method);
                    let body = response_body(&resp, status, head_method);
                    side.buf.drain(..consumed);
                    side.progress.get_or_insert_default().bytes += consumed as u64;
                    if (100..200).contains(&status) && status != 101 {
                        // Interim (100 Continue, 103 Early Hints): the final head follows.
                        continue;
                    }
                    self.response_status = Some(status);
                    self.responses.body = body;
                    if body == Body::Head || body == Body::Opaque {
                        self.finish_response(seg.ts_exit_ns, out);
                        if body == Body::Opaque {
                            self.responses.body = Body::Opaque;
                            self.requests.synced = false;
                            return;
                        }
                    }
                }
                Body::Opaque => {
                    self.marks.content_at_front(side.buf.len(), side.buf.len());
                    side.buf.clear();
                    return;
                }
                _ => {
                    let before = side.buf.len();
                    let step = consume_body(side, &mut self.marks);
                    let used = (before - side.buf.len()) as u64;
                    if let Some(p) = side.progress.as_mut() {
                        p.bytes += used;
                    }
                    match step {
                        BodyStep::Done => self.finish_response(seg.ts_exit_ns, out),
                        BodyStep::NeedMore => return,
                        BodyStep::Invalid => {
                            let side = &self.responses;
                            self.marks.content_at_front(side.buf.len(), side.buf.len());
                            self.desync(false);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn finish_response(&mut self, end_ns: u64, out: &mut Vec<Exchange>) {
        let progress = self.responses.progress.take().unwrap_or_default();
        if self.responses.body != Body::Opaque {
            self.responses.body = Body::Head;
        }
        let status = self.response_status.take();
        if let Some(p) = self.pending.pop_front() {
            let flags = Flags {
                truncated: p.truncated || progress.truncated,
                ..Flags::default()
            };
            out.push(self.exchange(
                p,
                status,
                (progress.bytes, progress.origin.seq),
                end_ns,
                flags,
            ));
        }
    }

    fn exchange(
        &self,
        p: Pending,
        status: Option<u16>,
        (response_bytes, response_seq): (u64, u32),
        end_ns: u64,
        flags: Flags,
    ) -> Exchange {
        let mut http = p.http;
        http.status = status;
        Exchange {
            request_direction: self.request_direction,
            start_ns: p.start_ns,
            origin: p.origin,
            end_ns,
            request_bytes: p.request_bytes,
            response_bytes,
            wire: if self.tls {
                WireSeqs::default()
            } else {
                WireSeqs::of(p.origin.seq, response_seq)
            },
            detail: Detail::Http(http),
            flags,
        }
    }
}
