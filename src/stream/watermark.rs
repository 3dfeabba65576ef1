//! Event-time watermarks: how far event time has progressed, per column.
//!
//! A table declared with `WATERMARK FOR ts AS ts - INTERVAL '5' SECOND`
//! has, after every epoch, a watermark: the largest value of the expression
//! over all rows inserted so far. It promises that rows arriving later have
//! `ts` at or above it; a row below it is *late*. Watermarks never go back.
//!
//! Each epoch carries every watermarked relation's watermark as of the start
//! of the epoch (`before`, what lateness is judged by) and as of its end
//! (`after`, what windows are closed by). Operators pass them on per output
//! column: a filter keeps them, a projection derives them through
//! expressions that cannot decrease as their column grows (`ts + INTERVAL`,
//! `date_bin(…, ts)`, casts — see [`monotone_column`]), a union takes the
//! smallest of its inputs, a join the smaller of two joined keys, an
//! aggregate keeps those of its group keys. Watermark-driven operators then
//! close what can no longer change: a windowed aggregate finalizes (and with
//! EMIT ON WINDOW CLOSE, emits) windows below the watermark and frees their
//! state, an interval join forgets rows that no future row can match. Late
//! changes to such state are dropped and counted ([`ViewStats`]).
//!
//! Values are `ScalarValue`s of the column's type. Table watermarks
//! (timestamps and dates) are stored and logged as 64-bit integers in the
//! column's own unit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::kernels::cmp::lt;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, Operator as BinaryOp};
use datafusion::physical_plan::PhysicalExpr;

use super::arrival::Arrival;
use crate::error::{Result, SqlError};

/// One column's watermark in one epoch. `None` values: no row yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watermark {
    /// As of the start of the epoch: this epoch's rows below it are late.
    pub before: Option<ScalarValue>,
    /// As of the end of the epoch: no later row is below it.
    pub after: Option<ScalarValue>,
    /// The input has had no rows for its idle timeout: it does not hold
    /// back a watermark combined with others (and was so in the previous
    /// epoch: `was_idle`).
    pub idle: bool,
    pub was_idle: bool,
}

impl Watermark {
    /// A watermark that does not move in this epoch.
    pub fn steady(value: Option<ScalarValue>) -> Self {
        Self { before: value.clone(), after: value, ..Self::default() }
    }
    pub fn new(before: Option<ScalarValue>, after: Option<ScalarValue>) -> Self {
        Self { before, after, ..Self::default() }
    }
    /// Moved in this epoch (its value, or whether it is idle).
    pub fn advanced(&self) -> bool {
        self.before != self.after || self.idle != self.was_idle
    }
}

/// The watermark of each column of a relation or operator output; `None`
/// where a column has none.
pub type Watermarks = Vec<Option<Watermark>>;

/// No watermark on any of `width` columns.
pub fn none(width: usize) -> Watermarks {
    vec![None; width]
}

/// The watermarks of several inputs read as one (a union): a column has a
/// watermark if it has one in every input, the smallest.
pub fn union_of(inputs: impl IntoIterator<Item = Watermarks>, width: usize) -> Watermarks {
    let mut merged: Option<Watermarks> = None;
    for theirs in inputs {
        merged = Some(match merged {
            None => theirs,
            Some(ours) => ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => Some(min(a, b)),
                    _ => None,
                })
                .collect(),
        });
    }
    merged.unwrap_or_else(|| none(width))
}

/// The smaller of two watermark values; no value (no row yet) on either
/// side holds the result back.
pub fn min_value(a: &Option<ScalarValue>, b: &Option<ScalarValue>) -> Option<ScalarValue> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.partial_cmp(a).is_some_and(|o| o.is_lt()) { b.clone() } else { a.clone() }),
        _ => None,
    }
}

