//! Time bounds of a join: the state cleaning of interval joins
//! (`b.ts BETWEEN a.ts - INTERVAL … AND a.ts + INTERVAL …`) and window joins
//! (`ON a.window_start = b.window_start`), driven by the watermarks of the
//! two time columns. Inner joins get both; outer, semi and anti joins only
//! window joins, whose rows leave once both watermarks pass their time
//! (see `Join::expire`: such a join's output for a row depends on the row
//! and on all its partners, and with equal times they leave together).
//!
//! With `left.t + lo <= right.t <= left.t + hi`, a left row can meet only
//! right rows up to `left.t + hi`; once the right watermark passes that, no
//! future right row can join it and it leaves the state. Likewise a right
//! row leaves once the left watermark passes `right.t - lo`. A row that
//! arrives behind its own side's watermark is late — its partners on the
//! other side may be gone — and is dropped and counted, so the join is
//! exactly the join of the rows that were on time. Every partner of an
//! on-time row is still in the state, which also lets a delete of a row
//! that already left the state retract its pairs.
//!
//! Each side keeps an in-memory index of its rows by time (rebuilt from the
//! stored side after a restart, keeping the rows the copy owns).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;

use crate::error::{Result, SqlError};
use crate::stream::ops::exchange::Ownership;
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::{Derivation, ViewStats, Watermark, Watermarks, below, min};

/// (join key, row) pairs.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One side's rows by time.
pub struct ExpiryIndex {
    /// The time column in the side's rows.
    pub column: usize,
    data_type: DataType,
    by_time: ByTime,
    ready: bool,
}

/// Times as integers where the type is one (timestamps, dates: no
/// allocation or byte comparison per row), else in Arrow's row format.
enum ByTime {
    Integers(BTreeMap<i64, Pairs>),
    Encoded(RowCodec, BTreeMap<Vec<u8>, Pairs>),
}

/// Whether a time type's values are integers that order like its times.
fn integer_time(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Int64 | DataType::Int32
    )
}

impl ExpiryIndex {
    pub fn new(column: usize, side_schema: &SchemaRef) -> Result<Self> {
        let field = side_schema.field(column).clone().with_name("t");
        let data_type = field.data_type().clone();
        let by_time = if integer_time(&data_type) {
            ByTime::Integers(BTreeMap::new())
        } else {
            ByTime::Encoded(RowCodec::new(Arc::new(Schema::new(vec![field])))?, BTreeMap::new())
        };
        Ok(Self { column, data_type, by_time, ready: false })
    }

