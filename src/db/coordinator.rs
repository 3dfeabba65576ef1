//! The epoch coordinator: the one place where state changes.
//!
//! A writer (DML, CREATE/DROP) takes the epoch lock, computes the changes of
//! the tables it writes, and calls [`EpochGuard::commit`]: the changes are fed
//! through every dependent view's dataflow (views in creation order, which is
//! a topological order: a view can only read relations that existed before
//! it), and the table rows, the view contents and everything else of the
//! epoch are written in one atomic batch. Readers use snapshots and never
//! wait. When `commit` returns, the next statement of any session sees the
//! epoch (read-your-writes).
//!
//! Checkpoints. The operators' state is written only at checkpoints: at the
//! first epoch after the checkpoint interval has passed (or from a background
//! tick when writes pause), when the operators' caches exceed their budget
//! (dirty state cannot be evicted), for a very large epoch, and with every
//! CREATE MATERIALIZED VIEW. An epoch in between writes its table and view
//! rows as always, plus its table changes to the epoch log (one entry,
//! `epoch_log`); a checkpoint deletes the log. So every committed epoch is
//! durable and visible at once, and the cost of writing state is paid once
//! per interval instead of once per statement. At startup
//! [`EpochGuard::finish_recovery`] feeds the log through the dataflows again,
//! from the last checkpoint's state, and checkpoints.
//!
//! A view whose dataflow fails (say, division by zero on a new row) is marked
//! failed; reads of it report the error; other views go on. It is stored as
//! failed and rebuilt from its inputs at the next start.
//!
//! A write the store refuses (disk full, I/O error) turns the server
//! read-only until the store takes writes again (see `store_health`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use tokio::sync::{Mutex, MutexGuard};

use super::epoch_log::{self, LoggedWatermark};
use super::run_state::{RunState, RunStates};
use super::storage;
use super::store_health::{self, StoreHealth};
use super::subscribe::{Feed, Subscriptions};
use crate::catalog::Relation;
use crate::error::{Result, SqlError};
use crate::state::keys::Scope;
use crate::state::{
    Epoch, LOG_PREFIX, Snapshot, StateStore, WriteBatch, catalog_key, failure_key, log_key, relation_prefix,
    view_state_prefix, view_stats_key, watermark_key,
};
use crate::stream::state_table::{StateBudget, StateContext};
use crate::stream::watermark::{self, Watermark, Watermarks};
use crate::stream::{ChangeBatch, EpochInput, Operator, RelationId};

/// An epoch whose table changes take more memory than this is checkpointed
/// rather than logged (logging it would cost about as much).
const LARGEST_LOGGED_EPOCH: usize = 32 << 20;

/// A materialized view's dataflow.
pub struct ViewDataflow {
    pub view: Arc<Relation>,
    /// The view's run-time state (failure, counters, watermarks).
    pub run: Arc<RunState>,
    pub root: Box<dyn Operator>,
    /// Builds the view's operators anew, from its stream plan: what
    /// replaces operators whose memory got ahead of the store.
    build: BuildOperators,
    pub inputs: BTreeSet<RelationId>,
    /// The relations of `inputs` (what a backfill or rebuild reads).
    pub sources: Vec<Arc<Relation>>,
    /// Stepped since the last checkpoint: its operators may hold dirty
    /// state (a checkpoint flushes only such dataflows).
    unflushed: bool,
    /// Follows the passing time (temporal filters) or reads sources:
    /// stepped in every epoch.
    pub clocked: bool,
    /// The clock steps it even while its sources bring nothing (temporal
    /// filters, idle timeouts of source watermarks).
    pub needs_ticks: bool,
}

/// Builds a view's operators, with nothing in memory (they read their state
/// from the store); the planner gives each view's dataflow one.
pub type BuildOperators = Arc<dyn Fn() -> Result<Box<dyn Operator>> + Send + Sync>;

impl ViewDataflow {
    /// The dataflow of `view`, its operators built by `build`.
    pub fn new(
        view: Arc<Relation>,
        run: Arc<RunState>,
        build: BuildOperators,
        inputs: BTreeSet<RelationId>,
        sources: Vec<Arc<Relation>>,
    ) -> Result<Self> {
        let root = build()?;
        Ok(Self { view, run, root, build, inputs, sources, unflushed: false, clocked: false, needs_ticks: false })
    }

    /// Its watermarks in an epoch that does not step it: unchanged.
    fn steady_watermarks(&self) -> Option<Watermarks> {
        let current = self.run.current_watermarks.lock();
        current.iter().any(Option::is_some).then(|| current.iter().map(|w| w.as_ref().map(steady)).collect())
    }
}

/// A watermark as it stands in an epoch that does not move it.
fn steady(watermark: &Watermark) -> Watermark {
    Watermark { idle: watermark.idle, was_idle: watermark.idle, ..Watermark::steady(watermark.after.clone()) }
}

/// The watermarks of the tables an epoch reads, and what to write for them.
struct TableWatermarks {
    /// Per table with a watermark: the table and its watermark this epoch.
    tables: HashMap<RelationId, (Arc<Relation>, Watermark)>,
    /// Tables this (live) epoch inserted rows into, and its time.
    inserted: Vec<RelationId>,
    now: i64,
}

