//! The reply stream: RESP2 and RESP3 values of every type skipped exactly by their framing
//! (simple strings, errors, integers, bulk strings and their nulls, arrays nested, and RESP3's
//! maps, sets, attributes, pushes, doubles, booleans, big numbers, verbatim strings, bulk errors
//! and null), without buffering values: bulk bodies are skipped by count even when they were
//! not captured. Of a top-level reply only what the pairing needs is kept: its type, an error's
//! prefix, a short simple string, and for arrays and pushes the first element (the pub/sub kind,
//! `message` or `subscribe`) and the third when an integer (the subscription count).

use super::request::{Line, LineStep, MAX_BULK, parse_int};

/// Aggregates nested deeper than this are not followed (the stream is taken as lost).
pub const MAX_DEPTH: usize = 128;
/// Bytes of a top-level simple string, of a bulk error, or of an array's first element kept.
const KEEP: usize = 32;

/// A top-level reply, complete.
#[derive(Debug, Clone, Default)]
pub(super) struct Reply {
    pub start_ns: u64,
    pub seq: u32,
    /// Wire bytes, uncaptured ones included.
    pub bytes: u64,
    /// The RESP type byte of the value (after any attribute): `+`, `-`, `*`, `>`, ...
    pub kind: u8,
    /// An error's prefix (`ERR`, `WRONGTYPE`).
    pub status: Option<String>,
    /// The first bytes of a simple string reply (`OK`, `QUEUED`, `RESET`).
    pub simple: Vec<u8>,
    /// The first element of an array or push, when a short string captured whole.
    pub first: Vec<u8>,
    /// The third element of an array or push, when an integer.
    pub count: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    No,
    First,
    Error,
}

#[derive(Debug, Clone)]
enum State {
    Head(Line),
    /// A bulk body (`$`, `!`, `=`): `pos` of its `len` bytes and CRLF consumed.
    Bulk {
        len: u64,
        pos: u64,
        keep: Keep,
    },
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    left: u64,
    total: u64,
    /// An attribute (`|`): when it ends, the value it describes follows.
    attr: bool,
}

pub(super) enum Event {
    More,
    Reply(Reply),
    Invalid,
    TooDeep,
}

/// The reply stream's scanner.
#[derive(Debug, Clone)]
pub(super) struct Replies {
    state: State,
    stack: Vec<Frame>,
    cur: Option<Reply>,
}

/// Whether a byte is a RESP2 or RESP3 type.
pub(super) fn is_type(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'('
            | b'!'
            | b'='
            | b'%'
            | b'~'
            | b'|'
            | b'>'
    )
}

/// `ERR` of `ERR unknown command`: the first word when it is an upper-case prefix (Redis's
/// convention), else `ERR`. The message, which may quote arguments, is never kept.
fn error_prefix(text: &[u8]) -> String {
    let word = text.split(|&b| b == b' ').next().unwrap_or_default();
    let fits = matches!(word.first(), Some(b) if b.is_ascii_uppercase())
        && word.len() <= KEEP
        && word
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if fits {
        String::from_utf8_lossy(word).into_owned()
    } else {
        "ERR".to_owned()
    }
}

impl Replies {
    pub(super) fn new() -> Self {
        Self {
            state: State::Head(Line::default()),
            stack: Vec::new(),
            cur: None,
        }
    }

    /// Between replies: the next byte starts one.
    pub(super) fn idle(&self) -> bool {
        self.cur.is_none()
    }

    /// A reply starts with the next byte.
    pub(super) fn begin(&mut self, start_ns: u64, seq: u32) {
        self.cur = Some(Reply {
            start_ns,
            seq,
            ..Reply::default()
        });
    }

    /// The reply in progress, cut where its framing was lost; the scanner starts over.
    pub(super) fn cut(&mut self) -> Option<Reply> {
        self.state = State::Head(Line::default());
        self.stack.clear();
        self.cur.take()
    }

    /// Bytes this scanner holds.
    pub(super) fn held(&self) -> usize {
        self.stack.capacity() * size_of::<Frame>() + 256
    }

    /// Scan bytes of a reply begun with `begin`: how many were used, and what they made.
    pub(super) fn scan(&mut self, data: &[u8]) -> (usize, Event) {
        let mut i = 0;
        loop {
            let rest = &data[i..];
            if rest.is_empty() {
                return (i, Event::More);
            }
            let (used, step) = match &mut self.state {
                State::Head(line) => {
                    if !line.started() && !is_type(rest[0]) {
                        return (i, Event::Invalid);
                    }
                    let (used, step) = line.scan(rest);
                    match step {
                        LineStep::More => (used, None),
                        LineStep::Invalid => return (i + used, Event::Invalid),
                        LineStep::Done => {
                            let line = std::mem::take(line);
                            (used, Some(self.head(&line)))
                        }
                    }
                }
                State::Bulk { len, pos, keep } => {
                    let (len, keep) = (*len, *keep);
                    let take = (len + 2 - *pos).min(rest.len() as u64) as usize;
                    let chunk = &rest[..take];
                    let value_end = len.saturating_sub(*pos).min(take as u64) as usize;
                    if keep != Keep::No
                        && let Some(cur) = self.cur.as_mut()
                    {
                        let into = if keep == Keep::First {
                            &mut cur.first
                        } else {
                            &mut cur.simple
                        };
                        let room = KEEP.saturating_sub(into.len());
                        into.extend_from_slice(&chunk[..value_end.min(room)]);
                    }
                    for (k, &b) in chunk.iter().enumerate().skip(value_end) {
                        if b != b"\r\n"[(*pos + k as u64 - len) as usize] {
                            return (i + k, Event::Invalid);
                        }
                    }
                    *pos += take as u64;
                    if *pos < len + 2 {
                        (take, None)
                    } else {
                        (take, Some(Ok(self.bulk_done(keep))))
                    }
                }
            };
            i += used;
            if let Some(cur) = self.cur.as_mut() {
                cur.bytes += used as u64;
            }
            match step {
                None => return (i, Event::More),
                Some(Err(e)) => return (i, e),
                Some(Ok(false)) => {}
                Some(Ok(true)) => {
                    if let Some(done) = self.complete() {
                        return (i, Event::Reply(done));
                    }
                }
            }
        }
    }

