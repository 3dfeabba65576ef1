//! Equi-join (inner, left, right, full outer, semi, anti) with an optional
//! residual filter, maintained with the delta rule of a symmetric hash join:
//!
//! ```text
//!   Δ(L ⋈ R) = ΔL ⋈ R_old  +  L_new ⋈ ΔR
//! ```
//!
//! Both sides are indexed by join key (rows stored as row bytes with
//! multiplicities). The rows an outer join pads with NULLs, and the rows a
//! semi or anti join keeps, depend only on whether a row has a partner; for
//! every key touched in an epoch the operator compares that set before and
//! after and emits the difference. NULL keys never match (SQL equality).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::Rows;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Result, SqlError};
use crate::hash::HashMap;
use crate::state::WriteBatch;
use crate::stream::multiset_state::MultisetState;
use crate::stream::ops::interval::{self, TimeBounds};
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::Watermarks;
use crate::stream::{ChangeBatch, EpochInput, Operator};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    LeftSemi,
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    fn emits_pairs(self) -> bool {
        matches!(self, JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full)
    }
    /// What a side's rows contribute on their own, by whether they have a partner.
    fn side_role(self, left: bool) -> SideRole {
        use JoinKind::*;
        match (self, left) {
            (Left | Full, true) | (Right | Full, false) => SideRole::PadUnmatched,
            (LeftAnti, true) | (RightAnti, false) => SideRole::Unmatched,
            (LeftSemi, true) | (RightSemi, false) => SideRole::Matched,
            _ => SideRole::None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SideRole {
    None,
    PadUnmatched,
    Unmatched,
    Matched,
}

impl SideRole {
    /// Whether a row in this role contributes on its own, by whether it
    /// has a partner.
    fn keeps(self, partnered: bool) -> bool {
        match self {
            SideRole::None => false,
            SideRole::Matched => partnered,
            SideRole::PadUnmatched | SideRole::Unmatched => !partnered,
        }
    }
}

type Multiset = HashMap<Vec<u8>, i64>;

pub struct JoinSide {
    input: Box<dyn Operator>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    codec: RowCodec,
    /// The side's rows by join key (stored).
    index: MultisetState,
}

impl JoinSide {
    /// `state_prefix`: where this side's index lives in the state store.
    pub fn new(input: Box<dyn Operator>, keys: Vec<Arc<dyn PhysicalExpr>>, state_prefix: &[u8]) -> Result<Self> {
        let codec = RowCodec::new(input.schema())?;
        Ok(Self { input, keys, codec, index: MultisetState::unordered(state_prefix) })
    }

    /// `bounded`: the side leaves the state by time, so a delete may find
    /// its row already gone (it still retracts its pairs, but changes
    /// nothing here: then it returns false).
    fn apply(&mut self, key: &[u8], row: &[u8], weight: i64, bounded: bool) -> bool {
        if bounded && weight < 0 && !self.index.has(key, row) {
            return false;
        }
        self.index.add(key, row, weight);
        true
    }

    /// Applies one epoch's changes of this side to its index. With
    /// `applied`, notes every change that took effect, by key and row.
    fn apply_all<'a>(
        &mut self,
        keys: &'a [Option<Vec<u8>>],
        rows: &'a Rows,
        weights: &Int64Array,
        bounded: bool,
        mut applied: Option<&mut Applied<'a>>,
    ) {
        for (i, key) in keys.iter().enumerate() {
            let Some(key) = key else { continue };
            let (row, weight) = (rows.row(i).data(), weights.value(i));
            if self.apply(key, row, weight, bounded)
                && let Some(applied) = applied.as_deref_mut()
            {
                applied.entry(key.as_slice()).or_default().push((row, weight));
            }
        }
    }

    /// The rows at `key` now, by reference.
    fn rows_at(&self, key: &[u8]) -> Vec<&[u8]> {
        self.index.get(key).map(|rows| rows.iter().map(|(r, _)| r.as_slice()).collect()).unwrap_or_default()
    }
}

/// The changes an epoch made to one side's index: key -> (row, weight),
/// a row listed as often as it changed.
type Applied<'a> = HashMap<&'a [u8], Vec<(&'a [u8], i64)>>;

pub struct Join {
    left: JoinSide,
    right: JoinSide,
    kind: JoinKind,
    /// Encodes join keys (typed like the left keys); `None` for a cross join.
    key_codec: Option<RowCodec>,
    key_types: Vec<DataType>,
    /// Residual predicate over the left columns followed by the right ones.
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// A join bounded in time: rows leave as watermarks pass (any join
    /// kind the plan gives bounds: see `plan/node/join.rs`).
    time: Option<TimeBounds>,
    /// The join key's schema (to decode stored state at a rebuild).
    key_schema: Option<SchemaRef>,
    joined_schema: SchemaRef,
    schema: SchemaRef,
}

impl Join {
    pub fn new(
        left: JoinSide,
        right: JoinSide,
        kind: JoinKind,
        key_schema: Option<SchemaRef>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        joined_schema: SchemaRef,
        schema: SchemaRef,
    ) -> Result<Self> {
        let key_types =
            key_schema.as_ref().map(|s| s.fields().iter().map(|f| f.data_type().clone()).collect()).unwrap_or_default();
        let key_codec = key_schema.clone().map(RowCodec::new).transpose()?;
        Ok(Self { left, right, kind, key_codec, key_types, filter, time: None, key_schema, joined_schema, schema })
    }

    /// Makes the join drop rows from its state as time passes. The plan
    /// gives an outer, semi or anti join bounds only when joined rows have
    /// equal times (a window join).
    pub fn with_time_bounds(mut self, time: TimeBounds) -> Self {
        self.time = Some(time);
        self
    }

    /// Drops the rows both sides' watermarks have left behind. A row of an
    /// inner join leaves once no future row of the other side can meet it
    /// (its pairs are out; a late delete of it is dropped as late). An
    /// outer, semi or anti join's output for a row also depends on the row
    /// itself, whose delete must still find it: it leaves only once its
    /// own side's watermark has passed it too.
    fn expire(&mut self, input: &EpochInput, epoch: &interval::Epoch) -> Result<()> {
        let Some(time) = &mut self.time else { return Ok(()) };
        let pairs_only = self.kind == JoinKind::Inner;
        for (left, threshold, own) in
            [(true, &epoch.left_threshold, &epoch.left), (false, &epoch.right_threshold, &epoch.right)]
        {
            let Some(threshold) = threshold.as_ref().and_then(|w| w.after.clone()) else { continue };
            let bound = if pairs_only {
                threshold
            } else {
                // The plain smaller value, not `watermark::min`: an idle
                // side must still hold its rows back (it may wake up with a
                // delete of them), and values that do not compare expire nothing.
                let Some(own) = own.as_ref().and_then(|w| w.after.clone()) else { continue };
                let threshold = threshold.cast_to(&own.data_type())?;
                match threshold.partial_cmp(&own) {
                    Some(std::cmp::Ordering::Less) => threshold,
                    Some(_) => own,
                    None => continue,
                }
            };
            let gone = if left { time.left.expire(&bound)? } else { time.right.expire(&bound)? };
            if gone.is_empty() {
                continue;
            }
            let side = if left { &mut self.left } else { &mut self.right };
            side.index.load(&input.state, gone.iter().map(|(k, _)| k.as_slice()));
            for (key, row) in &gone {
                side.index.remove(key, row);
            }
        }
        Ok(())
    }

    /// Join keys of every row; `None` where a key column is NULL.
    fn keys(&self, side: &JoinSide, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(codec) = &self.key_codec else {
            return Ok(vec![Some(Vec::new()); batch.num_rows()]);
        };
        let mut columns = super::evaluate(&side.keys, batch)?;
        for (column, ty) in columns.iter_mut().zip(&self.key_types) {
            if column.data_type() != ty {
                *column = cast(column, ty)?;
            }
        }
        let rows = codec.encode(&columns)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                let null = columns.iter().any(|c| c.is_null(i));
                (!null).then(|| rows.row(i).data().to_vec())
            })
            .collect())
    }

    /// Evaluates the residual filter over pairs (left row, right row).
    fn pair_mask(&self, left: &[ArrayRef], right: &[ArrayRef], n: usize) -> Result<Option<BooleanArray>> {
        let Some(filter) = &self.filter else {
            return Ok(None);
        };
        let columns: Vec<ArrayRef> = left.iter().chain(right).cloned().collect();
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let batch = RecordBatch::try_new_with_options(self.joined_schema.clone(), columns, &options)?;
        let mask = filter.evaluate(&batch)?.into_array(n)?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| SqlError::internal("join filter is not boolean"))?;
        Ok(Some(crate::stream::change::null_as_false(mask)))
    }

    /// Output rows from left and/or right columns; a missing side is NULLs.
    fn assemble(
        &self,
        left: Option<Vec<ArrayRef>>,
        right: Option<Vec<ArrayRef>>,
        weights: Vec<i64>,
    ) -> Result<ChangeBatch> {
        let n = weights.len();
        let fields = self.schema.fields();
        let columns: Vec<ArrayRef> = match self.kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => left.unwrap_or_default(),
            JoinKind::RightSemi | JoinKind::RightAnti => right.unwrap_or_default(),
            _ => {
                let left_width = self.left.input.schema().fields().len();
                let pad = |range: std::ops::Range<usize>| -> Vec<ArrayRef> {
                    fields.get(range).unwrap_or_default().iter().map(|f| new_null_array(f.data_type(), n)).collect()
                };
                let mut columns = left.unwrap_or_else(|| pad(0..left_width));
                columns.extend(right.unwrap_or_else(|| pad(left_width..fields.len())));
                columns
            }
        };
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let rows = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        Ok(ChangeBatch::new(rows, Int64Array::from(weights)))
    }

    /// Which of `rows` have a partner among `others` (for the given side).
    fn has_partner(&self, rows_left: bool, rows: &[&[u8]], others: &[&[u8]]) -> Result<Vec<bool>> {
        if others.is_empty() || rows.is_empty() {
            return Ok(vec![false; rows.len()]);
        }
        if self.filter.is_none() {
            return Ok(vec![true; rows.len()]);
        }
        let (this_codec, other_codec) =
            if rows_left { (&self.left.codec, &self.right.codec) } else { (&self.right.codec, &self.left.codec) };
        let this = this_codec.decode(rows.iter().copied())?;
        let other = other_codec.decode(others.iter().copied())?;
        // Cross product of this key's rows: this row i pairs with every other row j.
        let n = rows.len() * others.len();
        let this_idx =
            UInt32Array::from_iter_values((0..rows.len() as u32).flat_map(|i| std::iter::repeat_n(i, others.len())));
        let other_idx = UInt32Array::from_iter_values((0..rows.len()).flat_map(|_| 0..others.len() as u32));
        let this_cols = take_columns(this.columns(), &this_idx)?;
        let other_cols = take_columns(other.columns(), &other_idx)?;
        let mask = if rows_left {
            self.pair_mask(&this_cols, &other_cols, n)?
        } else {
            self.pair_mask(&other_cols, &this_cols, n)?
        };
        let mask = mask.unwrap_or_else(|| BooleanArray::from(vec![true; n]));
        Ok((0..rows.len()).map(|i| (0..others.len()).any(|j| mask.value(i * others.len() + j))).collect())
    }
}

