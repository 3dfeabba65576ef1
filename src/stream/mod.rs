//! The incremental dataflow: change batches flowing through operators.
//!
//! A view's dataflow is a tree of [`Operator`]s whose leaves read the changes
//! of base relations (tables and other views) in the current epoch. Each epoch
//! the coordinator (`db::coordinator`) calls [`Operator::step`] on the root once; every operator
//! pulls its inputs' changes for the epoch, updates its state and returns its
//! own output changes (the DBSP "circuit step"). Changes are Z-sets: rows with
//! integer weights (+1 insert, -1 delete; an update is -old/+new).
//!
//! This module may call `state` and DataFusion's physical expressions; it knows
//! nothing of SQL text or of the wire protocol.

pub mod arrival;
pub mod cache_account;
pub mod change;
pub mod connector;
pub mod members;
pub mod multiset_state;
pub mod ops;
pub mod rowcodec;
pub mod shared_read;
pub mod slot_index;
pub mod state_table;
pub mod watermark;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

pub use change::ChangeBatch;

use crate::error::Result;
use crate::state::WriteBatch;
use state_table::StateContext;
use watermark::{Watermark, Watermarks};

/// The wall clock, in nanoseconds since the Unix epoch (what an epoch's
/// time is taken from; 0 if the clock is before 1970).
pub fn wall_clock_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Identifies a table or materialized view inside one database.
pub type RelationId = u32;

/// The changes of every base relation in one epoch, read by scan leaves,
/// the watermarks of the relations that have them, and the way to the
/// operators' stored state.
pub struct EpochInput {
    deltas: HashMap<RelationId, ChangeBatch>,
    watermarks: HashMap<RelationId, Watermarks>,
    pub state: StateContext,
    /// The epoch's time (nanoseconds since the Unix epoch): what now()
    /// means for temporal filters in this epoch.
    pub now_nanos: i64,
    /// Source readers read nothing in this epoch (sinks are too far
    /// behind: backpressure). Such an epoch is checkpointed, not logged.
    pub hold_sources: bool,
}

impl EpochInput {
    pub fn new(state: StateContext) -> Self {
        Self { deltas: HashMap::new(), watermarks: HashMap::new(), state, now_nanos: 0, hold_sources: false }
    }

    /// An epoch with no changes, no watermark values and no stored state:
    /// asking operators about it tells which output columns can carry a
    /// watermark at all.
    pub fn probe() -> Self {
        Self::new(StateContext {
            snapshot: Arc::new(crate::state::EmptySnapshot),
            budget: state_table::StateBudget::unlimited(),
            fresh: true,
            checkpoint: false,
        })
    }

    /// Sets a relation's column watermarks for this epoch.
    pub fn set_watermarks(&mut self, relation: RelationId, watermarks: Watermarks) {
        self.watermarks.insert(relation, watermarks);
    }
    pub fn watermarks(&self, relation: RelationId) -> Option<&Watermarks> {
        self.watermarks.get(&relation)
    }
    /// Whether a relation's watermark moved in this epoch.
    pub fn advances(&self, relation: RelationId) -> bool {
        self.watermarks.get(&relation).is_some_and(|w| w.iter().flatten().any(Watermark::advanced))
    }

    pub fn insert(&mut self, relation: RelationId, delta: ChangeBatch) -> Result<()> {
        let merged = match self.deltas.remove(&relation) {
            Some(existing) => ChangeBatch::concat(&existing.schema(), &[existing, delta])?,
            None => delta,
        };
        self.deltas.insert(relation, merged);
        Ok(())
    }
    pub fn get(&self, relation: RelationId) -> Option<&ChangeBatch> {
        self.deltas.get(&relation)
    }
    pub fn touches(&self, relation: RelationId) -> bool {
        self.deltas.get(&relation).is_some_and(|d| !d.is_empty())
    }
}

/// One node of a dataflow.
///
/// An operator is stepped once per epoch: it pulls its inputs' changes
/// (a leaf reads a base relation's from the [`EpochInput`]), and returns its
/// own. A stateless operator maps each change; a stateful one keeps state
/// (through `state_table`) and writes what changed at checkpoints in
/// [`flush`](Operator::flush). Every stateful operator is tested against
/// DataFusion's batch answer in `plan::harness`.
///
/// A leaf that keeps the changes of relation 1 whose first column is
/// positive (an insert of such a row passes as an insert, a delete as a
/// delete):
///
/// ```
/// use std::sync::Arc;
/// use datafusion::arrow::array::{Int64Array, RecordBatch};
/// use datafusion::arrow::compute::kernels::cmp::gt;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
/// use freshet::error::{Result, SqlError};
/// use freshet::state::WriteBatch;
/// use freshet::stream::state_table::StateContext;
/// use freshet::stream::{ChangeBatch, EpochInput, Operator, RelationId};
///
/// struct Positive {
///     relation: RelationId,
///     schema: SchemaRef,
/// }
///
/// impl Operator for Positive {
///     fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
///         let Some(delta) = input.get(self.relation) else {
///             return Ok(ChangeBatch::empty(self.schema.clone()));
///         };
///         let values = delta.rows.column(0).as_any().downcast_ref::<Int64Array>()
///             .ok_or_else(|| SqlError::internal("not BIGINT"))?;
///         delta.filter(&gt(values, &Int64Array::new_scalar(0))?)
///     }
///     fn schema(&self) -> SchemaRef {
///         self.schema.clone()
///     }
///     fn flush(&mut self, _state: &StateContext, _batch: &mut WriteBatch) -> Result<()> {
///         Ok(()) // no state
///     }
/// }
///
/// let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
/// let mut positive = Positive { relation: 1, schema: schema.clone() };
/// // An epoch in which relation 1 gained 3 and -1 and lost 5.
/// let mut input = EpochInput::probe();
/// let rows = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![3, -1, 5]))])?;
/// input.insert(1, ChangeBatch::new(rows, Int64Array::from(vec![1, 1, -1])))?;
///
/// let output = positive.step(&input)?;
/// assert_eq!(output.weights.values().as_ref(), &[1, -1]);
/// # Ok::<(), SqlError>(())
/// ```
pub trait Operator: Send {
    /// Pulls the inputs' changes for this epoch and returns this operator's.
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch>;
    /// The schema of the rows this operator emits.
    fn schema(&self) -> SchemaRef;
    /// The watermarks of the output columns in this epoch (after `step`);
    /// `None` for a column without one. With an input that carries no
    /// watermark values, it tells which columns can have one at all.
    fn watermarks(&self, _input: &EpochInput) -> Result<Watermarks> {
        Ok(watermark::none(self.schema().fields().len()))
    }
    /// Called at the end of every epoch the operator stepped in, and on
    /// every operator at a checkpoint: at a checkpoint (`state.checkpoint`)
    /// writes the state this operator and its inputs changed since the last
    /// one into `batch` (committed with the epoch); always lets caches
    /// shrink to their budget.
    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()>;
}
