//! `COMMENT ON TABLE | VIEW | MATERIALIZED VIEW | SOURCE | SINK | COLUMN
//! name IS 'text' | NULL`: descriptions of data products, shown by psql's
//! `\d+` and `\dt+` (through `pg_description`, `obj_description` and
//! `col_description`).
//!
//! A relation's comments are stored under one key of their own, written
//! in an epoch like every catalog change, read back at startup and
//! dropped with the relation.

use datafusion::sql::sqlparser::ast::{CommentObject, ObjectName};

use super::{Engine, Outcome};
use crate::catalog::{Relation, RelationKind};
use crate::error::{Result, SqlError, sqlstate};
use crate::state::{WriteBatch, comment_key};

pub async fn comment(
    engine: &Engine,
    object_type: CommentObject,
    object_name: &ObjectName,
    text: Option<&str>,
    if_exists: bool,
) -> Result<Outcome> {
    let done = Outcome::Command { tag: "COMMENT", rows: None };
    // COLUMN names `[schema.]table.column`.
    let (relation_name, column) = match object_type {
        CommentObject::Column => {
            let mut parts = object_name.0.clone();
            let Some(column) = parts.pop() else {
                return Err(SqlError::new(sqlstate::SYNTAX_ERROR, "COMMENT ON COLUMN needs table.column"));
            };
            if parts.is_empty() {
                return Err(SqlError::new(sqlstate::SYNTAX_ERROR, "COMMENT ON COLUMN needs table.column"));
            }
            let column = match column.as_ident() {
                Some(ident) if ident.quote_style.is_some() => ident.value.clone(),
                Some(ident) => ident.value.to_lowercase(),
                None => column.to_string(),
            };
            (ObjectName(parts), Some(column))
        }
        CommentObject::Table | CommentObject::View | CommentObject::MaterializedView => (object_name.clone(), None),
        other => return Err(SqlError::not_supported(format!("COMMENT ON {other}"))),
    };
    let qualified = super::ddl::object_name(engine, &relation_name);
    let Some(relation) = engine.catalog.by_name(&qualified) else {
        if if_exists {
            return Ok(done);
        }
        return Err(SqlError::new(sqlstate::UNDEFINED_TABLE, format!("relation \"{qualified}\" does not exist")));
    };
    let kind_fits = match object_type {
        CommentObject::Table => matches!(relation.kind, RelationKind::Table | RelationKind::Source),
        CommentObject::View => relation.kind == RelationKind::View,
        CommentObject::MaterializedView => {
            matches!(relation.kind, RelationKind::MaterializedView | RelationKind::Sink)
        }
        _ => true,
    };
    if !kind_fits {
        return Err(SqlError::new(
            sqlstate::WRONG_OBJECT_TYPE,
            format!("\"{qualified}\" is a {}, not a {}", relation.kind.noun(), noun(object_type)),
        ));
    }
    let subject = match &column {
        None => 0,
        Some(column) => match relation.schema.index_of(column) {
            Ok(index) => index as i32 + 1,
            Err(_) => {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{column}\" of relation \"{qualified}\" does not exist"),
                ));
            }
        },
    };
    let mut guard = engine.coordinator.begin().await;
    // The new comments are stored before they are shown.
    let mut comments = relation.comments.lock().clone();
    match text {
        Some(text) => comments.insert(subject, text.to_string()),
        None => comments.remove(&subject),
    };
    let mut batch = WriteBatch::default();
    if comments.is_empty() {
        batch.delete(comment_key(relation.id).to_vec());
    } else {
        batch.put(comment_key(relation.id).to_vec(), encode(&comments));
    }
    guard.write_batch(batch)?;
    *relation.comments.lock() = comments;
    Ok(done)
}

fn noun(object_type: CommentObject) -> &'static str {
    match object_type {
        CommentObject::Table => "table",
        CommentObject::View => "view",
        CommentObject::MaterializedView => "materialized view",
        _ => "relation",
    }
}

/// (subject, text) pairs: 4-byte subject, 4-byte length, the text.
fn encode(comments: &std::collections::BTreeMap<i32, String>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (subject, text) in comments {
        bytes.extend_from_slice(&subject.to_be_bytes());
        bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
        bytes.extend_from_slice(text.as_bytes());
    }
    bytes
}

fn decode(mut bytes: &[u8]) -> Option<std::collections::BTreeMap<i32, String>> {
    let mut comments = std::collections::BTreeMap::new();
    while !bytes.is_empty() {
        let subject = i32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?);
        let len = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
        let text = std::str::from_utf8(bytes.get(8..8 + len)?).ok()?;
        comments.insert(subject, text.to_string());
        bytes = bytes.get(8 + len..)?;
    }
    Some(comments)
}

/// At startup: each relation's stored comments back in place.
pub fn restore(engine: &Engine) -> Result<()> {
    let snapshot = engine.coordinator.store().snapshot();
    let mut restored: Vec<(u32, std::collections::BTreeMap<i32, String>)> = Vec::new();
    let mut corrupt = None;
    snapshot.scan_prefix(crate::state::COMMENT_PREFIX, &mut |key, value| match (
        key.get(1..5).and_then(|id| id.try_into().ok()).map(u32::from_be_bytes),
        decode(value),
    ) {
        (Some(id), Some(comments)) => restored.push((id, comments)),
        _ => corrupt = Some(key.to_vec()),
    });
    if let Some(key) = corrupt {
        return Err(SqlError::new(sqlstate::IO_ERROR, format!("corrupt comment entry {key:?} in the data dir")));
    }
    for (id, comments) in restored {
        if let Some(relation) = engine.catalog.get(id) {
            set(&relation, comments);
        }
    }
    Ok(())
}

fn set(relation: &Relation, comments: std::collections::BTreeMap<i32, String>) {
    *relation.comments.lock() = comments;
}

#[cfg(test)]
mod tests {
    #[test]
    fn comments_read_back_as_written() {
        let comments = [(0, "orders by day".to_string()), (3, "".to_string()), (12, "é ünïcode".to_string())]
            .into_iter()
            .collect();
        assert_eq!(super::decode(&super::encode(&comments)), Some(comments));
        assert_eq!(super::decode(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']), None);
    }
}
