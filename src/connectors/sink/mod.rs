//! Sinks: where a view's changes go.
//!
//! ```sql
//! CREATE SINK orders_out FROM revenue
//! WITH (connector = 'kafka', topic = 'revenue', properties.bootstrap.server = 'host:9092',
//!       type = 'upsert', primary_key = 'region')
//! FORMAT UPSERT ENCODE JSON;
//! CREATE SINK revenue_pg FROM revenue
//! WITH (connector = 'postgres', url = 'postgres://user@host:5432/db', table = 'revenue',
//!       primary_key = 'region');
//! CREATE SINK revenue_files FROM revenue WITH (connector = 'file', path = '/out/revenue');
//! CREATE SINK measured FROM revenue WITH (connector = 'blackhole');
//! ```
//!
//! A sink is maintained like a materialized view, but instead of storing
//! rows its dataflow writes each epoch's changes to an outbox in the state
//! store, in the same atomic batch as the epoch (`db::coordinator`).
//! A delivery task (`db::sinks`) hands the outbox to a [`SinkWriter`]
//! epoch by epoch. Each writer records the last epoch it wrote in the
//! external system itself, in the same transaction as the rows (a Postgres
//! table row; a Kafka transaction's message headers), and reads it back
//! after a restart or a lost connection: an epoch already written is
//! skipped, so a crash anywhere repeats and loses nothing downstream.
//!
//! Shapes of output (`type`, by default `upsert` when a `primary_key` is
//! given, else `append-only`): `append-only` (inserted rows; a retraction
//! fails the sink unless `force_append_only = 'true'` drops it), `upsert`
//! (per primary key: the new row, or a delete), `debezium` (Kafka: one
//! Debezium JSON event per key with before/after and op c/u/d).
//!
//! The `blackhole` sink drops every change (no outbox, no delivery): a
//! query's cost without its output's.

pub mod blackhole;
pub mod file;
pub mod kafka;
pub mod postgres;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};

use super::ConnectorOptions;
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::ChangeBatch;
pub use crate::stream::connector::SinkWriter;

/// The SQLSTATE of a sink error no retry can mend (the sink fails).
pub const PERMANENT: &str = sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE;

/// The shape of what a sink writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkType {
    AppendOnly { force: bool },
    Upsert,
    Debezium,
}

fn bad_option(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, message)
}

/// What every sink reads from its options: the type and the key.
pub struct SinkShape {
    pub kind: SinkType,
    /// Key column indices in the sink's schema.
    pub key: Vec<usize>,
    pub schema: SchemaRef,
}

impl SinkShape {
    pub fn new(options: &ConnectorOptions, schema: SchemaRef) -> Result<Self> {
        let force = options.get("force_append_only").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let format = options.get("format").map(str::to_ascii_lowercase);
        let named = options.get("type").map(str::to_ascii_lowercase).or(format);
        let keyed = options.get("primary_key").is_some_and(|k| !k.trim().is_empty());
        let kind = match named.as_deref() {
            // With a key and no type: rows replace rows by key.
            None if keyed => SinkType::Upsert,
            None | Some("append-only") | Some("append_only") | Some("plain") => SinkType::AppendOnly { force },
            Some("upsert") => SinkType::Upsert,
            Some("debezium") => SinkType::Debezium,
            Some(other) => return Err(bad_option(format!("type = '{other}' (append-only, upsert, debezium)"))),
        };
        if let Some(encode) = options.get("encode").filter(|e| !e.eq_ignore_ascii_case("json")) {
            return Err(SqlError::not_supported(format!(
                "ENCODE {} for sinks (encodings: JSON)",
                encode.to_uppercase()
            )));
        }
        let mut key = Vec::new();
        for name in options.get("primary_key").unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let index = schema.index_of(name).map_err(|_| {
                SqlError::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("primary_key column \"{name}\" is not a column of the sink"),
                )
            })?;
            key.push(index);
        }
        if key.is_empty() && kind != (SinkType::AppendOnly { force }) {
            return Err(bad_option("a sink of type upsert or debezium needs primary_key = 'column, …'"));
        }
        Ok(Self { kind, key, schema })
    }

    /// One epoch's changes as the sink's output: per key (or per row, when
    /// append-only) the row to write, and what it replaces.
    pub fn shape(&self, changes: &ChangeBatch) -> Result<Shaped> {
        let weights = changes.weights.values();
        match self.kind {
            SinkType::AppendOnly { force } => {
                if !force && weights.iter().any(|&w| w < 0) {
                    return Err(SqlError::new(
                        PERMANENT,
                        "an append-only sink got a delete or update (use type = 'upsert', or force_append_only = 'true' to drop them)",
                    ));
                }
                let mut take: Vec<u32> = Vec::new();
                for (i, &w) in weights.iter().enumerate() {
                    for _ in 0..w.max(0) {
                        take.push(i as u32);
                    }
                }
                Ok(Shaped {
                    upserts: take_record_batch(&changes.rows, &UInt32Array::from(take))?,
                    ..Shaped::empty(&self.schema)
                })
            }
            SinkType::Upsert | SinkType::Debezium => {
                let converter = RowConverter::new(
                    self.key.iter().map(|&i| SortField::new(self.schema.field(i).data_type().clone())).collect(),
                )?;
                let keys = converter
                    .convert_columns(&self.key.iter().map(|&i| changes.rows.column(i).clone()).collect::<Vec<_>>())?;
                // Per key: the inserted row and the deleted one.
                let mut per_key: HashMap<&[u8], (Option<u32>, Option<u32>)> = HashMap::new();
                let mut order: Vec<&[u8]> = Vec::new();
                for (i, &w) in weights.iter().enumerate() {
                    let key = keys.row(i).data();
                    let entry = per_key.entry(key).or_insert_with(|| {
                        order.push(key);
                        (None, None)
                    });
                    if w > 0 {
                        entry.0 = Some(i as u32);
                    } else if w < 0 {
                        entry.1 = Some(i as u32);
                    }
                }
                let (mut upserts, mut replaced, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
                for key in order {
                    match per_key.get(key).copied().unwrap_or_default() {
                        (Some(new), old) => {
                            upserts.push(new);
                            replaced.push(old);
                        }
                        (None, Some(old)) => deletes.push(old),
                        (None, None) => {}
                    }
                }
                // NULL where a key is new: the rows it replaces are nullable.
                let nullable = crate::stream::change::all_nullable(&self.schema);
                let replaced_indices = UInt32Array::from(replaced);
                let replaced_columns = changes
                    .rows
                    .columns()
                    .iter()
                    .map(|c| datafusion::arrow::compute::take(c, &replaced_indices, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Shaped {
                    upserts: take_record_batch(&changes.rows, &UInt32Array::from(upserts))?,
                    replaced: RecordBatch::try_new_with_options(
                        nullable,
                        replaced_columns,
                        &datafusion::arrow::array::RecordBatchOptions::new()
                            .with_row_count(Some(replaced_indices.len())),
                    )?,
                    deletes: take_record_batch(&changes.rows, &UInt32Array::from(deletes))?,
                })
            }
        }
    }
}

/// An epoch's output: rows to write (and, row for row, the rows they
/// replace, NULL for new keys), and rows whose keys are deleted.
pub struct Shaped {
    pub upserts: RecordBatch,
    pub replaced: RecordBatch,
    pub deletes: RecordBatch,
}

impl Shaped {
    fn empty(schema: &SchemaRef) -> Self {
        Self {
            upserts: RecordBatch::new_empty(schema.clone()),
            replaced: RecordBatch::new_empty(schema.clone()),
            deletes: RecordBatch::new_empty(schema.clone()),
        }
    }
}

/// Rows as JSON objects, one per row, with explicit nulls.
pub fn json_rows(rows: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    if rows.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut buffer = Vec::new();
    let mut writer = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buffer);
    writer.write(rows)?;
    writer.finish()?;
    drop(writer);
    // JSON strings escape newlines: every line is one row.
    Ok(buffer.split(|&b| b == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect())
}

/// Rows as one JSON array.
pub fn json_array(rows: &RecordBatch) -> Result<String> {
    let lines = json_rows(rows)?;
    let mut out = String::with_capacity(lines.iter().map(Vec::len).sum::<usize>() + lines.len() + 2);
    out.push('[');
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&String::from_utf8_lossy(line));
    }
    out.push(']');
    Ok(out)
}