impl TableWatermarks {
    /// In a live epoch at time `now`: every watermarked table some view
    /// reads, moved on by the rows `changes` insert, and idle if it has
    /// had none for its idle timeout.
    fn live(views: &[ViewDataflow], changes: &[(Arc<Relation>, ChangeBatch)], now: i64) -> Result<Self> {
        let steady = |def: &crate::catalog::TableWatermark| {
            let idle = *def.idle.lock();
            Watermark { idle, was_idle: idle, ..Watermark::steady(def.value.lock().clone()) }
        };
        let mut tables: HashMap<RelationId, (Arc<Relation>, Watermark)> = HashMap::new();
        for source in views.iter().flat_map(|f| f.sources.iter()) {
            if let Some(def) = &source.watermark {
                tables.entry(source.id).or_insert_with(|| (source.clone(), steady(def)));
            }
        }
        let mut inserted: Vec<RelationId> = Vec::new();
        for (relation, change) in changes {
            let Some(def) = &relation.watermark else { continue };
            let entry = tables.entry(relation.id).or_insert_with(|| (relation.clone(), steady(def)));
            let data_type = relation.schema.field(def.column).data_type();
            entry.1.after = def.advance(entry.1.after.clone(), change, data_type)?;
            if change.weights.values().iter().any(|&w| w > 0) {
                inserted.push(relation.id);
            }
        }
        for (id, (relation, current)) in tables.iter_mut() {
            let Some(def) = &relation.watermark else { continue };
            current.idle = !inserted.contains(id) && def.idle_at(now);
        }
        Ok(Self { tables, inserted, now })
    }

    /// In a replayed epoch: as its log entry recorded them.
    fn logged(logged: &[LoggedWatermark], resolve: &dyn Fn(RelationId) -> Option<Arc<Relation>>) -> Result<Self> {
        let mut tables = HashMap::new();
        for w in logged {
            let Some(relation) = resolve(w.relation) else { continue };
            let Some(field) = relation.schema.fields().get(w.column as usize) else { continue };
            let value = |v: Option<i64>| v.map(|v| watermark::from_i64(v, field.data_type())).transpose();
            let entry =
                Watermark { before: value(w.before)?, after: value(w.after)?, idle: w.idle, was_idle: w.was_idle };
            tables.insert(relation.id, (relation.clone(), entry));
        }
        Ok(Self { tables, inserted: Vec::new(), now: 0 })
    }

    fn feed(&self, input: &mut EpochInput) {
        for (id, (relation, current)) in &self.tables {
            let Some(def) = &relation.watermark else { continue };
            let mut columns = watermark::none(relation.schema.fields().len());
            if let Some(column) = columns.get_mut(def.column) {
                *column = Some(current.clone());
            }
            input.set_watermarks(*id, columns);
        }
    }

    fn to_log(&self) -> Vec<LoggedWatermark> {
        let mut logged: Vec<LoggedWatermark> = self
            .tables
            .iter()
            .filter_map(|(id, (relation, current))| {
                let def = relation.watermark.as_ref()?;
                Some(LoggedWatermark {
                    relation: *id,
                    column: def.column as u16,
                    before: current.before.as_ref().and_then(watermark::to_i64),
                    after: current.after.as_ref().and_then(watermark::to_i64),
                    idle: current.idle,
                    was_idle: current.was_idle,
                })
            })
            .collect();
        logged.sort_by_key(|w| w.relation);
        logged
    }

    /// Stages the watermarks that moved (a live epoch).
    fn stage(&self, batch: &mut WriteBatch) {
        for (id, (_, current)) in &self.tables {
            if let Some(value) = current.after.as_ref().filter(|_| current.advanced()).and_then(watermark::to_i64) {
                batch.put(watermark_key(*id).to_vec(), value.to_be_bytes().to_vec());
            }
        }
    }

    /// Once the epoch is committed: the tables' watermarks move.
    fn commit(&self) {
        for (id, (relation, current)) in &self.tables {
            let Some(def) = &relation.watermark else { continue };
            if current.before != current.after {
                *def.value.lock() = current.after.clone();
            }
            *def.idle.lock() = current.idle;
            if self.inserted.contains(id) {
                *def.last_insert.lock() = self.now;
            }
        }
    }
}

use crate::stream::wall_clock_nanos as now_nanos;

pub struct Coordinator {
    store: Arc<dyn StateStore>,
    /// What the operators' state caches may hold together.
    budget: Arc<StateBudget>,
    /// Time between checkpoints; zero checkpoints every epoch.
    checkpoint_interval: Duration,
    dataflows: Mutex<Dataflows>,
    /// How far behind sinks are: past [`SINK_BACKLOG_LIMIT`] connectors
    /// stop reading until the sink catches up.
    sink_backlog: SinkBacklog,
    /// Clients following relations' changes (SUBSCRIBE).
    subscriptions: Subscriptions,
    /// Whether the store takes writes (read-only after a failed write).
    health: StoreHealth,
    /// Each relation's run-time state (failure, counters, watermarks).
    run_states: RunStates,
    /// Woken by source readers told that records came (Kafka), so the
    /// source pump needs not poll them (see `stream::arrival`).
    source_arrivals: Arc<tokio::sync::Notify>,
}

/// Undelivered sink epochs at which reading from connectors pauses: a
/// slow sink slows consumption instead of piling up output.
pub const SINK_BACKLOG_LIMIT: usize = 256;

/// Sinks' undelivered epochs: what the delivery task last counted, and the
/// outbox entries written before and since that count.
#[derive(Default)]
struct SinkBacklog {
    /// Outbox entries every epoch so far has written (under the epoch lock).
    written: std::sync::atomic::AtomicU64,
    /// The largest outbox the delivery task counted, and `written` at the
    /// snapshot it counted at.
    counted: parking_lot::Mutex<(usize, u64)>,
}

struct Dataflows {
    next_epoch: Epoch,
    /// The last epoch's time (epochs' times never go back).
    last_time: i64,
    views: Vec<ViewDataflow>,
    /// Epochs with an entry in the epoch log (since the last checkpoint).
    logged: Vec<Epoch>,
    last_checkpoint: Instant,
}

/// Exclusive right to write the next epoch.
pub struct EpochGuard<'a> {
    store: &'a Arc<dyn StateStore>,
    budget: &'a Arc<StateBudget>,
    checkpoint_interval: Duration,
    flows: MutexGuard<'a, Dataflows>,
    /// Sinks are too far behind: source readers read nothing this epoch.
    hold_sources: bool,
    sink_backlog: &'a SinkBacklog,
    subscriptions: &'a Subscriptions,
    health: &'a StoreHealth,
    run_states: &'a RunStates,
}

