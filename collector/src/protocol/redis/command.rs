//! What a Redis command is called and how it reads in `db.query.text`, the recognition rule
//! for a connection's first bytes, and the pub/sub words that change how replies pair.

/// Longest command name (or subcommand) taken for one; longer names are not commands.
pub(super) const MAX_NAME: usize = 32;
/// Placeholders written in `db.query.text` before the rest are elided (`MSET ? ? ... ?`).
const MAX_PLACEHOLDERS: u64 = 64;

/// Commands whose first argument is a subcommand (`CLIENT SETNAME`, `CONFIG GET`): a fixed word
/// of the command's syntax, not a value, so `db.query.text` keeps it.
const CONTAINERS: [&str; 16] = [
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// Whether bytes can be a command name: a letter, then letters, digits, `.` (module commands
/// such as `JSON.GET`), `_` or `-`, at most `MAX_NAME` of them.
pub(super) fn plausible_name(name: &[u8]) -> bool {
    matches!(name.first(), Some(b) if b.is_ascii_alphabetic())
        && name.len() <= MAX_NAME
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The pub/sub replies that confirm a (un)subscription, one per channel or pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Confirm {
    Subscribe,
    Psubscribe,
    Ssubscribe,
    Unsubscribe,
    Punsubscribe,
    Sunsubscribe,
}

impl Confirm {
    const ALL: [(Self, &'static str); 6] = [
        (Self::Subscribe, "subscribe"),
        (Self::Psubscribe, "psubscribe"),
        (Self::Ssubscribe, "ssubscribe"),
        (Self::Unsubscribe, "unsubscribe"),
        (Self::Punsubscribe, "punsubscribe"),
        (Self::Sunsubscribe, "sunsubscribe"),
    ];

    /// The confirmation a command (upper case) is answered with.
    pub(super) fn of_command(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, word)| word.eq_ignore_ascii_case(name))
            .map(|(c, _)| *c)
    }

    /// The confirmation a pub/sub reply's first element names.
    pub(super) fn of_reply(first: &[u8]) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, word)| word.as_bytes().eq_ignore_ascii_case(first))
            .map(|(c, _)| *c)
    }
}

/// Whether a pub/sub reply's first element says it is a published message (not an answer).
pub(super) fn is_message(first: &[u8]) -> bool {
    [&b"message"[..], b"pmessage", b"smessage"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(first))
}

/// What the pairing needs to know about a command beyond its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Plain,
    /// `SELECT n`: the connection's database becomes n when the reply is `+OK`.
    Select(u32),
    /// `RESET`: database 0, out of pub/sub mode, when the reply is `+RESET`.
    Reset,
    /// A (un)subscription with this many channels or patterns: answered by confirmations.
    Pubsub(Confirm, u64),
}

/// A complete command as the request stream carried it; `name` and `first_arg` are the
/// captured bytes (at most `MAX_NAME`), `None` when not captured whole.
#[derive(Debug, Clone, Default)]
pub(super) struct Words {
    pub name: Option<Vec<u8>>,
    pub first_arg: Option<Vec<u8>>,
    /// Words in the command, the name included.
    pub count: u64,
}

impl Words {
    /// The operation (upper case, empty when the name is unknown or not a name), the query text
    /// (`SET ? ?`, `CLIENT SETNAME ?`), and the kind.
    pub(super) fn describe(&self) -> (String, Option<String>, Kind) {
        let Some(name) = self.name.as_deref().filter(|n| plausible_name(n)) else {
            return (String::new(), None, Kind::Plain);
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let args = self.count.saturating_sub(1);
        let mut text = name.clone();
        let mut placeholders = args;
        if CONTAINERS.contains(&name.as_str())
            && let Some(sub) = self.first_arg.as_deref().filter(|s| plausible_name(s))
        {
            text.push(' ');
            text.push_str(&String::from_utf8_lossy(sub).to_ascii_uppercase());
            placeholders -= 1;
        }
        for _ in 0..placeholders.min(MAX_PLACEHOLDERS) {
            text.push_str(" ?");
        }
        if placeholders > MAX_PLACEHOLDERS {
            text.push_str(" ...");
        }
        let kind = match name.as_str() {
            "SELECT" if args == 1 => self
                .first_arg
                .as_deref()
                .filter(|a| !a.is_empty() && a.iter().all(u8::is_ascii_digit))
                .and_then(|a| std::str::from_utf8(a).ok()?.parse().ok())
                .map_or(Kind::Plain, Kind::Select),
            "RESET" => Kind::Reset,
            _ => Confirm::of_command(&name).map_or(Kind::Plain, |c| Kind::Pubsub(c, args)),
        };
        (name, Some(text), kind)
    }
}

/// Whether a connection's first captured bytes are Redis (RESP).
///
/// Client bytes: a RESP array of bulk strings whose first bulk is a whole command name, i.e.
/// `*<n>\r\n$<m>\r\n<name>\r\n` with n of 1 to 7 digits and not zero, m of 1 or 2 digits, and the
/// name `m` bytes passing `plausible_name`. Every client library sends commands this way; HTTP
/// starts with a letter, TLS with 0x16, and random bytes match with odds far below 2^-60. The
/// inline form (`PING\r\n`) is not recognised: it is the shape of many text protocols' commands.
///
/// Server bytes: only the reply to `HELLO` (`%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n...`, or a RESP2
/// array, or `valkey`), which names the server. Any other reply is ambiguous: `+OK\r\n` and
/// `-ERR ...` are also POP3's words, `:1\r\n` or `$5\r\n...` could be anything's. A capture that
/// joins mid-connection therefore waits for the client's next command; nothing is lost by
/// that, since a reply whose command was not seen cannot be paired anyway.
#[must_use]
pub fn looks_like_redis(data: &[u8], direction_is_request: bool) -> bool {
    if direction_is_request {
        return command_start(data);
    }
    let Some(rest) = data.strip_prefix(b"%").or_else(|| data.strip_prefix(b"*")) else {
        return false;
    };
    let Some((count, rest)) = number_line(rest, 2) else {
        return false;
    };
    count > 0
        && rest.starts_with(b"$6\r\nserver\r\n")
        && [&b"$5\r\nredis\r\n"[..], b"$6\r\nvalkey\r\n"]
            .iter()
            .any(|w| rest[12..].starts_with(w))
}

/// `*<n>\r\n$<m>\r\n<name>\r\n` as `looks_like_redis` describes for client bytes.
pub(super) fn command_start(data: &[u8]) -> bool {
    let Some(rest) = data.strip_prefix(b"*") else {
        return false;
    };
    let Some((count, rest)) = number_line(rest, 7) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b"$") else {
        return false;
    };
    let Some((len, rest)) = number_line(rest, 2) else {
        return false;
    };
    let len = len as usize;
    count > 0
        && rest.len() >= len + 2
        && plausible_name(&rest[..len])
        && &rest[len..len + 2] == b"\r\n"
}

/// Up to `max_digits` decimal digits then CRLF: the number and the bytes after.
fn number_line(data: &[u8], max_digits: usize) -> Option<(u64, &[u8])> {
    let digits = data.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > max_digits {
        return None;
    }
    let rest = data[digits..].strip_prefix(b"\r\n")?;
    let n = std::str::from_utf8(&data[..digits]).ok()?.parse().ok()?;
    Some((n, rest))
}
