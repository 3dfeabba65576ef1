//! Table writes: turning INSERT, UPDATE and DELETE into change batches,
//! with the checks a Postgres user expects (primary-key uniqueness, NOT NULL,
//! ON CONFLICT DO NOTHING), and committing them as one epoch, or staging
//! them in the session's transaction block to commit with it.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::physical_plan::PhysicalExpr;

use super::coordinator::{Coordinator, EpochGuard};
use super::storage;
use super::transaction::{self, Transaction};
use crate::catalog::{Relation, RelationKind};
use crate::error::{Result, SqlError, sqlstate};
use crate::state::Snapshot;
use crate::stream::ChangeBatch;

/// What INSERT does with a row whose primary key is already taken.
pub enum OnConflict {
    Error,
    DoNothing,
    DoUpdate(ConflictUpdate),
}

/// `ON CONFLICT DO UPDATE SET … [WHERE …]`, compiled against a batch whose
/// columns are the existing row's followed by the proposed (EXCLUDED) row's.
pub struct ConflictUpdate {
    pub assignments: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    pub selection: Option<Arc<dyn PhysicalExpr>>,
}

fn check_writable(relation: &Relation) -> Result<()> {
    if relation.kind != RelationKind::Table {
        return Err(SqlError::new(
            sqlstate::WRONG_OBJECT_TYPE,
            format!("cannot change {} \"{}\"", relation.kind.noun(), relation.name),
        ));
    }
    Ok(())
}

/// Casts `batch` to the table's column types and checks NOT NULL.
fn conform(relation: &Relation, batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.num_columns() != relation.schema.fields().len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            format!(
                "INSERT has {} expressions but table \"{}\" has {} columns",
                batch.num_columns(),
                relation.name,
                relation.schema.fields().len()
            ),
        ));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(relation.schema.fields()) {
        let column =
            if column.data_type() != field.data_type() { cast(column, field.data_type())? } else { column.clone() };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(SqlError::new(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    field.name(),
                    relation.name
                ),
            ));
        }
        columns.push(column);
    }
    Ok(RecordBatch::try_new(relation.schema.clone(), columns)?)
}

fn key_text(relation: &Relation, batch: &RecordBatch, row: usize) -> String {
    let names: Vec<&str> = relation.primary_key.iter().map(|&i| relation.schema.field(i).name().as_str()).collect();
    let values: Vec<String> =
        relation.primary_key.iter().map(|&i| array_value_to_string(batch.column(i), row).unwrap_or_default()).collect();
    format!("Key ({})=({}) already exists.", names.join(", "), values.join(", "))
}

fn unique_violation(relation: &Relation, batch: &RecordBatch, row: usize) -> SqlError {
    SqlError::new(
        sqlstate::UNIQUE_VIOLATION,
        format!(
            "duplicate key value violates unique constraint \"{}_pkey\" ({})",
            relation.name.name,
            key_text(relation, batch, row)
        ),
    )
}

/// Appends the rows a connector-fed table's reader read, and writes
/// `extra` (the read position, bad records) in the same epoch.
pub fn append_from_connector(
    guard: &mut EpochGuard<'_>,
    relation: &Arc<Relation>,
    rows: &RecordBatch,
    extra: crate::state::WriteBatch,
) -> Result<usize> {
    let rows = conform(relation, rows)?;
    let count = rows.num_rows();
    let changes = if count == 0 { Vec::new() } else { vec![(relation.clone(), ChangeBatch::uniform(rows, 1))] };
    guard.commit_with(changes, extra)?;
    Ok(count)
}

