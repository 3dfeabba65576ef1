//! How a relation's rows are laid out in the state store, in one of two
//! layouts (`catalog::RowLayout`):
//!
//! - Rows. Key: relation prefix ++ (primary-key bytes for keyed tables, else
//!   the whole row's bytes). Value: an 8-byte big-endian multiplicity,
//!   followed by the row's bytes when the key is not the row itself. A
//!   change reads each row's current count before it writes the new one.
//! - Blocks, for materialized views whose query only inserts. Key: relation
//!   prefix ++ epoch ++ a sequence number (both 8 bytes, big-endian). Value:
//!   the rows one epoch appended, as an Arrow IPC stream. Writing a block
//!   reads nothing, and costs about a copy of the rows; a scan decodes the
//!   blocks column by column.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::catalog::{Relation, RowLayout};
use crate::error::{Result, SqlError};
use crate::state::{Epoch, Snapshot, WriteBatch, relation_prefix};
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
    match relation.layout {
        RowLayout::Rows => scan_key_prefix(relation, snapshot, &[]),
        RowLayout::Blocks => scan_blocks(relation, snapshot),
    }
}

/// The rows whose storage key starts with `key_prefix`: the row-format
/// encoding of the leading key columns (the primary key's, or for relations
/// without one, the row's own leading columns). Blocks are not keyed by
/// row: for them this is every row (callers filter what they read).
pub fn scan_key_prefix(relation: &Relation, snapshot: &dyn Snapshot, key_prefix: &[u8]) -> Result<RecordBatch> {
    if relation.layout == RowLayout::Blocks {
        return scan_blocks(relation, snapshot);
    }
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

/// Adds the writes that apply `change` to `relation` (rows layout) into
/// `batch`: each row's new count, from its count in `snapshot`.
pub fn apply_change(
    relation: &Relation,
    snapshot: &dyn Snapshot,
    change: &ChangeBatch,
    batch: &mut WriteBatch,
) -> Result<()> {
    if change.is_empty() {
        return Ok(());
    }
    if relation.layout == RowLayout::Blocks {
        return Err(SqlError::internal(format!("\"{}\" is stored as blocks: its rows are appended", relation.name)));
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

/// Tells blocks of one epoch apart (several may be written in one epoch:
/// a rebuild, then a step). Only uniqueness matters, not the order.
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);

/// Stages `change`'s rows as one block of `relation` (blocks layout), the
/// block of epoch `epoch`. Its weights must not be negative: a row counted `n` times is written `n` times.
/// A retraction cannot be applied to blocks and is refused as an internal
/// error (the planner stores only insert-only views as blocks).
pub fn append_block(relation: &Relation, change: &ChangeBatch, epoch: Epoch, batch: &mut WriteBatch) -> Result<()> {
    let weights = &change.weights;
    if weights.null_count() > 0 || weights.values().iter().any(|&w| w < 0) {
        return Err(SqlError::internal(format!(
            "materialized view \"{}\" is stored as appended blocks, but its query retracted a row",
            relation.name
        )));
    }
    let rows = if weights.values().iter().all(|&w| w == 1) {
        change.rows.clone()
    } else {
        // Each row as many times as it counts (a count of 0 drops it).
        let mut indices: Vec<u32> = Vec::with_capacity(change.len());
        for (i, &w) in weights.values().iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| SqlError::internal("a change batch of over 4G rows"))?;
            indices.extend(std::iter::repeat_n(index, usize::try_from(w).unwrap_or(0)));
        }
        take_record_batch(&change.rows, &UInt32Array::from(indices))?
    };
    if rows.num_rows() == 0 {
        return Ok(());
    }
    // Under the relation's own column names (a view may rename its query's).
    let rows = RecordBatch::try_new(relation.schema.clone(), rows.columns().to_vec())?;
    let mut writer = StreamWriter::try_new(Vec::with_capacity(rows.get_array_memory_size() + 512), &rows.schema())?;
    writer.write(&rows)?;
    writer.finish()?;
    let value = writer.into_inner()?;
    let mut key = relation_prefix(relation.id).to_vec();
    key.extend_from_slice(&epoch.to_be_bytes());
    key.extend_from_slice(&NEXT_BLOCK.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    batch.put(key, value);
    Ok(())
}

/// Every row of a relation stored as blocks, in one batch.
fn scan_blocks(relation: &Relation, snapshot: &dyn Snapshot) -> Result<RecordBatch> {
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut failure: Option<SqlError> = None;
    snapshot.scan_prefix(&relation_prefix(relation.id), &mut |_, value| {
        if failure.is_some() {
            return;
        }
        match decode_block(relation, value) {
            Ok(mut decoded) => batches.append(&mut decoded),
            Err(error) => failure = Some(error),
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(concat_batches(&relation.schema, &batches)?)
}

/// The batches of one stored block, under the relation's schema.
fn decode_block(relation: &Relation, value: &[u8]) -> Result<Vec<RecordBatch>> {
    let corrupt = |e: &dyn std::fmt::Display| {
        SqlError::internal(format!("corrupt block of materialized view \"{}\" in the store: {e}", relation.name))
    };
    let reader = StreamReader::try_new(std::io::Cursor::new(value), None).map_err(|e| corrupt(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(&e))?;
        out.push(RecordBatch::try_new(relation.schema.clone(), batch.columns().to_vec()).map_err(|e| corrupt(&e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::catalog::{QualifiedName, RelationKind};
    use crate::state::{MemStore, StateStore};

    fn view(id: u32, layout: RowLayout) -> Relation {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let name = QualifiedName { schema: "public".into(), name: format!("v{id}") };
        let mut relation = Relation::new(id, name, RelationKind::MaterializedView, schema, vec![]).expect("relation");
        relation.layout = layout;
        relation
    }

    fn change(relation: &Relation, ids: &[i64], weights: &[i64]) -> ChangeBatch {
        let names: Vec<Option<String>> = ids.iter().map(|i| (i % 2 == 0).then(|| format!("n{i}"))).collect();
        let rows = RecordBatch::try_new(
            relation.schema.clone(),
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names))],
        )
        .expect("rows");
        ChangeBatch::new(rows, Int64Array::from(weights.to_vec()))
    }

    /// The rows of `batch` as (id, name) pairs, sorted.
    fn pairs(batch: &RecordBatch) -> Vec<(i64, Option<String>)> {
        let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("ids");
        let names = batch.column(1).as_any().downcast_ref::<StringArray>().expect("names");
        let mut out: Vec<_> = (0..batch.num_rows())
            .map(|i| (ids.value(i), names.is_valid(i).then(|| names.value(i).to_string())))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn blocks_hold_every_appended_row_as_often_as_it_counts() {
        let store = MemStore::new();
        let blocks = view(7, RowLayout::Blocks);
        let rows = view(8, RowLayout::Rows);
        // Two epochs, the second writing two blocks (as a rebuild and a step
        // of one epoch would); a count of 2 is two rows, a count of 0 none.
        for (epoch, changes) in
            [(1, vec![(vec![1, 2, 3], vec![1, 2, 1])]), (2, vec![(vec![4], vec![1]), (vec![5, 1], vec![0, 1])])]
        {
            let mut batch = WriteBatch::default();
            for (ids, weights) in changes {
                append_block(&blocks, &change(&blocks, &ids, &weights), epoch, &mut batch).expect("append");
                apply_change(&rows, store.snapshot().as_ref(), &change(&rows, &ids, &weights), &mut batch)
                    .expect("apply");
            }
            store.commit(epoch, batch).expect("commit");
        }
        let snapshot = store.snapshot();
        let stored = scan_all(&blocks, snapshot.as_ref()).expect("scan");
        assert_eq!(stored.schema(), blocks.schema, "blocks read back under the view's schema");
        let want = vec![
            (1, None),
            (1, None),
            (2, Some("n2".to_string())),
            (2, Some("n2".to_string())),
            (3, None),
            (4, Some("n4".to_string())),
        ];
        assert_eq!(pairs(&stored), want);
        // The same rows as the rows layout holds, and a key prefix reads them all.
        assert_eq!(pairs(&scan_all(&rows, snapshot.as_ref()).expect("rows")), want);
        assert_eq!(pairs(&scan_key_prefix(&blocks, snapshot.as_ref(), b"\x01").expect("prefix")), want);
    }

    #[test]
    fn blocks_refuse_a_retraction_and_rows_refuse_blocks() {
        let blocks = view(7, RowLayout::Blocks);
        let mut batch = WriteBatch::default();
        let error = append_block(&blocks, &change(&blocks, &[1, 2], &[1, -1]), 1, &mut batch).expect_err("retraction");
        assert!(error.message.contains("retracted a row"), "{}", error.message);
        assert!(batch.is_empty(), "nothing staged");
        let error = apply_change(&blocks, &crate::state::EmptySnapshot, &change(&blocks, &[1], &[1]), &mut batch)
            .expect_err("rows write to a blocks view");
        assert!(error.message.contains("stored as blocks"), "{}", error.message);
    }

    #[test]
    fn a_corrupt_block_is_an_error_not_a_panic() {
        let store = MemStore::new();
        let blocks = view(7, RowLayout::Blocks);
        let mut batch = WriteBatch::default();
        let mut key = relation_prefix(7).to_vec();
        key.extend_from_slice(&[0; 16]);
        batch.put(key, b"not arrow".to_vec());
        store.commit(1, batch).expect("commit");
        let error = scan_all(&blocks, store.snapshot().as_ref()).expect_err("corrupt");
        assert!(error.message.contains("corrupt block"), "{}", error.message);
    }
}
