//! The `datagen` source connector: rows with generated values, per column.
//!
//! ```sql
//! CREATE SOURCE orders (id BIGINT, customer INT, amount DOUBLE, note TEXT, ts TIMESTAMP)
//! WITH (connector = 'datagen', datagen.rows.per.second = 1000,
//!       fields.id.kind = 'sequence', fields.id.start = 1, fields.id.end = 100000,
//!       fields.customer.min = 1, fields.customer.max = 50,
//!       fields.note.length = 8, fields.ts.max_past = '60 seconds');
//! ```
//!
//! Each column is `random` (the default) or a `sequence` (`start`, default
//! 0, up to `end`: the source ends when a sequence does). Random values lie
//! in `min`..=`max` (numbers; default 0..=1000), are `length` characters
//! (text, default 10), or lie within `max_past` before the epoch's time
//! (timestamps, default 1 day; a sequence of timestamps advances one
//! second per row from `start`, default the Unix epoch); `seed` varies
//! them. `datagen.rows.per.second` paces the rows (default 10; 0 = as fast
//! as the views take them), at most `datagen.max.chunk.size` per epoch.
//!
//! Every value is a hash of (seed, column, row number), so the same row
//! number always gets the same values: a replay reads what the lost epochs
//! read.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use super::{BadRecord, Connector, ConnectorOptions, SourcePosition, SourceReader, due};
use crate::error::{Result, SqlError, sqlstate};

#[derive(Debug, Clone)]
enum Values {
    Sequence { start: i64, end: Option<i64> },
    Random { min: f64, max: f64, length: usize, max_past_nanos: i64, seed: u64 },
}

pub struct DatagenReader {
    schema: SchemaRef,
    columns: Vec<Values>,
    gap_nanos: u64,
    chunk: u64,
    /// Rows in all (the shortest sequence's length), if finite.
    total: Option<u64>,
}

fn bad(message: String) -> SqlError {
    SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, message)
}