/// Applies the keyed changes a changelog connector read (CDC, FORMAT
/// UPSERT | DEBEZIUM) to a table with a primary key, and writes `extra` in
/// the same epoch. Per key only the last change of the read counts (they
/// are in the order they happened): an upsert replaces the stored row or
/// adds one, a delete removes the stored row if there is one. A change
/// that leaves a row as it is stored changes nothing downstream. Returns
/// how many changes were applied.
pub fn apply_from_changelog(
    guard: &mut EpochGuard<'_>,
    relation: &Arc<Relation>,
    changes: &crate::connectors::KeyedChanges,
    extra: crate::state::WriteBatch,
) -> Result<usize> {
    let Some(codec) = &relation.key_codec else {
        return Err(SqlError::internal(format!("table \"{}\" has no primary key for keyed changes", relation.name)));
    };
    let count = changes.rows.num_rows();
    if count == 0 {
        guard.commit_with(Vec::new(), extra)?;
        return Ok(0);
    }
    // Cast to the table's types without the NOT NULL check: a delete
    // carries only its key.
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(relation.schema.fields().len());
    for (column, field) in changes.rows.columns().iter().zip(relation.schema.fields()) {
        columns.push(if column.data_type() != field.data_type() {
            cast(column, field.data_type())?
        } else {
            column.clone()
        });
    }
    let rows = RecordBatch::try_new(crate::stream::change::all_nullable(&relation.schema), columns)?;
    let key_columns: Vec<ArrayRef> = relation.primary_key.iter().map(|&i| rows.column(i).clone()).collect();
    if let Some(i) = relation.primary_key.iter().find(|&&i| rows.column(i).null_count() > 0) {
        return Err(SqlError::new(
            sqlstate::NOT_NULL_VIOLATION,
            format!(
                "a change for table \"{}\" has no value for primary-key column \"{}\"",
                relation.name,
                relation.schema.field(*i).name()
            ),
        ));
    }
    let keys = codec.encode(&key_columns)?;
    // The last change per key, in first-seen order of the keys.
    let mut last: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::with_capacity(count);
    let mut order: Vec<&[u8]> = Vec::new();
    for i in 0..count {
        let key = keys.row(i).data();
        if last.insert(key, i).is_none() {
            order.push(key);
        }
    }
    let upserts: Vec<u32> = order
        .iter()
        .filter_map(|k| last.get(k).copied())
        .filter(|&i| !changes.deletes.value(i))
        .map(|i| i as u32)
        .collect();
    let snapshot = guard.snapshot();
    let stored_keys: Vec<Vec<u8>> = order.iter().map(|k| k.to_vec()).collect();
    let existing = storage::lookup(relation, snapshot.as_ref(), &stored_keys)?;
    let mut taken = datafusion::arrow::compute::take_record_batch(
        &rows,
        &datafusion::arrow::array::UInt32Array::from(upserts.clone()),
    )?;
    if !changes.unchanged.is_empty() {
        let read = Read { rows: &rows, keys: &keys, deletes: &changes.deletes, unchanged: &changes.unchanged };
        taken = keep_unchanged(relation, codec, &taken, &upserts, &read, &existing)?;
    }
    let new_rows = conform(relation, &taken)?;
    // Rows both stored and upserted unchanged cancel out.
    let existing_bytes = relation.row_codec.encode(existing.columns())?;
    let new_bytes = relation.row_codec.encode(new_rows.columns())?;
    let existing_set: HashSet<&[u8]> = (0..existing.num_rows()).map(|i| existing_bytes.row(i).data()).collect();
    let new_set: HashSet<&[u8]> = (0..new_rows.num_rows()).map(|i| new_bytes.row(i).data()).collect();
    let retract = BooleanArray::from(
        (0..existing.num_rows()).map(|i| !new_set.contains(existing_bytes.row(i).data())).collect::<Vec<_>>(),
    );
    let insert = BooleanArray::from(
        (0..new_rows.num_rows()).map(|i| !existing_set.contains(new_bytes.row(i).data())).collect::<Vec<_>>(),
    );
    let change = ChangeBatch::concat(
        &relation.schema,
        &[
            ChangeBatch::uniform(filter_record_batch(&existing, &retract)?, -1),
            ChangeBatch::uniform(filter_record_batch(&new_rows, &insert)?, 1),
        ],
    )?;
    let changes = if change.is_empty() { Vec::new() } else { vec![(relation.clone(), change)] };
    guard.commit_with(changes, extra)?;
    Ok(count)
}

/// A changelog read, for [`keep_unchanged`].
struct Read<'a> {
    rows: &'a RecordBatch,
    keys: &'a datafusion::arrow::row::Rows,
    deletes: &'a BooleanArray,
    unchanged: &'a [(u32, u32)],
}