/// The smaller of two watermarks, leaving out an idle one (both idle: idle).
pub fn min(a: &Watermark, b: &Watermark) -> Watermark {
    let before = match (a.was_idle, b.was_idle) {
        (true, false) => b.before.clone(),
        (false, true) => a.before.clone(),
        _ => min_value(&a.before, &b.before),
    };
    let after = match (a.idle, b.idle) {
        (true, false) => b.after.clone(),
        (false, true) => a.after.clone(),
        _ => min_value(&a.after, &b.after),
    };
    Watermark { before, after, idle: a.idle && b.idle, was_idle: a.was_idle && b.was_idle }
}

/// The larger of two values (a watermark only moves forward).
pub fn max_value(a: Option<ScalarValue>, b: Option<ScalarValue>) -> Option<ScalarValue> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.partial_cmp(&a).is_some_and(|o| o.is_gt()) { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Which rows of `values` lie below `watermark` (NULLs never do).
pub fn below(values: &ArrayRef, watermark: &ScalarValue) -> Result<BooleanArray> {
    let scalar = watermark.cast_to(values.data_type())?.to_scalar()?;
    let mask = lt(values, &scalar)?;
    Ok(crate::stream::change::null_as_false(&mask))
}

/// If `expr` cannot decrease when one column of `schema` grows (and reads
/// no other column), that column's index: a column itself, `+`/`-` of a
/// constant, casts to time types, `date_bin` and `date_trunc` with constant
/// arguments. Such an expression evaluated on a column's watermark is a
/// watermark for its result.
pub fn monotone_column(expr: &Expr, schema: &DFSchema) -> Option<usize> {
    match expr {
        Expr::Column(column) => schema.index_of_column(column).ok(),
        Expr::Alias(alias) => monotone_column(&alias.expr, schema),
        Expr::Cast(cast) if is_time_type(cast.field.data_type()) => monotone_column(&cast.expr, schema),
        Expr::TryCast(cast) if is_time_type(cast.field.data_type()) => monotone_column(&cast.expr, schema),
        Expr::BinaryExpr(binary) => match binary.op {
            BinaryOp::Plus | BinaryOp::Minus if is_constant(&binary.right) => monotone_column(&binary.left, schema),
            BinaryOp::Plus if is_constant(&binary.left) => monotone_column(&binary.right, schema),
            _ => None,
        },
        Expr::ScalarFunction(call) => {
            let name = call.func.name().to_ascii_lowercase();
            let args = &call.args;
            match name.as_str() {
                "date_bin" if args.iter().enumerate().all(|(i, a)| i == 1 || is_constant(a)) => {
                    monotone_column(args.get(1)?, schema)
                }
                "date_trunc" | "datetrunc" => match args.as_slice() {
                    [unit, time] if is_constant(unit) => monotone_column(time, schema),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_constant(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(..) => true,
        Expr::Alias(alias) => is_constant(&alias.expr),
        Expr::Cast(cast) => is_constant(&cast.expr),
        Expr::BinaryExpr(binary) => is_constant(&binary.left) && is_constant(&binary.right),
        _ => false,
    }
}

pub fn is_time_type(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64)
}

/// Derives output watermarks through expressions: `exprs[i]` is monotone in
/// input column `columns[i]` (from [`monotone_column`]), or not (`None`).
#[derive(Clone)]
pub struct Derivation {
    input_schema: SchemaRef,
    outputs: Vec<Option<(Arc<dyn PhysicalExpr>, usize)>>,
}

impl Derivation {
    pub fn new(input_schema: SchemaRef, exprs: &[Arc<dyn PhysicalExpr>], columns: &[Option<usize>]) -> Self {
        let outputs = exprs.iter().zip(columns).map(|(e, c)| c.map(|c| (e.clone(), c))).collect();
        Self { input_schema, outputs }
    }

    /// No derivation (an operator that passes nothing on).
    pub fn is_empty(&self) -> bool {
        self.outputs.iter().all(Option::is_none)
    }

    /// The output columns' watermarks given the input columns'.
    pub fn derive(&self, input: &Watermarks) -> Result<Watermarks> {
        self.outputs
            .iter()
            .map(|output| {
                let Some((expr, column)) = output else { return Ok(None) };
                let Some(Some(watermark)) = input.get(*column) else { return Ok(None) };
                Ok(Some(Watermark {
                    before: self.evaluate(expr, *column, &watermark.before)?,
                    after: self.evaluate(expr, *column, &watermark.after)?,
                    idle: watermark.idle,
                    was_idle: watermark.was_idle,
                }))
            })
            .collect()
    }

    fn evaluate(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        column: usize,
        value: &Option<ScalarValue>,
    ) -> Result<Option<ScalarValue>> {
        let Some(value) = value else { return Ok(None) };
        let columns: Vec<ArrayRef> = self
            .input_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                if i == column {
                    Ok(value.cast_to(field.data_type())?.to_array()?)
                } else {
                    Ok(new_null_array(field.data_type(), 1))
                }
            })
            .collect::<Result<_>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(1));
        let batch = RecordBatch::try_new_with_options(self.input_schema.clone(), columns, &options)?;
        let result = expr.evaluate(&batch)?.into_array(1)?;
        if result.is_null(0) {
            return Ok(None);
        }
        Ok(Some(ScalarValue::try_from_array(&result, 0)?))
    }
}

/// A table watermark value as a 64-bit integer in the column's unit.
pub fn to_i64(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampSecond(v, _)
        | ScalarValue::TimestampMillisecond(v, _)
        | ScalarValue::TimestampMicrosecond(v, _)
        | ScalarValue::TimestampNanosecond(v, _)
        | ScalarValue::Date64(v) => *v,
        ScalarValue::Date32(v) => v.map(i64::from),
        _ => None,
    }
}

