//! Leaf: a view's own reader of a source (CREATE SOURCE … WITH (connector …)).
//!
//! Every materialized view reading a source reads it from the start, at its
//! own pace, as in RisingWave: a source has no stored rows, so a view
//! created later still sees the whole stream. Each epoch the reader takes
//! what the connector has due (at most a chunk: a view that falls behind
//! slows its reader rather than buffering), and the read position — and the
//! source's watermark, if it declares one — live in the operator's state,
//! written at checkpoints with the rest of the view's state. A replay after
//! a crash reads again from the checkpointed position at the logged epoch
//! times, so the view sees every record exactly once.
//!
//! Records the connector could not turn into rows are kept in the same
//! state (keyed by partition and offset), so they are checkpointed and
//! replayed exactly like the rows; `freshet_catalog.source_errors` lists
//! them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;

use crate::error::{Result, SqlError};
use crate::state::WriteBatch;
use crate::stream::connector::{
    BadRecord, MAX_RECORDS_PER_EPOCH, SourcePosition, SourceReader, bad_record_key, decode_bad_record,
    encode_bad_record,
};
use crate::stream::state_table::{StateContext, ValueState};
use crate::stream::watermark::TableWatermark;
use crate::stream::watermark::{self, ViewStats, Watermark, Watermarks};
use crate::stream::{ChangeBatch, EpochInput, Operator};

/// What the state holds: the position and the watermark after it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Progress {
    position: SourcePosition,
    watermark: Option<i64>,
}

impl Progress {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(29 + 12 * self.position.offsets.len());
        bytes.extend_from_slice(&self.position.next.to_be_bytes());
        bytes.extend_from_slice(&self.position.started_nanos.to_be_bytes());
        bytes.push(u8::from(self.watermark.is_some()));
        bytes.extend_from_slice(&self.watermark.unwrap_or(0).to_be_bytes());
        // Then the offsets of partitioned connectors (absent before they existed).
        self.position.encode_offsets(&mut bytes);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = || SqlError::internal("corrupt source position in the store");
        let field = |range: std::ops::Range<usize>| -> Result<[u8; 8]> {
            bytes.get(range).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)
        };
        let flag = *bytes.get(16).ok_or_else(corrupt)?;
        let offsets = match bytes.get(25..) {
            Some(rest) if !rest.is_empty() => SourcePosition::decode_offsets(rest).ok_or_else(corrupt)?,
            _ => std::collections::BTreeMap::new(),
        };
        Ok(Self {
            position: SourcePosition {
                next: u64::from_be_bytes(field(0..8)?),
                started_nanos: i64::from_be_bytes(field(8..16)?),
                offsets,
            },
            // Always written, 8 bytes, even without a watermark.
            watermark: if flag != 0 { Some(i64::from_be_bytes(field(17..25)?)) } else { None },
        })
    }
}

/// Where a source scan keeps its bad records: under its own prefix.
pub fn bad_records_prefix(state_prefix: &[u8]) -> Vec<u8> {
    let mut prefix = state_prefix.to_vec();
    prefix.push(b'e');
    prefix
}

pub struct SourceScan {
    /// The source's name (for its status and bad records).
    source: String,
    reader: Arc<dyn SourceReader>,
    /// The source's columns to keep, in order; `None` keeps all.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    /// The source's `WATERMARK FOR`, and its column's place in the output.
    watermark: Option<(Arc<TableWatermark>, Option<usize>, DataType)>,
    state: ValueState<Progress>,
    bad_records: ValueState<BadRecord>,
    /// The watermark before and after the last step.
    current: Watermark,
    /// Epoch time of the last read that brought rows (for the watermark's
    /// idle timeout; since this process started).
    last_rows_at: Option<i64>,
    stats: Arc<ViewStats>,
    /// Told `stats` it read the source to the end.
    finished: bool,
}

