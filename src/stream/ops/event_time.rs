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
    by_time: BTreeMap<Vec<u8>, TimeGroups>,
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
                self.by_time.entry(times.row(row).data().to_vec()).or_default().push(&group);
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

    /// Records a group that became live (NULL times never close and are
    /// not indexed). The caller inserts a group only while it is not live.
    pub fn insert(&mut self, time: Option<&[u8]>, group: &[u8]) {
        if let Some(time) = time {
            match self.by_time.get_mut(time) {
                Some(groups) => groups.push(group),
                None => self.by_time.entry(time.to_vec()).or_default().push(group),
            }
        }
    }

    /// Forgets a group that emptied (one that is live).
    pub fn remove(&mut self, time: Option<&[u8]>, group: &[u8]) {
        let Some(time) = time else { return };
        if let Some(groups) = self.by_time.get_mut(time) {
            groups.forget(group);
            if groups.live() == 0 {
                self.by_time.remove(time);
            }
        }
    }

    /// Removes and returns the groups whose time is below `after` (the
    /// watermark at the end of the epoch), oldest first.
    pub fn close(
        &mut self,
        after: &ScalarValue,
        data_type: &datafusion::arrow::datatypes::DataType,
    ) -> Result<ClosedGroups> {
        self.closed = crate::stream::watermark::max_value(self.closed.take(), Some(after.clone()));
        let bound = after.cast_to(data_type)?.to_array()?;
        let bound = self.time_codec.encode(&[bound])?;
        let open = self.by_time.split_off(bound.row(0).data());
        let closed = std::mem::replace(&mut self.by_time, open);
        let mut groups = ClosedGroups::default();
        for time in closed.into_values() {
            time.drain_into(&mut groups);
        }
        Ok(groups)
    }

    /// Live groups indexed (open windows).
    pub fn len(&self) -> usize {
        self.by_time.values().map(TimeGroups::live).sum()
    }
}

/// The live groups of one time. Their keys lie end to end in one buffer,
/// so a group becoming live costs an append and no heap block or hash of
/// its own (in a windowed aggregate every group becomes live once and
/// closes with its window); a group that empties before its window closes
/// is remembered as gone instead of being searched for.
#[derive(Default)]
struct TimeGroups {
    keys: Vec<u8>,
    /// Where each listed key ends in `keys`.
    ends: Vec<usize>,
    /// Listed keys that are no longer live.
    gone: HashSet<Vec<u8>>,
}

impl TimeGroups {
    fn push(&mut self, group: &[u8]) {
        // A group that emptied and comes back is listed already.
        if !self.gone.is_empty() && self.gone.remove(group) {
            return;
        }
        self.keys.extend_from_slice(group);
        self.ends.push(self.keys.len());
    }

    fn forget(&mut self, group: &[u8]) {
        self.gone.insert(group.to_vec());
    }

    fn live(&self) -> usize {
        self.ends.len().saturating_sub(self.gone.len())
    }

    /// Appends the live keys to `closed`.
    fn drain_into(self, closed: &mut ClosedGroups) {
        let mut start = 0;
        for end in self.ends {
            let key = self.keys.get(start..end).unwrap_or_default();
            start = end;
            if self.gone.is_empty() || !self.gone.contains(key) {
                closed.keys.extend_from_slice(key);
                closed.ends.push(closed.keys.len());
            }
        }
    }
}

/// The group keys a watermark closed, oldest time first, end to end.
#[derive(Default)]
pub struct ClosedGroups {
    keys: Vec<u8>,
    ends: Vec<usize>,
}

impl ClosedGroups {
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + Clone {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| self.keys.get(start..end).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType;

    use super::*;

    /// The index against a set of live groups kept the obvious way: groups
    /// that empty, come back and empty again, over three times; closing
    /// hands out each live group below the bound once, oldest time first.
    #[test]
    fn open_groups_close_exactly_the_live_groups_below_the_watermark() {
        let field = Field::new("t", DataType::Int64, true);
        let mut open = OpenGroups::new(0, &field, Ownership::all(), ViewStats::new()).expect("index");
        open.start_fresh();
        let time = |t: i64| {
            let rows = open.time_codec.encode(&[Arc::new(Int64Array::from(vec![t])) as ArrayRef]).expect("encode");
            rows.row(0).data().to_vec()
        };
        let (t1, t2, t3) = (time(1), time(2), time(3));
        let mut live: BTreeMap<Vec<u8>, std::collections::BTreeSet<Vec<u8>>> = BTreeMap::new();
        // As the aggregate calls it: when a group starts or stops being live.
        let mut apply = |open: &mut OpenGroups, t: &[u8], group: &[u8], keep: bool| {
            let groups = live.entry(t.to_vec()).or_default();
            if keep && groups.insert(group.to_vec()) {
                open.insert(Some(t), group);
            } else if !keep && groups.remove(group) {
                open.remove(Some(t), group);
            }
        };
        for round in 0..3u8 {
            for g in 0..5u8 {
                apply(&mut open, &t1, &[g, round], true);
                apply(&mut open, &t2, &[g], round == 0 || g % 2 == 0);
            }
            apply(&mut open, &t3, b"x", round != 1);
        }
        // Gone: t2's odd groups (emptied in round 1); t3's x emptied and came back.
        assert_eq!(open.len(), 15 + 3 + 1);
        let closed = open.close(&ScalarValue::Int64(Some(3)), &DataType::Int64).expect("close");
        let got: Vec<Vec<u8>> = closed.iter().map(<[u8]>::to_vec).collect();
        let mut want: Vec<Vec<u8>> = Vec::new();
        for t in [&t1, &t2] {
            let mut groups: Vec<Vec<u8>> = live[t].iter().cloned().collect();
            let listed: Vec<Vec<u8>> = got.iter().filter(|g| groups.contains(g)).cloned().collect();
            assert_eq!(listed.len(), groups.len(), "each live group once");
            groups.sort();
            want.extend(groups);
        }
        let mut sorted_got = got.clone();
        sorted_got.sort();
        want.sort();
        assert_eq!(sorted_got, want);
        // Oldest first: every t1 group (two bytes) before every t2 group.
        let first_t2 = got.iter().position(|g| g.len() == 1).expect("t2 groups");
        assert!(got[..first_t2].iter().all(|g| g.len() == 2) && got[first_t2..].iter().all(|g| g.len() == 1));
        assert_eq!(open.len(), 1, "t3's group stays open");
        let closed = open.close(&ScalarValue::Int64(Some(4)), &DataType::Int64).expect("close");
        assert_eq!(closed.iter().collect::<Vec<_>>(), vec![b"x".as_slice()]);
    }
}