/// `upserted` (the rows at `positions` of a read) with each cell the
/// upstream left out as unchanged taken from the latest earlier change of
/// its key in the same read that has it, else from the stored row.
fn keep_unchanged(
    relation: &Relation,
    codec: &crate::stream::rowcodec::RowCodec,
    upserted: &RecordBatch,
    positions: &[u32],
    read: &Read<'_>,
    existing: &RecordBatch,
) -> Result<RecordBatch> {
    let existing_keys =
        codec.encode(&relation.primary_key.iter().map(|&i| existing.column(i).clone()).collect::<Vec<_>>())?;
    let stored: std::collections::HashMap<&[u8], usize> =
        (0..existing.num_rows()).map(|i| (existing_keys.row(i).data(), i)).collect();
    let left_out: HashSet<(u32, u32)> = read.unchanged.iter().copied().collect();
    let place: std::collections::HashMap<u32, usize> = positions.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    // Per column: (upserted row, source 1 = stored | 2 = the read, row there).
    let mut taken: std::collections::BTreeMap<usize, Vec<(usize, (usize, usize))>> = Default::default();
    for &(row, column) in read.unchanged {
        let Some(&p) = place.get(&row) else { continue };
        let key = read.keys.row(row as usize).data();
        // The latest earlier change of the key that carries the value;
        // none (or only ones that left it out too): the stored row's.
        let mut from = stored.get(key).map(|&s| (1, s));
        for i in (0..row).rev().filter(|&i| read.keys.row(i as usize).data() == key) {
            if read.deletes.value(i as usize) {
                // Deleted before in this read: there is nothing to keep.
                from = None;
                break;
            }
            if !left_out.contains(&(i, column)) {
                from = Some((2, i as usize));
                break;
            }
        }
        if let Some(from) = from {
            taken.entry(column as usize).or_default().push((p, from));
        }
    }
    let mut columns = upserted.columns().to_vec();
    for (column, cells) in taken {
        let mut indices: Vec<(usize, usize)> = (0..upserted.num_rows()).map(|p| (0, p)).collect();
        for (p, from) in cells {
            if let Some(index) = indices.get_mut(p) {
                *index = from;
            }
        }
        let sources =
            [upserted.column(column).as_ref(), existing.column(column).as_ref(), read.rows.column(column).as_ref()];
        let merged = datafusion::arrow::compute::interleave(&sources, &indices)?;
        if let Some(slot) = columns.get_mut(column) {
            *slot = merged;
        }
    }
    Ok(RecordBatch::try_new(upserted.schema(), columns)?)
}

/// Where a statement's table changes go: an epoch of their own (through
/// the epoch guard), or the session's open transaction, to commit with it.
pub trait TableWriter {
    /// What the statement reads and checks against.
    fn snapshot(&self) -> Arc<dyn Snapshot>;
    fn commit(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>) -> Result<()>;
}

impl TableWriter for EpochGuard<'_> {
    fn snapshot(&self) -> Arc<dyn Snapshot> {
        EpochGuard::snapshot(self)
    }
    fn commit(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>) -> Result<()> {
        EpochGuard::commit(self, changes)
    }
}

impl TableWriter for Transaction {
    fn snapshot(&self) -> Arc<dyn Snapshot> {
        Transaction::snapshot(self)
    }
    fn commit(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>) -> Result<()> {
        self.stage(changes)
    }
}

/// Runs a statement's `write`: staged in the session's transaction block if
/// one is open, else committed as an epoch of its own.
pub async fn write<T>(coordinator: &Coordinator, write: impl FnOnce(&mut dyn TableWriter) -> Result<T>) -> Result<T> {
    if transaction::is_open() {
        return transaction::with_open(|open| write(open))
            .unwrap_or_else(|| Err(SqlError::internal("the transaction ended while a statement wrote")));
    }
    let mut guard = coordinator.begin().await;
    write(&mut guard)
}