impl SourceScan {
    pub fn new(
        source: &str,
        reader: Arc<dyn SourceReader>,
        projection: Option<Vec<usize>>,
        watermark: Option<Arc<TableWatermark>>,
        schema: SchemaRef,
        state_prefix: &[u8],
        stats: Arc<ViewStats>,
    ) -> Self {
        let reader = reader.instance().unwrap_or(reader);
        let source_schema = reader.schema();
        // Only the columns the view reads, and the watermark's.
        let reader = match &projection {
            Some(indices) => {
                let mut read = indices.clone();
                read.extend(watermark.as_ref().map(|def| def.column));
                read.sort_unstable();
                read.dedup();
                reader.with_columns(&read).unwrap_or(reader)
            }
            None => reader,
        };
        let watermark = watermark.map(|def| {
            let output = match &projection {
                Some(indices) => indices.iter().position(|&i| i == def.column),
                None => Some(def.column),
            };
            let data_type = source_schema.field(def.column).data_type().clone();
            (def, output, data_type)
        });
        stats.register_reader(reader.arrival());
        if !reader.replayable() {
            stats.register_unreplayable_reader();
        }
        let bad_prefix = bad_records_prefix(state_prefix);
        stats.register_bad_records(source, &bad_prefix);
        Self {
            source: source.to_string(),
            reader,
            projection,
            schema,
            watermark,
            state: ValueState::new(state_prefix),
            bad_records: ValueState::new(&bad_prefix),
            current: Watermark::default(),
            last_rows_at: None,
            stats,
            finished: false,
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.stats.reader_finished();
        }
    }

    /// Marks the watermark idle once the source has brought no rows for
    /// its idle timeout (`watermark_idle_timeout`), so that it stops
    /// holding back a join's or union's watermark.
    fn idled(&mut self, mut watermark: Watermark, rows: usize, now: i64) -> Watermark {
        if rows > 0 || self.last_rows_at.is_none() {
            self.last_rows_at = Some(now);
        }
        let timeout = self.watermark.as_ref().and_then(|(def, _, _)| def.idle_timeout);
        watermark.was_idle = self.current.idle;
        watermark.idle = match (timeout, self.last_rows_at) {
            (Some(timeout), Some(last)) => rows == 0 && now.saturating_sub(last) >= timeout,
            _ => false,
        };
        watermark
    }

    fn keep_bad_records(&mut self, input: &EpochInput, bad: Vec<BadRecord>) -> Result<()> {
        let keys: Vec<Vec<u8>> = bad.iter().map(bad_record_key).collect();
        self.bad_records.load(&input.state, &keys, |stored| {
            stored
                .iter()
                .map(|b| decode_bad_record(b).ok_or_else(|| SqlError::internal("corrupt bad record")))
                .collect()
        })?;
        self.stats.add_bad_records(bad.len() as u64);
        for (key, record) in keys.iter().zip(bad) {
            if let Some(slot) = self.bad_records.get_mut(key) {
                *slot = Some(record);
            }
        }
        Ok(())
    }

    fn progress(&mut self, input: &EpochInput) -> Result<Progress> {
        let key = vec![Vec::new()];
        self.state.load(&input.state, &key, |stored| stored.iter().map(|b| Progress::decode(b)).collect())?;
        Ok(self.state.get_mut(&[]).and_then(|p| p.clone()).unwrap_or_default())
    }
}

impl Operator for SourceScan {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let mut progress = self.progress(input)?;
        let data_type = self.watermark.as_ref().map(|(_, _, t)| t.clone());
        let value = |v: Option<i64>| -> Result<Option<ScalarValue>> {
            match (v, &data_type) {
                (Some(v), Some(t)) => Ok(Some(watermark::from_i64(v, t)?)),
                _ => Ok(None),
            }
        };
        let before = value(progress.watermark)?;
        if self.reader.exhausted(&progress.position) {
            // Every record was read in an epoch before this one, which has
            // committed: the view shows them all.
            self.current = self.idled(Watermark::steady(before), 0, input.now_nanos);
            self.finish();
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let mut bad = Vec::new();
        let rows = if input.hold_sources {
            datafusion::arrow::array::RecordBatch::new_empty(self.reader.schema())
        } else {
            self.reader.read(&mut progress.position, input.now_nanos, MAX_RECORDS_PER_EPOCH, &mut bad)?
        };
        if !bad.is_empty() {
            self.keep_bad_records(input, bad)?;
        }
        if let Some(status) = self.reader.status() {
            self.stats.set_source_status(&self.source, status);
        }
        let mut after = before.clone();
        if let Some((def, _, data_type)) = &self.watermark {
            let change = ChangeBatch::uniform(rows.clone(), 1);
            after = def.advance(before.clone(), &change, data_type)?;
            progress.watermark = after.as_ref().and_then(watermark::to_i64);
        }
        self.current = self.idled(Watermark::new(before, after), rows.num_rows(), input.now_nanos);
        self.stats.add_source_rows(rows.num_rows() as u64);
        // Not finished yet even if this read the last records: the rows of
        // this epoch are not committed (nor visible) until the epoch ends.
        // The next epoch finds the reader exhausted and finishes, so a view
        // whose sources are done shows every record.
        if let Some(slot) = self.state.get_mut(&[]) {
            *slot = Some(progress);
        }
        let columns = match &self.projection {
            Some(indices) => indices.iter().map(|&i| rows.column(i).clone()).collect(),
            None => rows.columns().to_vec(),
        };
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
        let rows = datafusion::arrow::array::RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        Ok(ChangeBatch::uniform(rows, 1))
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.state.flush(state, batch, |_| 32, |values| Ok(values.iter().map(|p| p.encode()).collect()))?;
        self.bad_records.flush(
            state,
            batch,
            |r| 16 + r.payload.len() + r.error.len(),
            |values| Ok(values.iter().map(|r| encode_bad_record(r)).collect()),
        )
    }

