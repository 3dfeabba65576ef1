//! GROUP BY with retraction (also DISTINCT, which is a GROUP BY without
//! aggregates, and global aggregates, which are one group with an empty key).
//!
//! Per group the operator keeps one of three things (its [`Mode`]):
//! - live accumulators, when every aggregate can retract (count, sum, avg):
//!   inserts go to `update_batch`, deletes to `retract_batch`;
//! - live accumulators of any function whose result does not depend on the
//!   order of its input (min, max, bool_and, bit_or, ...), when the input
//!   only ever inserts (a source, an inner join of sources, a view stored as
//!   blocks): a group of `max(price)` is then one value, not its rows; or
//! - the multiset of the group's input rows, from which the group's
//!   aggregates are recomputed when it changes (min and max under deletes,
//!   count(DISTINCT), string_agg, array_agg, ordered aggregates...).
//!
//! Either way DataFusion's own accumulators compute the values, so NULL
//! handling and result types are exactly those of the batch engine.
//!
//! The mode a view's aggregate chose is stored with its state (one byte
//! under its own key), so a restart reads groups the way they were written;
//! an aggregate stored before modes were recorded keeps the mode it had.
//!
//! For each group touched in an epoch the operator retracts the row it
//! emitted before and emits the new one (nothing when they are equal).

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, filter, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Accumulator, ColumnarValue};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Result, SqlError};
use crate::state::WriteBatch;
use crate::stream::multiset_state::MultisetState;
use crate::stream::ops::event_time::OpenGroups;
use crate::stream::ops::native_accumulator::{Native, NativeInput, NativeKind};
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::{SlotId, StateContext, ValueState};
use crate::stream::watermark::{Derivation, Watermark, Watermarks};
use crate::stream::{ChangeBatch, EpochInput, Operator};

/// One aggregate call: the function, its argument expressions (ORDER BY
/// expressions appended, as DataFusion's accumulators expect) and FILTER.
#[derive(Clone)]
pub struct AggregateCall {
    pub function: Arc<AggregateFunctionExpr>,
    pub arguments: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl AggregateCall {
    pub fn new(function: Arc<AggregateFunctionExpr>, filter: Option<Arc<dyn PhysicalExpr>>) -> Self {
        let mut arguments = function.expressions();
        arguments.extend(function.order_bys().iter().map(|s| s.expr.clone()));
        Self { function, arguments, filter }
    }

    /// Whether this call can be maintained with `retract_batch`.
    fn retractable(&self) -> bool {
        let name = self.function.fun().name().to_ascii_lowercase();
        matches!(name.as_str(), "count" | "sum" | "avg" | "mean")
            && !self.function.is_distinct()
            && self.function.order_bys().is_empty()
            && self.function.create_sliding_accumulator().is_ok_and(|a| a.supports_retract_batch())
    }

    /// Whether this call can be kept as a live accumulator over an input
    /// that only inserts: its value depends on the set of its input rows,
    /// not on their order, and its `state()` does not consume the
    /// accumulator (it is read at every checkpoint and the group goes on).
    fn accumulable(&self) -> bool {
        let name = self.function.fun().name().to_ascii_lowercase();
        matches!(
            name.as_str(),
            "min"
                | "max"
                | "count"
                | "sum"
                | "avg"
                | "mean"
                | "bool_and"
                | "bool_or"
                | "bit_and"
                | "bit_or"
                | "bit_xor"
        ) && !self.function.is_distinct()
            && self.function.order_bys().is_empty()
    }

    fn accumulator(&self, mode: Mode) -> Result<Box<dyn Accumulator>> {
        Ok(match mode {
            Mode::Retracting => self.function.create_sliding_accumulator()?,
            Mode::Accumulating | Mode::Recomputing => self.function.create_accumulator()?,
        })
    }
}

/// How the operator keeps each group's aggregates (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Live sliding accumulators: inserts update them, deletes retract.
    Retracting,
    /// Live accumulators over an input that only inserts; a delete reaching
    /// them is an internal error.
    Accumulating,
    /// The group's input rows, the aggregates recomputed from them.
    Recomputing,
}

impl Mode {
    /// The cheapest mode that computes `calls` right over an input that
    /// only inserts (`append_only`) or not.
    pub fn choose(calls: &[AggregateCall], append_only: bool) -> Self {
        if append_only && calls.iter().all(AggregateCall::accumulable) {
            Mode::Accumulating
        } else {
            Self::legacy(calls)
        }
    }

