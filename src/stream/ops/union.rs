//! UNION ALL: the changes of all inputs together. (UNION is a DISTINCT,
//! i.e. a group-by without aggregates, over this.)

use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::{self, Watermarks};
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct Union {
    inputs: Vec<Box<dyn Operator>>,
    schema: SchemaRef,
}

impl Union {
    pub fn new(inputs: Vec<Box<dyn Operator>>, schema: SchemaRef) -> Self {
        Self { inputs, schema }
    }
}

impl Operator for Union {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let parts = self.inputs.iter_mut().map(|i| i.step(input)).collect::<Result<Vec<_>>>()?;
        ChangeBatch::concat(&self.schema, &parts)
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.inputs.iter_mut().try_for_each(|i| i.flush(state, batch))
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// A column has a watermark if it has one in every input: the smallest.
    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        let theirs = self.inputs.iter().map(|child| child.watermarks(input)).collect::<Result<Vec<_>>>()?;
        Ok(watermark::union_of(theirs, self.schema.fields().len()))
    }
}