/// A 64-bit mix of a seed, a column and a row number (splitmix64).
fn hash(seed: u64, column: usize, row: u64) -> u64 {
    let mut z = seed
        .wrapping_add((column as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(row.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl DatagenReader {
    pub fn new(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Self> {
        let schema = declared.filter(|s| !s.fields().is_empty()).ok_or_else(|| {
            bad("connector 'datagen' needs the source's columns, e.g. CREATE SOURCE s (id BIGINT) WITH (…)".into())
        })?;
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().to_ascii_lowercase()).collect();
        options.reject_unknown(&|key| {
            key == "connector"
                || key == "datagen.rows.per.second"
                || key == "datagen.max.chunk.size"
                || key.strip_prefix("fields.").is_some_and(|rest| {
                    rest.rsplit_once('.').is_some_and(|(column, option)| {
                        names.iter().any(|n| n == column)
                            && ["kind", "start", "end", "min", "max", "length", "seed", "max_past"].contains(&option)
                    })
                })
        })?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let name = field.name().to_ascii_lowercase();
            let option = |o: &str| options.get(&format!("fields.{name}.{o}"));
            let number = |o: &str, default: f64| -> Result<f64> {
                match option(o) {
                    None => Ok(default),
                    Some(t) => t.trim().parse().map_err(|_| bad(format!("fields.{name}.{o} = '{t}' is not a number"))),
                }
            };
            let supported = matches!(
                field.data_type(),
                DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::Float32
                    | DataType::Float64
                    | DataType::Utf8
                    | DataType::Boolean
                    | DataType::Timestamp(_, _)
                    | DataType::Decimal128(_, _)
            );
            if !supported {
                return Err(SqlError::not_supported(format!(
                    "datagen column \"{name}\" of type {} (integers, floats, decimals, text, booleans, timestamps)",
                    field.data_type()
                )));
            }
            let values = match option("kind").map(|k| k.to_ascii_lowercase()).as_deref() {
                Some("sequence") => {
                    if matches!(field.data_type(), DataType::Utf8 | DataType::Boolean) {
                        return Err(bad(format!("fields.{name}.kind = 'sequence' needs a number or timestamp column")));
                    }
                    let start = number("start", 0.0)? as i64;
                    let end = option("end").map(|_| number("end", 0.0)).transpose()?.map(|e| e as i64);
                    if end.is_some_and(|e| e < start) {
                        return Err(bad(format!("fields.{name}.end is below fields.{name}.start")));
                    }
                    Values::Sequence { start, end }
                }
                None | Some("random") => {
                    let (min, max) = (number("min", 0.0)?, number("max", 1000.0)?);
                    if max < min {
                        return Err(bad(format!("fields.{name}.max is below fields.{name}.min")));
                    }
                    let max_past_nanos = match option("max_past") {
                        None => 86_400_000_000_000,
                        Some(t) => {
                            crate::duration::parse_nanos(t, crate::duration::Unit::Seconds).ok_or_else(|| {
                                bad(format!("fields.{name}.max_past = '{t}' is not a duration like '10 seconds'"))
                            })?
                        }
                    };
                    Values::Random {
                        min,
                        max,
                        length: number("length", 10.0)?.clamp(0.0, 1_000_000.0) as usize,
                        max_past_nanos: max_past_nanos.max(1),
                        seed: number("seed", 0.0)? as u64,
                    }
                }
                Some(other) => {
                    return Err(bad(format!("fields.{name}.kind = '{other}': it is 'sequence' or 'random'")));
                }
            };
            columns.push(values);
        }
        let total = columns
            .iter()
            .filter_map(|v| match v {
                Values::Sequence { start, end: Some(end) } => Some((end - start + 1) as u64),
                _ => None,
            })
            .min();
        let rate = options.integer("datagen.rows.per.second", 10)?;
        let gap_nanos = if rate == 0 { 0 } else { (1_000_000_000 / rate).max(1) };
        let chunk = options.integer("datagen.max.chunk.size", 10_000)?.max(1);
        Ok(Self { schema, columns, gap_nanos, chunk, total })
    }

    fn column(
        &self,
        index: usize,
        data_type: &DataType,
        rows: std::ops::Range<u64>,
        now_nanos: i64,
    ) -> Result<ArrayRef> {
        let values = self.columns.get(index).ok_or_else(|| bad(format!("datagen has no column {index}")))?;
        let as_f64 = |row: u64| -> f64 {
            match values {
                Values::Sequence { start, .. } => (*start + row as i64) as f64,
                Values::Random { min, max, seed, .. } => {
                    let unit = (hash(*seed, index, row) >> 11) as f64 / (1u64 << 53) as f64;
                    min + unit * (max - min)
                }
            }
        };
        let as_i64 = |row: u64| -> i64 {
            match values {
                Values::Sequence { start, .. } => start + row as i64,
                Values::Random { min, max, seed, .. } => {
                    let (lo, hi) = (min.ceil() as i64, max.floor() as i64);
                    let span = (hi - lo).max(0) as u64 + 1;
                    lo + (hash(*seed, index, row) % span) as i64
                }
            }
        };
        let array: ArrayRef = match data_type {
            DataType::Int16 => Arc::new(Int16Array::from_iter_values(rows.map(|r| as_i64(r) as i16))),
            DataType::Int32 => Arc::new(Int32Array::from_iter_values(rows.map(|r| as_i64(r) as i32))),
            DataType::Int64 => Arc::new(Int64Array::from_iter_values(rows.map(as_i64))),
            DataType::Float32 => Arc::new(Float32Array::from_iter_values(rows.map(|r| as_f64(r) as f32))),
            DataType::Float64 | DataType::Decimal128(_, _) => {
                let floats: ArrayRef = Arc::new(Float64Array::from_iter_values(rows.map(as_f64)));
                if data_type == &DataType::Float64 { floats } else { cast(&floats, data_type)? }
            }
            DataType::Boolean => Arc::new(BooleanArray::from_iter(rows.map(|r| Some(as_i64(r) % 2 == 0)))),
            DataType::Utf8 => {
                let (length, seed) = match values {
                    Values::Random { length, seed, .. } => (*length, *seed),
                    Values::Sequence { .. } => (10, 0),
                };
                const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                Arc::new(StringArray::from_iter_values(rows.map(|r| {
                    (0..length)
                        .map(|i| {
                            let pick = hash(seed, index, r.wrapping_mul(1_000_003).wrapping_add(i as u64)) % 36;
                            LETTERS.get(pick as usize).map_or('a', |&letter| letter as char)
                        })
                        .collect::<String>()
                })))
            }
            DataType::Timestamp(_, _) => {
                let nanos: Vec<i64> = rows
                    .map(|r| match values {
                        Values::Sequence { start, .. } => (start + r as i64).saturating_mul(1_000_000_000),
                        Values::Random { max_past_nanos, seed, .. } => {
                            now_nanos - (hash(*seed, index, r) % *max_past_nanos as u64) as i64
                        }
                    })
                    .collect();
                let array: ArrayRef = Arc::new(datafusion::arrow::array::TimestampNanosecondArray::from(nanos));
                let target = data_type.clone();
                if matches!(target, DataType::Timestamp(TimeUnit::Nanosecond, None)) {
                    array
                } else {
                    cast(&array, &target)?
                }
            }
            other => return Err(SqlError::not_supported(format!("datagen values of type {other}"))),
        };
        Ok(array)
    }
}

impl Connector for DatagenReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl SourceReader for DatagenReader {
    fn read(
        &self,
        position: &mut SourcePosition,
        now_nanos: i64,
        max_records: usize,
        _bad: &mut Vec<BadRecord>,
    ) -> Result<RecordBatch> {
        let due = due(position, now_nanos, self.gap_nanos);
        if position.started_nanos == 0 {
            position.started_nanos = now_nanos.max(1);
        }
        let end = due
            .min(self.total.unwrap_or(u64::MAX))
            .min(position.next.saturating_add(self.chunk.min(max_records as u64)));
        if end <= position.next {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let rows = position.next..end;
        let columns = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| self.column(i, f.data_type(), rows.clone(), now_nanos))
            .collect::<Result<Vec<_>>>()?;
        position.next = end;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn exhausted(&self, position: &SourcePosition) -> bool {
        self.total.is_some_and(|t| position.next >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
        ConnectorOptions { values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn sequences_end_the_source_and_values_repeat_by_row_number() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("n", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let opts = options(&[
            ("connector", "datagen"),
            ("datagen.rows.per.second", "0"),
            ("datagen.max.chunk.size", "4"),
            ("fields.id.kind", "sequence"),
            ("fields.id.start", "10"),
            ("fields.id.end", "19"),
            ("fields.n.min", "5"),
            ("fields.n.max", "7"),
            ("fields.s.length", "3"),
        ]);
        let reader = DatagenReader::new(&opts, Some(schema)).expect("reader");
        let mut position = SourcePosition::default();
        let mut ids = Vec::new();
        let mut batches = Vec::new();
        while !reader.exhausted(&position) {
            let batch = reader.read(&mut position, 1, 1000, &mut Vec::new()).expect("read");
            assert!(batch.num_rows() <= 4);
            let column = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("ids").clone();
            ids.extend(column.values().iter().copied());
            batches.push(batch);
        }
        assert_eq!(ids, (10..=19).collect::<Vec<i64>>());
        let all = datafusion::arrow::compute::concat_batches(&reader.schema(), &batches).expect("concat");
        let n = all.column(1).as_any().downcast_ref::<Int32Array>().expect("n");
        assert!(n.values().iter().all(|v| (5..=7).contains(v)));
        // Reading again from the start gives the same rows.
        let again = reader.read(&mut SourcePosition::default(), 1, 100, &mut Vec::new()).expect("again");
        assert_eq!(again, all.slice(0, again.num_rows()));
        assert!(
            DatagenReader::new(
                &options(&[("connector", "datagen"), ("fields.zz.kind", "random")]),
                Some(reader.schema())
            )
            .is_err()
        );
    }
}
