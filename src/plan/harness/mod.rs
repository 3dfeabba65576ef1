//! The operator test harness: every stateful operator, driven epoch by epoch,
//! checked against DataFusion computing the same query from scratch.
//!
//! A case is a query over two small tables, `t1` and `t2`, each
//! `(id BIGINT, k BIGINT, v BIGINT, ts TIMESTAMP)`. The harness plans the
//! query as `CREATE MATERIALIZED VIEW` does (logical plan, `now()` marked as
//! the epoch's time, optimizer, [`super::lower`]), and then, for a few dozen
//! epochs:
//!
//! 1. makes random changes to the tables: inserts, deletes and updates (a
//!    delete and an insert of the same `id`), over a small key domain so
//!    groups and join keys collide, with NULLs in `k` and `v`; for an
//!    insert-only case, inserts only, and the tables are planned as inputs
//!    that only insert (as sources are), which lets operators keep less;
//! 2. gives the epoch a time (`now()` moves one second per epoch) and, for a
//!    table declared with a watermark, a watermark on `ts` (the highest `ts`
//!    so far minus a delay; rows are never generated behind it, so no row is
//!    late and the view must equal the batch query exactly);
//! 3. steps the dataflow, adds its output changes to the view's accumulated
//!    content (a Z-set: every row's weight must stay positive), flushes the
//!    operators and commits their writes to an in-memory store, checkpointing
//!    at random epochs;
//! 4. compares the view's content with DataFusion running the query (or the
//!    case's oracle query) over the tables' current rows.
//!
//! At random points the dataflow "crashes": it is lowered again and recovers
//! as the coordinator does, from the state of the last checkpoint plus a
//! replay of the epochs since (whose output it has already given). Runs with
//! a tiny state budget make the operators evict their caches and read their
//! state back from the store; runs with two workers go through the exchange.
//!
//! This is Feldera's discipline (each operator tested against a
//! non-incremental computation) applied through the planner, so a case also
//! checks the lowering of the SQL that reaches the operator.

mod cases;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::TableScan;
use datafusion::prelude::{SessionConfig, SessionContext};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{RelationResolver, Resolved, StreamPlan, ViewSpec};
use crate::error::{Result, SqlError};
use crate::state::{MemStore, StateStore, WriteBatch};
use crate::stream::state_table::{StateBudget, StateContext};
use crate::stream::watermark::{ViewStats, Watermark};
use crate::stream::{ChangeBatch, EpochInput, Operator, RelationId};

const SECOND: i64 = 1_000_000_000;
/// The time of epoch 0 (2023-11-14): any fixed instant would do.
const START: i64 = 1_700_000_000 * SECOND;
/// The id of the view under test; the tables are 1 and 2.
const VIEW: RelationId = 100;
/// The column of the tables that carries the watermark.
const TS: usize = 3;

/// One query to check, and how to check it.
pub struct Case {
    pub name: &'static str,
    /// The view's query.
    pub sql: &'static str,
    /// The batch query whose answer the view must equal, if not `sql`
    /// itself. `{now}` stands for the epoch's time and `{wm}` for t1's
    /// watermark on `ts` (NULL before the first row).
    pub oracle: Option<&'static str>,
    /// The tables with a watermark on `ts`, and its delay in seconds.
    pub watermarks: &'static [(&'static str, i64)],
    pub emit_on_window_close: bool,
    /// The tables only get inserts, and are planned as append-only inputs.
    pub insert_only: bool,
}

impl Case {
    pub const fn new(name: &'static str, sql: &'static str) -> Self {
        Self { name, sql, oracle: None, watermarks: &[], emit_on_window_close: false, insert_only: false }
    }
    pub const fn oracle(self, oracle: &'static str) -> Self {
        Self { oracle: Some(oracle), ..self }
    }
    pub const fn watermarks(self, watermarks: &'static [(&'static str, i64)]) -> Self {
        Self { watermarks, ..self }
    }
    pub const fn emit_on_window_close(self) -> Self {
        Self { emit_on_window_close: true, ..self }
    }
    pub const fn insert_only(self) -> Self {
        Self { insert_only: true, ..self }
    }
}

/// How one run of a case is set up.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub seed: u64,
    pub epochs: usize,
    /// Copies of each stateful operator (more than one: through the exchange).
    pub workers: usize,
    /// The operators' cache budget in bytes (`None`: unlimited).
    pub budget: Option<usize>,
}

