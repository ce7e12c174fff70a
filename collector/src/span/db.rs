//! Database spans by OpenTelemetry's database semantic conventions: their names and `db.*`
//! attributes (the exchange's [`Db`] already holds the conventions' fields).

use super::Value;
use crate::protocol::db::Db;

/// `{db.operation.name} {db.collection.name}`, `{db.operation.name}` without a plain
/// collection, or `db.system.name` when the operation is unknown.
#[must_use]
pub fn name(db: &Db) -> String {
    match (&db.operation, &db.collection) {
        (op, _) if op.is_empty() => db.system.as_str().to_owned(),
        (op, Some(collection)) => format!("{op} {collection}"),
        (op, None) => op.clone(),
    }
}

/// The `db.*` attributes.
pub fn attributes(db: &Db, attrs: &mut Vec<(&'static str, Value)>) {
    let s = |v: &str| Value::Str(v.to_owned());
    attrs.push(("db.system.name", s(db.system.as_str())));
    if !db.operation.is_empty() {
        attrs.push(("db.operation.name", s(&db.operation)));
    }
    if let Some(c) = &db.collection {
        attrs.push(("db.collection.name", s(c)));
    }
    if let Some(n) = &db.namespace {
        attrs.push(("db.namespace", s(n)));
    }
    if let Some(q) = &db.query_text {
        attrs.push(("db.query.text", s(q)));
    }
    if let Some(code) = &db.status_code {
        attrs.push(("db.response.status_code", s(code)));
    }
    if db.batch_size > 1 {
        attrs.push((
            "db.operation.batch.size",
            Value::Int(i64::from(db.batch_size)),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::db::DbSystem;

    #[test]
    fn names_follow_the_conventions() {
        let mut db = Db::new(DbSystem::Postgresql, "SELECT");
        assert_eq!(name(&db), "SELECT");
        db.collection = Some("orders".into());
        assert_eq!(name(&db), "SELECT orders");
        assert_eq!(name(&Db::new(DbSystem::Redis, "")), "redis");
    }

    #[test]
    fn attributes_carry_the_sanitized_text_and_the_status_code() {
        let mut db = Db::new(DbSystem::Mysql, "INSERT");
        db.collection = Some("users".into());
        db.namespace = Some("shop".into());
        db.query_text = Some("INSERT INTO users (name) VALUES (?)".into());
        db.status_code = Some("1062".into());
        let mut attrs = Vec::new();
        attributes(&db, &mut attrs);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("db.system.name"), Some(Value::Str("mysql".into())));
        assert_eq!(
            get("db.response.status_code"),
            Some(Value::Str("1062".into()))
        );
        assert_eq!(get("db.namespace"), Some(Value::Str("shop".into())));
        assert_eq!(get("db.operation.batch.size"), None);
    }
}