/// The value [`to_i64`] stored, as a value of `data_type`.
pub fn from_i64(value: i64, data_type: &DataType) -> Result<ScalarValue> {
    Ok(match data_type {
        DataType::Timestamp(TimeUnit::Second, tz) => ScalarValue::TimestampSecond(Some(value), tz.clone()),
        DataType::Timestamp(TimeUnit::Millisecond, tz) => ScalarValue::TimestampMillisecond(Some(value), tz.clone()),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => ScalarValue::TimestampMicrosecond(Some(value), tz.clone()),
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => ScalarValue::TimestampNanosecond(Some(value), tz.clone()),
        DataType::Date64 => ScalarValue::Date64(Some(value)),
        DataType::Date32 => {
            ScalarValue::Date32(Some(i32::try_from(value).map_err(|_| SqlError::internal("stored date out of range"))?))
        }
        other => return Err(SqlError::internal(format!("a watermark of type {other}"))),
    })
}

/// What a view's operators report about event time, shared by all of
/// them (and all their partitioned copies). Stored with the view's state at
/// checkpoints.
#[derive(Debug, Default)]
pub struct ViewStats {
    /// Changes dropped because they arrived behind the watermark, into
    /// state that was already closed.
    late_rows: AtomicU64,
    /// Rows the view's source readers have read (since the server started).
    source_rows: AtomicU64,
    /// The view's source readers, and how many have read their source to
    /// the end.
    source_readers: AtomicU64,
    finished_readers: AtomicU64,
    /// Readers whose reads a replay cannot repeat (the view must
    /// checkpoint every epoch).
    unreplayable_readers: AtomicU64,
    /// Readers that cannot say whether records have come (generators,
    /// files): only a read finds out.
    silent_readers: AtomicU64,
    /// The others' arrival flags (see `stream::arrival`); weak, so the
    /// readers of a rebuilt dataflow leave with it.
    arrivals: parking_lot::Mutex<Vec<std::sync::Weak<Arrival>>>,
    /// Records the view's source readers could not decode (since start).
    bad_records: AtomicU64,
    /// Per source reader: the source's name and the state prefix under
    /// which the reader keeps its bad records.
    bad_record_stores: parking_lot::Mutex<Vec<(String, Vec<u8>)>>,
    /// Per source read: how reading it goes, as its reader last said.
    source_status: parking_lot::Mutex<std::collections::BTreeMap<String, String>>,
}