/// The writer for a sink's options.
pub fn writer(name: &str, options: &ConnectorOptions, schema: SchemaRef) -> Result<Arc<dyn SinkWriter>> {
    if options.connector() == Some("blackhole") {
        return Ok(Arc::new(blackhole::BlackholeSink::new(options)?));
    }
    let shape = SinkShape::new(options, schema)?;
    match options.connector() {
        Some("kafka") => Ok(Arc::new(kafka::KafkaSink::new(name, options, shape)?)),
        Some("postgres") | Some("jdbc") => Ok(Arc::new(postgres::PostgresSink::new(name, options, shape)?)),
        Some("file") => Ok(Arc::new(file::FileSink::new(options, shape)?)),
        Some(other) => Err(SqlError::not_supported(format!(
            "sink connector '{other}' (sink connectors: kafka, postgres, file, blackhole)"
        ))),
        None => Err(bad_option("a sink needs WITH (connector = 'kafka' | 'postgres' | 'file' | 'blackhole', …)")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn changes(ids: &[i64], names: &[&str], weights: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let rows = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names.to_vec()))],
        )
        .expect("batch");
        ChangeBatch::new(rows, datafusion::arrow::array::Int64Array::from(weights.to_vec()))
    }

    #[test]
    fn upserts_pair_new_rows_with_what_they_replace() {
        let c = changes(&[1, 1, 2, 3], &["old", "new", "gone", "fresh"], &[-1, 1, -1, 1]);
        let mut options = ConnectorOptions::default();
        options.values.insert("type".into(), "upsert".into());
        options.values.insert("primary_key".into(), "id".into());
        let shape = SinkShape::new(&options, c.rows.schema()).expect("shape");
        let shaped = shape.shape(&c).expect("shaped");
        assert_eq!(
            json_rows(&shaped.upserts).expect("json"),
            vec![br#"{"id":1,"v":"new"}"#.to_vec(), br#"{"id":3,"v":"fresh"}"#.to_vec()]
        );
        assert_eq!(shaped.replaced.num_rows(), 2);
        assert!(shaped.replaced.column(0).is_valid(0) && shaped.replaced.column(0).is_null(1));
        assert_eq!(json_array(&shaped.deletes).expect("json"), r#"[{"id":2,"v":"gone"}]"#);
    }

    #[test]
    fn append_only_refuses_retractions_unless_forced() {
        let c = changes(&[1, 2], &["a", "b"], &[2, -1]);
        let shape = SinkShape::new(&ConnectorOptions::default(), c.rows.schema()).expect("shape");
        assert!(shape.shape(&c).is_err());
        let mut options = ConnectorOptions::default();
        options.values.insert("force_append_only".into(), "true".into());
        let shaped = SinkShape::new(&options, c.rows.schema()).expect("shape").shape(&c).expect("shaped");
        assert_eq!(shaped.upserts.num_rows(), 2);
    }
}
