//! The request stream: commands as RESP arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or inline (`PING\r\n`), scanned a byte run at a time without buffering values. Only the name
//! and the first argument are kept (at most `MAX_NAME` bytes each); the rest are counted and
//! skipped, by their length when they were not captured.

use super::command::{MAX_NAME, Words};

/// Longest line (`*`/`$` header, inline command, simple reply) scanned; Redis itself refuses
/// inline commands over 64 KiB.
pub(super) const MAX_LINE: u64 = 64 * 1024;
/// Bytes of a line kept for parsing (numbers, error prefixes, short simple strings).
const LINE_KEEP: usize = 64;
/// Most arguments a command may announce (Redis accepts up to INT_MAX; beyond that the bytes
/// are not a command).
const MAX_ARGS: i64 = 1 << 31;
/// Longest bulk string accepted (Redis's `proto-max-bulk-len` is 512 MiB by default).
pub(super) const MAX_BULK: i64 = 1 << 36;

/// A CRLF-terminated line being scanned: its first `LINE_KEEP` bytes and its length.
#[derive(Debug, Default, Clone)]
pub(super) struct Line {
    kept: Vec<u8>,
    len: u64,
    prev: u8,
}

pub(super) enum LineStep {
    More,
    Done,
    Invalid,
}

impl Line {
    /// Scan bytes up to and including the line's `\n`: how many were used and whether the line
    /// ended (with `\r\n`; a bare `\n` is invalid) or grew too long.
    pub(super) fn scan(&mut self, data: &[u8]) -> (usize, LineStep) {
        let end = data.iter().position(|&b| b == b'\n');
        let body = &data[..end.unwrap_or(data.len())];
        let room = LINE_KEEP.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&body[..body.len().min(room)]);
        self.len += body.len() as u64;
        if let Some(&last) = body.last() {
            self.prev = last;
        }
        match end {
            _ if self.len > MAX_LINE => (body.len(), LineStep::Invalid),
            None => (body.len(), LineStep::More),
            Some(_) if self.prev != b'\r' => (body.len() + 1, LineStep::Invalid),
            Some(_) => (body.len() + 1, LineStep::Done),
        }
    }

    /// Bytes were seen.
    pub(super) fn started(&self) -> bool {
        self.len > 0
    }

    /// The whole line without `\r`, when it was short enough to keep.
    pub(super) fn whole(&self) -> Option<&[u8]> {
        let len = self.len as usize;
        (len >= 1 && len <= self.kept.len()).then(|| &self.kept[..len - 1])
    }

    /// The line's first kept bytes (its start, even when it was longer).
    pub(super) fn prefix(&self) -> &[u8] {
        let len = (self.len as usize).saturating_sub(1).min(self.kept.len());
        &self.kept[..len]
    }
}

