//! Leaf: the changes of one base relation (table or view) in this epoch.

use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::Watermarks;
use crate::stream::{ChangeBatch, EpochInput, Operator, RelationId};

pub struct Scan {
    relation: RelationId,
    /// Columns of the relation to keep, in order; `None` keeps all.
    projection: Option<Vec<usize>>,
    /// Per output column: the relation's column, if that one has a watermark.
    watermarked: Vec<Option<usize>>,
    schema: SchemaRef,
}

impl Scan {
    /// `watermarked`: the relation's columns that carry a watermark.
    pub fn new(relation: RelationId, projection: Option<Vec<usize>>, watermarked: &[usize], schema: SchemaRef) -> Self {
        let source: Vec<usize> = match &projection {
            Some(indices) => indices.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let watermarked = source.iter().map(|c| watermarked.contains(c).then_some(*c)).collect();
        Self { relation, projection, watermarked, schema }
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

    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        let current = input.watermarks(self.relation);
        Ok(self
            .watermarked
            .iter()
            .map(|column| {
                let column = (*column)?;
                Some(current.and_then(|w| w.get(column).cloned().flatten()).unwrap_or_default())
            })
            .collect())
    }
}
