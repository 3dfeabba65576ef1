//! Window functions over PARTITION BY … ORDER BY …: ranking (row_number,
//! rank, dense_rank; with a filter on the rank above it, this is group
//! top-N, and `row_number() … = 1` deduplication), and any other window
//! function DataFusion has — lag, lead, first_value, last_value, nth_value,
//! ntile, aggregates over frames — evaluated by DataFusion itself over the
//! partition, so a view computes what the batch query computes.
//!
//! Each partition keeps its rows (in the state store, one group per
//! partition) ordered by (sort key, row), the sort key encoded with the
//! query's ASC/DESC and NULLS FIRST/LAST. When a partition changes, its
//! output rows before and after are compared and the difference emitted;
//! the cost is the size of the touched partitions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::WindowExpr;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::multiset_state::MultisetState;
use crate::stream::ops::topn::{sorted_member, split_member};
use crate::stream::rowcodec::RowCodec;
use crate::stream::state_table::StateContext;
use crate::stream::{ChangeBatch, EpochInput, Operator};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranking {
    RowNumber,
    Rank,
    DenseRank,
}

/// What a window operator computes.
#[derive(Clone)]
pub enum Functions {
    /// Ranks only: counted here while walking the partition.
    Ranking(Vec<Ranking>),
    /// Any window functions: evaluated by DataFusion over each partition's
    /// rows in order (`output` encodes a whole output row).
    General { functions: Vec<Arc<dyn WindowExpr>> },
}

type Ranked = HashMap<(Vec<u8>, Vec<i64>), i64>;

pub struct Window {
    input: Box<dyn Operator>,
    partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
    partition_codec: Option<RowCodec>,
    order_exprs: Vec<Arc<dyn PhysicalExpr>>,
    order_codec: Option<RowCodec>,
    row_codec: RowCodec,
    functions: Functions,
    /// Whole output rows (general functions).
    output_codec: RowCodec,
    /// Per partition key: sorted_member(sort key, row) -> multiplicity.
    partitions: MultisetState,
    schema: SchemaRef,
}

impl Window {
    pub fn new(
        input: Box<dyn Operator>,
        partition: (Vec<Arc<dyn PhysicalExpr>>, Option<RowCodec>),
        order: (Vec<Arc<dyn PhysicalExpr>>, Option<RowCodec>),
        functions: Functions,
        schema: SchemaRef,
        state_prefix: &[u8],
    ) -> Result<Self> {
        let row_codec = RowCodec::new(input.schema())?;
        let output_codec = RowCodec::new(schema.clone())?;
        Ok(Self {
            input,
            partition_exprs: partition.0,
            partition_codec: partition.1,
            order_exprs: order.0,
            order_codec: order.1,
            row_codec,
            functions,
            output_codec,
            partitions: MultisetState::new(state_prefix),
            schema,
        })
    }

    /// A partition's output rows (general functions), counted into `out`
    /// with `sign`.
    fn evaluated(
        &self,
        functions: &[Arc<dyn WindowExpr>],
        partition: &[u8],
        out: &mut HashMap<Vec<u8>, i64>,
        sign: i64,
    ) -> Result<()> {
        let Some(rows) = self.partitions.get(partition) else {
            return Ok(());
        };
        let ordered =
            rows.iter().flat_map(|(member, &n)| std::iter::repeat_n(split_member(member).1, n.max(0) as usize));
        let batch = self.row_codec.decode(ordered)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let width = columns.len();
        for (function, field) in functions.iter().zip(self.schema.fields().iter().skip(width)) {
            let values = function.evaluate(&batch)?;
            columns.push(if values.data_type() == field.data_type() {
                values
            } else {
                cast(&values, field.data_type())?
            });
        }
        let encoded = self.output_codec.encode(&columns)?;
        for row in encoded.iter() {
            *out.entry(row.data().to_vec()).or_insert(0) += sign;
        }
        Ok(())
    }

    fn ranked(&self, rankings: &[Ranking], partition: &[u8], out: &mut Ranked, sign: i64) {
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
                let values = rankings
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
        if let Functions::General { functions } = &self.functions {
            let functions = functions.clone();
            let mut diff: HashMap<Vec<u8>, i64> = HashMap::new();
            for p in &touched {
                self.evaluated(&functions, p, &mut diff, -1)?;
            }
            for (i, &w) in delta.weights.values().iter().enumerate() {
                let order = orders.as_ref().map(|o| o.row(i).data()).unwrap_or_default();
                self.partitions.add(partition_of(i), &sorted_member(order, rows.row(i).data()), w);
            }
            for p in &touched {
                self.evaluated(&functions, p, &mut diff, 1)?;
            }
            let changed: Vec<(Vec<u8>, i64)> = diff.into_iter().filter(|(_, n)| *n != 0).collect();
            let batch = self.output_codec.decode(changed.iter().map(|(row, _)| row.as_slice()))?;
            let batch = crate::stream::change::rebind(&self.schema, &batch)?;
            return Ok(ChangeBatch::new(batch, Int64Array::from_iter_values(changed.iter().map(|(_, n)| *n))));
        }
        let rankings = match &self.functions {
            Functions::Ranking(rankings) => rankings.clone(),
            Functions::General { .. } => Vec::new(),
        };
        let mut diff = Ranked::new();
        for p in &touched {
            self.ranked(&rankings, p, &mut diff, -1);
        }
        for (i, &w) in delta.weights.values().iter().enumerate() {
            let p = partition_of(i);
            let order = orders.as_ref().map(|o| o.row(i).data()).unwrap_or_default();
            self.partitions.add(p, &sorted_member(order, rows.row(i).data()), w);
        }
        for p in &touched {
            self.ranked(&rankings, p, &mut diff, 1);
        }
        let changed: Vec<((Vec<u8>, Vec<i64>), i64)> = diff.into_iter().filter(|(_, n)| *n != 0).collect();
        let base = self.row_codec.decode(changed.iter().map(|((row, _), _)| row.as_slice()))?;
        let mut columns: Vec<ArrayRef> = base.columns().to_vec();
        let input_width = columns.len();
        for (j, field) in self.schema.fields().iter().enumerate().skip(input_width) {
            let values = Int64Array::from_iter_values(
                changed.iter().map(|((_, ranks), _)| ranks.get(j - input_width).copied().unwrap_or_default()),
            );
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
