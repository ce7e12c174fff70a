//! Pub/sub: published messages and extra confirmations are counted, never paired; commands
//! around them still pair in order. Bytes from redis-server 7.0.15.

use super::*;

#[test]
fn resp3_pushes_are_not_replies() {
    let mut f = Feeder::from_start();
    f.client(&cmd(&[b"SUBSCRIBE", b"a", b"b"]))
        .server(b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
        .server(b">3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
        .client(&cmd(&[b"PING"]))
        // A message published meanwhile comes before PING's reply.
        .server(b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n+PONG\r\n")
        .client(&cmd(&[b"GET", b"k"]))
        .server(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\nv\r\n")
        .client(&cmd(&[b"UNSUBSCRIBE"]))
        .server(b">3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n>3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n")
        .client(&cmd(&[b"RESET"]))
        .server(b"+RESET\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [
            row("SUBSCRIBE", "SUBSCRIBE ? ?", "", "0"),
            row("PING", "PING", "", "0"),
            row("GET", "GET ?", "", "0"),
            row("UNSUBSCRIBE", "UNSUBSCRIBE", "", "0"),
            row("RESET", "RESET", "", "0"),
        ]
    );
    // The first confirmation ends SUBSCRIBE's exchange.
    assert_eq!(out[0].response_bytes, 30);
    assert_eq!(out[1].response_bytes, 7);
    assert_eq!(out[2].response_bytes, 7);
    // message, invalidate, a second confirmation each way.
    assert_eq!(f.conn.stats.pushes, 4);
    assert_eq!(f.conn.stats.unmatched_replies, 0);
}

#[test]
fn resp2_pubsub_mode_tells_messages_from_replies() {
    let mut f = Feeder::from_start();
    f.client(&cmd(&[b"SELECT", b"1"]))
        .server(b"+OK\r\n")
        .client(&cmd(&[b"SUBSCRIBE", b"a", b"b"]))
        .server(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
        .server(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n")
        .client(&cmd(&[b"PSUBSCRIBE", b"n*"]))
        .server(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$2\r\nnx\r\n$1\r\n1\r\n*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n")
        .client(&cmd(&[b"PING"]))
        .server(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        .client(&cmd(&[b"UNSUBSCRIBE", b"a", b"b"]))
        .server(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n")
        .client(&cmd(&[b"PUNSUBSCRIBE"]))
        .server(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n")
        // Out of pub/sub mode: an array starting with "message" is an ordinary reply.
        .client(&cmd(&[b"LRANGE", b"l", b"0", b"-1"]))
        .server(b"*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$1\r\ny\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [
            row("SELECT", "SELECT ?", "", "1"),
            row("SUBSCRIBE", "SUBSCRIBE ? ?", "", "1"),
            row("PSUBSCRIBE", "PSUBSCRIBE ?", "", "1"),
            row("PING", "PING", "", "1"),
            row("UNSUBSCRIBE", "UNSUBSCRIBE ? ?", "", "1"),
            row("PUNSUBSCRIBE", "PUNSUBSCRIBE", "", "1"),
            row("LRANGE", "LRANGE ? ? ?", "", "1"),
        ]
    );
    assert_eq!(out[3].response_bytes, 20);
    // subscribe b, two messages, a pmessage, unsubscribe a.
    assert_eq!(f.conn.stats.pushes, 5);
    assert_eq!(f.conn.stats.unmatched_replies, 0);
}

#[test]
fn a_subscription_refused_pairs_its_error() {
    let mut f = Feeder::from_start();
    f.client(&cmd(&[b"SUBSCRIBE", b"a"]))
        .server(b"-NOPERM this user has no permissions to access the channel\r\n")
        .client(&cmd(&[b"GET", b"k"]))
        .server(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n");
    let out = f.close();
    assert_eq!(
        summary(&out),
        [
            row("SUBSCRIBE", "SUBSCRIBE ?", "NOPERM", "0"),
            row("GET", "GET ?", "", "0"),
        ]
    );
    assert_eq!(f.conn.stats.pushes, 0);
}
