//! Temporal filters: `WHERE ts > now() - INTERVAL '1' HOUR` (rows leave the
//! view as time passes) and `WHERE ts <= now()` (rows enter it once their
//! time has come).
//!
//! Each epoch has a time (`EpochInput::now`, logged with the epoch so a
//! replay sees the same). The operator compares every row's value with the
//! threshold `f(now)`; `f` only grows with `now`, so a row's visibility
//! changes at most once:
//! - `value > f(now)` (or `>=`): visible until the threshold reaches it; the
//!   visible rows are kept, by value, to be retracted when it does;
//! - `value < f(now)` (or `<=`): visible from the moment the threshold
//!   passes it; the rows still waiting are kept, by value, to be emitted then.
//! Rows that will never change (expired, or visible for good) hold no state,
//! so a one-hour filter keeps one hour of rows. A coordinator tick steps the
//! view when no data arrives.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::kernels::cmp::{gt, gt_eq, lt, lt_eq};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Result, SqlError};
use crate::state::WriteBatch;
use crate::stream::multiset_state::MultisetState;
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::Watermarks;
use crate::stream::{ChangeBatch, EpochInput, Operator};

/// How a row's value compares with the threshold for the row to be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Comparison {
    /// Rows leave as time passes (rather than enter).
    fn expires(self) -> bool {
        matches!(self, Comparison::Greater | Comparison::GreaterOrEqual)
    }

    fn holds(self, values: &ArrayRef, threshold: &ScalarValue) -> Result<BooleanArray> {
        let scalar = threshold.cast_to(values.data_type())?.to_scalar()?;
        let mask = match self {
            Comparison::Greater => gt(values, &scalar)?,
            Comparison::GreaterOrEqual => gt_eq(values, &scalar)?,
            Comparison::Less => lt(values, &scalar)?,
            Comparison::LessOrEqual => lt_eq(values, &scalar)?,
        };
        Ok(crate::stream::change::null_as_false(&mask))
    }
}

/// The schema the threshold expression is compiled against: `now` alone.
pub fn now_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        NOW_COLUMN,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
        false,
    )]))
}

/// The column standing for the epoch's time in the threshold expression.
pub const NOW_COLUMN: &str = "__freshet_now";

pub struct TemporalFilter {
    input: Box<dyn Operator>,
    /// The row's side of the comparison, over the input's columns.
    value: Arc<dyn PhysicalExpr>,
    /// The time's side, over [`now_schema`].
    threshold: Arc<dyn PhysicalExpr>,
    comparison: Comparison,
    /// Encodes a row's value (memcomparable: the BTreeSet orders by it).
    value_codec: RowCodec,
    row_codec: RowCodec,
    /// Rows whose visibility will change: group = value, member = row.
    pending: MultisetState,
    /// The values `pending` holds rows under.
    values: BTreeSet<Vec<u8>>,
    ready: bool,
}

impl TemporalFilter {
    pub fn new(
        input: Box<dyn Operator>,
        value: Arc<dyn PhysicalExpr>,
        threshold: Arc<dyn PhysicalExpr>,
        comparison: Comparison,
        state_prefix: &[u8],
    ) -> Result<Self> {
        let schema = input.schema();
        let value_type = value.data_type(&schema)?;
        let value_codec = RowCodec::new(Arc::new(Schema::new(vec![Field::new("v", value_type, true)])))?;
        let row_codec = RowCodec::new(schema)?;
        Ok(Self {
            input,
            value,
            threshold,
            comparison,
            value_codec,
            row_codec,
            pending: MultisetState::new(state_prefix),
            values: BTreeSet::new(),
            ready: false,
        })
    }

    fn threshold_at(&self, now_nanos: i64) -> Result<ScalarValue> {
        let now = ScalarValue::TimestampNanosecond(Some(now_nanos), Some("+00:00".into()));
        let options = RecordBatchOptions::new().with_row_count(Some(1));
        let batch = RecordBatch::try_new_with_options(now_schema(), vec![now.to_array()?], &options)?;
        let result = self.threshold.evaluate(&batch)?.into_array(1)?;
        Ok(ScalarValue::try_from_array(&result, 0)?)
    }

