//! SQL text for `db.query.text`, `db.operation.name` and `db.collection.name`, shared by the
//! PostgreSQL and MySQL decoders.
//!
//! [`sanitize`] replaces every literal with `?` so that no value leaves the agent: quoted
//! strings (`'..'` with `''` and backslash escapes, `E'..'`, `X'..'`, `B'..'`, `N'..'`, `U&'..'`,
//! dollar quotes `$$..$$` and `$tag$..$tag$`) and numbers (`12`, `1.5`, `.5`, `1e-3`, `0x1F`,
//! `0b101`, `1_000`). Comments (`--`, `/* */`) are removed, whitespace runs collapse to one
//! space, and `IN (?, ?, ?)` (literals or `?` placeholders only) collapses to `IN (?)`.
//! Identifiers, keywords (`TRUE`, `FALSE`, `NULL` included), operators and placeholders (`$1`,
//! `?`, `:name`) stay as written. Output is at most [`MAX_TEXT`] bytes; a cut is marked with
//! `…`. An unterminated quote or comment runs to the end of the text (all of it dropped).
//!
//! The two servers read a few things differently, hence [`Dialect`]:
//! - `"..."` is a string in MySQL (replaced by `?`) and an identifier in PostgreSQL (kept).
//! - A backslash escapes the next character inside MySQL quotes; inside PostgreSQL's standard
//!   `'..'` it is an ordinary character (only `E'..'` has escapes).
//! - `#` starts a line comment in MySQL; it is an operator in PostgreSQL.
//! - PostgreSQL block comments nest.
//!
//! [`sanitize`] and [`operation_and_collection`] use the MySQL rules (a `"..."` is then always
//! dropped, which is the safe reading when the dialect is unknown); the PostgreSQL decoder calls
//! the `_in` forms with [`Dialect::Postgres`].
//!
//! [`operation_and_collection`]: the operation is the first keyword in upper case (`SELECT`,
//! `INSERT`, `BEGIN`, ...; leading `(` skipped). For `WITH` it is the main statement's keyword
//! (`SELECT`/`INSERT`/`UPDATE`/`DELETE`/`MERGE`) after the common table expressions, or `WITH`
//! when none is found. The collection is the one table a statement names plainly, quotes
//! stripped, schema qualification kept (`s.t`): `SELECT .. FROM t [alias] [WHERE ..]`,
//! `INSERT [INTO] t`, `UPDATE t [alias] SET`, `DELETE FROM t`, `CREATE [TEMP] TABLE [IF NOT
//! EXISTS] t`, `ALTER TABLE t`, `DROP TABLE t`, `TRUNCATE [TABLE] t`, `COPY t` — and none when
//! the statement names more than one (joins, `FROM a, b`, a subquery or table function in
//! `FROM`, another `FROM` anywhere as in `INSERT .. SELECT .. FROM`, `UPDATE .. FROM`,
//! `DELETE .. USING`, CTEs). `FROM` inside a function call (`EXTRACT(YEAR FROM ts)`) does not
//! count. Only the first [`MAX_TOKENS`] tokens are looked at.

/// Longest sanitized text, in bytes (the cut mark `…` included).
pub const MAX_TEXT: usize = 2048;
/// Tokens [`operation_and_collection`] looks at.
pub const MAX_TOKENS: usize = 10_000;
/// Longest collection name kept.
const MAX_COLLECTION: usize = 256;
/// Longest operation kept.
const MAX_OPERATION: usize = 32;
const CUT_MARK: &str = "…";

mod lexer;

use self::lexer::{Lexer, Tok};

/// Which server's lexical rules to read SQL text by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

/// `sql` with literals replaced by `?`, comments removed and whitespace collapsed, by MySQL's
/// lexical rules (see the module docs).
#[must_use]
pub fn sanitize(sql: &str) -> String {
    sanitize_in(sql, Dialect::Mysql)
}

/// The operation (first keyword, upper case) and the one table `sql` names plainly, by
/// MySQL's lexical rules (see the module docs).
#[must_use]
pub fn operation_and_collection(sql: &str) -> (String, Option<String>) {
    operation_and_collection_in(sql, Dialect::Mysql)
}

/// Output with the length cap.
struct Out {
    s: String,
    cut: bool,
}

impl Out {
    fn push(&mut self, space: bool, text: &str) {
        if self.cut {
            return;
        }
        if space && !self.s.is_empty() {
            self.s.push(' ');
        }
        self.s.push_str(text);
        if self.s.len() > MAX_TEXT {
            let mut end = MAX_TEXT - CUT_MARK.len();
            while !self.s.is_char_boundary(end) {
                end -= 1;
            }
            self.s.truncate(end);
            self.s.push_str(CUT_MARK);
            self.cut = true;
        }
    }
}