/// The runs every case gets: one worker with all state in memory, two
/// workers, and a budget so small that every operator works from the store;
/// each twice, with different random changes.
pub const RUNS: [Run; 6] = [
    Run { seed: 1, epochs: 40, workers: 1, budget: None },
    Run { seed: 2, epochs: 40, workers: 2, budget: None },
    Run { seed: 3, epochs: 40, workers: 2, budget: Some(1) },
    Run { seed: 4, epochs: 40, workers: 1, budget: Some(1) },
    Run { seed: 5, epochs: 40, workers: 2, budget: Some(4096) },
    Run { seed: 6, epochs: 40, workers: 3, budget: None },
];

#[derive(Clone, Debug)]
struct Row {
    id: i64,
    k: Option<i64>,
    v: Option<i64>,
    ts: i64,
}

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]))
}

fn rows_batch(rows: &[&Row]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| Some(r.id)))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.k))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.v))),
        Arc::new(TimestampNanosecondArray::from_iter(rows.iter().map(|r| Some(r.ts)))),
    ];
    Ok(RecordBatch::try_new(table_schema(), columns)?)
}

fn timestamp(nanos: i64) -> ScalarValue {
    ScalarValue::TimestampNanosecond(Some(nanos), None)
}

/// A base table: its current rows (by id) and its watermark.
struct Table {
    name: &'static str,
    id: RelationId,
    rows: BTreeMap<i64, Row>,
    /// Seconds the watermark trails the highest `ts`, if it has one.
    delay: Option<i64>,
    highest_ts: Option<i64>,
    /// No row is ever deleted or updated.
    insert_only: bool,
}

impl Table {
    fn watermark(&self) -> Option<i64> {
        Some(self.highest_ts? - self.delay? * SECOND)
    }

    /// This epoch's random changes: the rows inserted and deleted. Rows are
    /// never behind the watermark, and only rows at or above it change.
    fn change(&mut self, rng: &mut StdRng, now: i64, next_id: &mut i64) -> (Vec<Row>, Vec<Row>) {
        let floor = self.watermark();
        let mut inserted = Vec::new();
        let mut deleted = Vec::new();
        let random_row = |rng: &mut StdRng, id: i64, ts: Option<i64>| Row {
            id,
            k: (!rng.random_bool(0.1)).then(|| rng.random_range(0..4)),
            v: (!rng.random_bool(0.1)).then(|| rng.random_range(-8..8)),
            ts: ts.unwrap_or_else(|| {
                let t = now + rng.random_range(-6..6) * SECOND + rng.random_range(0..1000) * 1_000_000;
                floor.map_or(t, |f| t.max(f))
            }),
        };
        for _ in 0..rng.random_range(0..5) {
            let row = random_row(rng, *next_id, None);
            *next_id += 1;
            inserted.push(row);
        }
        let changeable: Vec<i64> =
            self.rows.values().filter(|r| !self.insert_only && floor.is_none_or(|f| r.ts >= f)).map(|r| r.id).collect();
        for id in changeable {
            let roll = rng.random_range(0..10);
            if roll >= 2 {
                continue;
            }
            let Some(old) = self.rows.remove(&id) else { continue };
            if roll == 1 {
                // An update: the same id, new values, the same time.
                inserted.push(random_row(rng, id, Some(old.ts)));
            }
            deleted.push(old);
        }
        for row in &inserted {
            self.rows.insert(row.id, row.clone());
            self.highest_ts = Some(self.highest_ts.map_or(row.ts, |t| t.max(row.ts)));
        }
        (inserted, deleted)
    }
}

/// One epoch's input, kept until the next checkpoint to be replayed after
/// a crash.
struct EpochRecord {
    now: i64,
    deltas: Vec<(RelationId, ChangeBatch)>,
    watermarks: Vec<(RelationId, Watermark)>,
}

struct Resolver {
    watermarked: Vec<&'static str>,
    append_only: bool,
}

impl RelationResolver for Resolver {
    fn resolve(&self, scan: &TableScan) -> Result<Resolved> {
        let name = scan.table_name.table();
        let id = match name {
            "t1" => 1,
            "t2" => 2,
            other => return Err(SqlError::internal(format!("the harness has no table {other}"))),
        };
        let watermarked = if self.watermarked.contains(&name) { vec![TS] } else { vec![] };
        Ok(Resolved { id, watermarked, source: None, append_only: self.append_only })
    }
}

