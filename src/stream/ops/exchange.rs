//! Partitioned, parallel execution of a stateful operator.
//!
//! Rows are routed by a hash of the operator's key (group key, join key,
//! window partition) to one of [`VNODES`] virtual partitions, and each
//! virtual partition belongs to one of N workers; every worker owns a copy of
//! the operator holding only its keys' state. The exchange splits each
//! epoch's input changes by worker, steps the workers in parallel (on rayon's
//! pool), and concatenates their outputs. Rows with equal keys always meet in
//! the same worker, so N workers compute exactly what one would.
//!
//! Virtual partitions, not workers, are the unit the state will be keyed by,
//! so state can later move between threads and machines without rehashing.

use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_plan::PhysicalExpr;
use parking_lot::Mutex;
use rayon::prelude::*;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::{ChangeBatch, EpochInput, Operator};

/// Number of virtual partitions keys hash into.
pub const VNODES: u64 = 256;

/// Below this many input rows an epoch is stepped on the calling thread:
/// for small changes a thread hand-off costs more than it saves.
/// `FRESHET_PARALLEL_MIN_ROWS` overrides it (tests set 1 to force parallel steps).
fn parallel_threshold() -> usize {
    static THRESHOLD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THRESHOLD
        .get_or_init(|| std::env::var("FRESHET_PARALLEL_MIN_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(4096))
}

type Slot = Arc<Mutex<Option<ChangeBatch>>>;

/// Leaf of a worker's copy of the operator: the rows routed to this worker.
pub struct Feed {
    slot: Slot,
    schema: SchemaRef,
}

impl Operator for Feed {
    fn step(&mut self, _input: &EpochInput) -> Result<ChangeBatch> {
        Ok(self.slot.lock().take().unwrap_or_else(|| ChangeBatch::empty(self.schema.clone())))
    }
    fn flush(&mut self, _state: &StateContext, _batch: &mut WriteBatch) -> Result<()> {
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// One input of the partitioned operator and how to route its rows.
pub struct Routed {
    input: Box<dyn Operator>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Types keys are cast to before hashing (join sides must agree).
    key_types: Vec<DataType>,
    slots: Vec<Slot>,
}

impl Routed {
    /// Routes `input` by `keys` to `workers` feeds; returns it and the feeds.
    pub fn new(
        input: Box<dyn Operator>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        workers: usize,
    ) -> (Self, Vec<Feed>) {
        let schema = input.schema();
        let slots: Vec<Slot> = (0..workers).map(|_| Arc::new(Mutex::new(None))).collect();
        let feeds = slots.iter().map(|slot| Feed { slot: slot.clone(), schema: schema.clone() }).collect();
        (Self { input, keys, key_types, slots }, feeds)
    }

    fn route(&mut self, input: &EpochInput) -> Result<usize> {
        let delta = self.input.step(input)?;
        let rows = delta.len();
        if rows == 0 {
            return Ok(0);
        }
        let mut columns = super::evaluate(&self.keys, &delta.rows)?;
        for (column, ty) in columns.iter_mut().zip(&self.key_types) {
            if column.data_type() != ty {
                *column = cast(column, ty)?;
            }
        }
        let mut hashes = vec![0u64; rows];
        create_hashes(&columns, &RandomState::with_seed(0x5eed), &mut hashes)?;
        let workers = self.slots.len() as u64;
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); self.slots.len()];
        for (row, hash) in hashes.iter().enumerate() {
            let vnode = hash % VNODES;
            indices[(vnode % workers) as usize].push(row as u32);
        }
        for (slot, rows) in self.slots.iter().zip(indices) {
            if !rows.is_empty() {
                *slot.lock() = Some(delta.take(&UInt32Array::from(rows))?);
            }
        }
        Ok(rows)
    }
}

/// N copies of a stateful operator over key-partitioned inputs.
pub struct Exchange {
    inputs: Vec<Routed>,
    workers: Vec<Box<dyn Operator>>,
    schema: SchemaRef,
}

impl Exchange {
    pub fn new(inputs: Vec<Routed>, workers: Vec<Box<dyn Operator>>, schema: SchemaRef) -> Self {
        Self { inputs, workers, schema }
    }
}

impl Operator for Exchange {
    fn step(&mut self, input: &EpochInput) -> Result<ChangeBatch> {
        let mut rows = 0;
        for routed in &mut self.inputs {
            rows += routed.route(input)?;
        }
        if rows == 0 {
            // Workers still step: some emit on their first epoch regardless.
            let parts = self.workers.iter_mut().map(|w| w.step(input)).collect::<Result<Vec<_>>>()?;
            return ChangeBatch::concat(&self.schema, &parts);
        }
        let parts: Vec<ChangeBatch> = if rows < parallel_threshold() {
            self.workers.iter_mut().map(|w| w.step(input)).collect::<Result<_>>()?
        } else {
            self.workers.par_iter_mut().map(|w| w.step(input)).collect::<Result<_>>()?
        };
        ChangeBatch::concat(&self.schema, &parts)
    }

    fn flush(&mut self, state: &StateContext, batch: &mut WriteBatch) -> Result<()> {
        for routed in &mut self.inputs {
            routed.input.flush(state, batch)?;
        }
        self.workers.iter_mut().try_for_each(|w| w.flush(state, batch))
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
