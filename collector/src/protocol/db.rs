//! What the database and cache decoders (Redis, PostgreSQL, MySQL) put in an exchange: one
//! command or statement with its outcome, in the terms of OpenTelemetry's database semantic
//! conventions. Never a value: Redis keys and arguments, bind parameters and result rows are
//! not kept, and query text is kept only with its literals replaced (see `sql`).

/// `db.system.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbSystem {
    Redis,
    Postgresql,
    Mysql,
}

impl DbSystem {
    /// The `db.system.name` value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Postgresql => "postgresql",
            Self::Mysql => "mysql",
        }
    }
}

/// One database command or statement and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Db {
    pub system: DbSystem,
    /// `db.operation.name`: the Redis command (`GET`, `HSET`), or the statement's first keyword
    /// (`SELECT`, `INSERT`, `BEGIN`); `EXECUTE` for a prepared statement whose text was not seen.
    /// Upper case. Empty when unknown.
    pub operation: String,
    /// `db.collection.name`: the table a statement names plainly (`SELECT .. FROM orders`,
    /// `INSERT INTO orders`, `UPDATE orders`, `DELETE FROM orders`), none when it is not plain
    /// (joins, subqueries, several tables).
    pub collection: Option<String>,
    /// `db.namespace`: the database (PostgreSQL startup message, MySQL handshake or COM_INIT_DB,
    /// Redis `SELECT n`), when the capture saw it.
    pub namespace: Option<String>,
    /// `db.query.text`, literals replaced by `?` (see `sql::sanitize`). Redis: the command and
    /// one `?` per argument.
    pub query_text: Option<String>,
    /// A prepared statement's name (PostgreSQL Parse/Bind) or id (MySQL), to tie executions to
    /// the text prepared earlier.
    pub statement: Option<String>,
    /// `db.response.status_code`: PostgreSQL's SQLSTATE (`23505`), MySQL's error number
    /// (`1062`), Redis's error prefix (`ERR`, `WRONGTYPE`). None on success.
    pub status_code: Option<String>,
    /// Commands sent together as one (Redis pipelining is one exchange per command; a
    /// PostgreSQL simple query with several statements counts them here). 1 for one.
    pub batch_size: u32,
}

impl Db {
    /// A command of `system` named `operation`, with nothing else known yet.
    #[must_use]
    pub fn new(system: DbSystem, operation: impl Into<String>) -> Self {
        Self {
            system,
            operation: operation.into(),
            collection: None,
            namespace: None,
            query_text: None,
            statement: None,
            status_code: None,
            batch_size: 1,
        }
    }
}
