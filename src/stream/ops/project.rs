//! Computes the output columns of each changed row (SELECT list).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct Project {
    input: Box<dyn Operator>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Project {
    pub fn new(input: Box<dyn Operator>, exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Self { input, exprs, schema }
    }
}

impl Operator for Project {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        if delta.is_empty() {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let columns = super::evaluate(&self.exprs, &delta.rows)?;
        delta.with_columns(self.schema.clone(), columns)
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.input.flush(state, batch)
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
