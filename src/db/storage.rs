//! How a relation's rows are laid out in the state store.
//!
//! Key: relation prefix ++ (primary-key bytes for keyed tables, else the
//! whole row's bytes). Value: an 8-byte big-endian multiplicity, followed by
//! the row's bytes when the key is not the row itself.

use std::collections::HashMap;

use datafusion::arrow::array::RecordBatch;

use crate::catalog::Relation;
use crate::error::{Result, SqlError};
use crate::state::{Snapshot, WriteBatch, relation_prefix};
use crate::stream::ChangeBatch;

pub fn row_key(relation: &Relation, key_bytes: &[u8]) -> Vec<u8> {
    let mut key = relation_prefix(relation.id).to_vec();
    key.extend_from_slice(key_bytes);
    key
}

/// A stored value: its multiplicity, then the row's bytes if they are not
/// the key's own (after the 5-byte relation prefix). Returns the count and
/// the row's bytes; a value too short for a count counts 0.
fn decode_value<'a>(key: &'a [u8], value: &'a [u8]) -> (i64, &'a [u8], bool) {
    let count = multiplicity(value);
    match value.get(8..).filter(|row| !row.is_empty()) {
        Some(row) => (count, row, true),
        None => (count, key.get(5..).unwrap_or_default(), false),
    }
}

/// How many copies of its row a stored value counts.
pub fn multiplicity(value: &[u8]) -> i64 {
    value.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes).unwrap_or(0)
}

/// Every row of `relation` at `snapshot`, each repeated by its multiplicity.
pub fn scan_all(relation: &Relation, snapshot: &dyn Snapshot) -> Result<RecordBatch> {
    scan_key_prefix(relation, snapshot, &[])
}

/// The rows whose storage key starts with `key_prefix`: the row-format
/// encoding of the leading key columns (the primary key's, or for relations
/// without one, the row's own leading columns).
pub fn scan_key_prefix(relation: &Relation, snapshot: &dyn Snapshot, key_prefix: &[u8]) -> Result<RecordBatch> {
    let mut rows: Vec<u8> = Vec::new();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    snapshot.scan_prefix(&row_key(relation, key_prefix), &mut |key, value| {
        let (count, bytes, _) = decode_value(key, value);
        let start = rows.len();
        rows.extend_from_slice(bytes);
        for _ in 0..count.max(0) {
            spans.push(start..rows.len());
        }
    });
    relation.row_codec.decode(spans.iter().map(|s| rows.get(s.clone()).unwrap_or_default()))
}

/// Rows of a keyed table with the given primary-key bytes.
pub fn lookup(relation: &Relation, snapshot: &dyn Snapshot, keys: &[Vec<u8>]) -> Result<RecordBatch> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    for key in keys {
        if let Some(value) = snapshot.get(&row_key(relation, key))
            && let Some(row) = value.get(8..).filter(|row| !row.is_empty())
        {
            found.push(row.to_vec());
        }
    }
    relation.row_codec.decode(found.iter().map(|r| r.as_slice()))
}

/// Whether a keyed table holds each of the given primary keys.
pub fn contains_key(relation: &Relation, snapshot: &dyn Snapshot, key_bytes: &[u8]) -> bool {
    snapshot.get(&row_key(relation, key_bytes)).is_some()
}

/// Adds the writes that apply `change` to `relation` into `batch`.
pub fn apply_change(
    relation: &Relation,
    snapshot: &dyn Snapshot,
    change: &ChangeBatch,
    batch: &mut WriteBatch,
) -> Result<()> {
    if change.is_empty() {
        return Ok(());
    }
    let rows = relation.row_codec.encode(change.rows.columns())?;
    let keys = match &relation.key_codec {
        Some(codec) => {
            let key_columns: Vec<_> = relation.primary_key.iter().map(|&i| change.rows.column(i).clone()).collect();
            Some(codec.encode(&key_columns)?)
        }
        None => None,
    };
    // (multiplicity, row bytes if keyed) per storage key, starting from the snapshot.
    let mut pending: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)> = HashMap::new();
    for i in 0..change.len() {
        let weight = change.weights.value(i);
        let row = rows.row(i).data();
        let key_bytes = keys.as_ref().map(|k| k.row(i).data()).unwrap_or(row);
        let key = row_key(relation, key_bytes);
        let entry = match pending.get_mut(&key) {
            Some(e) => e,
            None => {
                let current = snapshot.get(&key).map(|v| {
                    let (count, row, in_value) = decode_value(&key, &v);
                    (count, in_value.then(|| row.to_vec()))
                });
                pending.entry(key).or_insert(current.unwrap_or((0, None)))
            }
        };
        entry.0 += weight;
        if weight > 0 && keys.is_some() {
            entry.1 = Some(row.to_vec());
        }
    }
    for (key, (count, row)) in pending {
        if count < 0 {
            return Err(SqlError::internal(format!(
                "relation \"{}\" would hold a row a negative number of times",
                relation.name
            )));
        }
        if count == 0 {
            batch.delete(key);
        } else {
            let mut value = count.to_be_bytes().to_vec();
            if let Some(row) = row {
                value.extend_from_slice(&row);
            }
            batch.put(key, value);
        }
    }
    Ok(())
}
