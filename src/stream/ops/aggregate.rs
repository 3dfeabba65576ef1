//! GROUP BY with retraction (also DISTINCT, which is a GROUP BY without
//! aggregates, and global aggregates, which are one group with an empty key).
//!
//! Per group the operator keeps either
//! - live accumulators, when every aggregate can retract (count, sum, avg):
//!   inserts go to `update_batch`, deletes to `retract_batch`; or
//! - the multiset of the group's input rows, from which the group's
//!   aggregates are recomputed when it changes (min, max, count(DISTINCT),
//!   string_agg, array_agg, bool_and/or, ordered aggregates...).
//! Either way DataFusion's own accumulators compute the values, so NULL
//! handling and result types are exactly those of the batch engine.
//!
//! For each group touched in an epoch the operator retracts the row it
//! emitted before and emits the new one (nothing when they are equal).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Result, SqlError};
use crate::stream::rowcodec::RowCodec;
use crate::stream::{ChangeBatch, EpochInput, Operator};

/// One aggregate call: the function, its argument expressions (ORDER BY
/// expressions appended, as DataFusion's accumulators expect) and FILTER.
#[derive(Clone)]
pub struct AggregateCall {
    pub function: Arc<AggregateFunctionExpr>,
    pub arguments: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl AggregateCall {
    pub fn new(function: Arc<AggregateFunctionExpr>, filter: Option<Arc<dyn PhysicalExpr>>) -> Self {
        let mut arguments = function.expressions();
        arguments.extend(function.order_bys().iter().map(|s| s.expr.clone()));
        Self { function, arguments, filter }
    }

    /// Whether this call can be maintained with `retract_batch`.
    fn retractable(&self) -> bool {
        let name = self.function.fun().name().to_ascii_lowercase();
        matches!(name.as_str(), "count" | "sum" | "avg" | "mean")
            && !self.function.is_distinct()
            && self.function.order_bys().is_empty()
            && self.function.create_sliding_accumulator().is_ok_and(|a| a.supports_retract_batch())
    }

    fn accumulator(&self, retracting: bool) -> Result<Box<dyn Accumulator>> {
        Ok(if retracting { self.function.create_sliding_accumulator()? } else { self.function.create_accumulator()? })
    }
}

struct Group {
    /// Sum of the weights of the group's input rows.
    count: i64,
    /// Live accumulators (retracting mode).
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The group's input rows as row bytes with multiplicities (recompute mode).
    rows: BTreeMap<Vec<u8>, i64>,
    /// The aggregate values last emitted for this group.
    emitted: Option<Vec<ScalarValue>>,
}

pub struct Aggregate {
    input: Box<dyn Operator>,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Encodes group keys; `None` for a global aggregate (one empty key).
    group_codec: Option<RowCodec>,
    calls: Vec<AggregateCall>,
    retracting: bool,
    /// Encodes whole input rows (recompute mode).
    input_codec: RowCodec,
    groups: HashMap<Vec<u8>, Group>,
    schema: SchemaRef,
    initialized: bool,
}

impl Aggregate {
    pub fn new(
        input: Box<dyn Operator>,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let input_schema = input.schema();
        let group_codec = if group_exprs.is_empty() {
            None
        } else {
            let key_fields: Vec<_> = schema.fields().iter().take(group_exprs.len()).cloned().collect();
            Some(RowCodec::new(Arc::new(datafusion::arrow::datatypes::Schema::new(key_fields)))?)
        };
        let retracting = calls.iter().all(AggregateCall::retractable);
        Ok(Self {
            input,
            group_exprs,
            group_codec,
            calls,
            retracting,
            input_codec: RowCodec::new(input_schema)?,
            groups: HashMap::new(),
            schema,
            initialized: false,
        })
    }

    fn new_group(&self) -> Result<Group> {
        let accumulators = if self.retracting {
            self.calls.iter().map(|c| c.accumulator(true)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Group { count: 0, accumulators, rows: BTreeMap::new(), emitted: None })
    }

    /// Arguments of every call over `batch`, with FILTER applied as a mask.
    fn call_inputs(&self, batch: &RecordBatch) -> Result<Vec<(Vec<ArrayRef>, Option<BooleanArray>)>> {
        self.calls
            .iter()
            .map(|call| {
                let args = super::evaluate(&call.arguments, batch)?;
                let mask = match &call.filter {
                    Some(f) => {
                        let m = f.evaluate(batch)?.into_array(batch.num_rows())?;
                        let m = m
                            .as_any()
                            .downcast_ref::<BooleanArray>()
                            .cloned()
                            .ok_or_else(|| SqlError::internal("aggregate FILTER is not boolean"))?;
                        Some(m)
                    }
                    None => None,
                };
                Ok((args, mask))
            })
            .collect()
    }

    /// Recomputes a group's aggregates from its stored input rows.
    fn recompute(&self, rows: &BTreeMap<Vec<u8>, i64>) -> Result<Vec<ScalarValue>> {
        let expanded = rows.iter().flat_map(|(row, &n)| std::iter::repeat_n(row.as_slice(), n.max(0) as usize));
        let batch = self.input_codec.decode(expanded)?;
        let inputs = self.call_inputs(&batch)?;
        let all: Vec<u32> = (0..batch.num_rows() as u32).collect();
        self.calls
            .iter()
            .zip(inputs)
            .map(|(call, (args, mask))| {
                let mut acc = call.accumulator(false)?;
                let indices = selected(&all, mask.as_ref());
                if !indices.is_empty() {
                    acc.update_batch(&take_all(&args, &indices)?)?;
                }
                Ok(acc.evaluate()?)
            })
            .collect()
    }

    fn evaluate_group(&self, group: &mut Group) -> Result<Vec<ScalarValue>> {
        if self.retracting {
            group.accumulators.iter_mut().map(|a| Ok(a.evaluate()?)).collect()
        } else {
            self.recompute(&group.rows)
        }
    }

    fn output(&self, entries: &[(&[u8], &Vec<ScalarValue>)], weight: i64) -> Result<ChangeBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if let Some(codec) = &self.group_codec {
            let keys = codec.decode(entries.iter().map(|(k, _)| *k))?;
            columns.extend(keys.columns().iter().cloned());
        }
        for (i, field) in self.schema.fields().iter().enumerate().skip(self.group_exprs.len()) {
            let call = i - self.group_exprs.len();
            let values = entries.iter().map(|(_, v)| v[call].clone());
            let array = if entries.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            let array = if array.data_type() != field.data_type() { cast(&array, field.data_type())? } else { array };
            columns.push(array);
        }
        let rows = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(entries.len())),
        )?;
        Ok(ChangeBatch::uniform(rows, weight))
    }
}