    /// After a restart: which values the stored rows are under.
    fn rebuild(&mut self, state: &StateContext) -> Result<()> {
        self.ready = true;
        let stored = self.pending.stored_members(state);
        if stored.is_empty() {
            return Ok(());
        }
        let mut fields = vec![self.value_codec.schema().field(0).clone()];
        fields.extend(
            self.row_codec
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| f.as_ref().clone().with_name(format!("r{i}"))),
        );
        let both = RowCodec::new(Arc::new(Schema::new(fields)))?;
        let decoded = both.decode(stored.iter().map(Vec::as_slice))?;
        let values = self.value_codec.encode(&[decoded.column(0).clone()])?;
        for row in values.iter() {
            self.values.insert(row.data().to_vec());
        }
        Ok(())
    }

    /// The rows whose visibility changed now that the threshold is
    /// `threshold`: retracted (expiring) or emitted (appearing).
    fn transitions(&mut self, state: &StateContext, threshold: &ScalarValue) -> Result<ChangeBatch> {
        let schema = self.input.schema();
        let bound = self
            .value_codec
            .encode(&[threshold.cast_to(self.value_codec.schema().field(0).data_type())?.to_array()?])?;
        let bound = bound.row(0).data().to_vec();
        // Expiring `>`: values <= threshold go; `>=`: values < threshold.
        // Appearing `<`: values < threshold come; `<=`: values <= threshold.
        let inclusive = matches!(self.comparison, Comparison::Greater | Comparison::LessOrEqual);
        let due: Vec<Vec<u8>> = self
            .values
            .iter()
            .take_while(|v| if inclusive { v.as_slice() <= bound.as_slice() } else { v.as_slice() < bound.as_slice() })
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(ChangeBatch::empty(schema));
        }
        self.pending.load(state, due.iter().map(Vec::as_slice));
        let (mut rows, mut weights): (Vec<Vec<u8>>, Vec<i64>) = (Vec::new(), Vec::new());
        let sign = if self.comparison.expires() { -1 } else { 1 };
        for value in &due {
            self.values.remove(value);
            if let Some(members) = self.pending.get(value) {
                for (row, &n) in members {
                    rows.push(row.clone());
                    weights.push(sign * n);
                }
            }
            self.pending.clear(value);
        }
        let batch = self.row_codec.decode(rows.iter().map(Vec::as_slice))?;
        let batch = crate::stream::change::rebind(&schema, &batch)?;
        Ok(ChangeBatch::new(batch, Int64Array::from(weights)))
    }
}

impl Operator for TemporalFilter {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        if !self.ready {
            if input.state.fresh {
                self.ready = true;
            } else {
                self.rebuild(&input.state)?;
            }
        }
        let threshold = self.threshold_at(input.now_nanos)?;
        let changed = self.transitions(&input.state, &threshold)?;
        if delta.is_empty() {
            return Ok(changed);
        }
        let values = self.value.evaluate(&delta.rows)?.into_array(delta.len())?;
        let visible = self.comparison.holds(&values, &threshold)?;
        // Rows to keep: visible ones that will expire; hidden ones (with a
        // value) that will appear.
        let keep = if self.comparison.expires() {
            visible.clone()
        } else {
            let hidden = not(&visible)?;
            let valid = BooleanArray::from_iter((0..values.len()).map(|i| Some(values.is_valid(i))));
            datafusion::arrow::compute::kernels::boolean::and(&hidden, &valid)?
        };
        if keep.true_count() > 0 {
            let encoded_values = self.value_codec.encode(&[values.clone()])?;
            let rows = self.row_codec.encode(delta.rows.columns())?;
            let groups: Vec<Vec<u8>> =
                keep.values().set_indices().map(|i| encoded_values.row(i).data().to_vec()).collect();
            self.pending.load(&input.state, groups.iter().map(Vec::as_slice));
            for (i, group) in keep.values().set_indices().zip(&groups) {
                self.pending.add(group, rows.row(i).data(), delta.weights.value(i));
                if self.pending.contains(group) {
                    self.values.insert(group.clone());
                } else {
                    self.values.remove(group);
                }
            }
        }
        let shown = delta.filter(&visible)?;
        ChangeBatch::concat(&self.input.schema(), &[changed, shown])
    }

    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.input.flush(state, batch)?;
        self.pending.flush(state, batch);
        Ok(())
    }

    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        self.input.watermarks(input)
    }
}

/// Fails unless `expr` reads the epoch's time in a way that only grows
/// with it (`now`, plus or minus a constant, casts, `date_trunc`/`date_bin`).
pub fn check_threshold(schema: &datafusion::common::DFSchema, expr: &datafusion::logical_expr::Expr) -> Result<()> {
    match crate::stream::watermark::monotone_column(expr, schema) {
        Some(0) => Ok(()),
        _ => Err(SqlError::not_supported(format!(
            "function now() in a temporal filter must be now() plus or minus a constant interval (or date_trunc of it), not {expr}"
        ))),
    }
}
