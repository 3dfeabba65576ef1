//! Keyed message formats: `FORMAT UPSERT` and `FORMAT DEBEZIUM`.
//!
//! Both turn a message into a change of one row by primary key, which only
//! a table with a primary key can apply (a source keeps no rows to change):
//! - UPSERT: the value is the row's new version; a message with no value (a
//!   Kafka tombstone) deletes the row whose key is the message key. The key
//!   is a JSON object of the primary-key columns, or, for a one-column key,
//!   the bare JSON value.
//! - DEBEZIUM: the value is a Debezium change event, with or without the
//!   `{"schema": …, "payload": …}` wrapper: `op` `c`/`r`/`u` upserts
//!   `after`, `d` deletes `before`; tombstones are skipped.
//!
//! The rows themselves are decoded afterwards, all at once, by the payload
//! decoder of the source's columns; this module only takes the envelope
//! apart, which is why it hands back payload bytes.

use std::borrow::Cow;

use crate::error::{Result, SqlError, sqlstate};

/// How a connector's messages map to rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// Each message appends a row.
    Plain,
    Upsert,
    Debezium,
}

impl Envelope {
    /// From the `format` option.
    pub fn from_options(options: &super::ConnectorOptions) -> Result<Self> {
        match options.get("format").map(str::to_ascii_lowercase).as_deref() {
            None | Some("plain") => Ok(Envelope::Plain),
            Some("upsert") => Ok(Envelope::Upsert),
            Some("debezium") => Ok(Envelope::Debezium),
            Some(other) => Err(SqlError::not_supported(format!(
                "FORMAT {} (formats: PLAIN, UPSERT, DEBEZIUM)",
                other.to_uppercase()
            ))),
        }
    }

    /// Whether messages are keyed changes.
    pub fn keyed(self) -> bool {
        self != Envelope::Plain
    }
}

/// What one message does. Bytes are borrowed from the message where they
/// stand in it as they are (an upsert's value), made only where the
/// envelope must be taken apart.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// Insert or replace the row encoded in these bytes.
    Upsert(Cow<'a, [u8]>),
    /// Delete the row whose key columns these bytes encode.
    Delete(Cow<'a, [u8]>),
    /// Nothing (a Debezium tombstone or heartbeat).
    Skip,
}

/// Takes a message of a keyed format apart; `Err` names what is wrong
/// with it (the message becomes a bad record). `key_columns` are the
/// primary-key column names (a bare key value is for a one-column key).
pub fn split<'a>(
    envelope: Envelope,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    key_columns: &[String],
) -> Result<Change<'a>> {
    match envelope {
        Envelope::Plain => Ok(Change::Upsert(Cow::Borrowed(value))),
        Envelope::Upsert if !value.is_empty() => Ok(Change::Upsert(Cow::Borrowed(value))),
        Envelope::Upsert => {
            let key = key.filter(|k| !k.is_empty()).ok_or_else(|| bad("a tombstone (no value) without a key"))?;
            Ok(Change::Delete(key_object(key, key_columns)?))
        }
        Envelope::Debezium => debezium(value),
    }
}

fn bad(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::INVALID_TEXT_REPRESENTATION, message)
}

/// A message key as a JSON object of the key columns.
fn key_object<'a>(key: &'a [u8], key_columns: &[String]) -> Result<Cow<'a, [u8]>> {
    let parsed: serde_json::Value =
        serde_json::from_slice(key).map_err(|e| bad(format!("the message key is not JSON: {e}")))?;
    match (parsed, key_columns) {
        (serde_json::Value::Object(_), _) => Ok(Cow::Borrowed(key)),
        (scalar, [column]) => {
            let mut object = serde_json::Map::new();
            object.insert(column.clone(), scalar);
            Ok(Cow::Owned(serde_json::Value::Object(object).to_string().into_bytes()))
        }
        _ => Err(bad(format!("the message key must be a JSON object of the key columns ({})", key_columns.join(", ")))),
    }
}

fn debezium(value: &[u8]) -> Result<Change<'static>> {
    if value.is_empty() {
        return Ok(Change::Skip);
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| bad(format!("not a Debezium JSON event: {e}")))?;
    // With the JSON converter's schemas on, the event is under "payload".
    let event = match parsed.get("payload") {
        Some(payload) if payload.is_object() => payload,
        _ => &parsed,
    };
    let op = event.get("op").and_then(|op| op.as_str()).ok_or_else(|| bad("a Debezium event without \"op\""))?;
    let row = |field: &str| -> Result<Cow<'static, [u8]>> {
        match event.get(field) {
            Some(row @ serde_json::Value::Object(_)) => Ok(Cow::Owned(row.to_string().into_bytes())),
            _ => Err(bad(format!("a Debezium \"{op}\" event without \"{field}\""))),
        }
    };
    match op {
        "c" | "r" | "u" => Ok(Change::Upsert(row("after")?)),
        "d" => Ok(Change::Delete(row("before")?)),
        "m" => Ok(Change::Skip),
        other => Err(bad(format!("Debezium op \"{other}\" is not supported (c, r, u, d)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["id".to_string()]
    }

    #[test]
    fn upsert_values_and_tombstones() {
        let up = split(Envelope::Upsert, Some(b"1"), br#"{"id":1,"v":"a"}"#, &keys()).expect("upsert");
        assert_eq!(up, Change::Upsert(Cow::Borrowed(br#"{"id":1,"v":"a"}"#)));
        let bare = split(Envelope::Upsert, Some(b"7"), b"", &keys()).expect("delete");
        assert_eq!(bare, Change::Delete(Cow::Borrowed(br#"{"id":7}"#)));
        let object = split(Envelope::Upsert, Some(br#"{"id":8}"#), b"", &keys()).expect("delete");
        assert_eq!(object, Change::Delete(Cow::Borrowed(br#"{"id":8}"#)));
        assert!(split(Envelope::Upsert, None, b"", &keys()).is_err());
        assert!(split(Envelope::Upsert, Some(b"[1,2]"), b"", &["a".into(), "b".into()]).is_err());
    }

    #[test]
    fn debezium_events() {
        let create = br#"{"before":null,"after":{"id":1,"v":"a"},"op":"c"}"#;
        assert_eq!(
            split(Envelope::Debezium, None, create, &keys()).expect("c"),
            Change::Upsert(Cow::Borrowed(br#"{"id":1,"v":"a"}"#))
        );
        let wrapped = br#"{"schema":{},"payload":{"before":{"id":1,"v":"a"},"after":null,"op":"d"}}"#;
        assert_eq!(
            split(Envelope::Debezium, None, wrapped, &keys()).expect("d"),
            Change::Delete(Cow::Borrowed(br#"{"id":1,"v":"a"}"#))
        );
        assert_eq!(split(Envelope::Debezium, None, b"", &keys()).expect("tombstone"), Change::Skip);
        assert!(split(Envelope::Debezium, None, br#"{"after":{"id":1}}"#, &keys()).is_err());
        assert!(split(Envelope::Debezium, None, br#"{"op":"d","before":null}"#, &keys()).is_err());
        assert!(split(Envelope::Debezium, None, b"{not json", &keys()).is_err());
    }
}