    /// Records rows just added to the side (those with a non-NULL time).
    pub fn insert(&mut self, times: &ArrayRef, rows: impl Iterator<Item = (usize, Vec<u8>, Vec<u8>)>) -> Result<()> {
        match &mut self.by_time {
            ByTime::Integers(by_time) => {
                let times = cast(times, &DataType::Int64)?;
                let times = times
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| SqlError::internal("a join time column is not an integer"))?;
                for (row, key, bytes) in rows {
                    if times.is_valid(row) {
                        by_time.entry(times.value(row)).or_default().push((key, bytes));
                    }
                }
            }
            ByTime::Encoded(codec, by_time) => {
                let encoded = codec.encode(std::slice::from_ref(times))?;
                for (row, key, bytes) in rows {
                    if times.is_valid(row) {
                        by_time.entry(encoded.row(row).data().to_vec()).or_default().push((key, bytes));
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes and returns the (key, row) pairs with a time below `bound`.
    pub fn expire(&mut self, bound: &ScalarValue) -> Result<Pairs> {
        let bound = bound.cast_to(&self.data_type)?.to_array()?;
        let expired: Vec<Pairs> = match &mut self.by_time {
            ByTime::Integers(by_time) => {
                let bound = cast(&bound, &DataType::Int64)?;
                let Some(bound) = bound.as_any().downcast_ref::<Int64Array>().filter(|b| b.is_valid(0)) else {
                    return Ok(Vec::new());
                };
                let kept = by_time.split_off(&bound.value(0));
                std::mem::replace(by_time, kept).into_values().collect()
            }
            ByTime::Encoded(codec, by_time) => {
                let bound = codec.encode(&[bound])?;
                let kept = by_time.split_off(bound.row(0).data());
                std::mem::replace(by_time, kept).into_values().collect()
            }
        };
        Ok(expired.into_iter().flatten().collect())
    }

    pub fn len(&self) -> usize {
        match &self.by_time {
            ByTime::Integers(by_time) => by_time.values().map(Vec::len).sum(),
            ByTime::Encoded(_, by_time) => by_time.values().map(Vec::len).sum(),
        }
    }
}

/// What an inner join bounded in time needs.
pub struct TimeBounds {
    /// Left rows below this threshold (from the right watermark: `wr - hi`)
    /// leave the state; `None` without an upper bound.
    pub left_expiry: Option<Derivation>,
    /// Right rows below this threshold (from the left watermark: `wl + lo`).
    pub right_expiry: Option<Derivation>,
    pub left: ExpiryIndex,
    pub right: ExpiryIndex,
    pub ownership: Ownership,
    pub stats: Arc<ViewStats>,
}

/// The watermarks of both time columns in one epoch, and the thresholds
/// below which each side's rows leave.
pub struct Epoch {
    pub left: Option<Watermark>,
    pub right: Option<Watermark>,
    pub left_threshold: Option<Watermark>,
    pub right_threshold: Option<Watermark>,
}

impl TimeBounds {
    pub fn epoch(&self, left: &Watermarks, right: &Watermarks) -> Result<Epoch> {
        let first = |derivation: &Option<Derivation>, input: &Watermarks| -> Result<Option<Watermark>> {
            match derivation {
                Some(d) => Ok(d.derive(input)?.into_iter().next().flatten()),
                None => Ok(None),
            }
        };
        Ok(Epoch {
            left: left.get(self.left.column).cloned().flatten(),
            right: right.get(self.right.column).cloned().flatten(),
            left_threshold: first(&self.left_expiry, right)?,
            right_threshold: first(&self.right_expiry, left)?,
        })
    }

    /// Which rows of a side's change are on time (`None`: all). Rows behind
    /// the side's watermark are late only if the other side is cleaned.
    pub fn on_time(
        &self,
        left_side: bool,
        rows: &datafusion::arrow::array::RecordBatch,
        weights: &Int64Array,
        epoch: &Epoch,
    ) -> Result<Option<BooleanArray>> {
        let (cleans_other, watermark, column) = if left_side {
            (self.right_expiry.is_some(), &epoch.left, self.left.column)
        } else {
            (self.left_expiry.is_some(), &epoch.right, self.right.column)
        };
        let Some(before) = watermark.as_ref().and_then(|w| w.before.as_ref()).filter(|_| cleans_other) else {
            return Ok(None);
        };
        let late = below(rows.column(column), before)?;
        if late.true_count() == 0 {
            return Ok(None);
        }
        let dropped: u64 = late.values().set_indices().map(|row| weights.value(row).unsigned_abs()).sum();
        self.stats.add_late(dropped);
        Ok(Some(not(&late)?))
    }

    /// The output watermarks of the two time columns (`left_width`: where
    /// the right columns start): a future pair has a left time at or above
    /// min(wl, wr - hi) and a right time at or above min(wr, wl + lo).
    pub fn output_watermarks(&self, epoch: &Epoch, left_width: usize, out: &mut Watermarks) {
        let bounded = |own: &Option<Watermark>, threshold: &Option<Watermark>| match (own, threshold) {
            (Some(own), Some(threshold)) => Some(min(own, threshold)),
            _ => None,
        };
        if let Some(slot) = out.get_mut(self.left.column) {
            *slot = bounded(&epoch.left, &epoch.left_threshold);
        }
        if let Some(slot) = out.get_mut(left_width + self.right.column) {
            *slot = bounded(&epoch.right, &epoch.right_threshold);
        }
    }

    /// After a restart: fills a side's index from its stored rows (join key
    /// and row encoded back to back, as the side's state keys hold them).
    pub fn rebuild(
        &mut self,
        left_side: bool,
        state: &StateContext,
        stored: Vec<Vec<u8>>,
        key_schema: Option<&SchemaRef>,
        side_schema: &SchemaRef,
    ) -> Result<()> {
        let index = if left_side { &mut self.left } else { &mut self.right };
        index.ready = true;
        let _ = state;
        if stored.is_empty() {
            return Ok(());
        }
        let key_width = key_schema.map_or(0, |k| k.fields().len());
        let mut fields: Vec<Field> =
            key_schema.map(|k| k.fields().iter().map(|f| f.as_ref().clone()).collect()).unwrap_or_default();
        fields.extend(
            side_schema.fields().iter().enumerate().map(|(i, f)| f.as_ref().clone().with_name(format!("r{i}"))),
        );
        let both = RowCodec::new(Arc::new(Schema::new(fields)))?;
        let decoded = both.decode(stored.iter().map(Vec::as_slice))?;
        let lacks_key = || SqlError::internal("a stored interval-join row lacks its key");
        let (key_columns, row_columns) = decoded.columns().split_at_checked(key_width).ok_or_else(lacks_key)?;
        let (key_columns, row_columns) = (key_columns.to_vec(), row_columns.to_vec());
        let owned = self.ownership.owns(&key_columns, decoded.num_rows())?;
        let row_codec = RowCodec::new(side_schema.clone())?;
        let rows = row_codec.encode(&row_columns)?;
        let keys = match key_schema {
            Some(schema) => Some(RowCodec::new(schema.clone())?.encode(&key_columns)?),
            None => None,
        };
        let index = if left_side { &mut self.left } else { &mut self.right };
        let entries = (0..decoded.num_rows()).filter(|&i| owned.get(i) == Some(&true)).map(|i| {
            let key = keys.as_ref().map(|k| k.row(i).data().to_vec()).unwrap_or_default();
            (i, key, rows.row(i).data().to_vec())
        });
        let times = row_columns
            .get(index.column)
            .cloned()
            .ok_or_else(|| SqlError::internal("a stored interval-join row lacks its time column"))?;
        index.insert(&times, entries.collect::<Vec<_>>().into_iter())
    }

    pub fn is_ready(&self, left_side: bool) -> bool {
        if left_side { self.left.ready } else { self.right.ready }
    }

    pub fn start_fresh(&mut self) {
        self.left.ready = true;
        self.right.ready = true;
    }
}