/// A session configured as the engine's (see `sql::Engine::with_store`),
/// with `t1` and `t2` holding `rows`.
fn session(tables: &[Table]) -> Result<SessionContext> {
    let mut config = SessionConfig::new().with_information_schema(false);
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    config.options_mut().execution.time_zone = Some("+00:00".to_string());
    let ctx = SessionContext::new_with_config(config);
    ctx.register_udf(super::temporal::EpochNow::udf().as_ref().clone());
    for table in tables {
        let rows: Vec<&Row> = table.rows.values().collect();
        let provider = MemTable::try_new(table_schema(), vec![vec![rows_batch(&rows)?]])?;
        ctx.register_table(table.name, Arc::new(provider))?;
    }
    Ok(ctx)
}

/// Each row of `batch` as one string, its values formatted as DataFusion
/// prints them.
fn formatted(batch: &RecordBatch) -> Result<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<_>>().join(" | "))
        .collect())
}

/// The dataflow under test and everything it needs to run and recover.
struct Dataflow {
    plan: StreamPlan,
    stats: Arc<ViewStats>,
    root: Box<dyn Operator>,
}

impl Dataflow {
    async fn plan(case: &Case, tables: &[Table], workers: usize) -> Result<Self> {
        let ctx = session(tables)?;
        let state = ctx.state();
        let plan = state.create_logical_plan(case.sql).await?;
        let epoch_now = datafusion::execution::FunctionRegistry::udf(&ctx, super::temporal::EPOCH_NOW)?;
        let plan = super::temporal::mark_now(plan, &epoch_now)?;
        super::check_materializable(&plan)?;
        let plan = state.optimize(&plan)?;
        super::check_materializable(&plan)?;
        let resolver =
            Resolver { watermarked: case.watermarks.iter().map(|(t, _)| *t).collect(), append_only: case.insert_only };
        let spec = ViewSpec { id: VIEW, workers, emit_on_window_close: case.emit_on_window_close };
        let plan = super::lower(&plan, &state, &resolver, &spec)?;
        let stats = Arc::new(ViewStats::default());
        let root = plan.build(&stats)?;
        Ok(Self { plan, stats, root })
    }

    /// A crash: the operators are built again from the plan, with none of
    /// their memory.
    fn rebuild(&mut self) -> Result<()> {
        self.root = self.plan.build(&self.stats)?;
        Ok(())
    }

    /// Steps one epoch; returns the output and the operators' writes.
    fn step(&mut self, record: &EpochRecord, context: StateContext) -> Result<(ChangeBatch, WriteBatch)> {
        let mut input = EpochInput::new(context.clone());
        input.now_nanos = record.now;
        for (relation, watermark) in &record.watermarks {
            let mut watermarks = vec![None; table_schema().fields().len()];
            if let Some(slot) = watermarks.get_mut(TS) {
                *slot = Some(watermark.clone());
            }
            input.set_watermarks(*relation, watermarks);
        }
        for (relation, delta) in &record.deltas {
            input.insert(*relation, delta.clone())?;
        }
        let output = self.root.step(&input)?;
        self.root.watermarks(&input)?;
        let mut writes = WriteBatch::default();
        self.root.flush(&context, &mut writes)?;
        Ok((output, writes))
    }
}

/// Runs `case` as `run` says; on the first difference between the view and
/// the batch query, fails with both.
/// The stream plan of `case` on `workers` workers, over empty tables.
pub async fn stream_plan(case: &Case, workers: usize) -> Result<StreamPlan> {
    Ok(Dataflow::plan(case, &empty_tables(case), workers).await?.plan)
}

fn empty_tables(case: &Case) -> Vec<Table> {
    [("t1", 1), ("t2", 2)]
        .into_iter()
        .map(|(name, id)| Table {
            name,
            id,
            rows: BTreeMap::new(),
            delay: case.watermarks.iter().find(|(t, _)| *t == name).map(|(_, d)| *d),
            highest_ts: None,
            insert_only: case.insert_only,
        })
        .collect()
}