/// An `IN (` list being held back while it holds only `?`s.
struct InList {
    space: bool,
    items: usize,
    trailing_comma: bool,
}

impl InList {
    /// Give up collapsing: write what was held back.
    fn flush(&self, out: &mut Out) {
        out.push(self.space, "(");
        for n in 0..self.items {
            out.push(n > 0, "?");
            if n + 1 < self.items || self.trailing_comma {
                out.push(false, ",");
            }
        }
    }
}

/// [`sanitize`] by `dialect`'s rules.
#[must_use]
pub fn sanitize_in(sql: &str, dialect: Dialect) -> String {
    let mut lx = Lexer::new(sql, dialect);
    let mut out = Out {
        s: String::with_capacity(sql.len().min(MAX_TEXT) + 4),
        cut: false,
    };
    let mut prev_in = false;
    let mut list: Option<InList> = None;
    while let Some((space, tok)) = lx.next_token() {
        if out.cut {
            break;
        }
        if let Some(l) = &mut list {
            let q = tok == Tok::Literal || tok.is_punct("?");
            if q && (l.items == 0 || l.trailing_comma) {
                l.items += 1;
                l.trailing_comma = false;
                continue;
            }
            if tok.is_punct(",") && l.items > 0 && !l.trailing_comma {
                l.trailing_comma = true;
                continue;
            }
            if tok.is_punct(")") && l.items > 0 && !l.trailing_comma {
                out.push(l.space, "(?)");
                list = None;
                prev_in = false;
                continue;
            }
            l.flush(&mut out);
            list = None;
        }
        if prev_in && tok.is_punct("(") {
            list = Some(InList {
                space,
                items: 0,
                trailing_comma: false,
            });
            prev_in = false;
            continue;
        }
        prev_in = tok.is_word("in");
        out.push(space, tok.text());
    }
    if let Some(l) = list {
        l.flush(&mut out);
    }
    out.s
}

/// Keywords that end a table reference (a word after the name that is not an alias).
const CLAUSES: &[&str] = &[
    "WHERE",
    "GROUP",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "FOR",
    "HAVING",
    "WINDOW",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "FETCH",
    "RETURNING",
    "ON",
    "USING",
    "SET",
    "VALUES",
    "SELECT",
    "DEFAULT",
    "TABLESAMPLE",
    "PARTITION",
    "USE",
    "FORCE",
    "IGNORE",
    "LOCK",
    "INTO",
    "AS",
    "OVERRIDING",
    "FROM",
    "TO",
    "WITH",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "CROSS",
    "NATURAL",
    "STRAIGHT_JOIN",
    "OUTER",
    "LATERAL",
    "ONLY",
];
const JOINS: &[&str] = &[
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "CROSS",
    "NATURAL",
    "STRAIGHT_JOIN",
    "OUTER",
    "USING",
];

fn is_one_of(tok: Option<&Tok<'_>>, words: &[&str]) -> bool {
    tok.is_some_and(|t| words.iter().any(|w| t.is_word(w)))
}

/// [`operation_and_collection`] by `dialect`'s rules.
#[must_use]
pub fn operation_and_collection_in(sql: &str, dialect: Dialect) -> (String, Option<String>) {
    let mut lx = Lexer::new(sql, dialect);
    let mut toks = Vec::new();
    while toks.len() < MAX_TOKENS {
        match lx.next_token() {
            Some((_, t)) => toks.push(t),
            None => break,
        }
    }
    let mut i = 0;
    while toks.get(i).is_some_and(|t| t.is_punct("(")) {
        i += 1;
    }
    let Some(Tok::Word(first)) = toks.get(i) else {
        return (String::new(), None);
    };
    let mut op: String = first.chars().take(MAX_OPERATION).collect();
    op.make_ascii_uppercase();
    if op == "WITH" {
        let mut depth = 0usize;
        let main = (i + 1..toks.len()).find(|&j| {
            let t = toks[j];
            if t.is_punct("(") {
                depth += 1;
            } else if t.is_punct(")") {
                depth = depth.saturating_sub(1);
            }
            depth == 0 && is_one_of(Some(&t), &["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"])
        });
        return match main {
            Some(j) => (toks[j].text().to_ascii_uppercase(), None),
            None => (op, None),
        };
    }
    let collection = collection(&toks, i, &op);
    (op, collection)
}

