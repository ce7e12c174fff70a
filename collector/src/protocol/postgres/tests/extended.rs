//! The extended query protocol: Parse/Bind/Describe/Execute/Close/Sync batches as pgx and
//! lib/pq send them, named and unnamed statements, pipelining.

use super::*;

/// pgx's first use of a query: Parse a named statement with Describe, then Bind/Execute.
#[test]
fn extended_protocol_prepare_then_execute() {
    let mut f = Feeder::new();
    f.connect("shop");
    let text = "select name from users where id = $1";
    f.send(
        CLIENT,
        &cat(&[
            parse("stmtcache_1", text),
            describe(b'S', "stmtcache_1"),
            sync(),
        ]),
    );
    f.send(
        SERVER,
        &cat(&[
            msg(b'1', &[]),
            msg(b't', &[0, 1, 0, 0, 0, 23]),
            row_description(),
            ready(b'I'),
        ]),
    );
    for id in [b"7", b"8"] {
        f.send(
            CLIENT,
            &cat(&[
                bind("", "stmtcache_1", id),
                describe(b'P', ""),
                execute(""),
                sync(),
            ]),
        );
        f.send(
            SERVER,
            &cat(&[
                msg(b'2', &[]),
                row_description(),
                data_row(b"Alice Secret"),
                complete("SELECT 1"),
                ready(b'I'),
            ]),
        );
    }
    assert_eq!(
        summary(&f.out),
        [
            "PREPARE users | select name from users where id = $1 | \"stmtcache_1\" | ok | 1",
            "SELECT users | select name from users where id = $1 | \"stmtcache_1\" | ok | 1",
            "SELECT users | select name from users where id = $1 | \"stmtcache_1\" | ok | 1",
        ]
    );
    assert!(!format!("{:?}", f.out).contains("Alice"));
}

/// lib/pq and pgx's unnamed statements: Parse/Bind/Describe/Execute/Sync in one write.
#[test]
fn unnamed_statement_in_one_batch() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(
        CLIENT,
        &cat(&[
            parse("", "DELETE FROM sessions WHERE token = $1"),
            bind("", "", b"tok-123"),
            describe(b'P', ""),
            execute(""),
            sync(),
        ]),
    );
    f.send(
        SERVER,
        &cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            msg(b'n', &[]),
            complete("DELETE 1"),
            ready(b'I'),
        ]),
    );
    assert_eq!(
        summary(&f.out),
        ["DELETE sessions | DELETE FROM sessions WHERE token = $1 | \"\" | ok | 1"]
    );
}

/// Batches sent before any reply (pgx's SendBatch, pipeline mode) pair in order; an error in
/// the first skips to its Sync and does not shift the second.
#[test]
fn pipelined_batches_pair_in_order() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(
        CLIENT,
        &cat(&[
            parse("", "INSERT INTO a VALUES ($1)"),
            bind("", "", b"1"),
            execute(""),
            sync(),
            parse("", "UPDATE b SET x = $1"),
            bind("", "", b"2"),
            execute(""),
            sync(),
            query("SELECT 1"),
        ]),
    );
    f.send(
        SERVER,
        &cat(&[
            msg(b'1', &[]),
            msg(b'2', &[]),
            error("23503", "insert violates foreign key"),
            ready(b'I'),
            msg(b'1', &[]),
            msg(b'2', &[]),
            complete("UPDATE 4"),
            ready(b'I'),
        ]),
    );
    f.send(
        SERVER,
        &cat(&[
            row_description(),
            data_row(b"1"),
            complete("SELECT 1"),
            ready(b'I'),
        ]),
    );
    assert_eq!(
        summary(&f.out),
        [
            "INSERT a | INSERT INTO a VALUES ($1) | \"\" | 23503 | 1",
            "UPDATE b | UPDATE b SET x = $1 | \"\" | ok | 1",
            "SELECT - | SELECT ? | - | ok | 1",
        ]
    );
}

#[test]
fn several_executes_in_one_batch() {
    let mut f = Feeder::new();
    f.connect("shop");
    let mut batch = vec![parse("ins", "INSERT INTO t VALUES ($1)")];
    for v in [b"1", b"2", b"3"] {
        batch.push(bind("", "ins", v));
        batch.push(execute(""));
    }
    batch.push(sync());
    f.send(CLIENT, &cat(&batch));
    let mut reply = vec![msg(b'1', &[])];
    for _ in 0..3 {
        reply.push(msg(b'2', &[]));
        reply.push(complete("INSERT 0 1"));
    }
    reply.push(ready(b'I'));
    f.send(SERVER, &cat(&reply));
    assert_eq!(
        summary(&f.out),
        ["INSERT t | INSERT INTO t VALUES ($1) | \"ins\" | ok | 3"]
    );
}

#[test]
fn close_forgets_the_statement() {
    let mut f = Feeder::new();
    f.connect("shop");
    f.send(CLIENT, &cat(&[parse("s1", "SELECT 1"), sync()]));
    f.send(SERVER, &cat(&[msg(b'1', &[]), ready(b'I')]));
    f.send(CLIENT, &cat(&[msg(b'C', b"Ss1\0"), sync()]));
    f.send(SERVER, &cat(&[msg(b'3', &[]), ready(b'I')]));
    f.send(CLIENT, &cat(&[bind("", "s1", b""), execute(""), sync()]));
    f.send(
        SERVER,
        &cat(&[
            error("26000", "prepared statement \"s1\" does not exist"),
            ready(b'I'),
        ]),
    );
    assert_eq!(
        summary(&f.out),
        [
            "PREPARE - | SELECT ? | \"s1\" | ok | 1",
            "CLOSE - | - | - | ok | 1",
            "EXECUTE - | - | \"s1\" | 26000 | 1",
        ]
    );
}