impl Coordinator {
    pub fn new(store: Arc<dyn StateStore>, budget: Arc<StateBudget>, checkpoint_interval: Duration) -> Self {
        let next_epoch = store.committed_epoch() + 1;
        let flows = Dataflows {
            next_epoch,
            last_time: 0,
            views: Vec::new(),
            logged: Vec::new(),
            last_checkpoint: Instant::now(),
        };
        Self {
            store,
            budget,
            checkpoint_interval,
            dataflows: Mutex::new(flows),
            sink_backlog: SinkBacklog::default(),
            subscriptions: Subscriptions::default(),
            health: StoreHealth::default(),
            run_states: RunStates::default(),
            source_arrivals: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The run-time state of relation `id` (see `run_state`).
    pub fn run_state(&self, id: RelationId) -> Arc<RunState> {
        self.run_states.of(id)
    }

    /// Whether the store takes writes (see `store_health`).
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Subscribes to `relation`'s committed changes (a table's or
    /// materialized view's): the epoch it starts after, its rows at that
    /// epoch (if `with_snapshot`), and the feed of every later epoch's
    /// changes.
    pub async fn subscribe(
        &self,
        relation: &Relation,
        with_snapshot: bool,
    ) -> Result<(Epoch, Option<RecordBatch>, Feed)> {
        // Under the epoch lock: no epoch commits between the snapshot and
        // the registration.
        let guard = self.begin().await;
        let snapshot = self.store.snapshot();
        let rows = if with_snapshot { Some(storage::scan_all(relation, snapshot.as_ref())?) } else { None };
        let feed = self.subscriptions.add(relation.id);
        drop(guard);
        Ok((snapshot.epoch(), rows, feed))
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// A snapshot to count sinks' outboxes at, and the outbox entries
    /// written up to it (for [`set_sink_backlog`](Self::set_sink_backlog)).
    pub async fn outbox_snapshot(&self) -> (Arc<dyn Snapshot>, u64) {
        // Under the epoch lock: no epoch writes between the two.
        let _guard = self.dataflows.lock().await;
        (self.store.snapshot(), self.sink_backlog.written.load(Ordering::Relaxed))
    }

    /// Records the largest number of epochs a sink had yet to deliver when
    /// `written` outbox entries had been written.
    pub fn set_sink_backlog(&self, epochs: usize, written: u64) {
        *self.sink_backlog.counted.lock() = (epochs, written);
    }

    /// Whether sinks are so far behind that connectors should wait: the
    /// last count plus every entry written since (an upper bound, exact
    /// with one sink), so that sources stop at the limit and not only
    /// once the delivery task next counts.
    pub fn sinks_backlogged(&self) -> bool {
        let (counted, written_then) = *self.sink_backlog.counted.lock();
        let since = self.sink_backlog.written.load(Ordering::Relaxed).saturating_sub(written_then);
        counted.saturating_add(since as usize) >= SINK_BACKLOG_LIMIT
    }

    pub async fn begin(&self) -> EpochGuard<'_> {
        EpochGuard {
            store: &self.store,
            budget: &self.budget,
            checkpoint_interval: self.checkpoint_interval,
            flows: self.dataflows.lock().await,
            hold_sources: self.sinks_backlogged(),
            sink_backlog: &self.sink_backlog,
            subscriptions: &self.subscriptions,
            health: &self.health,
            run_states: &self.run_states,
        }
    }

    /// Checkpoints once the interval has passed since the last one, if
    /// epochs were logged since (writes paused before their checkpoint).
    pub async fn checkpoint_if_due(&self) -> Result<()> {
        if self.health.is_read_only() {
            return Ok(());
        }
        let mut guard = self.begin().await;
        if !guard.flows.logged.is_empty() && guard.flows.last_checkpoint.elapsed() >= self.checkpoint_interval {
            guard.run_epoch(Vec::new(), None, true)?;
        }
        Ok(())
    }

    /// Runs an epoch with no changes if some view follows the passing time,
    /// so its temporal filters move on while no data arrives, or if a
    /// watermarked input has just passed its idle timeout.
    pub async fn tick_clock(&self) -> Result<()> {
        if self.health.is_read_only() {
            return Ok(());
        }
        let mut guard = self.begin().await;
        let now = now_nanos();
        // A view that only reads sources needs no tick while its readers
        // know nothing came (Kafka between arrivals): the pump reads them.
        let arrivals = &self.source_arrivals;
        let clocked = guard
            .flows
            .views
            .iter()
            .any(|f| f.clocked && !f.run.failed() && (f.needs_ticks || f.run.stats.may_have_records(arrivals)));
        // A watermarked input that has just become idle moves the views over it.
        let going_idle = guard
            .flows
            .views
            .iter()
            .flat_map(|f| f.sources.iter())
            .any(|source| source.watermark.as_ref().is_some_and(|def| !*def.idle.lock() && def.idle_at(now)));
        if clocked || going_idle {
            guard.commit(Vec::new())?;
        }
        Ok(())
    }

    /// Runs an epoch if some view reads a source not yet read to its end
    /// that may have records (a Kafka reader says whether any came since
    /// its last read; others are asked by reading); reports whether any
    /// rows were read (then more are likely due).
    pub async fn pump_sources(&self) -> Result<bool> {
        if self.sinks_backlogged() || self.health.is_read_only() {
            return Ok(false);
        }
        let mut guard = self.begin().await;
        let readers: Vec<Arc<watermark::ViewStats>> = guard
            .flows
            .views
            .iter()
            .filter(|f| f.run.stats.reads_sources() && !f.run.stats.sources_done() && !f.run.failed())
            .filter(|f| f.run.stats.may_have_records(&self.source_arrivals))
            .map(|f| f.run.stats.clone())
            .collect();
        if readers.is_empty() {
            return Ok(false);
        }
        let before: u64 = readers.iter().map(|s| s.source_rows()).sum();
        guard.commit(Vec::new())?;
        Ok(readers.iter().map(|s| s.source_rows()).sum::<u64>() > before)
    }

    /// Starts the task that feeds sources into the views reading them:
    /// epoch after epoch while rows come; while none are due, backing off
    /// (up to `idle`) or until a reader that is told of arrivals wakes it.
    pub fn spawn_source_pump(self: &Arc<Self>, idle: Duration) {
        let coordinator: Weak<Self> = Arc::downgrade(self);
        let arrivals = self.source_arrivals.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(idle);
            loop {
                let Some(strong) = coordinator.upgrade() else { break };
                let read = strong.pump_sources().await;
                drop(strong);
                tokio::select! {
                    () = backoff.after(read, "source epoch failed") => {}
                    () = arrivals.notified() => backoff.woken(),
                }
            }
        });
    }

