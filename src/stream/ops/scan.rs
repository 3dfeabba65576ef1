//! Leaf: the changes of one base relation (table or view) in this epoch.

use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::{ChangeBatch, EpochInput, Operator, RelationId};

pub struct Scan {
    relation: RelationId,
    /// Columns of the relation to keep, in order; `None` keeps all.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
}

impl Scan {
    pub fn new(relation: RelationId, projection: Option<Vec<usize>>, schema: SchemaRef) -> Self {
        Self { relation, projection, schema }
    }
}

impl Operator for Scan {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let Some(delta) = input.get(self.relation) else {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        };
        let columns = match &self.projection {
            Some(indices) => indices.iter().map(|&i| delta.rows.column(i).clone()).collect(),
            None => delta.rows.columns().to_vec(),
        };
        delta.with_columns(self.schema.clone(), columns)
    }

    fn flush(&mut self, _state: &StateContext, _batch: &mut WriteBatch) -> Result<()> {
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