impl Operator for Aggregate {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let delta = self.input.step(input)?;
        let first = !self.initialized;
        self.initialized = true;
        if delta.is_empty() && !(first && self.group_codec.is_none()) {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }

        // Group the changed rows: positive and negative row indices per key,
        // each index repeated by its weight.
        let keys = match &self.group_codec {
            Some(codec) => Some(codec.encode(&super::evaluate(&self.group_exprs, &delta.rows)?)?),
            None => None,
        };
        let mut touched: Vec<Vec<u8>> = Vec::new();
        let mut changes: HashMap<Vec<u8>, (Vec<u32>, Vec<u32>, i64)> = HashMap::new();
        if self.group_codec.is_none() {
            touched.push(Vec::new());
            changes.insert(Vec::new(), (Vec::new(), Vec::new(), 0));
        }
        for (row, &weight) in delta.weights.values().iter().enumerate() {
            let key: &[u8] = keys.as_ref().map(|k| k.row(row).data()).unwrap_or(&[]);
            let entry = match changes.get_mut(key) {
                Some(e) => e,
                None => {
                    touched.push(key.to_vec());
                    changes.entry(key.to_vec()).or_default()
                }
            };
            let list = if weight > 0 { &mut entry.0 } else { &mut entry.1 };
            list.extend(std::iter::repeat_n(row as u32, weight.unsigned_abs() as usize));
            entry.2 += weight;
        }

        let inputs = if self.retracting { self.call_inputs(&delta.rows)? } else { Vec::new() };
        let row_bytes = if self.retracting { None } else { Some(self.input_codec.encode(delta.rows.columns())?) };

        let mut retractions: Vec<(Vec<u8>, Vec<ScalarValue>)> = Vec::new();
        let mut insertions: Vec<(Vec<u8>, Vec<ScalarValue>)> = Vec::new();
        for key in touched {
            let (inserted, deleted, net) = changes.remove(&key).unwrap_or_default();
            let mut group = match self.groups.remove(&key) {
                Some(g) => g,
                None => self.new_group()?,
            };
            if self.retracting {
                for ((args, mask), acc) in inputs.iter().zip(group.accumulators.iter_mut()) {
                    let ins = selected(&inserted, mask.as_ref());
                    if !ins.is_empty() {
                        acc.update_batch(&take_all(args, &ins)?)?;
                    }
                    let del = selected(&deleted, mask.as_ref());
                    if !del.is_empty() {
                        acc.retract_batch(&take_all(args, &del)?)?;
                    }
                }
            } else if let Some(bytes) = &row_bytes {
                for &i in &inserted {
                    *group.rows.entry(bytes.row(i as usize).data().to_vec()).or_insert(0) += 1;
                }
                for &i in &deleted {
                    let row = bytes.row(i as usize).data();
                    if let Some(n) = group.rows.get_mut(row) {
                        *n -= 1;
                        if *n == 0 {
                            group.rows.remove(row);
                        }
                    }
                }
            }
            group.count += net;
            let old = group.emitted.take();
            let new = if group.count > 0 || self.group_codec.is_none() {
                if group.count <= 0 && self.retracting {
                    // An emptied global group starts over (count 0, sum NULL).
                    group = self.new_group()?;
                }
                Some(self.evaluate_group(&mut group)?)
            } else {
                None
            };
            if old != new {
                if let Some(old) = old {
                    retractions.push((key.clone(), old));
                }
                if let Some(new) = &new {
                    insertions.push((key.clone(), new.clone()));
                }
            }
            if new.is_some() || group.count != 0 {
                group.emitted = new;
                self.groups.insert(key, group);
            }
        }

        let retract: Vec<(&[u8], &Vec<ScalarValue>)> = retractions.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        let insert: Vec<(&[u8], &Vec<ScalarValue>)> = insertions.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        let parts = [self.output(&retract, -1)?, self.output(&insert, 1)?];
        ChangeBatch::concat(&self.schema, &parts)
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The indices of `rows` whose FILTER mask is true.
fn selected(rows: &[u32], mask: Option<&BooleanArray>) -> Vec<u32> {
    match mask {
        None => rows.to_vec(),
        Some(mask) => rows.iter().copied().filter(|&i| mask.is_valid(i as usize) && mask.value(i as usize)).collect(),
    }
}

fn take_all(columns: &[ArrayRef], indices: &[u32]) -> Result<Vec<ArrayRef>> {
    let indices = UInt32Array::from(indices.to_vec());
    columns.iter().map(|c| Ok(take(c.as_ref(), &indices, None)?)).collect()
}