impl Operator for Join {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let mut dl = self.left.input.step(input)?;
        let mut dr = self.right.input.step(input)?;
        let epoch = match &self.time {
            Some(time) => Some(time.epoch(&self.left.input.watermarks(input)?, &self.right.input.watermarks(input)?)?),
            None => None,
        };
        if let (Some(time), Some(epoch)) = (&mut self.time, &epoch) {
            if !time.is_ready(true) {
                if input.state.fresh {
                    time.start_fresh();
                } else {
                    let left_schema = self.left.input.schema();
                    let right_schema = self.right.input.schema();
                    time.rebuild(
                        true,
                        &input.state,
                        self.left.index.stored_members(&input.state),
                        self.key_schema.as_ref(),
                        &left_schema,
                    )?;
                    time.rebuild(
                        false,
                        &input.state,
                        self.right.index.stored_members(&input.state),
                        self.key_schema.as_ref(),
                        &right_schema,
                    )?;
                }
            }
            if let Some(keep) = time.on_time(true, &dl.rows, &dl.weights, epoch)? {
                dl = dl.filter(&keep)?;
            }
            if let Some(keep) = time.on_time(false, &dr.rows, &dr.weights, epoch)? {
                dr = dr.filter(&keep)?;
            }
        }
        let out = if dl.is_empty() && dr.is_empty() {
            ChangeBatch::empty(self.schema.clone())
        } else {
            self.apply(input, dl, dr)?
        };
        if let Some(epoch) = &epoch {
            self.expire(input, epoch)?;
        }
        Ok(out)
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.left.input.flush(state, batch)?;
        self.right.input.flush(state, batch)?;
        self.left.index.flush(state, batch);
        self.right.index.flush(state, batch);
        Ok(())
    }

    /// Only the time columns of a bounded inner join carry watermarks.
    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        let mut out = crate::stream::watermark::none(self.schema.fields().len());
        if let Some(time) = self.time.as_ref().filter(|_| self.kind == JoinKind::Inner) {
            let epoch = time.epoch(&self.left.input.watermarks(input)?, &self.right.input.watermarks(input)?)?;
            time.output_watermarks(&epoch, self.left.input.schema().fields().len(), &mut out);
        }
        Ok(out)
    }
}

