//! Shifted copies of one input's rows, merged before they are copied (the
//! stream form of a hopping window's UNION ALL; `plan/node/expand.rs` says
//! when a union is one).
//!
//! Each epoch the input's changed rows are projected by the first copy's
//! columns; rows with the same projection become one row whose weight is
//! their weights' sum (a sum of zero drops it), and every copy is then
//! projected from those rows alone. The output is the union's multiset,
//! in fewer rows: a consumer that groups the copies (an aggregate over
//! `window_start`) hashes each distinct row once per copy instead of every
//! input row once per copy.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Result, SqlError};
use crate::hash::HashMap;
use crate::state::WriteBatch;
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::{self, Derivation, Watermarks};
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct Expand {
    input: Box<dyn Operator>,
    /// Per copy, its output columns over the input; the first decides
    /// which input rows are merged.
    copies: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Encodes the first copy's columns, to find equal rows.
    codec: RowCodec,
    /// Per copy, how its columns' watermarks follow from the input's.
    watermarks: Vec<Derivation>,
    schema: SchemaRef,
}

impl Expand {
    /// `monotone[c][i]`: the input column copy `c`'s column `i` cannot
    /// decrease in, if any.
    pub fn new(
        input: Box<dyn Operator>,
        copies: Vec<Vec<Arc<dyn PhysicalExpr>>>,
        monotone: &[Vec<Option<usize>>],
        schema: SchemaRef,
    ) -> Result<Self> {
        if copies.is_empty() {
            return Err(SqlError::internal("an expansion without copies"));
        }
        let watermarks =
            copies.iter().zip(monotone).map(|(exprs, m)| Derivation::new(input.schema(), exprs, m)).collect();
        let codec = RowCodec::new(schema.clone())?;
        Ok(Self { input, copies, codec, watermarks, schema })
    }

    /// The input's rows merged by the first copy's columns.
    fn merged(&self, delta: &ChangeBatch) -> Result<ChangeBatch> {
        let first = self.copies.first().ok_or_else(|| SqlError::internal("an expansion without copies"))?;
        let rows = self.codec.encode(&super::evaluate(first, &delta.rows)?)?;
        let mut classes: HashMap<&[u8], usize> = HashMap::with_capacity_and_hasher(delta.len(), Default::default());
        let mut representatives: Vec<u32> = Vec::new();
        let mut weights: Vec<i64> = Vec::new();
        for (i, &weight) in delta.weights.values().iter().enumerate() {
            match classes.entry(rows.row(i).data()) {
                Entry::Occupied(class) => {
                    if let Some(sum) = weights.get_mut(*class.get()) {
                        *sum += weight;
                    }
                }
                Entry::Vacant(class) => {
                    class.insert(weights.len());
                    representatives.push(i as u32);
                    weights.push(weight);
                }
            }
        }
        let (representatives, weights): (Vec<u32>, Vec<i64>) =
            representatives.into_iter().zip(weights).filter(|(_, weight)| *weight != 0).unzip();
        let rows = take_record_batch(&delta.rows, &UInt32Array::from(representatives))?;
        Ok(ChangeBatch::new(rows, Int64Array::from(weights)))
    }
}

impl Operator for Expand {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        if delta.is_empty() {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let merged = self.merged(&delta)?;
        let copies = self
            .copies
            .iter()
            .map(|exprs| merged.with_columns(self.schema.clone(), super::evaluate(exprs, &merged.rows)?))
            .collect::<Result<Vec<_>>>()?;
        ChangeBatch::concat(&self.schema, &copies)
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.input.flush(state, batch)
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// As a union of the copies: a column has a watermark if it has one in
    /// every copy, the smallest.
    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        let theirs = self.input.watermarks(input)?;
        let width = self.schema.fields().len();
        let copies = self.watermarks.iter().map(|derivation| derivation.derive(&theirs)).collect::<Result<Vec<_>>>()?;
        Ok(watermark::union_of(copies, width))
    }
}
