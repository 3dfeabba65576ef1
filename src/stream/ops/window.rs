//! Ranking window functions (row_number, rank, dense_rank) over PARTITION BY
//! … ORDER BY …; with a filter on the rank above it, this is group top-N.
//!
//! Each partition keeps its rows (in the state store, one group per
//! partition) ordered by (sort key, row), the sort key encoded with the query's ASC/DESC and NULLS FIRST/LAST. When a
//! partition changes, its ranked rows before and after are compared and the
//! difference emitted; the cost is the size of the touched partitions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::ops::topn::{sorted_member, split_member};
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::{MultisetState, StateContext};
use crate::stream::{ChangeBatch, EpochInput, Operator};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranking {
    RowNumber,
    Rank,
    DenseRank,
}

type Ranked = HashMap<(Vec<u8>, Vec<i64>), i64>;

pub struct Window {
    input: Box<dyn Operator>,
    partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
    partition_codec: Option<RowCodec>,
    order_exprs: Vec<Arc<dyn PhysicalExpr>>,
    order_codec: Option<RowCodec>,
    row_codec: RowCodec,
    rankings: Vec<Ranking>,
    /// Per partition key: sorted_member(sort key, row) -> multiplicity.
    partitions: MultisetState,
    schema: SchemaRef,
}

impl Window {
    pub fn new(
        input: Box<dyn Operator>,
        partition: (Vec<Arc<dyn PhysicalExpr>>, Option<RowCodec>),
        order: (Vec<Arc<dyn PhysicalExpr>>, Option<RowCodec>),
        rankings: Vec<Ranking>,
        schema: SchemaRef,
        state_prefix: &[u8],
    ) -> Result<Self> {
        let row_codec = RowCodec::new(input.schema())?;
        Ok(Self {
            input,
            partition_exprs: partition.0,
            partition_codec: partition.1,
            order_exprs: order.0,
            order_codec: order.1,
            row_codec,
            rankings,
            partitions: MultisetState::new(state_prefix),
            schema,
        })
    }

    fn ranked(&self, partition: &[u8], out: &mut Ranked, sign: i64) {
        let Some(rows) = self.partitions.get(partition) else {
            return;
        };
        let (mut position, mut rank, mut dense) = (0i64, 0i64, 0i64);
        let mut previous: Option<&[u8]> = None;
        for (member, &n) in rows {
            let (sort_key, row) = split_member(member);
            for _ in 0..n.max(0) {
                position += 1;
                if previous != Some(sort_key) {
                    rank = position;
                    dense += 1;
                    previous = Some(sort_key);
                }
                let values = self
                    .rankings
                    .iter()
                    .map(|r| match r {
                        Ranking::RowNumber => position,
                        Ranking::Rank => rank,
                        Ranking::DenseRank => dense,
                    })
                    .collect();
                *out.entry((row.to_vec(), values)).or_insert(0) += sign;
            }
        }
    }
}

impl Operator for Window {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        if delta.is_empty() {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let partitions = match &self.partition_codec {
            Some(codec) => Some(codec.encode(&super::evaluate(&self.partition_exprs, &delta.rows)?)?),
            None => None,
        };
        let orders = match &self.order_codec {
            Some(codec) => Some(codec.encode(&super::evaluate(&self.order_exprs, &delta.rows)?)?),
            None => None,
        };
        let rows = self.row_codec.encode(delta.rows.columns())?;
        let partition_of = |i: usize| -> &[u8] { partitions.as_ref().map(|p| p.row(i).data()).unwrap_or(&[]) };
        // Each touched partition once, in first-touched order.
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let touched: Vec<Vec<u8>> =
            (0..delta.len()).map(partition_of).filter(|p| seen.insert(*p)).map(<[u8]>::to_vec).collect();
        self.partitions.load(&input.state, touched.iter().map(Vec::as_slice));
        let mut diff = Ranked::new();
        for p in &touched {
            self.ranked(p, &mut diff, -1);
        }
        for (i, &w) in delta.weights.values().iter().enumerate() {
            let p = partition_of(i);
            let order = orders.as_ref().map(|o| o.row(i).data()).unwrap_or_default();
            self.partitions.add(p, &sorted_member(order, rows.row(i).data()), w);
        }
        for p in &touched {
            self.ranked(p, &mut diff, 1);
        }
        let changed: Vec<((Vec<u8>, Vec<i64>), i64)> = diff.into_iter().filter(|(_, n)| *n != 0).collect();
        let base = self.row_codec.decode(changed.iter().map(|((row, _), _)| row.as_slice()))?;
        let mut columns: Vec<ArrayRef> = base.columns().to_vec();
        let input_width = columns.len();
        for (j, field) in self.schema.fields().iter().enumerate().skip(input_width) {
            let values = Int64Array::from_iter_values(changed.iter().map(|((_, ranks), _)| ranks[j - input_width]));
            columns.push(cast(&values, field.data_type())?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(changed.len()));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        Ok(ChangeBatch::new(batch, Int64Array::from_iter_values(changed.iter().map(|(_, n)| *n))))
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        self.input.flush(state, batch)?;
        self.partitions.flush(state, batch);
        Ok(())
    }
}