impl Join {
    /// The delta rule over one epoch's changes of both sides.
    fn apply(&mut self, input: &EpochInput, dl: ChangeBatch, dr: ChangeBatch) -> Result<ChangeBatch> {
        let bounded = self.time.is_some();
        let left_keys = self.keys(&self.left, &dl.rows)?;
        let right_keys = self.keys(&self.right, &dr.rows)?;
        let left_bytes = self.left.codec.encode(dl.rows.columns())?;
        let right_bytes = self.right.codec.encode(dr.rows.columns())?;
        // Every key this epoch touches, on both sides, from the store.
        let touched: Vec<&[u8]> = left_keys.iter().chain(&right_keys).flatten().map(Vec::as_slice).collect();
        self.left.index.load(&input.state, touched.iter().copied());
        self.right.index.load(&input.state, touched.iter().copied());

        // Keys whose unmatched/matched sets may change. Without a residual
        // filter, whether each side had rows before alone decides
        // partnership. With one, the changes applied to each side, from
        // which (with the rows after) the rows before follow.
        let tracks_sides = self.kind.side_role(true) != SideRole::None || self.kind.side_role(false) != SideRole::None;
        let filtered_sides = tracks_sides && self.filter.is_some();
        let (mut applied_left, mut applied_right): (Applied, Applied) = Default::default();
        let mut had_rows: HashMap<Vec<u8>, (bool, bool)> = HashMap::default();
        if tracks_sides && !filtered_sides {
            for key in left_keys.iter().chain(&right_keys).flatten() {
                had_rows
                    .entry(key.clone())
                    .or_insert_with(|| (self.left.index.contains(key), self.right.index.contains(key)));
            }
        }

        let mut parts = Vec::new();
        // ΔL ⋈ R_old, then L_new ⋈ ΔR.
        if self.kind.emits_pairs() {
            let (mut li, mut rrows, mut w) = (Vec::new(), Vec::new(), Vec::new());
            for (i, key) in left_keys.iter().enumerate() {
                if let Some(rows) = key.as_ref().and_then(|k| self.right.index.get(k)) {
                    for (row, &wr) in rows {
                        li.push(i as u32);
                        rrows.push(row.as_slice());
                        w.push(dl.weights.value(i) * wr);
                    }
                }
            }
            let applied = filtered_sides.then_some(&mut applied_left);
            self.left.apply_all(&left_keys, &left_bytes, &dl.weights, bounded, applied);
            if !w.is_empty() {
                let left_cols = take_columns(dl.rows.columns(), &UInt32Array::from(li))?;
                let right_cols = self.right.codec.decode(rrows.iter().copied())?.columns().to_vec();
                parts.push(self.filtered_pairs(left_cols, right_cols, w)?);
            }
            let (mut lrows, mut ri, mut w) = (Vec::new(), Vec::new(), Vec::new());
            for (j, key) in right_keys.iter().enumerate() {
                if let Some(rows) = key.as_ref().and_then(|k| self.left.index.get(k)) {
                    for (row, &wl) in rows {
                        lrows.push(row.as_slice());
                        ri.push(j as u32);
                        w.push(wl * dr.weights.value(j));
                    }
                }
            }
            if !w.is_empty() {
                let left_cols = self.left.codec.decode(lrows.iter().copied())?.columns().to_vec();
                let right_cols = take_columns(dr.rows.columns(), &UInt32Array::from(ri))?;
                parts.push(self.filtered_pairs(left_cols, right_cols, w)?);
            }
        } else {
            let applied = filtered_sides.then_some(&mut applied_left);
            self.left.apply_all(&left_keys, &left_bytes, &dl.weights, bounded, applied);
        }
        let applied = filtered_sides.then_some(&mut applied_right);
        self.right.apply_all(&right_keys, &right_bytes, &dr.weights, bounded, applied);
        if let Some(time) = &mut self.time {
            // New rows enter the time indexes, to leave when their time passes.
            let added = |keys: &[Option<Vec<u8>>], bytes: &datafusion::arrow::row::Rows, delta: &ChangeBatch| {
                (0..delta.len())
                    .filter(|&i| delta.weights.value(i) > 0)
                    .filter_map(|i| keys.get(i)?.clone().map(|k| (i, k, bytes.row(i).data().to_vec())))
                    .collect::<Vec<_>>()
            };
            time.left.insert(dl.rows.column(time.left.column), added(&left_keys, &left_bytes, &dl).into_iter())?;
            time.right.insert(dr.rows.column(time.right.column), added(&right_keys, &right_bytes, &dr).into_iter())?;
        }

        if tracks_sides {
            // Rows with a NULL key never have a partner.
            let mut left_alone = Multiset::default();
            let mut right_alone = Multiset::default();
            let sides = [
                (true, &left_keys, &left_bytes, &dl, &mut left_alone),
                (false, &right_keys, &right_bytes, &dr, &mut right_alone),
            ];
            for (left, keys, bytes, delta, alone) in sides {
                if !self.kind.side_role(left).keeps(false) {
                    continue;
                }
                for (i, _) in keys.iter().enumerate().filter(|(_, key)| key.is_none()) {
                    *alone.entry(bytes.row(i).data().to_vec()).or_insert(0) += delta.weights.value(i);
                }
            }
            let group = |keys: &[Option<Vec<u8>>]| {
                let mut by_key: HashMap<Vec<u8>, Vec<usize>> = HashMap::default();
                for (i, k) in keys.iter().enumerate() {
                    if let Some(k) = k {
                        by_key.entry(k.clone()).or_default().push(i);
                    }
                }
                by_key
            };
            let (left_by_key, right_by_key) =
                if had_rows.is_empty() { Default::default() } else { (group(&left_keys), group(&right_keys)) };
            for (key, &(left_before, right_before)) in &had_rows {
                let (left_after, right_after) = (self.left.index.contains(key), self.right.index.contains(key));
                self.side_transition(
                    true,
                    key,
                    right_before,
                    right_after,
                    &left_by_key,
                    &left_bytes,
                    &dl,
                    &mut left_alone,
                );
                self.side_transition(
                    false,
                    key,
                    left_before,
                    left_after,
                    &right_by_key,
                    &right_bytes,
                    &dr,
                    &mut right_alone,
                );
            }
            let mut filtered_keys: Vec<&[u8]> = applied_left.keys().copied().collect();
            filtered_keys.extend(applied_right.keys().filter(|k| !applied_left.contains_key(*k)));
            for key in filtered_keys {
                let (left, right) = (applied_left.get(key), applied_right.get(key));
                self.filtered_side_change(true, key, left, right, &mut left_alone)?;
                self.filtered_side_change(false, key, right, left, &mut right_alone)?;
            }
            for (alone, is_left) in [(left_alone, true), (right_alone, false)] {
                let alone: Vec<(Vec<u8>, i64)> = alone.into_iter().filter(|(_, n)| *n != 0).collect();
                if alone.is_empty() {
                    continue;
                }
                let weights = alone.iter().map(|(_, n)| *n).collect();
                let codec = if is_left { &self.left.codec } else { &self.right.codec };
                let cols = codec.decode(alone.iter().map(|(r, _)| r.as_slice()))?.columns().to_vec();
                parts.push(if is_left {
                    self.assemble(Some(cols), None, weights)?
                } else {
                    self.assemble(None, Some(cols), weights)?
                });
            }
        }
        ChangeBatch::concat(&self.schema, &parts)
    }

