//! The open groups of a watermark-driven aggregate, ordered by event time.
//!
//! When a GROUP BY key column carries a watermark (`window_start` of a
//! TUMBLE over a table with `WATERMARK FOR`, say), a group whose value in
//! that column is below the watermark can never change again: its window is
//! closed. [`OpenGroups`] keeps every live group under its value in that
//! column (memcomparable bytes, so the closed ones are a range), tells which
//! input rows are late (below the watermark at the start of the epoch), and
//! hands out the groups the watermark closed at its end.
//!
//! The index lives in memory; after a restart it is rebuilt from the groups
//! stored at the last checkpoint (a scan of the operator's state, which the
//! watermark keeps small), each partitioned copy keeping the groups it owns.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::ScalarValue;

use crate::error::{Result, SqlError};
use crate::hash::HashSet;
use crate::stream::ops::exchange::Ownership;
use crate::stream::rowcodec::RowCodec;
use crate::stream::watermark::{ViewStats, Watermark, below};

pub struct OpenGroups {
    /// The group-key column that orders groups in event time.
    pub column: usize,
    /// Encodes that column alone.
    time_codec: RowCodec,
    by_time: BTreeMap<Vec<u8>, HashSet<Vec<u8>>>,
    /// Whether `by_time` holds every live group (false after a restart
    /// until rebuilt from the store).
    ready: bool,
    ownership: Ownership,
    stats: Arc<ViewStats>,
    /// The highest bound groups were closed below: the watermark this
    /// operator has acted on never goes back, even if its input's does (an
    /// idle input becoming active again), so a closed window stays closed.
    closed: Option<ScalarValue>,
}

impl OpenGroups {
    pub fn new(column: usize, field: &Field, ownership: Ownership, stats: Arc<ViewStats>) -> Result<Self> {
        let time_codec = RowCodec::new(Arc::new(Schema::new(vec![field.clone().with_name("t")])))?;
        Ok(Self { column, time_codec, by_time: BTreeMap::new(), ready: false, ownership, stats, closed: None })
    }

    /// The input's watermark, never below what has been closed already.
    pub fn bounded(&self, watermark: Watermark) -> Watermark {
        let Some(closed) = &self.closed else { return watermark };
        let at_least = |v: Option<ScalarValue>| crate::stream::watermark::max_value(v, Some(closed.clone()));
        Watermark { before: at_least(watermark.before), after: at_least(watermark.after), ..watermark }
    }

    /// The bound closed below so far, as bytes to store.
    pub fn closed_bytes(&self) -> Result<Option<Vec<u8>>> {
        let Some(closed) = &self.closed else { return Ok(None) };
        let data_type = self.time_codec.schema().field(0).data_type().clone();
        let rows = self.time_codec.encode(&[closed.cast_to(&data_type)?.to_array()?])?;
        Ok(Some(rows.row(0).data().to_vec()))
    }

    /// Restores the stored bound.
    pub fn restore_closed(&mut self, bytes: &[u8]) -> Result<()> {
        let batch = self.time_codec.decode([bytes])?;
        if batch.num_rows() == 1 && batch.column(0).is_valid(0) {
            self.closed = Some(ScalarValue::try_from_array(batch.column(0), 0)?);
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Fills the index from stored group keys (their key columns decoded
    /// with the aggregate's group codec), keeping the owned ones.
    pub fn rebuild(&mut self, groups: Vec<Vec<u8>>, key_codec: &RowCodec) -> Result<()> {
        self.ready = true;
        if groups.is_empty() {
            return Ok(());
        }
        let keys = key_codec.decode(groups.iter().map(Vec::as_slice))?;
        let owned = self.ownership.owns(keys.columns(), keys.num_rows())?;
        let times = self.time_codec.encode(&[keys.column(self.column).clone()])?;
        for ((row, group), &owned) in groups.into_iter().enumerate().zip(&owned) {
            if owned && keys.column(self.column).is_valid(row) {
                self.by_time.entry(times.row(row).data().to_vec()).or_default().insert(group);
            }
        }
        Ok(())
    }

    /// A fresh operator (no stored state): nothing to rebuild.
    pub fn start_fresh(&mut self) {
        self.ready = true;
    }

    /// Which rows of a change are late: their time below the watermark at
    /// the start of the epoch (into windows already closed). Counts them.
    /// `None` if no row is.
    pub fn late_rows(
        &self,
        key_columns: &[ArrayRef],
        weights: &Int64Array,
        watermark: &Watermark,
    ) -> Result<Option<BooleanArray>> {
        let Some(before) = &watermark.before else { return Ok(None) };
        let late = below(self.time_column(key_columns)?, before)?;
        if late.true_count() == 0 {
            return Ok(None);
        }
        // Each late row counts as often as its weight says (an insert or
        // a delete of n copies).
        let dropped: u64 = late.values().set_indices().map(|row| weights.value(row).unsigned_abs()).sum();
        self.stats.add_late(dropped);
        Ok(Some(not(&late)?))
    }

    /// The time bytes of every row's group (the watermarked key column).
    pub fn times(&self, key_columns: &[ArrayRef]) -> Result<datafusion::arrow::row::Rows> {
        self.time_codec.encode(&[self.time_column(key_columns)?.clone()])
    }

    /// The watermarked column among a group's key columns.
    fn time_column<'a>(&self, key_columns: &'a [ArrayRef]) -> Result<&'a ArrayRef> {
        key_columns.get(self.column).ok_or_else(|| SqlError::internal("the group key lacks its time column"))
    }

    /// Records a live group (NULL times never close and are not indexed).
    pub fn insert(&mut self, time: Option<&[u8]>, group: &[u8]) {
        if let Some(time) = time {
            if let Some(groups) = self.by_time.get_mut(time) {
                if !groups.contains(group) {
                    groups.insert(group.to_vec());
                }
            } else {
                self.by_time.entry(time.to_vec()).or_default().insert(group.to_vec());
            }
        }
    }

    /// Forgets a group that emptied.
    pub fn remove(&mut self, time: Option<&[u8]>, group: &[u8]) {
        if let Some(groups) = time.and_then(|t| self.by_time.get_mut(t)) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_time.remove(time.unwrap_or_default());
            }
        }
    }

    /// Removes and returns the groups whose time is below `after` (the
    /// watermark at the end of the epoch), oldest first.
    pub fn close(
        &mut self,
        after: &ScalarValue,
        data_type: &datafusion::arrow::datatypes::DataType,
    ) -> Result<Vec<Vec<u8>>> {
        self.closed = crate::stream::watermark::max_value(self.closed.take(), Some(after.clone()));
        let bound = after.cast_to(data_type)?.to_array()?;
        let bound = self.time_codec.encode(&[bound])?;
        let open = self.by_time.split_off(bound.row(0).data());
        let closed = std::mem::replace(&mut self.by_time, open);
        Ok(closed.into_values().flatten().collect())
    }

    /// Live groups indexed (open windows).
    pub fn len(&self) -> usize {
        self.by_time.values().map(HashSet::len).sum()
    }
}
