//! The epoch log: the table changes of every epoch committed since the last
//! checkpoint.
//!
//! Operators' state is written to the store only at checkpoints (see
//! `coordinator`), while table rows and view rows are written with every
//! epoch. An epoch between checkpoints therefore also stores its table
//! changes under `state::log_key(epoch)`; after a crash the coordinator
//! feeds them through the views' dataflows again, from the state of the
//! last checkpoint, to bring the operators up to the last committed epoch
//! (the view rows they emit are already stored and are not written again).
//!
//! An entry is a [`Header`] — the epoch's wall-clock time and the
//! watermarks of the tables that have one, which a replay must see exactly
//! as the live epoch did — then a sequence of (relation id: u32, length:
//! u64, Arrow IPC stream) records, one per table written in the epoch; the
//! IPC stream holds the changed rows with their weights as one last column.
//! Arrow IPC is Arrow's own serialization: columns are copied, not
//! converted row by row. Entries written before headers existed start
//! directly with a record (a relation id never starts with the header's
//! 0xFF byte) and replay with no watermarks.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::catalog::Relation;
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::{ChangeBatch, RelationId};

/// Name of the weight column appended to the logged rows.
const WEIGHT_COLUMN: &str = "__freshet_weight";

/// First bytes of an entry's header (then a version byte).
const HEADER_MAGIC: [u8; 2] = [0xFF, b'H'];
const HEADER_VERSION: u8 = 1;

/// One table's watermark in a logged epoch, in the column's unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedWatermark {
    pub relation: RelationId,
    pub column: u16,
    pub before: Option<i64>,
    pub after: Option<i64>,
    /// Idle in this epoch, and in the one before.
    pub idle: bool,
    pub was_idle: bool,
}

/// What a logged epoch saw besides its changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The epoch's wall-clock time, nanoseconds since the Unix epoch.
    pub time_nanos: i64,
    pub watermarks: Vec<LoggedWatermark>,
}

/// Starts an entry with its header (before any record).
pub fn append_header(entry: &mut Vec<u8>, header: &Header) {
    entry.extend_from_slice(&HEADER_MAGIC);
    entry.push(HEADER_VERSION);
    entry.extend_from_slice(&header.time_nanos.to_be_bytes());
    entry.extend_from_slice(&(header.watermarks.len() as u32).to_be_bytes());
    for w in &header.watermarks {
        entry.extend_from_slice(&w.relation.to_be_bytes());
        entry.extend_from_slice(&w.column.to_be_bytes());
        entry.push(
            u8::from(w.before.is_some())
                | (u8::from(w.after.is_some()) << 1)
                | (u8::from(w.idle) << 2)
                | (u8::from(w.was_idle) << 3),
        );
        entry.extend_from_slice(&w.before.unwrap_or(0).to_be_bytes());
        entry.extend_from_slice(&w.after.unwrap_or(0).to_be_bytes());
    }
}

/// Splits an entry into its header (default for entries without one) and
/// the records after it.
fn split_header(entry: &[u8]) -> Result<(Header, &[u8])> {
    if entry.get(..2) != Some(&HEADER_MAGIC[..]) {
        return Ok((Header::default(), entry));
    }
    let corrupt = || SqlError::new(sqlstate::IO_ERROR, "corrupt epoch log entry in the data dir: header");
    let mut rest = entry.get(2..).unwrap_or_default();
    let mut take = |n: usize| -> Result<&[u8]> {
        let (head, tail) = (rest.get(..n).ok_or_else(corrupt)?, rest.get(n..).ok_or_else(corrupt)?);
        rest = tail;
        Ok(head)
    };
    if take(1)?.first() != Some(&HEADER_VERSION) {
        return Err(SqlError::new(sqlstate::IO_ERROR, "epoch log entry of an unknown version in the data dir"));
    }
    let i64_of = |b: &[u8]| -> Result<i64> { Ok(i64::from_be_bytes(b.try_into().map_err(|_| corrupt())?)) };
    let time_nanos = i64_of(take(8)?)?;
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
    let mut watermarks = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let relation = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt())?);
        let column = u16::from_be_bytes(take(2)?.try_into().map_err(|_| corrupt())?);
        let flags = take(1)?.first().copied().ok_or_else(corrupt)?;
        let before = i64_of(take(8)?)?;
        let after = i64_of(take(8)?)?;
        watermarks.push(LoggedWatermark {
            relation,
            column,
            before: (flags & 1 != 0).then_some(before),
            after: (flags & 2 != 0).then_some(after),
            idle: flags & 4 != 0,
            was_idle: flags & 8 != 0,
        });
    }
    Ok((Header { time_nanos, watermarks }, rest))
}