/// Inserts rows; returns how many were inserted (or updated by ON CONFLICT
/// DO UPDATE).
pub fn insert(
    writer: &mut dyn TableWriter,
    relation: &Arc<Relation>,
    batches: &[RecordBatch],
    on_conflict: &OnConflict,
) -> Result<usize> {
    check_writable(relation)?;
    let batches = batches.iter().map(|b| conform(relation, b)).collect::<Result<Vec<_>>>()?;
    let rows = concat_batches(&relation.schema, &batches)?;
    if rows.num_rows() == 0 {
        return Ok(0);
    }
    let Some(codec) = &relation.key_codec else {
        let count = rows.num_rows();
        writer.commit(vec![(relation.clone(), ChangeBatch::uniform(rows, 1))])?;
        return Ok(count);
    };
    let snapshot = writer.snapshot();
    let key_columns: Vec<ArrayRef> = relation.primary_key.iter().map(|&i| rows.column(i).clone()).collect();
    let keys = codec.encode(&key_columns)?;
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut keep = Vec::with_capacity(rows.num_rows());
    let mut conflicts: Vec<u32> = Vec::new();
    for i in 0..rows.num_rows() {
        let key = keys.row(i).data();
        let repeated = !seen.insert(key);
        let exists = !repeated && storage::contains_key(relation, snapshot.as_ref(), key);
        match on_conflict {
            OnConflict::Error if repeated || exists => {
                return Err(unique_violation(relation, &rows, i));
            }
            OnConflict::DoUpdate(_) if repeated => {
                return Err(SqlError::new(
                    sqlstate::CARDINALITY_VIOLATION,
                    "ON CONFLICT DO UPDATE command cannot affect row a second time",
                ));
            }
            OnConflict::DoUpdate(_) if exists => conflicts.push(i as u32),
            _ => {}
        }
        keep.push(!repeated && !exists);
    }
    let inserted = filter_record_batch(&rows, &BooleanArray::from(keep))?;
    let mut changes = vec![ChangeBatch::uniform(inserted, 1)];
    if let (OnConflict::DoUpdate(update), false) = (on_conflict, conflicts.is_empty()) {
        let conflicting_keys: Vec<Vec<u8>> = conflicts.iter().map(|&i| keys.row(i as usize).data().to_vec()).collect();
        let existing = storage::lookup(relation, snapshot.as_ref(), &conflicting_keys)?;
        let excluded = datafusion::arrow::compute::take_record_batch(
            &rows,
            &datafusion::arrow::array::UInt32Array::from(conflicts),
        )?;
        changes.extend(conflict_updates(relation, update, existing, excluded)?);
    }
    let count: usize =
        changes.iter().filter(|c| c.weights.values().first().is_some_and(|w| *w > 0)).map(ChangeBatch::len).sum();
    let change = ChangeBatch::concat(&relation.schema, &changes)?;
    if !change.is_empty() {
        writer.commit(vec![(relation.clone(), change)])?;
    }
    Ok(count)
}

/// The -old/+new changes of ON CONFLICT DO UPDATE for the conflicting rows.
fn conflict_updates(
    relation: &Relation,
    update: &ConflictUpdate,
    existing: RecordBatch,
    excluded: RecordBatch,
) -> Result<Vec<ChangeBatch>> {
    let n = existing.num_rows();
    let mut fields: Vec<datafusion::arrow::datatypes::Field> = Vec::new();
    for (prefix, batch) in [("", &existing), ("excluded.", &excluded)] {
        for f in batch.schema().fields() {
            fields.push(datafusion::arrow::datatypes::Field::new(
                format!("{prefix}{}", f.name()),
                f.data_type().clone(),
                true,
            ));
        }
    }
    let columns: Vec<ArrayRef> = existing.columns().iter().chain(excluded.columns()).cloned().collect();
    let combined = RecordBatch::try_new(Arc::new(datafusion::arrow::datatypes::Schema::new(fields)), columns)?;
    let combined = match &update.selection {
        Some(selection) => {
            let mask = selection.evaluate(&combined)?.into_array(n)?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| SqlError::new(sqlstate::DATATYPE_MISMATCH, "argument of WHERE must be type boolean"))?;
            filter_record_batch(&combined, &crate::stream::change::null_as_false(mask))?
        }
        None => combined,
    };
    let updated = combined.num_rows();
    if updated == 0 {
        return Ok(vec![]);
    }
    let width = relation.schema.fields().len();
    let old_columns = combined.columns().get(..width).unwrap_or_default().to_vec();
    let old = RecordBatch::try_new(relation.schema.clone(), old_columns)?;
    let new = assign(relation, &old, &combined, &update.assignments)?;
    Ok(vec![ChangeBatch::uniform(old, -1), ChangeBatch::uniform(new, 1)])
}