    /// The mode of an aggregate stored before the mode was: retracting if
    /// every call can retract, else recomputing.
    fn legacy(calls: &[AggregateCall]) -> Self {
        if calls.iter().all(AggregateCall::retractable) { Mode::Retracting } else { Mode::Recomputing }
    }

    /// What a group holds, as EXPLAIN says it.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Retracting => "groups as retracting accumulators",
            Mode::Accumulating => "groups as accumulators, input only inserts",
            Mode::Recomputing => "groups as their rows",
        }
    }

    /// Whether groups hold live accumulators.
    fn live(self) -> bool {
        self != Mode::Recomputing
    }

    fn byte(self) -> u8 {
        match self {
            Mode::Retracting => 1,
            Mode::Accumulating => 2,
            Mode::Recomputing => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Self> {
        match byte {
            1 => Ok(Mode::Retracting),
            2 => Ok(Mode::Accumulating),
            3 => Ok(Mode::Recomputing),
            other => Err(SqlError::internal(format!("stored aggregate mode {other} is unknown"))),
        }
    }
}

/// A group's live accumulator of one call: inline for the hottest calls
/// over an input that only inserts, else DataFusion's.
enum GroupAccumulator {
    Native(Native),
    Boxed(Box<dyn Accumulator>),
}

impl GroupAccumulator {
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(match self {
            GroupAccumulator::Native(native) => native.evaluate(),
            GroupAccumulator::Boxed(acc) => acc.evaluate()?,
        })
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(match self {
            GroupAccumulator::Native(native) => native.state(),
            GroupAccumulator::Boxed(acc) => acc.state()?,
        })
    }

    /// Takes the stored state in `columns` at `row` (into a fresh accumulator).
    fn restore(&mut self, columns: &[ArrayRef], row: usize) -> Result<()> {
        match self {
            GroupAccumulator::Native(native) => {
                let column = columns.first().ok_or_else(|| SqlError::internal("stored aggregate has no state"))?;
                *native = native.kind().from_state(column, row)?;
            }
            GroupAccumulator::Boxed(acc) => {
                let states: Vec<ArrayRef> = columns.iter().map(|c| c.slice(row, 1)).collect();
                acc.merge_batch(&states)?;
            }
        }
        Ok(())
    }
}

struct Group {
    /// Sum of the weights of the group's input rows.
    count: i64,
    /// Live accumulators (retracting and accumulating modes).
    accumulators: Vec<GroupAccumulator>,
    /// The aggregate values last emitted for this group.
    emitted: Option<Vec<ScalarValue>>,
}

/// How a group is stored: one row of (count, emitted?, emitted values…,
/// accumulator state values…) in the row format, so a whole epoch's groups
/// encode and decode in one vectorized call each.
struct GroupCodec {
    codec: RowCodec,
    calls: usize,
    /// Number of state values of each call's accumulator (the modes with
    /// live accumulators; empty when recomputing).
    state_widths: Vec<usize>,
}

impl GroupCodec {
    fn new(calls: &[AggregateCall], output: &SchemaRef, groups: usize, mode: Mode) -> Result<Self> {
        let mut fields =
            vec![Field::new("count", DataType::Int64, false), Field::new("emitted", DataType::Boolean, false)];
        for field in output.fields().iter().skip(groups) {
            fields.push(field.as_ref().clone().with_nullable(true));
        }
        let mut state_widths = Vec::new();
        if mode.live() {
            for (i, call) in calls.iter().enumerate() {
                // The types of an accumulator's state values, read off a fresh one.
                let state = call.accumulator(mode)?.state()?;
                state_widths.push(state.len());
                for (j, value) in state.iter().enumerate() {
                    fields.push(Field::new(format!("s{i}_{j}"), value.data_type(), true));
                }
            }
        }
        Ok(Self { codec: RowCodec::new(Arc::new(Schema::new(fields)))?, calls: calls.len(), state_widths })
    }

