//! SQL text: literals replaced by `?` for `db.query.text`, and the operation and plain collection a statement names (shared by the PostgreSQL and MySQL decoders). Being written.
