//! The memory limit of one ad-hoc query.
//!
//! Every statement DataFusion executes for a client (a `SELECT`, the source
//! of an `INSERT … SELECT` or `CREATE TABLE … AS`, a `COPY (query) TO`)
//! draws on a memory pool of its own, so one query that builds a huge hash
//! table gets ERROR 53200 ("out of memory") and every other session goes on
//! as before. A pool shared by all queries would instead fail whichever
//! query asked next.
//!
//! How: the session's [`QueryPlanner`] is [`MemoryLimitedPlanner`]. It plans
//! as DataFusion's default planner does and puts a [`QueryMemoryExec`] on top
//! of the plan. That node hands its input a task context whose runtime has a
//! fresh [`GreedyMemoryPool`] of the configured size, created once per
//! planned query and shared by all its partitions. DataFusion's operators
//! reserve from the pool they are given: sorts and grouped aggregates spill
//! to disk when it runs short, a hash join's build side cannot and fails.
//!
//! What the pool does not see: batches a caller collects itself. The
//! statements that collect a whole result before writing it (INSERT …
//! SELECT, CREATE TABLE … AS) use [`collect_within`], which counts the
//! collected batches against the same limit.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties, ReplaceChildrenOptions,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use futures::StreamExt;

use crate::error::{Result, SqlError, sqlstate};

/// The default limit: 2 GiB per query.
pub const DEFAULT_QUERY_MEMORY_BYTES: usize = 2 << 30;

/// The limit every query planned from now on gets, changeable at runtime
/// (the server sets it from `--query-memory-mb`).
#[derive(Debug)]
pub struct QueryMemoryLimit(AtomicUsize);

impl QueryMemoryLimit {
    pub fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self(AtomicUsize::new(bytes)))
    }

    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }
}

/// DataFusion's default physical planner, with a [`QueryMemoryExec`] on top.
#[derive(Debug)]
pub struct MemoryLimitedPlanner {
    limit: Arc<QueryMemoryLimit>,
}

impl MemoryLimitedPlanner {
    pub fn new(limit: Arc<QueryMemoryLimit>) -> Self {
        Self { limit }
    }
}

#[async_trait]
impl QueryPlanner for MemoryLimitedPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = DefaultPhysicalPlanner::default().create_physical_plan(logical_plan, session).await?;
        Ok(Arc::new(QueryMemoryExec::new(plan, self.limit.bytes())))
    }
}

/// Runs its input against a memory pool of `limit` bytes of its own.
#[derive(Debug)]
pub struct QueryMemoryExec {
    input: Arc<dyn ExecutionPlan>,
    limit: usize,
    /// The query's runtime, made by the first partition executed (each
    /// partition of the root is executed separately, all must share one pool).
    runtime: OnceLock<Arc<RuntimeEnv>>,
}

impl QueryMemoryExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, limit: usize) -> Self {
        Self { input, limit, runtime: OnceLock::new() }
    }

    fn runtime(&self, shared: &RuntimeEnv) -> DfResult<Arc<RuntimeEnv>> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        // The three largest consumers are named in the error a client gets.
        let top = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
        let pool = Arc::new(TrackConsumersPool::new(GreedyMemoryPool::new(self.limit), top));
        let runtime = RuntimeEnvBuilder::from_runtime_env(shared).with_memory_pool(pool).build_arc()?;
        Ok(self.runtime.get_or_init(|| runtime).clone())
    }
}

impl DisplayAs for QueryMemoryExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "QueryMemoryExec: limit={}", self.limit)
    }
}

impl ExecutionPlan for QueryMemoryExec {
    fn name(&self) -> &str {
        "QueryMemoryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self::new(input, self.limit))),
            _ => Err(DataFusionError::Internal("QueryMemoryExec has exactly one input".into())),
        }
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(datafusion::physical_plan::ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let runtime = self.runtime(&context.runtime_env())?;
        // A context only this partition holds (a one-partition query) is
        // reused; a shared one is copied (its function maps with it).
        let context = match Arc::try_unwrap(context) {
            Ok(own) => own.with_runtime(runtime),
            Err(shared) => TaskContext::new(
                shared.task_id(),
                shared.session_id(),
                shared.session_config().clone(),
                shared.scalar_functions().clone(),
                shared.higher_order_functions().clone(),
                shared.aggregate_functions().clone(),
                shared.window_functions().clone(),
                runtime,
            ),
        };
        self.input.execute(partition, Arc::new(context))
    }
}

/// Collects `frame`'s rows, refusing with 53200 once they take more than
/// `limit` bytes (counted as Arrow reports them: an upper bound, since
/// batches sliced from one buffer each count the whole buffer).
pub async fn collect_within(frame: DataFrame, limit: usize, what: &str) -> Result<Vec<RecordBatch>> {
    let mut stream = frame.execute_stream().await?;
    let mut batches = Vec::new();
    let mut held = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        held = held.saturating_add(batch.get_array_memory_size());
        if held > limit {
            return Err(SqlError::new(
                sqlstate::OUT_OF_MEMORY,
                format!(
                    "out of memory: {what} holds its rows in memory until it commits, and they take more than the \
                     query memory limit of {limit} bytes (--query-memory-mb); split it into smaller statements"
                ),
            ));
        }
        batches.push(batch);
    }
    Ok(batches)
}