    fn encode(&self, groups: &mut [&mut Group]) -> Result<Vec<Vec<u8>>> {
        let schema = self.codec.schema();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        columns.push(Arc::new(Int64Array::from_iter_values(groups.iter().map(|g| g.count))));
        columns.push(Arc::new(BooleanArray::from_iter(groups.iter().map(|g| Some(g.emitted.is_some())))));
        for call in 0..self.calls {
            let field = schema.field(2 + call);
            let null = ScalarValue::try_from(field.data_type())?;
            let values = groups
                .iter()
                .map(|g| g.emitted.as_ref().and_then(|e| e.get(call)).cloned().unwrap_or_else(|| null.clone()));
            columns.push(scalars_to_array(values, field.data_type())?);
        }
        if !self.state_widths.is_empty() {
            let states: Vec<Vec<ScalarValue>> = groups
                .iter_mut()
                .map(|g| {
                    let mut all = Vec::new();
                    for acc in g.accumulators.iter_mut() {
                        all.extend(acc.state()?);
                    }
                    Ok(all)
                })
                .collect::<Result<_>>()?;
            let first_state = 2 + self.calls;
            for (j, field) in schema.fields().iter().enumerate().skip(first_state) {
                let values = states.iter().map(|s| s.get(j - first_state).cloned().unwrap_or(ScalarValue::Null));
                columns.push(scalars_to_array(values, field.data_type())?);
            }
        }
        let rows = self.codec.encode(&columns)?;
        Ok(rows.iter().map(|r| r.data().to_vec()).collect())
    }

    fn decode(&self, stored: &[&[u8]], fresh: impl Fn() -> Result<Vec<GroupAccumulator>>) -> Result<Vec<Group>> {
        let batch = self.codec.decode(stored.iter().copied())?;
        let counts = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| SqlError::internal("stored aggregate group has no count"))?;
        let emitted = batch
            .column(1)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| SqlError::internal("stored aggregate group has no emitted flag"))?;
        let first_state = 2 + self.calls;
        (0..batch.num_rows())
            .map(|row| {
                let values = if emitted.value(row) {
                    Some(
                        (0..self.calls)
                            .map(|c| Ok(ScalarValue::try_from_array(batch.column(2 + c), row)?))
                            .collect::<Result<Vec<_>>>()?,
                    )
                } else {
                    None
                };
                let mut accumulators = Vec::new();
                if !self.state_widths.is_empty() {
                    accumulators = fresh()?;
                    let mut column = first_state;
                    for (acc, &width) in accumulators.iter_mut().zip(&self.state_widths) {
                        let states = batch.columns().get(column..column + width).ok_or_else(|| {
                            SqlError::internal("stored aggregate group has fewer state values than its calls")
                        })?;
                        acc.restore(states, row)?;
                        column += width;
                    }
                }
                Ok(Group { count: counts.value(row), accumulators, emitted: values })
            })
            .collect()
    }
}

/// The rows of one group touched in an epoch: the first row with its key,
/// positive and negative row indices (each repeated by its weight), and
/// the net change of the group's row count.
/// A group an epoch touches: its state slot, the first row with its key,
/// its rows (ranges of the epoch's inserted and deleted row lists) and
/// their net weight.
struct Touched {
    slot: SlotId,
    first_row: u32,
    inserted: Range<usize>,
    deleted: Range<usize>,
    net: i64,
}

impl Touched {
    fn new(slot: SlotId, first_row: u32) -> Self {
        Self { slot, first_row, inserted: 0..0, deleted: 0..0, net: 0 }
    }
}

fn scalars_to_array(values: impl Iterator<Item = ScalarValue>, data_type: &DataType) -> Result<ArrayRef> {
    let values: Vec<ScalarValue> = values.collect();
    let array = if values.is_empty() {
        datafusion::arrow::array::new_empty_array(data_type)
    } else {
        ScalarValue::iter_to_array(values)?
    };
    Ok(if array.data_type() != data_type { cast(&array, data_type)? } else { array })
}

pub struct Aggregate {
    input: Box<dyn Operator>,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Encodes group keys; `None` for a global aggregate (one empty key).
    group_codec: Option<RowCodec>,
    calls: Vec<AggregateCall>,
    mode: Mode,
    /// Per call, its inline accumulator (accumulating mode only).
    natives: Vec<Option<NativeKind>>,
    /// The mode has been checked against the one stored (first step).
    mode_settled: bool,
    /// The mode's byte, under the empty key.
    stored_mode: ValueState<Vec<u8>>,
    /// Encodes whole input rows (recompute mode).
    input_codec: RowCodec,
    /// Per group: count, emitted values, accumulators (stored).
    groups: ValueState<Group>,
    stored_groups: GroupCodec,
    /// Per group, its input rows (recompute mode).
    rows: MultisetState,
    /// How the group-key columns' watermarks follow from the input's.
    key_watermarks: Derivation,
    /// With a watermarked group-key column: the open groups by event time;
    /// groups the watermark passes are final and leave the state.
    open: Option<OpenGroups>,
    /// EMIT ON WINDOW CLOSE: a group's row is emitted once, when it closes.
    emit_on_close: bool,
    /// The bound closed groups lie below (under the empty key), stored so
    /// that it holds across restarts.
    closed: ValueState<Vec<u8>>,
    schema: SchemaRef,
}

