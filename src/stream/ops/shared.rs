//! One operator read by several operators of a view: computed once per
//! epoch, its output handed to each reader.
//!
//! A query can name the same computation twice: Nexmark q5 counts the bids
//! per auction and window in two subqueries (one for the counts, one for
//! their maximum), a self-join reads one aggregate on both sides. The
//! planner finds such repeated subplans (`plan/common_subplans.rs`) and
//! builds each once; every place that reads it gets a [`Shared`] handle.
//!
//! All readers step in the same epochs, so the handles count: the first
//! step of a round steps the operator and keeps its output, each handle
//! gets a copy (reference-counted columns), and the last one takes it. The
//! flush at the end of the epoch goes the same way: the first handle's
//! flush flushes the operator (its state is written once), the others'
//! only count.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::Mutex;

use crate::error::{Result, SqlError};
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::Watermarks;
use crate::stream::{ChangeBatch, EpochInput, Operator};

/// The shared operator and where its readers are in the current epoch.
struct Core {
    op: Box<dyn Operator>,
    readers: usize,
    /// Handles that stepped, and flushed, in the current round.
    stepped: usize,
    flushed: usize,
    /// This epoch's output, until the last reader has it.
    output: Option<ChangeBatch>,
}

/// One reader's handle on a shared operator.
pub struct Shared {
    core: Arc<Mutex<Core>>,
    schema: SchemaRef,
}

impl Shared {
    /// Shares `op`. This value is not a reader itself: each reader gets its
    /// handle from [`another`](Self::another), and the handles count the
    /// readers a round waits for.
    pub fn new(op: Box<dyn Operator>) -> Self {
        let schema = op.schema();
        let core = Core { op, readers: 0, stepped: 0, flushed: 0, output: None };
        Self { core: Arc::new(Mutex::new(core)), schema }
    }

    /// A handle for one more reader.
    pub fn another(&self) -> Self {
        self.core.lock().readers += 1;
        Self { core: self.core.clone(), schema: self.schema.clone() }
    }
}

impl Operator for Shared {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let mut core = self.core.lock();
        if core.stepped == 0 {
            core.output = Some(core.op.step(input)?);
        }
        core.stepped += 1;
        let output = if core.stepped >= core.readers {
            core.stepped = 0;
            core.output.take()
        } else {
            core.output.clone()
        };
        output.ok_or_else(|| SqlError::internal("a shared operator stepped without its output"))
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        self.core.lock().op.watermarks(input)
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        let mut core = self.core.lock();
        if core.flushed == 0 {
            core.op.flush(state, batch)?;
        }
        core.flushed += 1;
        if core.flushed >= core.readers {
            core.flushed = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Emits one row per step, numbering its steps and flushes.
    struct Counting {
        steps: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
        schema: SchemaRef,
    }

    impl Operator for Counting {
        fn step(&mut self, _input: &EpochInput) -> Result<ChangeBatch> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst) as i64;
            let rows = RecordBatch::try_new(self.schema.clone(), vec![Arc::new(Int64Array::from(vec![n]))])?;
            Ok(ChangeBatch::uniform(rows, 1))
        }
        fn schema(&self) -> SchemaRef {
            self.schema.clone()
        }
        fn flush(&mut self, _state: &StateContext, _batch: &mut WriteBatch) -> Result<()> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Three readers over three epochs: the operator steps and flushes
    /// once per epoch, and every reader sees that epoch's output.
    #[test]
    fn each_epoch_is_computed_once_for_all_readers() {
        let (steps, flushes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let op = Counting { steps: steps.clone(), flushes: flushes.clone(), schema };
        let shared = Shared::new(Box::new(op));
        let mut readers = vec![shared.another(), shared.another(), shared.another()];
        let input = EpochInput::probe();
        for epoch in 0..3i64 {
            for reader in readers.iter_mut() {
                let out = reader.step(&input).expect("step");
                let column = out.rows.column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0));
                assert_eq!(column, Some(epoch));
            }
            for reader in readers.iter_mut() {
                reader.flush(&input.state, &mut WriteBatch::default()).expect("flush");
            }
        }
        assert_eq!((steps.load(Ordering::SeqCst), flushes.load(Ordering::SeqCst)), (3, 3));
    }
}
