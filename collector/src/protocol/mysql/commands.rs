//! Client commands: each message with sequence id 0 starts one; it becomes a `Pending` that
//! waits for its response (or nothing, for the commands that get none).

use super::{
    MysqlConn, Phase, Statement,
    framing::Message,
    packets::{self, com, u32_at},
    pending,
    response::{OnOk, Prep, Resp, Stage},
};
use crate::protocol::{
    db::{Db, DbSystem},
    exchange::Exchange,
    sql,
};

/// The operation name of a command that carries no SQL, and whether its response is one packet.
fn command_name(cmd: u8) -> Option<(&'static str, bool)> {
    Some(match cmd {
        com::INIT_DB => ("INIT_DB", true),
        com::PING => ("PING", true),
        com::STMT_RESET => ("STMT_RESET", true),
        com::RESET_CONNECTION => ("RESET_CONNECTION", true),
        com::SET_OPTION => ("SET_OPTION", true),
        com::STATISTICS => ("STATISTICS", true),
        0x07 => ("REFRESH", true),
        0x08 => ("SHUTDOWN", true),
        0x0c => ("PROCESS_KILL", true),
        0x0d => ("DEBUG", true),
        com::STMT_FETCH => ("STMT_FETCH", false),
        com::FIELD_LIST => ("FIELD_LIST", false),
        com::CHANGE_USER => ("CHANGE_USER", false),
        _ => return None,
    })
}

/// The schema a `USE name` statement names.
fn use_schema(text: &str) -> Option<String> {
    let t = text.trim_start();
    let rest = &t[t.get(..3).filter(|k| k.eq_ignore_ascii_case("use"))?.len()..];
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let name = rest
        .trim()
        .trim_end_matches(';')
        .trim_end()
        .trim_matches('`');
    packets::schema_name(name.as_bytes())
}

impl MysqlConn {
    pub(super) fn on_command(&mut self, m: &Message, out: &mut Vec<Exchange>) {
        if m.first_seq != 0 {
            // Part of the command in flight: LOCAL INFILE contents, an auth-switch answer.
            if let Some(p) = self.pending.front_mut() {
                p.request_bytes += m.wire;
                p.next_seq = m.last_seq.wrapping_add(1);
            }
            return;
        }
        if self.server.is_lost() && !self.server.resuming() {
            // The responses in flight were not framed: they ended before this command.
            while let Some(p) = self.pending.pop_front() {
                self.emit(p, true, m.start_ns, out);
            }
            self.server.resume();
        } else {
            let deprecate_eof = self.deprecate_eof();
            if let Some(p) = self
                .pending
                .pop_front_if(|p| p.ends_at_next_command(deprecate_eof))
            {
                self.emit(p, true, m.start_ns, out);
            }
        }
        let Some(&cmd) = m.head.first() else {
            return;
        };
        let mut db = Db::new(DbSystem::Mysql, "");
        db.namespace.clone_from(&self.namespace);
        let p = match cmd {
            com::QUERY => {
                let text = packets::query_text(&m.head).map(String::from_utf8_lossy);
                let mut on_ok = OnOk::Nothing;
                if let Some(text) = &text {
                    let (operation, collection) = sql::operation_and_collection(text);
                    db.operation = operation;
                    db.collection = collection;
                    db.query_text = Some(sql::sanitize(text));
                    if let Some(schema) = use_schema(text) {
                        on_ok = OnOk::Namespace(Some(schema));
                    }
                }
                let mut p = pending(db, Resp::Result(Stage::First), m);
                p.truncated = text.is_none() || !m.whole();
                p.on_ok = on_ok;
                p
            }
            com::STMT_PREPARE => {
                let raw = String::from_utf8_lossy(m.head.get(1..).unwrap_or_default());
                let (operation, collection) = sql::operation_and_collection(&raw);
                let statement = Statement {
                    operation,
                    collection: collection.clone(),
                    text: sql::sanitize(&raw),
                    truncated: !m.whole(),
                };
                "PREPARE".clone_into(&mut db.operation);
                db.collection = collection;
                db.query_text = Some(statement.text.clone());
                let mut p = pending(db, Resp::Prepare(Prep::First), m);
                p.truncated = statement.truncated;
                p.on_ok = OnOk::Prepare(statement.clone());
                self.last_prepared = Some(statement);
                p
            }
            com::STMT_EXECUTE => self.execute(db, m),
            com::STMT_CLOSE => {
                if let Some(id) = u32_at(&m.head, 1) {
                    self.statements.remove(id);
                }
                return;
            }
            com::STMT_SEND_LONG_DATA | com::QUIT => return,
            com::BINLOG_DUMP | com::BINLOG_DUMP_GTID => {
                // A replication stream: events until the connection closes.
                self.stats.opaque += 1;
                self.phase = Phase::Opaque;
                return;
            }
            _ => self.other(db, cmd, m),
        };
        self.push_pending(p);
    }

    fn execute(&mut self, mut db: Db, m: &Message) -> super::Pending {
        let id = u32_at(&m.head, 1);
        // MariaDB's id 0xffffffff: the statement prepared last (sent in the same batch).
        let known = match id {
            Some(u32::MAX) => self.last_prepared.clone(),
            Some(id) => self.statements.map.get(&id).cloned(),
            None => None,
        };
        let mut truncated = false;
        let unknown = known.is_none();
        if let Some(s) = known {
            db.operation = s.operation;
            db.collection = s.collection;
            db.query_text = Some(s.text);
            truncated = s.truncated;
        } else {
            self.stats.unknown_statements += 1;
            "EXECUTE".clone_into(&mut db.operation);
        }
        db.statement = id.map(|id| id.to_string());
        let mut p = pending(db, Resp::Result(Stage::First), m);
        p.truncated = truncated || id.is_none();
        p.headers_unknown = unknown;
        p
    }

    /// The commands that carry no SQL: named, with a response of one packet, of
    /// authentication (COM_CHANGE_USER), or of rows; an unknown command's response is followed
    /// until the next command.
    fn other(&mut self, mut db: Db, cmd: u8, m: &Message) -> super::Pending {
        let Some((name, single)) = command_name(cmd) else {
            return pending(db, Resp::UntilNext, m);
        };
        name.clone_into(&mut db.operation);
        let (resp, on_ok) = match cmd {
            com::INIT_DB => {
                let schema = m
                    .whole()
                    .then(|| packets::schema_name(&m.head[1..]))
                    .flatten();
                if schema.is_some() {
                    db.namespace.clone_from(&schema);
                }
                (Resp::Single, OnOk::Namespace(schema))
            }
            com::CHANGE_USER => {
                let schema = packets::change_user_schema(&m.head, self.caps);
                (Resp::Auth, OnOk::Namespace(schema))
            }
            _ if single => (Resp::Single, OnOk::Nothing),
            _ => (Resp::Result(Stage::Rows), OnOk::Nothing),
        };
        let mut p = pending(db, resp, m);
        p.on_ok = on_ok;
        p
    }
}