/// How a watermark-driven aggregate closes groups.
pub struct Windowing {
    pub open: OpenGroups,
    pub emit_on_close: bool,
}

impl Aggregate {
    /// `state_prefix`: this operator's key prefix in the state store.
    /// `mode`: how a new aggregate keeps its groups ([`Mode::choose`]; a
    /// restored one keeps the mode stored with it);
    /// `key_watermarks`: the group keys' watermarks from the input's;
    /// `windowing`: set when a group-key column carries one.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: Box<dyn Operator>,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        calls: Vec<AggregateCall>,
        mode: Mode,
        schema: SchemaRef,
        state_prefix: &[u8],
        key_watermarks: Derivation,
        windowing: Option<Windowing>,
    ) -> Result<Self> {
        let input_schema = input.schema();
        let group_codec = if group_exprs.is_empty() {
            None
        } else {
            let key_fields: Vec<_> = schema.fields().iter().take(group_exprs.len()).cloned().collect();
            Some(RowCodec::new(Arc::new(Schema::new(key_fields)))?)
        };
        let stored_groups = GroupCodec::new(&calls, &schema, group_exprs.len(), mode)?;
        let natives = natives(&calls, mode, &input_schema);
        Ok(Self {
            input,
            group_exprs,
            group_codec,
            calls,
            mode,
            natives,
            mode_settled: false,
            stored_mode: ValueState::new(&[state_prefix, &[3]].concat()),
            input_codec: RowCodec::new(input_schema)?,
            groups: ValueState::new(&[state_prefix, &[0]].concat()),
            stored_groups,
            rows: MultisetState::new(&[state_prefix, &[1]].concat()),
            key_watermarks,
            emit_on_close: windowing.as_ref().is_some_and(|w| w.emit_on_close),
            open: windowing.map(|w| w.open),
            closed: ValueState::new(&[state_prefix, &[2]].concat()),
            schema,
        })
    }

    /// The watermark of the group-key column that orders groups in time.
    fn time_watermark(&self, input: &EpochInput) -> Result<Option<Watermark>> {
        let Some(open) = &self.open else { return Ok(None) };
        let derived = self.key_watermarks.derive(&self.input.watermarks(input)?)?;
        Ok(derived.into_iter().nth(open.column).flatten().map(|w| open.bounded(w)))
    }

    /// Finalizes the groups the watermark has passed: with EMIT ON WINDOW
    /// CLOSE emits their rows, and deletes their state either way.
    fn close(&mut self, input: &EpochInput, after: &ScalarValue) -> Result<ChangeBatch> {
        let empty = || ChangeBatch::empty(self.schema.clone());
        let (Some(open), Some(codec)) = (&mut self.open, &self.group_codec) else { return Ok(empty()) };
        let data_type = codec.schema().field(open.column).data_type().clone();
        let closed = open.close(after, &data_type)?;
        if closed.is_empty() {
            return Ok(empty());
        }
        let mode = self.mode;
        let (calls, natives) = (&self.calls, &self.natives);
        let stored_groups = &self.stored_groups;
        let located = self.groups.locate(&input.state, closed.iter(), |stored| {
            stored_groups.decode(stored, || fresh_accumulators(calls, natives, mode))
        })?;
        if !mode.live() {
            self.rows.load(&input.state, closed.iter());
        }
        let mut finals: Vec<(Vec<u8>, Vec<ScalarValue>)> = Vec::new();
        for (key, &distinct) in closed.iter().zip(&located.of_item) {
            let slot = located.slots.get(distinct as usize).copied();
            let group = slot.and_then(|slot| self.groups.value_mut(slot)).and_then(Option::take);
            if let (true, Some(mut group)) = (self.emit_on_close, group)
                && group.count > 0
            {
                finals.push((key.to_vec(), self.evaluate_group(key, &mut group)?));
            }
            if !self.mode.live() {
                self.rows.clear(key);
            }
        }
        let rows: Vec<(&[u8], &Vec<ScalarValue>)> = finals.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        self.output(&rows, 1)
    }

    /// On the first step: a new aggregate stores its mode; a restored one
    /// takes the mode stored with its groups (an aggregate stored before
    /// modes were recorded has the mode it had then).
    fn settle_mode(&mut self, input: &EpochInput) -> Result<()> {
        let read = |stored: &[&[u8]]| Ok(stored.iter().map(|b| b.to_vec()).collect());
        self.stored_mode.load(&input.state, &[Vec::new()], read)?;
        let slot = self.stored_mode.get_mut(&[]).ok_or_else(|| SqlError::internal("aggregate mode not loaded"))?;
        let stored = match slot.as_deref() {
            _ if input.state.fresh => None,
            Some([byte]) => Some(Mode::from_byte(*byte)?),
            Some(_) => return Err(SqlError::internal("stored aggregate mode is not one byte")),
            None => Some(Mode::legacy(&self.calls)),
        };
        match stored {
            None => *slot = Some(vec![self.mode.byte()]),
            Some(mode) if mode != self.mode => {
                self.mode = mode;
                self.natives = natives(&self.calls, mode, &self.input.schema());
                self.stored_groups = GroupCodec::new(&self.calls, &self.schema, self.group_exprs.len(), mode)?;
            }
            Some(_) => {}
        }
        self.mode_settled = true;
        Ok(())
    }

    fn new_group(&self) -> Result<Group> {
        Ok(Group { count: 0, accumulators: self.fresh_accumulators()?, emitted: None })
    }

    fn fresh_accumulators(&self) -> Result<Vec<GroupAccumulator>> {
        fresh_accumulators(&self.calls, &self.natives, self.mode)
    }

    /// Arguments of every call over `batch`, with FILTER applied as a mask.
    fn call_inputs(&self, batch: &RecordBatch) -> Result<Vec<(Vec<ArrayRef>, Option<BooleanArray>)>> {
        self.calls
            .iter()
            .zip(&self.natives)
            .map(|(call, native)| {
                let args = match (native, call.arguments.as_slice()) {
                    // `count(*)` is `count(1)`: an inline count of a constant
                    // needs no column of it (left empty when not NULL).
                    (Some(NativeKind::Count), [argument]) => match argument.evaluate(batch)? {
                        ColumnarValue::Scalar(value) if !value.is_null() => Vec::new(),
                        value => vec![value.into_array(batch.num_rows())?],
                    },
                    _ => super::evaluate(&call.arguments, batch)?,
                };
                let mask = match &call.filter {
                    Some(f) => {
                        let m = f.evaluate(batch)?.into_array(batch.num_rows())?;
                        let m = m
                            .as_any()
                            .downcast_ref::<BooleanArray>()
                            .cloned()
                            .ok_or_else(|| SqlError::internal("aggregate FILTER is not boolean"))?;
                        Some(m)
                    }
                    None => None,
                };
                Ok((args, mask))
            })
            .collect()
    }

    /// Recomputes a group's aggregates from its stored input rows.
    fn recompute(&self, key: &[u8]) -> Result<Vec<ScalarValue>> {
        let empty = crate::stream::members::Members::default();
        let rows = self.rows.get(key).unwrap_or(&empty);
        let expanded = rows.iter().flat_map(|(row, &n)| std::iter::repeat_n(row.as_slice(), n.max(0) as usize));
        let batch = self.input_codec.decode(expanded)?;
        let inputs = self.call_inputs(&batch)?;
        let all: Vec<u32> = (0..batch.num_rows() as u32).collect();
        self.calls
            .iter()
            .zip(inputs)
            .map(|(call, (args, mask))| {
                let mut acc = call.accumulator(Mode::Recomputing)?;
                let indices = selected(&all, mask.as_ref());
                if !indices.is_empty() {
                    acc.update_batch(&take_all(&args, &indices)?)?;
                }
                Ok(acc.evaluate()?)
            })
            .collect()
    }

    fn evaluate_group(&self, key: &[u8], group: &mut Group) -> Result<Vec<ScalarValue>> {
        if self.mode.live() {
            group.accumulators.iter_mut().map(GroupAccumulator::evaluate).collect()
        } else {
            self.recompute(key)
        }
    }

    fn output(&self, entries: &[(&[u8], &Vec<ScalarValue>)], weight: i64) -> Result<ChangeBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if let Some(codec) = &self.group_codec {
            let keys = codec.decode(entries.iter().map(|(k, _)| *k))?;
            columns.extend(keys.columns().iter().cloned());
        }
        for (i, field) in self.schema.fields().iter().enumerate().skip(self.group_exprs.len()) {
            let call = i - self.group_exprs.len();
            columns.push(scalars_to_array(
                entries.iter().map(|(_, v)| v.get(call).cloned().unwrap_or(ScalarValue::Null)),
                field.data_type(),
            )?);
        }
        let rows = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(entries.len())),
        )?;
        Ok(ChangeBatch::uniform(rows, weight))
    }
}