    /// Starts the task that moves the clock of time-dependent views.
    pub fn spawn_clock(self: &Arc<Self>, period: Duration) {
        let coordinator: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(coordinator) = coordinator.upgrade() else { break };
                if let Err(error) = coordinator.tick_clock().await {
                    tracing::warn!(%error, "clock epoch failed");
                }
            }
        });
    }

    /// Starts the task that makes the store writable again after a failed
    /// write: while the server is read-only it asks the store, under the
    /// epoch lock, with a growing wait between attempts (see `store_health`).
    pub fn spawn_store_healer(self: &Arc<Self>) {
        let coordinator: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut attempts = 0u32;
            loop {
                let wait = if attempts == 0 { Duration::from_millis(100) } else { store_health::retry_delay(attempts) };
                tokio::time::sleep(wait).await;
                let Some(coordinator) = coordinator.upgrade() else { break };
                if !coordinator.health.is_read_only() {
                    attempts = 0;
                    continue;
                }
                let mut guard = coordinator.begin().await;
                // Blocking I/O (a probe file, reopening the store).
                let outcome = tokio::task::block_in_place(|| coordinator.store.recover_writes());
                match outcome {
                    Ok(true) => {
                        // Still under the epoch lock: no epoch runs before
                        // the views the failed write broke are rebuilt.
                        guard.adopt_epochs_written_despite_an_error();
                        coordinator.health.recovered();
                        coordinator.rebuild_views_broken_by_the_store(&mut guard);
                        attempts = 0;
                    }
                    Ok(false) => {
                        attempts += 1;
                        coordinator.health.attempt_failed(SqlError::new(
                            crate::error::sqlstate::OBJECT_IN_USE,
                            "waiting for readers of the failed store (open transactions, running queries) to finish",
                        ));
                    }
                    Err(error) => {
                        attempts += 1;
                        coordinator.health.attempt_failed(error);
                    }
                }
                drop(guard);
            }
        });
    }

    /// Rebuilds, in creation order, the views whose operators took in an
    /// epoch the store failed to write: fresh operators from their stream
    /// plan, backfilled from their inputs. One that cannot be rebuilt stays
    /// failed (and is rebuilt at the next start).
    fn rebuild_views_broken_by_the_store(&self, guard: &mut EpochGuard<'_>) {
        let broken: Vec<Arc<Relation>> = guard
            .flows
            .views
            .iter()
            .filter(|f| f.run.failure.lock().as_ref().is_some_and(store_health::is_store_failure))
            .map(|f| f.view.clone())
            .collect();
        for view in broken {
            if let Err(error) = guard.rebuild_failed_view(view.id) {
                tracing::warn!(view = %view.name, %error, "could not rebuild a view after the store recovered");
            }
        }
    }

    /// Starts the background task that checkpoints when writes pause (so
    /// the log a restart replays never spans much more than the interval).
    pub fn spawn_checkpointer(self: &Arc<Self>) {
        if self.checkpoint_interval.is_zero() {
            return;
        }
        let coordinator: Weak<Self> = Arc::downgrade(self);
        let interval = self.checkpoint_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(coordinator) = coordinator.upgrade() else { break };
                if let Err(error) = coordinator.checkpoint_if_due().await {
                    tracing::warn!(%error, "checkpoint failed");
                }
            }
        });
    }
}

