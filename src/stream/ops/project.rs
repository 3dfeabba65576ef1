//! Computes the output columns of each changed row (SELECT list).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::{Derivation, Watermarks};
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct Project {
    input: Box<dyn Operator>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// How the output columns' watermarks follow from the input's.
    watermarks: Derivation,
    schema: SchemaRef,
}

impl Project {
    /// `monotone[i]`: the input column expression `i` cannot decrease in, if any.
    pub fn new(
        input: Box<dyn Operator>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        monotone: &[Option<usize>],
        schema: SchemaRef,
    ) -> Self {
        let watermarks = Derivation::new(input.schema(), &exprs, monotone);
        Self { input, exprs, watermarks, schema }
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

    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        if self.watermarks.is_empty() {
            return Ok(crate::stream::watermark::none(self.exprs.len()));
        }
        self.watermarks.derive(&self.input.watermarks(input)?)
    }
}
