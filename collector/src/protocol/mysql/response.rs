//! One command waiting for (or receiving) its response, and the state machine that says where
//! the response ends: OK, ERR, a result set (column count, column definitions, an EOF unless
//! CLIENT_DEPRECATE_EOF, rows, then an EOF or an OK with the `0xfe` header), further result sets
//! while SERVER_MORE_RESULTS_EXISTS is set, COM_STMT_PREPARE_OK with its definitions, or one
//! packet. Rows are skipped without looking past their first byte.
//!
//! Without the handshake (joined mid-connection) CLIENT_DEPRECATE_EOF is unknown. Result sets do
//! not need it: a classic EOF is exactly 5 bytes and an OK is at least 7, so the packet after the
//! column definitions says which. A prepare's response does: its last definitions may or may not
//! be followed by an EOF, so the exchange stays open until the next command or an EOF settles it.

use super::{
    framing::{MAX_PAYLOAD, Message},
    packets::{CURSOR_EXISTS, MORE_RESULTS_EXISTS, end_status, err_code, lenenc, prepare_ok},
};
use crate::protocol::{Origin, db::Db};

/// Where a result-set response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Expecting OK, ERR, a LOCAL INFILE request, or a column count.
    First,
    /// Column definitions still to come.
    Columns(u64),
    /// After the definitions: an EOF (rows follow), a terminator, or a row.
    AfterColumns,
    Rows,
}

/// Where a COM_STMT_PREPARE response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prep {
    First,
    /// `left` definitions of this group, then `then` column definitions.
    Defs {
        left: u32,
        then: u32,
    },
    /// An EOF is expected (or, when the capabilities are unknown, may come) after a group.
    Eof {
        then: u32,
    },
}

/// What kind of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resp {
    Result(Stage),
    Prepare(Prep),
    /// One packet (OK, ERR, EOF, or COM_STATISTICS's string).
    Single,
    /// COM_CHANGE_USER: authentication packets until OK or ERR.
    Auth,
    /// Not decoded (an unknown command, or the response lost its way): it ends when the client
    /// sends its next command.
    UntilNext,
}

/// What a successful response changes on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OnOk {
    Nothing,
    /// COM_INIT_DB, `USE`, COM_CHANGE_USER: the namespace from then on.
    Namespace(Option<String>),
    /// COM_STMT_PREPARE: the statement to remember by the id the server gives.
    Prepare(super::Statement),
}

/// The outcome of one response message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    More,
    Done,
    /// The message is not this command's: this one's response already ended (a prepare whose
    /// closing EOF did not come); the message goes to the next command.
    NotMine,
    /// The message could not be placed: the response is followed until the next command.
    Undecodable,
}

/// A command waiting for its response.
#[derive(Debug)]
pub(super) struct Pending {
    pub db: Db,
    pub resp: Resp,
    pub on_ok: OnOk,
    pub start_ns: u64,
    pub origin: Origin,
    pub request_bytes: u64,
    /// The request's text was cut (capture limit or `MAX_QUERY`).
    pub truncated: bool,
    /// The statement's text is unknown (prepared before the capture).
    pub headers_unknown: bool,
    /// The response could not be decoded to its end.
    pub undecoded: bool,
    /// Sequence id the next response packet must carry.
    pub next_seq: u8,
    pub response_bytes: u64,
    pub response_seq: u32,
    pub end_ns: u64,
    /// The statement id a COM_STMT_PREPARE_OK just gave (taken by the connection).
    pub prepared_id: Option<u32>,
}

impl Pending {
    /// A prepare response complete unless an EOF follows (capabilities unknown).
    pub fn settled_unless_eof(&self, deprecate_eof: Option<bool>) -> bool {
        deprecate_eof.is_none() && self.resp == Resp::Prepare(Prep::Eof { then: 0 })
    }

    /// Whether the response ends where the next command starts.
    pub fn ends_at_next_command(&self, deprecate_eof: Option<bool>) -> bool {
        self.resp == Resp::UntilNext || self.settled_unless_eof(deprecate_eof)
    }

    /// Take one response message.
    pub fn step(&mut self, m: &Message, deprecate_eof: Option<bool>) -> Step {
        if self.resp == Resp::UntilNext {
            return Step::More;
        }
        let is_eof = m.head.first() == Some(&0xfe) && m.len == 5;
        if self.settled_unless_eof(deprecate_eof) {
            return if is_eof && m.first_seq == self.next_seq {
                Step::Done
            } else {
                Step::NotMine
            };
        }
        if m.first_seq != self.next_seq {
            return self.undecodable();
        }
        self.next_seq = m.last_seq.wrapping_add(1);
        let Some(&b0) = m.head.first() else {
            return self.undecodable();
        };
        match self.resp {
            Resp::Result(stage) => self.result(stage, b0, m),
            Resp::Prepare(prep) => self.prepare(prep, b0, m, deprecate_eof),
            Resp::Single => {
                if b0 == 0xff {
                    self.error(m);
                }
                Step::Done
            }
            Resp::Auth => match b0 {
                0x00 => Step::Done,
                0xff => {
                    self.error(m);
                    Step::Done
                }
                _ => Step::More,
            },
            Resp::UntilNext => Step::More,
        }
    }