/// Appends one relation's changes of the epoch to `entry`.
pub fn append(entry: &mut Vec<u8>, relation: RelationId, change: &ChangeBatch) -> Result<()> {
    let mut fields: Vec<Arc<Field>> = change.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(WEIGHT_COLUMN, DataType::Int64, false)));
    let schema = Arc::new(Schema::new(fields));
    let mut columns = change.rows.columns().to_vec();
    columns.push(Arc::new(change.weights.clone()));
    let rows = RecordBatch::try_new(schema.clone(), columns)?;

    let mut stream = Vec::new();
    let mut writer = StreamWriter::try_new(&mut stream, &schema)?;
    writer.write(&rows)?;
    writer.finish()?;
    drop(writer);
    entry.extend_from_slice(&relation.to_be_bytes());
    entry.extend_from_slice(&(stream.len() as u64).to_be_bytes());
    entry.extend_from_slice(&stream);
    Ok(())
}

/// A decoded entry.
pub struct Logged {
    pub header: Header,
    pub changes: Vec<(Arc<Relation>, ChangeBatch)>,
}

/// Decodes an entry back into its header and each relation's changes.
/// `resolve` finds a relation by id; records of relations that no longer
/// exist (dropped since) are skipped.
pub fn decode(entry: &[u8], resolve: &dyn Fn(RelationId) -> Option<Arc<Relation>>) -> Result<Logged> {
    let corrupt =
        |what: &str| SqlError::new(sqlstate::IO_ERROR, format!("corrupt epoch log entry in the data dir: {what}"));
    let (header, records) = split_header(entry)?;
    let mut changes = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let (Some(id), Some(len)) = (rest.get(..4), rest.get(4..12)) else {
            return Err(corrupt("truncated record header"));
        };
        let id = u32::from_be_bytes(id.try_into().map_err(|_| corrupt("record header"))?);
        let len = u64::from_be_bytes(len.try_into().map_err(|_| corrupt("record header"))?) as usize;
        let stream = rest.get(12..12usize.saturating_add(len)).ok_or_else(|| corrupt("truncated record"))?;
        rest = rest.get(12 + stream.len()..).unwrap_or_default();
        let Some(relation) = resolve(id) else { continue };
        changes.push((relation.clone(), decode_change(&relation, stream).map_err(|e| corrupt(&e.message))?));
    }
    Ok(Logged { header, changes })
}

/// Decodes the changes of one relation written by [`append`] alone (no
/// header): a sink's outbox entry.
pub fn decode_records(entry: &[u8], relation: &Relation) -> Result<ChangeBatch> {
    let corrupt = || SqlError::new(sqlstate::IO_ERROR, "corrupt sink outbox entry in the data dir");
    let len = entry.get(4..12).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(corrupt)? as usize;
    let stream = entry.get(12..12usize.saturating_add(len)).ok_or_else(corrupt)?;
    decode_change(relation, stream)
}

