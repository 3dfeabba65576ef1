//! ORDER BY … LIMIT n [OFFSET m]: the view holds the rows ranked m+1 … m+n.
//!
//! All input rows are kept (in the state store, one group) ordered by
//! (sort key, row), the sort key encoded in the row format with each
//! column's ASC/DESC and NULLS FIRST/LAST, so the order of the stored
//! members is the query's order (see [`sorted_member`]). After each epoch the
//! operator compares the ranked window before and after and emits the
//! difference. Ties are broken by the row's bytes, deterministically.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::multiset_state::MultisetState;
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::StateContext;
use crate::stream::{ChangeBatch, EpochInput, Operator};

pub struct TopN {
    input: Box<dyn Operator>,
    sort_exprs: Vec<Arc<dyn PhysicalExpr>>,
    sort_codec: RowCodec,
    row_codec: RowCodec,
    skip: usize,
    fetch: usize,
    /// sorted_member(sort key, row) -> multiplicity, all in one group.
    rows: MultisetState,
}

/// A member of a sorted multiset: sort key ++ row ++ the sort key's length
/// (4 bytes). Sort keys are prefix-free, so byte order is (sort key, row)
/// order and the trailing length never decides a comparison.
pub fn sorted_member(sort_key: &[u8], row: &[u8]) -> Vec<u8> {
    let mut member = Vec::with_capacity(sort_key.len() + row.len() + 4);
    member.extend_from_slice(sort_key);
    member.extend_from_slice(row);
    member.extend_from_slice(&(sort_key.len() as u32).to_be_bytes());
    member
}

/// The (sort key, row) parts of a [`sorted_member`].
pub fn split_member(member: &[u8]) -> (&[u8], &[u8]) {
    let (body, length) = member.split_at(member.len().saturating_sub(4));
    let length = length.try_into().map_or(0, u32::from_be_bytes) as usize;
    body.split_at(length.min(body.len()))
}

impl TopN {
    pub fn new(
        input: Box<dyn Operator>,
        sort_exprs: Vec<Arc<dyn PhysicalExpr>>,
        sort_codec: RowCodec,
        skip: usize,
        fetch: usize,
        state_prefix: &[u8],
    ) -> Result<Self> {
        let row_codec = RowCodec::new(input.schema())?;
        Ok(Self { input, sort_exprs, sort_codec, row_codec, skip, fetch, rows: MultisetState::new(state_prefix) })
    }

    /// The ranked window as row -> multiplicity.
    fn window(&self) -> HashMap<Vec<u8>, i64> {
        let mut out = HashMap::new();
        let mut position = 0usize;
        let end = self.skip.saturating_add(self.fetch);
        let Some(rows) = self.rows.get(&[]) else {
            return out;
        };
        for (member, &n) in rows {
            let (_, row) = split_member(member);
            if position >= end {
                break;
            }
            let n = n.max(0) as usize;
            let from = position.max(self.skip);
            let to = (position + n).min(end);
            if to > from {
                *out.entry(row.to_vec()).or_insert(0) += (to - from) as i64;
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
        self.rows.load(&input.state, [&[][..]]);
        let before = self.window();
        let keys = self.sort_codec.encode(&super::evaluate(&self.sort_exprs, &delta.rows)?)?;
        let rows = self.row_codec.encode(delta.rows.columns())?;
        for (i, &w) in delta.weights.values().iter().enumerate() {
            self.rows.add(&[], &sorted_member(keys.row(i).data(), rows.row(i).data()), w);
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

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.input.flush(state, batch)?;
        self.rows.flush(state, batch);
        Ok(())
    }
}