/// `old` with the assigned columns replaced by `assignments` evaluated over
/// `input` (row-aligned with `old`), cast and checked like any table row.
fn assign(
    relation: &Relation,
    old: &RecordBatch,
    input: &RecordBatch,
    assignments: &[(usize, Arc<dyn PhysicalExpr>)],
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = old.columns().to_vec();
    for (index, expr) in assignments {
        let value = expr.evaluate(input)?.into_array(old.num_rows())?;
        if let Some(slot) = columns.get_mut(*index) {
            *slot = value;
        }
    }
    // Assigned values may have other types than their columns: conform casts.
    let fields: Vec<_> = relation
        .schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| datafusion::arrow::datatypes::Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    let assigned = RecordBatch::try_new(Arc::new(datafusion::arrow::datatypes::Schema::new(fields)), columns)?;
    conform(relation, &assigned)
}

/// The rows of the table matching all `filters` (at the writer's snapshot).
fn matching(relation: &Relation, writer: &dyn TableWriter, filters: &[Arc<dyn PhysicalExpr>]) -> Result<RecordBatch> {
    let snapshot = writer.snapshot();
    let mut rows = storage::scan_all(relation, snapshot.as_ref())?;
    for filter in filters {
        let mask = filter.evaluate(&rows)?.into_array(rows.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| SqlError::new(sqlstate::DATATYPE_MISMATCH, "argument of WHERE must be type boolean"))?;
        rows = filter_record_batch(&rows, &crate::stream::change::null_as_false(mask))?;
    }
    Ok(rows)
}

/// Deletes the rows matching `filters`; returns how many.
pub fn delete(
    writer: &mut dyn TableWriter,
    relation: &Arc<Relation>,
    filters: &[Arc<dyn PhysicalExpr>],
) -> Result<usize> {
    check_writable(relation)?;
    let rows = matching(relation, writer, filters)?;
    let count = rows.num_rows();
    if count > 0 {
        writer.commit(vec![(relation.clone(), ChangeBatch::uniform(rows, -1))])?;
    }
    Ok(count)
}

/// Updates the rows matching `filters`: `assignments` gives the new value
/// expression per column index (other columns keep theirs).
pub fn update(
    writer: &mut dyn TableWriter,
    relation: &Arc<Relation>,
    assignments: &[(usize, Arc<dyn PhysicalExpr>)],
    filters: &[Arc<dyn PhysicalExpr>],
) -> Result<usize> {
    check_writable(relation)?;
    let old = matching(relation, writer, filters)?;
    let count = old.num_rows();
    if count == 0 {
        return Ok(0);
    }
    let new = assign(relation, &old, &old, assignments)?;
    if let Some(codec) = &relation.key_codec {
        // New keys must be unique among themselves and against rows not updated.
        let snapshot = writer.snapshot();
        let key_of = |batch: &RecordBatch| -> Result<datafusion::arrow::row::Rows> {
            let cols: Vec<ArrayRef> = relation.primary_key.iter().map(|&i| batch.column(i).clone()).collect();
            codec.encode(&cols)
        };
        let old_keys = key_of(&old)?;
        let new_keys = key_of(&new)?;
        let freed: HashSet<&[u8]> = (0..count).map(|i| old_keys.row(i).data()).collect();
        let mut seen: HashSet<&[u8]> = HashSet::new();
        for i in 0..count {
            let key = new_keys.row(i).data();
            if !seen.insert(key) || (!freed.contains(key) && storage::contains_key(relation, snapshot.as_ref(), key)) {
                return Err(unique_violation(relation, &new, i));
            }
        }
    }
    let change = ChangeBatch::concat(&relation.schema, &[ChangeBatch::uniform(old, -1), ChangeBatch::uniform(new, 1)])?;
    writer.commit(vec![(relation.clone(), change)])?;
    Ok(count)
}