    pub fn undecodable(&mut self) -> Step {
        self.resp = Resp::UntilNext;
        self.undecoded = true;
        Step::Undecodable
    }

    fn error(&mut self, m: &Message) {
        match err_code(&m.head) {
            Some(code) => self.db.status_code = Some(code.to_string()),
            None => self.undecoded = true,
        }
    }

    /// An OK or a result set's terminator: another result follows or the response ends.
    fn terminator(&mut self, m: &Message) -> Step {
        match end_status(&m.head, m.len) {
            Some(s) if s & MORE_RESULTS_EXISTS != 0 => {
                self.resp = Resp::Result(Stage::First);
                Step::More
            }
            Some(_) => Step::Done,
            None => self.undecodable(),
        }
    }

    fn result(&mut self, stage: Stage, b0: u8, m: &Message) -> Step {
        let terminator = b0 == 0xfe && m.len < u64::from(MAX_PAYLOAD);
        match stage {
            Stage::First => match b0 {
                0x00 => self.terminator(m),
                0xff => {
                    self.error(m);
                    Step::Done
                }
                // LOCAL INFILE: the client sends the file, then the server answers OK or ERR.
                0xfb => Step::More,
                // An old server's EOF where an OK was due.
                0xfe if m.len < 9 => Step::Done,
                // The column count; a byte after it is `metadata_follows` (MySQL's
                // CLIENT_OPTIONAL_RESULTSET_METADATA, MariaDB's cached metadata): 0 when the
                // definitions are left out.
                _ => match lenenc(&m.head) {
                    Some((n, used)) if (1..=4096).contains(&n) => {
                        let follows = if m.len > used as u64 {
                            m.head.get(used).copied()
                        } else {
                            Some(1)
                        };
                        self.resp = Resp::Result(match follows {
                            Some(0) => Stage::AfterColumns,
                            Some(1) => Stage::Columns(n),
                            _ => return self.undecodable(),
                        });
                        Step::More
                    }
                    _ => self.undecodable(),
                },
            },
            Stage::Columns(n) => {
                if !is_column_definition(m) {
                    return self.undecodable();
                }
                self.resp = Resp::Result(if n > 1 {
                    Stage::Columns(n - 1)
                } else {
                    Stage::AfterColumns
                });
                Step::More
            }
            Stage::AfterColumns if terminator && m.len == 5 => {
                // The classic EOF after the definitions: rows follow, unless a cursor was
                // opened (COM_STMT_EXECUTE with a cursor: rows come by COM_STMT_FETCH).
                match end_status(&m.head, m.len) {
                    Some(s) if s & CURSOR_EXISTS != 0 => Step::Done,
                    Some(_) => {
                        self.resp = Resp::Result(Stage::Rows);
                        Step::More
                    }
                    None => self.undecodable(),
                }
            }
            Stage::AfterColumns | Stage::Rows => {
                if terminator {
                    self.terminator(m)
                } else if b0 == 0xff {
                    // Text rows never start with 0xff, binary rows start with 0x00.
                    self.error(m);
                    Step::Done
                } else {
                    self.resp = Resp::Result(Stage::Rows);
                    Step::More
                }
            }
        }
    }

    fn prepare(&mut self, prep: Prep, b0: u8, m: &Message, deprecate_eof: Option<bool>) -> Step {
        match prep {
            Prep::First => {
                if b0 == 0xff {
                    self.error(m);
                    return Step::Done;
                }
                let Some((id, columns, params)) = prepare_ok(&m.head) else {
                    return self.undecodable();
                };
                self.prepared_id = Some(id);
                self.db.statement = Some(id.to_string());
                if m.len > 12 && m.head.get(12) == Some(&0) {
                    // metadata_follows 0: no definitions.
                    return Step::Done;
                }
                match (u32::from(params), u32::from(columns)) {
                    (0, 0) => Step::Done,
                    (0, c) => self.defs(c, 0, deprecate_eof),
                    (p, c) => self.defs(p, c, deprecate_eof),
                }
            }
            Prep::Defs { left, then } => {
                if !is_column_definition(m) {
                    return self.undecodable();
                }
                self.defs(left - 1, then, deprecate_eof)
            }
            Prep::Eof { then } => {
                if b0 == 0xfe && m.len == 5 {
                    if then > 0 {
                        return self.defs(then, 0, deprecate_eof);
                    }
                    return Step::Done;
                }
                if deprecate_eof.is_none() && then > 0 && is_column_definition(m) {
                    return self.defs(then - 1, 0, deprecate_eof);
                }
                self.undecodable()
            }
        }
    }

    /// `left` definitions to go in this group, then `then` more after it.
    fn defs(&mut self, left: u32, then: u32, deprecate_eof: Option<bool>) -> Step {
        self.resp = Resp::Prepare(if left > 0 {
            Prep::Defs { left, then }
        } else if deprecate_eof == Some(true) {
            if then == 0 {
                return Step::Done;
            }
            Prep::Defs {
                left: then,
                then: 0,
            }
        } else {
            Prep::Eof { then }
        });
        Step::More
    }
}

/// A column definition starts with its catalog, always `def`.
fn is_column_definition(m: &Message) -> bool {
    m.head.starts_with(b"\x03def") || (m.head.len() < 4 && m.head.first() == Some(&3))
}