    /// With a residual filter: the change of what one side contributes
    /// alone at `key` (its lone rows, or its matched ones), from the
    /// changes this epoch applied to each side there (`mine`, `others`)
    /// and the rows after them. A row's contribution is its count `n` if
    /// it keeps (`k`: partnered or not, as the role wants), so its change
    /// is `n_after k_after - n_before k_before`, with `n_before = n_after -
    /// d` (`d` its applied change). If the other side did not change,
    /// `k_before = k_after` and the change is `d k_after`: only the changed
    /// rows are tested. Otherwise every row there is tested against the
    /// other side as it is if it is there now, and as it was if it was
    /// there before, so the filter only ever sees two rows that were in the
    /// state together. No rows are copied but the other side's when it
    /// changed (to have it as it was) and the rows that are output.
    fn filtered_side_change(
        &self,
        left: bool,
        key: &[u8],
        mine: Option<&Vec<(&[u8], i64)>>,
        others: Option<&Vec<(&[u8], i64)>>,
        out: &mut Multiset,
    ) -> Result<()> {
        let role = self.kind.side_role(left);
        if role == SideRole::None {
            return Ok(());
        }
        let keeps = |partnered: Vec<bool>| -> Vec<i64> {
            partnered.into_iter().map(|partnered| role.keeps(partnered) as i64).collect()
        };
        let (side, other) = if left { (&self.left, &self.right) } else { (&self.right, &self.left) };
        let others_after = other.rows_at(key);
        let mine: &[(&[u8], i64)] = mine.map_or(&[], Vec::as_slice);
        let Some(others) = others.filter(|others| !others.is_empty()) else {
            // Every row keeps its partners: d k_after for each change.
            let changed: Vec<&[u8]> = mine.iter().map(|(row, _)| *row).collect();
            let kept = keeps(self.has_partner(left, &changed, &others_after)?);
            for ((row, d), k) in mine.iter().zip(kept) {
                if d * k != 0 {
                    *out.entry(row.to_vec()).or_insert(0) += d * k;
                }
            }
            return Ok(());
        };
        // The other side as it was: its rows now minus what changed.
        let mut others_before: Multiset =
            other.index.get(key).map(|rows| rows.iter().map(|(r, n)| (r.clone(), *n)).collect()).unwrap_or_default();
        for (row, weight) in others {
            *others_before.entry(row.to_vec()).or_insert(0) -= weight;
        }
        let others_before: Vec<&[u8]> =
            others_before.iter().filter(|(_, n)| **n > 0).map(|(r, _)| r.as_slice()).collect();
        // This side's changed rows with their summed change, then every row
        // there now or before with its count after and before.
        let mut changes: HashMap<&[u8], i64> = HashMap::default();
        for &(row, d) in mine {
            *changes.entry(row).or_insert(0) += d;
        }
        let now = side.index.get(key);
        let (mut rows_after, mut counts_after, mut rows_before, mut counts_before) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (row, &n) in now.into_iter().flatten() {
            let before = n - changes.get(row.as_slice()).copied().unwrap_or(0);
            rows_after.push(row.as_slice());
            counts_after.push(n);
            if before != 0 {
                rows_before.push(row.as_slice());
                counts_before.push(before);
            }
        }
        for (&row, &d) in &changes {
            if d != 0 && now.and_then(|m| m.get(row)).is_none() {
                rows_before.push(row);
                counts_before.push(-d);
            }
        }
        let kept_after = keeps(self.has_partner(left, &rows_after, &others_after)?);
        for ((row, n), k) in rows_after.iter().zip(counts_after).zip(kept_after) {
            if n * k != 0 {
                *out.entry(row.to_vec()).or_insert(0) += n * k;
            }
        }
        let kept_before = keeps(self.has_partner(left, &rows_before, &others_before)?);
        for ((row, n), k) in rows_before.iter().zip(counts_before).zip(kept_before) {
            if n * k != 0 {
                *out.entry(row.to_vec()).or_insert(0) -= n * k;
            }
        }
        Ok(())
    }