impl EpochGuard<'_> {
    /// The latest committed state (the writer's view of the world).
    pub fn snapshot(&self) -> Arc<dyn Snapshot> {
        self.store.snapshot()
    }

    fn state_context(&self, snapshot: &Arc<dyn Snapshot>, fresh: bool, checkpoint: bool) -> StateContext {
        StateContext { snapshot: snapshot.clone(), budget: self.budget.clone(), fresh, checkpoint }
    }

    /// Applies table changes, maintains every dependent view, and commits:
    /// table rows, view rows, and the operators' state changes or the epoch
    /// log's entry, in one batch.
    pub fn commit(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>) -> Result<()> {
        self.commit_with(changes, WriteBatch::default())
    }

    /// [`commit`](Self::commit), writing `extra` in the same atomic batch
    /// (a connector-fed table's read position with the rows it read).
    pub fn commit_with(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>, extra: WriteBatch) -> Result<()> {
        // Refused before any dataflow takes the changes in.
        self.health.check_writable()?;
        let logged_bytes: usize = changes.iter().map(|(_, c)| c.rows.get_array_memory_size()).sum();
        let checkpoint = self.checkpoint_interval.is_zero()
            || self.flows.last_checkpoint.elapsed() >= self.checkpoint_interval
            || self.budget.exceeded()
            || logged_bytes > LARGEST_LOGGED_EPOCH
            // A view whose source reads cannot be replayed commits its
            // read positions with its rows, every epoch.
            || self.flows.views.iter().any(|f| f.run.stats.reads_unreplayable())
            // An epoch that holds sources back is not logged: a replay
            // would read what it did not.
            || self.hold_sources;
        self.run_epoch_with(changes, None, checkpoint, extra)
    }

    /// Runs one epoch through the dataflows. `replayed`: the watermarks of
    /// an epoch replayed from the log (its table and view rows are already
    /// written, and nothing is written unless it checkpoints); `None` for a
    /// new epoch, whose rows are written.
    fn run_epoch(
        &mut self,
        changes: Vec<(Arc<Relation>, ChangeBatch)>,
        replayed: Option<(TableWatermarks, i64)>,
        checkpoint: bool,
    ) -> Result<()> {
        self.run_epoch_with(changes, replayed, checkpoint, WriteBatch::default())
    }

    fn run_epoch_with(
        &mut self,
        changes: Vec<(Arc<Relation>, ChangeBatch)>,
        replayed: Option<(TableWatermarks, i64)>,
        checkpoint: bool,
        extra: WriteBatch,
    ) -> Result<()> {
        let live = replayed.is_none();
        // An epoch that holds sources back is never logged (see commit_with).
        let checkpoint = checkpoint || (live && self.hold_sources);
        let snapshot = self.store.snapshot();
        let state = self.state_context(&snapshot, false, checkpoint);
        let mut batch = extra;
        let mut input = EpochInput::new(state.clone());
        let (watermarks, time) = match replayed {
            Some((logged, time)) => (logged, time),
            None => {
                let time = now_nanos().max(self.flows.last_time);
                (TableWatermarks::live(&self.flows.views, &changes, time)?, time)
            }
        };
        input.now_nanos = time;
        input.hold_sources = live && self.hold_sources;
        watermarks.feed(&mut input);
        let mut log = Vec::new();
        let header = epoch_log::Header { time_nanos: time, watermarks: watermarks.to_log() };
        // A view that follows the clock needs every epoch's time replayed.
        if live && !checkpoint && self.flows.views.iter().any(|f| f.clocked) {
            epoch_log::append_header(&mut log, &header);
        }
        // Changes of subscribed relations, published once the epoch is written.
        let mut published: Vec<(RelationId, ChangeBatch)> = Vec::new();
        for (relation, change) in changes {
            if live && !change.is_empty() && self.subscriptions.wanted(relation.id) {
                published.push((relation.id, change.clone()));
            }
            if live {
                storage::apply_change(&relation, snapshot.as_ref(), &change, &mut batch)?;
                let feeds_a_view = self.flows.views.iter().any(|f| f.inputs.contains(&relation.id));
                if !checkpoint && feeds_a_view && !change.is_empty() {
                    if log.is_empty() {
                        epoch_log::append_header(&mut log, &header);
                    }
                    epoch_log::append(&mut log, relation.id, &change)?;
                }
            }
            input.insert(relation.id, change)?;
        }
        if live {
            watermarks.stage(&mut batch);
        }
        let mut touched: Vec<Arc<RunState>> = Vec::new();
        let mut aborted = self.step_views(&mut input, &snapshot, &mut batch, live, &mut touched, &mut published).err();
        if aborted.is_none() && checkpoint {
            aborted = self.stage_checkpoint(&state, &mut batch, &mut touched).err();
        }
        if !live && !checkpoint {
            // Replayed: the operators have caught up in memory; any failure
            // is written by the checkpoint that ends the replay.
            return aborted.map_or(Ok(()), Err);
        }
        let epoch = self.flows.next_epoch;
        let logs = !log.is_empty();
        if logs {
            batch.put(log_key(epoch).to_vec(), log);
        }
        self.write_epoch(batch, aborted, checkpoint, touched)?;
        self.subscriptions.publish(epoch, published);
        self.flows.last_time = time;
        if live {
            watermarks.commit();
        }
        if logs && !checkpoint {
            self.flows.logged.push(epoch);
        }
        Ok(())
    }

    /// Steps every view the epoch's changes reach, in creation order, adding
    /// each view's changes to `input` for the views that read it. Stages the
    /// view rows (if `write_rows`) and failure markers in `batch`; between
    /// checkpoints lets each stepped dataflow's caches shrink. `stepped`
    /// collects the views whose operators took the epoch in.
    fn step_views(
        &mut self,
        input: &mut EpochInput,
        snapshot: &Arc<dyn Snapshot>,
        batch: &mut WriteBatch,
        write_rows: bool,
        stepped: &mut Vec<Arc<RunState>>,
        published: &mut Vec<(RelationId, ChangeBatch)>,
    ) -> Result<()> {
        let state = input.state.clone();
        let epoch = self.flows.next_epoch;
        let mut failed: BTreeSet<RelationId> = BTreeSet::new();
        for flow in self.flows.views.iter_mut() {
            if flow.run.failure.lock().is_some() {
                failed.insert(flow.view.id);
                continue;
            }
            if let Some(broken) = flow.inputs.iter().find(|r| failed.contains(r)) {
                let error = SqlError::new(
                    crate::error::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("it reads relation {broken}, which failed"),
                );
                batch.put(failure_key(flow.view.id).to_vec(), error.message.clone().into_bytes());
                *flow.run.failure.lock() = Some(error);
                failed.insert(flow.view.id);
                continue;
            }
            if !flow.clocked && !flow.inputs.iter().any(|r| input.touches(*r) || input.advances(*r)) {
                if let Some(steady) = flow.steady_watermarks() {
                    input.set_watermarks(flow.view.id, steady);
                }
                continue;
            }
            stepped.push(flow.run.clone());
            flow.unflushed = true;
            match flow.root.step(input).and_then(|delta| Ok((flow.root.watermarks(input)?, delta))) {
                Ok((watermarks, delta)) => {
                    if write_rows {
                        write_output(&flow.view, snapshot.as_ref(), &delta, epoch, batch)?;
                        if flow.view.kind == crate::catalog::RelationKind::Sink && !delta.is_empty() {
                            self.sink_backlog.written.fetch_add(1, Ordering::Relaxed);
                        }
                        if !delta.is_empty() && self.subscriptions.wanted(flow.view.id) {
                            published.push((flow.view.id, delta.clone()));
                        }
                    }
                    input.insert(flow.view.id, delta)?;
                    if watermarks.iter().any(Option::is_some) {
                        input.set_watermarks(flow.view.id, watermarks.clone());
                    }
                    *flow.run.current_watermarks.lock() = watermarks;
                    if !state.checkpoint {
                        flow.root.flush(&state, batch)?;
                    }
                }
                Err(error) => {
                    tracing::warn!(view = %flow.view.name, %error, "materialized view failed");
                    // Stored, so that a restart does not resume the view
                    // from state that missed this epoch (it is rebuilt).
                    batch.put(failure_key(flow.view.id).to_vec(), error.message.clone().into_bytes());
                    *flow.run.failure.lock() = Some(error);
                    failed.insert(flow.view.id);
                }
            }
        }
        Ok(())
    }

    /// Stages a checkpoint in `batch`: every healthy dataflow's dirty state,
    /// a failure marker for every failed view (a view failed by a write
    /// error has none yet, and its stored state is older than this
    /// checkpoint: a restart must rebuild it), and the log's deletion.
    /// `flushed` collects the views whose dirty state is now in `batch`.
    fn stage_checkpoint(
        &mut self,
        state: &StateContext,
        batch: &mut WriteBatch,
        flushed: &mut Vec<Arc<RunState>>,
    ) -> Result<()> {
        for flow in self.flows.views.iter_mut() {
            if let Some(error) = flow.run.failure.lock().as_ref() {
                batch.put(failure_key(flow.view.id).to_vec(), error.message.clone().into_bytes());
                continue;
            }
            if !flow.unflushed {
                continue;
            }
            flushed.push(flow.run.clone());
            flow.root.flush(state, batch)?;
            stage_stats(flow, batch);
            flow.unflushed = false;
        }
        for epoch in &self.flows.logged {
            batch.delete(log_key(*epoch).to_vec());
        }
        Ok(())
    }

    /// Writes `batch` as the next epoch (unless staging it failed), and
    /// keeps the books: after a checkpoint the log is empty; if the write
    /// fails, the views in `touched` have taken in state that is not stored
    /// (their operators are ahead of their rows, or believe their dirty
    /// state written): they are failed rather than serve wrong results.
    fn write_epoch(
        &mut self,
        batch: WriteBatch,
        aborted: Option<SqlError>,
        checkpoint: bool,
        touched: Vec<Arc<RunState>>,
    ) -> Result<()> {
        let written = match aborted {
            Some(error) => Err(error),
            None => self.write(batch),
        };
        match &written {
            Ok(()) if checkpoint => {
                self.flows.logged.clear();
                self.flows.last_checkpoint = Instant::now();
            }
            Ok(()) => {}
            Err(error) => {
                for run in touched {
                    *run.failure.lock() = Some(error.clone());
                }
            }
        }
        written
    }

    /// Backfills a new view from the current contents of its inputs and adds
    /// its dataflow, so it follows every later epoch with no gap. The view's
    /// rows, its operators' state and its catalog entry are written in one
    /// epoch, which is a checkpoint (the log never spans a view's creation:
    /// a replay must not feed it changes its backfill already saw).
    pub fn create_view(&mut self, flow: ViewDataflow, catalog_entry: Vec<u8>) -> Result<()> {
        self.health.check_writable()?;
        let mut flow = flow;
        let snapshot = self.store.snapshot();
        let mut batch = WriteBatch::default();
        self.build_view(&mut flow, &snapshot, &mut batch)?;
        batch.put(catalog_key(flow.view.id).to_vec(), catalog_entry);
        let state = self.state_context(&snapshot, false, true);
        let mut flushed = Vec::new();
        let aborted = self.stage_checkpoint(&state, &mut batch, &mut flushed).err();
        self.write_epoch(batch, aborted, true, flushed)?;
        self.flows.views.push(flow);
        Ok(())
    }

    /// Runs a view's dataflow over its inputs' rows from scratch, staging its
    /// rows and operator state in `batch`. The view must have no stored rows
    /// or state, or `batch` must already delete them: the new ones are
    /// written as they are, not merged with old ones, and the operators do
    /// not look anything up (ids of dropped views are cleared with them).
    fn build_view(&self, flow: &mut ViewDataflow, snapshot: &Arc<dyn Snapshot>, batch: &mut WriteBatch) -> Result<()> {
        let state = self.state_context(snapshot, true, true);
        flow.run.stats.set_late_rows(0);
        let (delta, watermarks) = backfill(flow, &state, self.run_states)?;
        write_output(&flow.view, &crate::state::EmptySnapshot, &delta, self.flows.next_epoch, batch)?;
        *flow.run.current_watermarks.lock() = watermarks;
        flow.root.flush(&state, batch)?;
        stage_stats(flow, batch);
        Ok(())
    }

    /// At startup: brings back a stored view's dataflow. Its operators read
    /// their state from the store as they need it, so nothing is recomputed.
    /// A view stored as failed stays failed until [`Self::finish_recovery`]
    /// rebuilds it from its inputs.
    pub fn restore_view(&mut self, flow: ViewDataflow) {
        let snapshot = self.store.snapshot();
        if let Some(stats) = snapshot.get(&view_stats_key(flow.view.id)) {
            let late = stats.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
            flow.run.stats.set_late_rows(late);
        }
        if let Some(message) = snapshot.get(&failure_key(flow.view.id)) {
            let message = String::from_utf8_lossy(&message).into_owned();
            *flow.run.failure.lock() =
                Some(SqlError::new(crate::error::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE, message));
        }
        self.flows.views.push(flow);
    }

    /// At startup, once every view is restored: feeds the epochs logged
    /// since the last checkpoint through the dataflows (their rows are
    /// stored; the operators' state is not), checkpoints, then rebuilds the
    /// views stored as failed. Returns how many epochs were replayed.
    /// `resolve` finds a relation by id.
    pub fn finish_recovery(&mut self, resolve: &dyn Fn(RelationId) -> Option<Arc<Relation>>) -> Result<usize> {
        let snapshot = self.store.snapshot();
        let mut epochs: Vec<Epoch> = Vec::new();
        snapshot.scan_prefix(LOG_PREFIX, &mut |key, _| {
            if let Some(epoch) = key.get(1..9).and_then(|e| e.try_into().ok()).map(u64::from_be_bytes) {
                epochs.push(epoch);
            }
        });
        let mut last_watermarks: Vec<LoggedWatermark> = Vec::new();
        let mut last_time = 0i64;
        for &epoch in &epochs {
            let Some(entry) = snapshot.get(&log_key(epoch)) else { continue };
            let logged = epoch_log::decode(&entry, resolve)?;
            self.flows.logged.push(epoch);
            // Checkpoint on the way if the replayed state outgrows memory.
            let checkpoint = self.budget.exceeded();
            let watermarks = TableWatermarks::logged(&logged.header.watermarks, resolve)?;
            last_watermarks = logged.header.watermarks;
            last_time = logged.header.time_nanos.max(last_time);
            self.run_epoch(logged.changes, Some((watermarks, last_time)), checkpoint)?;
        }
        if !epochs.is_empty() {
            // The closing checkpoint sees the last epoch's watermarks, steady,
            // at the last epoch's time.
            let steady: Vec<LoggedWatermark> = last_watermarks
                .into_iter()
                .map(|w| LoggedWatermark { before: w.after, was_idle: w.idle, ..w })
                .collect();
            self.run_epoch(Vec::new(), Some((TableWatermarks::logged(&steady, resolve)?, last_time)), true)?;
        }
        // In creation order: a view is rebuilt after the views it reads.
        for position in 0..self.flows.views.len() {
            if self.flows.views.get(position).is_some_and(|f| f.run.failure.lock().is_some()) {
                self.rebuild_view(position);
            }
        }
        Ok(epochs.len())
    }

    /// Rebuilds a view stored as failed: its rows and state are replaced by
    /// a fresh computation over its inputs (it stays failed if that fails).
    fn rebuild_view(&mut self, position: usize) {
        let mut flow = self.flows.views.remove(position);
        let id = flow.view.id;
        let snapshot = self.store.snapshot();
        let mut batch = WriteBatch::default();
        snapshot.scan_prefix(&relation_prefix(id), &mut |key, _| batch.delete(key.to_vec()));
        snapshot.scan_prefix(&view_state_prefix(id), &mut |key, _| batch.delete(key.to_vec()));
        batch.delete(failure_key(id).to_vec());
        let rebuilt = self.build_view(&mut flow, &snapshot, &mut batch).and_then(|()| self.write(batch));
        match rebuilt {
            Ok(()) => {
                *flow.run.failure.lock() = None;
                tracing::info!(view = %flow.view.name, "failed materialized view rebuilt");
            }
            Err(error) => {
                tracing::warn!(view = %flow.view.name, %error, "materialized view failed again while being rebuilt");
                *flow.run.failure.lock() = Some(error);
            }
        }
        self.flows.views.insert(position, flow);
    }

    /// After the store was reopened: an epoch whose write reported an
    /// error may still have reached the disk (a failed sync of a complete
    /// WAL record), and reopening replayed it. Its number is taken as used
    /// and its epoch-log entry, if any, is deleted by the next checkpoint
    /// (the views it fed were failed by the error and are rebuilt from
    /// their inputs, which hold its rows).
    fn adopt_epochs_written_despite_an_error(&mut self) {
        let committed = self.store.committed_epoch();
        if committed < self.flows.next_epoch {
            return;
        }
        tracing::warn!(epoch = committed, "an epoch reported as failed was found written after reopening the store");
        let snapshot = self.store.snapshot();
        for epoch in self.flows.next_epoch..=committed {
            if snapshot.get(&log_key(epoch)).is_some() {
                self.flows.logged.push(epoch);
            }
        }
        self.flows.next_epoch = committed + 1;
    }

    /// Gives a failed view fresh operators, built from its plan, and
    /// rebuilds its rows from its inputs (see [`Self::rebuild_view`]).
    fn rebuild_failed_view(&mut self, id: RelationId) -> Result<()> {
        let position = self
            .flows
            .views
            .iter()
            .position(|f| f.view.id == id)
            .ok_or_else(|| SqlError::internal(format!("view {id} has no dataflow")))?;
        if let Some(flow) = self.flows.views.get_mut(position) {
            flow.run.stats.forget_readers();
            flow.root = (flow.build)()?;
            flow.unflushed = false;
        }
        self.rebuild_view(position);
        match self.flows.views.get(position).and_then(|f| f.run.failure.lock().clone()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Records a relation's defining statement (tables and plain views; a
    /// materialized view's is written with its rows by `create_view`).
    pub fn write_catalog_entry(&mut self, relation: RelationId, entry: Vec<u8>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(catalog_key(relation).to_vec(), entry);
        self.write(batch)
    }

    /// Removes a relation's dataflow (if any), its rows and its state. (Log
    /// entries naming a dropped table are skipped by a replay.)
    pub fn drop_relation(&mut self, relation: &Relation) -> Result<()> {
        self.flows.views.retain(|f| f.view.id != relation.id);
        self.subscriptions.remove_relation(relation.id);
        self.run_states.remove(relation.id);
        let snapshot = self.store.snapshot();
        let mut batch = WriteBatch::default();
        // Every key space the relation has keys in (see `state::keys`).
        for (scope, key) in crate::state::keys::relation_keys(relation.id) {
            match scope {
                Scope::RelationKey => batch.delete(key.to_vec()),
                Scope::RelationPrefix => snapshot.scan_prefix(&key, &mut |key, _| batch.delete(key.to_vec())),
                Scope::Global => {}
            }
        }
        self.write(batch)
    }

    /// Writes `batch` as an epoch of its own, running no dataflow.
    pub fn write_batch(&mut self, batch: WriteBatch) -> Result<()> {
        self.write(batch)
    }

    /// Deletes a sink's delivered outbox entries in an epoch of its own,
    /// without waiting for the disk: a machine crash that loses it brings
    /// the entries back, and the sink skips what its target already holds
    /// (one disk flush less per delivery round).
    pub fn forget_delivered(&mut self, batch: WriteBatch) -> Result<()> {
        self.write_to_store(batch, false)
    }

    /// `Ok` while the store takes writes, else the refusal to report (a
    /// statement asks before it changes anything in memory).
    pub fn check_writable(&self) -> Result<()> {
        self.health.check_writable()
    }

    fn write(&mut self, batch: WriteBatch) -> Result<()> {
        self.write_to_store(batch, true)
    }

    /// Writes `batch` as the next epoch; `synced`: waits for the disk (as
    /// the store was opened to: `--sync-commits`).
    fn write_to_store(&mut self, batch: WriteBatch, synced: bool) -> Result<()> {
        self.health.check_writable()?;
        // Every epoch goes to the store, even one with no changes, so its
        // number is the store's committed epoch.
        let epoch = self.flows.next_epoch;
        let written = if synced { self.store.commit(epoch, batch) } else { self.store.commit_unsynced(epoch, batch) };
        if let Err(error) = written {
            self.health.write_failed(&error);
            return Err(error);
        }
        self.flows.next_epoch += 1;
        Ok(())
    }
}

/// Stages a view's output of an epoch: a materialized view's rows change;
/// a sink's changes go to its outbox under the epoch's number, for the
/// delivery task (a sink that discards them, `blackhole`, has none).
fn write_output(
    view: &Relation,
    snapshot: &dyn Snapshot,
    delta: &ChangeBatch,
    epoch: Epoch,
    batch: &mut WriteBatch,
) -> Result<()> {
    if view.kind != crate::catalog::RelationKind::Sink {
        return match view.layout {
            crate::catalog::RowLayout::Rows => storage::apply_change(view, snapshot, delta, batch),
            crate::catalog::RowLayout::Blocks => storage::append_block(view, delta, epoch, batch),
        };
    }
    if !delta.is_empty() && !view.sink.as_ref().is_some_and(|writer| writer.discards()) {
        let mut entry = Vec::new();
        epoch_log::append(&mut entry, view.id, delta)?;
        batch.put(crate::state::outbox_key(view.id, epoch), entry);
    }
    Ok(())
}

/// Pacing of a task that reads while there is something to read: at once
/// after a round that read, then waits doubling up to `idle` while rounds
/// read nothing, `idle` after a failure.
pub struct Backoff {
    wait: Duration,
    idle: Duration,
}

impl Backoff {
    pub fn new(idle: Duration) -> Self {
        Self { wait: Duration::from_millis(1), idle }
    }

    /// Woken before the wait ran out (records came): the next wait
    /// starts short again.
    pub fn woken(&mut self) {
        self.wait = Duration::from_millis(1);
    }

    /// Waits as a round's outcome says (`Ok(true)`: it read something).
    pub async fn after(&mut self, round: Result<bool>, failure: &str) {
        match round {
            Ok(true) => {
                self.wait = Duration::from_millis(1);
                tokio::task::yield_now().await;
            }
            Ok(false) => {
                tokio::time::sleep(self.wait).await;
                self.wait = (self.wait * 2).min(self.idle);
            }
            Err(error) => {
                // A read-only server's refusals are logged once, when it turns.
                if !store_health::is_refusal(&error) {
                    tracing::warn!(%error, "{failure}");
                }
                tokio::time::sleep(self.idle).await;
            }
        }
    }
}

/// A view's event-time counters as stored at checkpoints.
fn stage_stats(flow: &ViewDataflow, batch: &mut WriteBatch) {
    batch.put(view_stats_key(flow.view.id).to_vec(), flow.run.stats.late_rows().to_be_bytes().to_vec());
}

/// Runs a view's dataflow over the whole current contents of its inputs,
/// at their current watermarks; returns its rows and its watermarks.
fn backfill(flow: &mut ViewDataflow, state: &StateContext, runs: &RunStates) -> Result<(ChangeBatch, Watermarks)> {
    let mut input = EpochInput::new(state.clone());
    input.now_nanos = now_nanos();
    for source in &flow.sources {
        let source_run = runs.of(source.id);
        source_run.check_healthy(source)?;
        let rows = storage::scan_all(source, state.snapshot.as_ref())?;
        input.insert(source.id, ChangeBatch::uniform(rows, 1))?;
        let watermarks = match &source.watermark {
            Some(def) => {
                let mut columns = watermark::none(source.schema.fields().len());
                // The rows are all there at once: none is late, and the
                // windows the current watermark has passed close.
                if let Some(column) = columns.get_mut(def.column) {
                    *column = Some(Watermark::new(None, def.value.lock().clone()));
                }
                Some(columns)
            }
            None => {
                let current = source_run.current_watermarks.lock();
                current.iter().any(Option::is_some).then(|| {
                    current
                        .iter()
                        .map(|w| w.as_ref().map(|w| Watermark { before: None, was_idle: false, ..w.clone() }))
                        .collect()
                })
            }
        };
        if let Some(watermarks) = watermarks {
            input.set_watermarks(source.id, watermarks);
        }
    }
    let delta = flow.root.step(&input)?;
    let watermarks = flow.root.watermarks(&input)?;
    Ok((delta, watermarks))
}
