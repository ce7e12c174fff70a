use super::*;

#[test]
fn sanitize_cases() {
    let cases: &[(&str, &str)] = &[
        ("SELECT 1", "SELECT ?"),
        (
            "SELECT * FROM users WHERE id = 42 AND name = 'bob'",
            "SELECT * FROM users WHERE id = ? AND name = ?",
        ),
        ("SELECT 'it''s', 'a\\'b'", "SELECT ?, ?"),
        (
            "select  a,\n\tb  from t -- trailing comment\n where x=1.5e-3",
            "select a, b from t where x=?",
        ),
        ("SELECT /* hidden 'x' */ a FROM t", "SELECT a FROM t"),
        ("SELECT a/*c*/FROM t", "SELECT a FROM t"),
        ("SELECT 0x1F, 0b101, .5, 1_000, 3.", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT -5", "SELECT -?"),
        (
            "SELECT * FROM t WHERE id IN (1, 2, 3)",
            "SELECT * FROM t WHERE id IN (?)",
        ),
        (
            "SELECT * FROM t WHERE id IN ('a','b')",
            "SELECT * FROM t WHERE id IN (?)",
        ),
        (
            "SELECT * FROM t WHERE id IN (?, ?, ?)",
            "SELECT * FROM t WHERE id IN (?)",
        ),
        (
            "SELECT * FROM t WHERE id IN ($1, $2)",
            "SELECT * FROM t WHERE id IN ($1, $2)",
        ),
        (
            "SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))",
            "SELECT * FROM t WHERE (a, b) IN ((?, ?), (?, ?))",
        ),
        (
            "SELECT * FROM t WHERE id IN (1, x)",
            "SELECT * FROM t WHERE id IN (?, x)",
        ),
        (
            "SELECT * FROM t WHERE id IN (1,",
            "SELECT * FROM t WHERE id IN (?,",
        ),
        (
            "SELECT * FROM t WHERE a = ? AND b = ?",
            "SELECT * FROM t WHERE a = ? AND b = ?",
        ),
        ("SELECT TRUE, FALSE, NULL", "SELECT TRUE, FALSE, NULL"),
        ("SELECT x'FF', X'00', b'01', N'name'", "SELECT ?, ?, ?, ?"),
        (
            "SELECT \"secret\" FROM `my table`",
            "SELECT ? FROM `my table`",
        ),
        ("SELECT 'unterminated secret", "SELECT ?"),
        ("SELECT a /* unterminated 'x'", "SELECT a"),
        ("SELECT a # mysql comment 'x'\nFROM t", "SELECT a FROM t"),
        // Injection-looking text stays inside its literal.
        (
            "SELECT * FROM users WHERE name = '' OR '1'='1' -- ' AND pw = 'x'",
            "SELECT * FROM users WHERE name = ? OR ?=?",
        ),
        (
            "SELECT * FROM t WHERE a = 'x''; DROP TABLE users; --'",
            "SELECT * FROM t WHERE a = ?",
        ),
        (
            "INSERT INTO t VALUES ('x'); DELETE FROM t WHERE 1=1",
            "INSERT INTO t VALUES (?); DELETE FROM t WHERE ?=?",
        ),
        // Unicode identifiers are kept whole; literals with unicode are dropped.
        (
            "SELECT prénom FROM clients WHERE ville = 'Zürich'",
            "SELECT prénom FROM clients WHERE ville = ?",
        ),
        ("SELECT '日本語' , 名前 FROM 表", "SELECT ? , 名前 FROM 表"),
        ("SELECT 12abc", "SELECT ?"),
        ("  ;  ", ";"),
        ("", ""),
    ];
    for (sql, want) in cases {
        assert_eq!(sanitize(sql), *want, "sanitize({sql:?})");
    }
}

#[test]
fn sanitize_postgres_cases() {
    let cases: &[(&str, &str)] = &[
        (
            "SELECT \"users\".\"id\" FROM \"users\" WHERE \"name\" = 'x'",
            "SELECT \"users\".\"id\" FROM \"users\" WHERE \"name\" = ?",
        ),
        ("SELECT 'C:\\', 2", "SELECT ?, ?"),
        ("SELECT E'a\\'b', 'c'", "SELECT ?, ?"),
        ("SELECT $$ it's $$, $fn$ body $x$ $fn$, 1", "SELECT ?, ?, ?"),
        ("SELECT $tag$ never closed", "SELECT ?"),
        (
            "SELECT * FROM t WHERE a = $1 AND b = $12",
            "SELECT * FROM t WHERE a = $1 AND b = $12",
        ),
        (
            "SELECT a::int, b #> '{x}' FROM t",
            "SELECT a::int, b #> ? FROM t",
        ),
        ("SELECT /* a /* nested */ secret */ 1", "SELECT ?"),
        ("SELECT U&'d\\0061t', u&'x'", "SELECT ?, ?"),
        ("SELECT a$b, $", "SELECT a$b, $"),
    ];
    for (sql, want) in cases {
        assert_eq!(
            sanitize_in(sql, Dialect::Postgres),
            *want,
            "sanitize_in({sql:?})"
        );
    }
}

#[test]
fn sanitize_is_bounded_and_marks_the_cut() {
    let long = format!("SELECT {} FROM t", "a, ".repeat(2000));
    let out = sanitize(&long);
    assert!(out.len() <= MAX_TEXT, "{}", out.len());
    assert!(out.ends_with(CUT_MARK));
    // Cut inside multibyte characters: still a valid string, still bounded.
    let wide = format!("SELECT {}", "é".repeat(5000));
    let out = sanitize(&wide);
    assert!(out.len() <= MAX_TEXT && out.ends_with(CUT_MARK));
    // A huge IN list collapses before the cap.
    let list = format!(
        "SELECT * FROM t WHERE id IN ({})",
        vec!["7"; 5000].join(", ")
    );
    assert_eq!(sanitize(&list), "SELECT * FROM t WHERE id IN (?)");
    // Short text is not marked.
    assert!(!sanitize("SELECT 1").contains(CUT_MARK));
}

#[test]
fn sanitize_never_panics_on_odd_input() {
    let odd = [
        "'",
        "\"",
        "`",
        "$",
        "$$",
        "$a",
        "$a$",
        "E'",
        "E'\\",
        "'\\",
        "/*",
        "/*/",
        "*/",
        "--",
        "#",
        "0x",
        "0b",
        ".",
        "1e",
        "1e+",
        "U&",
        "U&'",
        "IN (",
        "IN ((",
        "in(?,",
        "é'",
        "'é",
        "$é$x$é$",
    ];
    for s in odd {
        for d in [Dialect::Mysql, Dialect::Postgres] {
            let out = sanitize_in(s, d);
            assert!(out.len() <= MAX_TEXT);
            let _ = operation_and_collection_in(s, d);
        }
    }
    // Every prefix of a tricky statement, cut at each char boundary.
    let sql = "WITH x AS (SELECT 'a''b', E'\\'', $q$é$q$ FROM \"s\".\"t\") SELECT * FROM x WHERE y IN (1,2) -- z";
    for (i, _) in sql.char_indices() {
        for d in [Dialect::Mysql, Dialect::Postgres] {
            let _ = sanitize_in(&sql[..i], d);
            let _ = operation_and_collection_in(&sql[..i], d);
        }
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "a table of cases")]
fn operations_and_collections() {
    let some = |s: &str| Some(s.to_owned());
    let cases: &[(&str, &str, Option<String>)] = &[
        ("SELECT * FROM users WHERE id = 1", "SELECT", some("users")),
        (
            "select id from public.users u where u.id = $1",
            "SELECT",
            some("public.users"),
        ),
        (
            "SELECT * FROM `Order Items` AS oi LIMIT 1",
            "SELECT",
            some("Order Items"),
        ),
        ("SELECT * FROM `db`.`t`", "SELECT", some("db.t")),
        (
            "SELECT EXTRACT(YEAR FROM ts) FROM events",
            "SELECT",
            some("events"),
        ),
        ("SELECT * FROM a JOIN b ON a.id = b.id", "SELECT", None),
        ("SELECT * FROM a, b", "SELECT", None),
        (
            "SELECT * FROM a LEFT OUTER JOIN b USING (id)",
            "SELECT",
            None,
        ),
        ("SELECT * FROM (SELECT * FROM t) s", "SELECT", None),
        (
            "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
            "SELECT",
            None,
        ),
        ("SELECT * FROM generate_series(1, 10)", "SELECT", None),
        ("SELECT a FROM t UNION SELECT a FROM u", "SELECT", None),
        ("SELECT 1", "SELECT", None),
        ("(SELECT a FROM t)", "SELECT", some("t")),
        (
            "INSERT INTO orders (id, total) VALUES (1, 2.5)",
            "INSERT",
            some("orders"),
        ),
        (
            "insert ignore into s.orders values (1)",
            "INSERT",
            some("s.orders"),
        ),
        ("INSERT orders SET a = 1", "INSERT", some("orders")),
        ("INSERT INTO t SELECT * FROM u", "INSERT", None),
        ("REPLACE INTO t VALUES (1)", "REPLACE", some("t")),
        (
            "UPDATE accounts SET balance = 0 WHERE id = 7",
            "UPDATE",
            some("accounts"),
        ),
        (
            "UPDATE ONLY accounts a SET x = 1",
            "UPDATE",
            some("accounts"),
        ),
        ("UPDATE a, b SET a.x = b.x", "UPDATE", None),
        (
            "UPDATE a SET x = b.x FROM b WHERE a.id = b.id",
            "UPDATE",
            None,
        ),
        ("UPDATE a JOIN b ON a.id = b.id SET a.x = 1", "UPDATE", None),
        (
            "DELETE FROM sessions WHERE expires < now()",
            "DELETE",
            some("sessions"),
        ),
        ("DELETE FROM a USING b WHERE a.id = b.id", "DELETE", None),
        ("DELETE a FROM a JOIN b ON a.id = b.id", "DELETE", None),
        (
            "CREATE TABLE IF NOT EXISTS s.t (id int)",
            "CREATE",
            some("s.t"),
        ),
        ("CREATE TEMP TABLE t AS SELECT * FROM u", "CREATE", None),
        ("CREATE INDEX i ON t (a)", "CREATE", None),
        ("DROP TABLE a, b", "DROP", None),
        ("TRUNCATE t", "TRUNCATE", some("t")),
        ("COPY t (a, b) FROM STDIN", "COPY", some("t")),
        ("COPY (SELECT * FROM t) TO STDOUT", "COPY", None),
        ("begin", "BEGIN", None),
        ("COMMIT", "COMMIT", None),
        ("SET search_path = x", "SET", None),
        (
            "WITH x AS (SELECT * FROM t) SELECT * FROM x",
            "SELECT",
            None,
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) DELETE FROM t",
            "DELETE",
            None,
        ),
        ("WITH x AS (SELECT 1)", "WITH", None),
        ("/* hint */ -- c\n SELECT * FROM t", "SELECT", some("t")),
        (
            "SELECT * FROM t WHERE name = 'x FROM y JOIN z'",
            "SELECT",
            some("t"),
        ),
        ("SELECT * FROM t; DROP TABLE users", "SELECT", some("t")),
        ("SELECT * FROM 表 WHERE a = 'é'", "SELECT", some("表")),
        ("SELECT * FROM 'oops", "SELECT", None),
        ("SELECT * FROM \"unterminated", "SELECT", None),
        ("'just a string'", "", None),
        ("", "", None),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(sql, op, coll)| {
            let got = operation_and_collection(sql);
            (got != ((*op).to_owned(), coll.clone())).then(|| format!("{sql:?} -> {got:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        operation_and_collection_in("SELECT * FROM \"Users\" WHERE a = \"b\"", Dialect::Postgres),
        ("SELECT".to_owned(), some("Users"))
    );
}
