//! The incremental dataflow: change batches flowing through operators.
//!
//! A view's dataflow is a tree of [`Operator`]s whose leaves read the changes
//! of base relations (tables and other views) in the current epoch. Each epoch
//! the coordinator calls [`Operator::step`] on the root once; every operator
//! pulls its inputs' changes for the epoch, updates its state and returns its
//! own output changes (the DBSP "circuit step"). Changes are Z-sets: rows with
//! integer weights (+1 insert, -1 delete; an update is -old/+new).
//!
//! This module may call `state` and DataFusion's physical expressions; it knows
//! nothing of SQL text or of the wire protocol.

pub mod change;
pub mod coordinator;
pub mod epoch_log;
pub mod ops;
pub mod rowcodec;
pub mod state_table;

use std::collections::HashMap;

use datafusion::arrow::datatypes::SchemaRef;

pub use change::ChangeBatch;

use crate::error::Result;
use crate::state::WriteBatch;
use state_table::StateContext;

/// Identifies a table or materialized view inside one database.
pub type RelationId = u32;

/// The changes of every base relation in one epoch, read by scan leaves,
/// and the way to the operators' stored state.
pub struct EpochInput {
    deltas: HashMap<RelationId, ChangeBatch>,
    pub state: StateContext,
}

impl EpochInput {
    pub fn new(state: StateContext) -> Self {
        Self { deltas: HashMap::new(), state }
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
pub trait Operator: Send {
    /// Pulls the inputs' changes for this epoch and returns this operator's.
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch>;
    /// The schema of the rows this operator emits.
    fn schema(&self) -> SchemaRef;
    /// Called at the end of every epoch the operator stepped in, and on
    /// every operator at a checkpoint: at a checkpoint (`state.checkpoint`)
    /// writes the state this operator and its inputs changed since the last
    /// one into `batch` (committed with the epoch); always lets caches
    /// shrink to their budget.
    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()>;
}
