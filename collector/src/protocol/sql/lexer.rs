//! The SQL lexer: tokens with literals' contents dropped, by a dialect's rules.

use super::Dialect;

/// A lexical token. Literal contents are never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    /// A keyword or unquoted identifier.
    Word(&'a str),
    /// A quoted identifier: the whole text with quotes, and what is inside them.
    Ident(&'a str, &'a str),
    /// A string or number.
    Literal,
    /// `$1`.
    Param(&'a str),
    /// One punctuation or operator byte (ASCII).
    Punct(&'a str),
}

impl<'a> Tok<'a> {
    pub(super) fn text(self) -> &'a str {
        match self {
            Tok::Word(s) | Tok::Ident(s, _) | Tok::Param(s) | Tok::Punct(s) => s,
            Tok::Literal => "?",
        }
    }

    pub(super) fn is_word(self, w: &str) -> bool {
        matches!(self, Tok::Word(s) if s.eq_ignore_ascii_case(w))
    }

    pub(super) fn is_punct(self, p: &str) -> bool {
        self == Tok::Punct(p)
    }
}

/// Identifier bytes: ASCII letters, digits, `_`, `$`, and every byte of a non-ASCII character
/// (so words always end on a character boundary).
fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

pub(super) struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    dialect: Dialect,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(s: &'a str, dialect: Dialect) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
            dialect,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// Skip whitespace and comments; true when any was skipped.
    fn skip_space(&mut self) -> bool {
        let start = self.i;
        loop {
            let c = self.at(self.i);
            if self.i >= self.b.len() {
                break;
            }
            if c.is_ascii_whitespace() {
                self.i += 1;
            } else if (c == b'-' && self.at(self.i + 1) == b'-')
                || (c == b'#' && self.dialect == Dialect::Mysql)
            {
                while self.i < self.b.len() && self.b[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if c == b'/' && self.at(self.i + 1) == b'*' {
                self.skip_block_comment();
            } else {
                break;
            }
        }
        self.i > start
    }

    fn skip_block_comment(&mut self) {
        let nests = self.dialect == Dialect::Postgres;
        let mut depth = 0usize;
        while self.i < self.b.len() {
            if self.at(self.i) == b'/' && self.at(self.i + 1) == b'*' {
                if depth == 0 || nests {
                    depth += 1;
                }
                self.i += 2;
            } else if self.at(self.i) == b'*' && self.at(self.i + 1) == b'/' {
                self.i += 2;
                depth -= 1;
                if depth == 0 {
                    return;
                }
            } else {
                self.i += 1;
            }
        }
    }

    /// Skip a quoted run starting at the opening quote `q` (doubled quotes escape it; a
    /// backslash escapes the next byte when `backslash`). Unterminated: to the end.
    fn skip_quoted(&mut self, q: u8, backslash: bool) {
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if backslash && c == b'\\' {
                self.i += 2;
            } else if c == q {
                if self.at(self.i + 1) == q {
                    self.i += 2;
                } else {
                    self.i += 1;
                    return;
                }
            } else {
                self.i += 1;
            }
        }
        self.i = self.b.len();
    }

    fn skip_number(&mut self) {
        let b = self.b;
        let mut i = self.i;
        let radix_digit = |c: u8, x: u8| match x {
            b'x' | b'X' => c.is_ascii_hexdigit(),
            b'b' | b'B' => c == b'0' || c == b'1',
            _ => c.is_ascii_digit(),
        };
        let x = self.at(i + 1);
        if self.at(i) == b'0' && matches!(x, b'x' | b'X' | b'b' | b'B' | b'o' | b'O') {
            i += 2;
            while i < b.len() && (radix_digit(b[i], x) || b[i] == b'_') {
                i += 1;
            }
        } else {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
            if self.at(i) == b'.' {
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                    i += 1;
                }
            }
            if matches!(self.at(i), b'e' | b'E') {
                let mut j = i + 1;
                if matches!(self.at(j), b'+' | b'-') {
                    j += 1;
                }
                if self.at(j).is_ascii_digit() {
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
        }
        // `123abc` (a MySQL identifier, or junk): all of it is dropped, never half kept.
        while i < b.len() && word_byte(b[i]) {
            i += 1;
        }
        self.i = i;
    }

    /// At a `$`: a dollar-quoted literal (skipped, true) or not (false, nothing consumed).
    fn skip_dollar_quote(&mut self) -> bool {
        let mut j = self.i + 1;
        if j < self.b.len() && self.b[j] != b'$' {
            if !word_start(self.b[j]) {
                return false;
            }
            while j < self.b.len() && word_byte(self.b[j]) && self.b[j] != b'$' {
                j += 1;
            }
        }
        if self.at(j) != b'$' {
            return false;
        }
        let tag = &self.s[self.i..=j];
        self.i = match self.s[j + 1..].find(tag) {
            Some(k) => j + 1 + k + tag.len(),
            None => self.b.len(),
        };
        true
    }

    /// The next token and whether whitespace or a comment came before it.
    pub(super) fn next_token(&mut self) -> Option<(bool, Tok<'a>)> {
        let space = self.skip_space();
        let start = self.i;
        let c = *self.b.get(start)?;
        let mysql = self.dialect == Dialect::Mysql;
        let tok = if c == b'\'' {
            self.skip_quoted(b'\'', mysql);
            Tok::Literal
        } else if c == b'"' {
            self.skip_quoted(b'"', mysql);
            if mysql {
                Tok::Literal
            } else {
                self.ident(start)
            }
        } else if c == b'`' {
            self.skip_quoted(b'`', false);
            self.ident(start)
        } else if c.is_ascii_digit()
            || (c == b'.'
                && self.at(start + 1).is_ascii_digit()
                && !(start > 0 && word_byte(self.b[start - 1])))
        {
            self.skip_number();
            Tok::Literal
        } else if c == b'$' && self.at(start + 1).is_ascii_digit() {
            self.i += 1;
            while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
                self.i += 1;
            }
            Tok::Param(&self.s[start..self.i])
        } else if c == b'$' && self.skip_dollar_quote() {
            Tok::Literal
        } else if word_start(c) {
            while self.i < self.b.len() && word_byte(self.b[self.i]) {
                self.i += 1;
            }
            let word = &self.s[start..self.i];
            let next = self.at(self.i);
            if next == b'\'' && matches!(word, "e" | "E" | "x" | "X" | "b" | "B" | "n" | "N") {
                // A prefixed string: E'..' has backslash escapes in both dialects.
                self.skip_quoted(b'\'', mysql || word.eq_ignore_ascii_case("e"));
                Tok::Literal
            } else if next == b'&' && self.at(self.i + 1) == b'\'' && word.eq_ignore_ascii_case("u")
            {
                self.i += 1;
                self.skip_quoted(b'\'', mysql);
                Tok::Literal
            } else {
                Tok::Word(word)
            }
        } else {
            self.i += 1;
            Tok::Punct(&self.s[start..self.i])
        };
        Some((space, tok))
    }

    fn ident(&self, start: usize) -> Tok<'a> {
        let whole = &self.s[start..self.i];
        let closed = whole.len() >= 2 && whole.as_bytes()[whole.len() - 1] == whole.as_bytes()[0];
        let inner = if closed {
            &whole[1..whole.len() - 1]
        } else {
            &whole[1..]
        };
        Tok::Ident(whole, inner)
    }
}
