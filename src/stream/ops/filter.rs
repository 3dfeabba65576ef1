//! Keeps the changed rows for which a predicate is true (WHERE, HAVING).

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Result, SqlError};
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct Filter {
    input: Box<dyn Operator>,
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    pub fn new(input: Box<dyn Operator>, predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self { input, predicate }
    }
}

impl Operator for Filter {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        if delta.is_empty() {
            return Ok(delta);
        }
        let mask = self.predicate.evaluate(&delta.rows)?.into_array(delta.len())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| SqlError::internal("filter predicate is not boolean"))?;
        delta.filter(mask)
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.input.flush(state, batch)
    }

    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }

    fn watermarks(&self, input: &EpochInput) -> Result<crate::stream::watermark::Watermarks> {
        self.input.watermarks(input)
    }
}
