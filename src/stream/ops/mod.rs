//! The operators a view's dataflow is built from, one per file.
//!
//! Linear operators (scan, filter, project, union, expand, constant) map change
//! batches; stateful ones (aggregate, join, top-N) keep keyed state and emit
//! the difference between their output before and after each epoch.
//!
//! Each stateful operator is tested in `plan::harness` (`src/plan/harness/`):
//! driven through the planner, epoch by epoch, with random inserts, updates
//! and deletes, checkpoints, crashes and a tiny cache budget, its output is
//! compared with DataFusion's answer to the same query over the same rows.

pub mod aggregate;
pub mod constant;
pub mod event_time;
pub mod exchange;
pub mod expand;
pub mod filter;
pub mod interval;
pub mod join;
pub mod native_accumulator;
pub mod project;
pub mod scan;
pub mod shared;
pub mod source_scan;
pub mod temporal_filter;
pub mod topn;
pub mod union;
pub mod window;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::physical_plan::PhysicalExpr;
use std::sync::Arc;

use crate::error::Result;

/// Evaluates expressions over a batch into columns.
pub fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs.iter().map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?)).collect()
}
