//! Leaf: a constant relation (VALUES, or the one empty row of a SELECT
//! without FROM). It is inserted in the first epoch (the backfill) and never
//! changes after.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct Constant {
    pending: Option<RecordBatch>,
    schema: SchemaRef,
}

impl Constant {
    pub fn new(rows: RecordBatch) -> Self {
        Self { schema: rows.schema(), pending: Some(rows) }
    }
}

impl Operator for Constant {
    fn step(&mut self, _input: &EpochInput) -> Result<ChangeBatch> {
        Ok(match self.pending.take() {
            Some(rows) => ChangeBatch::uniform(rows, 1),
            None => ChangeBatch::empty(self.schema.clone()),
        })
    }

    fn flush(&mut self, _state: &StateContext, _batch: &mut WriteBatch) -> Result<()> {
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