impl Aggregate {
    /// Applies one epoch's input changes to the groups they touch.
    fn apply(&mut self, input: &EpochInput, delta: ChangeBatch, time: Option<&Watermark>) -> Result<ChangeBatch> {
        // Group the changed rows: positive and negative row indices per key,
        // each index repeated by its weight. Late rows (into closed groups)
        // are dropped first.
        let mut delta = delta;
        let mut key_columns = super::evaluate(&self.group_exprs, &delta.rows)?;
        if let (Some(open), Some(time)) = (&self.open, time)
            && let Some(keep) = open.late_rows(&key_columns, &delta.weights, time)?
        {
            delta = delta.filter(&keep)?;
            key_columns =
                key_columns.iter().map(|c| Ok(filter(c.as_ref(), &keep)?)).collect::<Result<Vec<ArrayRef>>>()?;
            if delta.is_empty() {
                return Ok(ChangeBatch::empty(self.schema.clone()));
            }
        }
        let keys = match &self.group_codec {
            Some(codec) => Some(codec.encode(&key_columns)?),
            None => None,
        };
        let times = match &self.open {
            Some(open) => Some(open.times(&key_columns)?),
            None => None,
        };
        let time_of = |row: u32| -> Option<&[u8]> {
            let open = self.open.as_ref()?;
            let times = times.as_ref()?;
            key_columns.get(open.column)?.is_valid(row as usize).then(|| times.row(row as usize).data())
        };
        // Find every row's group in the state table (one probe per row; the
        // groups not cached are read from the store in one batch), then
        // sort the rows by group: one entry per touched group, in order of
        // first appearance, its rows a range of `inserted`/`deleted`, each
        // row repeated by its weight.
        let rows = delta.weights.len();
        let global: &[u8] = &[];
        let row_key = |row: usize| -> &[u8] { keys.as_ref().map_or(global, |k| k.row(row).data()) };
        let (calls, natives, mode) = (&self.calls, &self.natives, self.mode);
        let stored_groups = &self.stored_groups;
        let decode = |stored: &[&[u8]]| stored_groups.decode(stored, || fresh_accumulators(calls, natives, mode));
        let located = if keys.is_some() {
            self.groups.locate(&input.state, (0..rows).map(row_key), decode)?
        } else {
            // The global group is touched even by an epoch without rows.
            let mut located = self.groups.locate(&input.state, [global], decode)?;
            located.of_item = vec![0; rows];
            located
        };
        let mut touched: Vec<Touched> =
            located.slots.iter().zip(&located.first).map(|(&slot, &first)| Touched::new(slot, first)).collect();
        let weights = delta.weights.values();
        for (&t, &weight) in located.of_item.iter().zip(weights.iter()) {
            let entry =
                touched.get_mut(t as usize).ok_or_else(|| SqlError::internal("aggregate group out of range"))?;
            let count = weight.unsigned_abs() as usize;
            if weight > 0 {
                entry.inserted.end += count
            } else {
                entry.deleted.end += count
            }
            entry.net += weight;
        }
        let (mut ins_total, mut del_total) = (0, 0);
        for entry in touched.iter_mut() {
            // The counts become empty ranges at their offsets, filled below.
            let (ins, del) = (entry.inserted.end, entry.deleted.end);
            entry.inserted = ins_total..ins_total;
            entry.deleted = del_total..del_total;
            ins_total += ins;
            del_total += del;
        }
        let mut inserted_rows = vec![0u32; ins_total];
        let mut deleted_rows = vec![0u32; del_total];
        for (row, (&t, &weight)) in located.of_item.iter().zip(weights.iter()).enumerate() {
            let entry =
                touched.get_mut(t as usize).ok_or_else(|| SqlError::internal("aggregate group out of range"))?;
            let (list, range) = if weight > 0 {
                (&mut inserted_rows, &mut entry.inserted)
            } else {
                (&mut deleted_rows, &mut entry.deleted)
            };
            for _ in 0..weight.unsigned_abs() {
                if let Some(place) = list.get_mut(range.end) {
                    *place = row as u32;
                }
                range.end += 1;
            }
        }
        let key_of = |entry: &Touched| -> &[u8] { row_key(entry.first_row as usize) };

        let mode = self.mode;
        let inputs = if mode.live() { self.call_inputs(&delta.rows)? } else { Vec::new() };
        // The inline accumulators' view of their argument columns.
        let native_inputs: Vec<Option<NativeInput>> = inputs
            .iter()
            .zip(&self.natives)
            .map(|((args, _), native)| match (native, args.first()) {
                (Some(kind), Some(argument)) => Ok(Some(NativeInput::new(*kind, argument)?)),
                // count of a constant that is not NULL: every row counts.
                (Some(NativeKind::Count), None) => Ok(Some(NativeInput::Nulls(None))),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let row_bytes = if mode.live() { None } else { Some(self.input_codec.encode(delta.rows.columns())?) };

        if !mode.live() {
            self.rows.load(&input.state, touched.iter().map(key_of));
        }

        let mut retractions: Vec<(&[u8], Vec<ScalarValue>)> = Vec::new();
        let mut insertions: Vec<(&[u8], Vec<ScalarValue>)> = Vec::new();
        // Groups that start (true) or stop being live, with their times.
        let mut indexed: Vec<(Option<&[u8]>, &[u8], bool)> = Vec::new();
        for entry in &touched {
            let key = key_of(entry);
            let inserted = inserted_rows.get(entry.inserted.clone()).unwrap_or(&[]);
            let deleted = deleted_rows.get(entry.deleted.clone()).unwrap_or(&[]);
            let stored = self.groups.value_mut(entry.slot).and_then(Option::take);
            let was_live = stored.is_some();
            let mut group = match stored {
                Some(g) => g,
                None => self.new_group()?,
            };
            if mode == Mode::Accumulating && !deleted.is_empty() {
                return Err(SqlError::internal(
                    "an aggregate over an input that only inserts received a delete; its groups keep no rows to \
                     take it back from",
                ));
            }
            if mode.live() {
                for (((args, mask), acc), native_input) in
                    inputs.iter().zip(group.accumulators.iter_mut()).zip(&native_inputs)
                {
                    match (acc, native_input) {
                        (GroupAccumulator::Native(native), Some(native_input)) => {
                            for &row in inserted {
                                if mask.as_ref().is_none_or(|m| m.is_valid(row as usize) && m.value(row as usize)) {
                                    native.update(native_input, row as usize);
                                }
                            }
                        }
                        (GroupAccumulator::Native(_), None) => {
                            return Err(SqlError::internal("inline aggregate accumulator without its argument"));
                        }
                        (GroupAccumulator::Boxed(acc), _) => {
                            let ins = selected(inserted, mask.as_ref());
                            if !ins.is_empty() {
                                acc.update_batch(&take_all(args, &ins)?)?;
                            }
                            let del = selected(deleted, mask.as_ref());
                            if !del.is_empty() {
                                acc.retract_batch(&take_all(args, &del)?)?;
                            }
                        }
                    }
                }
            } else if let Some(bytes) = &row_bytes {
                for &i in inserted {
                    self.rows.add(key, bytes.row(i as usize).data(), 1);
                }
                for &i in deleted {
                    self.rows.add(key, bytes.row(i as usize).data(), -1);
                }
            }
            group.count += entry.net;
            let old = group.emitted.take();
            let new = if self.emit_on_close {
                // Emitted once, when the group closes.
                None
            } else if group.count > 0 || self.group_codec.is_none() {
                if group.count <= 0 && mode.live() {
                    // An emptied global group starts over (count 0, sum NULL).
                    group = self.new_group()?;
                }
                Some(self.evaluate_group(key, &mut group)?)
            } else {
                None
            };
            if old != new {
                if let Some(old) = old {
                    retractions.push((key, old));
                }
                if let Some(new) = &new {
                    insertions.push((key, new.clone()));
                }
            }
            let keep = new.is_some() || group.count != 0;
            group.emitted = new;
            // A live group is indexed by its time (part of its key, so it
            // never moves): only a group that starts or stops being live
            // changes the index.
            if self.open.is_some() && keep != was_live {
                indexed.push((time_of(entry.first_row), key, keep));
            }
            let slot =
                self.groups.value_mut(entry.slot).ok_or_else(|| SqlError::internal("aggregate group not loaded"))?;
            *slot = keep.then_some(group);
        }
        if let Some(open) = &mut self.open {
            for (time, key, keep) in indexed {
                if keep {
                    open.insert(time, key);
                } else {
                    open.remove(time, key);
                }
            }
        }

        let retract: Vec<(&[u8], &Vec<ScalarValue>)> = retractions.iter().map(|(k, v)| (*k, v)).collect();
        let insert: Vec<(&[u8], &Vec<ScalarValue>)> = insertions.iter().map(|(k, v)| (*k, v)).collect();
        let parts = [self.output(&retract, -1)?, self.output(&insert, 1)?];
        ChangeBatch::concat(&self.schema, &parts)
    }
}

impl Operator for Aggregate {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        if !self.mode_settled {
            self.settle_mode(input)?;
        }
        if let (Some(open), Some(codec)) = (&mut self.open, &self.group_codec)
            && !open.is_ready()
        {
            if input.state.fresh {
                open.start_fresh();
            } else {
                open.rebuild(self.groups.stored_groups(&input.state), codec)?;
                self.closed
                    .load(&input.state, &[Vec::new()], |stored| Ok(stored.iter().map(|b| b.to_vec()).collect()))?;
                if let Some(Some(bytes)) = self.closed.get_mut(&[]).map(|b| b.clone()) {
                    open.restore_closed(&bytes)?;
                }
            }
        }
        let time = self.time_watermark(input)?;
        // A global aggregate has a row even over no input: it is computed
        // on the first step (the backfill), when its group is not stored yet.
        let changed = if delta.is_empty() && self.group_codec.is_some() {
            ChangeBatch::empty(self.schema.clone())
        } else {
            self.apply(input, delta, time.as_ref())?
        };
        match time.as_ref().and_then(|t| t.after.as_ref()) {
            Some(after) => {
                let closed = self.close(input, after)?;
                if let Some(bytes) = self.open.as_ref().map(|o| o.closed_bytes()).transpose()?.flatten() {
                    self.closed
                        .load(&input.state, &[Vec::new()], |stored| Ok(stored.iter().map(|b| b.to_vec()).collect()))?;
                    if let Some(slot) = self.closed.get_mut(&[]) {
                        *slot = Some(bytes);
                    }
                }
                ChangeBatch::concat(&self.schema, &[changed, closed])
            }
            None => Ok(changed),
        }
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The group keys' watermarks (their groups' rows only change while
    /// open); none on the aggregate values.
    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        let width = self.schema.fields().len();
        if self.key_watermarks.is_empty() {
            return Ok(crate::stream::watermark::none(width));
        }
        let mut derived = self.key_watermarks.derive(&self.input.watermarks(input)?)?;
        derived.resize(width, None);
        Ok(derived)
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.input.flush(state, batch)?;
        let calls = self.calls.len();
        self.groups.flush(
            state,
            batch,
            // The group struct, a boxed accumulator per call (with its
            // own heap), and the emitted values.
            |g| 64 + g.accumulators.len() * 160 + calls * 64,
            |groups| self.stored_groups.encode(groups),
        )?;
        self.rows.flush(state, batch);
        self.closed.flush(state, batch, Vec::len, |values| Ok(values.iter().map(|v| v.to_vec()).collect()))?;
        self.stored_mode.flush(state, batch, Vec::len, |values| Ok(values.iter().map(|v| v.to_vec()).collect()))?;
        Ok(())
    }
}

fn fresh_accumulators(
    calls: &[AggregateCall],
    natives: &[Option<NativeKind>],
    mode: Mode,
) -> Result<Vec<GroupAccumulator>> {
    if !mode.live() {
        return Ok(Vec::new());
    }
    calls
        .iter()
        .zip(natives)
        .map(|(call, native)| match native {
            Some(kind) => Ok(GroupAccumulator::Native(kind.fresh())),
            None => Ok(GroupAccumulator::Boxed(call.accumulator(mode)?)),
        })
        .collect()
}

/// Per call, its inline accumulator, if it has one and the mode allows it
/// (only over an input that only inserts: inline accumulators do not retract).
fn natives(calls: &[AggregateCall], mode: Mode, input: &Schema) -> Vec<Option<NativeKind>> {
    calls
        .iter()
        .map(|call| {
            if mode != Mode::Accumulating {
                return None;
            }
            let types: Vec<DataType> = call
                .function
                .expressions()
                .iter()
                .map(|e| e.data_type(input))
                .collect::<std::result::Result<_, _>>()
                .ok()?;
            NativeKind::of(&call.function, &types)
        })
        .collect()
}

/// The indices of `rows` whose FILTER mask is true.
fn selected(rows: &[u32], mask: Option<&BooleanArray>) -> Vec<u32> {
    match mask {
        None => rows.to_vec(),
        Some(mask) => rows.iter().copied().filter(|&i| mask.is_valid(i as usize) && mask.value(i as usize)).collect(),
    }
}

fn take_all(columns: &[ArrayRef], indices: &[u32]) -> Result<Vec<ArrayRef>> {
    let indices = UInt32Array::from(indices.to_vec());
    columns.iter().map(|c| Ok(take(c.as_ref(), &indices, None)?)).collect()
}