impl ViewStats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn add_late(&self, rows: u64) {
        if rows > 0 {
            self.late_rows.fetch_add(rows, Ordering::Relaxed);
        }
    }
    pub fn late_rows(&self) -> u64 {
        self.late_rows.load(Ordering::Relaxed)
    }
    pub fn set_late_rows(&self, rows: u64) {
        self.late_rows.store(rows, Ordering::Relaxed);
    }
    pub fn add_source_rows(&self, rows: u64) {
        self.source_rows.fetch_add(rows, Ordering::Relaxed);
    }
    pub fn source_rows(&self) -> u64 {
        self.source_rows.load(Ordering::Relaxed)
    }
    /// A source reader of the view; `arrival`: its flag, if it has one.
    pub fn register_reader(&self, arrival: Option<Arc<Arrival>>) {
        self.source_readers.fetch_add(1, Ordering::Relaxed);
        match arrival {
            Some(arrival) => self.arrivals.lock().push(Arc::downgrade(&arrival)),
            None => {
                self.silent_readers.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    /// Whether an epoch might read records for this view: some reader
    /// cannot tell, or one has been told records came. Arrivals from now
    /// on wake `pump`.
    pub fn may_have_records(&self, pump: &Arc<tokio::sync::Notify>) -> bool {
        if self.silent_readers.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let mut arrivals = self.arrivals.lock();
        let mut pending = false;
        // One pass: flags of readers gone with a rebuilt dataflow leave;
        // the wake is registered before each look, so an arrival after it
        // wakes the pump.
        arrivals.retain(|weak| match weak.upgrade() {
            Some(arrival) => {
                arrival.wake(pump);
                pending |= arrival.pending();
                true
            }
            None => false,
        });
        arrivals.is_empty() || pending
    }
    /// Forgets the readers registered so far, before the view's operators
    /// are built anew (after a failed store write): the new readers
    /// register themselves, and the old ones' counts would make a finite
    /// source's view never count as read to its end.
    pub fn forget_readers(&self) {
        for counter in [&self.source_readers, &self.finished_readers, &self.unreplayable_readers, &self.silent_readers]
        {
            counter.store(0, Ordering::Relaxed);
        }
        self.arrivals.lock().clear();
    }
    /// Called once per reader that reaches the end of a finite source.
    pub fn reader_finished(&self) {
        self.finished_readers.fetch_add(1, Ordering::Relaxed);
    }
    /// The view reads sources, and all of them are finite and read whole.
    pub fn sources_done(&self) -> bool {
        let readers = self.source_readers.load(Ordering::Relaxed);
        readers > 0 && self.finished_readers.load(Ordering::Relaxed) >= readers
    }
    pub fn register_bad_records(&self, source: &str, prefix: &[u8]) {
        let mut stores = self.bad_record_stores.lock();
        if !stores.iter().any(|(_, p)| p == prefix) {
            stores.push((source.to_string(), prefix.to_vec()));
        }
    }
    pub fn bad_record_stores(&self) -> Vec<(String, Vec<u8>)> {
        self.bad_record_stores.lock().clone()
    }
    pub fn set_source_status(&self, source: &str, status: String) {
        let mut statuses = self.source_status.lock();
        if statuses.get(source) != Some(&status) {
            statuses.insert(source.to_string(), status);
        }
    }
    pub fn source_status(&self) -> Vec<(String, String)> {
        self.source_status.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    pub fn add_bad_records(&self, records: u64) {
        self.bad_records.fetch_add(records, Ordering::Relaxed);
    }
    pub fn bad_records(&self) -> u64 {
        self.bad_records.load(Ordering::Relaxed)
    }
    pub fn register_unreplayable_reader(&self) {
        self.unreplayable_readers.fetch_add(1, Ordering::Relaxed);
    }
    /// Some source the view reads cannot be read again the same way.
    pub fn reads_unreplayable(&self) -> bool {
        self.unreplayable_readers.load(Ordering::Relaxed) > 0
    }
    pub fn reads_sources(&self) -> bool {
        self.source_readers.load(Ordering::Relaxed) > 0
    }
}

/// `WATERMARK FOR column AS expression` of a table.
pub struct TableWatermark {
    pub column: usize,
    /// Over the table's columns; of the column's type.
    pub expression: Arc<dyn PhysicalExpr>,
    /// The expression as written.
    pub text: String,
    /// As of the last committed epoch (`None` before the first row).
    pub value: parking_lot::Mutex<Option<ScalarValue>>,
    /// With no inserted row for this long (nanoseconds) the table is idle:
    /// it no longer holds back watermarks combined with others'.
    pub idle_timeout: Option<i64>,
    /// Epoch time of the last insert (or of the server's start), and
    /// whether the last epoch found the table idle.
    pub last_insert: parking_lot::Mutex<i64>,
    pub idle: parking_lot::Mutex<bool>,
}

impl TableWatermark {
    /// Whether the table is idle at epoch time `now`.
    pub fn idle_at(&self, now: i64) -> bool {
        self.idle_timeout.is_some_and(|timeout| now.saturating_sub(*self.last_insert.lock()) >= timeout)
    }

    /// The watermark once `change` is applied: the largest expression value
    /// of the inserted rows, if above the current one.
    ///
    /// The expression grows with the column (CREATE checks it is monotone
    /// in it, and that the column is a timestamp or a date), so its largest
    /// value is its value at the row with the largest column value: it is
    /// evaluated on that one row, not on every row (an interval subtraction
    /// per row is costly).
    pub fn advance(
        &self,
        current: Option<ScalarValue>,
        change: &crate::stream::ChangeBatch,
        data_type: &DataType,
    ) -> Result<Option<ScalarValue>> {
        use datafusion::arrow::array::{Array, AsArray};
        use datafusion::arrow::datatypes::Int64Type;
        let values = datafusion::arrow::compute::cast(change.rows.column(self.column), &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let mut highest: Option<(usize, i64)> = None;
        for (row, (value, weight)) in values.iter().zip(change.weights.values()).enumerate() {
            if let Some(value) = value
                && *weight > 0
                && highest.is_none_or(|(_, h)| value > h)
            {
                highest = Some((row, value));
            }
        }
        let Some((row, _)) = highest else { return Ok(current) };
        let value = self.expression.evaluate(&change.rows.slice(row, 1))?.into_array(1)?;
        let value = datafusion::arrow::compute::cast(&value, &DataType::Int64)?;
        let value = value.as_primitive::<Int64Type>();
        let highest = if value.is_valid(0) { Some(from_i64(value.value(0), data_type)?) } else { None };
        Ok(max_value(current, highest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampNanosecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::{SessionContext, col, lit};

    fn ts(nanos: i64) -> ScalarValue {
        ScalarValue::TimestampNanosecond(Some(nanos), None)
    }

    /// The tests' input: `(v BIGINT, ts TIMESTAMP)`, as Arrow and DataFusion schemas.
    fn value_and_time() -> (SchemaRef, DFSchema) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]));
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).expect("schema");
        (schema, df_schema)
    }

    /// `INTERVAL 'n' SECOND` as a literal.
    fn seconds(n: i64) -> datafusion::logical_expr::Expr {
        lit(ScalarValue::IntervalMonthDayNano(Some(datafusion::arrow::datatypes::IntervalMonthDayNano::new(
            0,
            0,
            n * 1_000_000_000,
        ))))
    }

    #[test]
    fn monotone_expressions_derive_watermarks() {
        let (schema, df_schema) = value_and_time();
        let ten_seconds = seconds(10);
        let binned = datafusion::functions::expr_fn::date_bin(ten_seconds.clone(), col("ts"), lit(ts(0)));
        let shifted = binned.clone() - ten_seconds;
        assert_eq!(monotone_column(&binned, &df_schema), Some(1));
        assert_eq!(monotone_column(&shifted, &df_schema), Some(1));
        assert_eq!(monotone_column(&col("v"), &df_schema), Some(0));
        assert_eq!(monotone_column(&(col("v") * lit(-1i64)), &df_schema), None);
        assert_eq!(monotone_column(&(col("v") + col("v")), &df_schema), None);

        let state = SessionContext::new().state();
        let physical: Vec<Arc<dyn PhysicalExpr>> = [&binned, &shifted, &col("v")]
            .iter()
            .map(|e| state.create_physical_expr((*e).clone(), &df_schema).expect("physical"))
            .collect();
        let columns = [Some(1), Some(1), None];
        let derivation = Derivation::new(schema, &physical, &columns);
        let input = vec![None, Some(Watermark::new(Some(ts(25_000_000_000)), Some(ts(31_000_000_000))))];
        let derived = derivation.derive(&input).expect("derive");
        assert_eq!(derived[0], Some(Watermark::new(Some(ts(20_000_000_000)), Some(ts(30_000_000_000)))));
        assert_eq!(derived[1], Some(Watermark::new(Some(ts(10_000_000_000)), Some(ts(20_000_000_000)))));
        assert_eq!(derived[2], None);
    }

    /// `advance` takes the expression at the newest inserted row: not a
    /// retracted row's, not a NULL's, and never below the current value.
    #[test]
    fn a_table_watermark_advances_to_the_newest_inserted_row() {
        let (schema, df_schema) = value_and_time();
        let expression =
            SessionContext::new().state().create_physical_expr(col("ts") - seconds(4), &df_schema).expect("physical");
        let watermark = TableWatermark {
            column: 1,
            expression,
            text: "ts - INTERVAL '4' SECOND".into(),
            value: parking_lot::Mutex::new(None),
            idle_timeout: None,
            last_insert: parking_lot::Mutex::new(0),
            idle: parking_lot::Mutex::new(false),
        };
        let change = |times: Vec<Option<i64>>, weights: Vec<i64>| {
            let rows = datafusion::arrow::array::RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(datafusion::arrow::array::Int64Array::from(vec![1; times.len()])),
                    Arc::new(TimestampNanosecondArray::from(times)),
                ],
            )
            .expect("rows");
            crate::stream::ChangeBatch::new(rows, datafusion::arrow::array::Int64Array::from(weights))
        };
        let data_type = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let s = 1_000_000_000;
        let rows = change(vec![Some(7 * s), None, Some(20 * s), Some(9 * s)], vec![1, 1, -1, 1]);
        assert_eq!(watermark.advance(None, &rows, &data_type).expect("advance"), Some(ts(5 * s)));
        assert_eq!(watermark.advance(Some(ts(6 * s)), &rows, &data_type).expect("advance"), Some(ts(6 * s)));
        let nothing_inserted = change(vec![Some(30 * s), None], vec![-1, 1]);
        assert_eq!(watermark.advance(Some(ts(s)), &nothing_inserted, &data_type).expect("advance"), Some(ts(s)));
    }

    #[test]
    fn lateness_and_order_of_values() {
        let values: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![Some(5), None, Some(10), Some(11)]));
        let mask = below(&values, &ts(10)).expect("below");
        assert_eq!(mask, BooleanArray::from(vec![true, false, false, false]));
        assert_eq!(min_value(&Some(ts(3)), &Some(ts(2))), Some(ts(2)));
        assert_eq!(min_value(&Some(ts(3)), &None), None);
        assert_eq!(max_value(Some(ts(3)), None), Some(ts(3)));
        assert_eq!(max_value(Some(ts(3)), Some(ts(4))), Some(ts(4)));
        // An idle input does not hold back the other.
        let busy = Watermark::new(Some(ts(5)), Some(ts(9)));
        let idle = Watermark { idle: true, was_idle: true, ..Watermark::steady(None) };
        assert_eq!(min(&busy, &idle), busy);
        assert_eq!(min(&idle, &busy), busy);
        let going_idle = Watermark { idle: true, ..Watermark::steady(Some(ts(1))) };
        assert_eq!(min(&busy, &going_idle), Watermark::new(Some(ts(1)), Some(ts(9))));
        assert!(going_idle.advanced());
        for ty in [DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), DataType::Date32] {
            let value = from_i64(42, &ty).expect("from");
            assert_eq!(to_i64(&value), Some(42));
            assert_eq!(value.data_type(), ty);
        }
    }
}