/// A decimal integer as RESP writes one (`-1`, `42`), at most 19 digits.
pub(super) fn parse_int(text: &[u8]) -> Option<i64> {
    let digits = text
        .strip_prefix(b"-")
        .or(text.strip_prefix(b"+"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Keep up to `MAX_NAME` bytes of a word; a word over that is marked by going one over.
fn keep(into: &mut Option<Vec<u8>>, bytes: &[u8]) {
    let word = into.get_or_insert_with(Vec::new);
    let room = (MAX_NAME + 1).saturating_sub(word.len());
    word.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[derive(Debug, Clone)]
enum State {
    /// Between commands.
    Idle,
    /// `*<n>` line.
    Count(Line),
    /// `$<len>` line of argument `index`.
    ArgHead(Line, u64),
    /// Argument `index`: `pos` of its `len` bytes and CRLF consumed; `lost` when some of its
    /// value was not captured.
    ArgBody {
        index: u64,
        len: u64,
        pos: u64,
        lost: bool,
    },
    /// An inline command line: its length so far, and whether inside a word.
    Inline { line: u64, in_word: bool },
}

pub(super) enum Event {
    /// All bytes used, the command goes on.
    More,
    /// A command ended.
    Command(Words),
    /// Bytes that are no command (an empty inline line, `*0`): Redis answers nothing.
    Nothing,
    /// Not RESP: the stream lost its framing.
    Invalid,
}

/// The request stream's scanner.
#[derive(Debug, Clone)]
pub(super) struct Requests {
    state: State,
    words: Words,
}

impl Requests {
    pub(super) fn new() -> Self {
        Self {
            state: State::Idle,
            words: Words::default(),
        }
    }

    /// Between commands: the next byte starts one.
    pub(super) fn idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// What is known of the command in progress, cut by uncaptured bytes; the scanner
    /// starts over.
    pub(super) fn cut(&mut self) -> Words {
        self.state = State::Idle;
        std::mem::take(&mut self.words)
    }

    /// Scan bytes: how many were used, and what they made.
    pub(super) fn scan(&mut self, data: &[u8]) -> (usize, Event) {
        let mut i = 0;
        loop {
            let rest = &data[i..];
            match &mut self.state {
                State::Idle => {
                    let Some(&first) = rest.first() else {
                        return (i, Event::More);
                    };
                    self.words = Words::default();
                    self.state = match first {
                        b'*' => State::Count(Line::default()),
                        b if b.is_ascii_alphabetic() || b == b'\r' || b == b'\n' => State::Inline {
                            line: 0,
                            in_word: false,
                        },
                        _ => return (i, Event::Invalid),
                    };
                }
                State::Count(line) => {
                    let (used, step) = line.scan(rest);
                    i += used;
                    match step {
                        LineStep::More => return (i, Event::More),
                        LineStep::Invalid => return (i, Event::Invalid),
                        LineStep::Done => {}
                    }
                    match line.whole().and_then(|l| parse_int(&l[1..])) {
                        Some(n) if n <= 0 => {
                            self.state = State::Idle;
                            return (i, Event::Nothing);
                        }
                        Some(n) if n <= MAX_ARGS => {
                            self.words.count = n as u64;
                            self.state = State::ArgHead(Line::default(), 0);
                        }
                        _ => return (i, Event::Invalid),
                    }
                }
                State::ArgHead(line, index) => {
                    let index = *index;
                    let (used, step) = line.scan(rest);
                    i += used;
                    match step {
                        LineStep::More => return (i, Event::More),
                        LineStep::Invalid => return (i, Event::Invalid),
                        LineStep::Done => {}
                    }
                    let len = line
                        .whole()
                        .and_then(|l| l.strip_prefix(b"$"))
                        .and_then(parse_int);
                    match len {
                        Some(len) if (0..=MAX_BULK).contains(&len) => {
                            self.state = State::ArgBody {
                                index,
                                len: len as u64,
                                pos: 0,
                                lost: false,
                            };
                        }
                        _ => return (i, Event::Invalid),
                    }
                }
                State::ArgBody { .. } => {
                    let (used, event) = self.arg_body(rest);
                    i += used;
                    if let Some(event) = event {
                        return (i, event);
                    }
                }
                State::Inline { .. } => {
                    let (used, event) = self.inline(rest);
                    return (i + used, event);
                }
            }
        }
    }

    /// Bytes of an argument's value and its CRLF.
    fn arg_body(&mut self, rest: &[u8]) -> (usize, Option<Event>) {
        let State::ArgBody {
            index,
            len,
            pos,
            lost,
        } = &mut self.state
        else {
            return (0, Some(Event::Invalid));
        };
        let (index, len) = (*index, *len);
        let take = (len + 2 - *pos).min(rest.len() as u64) as usize;
        let chunk = &rest[..take];
        let value_end = len.saturating_sub(*pos).min(take as u64) as usize;
        let slot = match index {
            0 => Some(&mut self.words.name),
            1 => Some(&mut self.words.first_arg),
            _ => None,
        };
        if let Some(slot) = slot.filter(|_| !*lost) {
            keep(slot, &chunk[..value_end]);
        }
        // The CRLF after the value, where this chunk holds it.
        for (k, &b) in chunk.iter().enumerate().skip(value_end) {
            let at = *pos + k as u64 - len;
            if b != b"\r\n"[at as usize] {
                return (k, Some(Event::Invalid));
            }
        }
        *pos += take as u64;
        if *pos < len + 2 {
            return (take, Some(Event::More));
        }
        (take, self.next_arg(index))
    }

    /// Bytes of an inline command line: words split at blanks, up to its `\n`.
    fn inline(&mut self, rest: &[u8]) -> (usize, Event) {
        let State::Inline { line, in_word } = &mut self.state else {
            return (0, Event::Invalid);
        };
        let end = rest.iter().position(|&b| b == b'\n');
        let body = &rest[..end.unwrap_or(rest.len())];
        for &b in body {
            if matches!(b, b' ' | b'\t' | b'\r') {
                *in_word = false;
                continue;
            }
            if !*in_word {
                *in_word = true;
                self.words.count += 1;
            }
            match self.words.count {
                1 => keep(&mut self.words.name, &[b]),
                2 => keep(&mut self.words.first_arg, &[b]),
                _ => {}
            }
        }
        *line += body.len() as u64;
        if *line > MAX_LINE {
            return (body.len(), Event::Invalid);
        }
        if end.is_none() {
            return (body.len(), Event::More);
        }
        self.state = State::Idle;
        let words = std::mem::take(&mut self.words);
        let event = if words.count == 0 {
            Event::Nothing
        } else {
            Event::Command(words)
        };
        (body.len() + 1, event)
    }

    /// Argument `index` ended: the next one's head, or the command's end.
    fn next_arg(&mut self, index: u64) -> Option<Event> {
        if index + 1 < self.words.count {
            self.state = State::ArgHead(Line::default(), index + 1);
            None
        } else {
            self.state = State::Idle;
            Some(Event::Command(std::mem::take(&mut self.words)))
        }
    }

    /// Skip `n` uncaptured bytes: how many the framing accounts for (inside an argument's
    /// value), and the command they end, if any. Fewer than `n` means the framing is lost.
    pub(super) fn skip(&mut self, n: u64) -> (u64, Option<Words>) {
        let State::ArgBody {
            index,
            len,
            pos,
            lost,
        } = &mut self.state
        else {
            return (0, None);
        };
        let (index, len) = (*index, *len);
        let skipped = (len + 2 - *pos).min(n);
        if *pos < len && n > 0 {
            // A word not captured whole is not known.
            *lost = true;
            match index {
                0 => self.words.name = None,
                1 => self.words.first_arg = None,
                _ => {}
            }
        }
        *pos += skipped;
        if *pos < len + 2 {
            return (skipped, None);
        }
        match self.next_arg(index) {
            Some(Event::Command(words)) => (skipped, Some(words)),
            _ => (skipped, None),
        }
    }
}
