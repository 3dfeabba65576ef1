//! ORDER BY … LIMIT n [OFFSET m]: the view holds the rows ranked m+1 … m+n.
//!
//! All input rows are kept in a B-tree ordered by (sort key, row), the sort
//! key encoded in the row format with each column's ASC/DESC and NULLS
//! FIRST/LAST, so the tree's order is the query's order. After each epoch the
//! operator compares the ranked window before and after and emits the
//! difference. Ties are broken by the row's bytes, deterministically.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::Result;
use crate::stream::rowcodec::RowCodec;
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct TopN {
    input: Box<dyn Operator>,
    sort_exprs: Vec<Arc<dyn PhysicalExpr>>,
    sort_codec: RowCodec,
    row_codec: RowCodec,
    skip: usize,
    fetch: usize,
    /// (sort key, row) -> multiplicity.
    rows: BTreeMap<(Vec<u8>, Vec<u8>), i64>,
}

impl TopN {
    pub fn new(
        input: Box<dyn Operator>,
        sort_exprs: Vec<Arc<dyn PhysicalExpr>>,
        sort_codec: RowCodec,
        skip: usize,
        fetch: usize,
    ) -> Result<Self> {
        let row_codec = RowCodec::new(input.schema())?;
        Ok(Self { input, sort_exprs, sort_codec, row_codec, skip, fetch, rows: BTreeMap::new() })
    }

    /// The ranked window as row -> multiplicity.
    fn window(&self) -> HashMap<Vec<u8>, i64> {
        let mut out = HashMap::new();
        let mut position = 0usize;
        let end = self.skip.saturating_add(self.fetch);
        for ((_, row), &n) in &self.rows {
            if position >= end {
                break;
            }
            let n = n.max(0) as usize;
            let from = position.max(self.skip);
            let to = (position + n).min(end);
            if to > from {
                *out.entry(row.clone()).or_insert(0) += (to - from) as i64;
            }
            position += n;
        }
        out
    }
}

impl Operator for TopN {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        if delta.is_empty() {
            return Ok(ChangeBatch::empty(self.schema()));
        }
        let before = self.window();
        let keys = self.sort_codec.encode(&super::evaluate(&self.sort_exprs, &delta.rows)?)?;
        let rows = self.row_codec.encode(delta.rows.columns())?;
        for (i, &w) in delta.weights.values().iter().enumerate() {
            let entry = (keys.row(i).data().to_vec(), rows.row(i).data().to_vec());
            let n = self.rows.entry(entry.clone()).or_insert(0);
            *n += w;
            if *n == 0 {
                self.rows.remove(&entry);
            }
        }
        let mut diff = self.window();
        for (row, n) in before {
            *diff.entry(row).or_insert(0) -= n;
        }
        let changed: Vec<(Vec<u8>, i64)> = diff.into_iter().filter(|(_, n)| *n != 0).collect();
        let batch = self.row_codec.decode(changed.iter().map(|(r, _)| r.as_slice()))?;
        Ok(ChangeBatch::new(batch, Int64Array::from_iter_values(changed.iter().map(|(_, n)| *n))))
    }

    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