    /// A bulk body ended: the value is complete.
    fn bulk_done(&mut self, keep: Keep) -> bool {
        self.state = State::Head(Line::default());
        if keep == Keep::Error
            && let Some(cur) = self.cur.as_mut()
        {
            cur.status = Some(error_prefix(&cur.simple));
            cur.simple.clear();
        }
        true
    }

    /// A header line: whether the value it starts is complete, or why the stream is lost.
    fn head(&mut self, line: &Line) -> Result<bool, Event> {
        let Some((&kind, rest)) = line.prefix().split_first() else {
            return Err(Event::Invalid);
        };
        let whole = line.whole().map(|l| &l[1..]);
        let top = self.stack.is_empty();
        let element = match self.stack.as_slice() {
            [f] if !f.attr => Some(f.total - f.left),
            _ => None,
        };
        let cur = self.cur.get_or_insert_default();
        if top && kind != b'|' {
            cur.kind = kind;
        }
        let int = whole.and_then(parse_int);
        match kind {
            b'+' | b'-' => {
                if top && kind == b'-' {
                    cur.status = Some(error_prefix(rest));
                } else if top {
                    cur.simple = rest[..rest.len().min(KEEP)].to_vec();
                }
                if element == Some(0) && kind == b'+' && rest.len() <= KEEP {
                    cur.first = rest.to_vec();
                }
                Ok(true)
            }
            b':' => {
                let v = int.ok_or(Event::Invalid)?;
                if element == Some(2) {
                    cur.count = Some(v);
                }
                Ok(true)
            }
            b'(' => {
                let digits = rest.strip_prefix(b"-").unwrap_or(rest);
                (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                    .then_some(true)
                    .ok_or(Event::Invalid)
            }
            b',' => (!rest.is_empty() && rest.iter().all(u8::is_ascii_graphic))
                .then_some(true)
                .ok_or(Event::Invalid),
            b'#' => matches!(whole, Some(b"t" | b"f"))
                .then_some(true)
                .ok_or(Event::Invalid),
            b'_' => (whole == Some(b"")).then_some(true).ok_or(Event::Invalid),
            b'$' | b'!' | b'=' => match int {
                Some(-1) if kind == b'$' => Ok(true),
                Some(len) if (0..=MAX_BULK).contains(&len) => {
                    let keep = if top && kind == b'!' {
                        cur.simple.clear();
                        Keep::Error
                    } else if element == Some(0) && kind == b'$' && len as usize <= KEEP {
                        Keep::First
                    } else {
                        Keep::No
                    };
                    self.state = State::Bulk {
                        len: len as u64,
                        pos: 0,
                        keep,
                    };
                    Ok(false)
                }
                _ => Err(Event::Invalid),
            },
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let n = match int {
                    Some(-1) if kind == b'*' => return Ok(true),
                    Some(n) if (0..=MAX_BULK).contains(&n) => n as u64,
                    _ => return Err(Event::Invalid),
                };
                let total = if matches!(kind, b'%' | b'|') {
                    2 * n
                } else {
                    n
                };
                if total == 0 {
                    // An empty attribute describes the value that follows.
                    return Ok(kind != b'|');
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Event::TooDeep);
                }
                self.stack.push(Frame {
                    left: total,
                    total,
                    attr: kind == b'|',
                });
                Ok(false)
            }
            _ => Err(Event::Invalid),
        }
    }

    /// A value ended: the enclosing aggregates count it; the top-level reply when it ends.
    fn complete(&mut self) -> Option<Reply> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return self.cur.take();
            };
            frame.left -= 1;
            if frame.left > 0 {
                return None;
            }
            if self.stack.pop().is_some_and(|f| f.attr) {
                return None;
            }
        }
    }

    /// Skip `n` uncaptured bytes: how many the framing accounts for (inside a bulk body), and
    /// the reply they end, if any. Fewer than `n` means the framing is lost.
    pub(super) fn skip(&mut self, n: u64) -> (u64, Option<Reply>) {
        let State::Bulk { len, pos, keep } = &mut self.state else {
            return (0, None);
        };
        let (len, keep) = (*len, *keep);
        let skipped = (len + 2 - *pos).min(n);
        if let Some(cur) = self.cur.as_mut() {
            cur.bytes += skipped;
            if *pos < len && skipped > 0 && keep == Keep::First {
                // Not captured whole: not known.
                cur.first = b"?".to_vec();
            }
        }
        *pos += skipped;
        if *pos < len + 2 {
            return (skipped, None);
        }
        self.bulk_done(keep);
        (skipped, self.complete())
    }
}