fn decode_change(relation: &Relation, stream: &[u8]) -> Result<ChangeBatch> {
    let reader = StreamReader::try_new(Cursor::new(stream), None)?;
    let logged_schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    let logged = concat_batches(&logged_schema, &batches)?;
    let width = relation.schema.fields().len();
    if logged.num_columns() != width + 1 {
        return Err(SqlError::internal(format!(
            "{} columns logged for relation {} of {width} columns",
            logged.num_columns() - 1,
            relation.id
        )));
    }
    let weights = logged
        .column(width)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| SqlError::internal("weight column is not Int64"))?
        .clone();
    if weights.null_count() > 0 {
        return Err(SqlError::internal("NULL weight"));
    }
    // The relation's own schema (names, nullability, metadata), so that
    // the dataflow sees exactly what a live epoch gives it.
    let columns = logged.columns().get(..width).ok_or_else(|| SqlError::internal("a logged change lacks columns"))?;
    let rows = RecordBatch::try_new(relation.schema.clone(), columns.to_vec())?;
    Ok(ChangeBatch::new(rows, weights))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::{Header, LoggedWatermark, append, append_header, decode};
    use crate::catalog::{QualifiedName, Relation, RelationKind};
    use crate::stream::ChangeBatch;

    fn table(id: u32) -> Arc<Relation> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let name = QualifiedName { schema: "public".into(), name: format!("t{id}") };
        Arc::new(Relation::new(id, name, RelationKind::Table, schema, vec![0]).expect("relation"))
    }

    fn change(relation: &Relation, ids: &[i64], names: &[Option<&str>], weights: &[i64]) -> ChangeBatch {
        let rows = RecordBatch::try_new(
            relation.schema.clone(),
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names.to_vec()))],
        )
        .expect("rows");
        ChangeBatch::new(rows, Int64Array::from(weights.to_vec()))
    }

    #[test]
    fn entries_decode_to_the_logged_changes_and_skip_dropped_relations() {
        let (t1, t2, dropped) = (table(1), table(2), table(3));
        let first = change(&t1, &[1, 2], &[Some("a"), None], &[1, -1]);
        let second = change(&t2, &[7], &[Some("é")], &[3]);
        let mut entry = Vec::new();
        append(&mut entry, 1, &first).expect("append");
        append(&mut entry, 3, &change(&dropped, &[9], &[None], &[1])).expect("append");
        append(&mut entry, 2, &second).expect("append");
        let resolve = |id: u32| [&t1, &t2].into_iter().find(|t| t.id == id).cloned();
        let decoded = decode(&entry, &resolve).expect("decode");
        assert_eq!(decoded.header, Header::default(), "an entry without a header");
        let decoded = decoded.changes;
        assert_eq!(decoded.len(), 2);
        for ((relation, got), (id, want)) in decoded.iter().zip([(1, &first), (2, &second)]) {
            assert_eq!(relation.id, id);
            assert_eq!(got.rows, want.rows);
            assert_eq!(got.weights.values(), want.weights.values());
            assert_eq!(got.weights.null_count(), 0);
        }
    }

    #[test]
    fn headers_round_trip() {
        let t1 = table(1);
        let header = Header {
            time_nanos: 1_700_000_000_123_456_789,
            watermarks: vec![
                LoggedWatermark { relation: 1, column: 3, before: None, after: Some(-5), idle: true, was_idle: false },
                LoggedWatermark {
                    relation: 9,
                    column: 0,
                    before: Some(7),
                    after: Some(8),
                    idle: false,
                    was_idle: true,
                },
            ],
        };
        let mut entry = Vec::new();
        append_header(&mut entry, &header);
        append(&mut entry, 1, &change(&t1, &[1], &[Some("a")], &[1])).expect("append");
        let decoded = decode(&entry, &|_| Some(t1.clone())).expect("decode");
        assert_eq!(decoded.header, header);
        assert_eq!(decoded.changes.len(), 1);
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_panic() {
        let t1 = table(1);
        let mut entry = Vec::new();
        append_header(
            &mut entry,
            &Header {
                time_nanos: 1,
                watermarks: vec![LoggedWatermark {
                    relation: 1,
                    column: 0,
                    before: None,
                    after: Some(2),
                    idle: false,
                    was_idle: false,
                }],
            },
        );
        append(&mut entry, 1, &change(&t1, &[1], &[Some("a")], &[1])).expect("append");
        let resolve = |_| Some(t1.clone());
        for cut in [1, 5, 12, 20, 40, entry.len() / 2, entry.len() - 1] {
            match decode(&entry[..cut], &resolve) {
                Ok(_) => panic!("an entry cut at {cut} of {} bytes decoded", entry.len()),
                Err(error) => assert!(error.message.contains("corrupt epoch log entry"), "{}", error.message),
            }
        }
    }
}