/// Table references: `FROM`s of queries (not of `EXTRACT(.. FROM ..)`), and joins.
fn table_refs(toks: &[Tok<'_>]) -> (usize, usize) {
    let (mut froms, mut joins) = (0, 0);
    // For each open parenthesis: whether it holds a query.
    let mut groups: Vec<bool> = Vec::new();
    for (j, t) in toks.iter().enumerate() {
        if t.is_punct("(") {
            groups.push(is_one_of(toks.get(j + 1), &["SELECT", "WITH", "VALUES"]));
        } else if t.is_punct(")") {
            groups.pop();
        } else if t.is_word("FROM") && groups.last().copied().unwrap_or(true) {
            froms += 1;
        } else if is_one_of(Some(t), JOINS) {
            joins += 1;
        }
    }
    (froms, joins)
}

/// A table name at `i` (`t`, `s.t`, `"s"."t"`, up to three parts): the name and the index
/// after it.
fn name_at(toks: &[Tok<'_>], mut i: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    for part in 0..3 {
        match toks.get(i)? {
            Tok::Word(w) if part > 0 || !is_one_of(Some(&Tok::Word(w)), CLAUSES) => {
                name.push_str(w);
            }
            Tok::Ident(_, inner) if !inner.is_empty() => name.push_str(inner),
            _ => return None,
        }
        i += 1;
        if toks.get(i).is_some_and(|t| t.is_punct(".")) && part < 2 {
            name.push('.');
            i += 1;
        } else {
            break;
        }
    }
    (name.len() <= MAX_COLLECTION && !name.ends_with('.')).then_some((name, i))
}

/// Skip an alias (`AS a`, `a`) at `i`.
fn skip_alias(toks: &[Tok<'_>], mut i: usize) -> usize {
    if toks.get(i).is_some_and(|t| t.is_word("AS")) {
        i += 1;
    }
    match toks.get(i) {
        Some(Tok::Ident(..)) => i + 1,
        Some(t @ Tok::Word(_)) if !is_one_of(Some(t), CLAUSES) => i + 1,
        _ => i,
    }
}

/// Whether the table reference ending at `i` is the only one (no comma list, join, call).
fn ends_plainly(toks: &[Tok<'_>], i: usize) -> bool {
    let i = skip_alias(toks, i);
    match toks.get(i) {
        None => true,
        Some(t) => {
            !(t.is_punct(",") || t.is_punct("(") || t.is_punct(".") || is_one_of(Some(t), JOINS))
        }
    }
}

fn skip_words(toks: &[Tok<'_>], mut i: usize, words: &[&str]) -> usize {
    while is_one_of(toks.get(i), words) {
        i += 1;
    }
    i
}

fn collection(toks: &[Tok<'_>], start: usize, op: &str) -> Option<String> {
    let (froms, joins) = table_refs(&toks[start..]);
    if joins > 0 {
        return None;
    }
    let mut i = start + 1;
    match op {
        "SELECT" => {
            if froms != 1 {
                return None;
            }
            let mut depth = 0usize;
            let from = (i..toks.len()).find(|&j| {
                let t = toks[j];
                if t.is_punct("(") {
                    depth += 1;
                } else if t.is_punct(")") {
                    depth = depth.saturating_sub(1);
                }
                depth == 0 && t.is_word("FROM")
            })?;
            let (name, after) = name_at(toks, skip_words(toks, from + 1, &["ONLY"]))?;
            ends_plainly(toks, after).then_some(name)
        }
        "INSERT" | "REPLACE" => {
            if froms != 0 {
                return None;
            }
            i = skip_words(
                toks,
                i,
                &["IGNORE", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "INTO"],
            );
            name_at(toks, i).map(|(name, _)| name)
        }
        "UPDATE" => {
            if froms != 0 {
                return None;
            }
            i = skip_words(toks, i, &["LOW_PRIORITY", "IGNORE", "ONLY"]);
            let (name, after) = name_at(toks, i)?;
            let after = skip_alias(toks, after);
            toks.get(after)?.is_word("SET").then_some(name)
        }
        "DELETE" => {
            i = skip_words(toks, i, &["LOW_PRIORITY", "QUICK", "IGNORE"]);
            if froms != 1 || !toks.get(i)?.is_word("FROM") {
                return None;
            }
            let (name, after) = name_at(toks, skip_words(toks, i + 1, &["ONLY"]))?;
            ends_plainly(toks, after).then_some(name)
        }
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" => {
            if froms != 0 {
                return None;
            }
            i = skip_words(
                toks,
                i,
                &["TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL"],
            );
            if toks.get(i).is_some_and(|t| t.is_word("TABLE")) {
                i += 1;
            } else if op != "TRUNCATE" {
                return None;
            }
            i = skip_words(toks, i, &["IF", "NOT", "EXISTS", "ONLY"]);
            let (name, after) = name_at(toks, i)?;
            (!toks.get(after).is_some_and(|t| t.is_punct(","))).then_some(name)
        }
        "COPY" => {
            if froms > 1 {
                return None;
            }
            name_at(toks, i).map(|(name, _)| name)
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
