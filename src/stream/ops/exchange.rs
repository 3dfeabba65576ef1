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

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_plan::PhysicalExpr;
use parking_lot::Mutex;
use rayon::prelude::*;

use crate::error::Result;
use crate::state::WriteBatch;
use crate::stream::state_table::StateContext;
use crate::stream::watermark::Watermarks;
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

/// Leaf of a worker's copy of the operator: the rows routed to this worker,
/// and the input's watermarks (the same for every worker).
pub struct Feed {
    slot: Slot,
    watermarks: Arc<Mutex<Watermarks>>,
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

    fn watermarks(&self, _input: &EpochInput) -> Result<Watermarks> {
        Ok(self.watermarks.lock().clone())
    }
}

/// One input of the partitioned operator and how to route its rows.
pub struct Routed {
    input: Box<dyn Operator>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Types keys are cast to before hashing (join sides must agree).
    key_types: Vec<DataType>,
    slots: Vec<Slot>,
    watermarks: Arc<Mutex<Watermarks>>,
}

/// The worker (of `workers`) that owns each row of `keys`, already cast to
/// the key types: what [`Routed`] routes by, so an operator copy can tell
/// which stored groups are its own.
pub fn worker_of(keys: &[ArrayRef], rows: usize, workers: usize) -> Result<Vec<usize>> {
    let mut hashes = vec![0u64; rows];
    create_hashes(keys, &RandomState::with_seed(0x5eed), &mut hashes)?;
    let workers = workers.max(1) as u64;
    Ok(hashes.iter().map(|hash| ((hash % VNODES) % workers) as usize).collect())
}

/// Which rows of a stored key a copy of a partitioned operator owns.
#[derive(Clone, Debug)]
pub struct Ownership {
    pub worker: usize,
    pub workers: usize,
    /// The key types rows are hashed as.
    pub key_types: Vec<DataType>,
}

impl Ownership {
    /// The only copy: owns everything.
    pub fn all() -> Self {
        Self { worker: 0, workers: 1, key_types: Vec::new() }
    }

    /// Which of `rows` rows with key columns `keys` this copy owns.
    pub fn owns(&self, keys: &[ArrayRef], rows: usize) -> Result<Vec<bool>> {
        if self.workers <= 1 {
            return Ok(vec![true; rows]);
        }
        let mut cast_keys = keys.to_vec();
        for (column, ty) in cast_keys.iter_mut().zip(&self.key_types) {
            if column.data_type() != ty {
                *column = cast(column, ty)?;
            }
        }
        Ok(worker_of(&cast_keys, rows, self.workers)?.into_iter().map(|w| w == self.worker).collect())
    }
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
        // Until the first epoch: which columns can carry a watermark at all.
        let columns = input
            .watermarks(&EpochInput::probe())
            .unwrap_or_else(|_| crate::stream::watermark::none(schema.fields().len()));
        let watermarks = Arc::new(Mutex::new(columns));
        let feeds = slots
            .iter()
            .map(|slot| Feed { slot: slot.clone(), watermarks: watermarks.clone(), schema: schema.clone() })
            .collect();
        (Self { input, keys, key_types, slots, watermarks }, feeds)
    }

    fn route(&mut self, input: &EpochInput) -> Result<usize> {
        let delta = self.input.step(input)?;
        *self.watermarks.lock() = self.input.watermarks(input)?;
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
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); self.slots.len()];
        for (row, worker) in worker_of(&columns, rows, self.slots.len())?.into_iter().enumerate() {
            if let Some(rows) = indices.get_mut(worker) {
                rows.push(row as u32);
            }
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

    /// Every copy derives the same watermarks from the same input's.
    fn watermarks(&self, input: &EpochInput) -> Result<Watermarks> {
        match self.workers.first() {
            Some(worker) => worker.watermarks(input),
            None => Ok(crate::stream::watermark::none(self.schema.fields().len())),
        }
    }
}
