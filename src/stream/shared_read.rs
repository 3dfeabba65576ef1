//! One read of a source per epoch, however many times a view scans it.
//!
//! A view that names a source twice (a self-join, the two sides of Nexmark
//! q7) or once through a hopping window (`HOP` is a union of shifted scans:
//! q5 scans `bid` ten times) gets one [`SourceScan`] leaf per scan, each
//! with its own position in the view's state. Those positions move in
//! lockstep: every leaf of the view reads in the same epochs, at the same
//! epoch time, with the same chunk size. For a replayable reader (a
//! generator, a file) a read is a function of exactly those inputs, so the
//! leaves would each compute the same records again.
//!
//! [`SharedRead`] wraps the reader the leaves share and remembers its last
//! read: a leaf asking for the same records (same position, epoch time and
//! limit) gets a copy of the batch (reference-counted columns, no copy of
//! the values) instead of a second read. A leaf whose position differs
//! (never, in practice) reads through to the connector, so sharing can only
//! save work, never change what a leaf sees. Readers that cannot repeat a
//! read (Kafka: a read takes what the consumer has fetched) are not shared.
//!
//! [`SourceScan`]: crate::stream::ops::source_scan::SourceScan

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::Mutex;

use crate::error::Result;
use crate::stream::connector::{BadRecord, Connector, SourcePosition, SourceReader};

/// A read: what was asked, and what it gave.
struct Read {
    from: SourcePosition,
    now_nanos: i64,
    max_records: usize,
    to: SourcePosition,
    rows: RecordBatch,
    bad: Vec<BadRecord>,
}

/// A replayable reader shared by the scans of one source in one view.
pub struct SharedRead {
    inner: Arc<dyn SourceReader>,
    last: Mutex<Option<Read>>,
}

impl SharedRead {
    /// Wraps `inner` (already narrowed to the columns every sharing scan
    /// reads); `None` when its reads cannot be repeated.
    pub fn new(inner: Arc<dyn SourceReader>) -> Option<Arc<Self>> {
        inner.replayable().then(|| Arc::new(Self { inner, last: Mutex::new(None) }))
    }
}

impl Connector for SharedRead {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    fn status(&self) -> Option<String> {
        self.inner.status()
    }
    fn committed(&self, position: &SourcePosition) {
        self.inner.committed(position)
    }
}

impl SourceReader for SharedRead {
    fn read(
        &self,
        position: &mut SourcePosition,
        now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<RecordBatch> {
        let mut last = self.last.lock();
        if let Some(read) = last.as_ref()
            && read.from == *position
            && read.now_nanos == now_nanos
            && read.max_records == max_records
        {
            *position = read.to.clone();
            bad.extend(read.bad.iter().cloned());
            return Ok(read.rows.clone());
        }
        let from = position.clone();
        let mut fresh_bad = Vec::new();
        let rows = self.inner.read(position, now_nanos, max_records, &mut fresh_bad)?;
        bad.extend(fresh_bad.iter().cloned());
        *last = Some(Read { from, now_nanos, max_records, to: position.clone(), rows: rows.clone(), bad: fresh_bad });
        Ok(rows)
    }

    fn exhausted(&self, position: &SourcePosition) -> bool {
        self.inner.exhausted(position)
    }

    fn replayable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// The numbers from the position on, counting the reads that reach it.
    struct Numbers {
        schema: SchemaRef,
        reads: AtomicUsize,
    }

    impl Connector for Numbers {
        fn schema(&self) -> SchemaRef {
            self.schema.clone()
        }
    }

    impl SourceReader for Numbers {
        fn read(
            &self,
            position: &mut SourcePosition,
            now_nanos: i64,
            max_records: usize,
            _bad: &mut Vec<BadRecord>,
        ) -> Result<RecordBatch> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let start = position.next as i64;
            // Fewer records are due early on: the epoch time matters.
            let count = (max_records as i64).min(now_nanos);
            position.next += count as u64;
            let values = Int64Array::from_iter_values(start..start + count);
            Ok(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(values)])?)
        }
        fn exhausted(&self, _position: &SourcePosition) -> bool {
            false
        }
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        batch.column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.values().to_vec()).unwrap_or_default()
    }

    #[test]
    fn scans_in_lockstep_share_one_read_and_a_different_request_reads_again() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let numbers = Arc::new(Numbers { schema, reads: AtomicUsize::new(0) });
        let shared = SharedRead::new(numbers.clone()).expect("a generator is replayable");
        let (mut a, mut b) = (SourcePosition::default(), SourcePosition::default());
        let first_a = shared.read(&mut a, 3, 10, &mut Vec::new()).unwrap();
        let first_b = shared.read(&mut b, 3, 10, &mut Vec::new()).unwrap();
        assert_eq!(values(&first_a), vec![0, 1, 2]);
        assert_eq!(values(&first_b), vec![0, 1, 2]);
        assert_eq!((a.next, b.next), (3, 3), "both positions advance");
        assert_eq!(numbers.reads.load(Ordering::SeqCst), 1, "the second scan reused the first read");

        // A later epoch time asks for other records: read again.
        let later = shared.read(&mut a, 5, 10, &mut Vec::new()).unwrap();
        assert_eq!(values(&later), vec![3, 4, 5, 6, 7]);
        assert_eq!(numbers.reads.load(Ordering::SeqCst), 2);
        // A scan behind the others (another position) is not served the
        // remembered read.
        let mut behind = SourcePosition::default();
        let again = shared.read(&mut behind, 5, 10, &mut Vec::new()).unwrap();
        assert_eq!(values(&again), vec![0, 1, 2, 3, 4]);
        assert_eq!(numbers.reads.load(Ordering::SeqCst), 3);
    }
}