    fn watermarks(&self, _input: &EpochInput) -> Result<Watermarks> {
        let mut out = watermark::none(self.schema.fields().len());
        if let Some((_, Some(column), _)) = &self.watermark {
            if let Some(out) = out.get_mut(*column) {
                *out = Some(self.current.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finite reader of the numbers 0..len, `chunk` at a time.
    struct Counter {
        schema: SchemaRef,
        len: u64,
    }

    impl crate::stream::connector::Connector for Counter {
        fn schema(&self) -> SchemaRef {
            self.schema.clone()
        }
    }

    impl SourceReader for Counter {
        fn read(
            &self,
            position: &mut SourcePosition,
            _now_nanos: i64,
            max_records: usize,
            _bad: &mut Vec<crate::stream::connector::BadRecord>,
        ) -> Result<datafusion::arrow::array::RecordBatch> {
            let start = position.next.min(self.len);
            let end = (start + max_records as u64).min(self.len);
            position.next = end;
            let values: Vec<i64> = (start as i64..end as i64).collect();
            Ok(datafusion::arrow::array::RecordBatch::try_new(
                self.schema.clone(),
                vec![Arc::new(datafusion::arrow::array::Int64Array::from(values))],
            )?)
        }
        fn exhausted(&self, position: &SourcePosition) -> bool {
            position.next >= self.len
        }
    }

    /// "Sources done" may only be seen once the epoch that read the last
    /// records has ended: a client waiting for it then reads every record
    /// in the view (it once turned true while the last chunk was still
    /// being committed).
    #[test]
    fn a_reader_finishes_in_the_epoch_after_its_last_records() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let reader = Arc::new(Counter { schema: schema.clone(), len: 10 });
        let stats = ViewStats::new();
        let prefix = crate::state::operator_prefix(1, 0);
        let mut scan = SourceScan::new("numbers", reader, None, None, schema, &prefix, stats.clone());
        let store = crate::state::MemStore::new();
        let context = || StateContext {
            snapshot: crate::state::StateStore::snapshot(&store),
            budget: crate::stream::state_table::StateBudget::unlimited(),
            fresh: true,
            checkpoint: false,
        };
        let first = scan.step(&EpochInput::new(context())).expect("step");
        assert_eq!(first.len(), 10, "one epoch reads all ten records");
        assert!(!stats.sources_done(), "done before the epoch with the last records ended");
        let second = scan.step(&EpochInput::new(context())).expect("step");
        assert_eq!(second.len(), 0);
        assert!(stats.sources_done(), "the next epoch finds the reader exhausted");
        assert_eq!(stats.source_rows(), 10);
    }

    #[test]
    fn progress_round_trips_and_reads_the_form_without_offsets() {
        let position = SourcePosition { next: 7, started_nanos: 11, offsets: [(0, 5), (3, 9)].into_iter().collect() };
        for progress in [
            Progress { position: position.clone(), watermark: Some(-4) },
            Progress { position: SourcePosition::default(), watermark: None },
        ] {
            assert_eq!(Progress::decode(&progress.encode()).unwrap(), progress);
        }
        // Written before partitioned connectors: no offsets after the watermark.
        let old = Progress { position: SourcePosition { offsets: Default::default(), ..position }, watermark: Some(1) };
        let bytes = old.encode();
        assert_eq!(Progress::decode(bytes.get(..25).unwrap()).unwrap(), old);
        assert!(Progress::decode(bytes.get(..20).unwrap()).is_err());
    }
}