    /// Without a residual filter a row has a partner iff the other side has
    /// rows at its key. Emits the change of one side's lone rows at `key`.
    #[allow(clippy::too_many_arguments)]
    fn side_transition(
        &self,
        left: bool,
        key: &[u8],
        other_before: bool,
        other_after: bool,
        delta_by_key: &HashMap<Vec<u8>, Vec<usize>>,
        delta_rows: &datafusion::arrow::row::Rows,
        delta: &ChangeBatch,
        out: &mut Multiset,
    ) {
        let role = self.kind.side_role(left);
        let keep = |partnered: bool| role.keeps(partnered);
        let side = if left { &self.left } else { &self.right };
        let add_delta = |out: &mut Multiset, sign: i64| {
            for &i in delta_by_key.get(key).map(Vec::as_slice).unwrap_or_default() {
                *out.entry(delta_rows.row(i).data().to_vec()).or_insert(0) += sign * delta.weights.value(i);
            }
        };
        let add_current = |out: &mut Multiset, sign: i64| {
            if let Some(rows) = side.index.get(key) {
                for (row, n) in rows {
                    *out.entry(row.clone()).or_insert(0) += sign * n;
                }
            }
        };
        match (keep(other_before), keep(other_after)) {
            (true, true) => add_delta(out, 1),
            (false, true) => add_current(out, 1),
            // The rows as they were: the current rows minus this epoch's delta.
            (true, false) => {
                add_current(out, -1);
                add_delta(out, 1);
            }
            (false, false) => {}
        }
    }

    fn filtered_pairs(&self, left: Vec<ArrayRef>, right: Vec<ArrayRef>, weights: Vec<i64>) -> Result<ChangeBatch> {
        let n = weights.len();
        let mask = self.pair_mask(&left, &right, n)?;
        let pairs = self.assemble(Some(left), Some(right), weights)?;
        match mask {
            Some(mask) => pairs.filter(&mask),
            None => Ok(pairs),
        }
    }
}

fn take_columns(columns: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    columns.iter().map(|c| Ok(take(c.as_ref(), indices, None)?)).collect()
}