pub async fn check(case: &Case, run: Run) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(run.seed);
    let mut tables = empty_tables(case);
    let mut flow = Dataflow::plan(case, &tables, run.workers).await?;
    let budget = run.budget.map_or_else(StateBudget::unlimited, StateBudget::new);
    let store = MemStore::new();
    let mut view: HashMap<String, i64> = HashMap::new();
    let mut since_checkpoint: Vec<EpochRecord> = Vec::new();
    let mut next_id = 0;
    let mut crashes = 0;
    for epoch in 1..=run.epochs as u64 {
        let now = START + epoch as i64 * SECOND;
        let mut record = EpochRecord { now, deltas: Vec::new(), watermarks: Vec::new() };
        for table in &mut tables {
            let before = table.watermark();
            let (inserted, deleted) = table.change(&mut rng, now, &mut next_id);
            let rows: Vec<&Row> = deleted.iter().chain(&inserted).collect();
            let weights = Int64Array::from_iter_values(
                std::iter::repeat_n(-1, deleted.len()).chain(std::iter::repeat_n(1, inserted.len())),
            );
            record.deltas.push((table.id, ChangeBatch::new(rows_batch(&rows)?, weights)));
            if table.delay.is_some() {
                let watermark = Watermark::new(before.map(timestamp), table.watermark().map(timestamp));
                record.watermarks.push((table.id, watermark));
            }
        }
        let checkpoint = epoch == 1 || rng.random_bool(0.3);
        let context =
            StateContext { snapshot: store.snapshot(), budget: budget.clone(), fresh: epoch == 1, checkpoint };
        let (output, writes) = flow.step(&record, context)?;
        store.commit(epoch, writes)?;
        let rows = formatted(&output.rows)?;
        for (row, weight) in rows.into_iter().zip(output.weights.values().iter()) {
            *view.entry(row).or_default() += weight;
        }
        view.retain(|_, weight| *weight != 0);
        if checkpoint {
            since_checkpoint.clear();
        } else {
            since_checkpoint.push(record);
        }
        let context = format!(
            "case {} (seed {}, {} workers, budget {:?}), epoch {epoch} after {crashes} crashes",
            case.name, run.seed, run.workers, run.budget
        );
        compare(case, &tables, now, &view, &context).await?;
        if flow.stats.late_rows() != 0 {
            return Err(SqlError::internal(format!("{context}: the view counted late rows, none were late")));
        }

        if rng.random_bool(0.15) {
            crashes += 1;
            flow.rebuild()?;
            for replayed in &since_checkpoint {
                let context = StateContext {
                    snapshot: store.snapshot(),
                    budget: budget.clone(),
                    fresh: false,
                    checkpoint: false,
                };
                // Its output was given before the crash; its writes are
                // dropped, as the coordinator drops a replayed epoch's.
                flow.step(replayed, context)?;
            }
        }
    }
    Ok(())
}

/// Fails unless the view holds exactly the rows of the batch query.
async fn compare(case: &Case, tables: &[Table], now: i64, view: &HashMap<String, i64>, context: &str) -> Result<()> {
    if let Some((row, weight)) = view.iter().find(|(_, w)| **w < 0) {
        return Err(SqlError::internal(format!("{context}: the view holds row [{row}] {weight} times")));
    }
    let literal = |nanos: Option<i64>, zone: &str| match nanos {
        Some(n) => format!("arrow_cast({n}, 'Timestamp(Nanosecond, {zone})')"),
        None => format!("arrow_cast(NULL, 'Timestamp(Nanosecond, {zone})')"),
    };
    let watermark = tables.first().and_then(Table::watermark);
    let sql = case
        .oracle
        .unwrap_or(case.sql)
        .replace("{now}", &literal(Some(now), "Some(\"+00:00\")"))
        .replace("{wm}", &literal(watermark, "None"));
    let batches = session(tables)?.sql(&sql).await?.collect().await?;
    let mut expected: Vec<String> = Vec::new();
    for batch in &batches {
        expected.extend(formatted(batch)?);
    }
    expected.sort();
    let mut actual: Vec<String> =
        view.iter().flat_map(|(row, weight)| std::iter::repeat_n(row.clone(), *weight as usize)).collect();
    actual.sort();
    if actual != expected {
        let missing: Vec<&String> = expected.iter().filter(|r| !actual.contains(r)).take(8).collect();
        let extra: Vec<&String> = actual.iter().filter(|r| !expected.contains(r)).take(8).collect();
        return Err(SqlError::internal(format!(
            "{context}: the view differs from the batch query\n  query: {sql}\n  view has {} rows, batch {}\n  \
             missing from the view: {missing:?}\n  only in the view: {extra:?}",
            actual.len(),
            expected.len()
        )));
    }
    Ok(())
}
