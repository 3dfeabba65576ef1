//! Planning a materialized view: DataFusion's optimized `LogicalPlan` becomes
//! a stream plan, a tree of [`Node`]s that are plain data (one file per node
//! kind under `node/`, mirroring `stream/ops/`), which is then built into
//! live operators.
//!
//! - [`lower`] (`lower.rs` walks the plan, `lowering.rs` holds what the
//!   node files share): the plan, refusing with 0A000 what a view cannot
//!   maintain;
//! - [`StreamPlan::build`] (`build.rs`): the operators, as often as needed,
//!   a subplan the query repeats built once (`common_subplans.rs`);
//! - [`StreamPlan::explain`] (`explain.rs`): the plan as EXPLAIN prints it.
//!
//! A stream plan of a small view, as EXPLAIN shows it:
//!
//! ```text
//! Aggregate [state #1; groups as retracting accumulators; exchange by key, 2 workers]: Aggregate: groupBy=[[t.k]], aggr=[[count(Int64(1))]]
//!   Filter: Filter: t.v > Int64(0)
//!     Scan: TableScan: t projection=[k, v]
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{LogicalPlan, TableScan};

use crate::error::{Result, SqlError};
use crate::stream::watermark::ViewStats;
use crate::stream::{Operator, RelationId};

mod build;
mod common_subplans;
mod explain;
#[cfg(test)]
mod harness;
mod interval;
mod lower;
mod lowering;
pub mod node;
mod subqueries;
pub mod temporal;
mod volatility;

pub use node::Node;
pub use volatility::check_materializable;

/// A view's dataflow as data: what [`lower`] makes of its query.
#[derive(Clone)]
pub struct StreamPlan {
    pub root: Node,
    /// The view (its id leads its operators' state keys).
    pub view: RelationId,
    /// Copies of each partitioned operator.
    pub workers: usize,
    /// The tables and views it reads (sources it reads itself).
    pub inputs: BTreeSet<RelationId>,
    /// The view depends on the passing time (temporal filters) or reads
    /// sources: it is stepped in every epoch, and epochs come with the
    /// clock and the sources' data.
    pub clocked: bool,
    /// The clock must step it even while its sources bring nothing (see
    /// `Lowering::needs_ticks`).
    pub needs_ticks: bool,
}

impl StreamPlan {
    /// The view's columns that carry a watermark.
    pub fn watermarked(&self) -> Vec<usize> {
        self.root.watermarked_columns()
    }

    /// Whether the view's changes only ever insert rows, so that its rows
    /// can be stored as appended blocks (see `db/storage.rs`).
    pub fn append_only(&self) -> bool {
        self.root.append_only()
    }

    /// The live operators, with no state in memory: they read theirs from
    /// the store. `stats` is where they count late rows and source reads.
    pub fn build(&self, stats: &Arc<ViewStats>) -> Result<Box<dyn Operator>> {
        let cx = node::BuildContext {
            view: self.view,
            workers: self.workers,
            stats: stats.clone(),
            shared_reads: node::source_scan::shared_reads(&self.root),
            shared_subplans: common_subplans::shared_subplans(&self.root),
            built_subplans: Default::default(),
        };
        build::build(&self.root, &cx)
    }

    /// The plan as EXPLAIN prints it, one line per node.
    pub fn explain(&self) -> Vec<String> {
        explain::render(&self.root, self.workers)
    }
}

/// A relation a table scan reads (a table, materialized view or source).
pub struct Resolved {
    pub id: RelationId,
    /// Its columns that carry a watermark.
    pub watermarked: Vec<usize>,
    /// A source: the view reads it itself, with its own reader.
    pub source: Option<Arc<crate::catalog::Relation>>,
    /// Its changes only ever insert rows (a materialized view stored as
    /// blocks); a table's rows can be updated and deleted.
    pub append_only: bool,
}

/// Finds the relation a table scan reads.
pub trait RelationResolver {
    fn resolve(&self, scan: &TableScan) -> Result<Resolved>;
}

/// What a view is lowered as.
pub struct ViewSpec {
    pub id: RelationId,
    /// Partitioned stateful operators get this many copies.
    pub workers: usize,
    /// EMIT ON WINDOW CLOSE: windowed aggregates emit each window once, final.
    pub emit_on_window_close: bool,
}

/// The stream plan of `plan` for the view `view`. Stateful operators keep
/// their state under keys numbered in lowering order, so the same statement
/// always gets the same keys.
pub fn lower(
    plan: &LogicalPlan,
    state: &SessionState,
    resolver: &dyn RelationResolver,
    view: &ViewSpec,
) -> Result<StreamPlan> {
    let plan = subqueries::scalar_subqueries_to_joins(plan.clone())?;
    let plan = common_subplans::align_aggregates(plan)?;
    let mut lowering = lowering::Lowering::new(state, resolver, view.emit_on_window_close);
    let root = lower::lower(&mut lowering, &plan)?;
    if view.emit_on_window_close && lowering.windowed_aggregates == 0 {
        return Err(SqlError::not_supported(
            "EMIT ON WINDOW CLOSE on a query without a windowed aggregate: it needs a GROUP BY on a column \
             with a watermark, e.g. window_start of TUMBLE over a table with WATERMARK FOR",
        ));
    }
    Ok(StreamPlan {
        root,
        view: view.id,
        workers: view.workers.max(1),
        inputs: lowering.inputs,
        clocked: lowering.clocked,
        needs_ticks: lowering.needs_ticks,
    })
}

/// The arrow schema of a plan node, every field nullable: outer joins and
/// aggregates over empty input produce NULLs where a base column had none.
pub fn stream_schema(schema: &DFSchema) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    Arc::new(Schema::new(fields))
}
