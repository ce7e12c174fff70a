//! Which first bytes are taken for Redis: a client's first command, or a HELLO reply.

use super::*;

#[test]
fn recognition_is_strict() {
    for yes in [
        &cmd(&[b"PING"])[..],
        &cmd(&[b"set", b"k", b"v"]),
        &cmd(&[b"JSON.GET", b"k"]),
        b"*1\r\n$4\r\nPING\r\n",
    ] {
        assert!(looks_like_redis(yes, true), "{yes:?}");
    }
    for no in [
        &b"PING\r\n"[..],
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"*0\r\n",
        b"*1\r\n$4\r\nPI",
        b"*1\r\n$4\r\n\x00\x01\x02\x03\r\n",
        b"*1\r\n$4\r\n1234\r\n",
        b"*12345678\r\n$4\r\nPING\r\n",
        b"*1\r\n$100\r\nPING\r\n",
        b"*1\n$4\nPING\n",
        b"",
    ] {
        assert!(!looks_like_redis(no, true), "{no:?}");
    }
    let hello = &session()[0].1;
    assert!(looks_like_redis(hello, false));
    assert!(looks_like_redis(
        b"*14\r\n$6\r\nserver\r\n$6\r\nvalkey\r\n$7\r\nversion\r\n",
        false
    ));
    for no in [
        &b"+OK\r\n"[..],
        b"-ERR unknown command\r\n",
        b"+OK POP3 server ready\r\n",
        b"$5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"%7\r\n$6\r\nserver\r\n$5\r\nother\r\n",
    ] {
        assert!(!looks_like_redis(no, false), "{no:?}");
    }
}
