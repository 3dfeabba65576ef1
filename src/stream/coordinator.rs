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
//! A view whose dataflow fails (say, division by zero on a new row) is marked
//! failed; reads of it report the error; other views go on.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use crate::catalog::{Relation, storage};
use crate::error::{Result, SqlError};
use crate::state::{
    Epoch, Snapshot, StateStore, WriteBatch, catalog_key, failure_key, relation_prefix, view_state_prefix,
};
use crate::stream::state_table::{StateBudget, StateContext};
use crate::stream::{ChangeBatch, EpochInput, Operator, RelationId};

/// A materialized view's dataflow.
pub struct ViewDataflow {
    pub view: Arc<Relation>,
    pub root: Box<dyn Operator>,
    pub inputs: BTreeSet<RelationId>,
}

pub struct Coordinator {
    store: Arc<dyn StateStore>,
    /// What the operators' state caches may hold together.
    budget: Arc<StateBudget>,
    dataflows: Mutex<Dataflows>,
}

struct Dataflows {
    next_epoch: Epoch,
    views: Vec<ViewDataflow>,
}

/// Exclusive right to write the next epoch.
pub struct EpochGuard<'a> {
    store: &'a Arc<dyn StateStore>,
    budget: &'a Arc<StateBudget>,
    flows: MutexGuard<'a, Dataflows>,
}

impl Coordinator {
    pub fn new(store: Arc<dyn StateStore>, budget: Arc<StateBudget>) -> Self {
        let next_epoch = store.committed_epoch() + 1;
        Self { store, budget, dataflows: Mutex::new(Dataflows { next_epoch, views: Vec::new() }) }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub async fn begin(&self) -> EpochGuard<'_> {
        EpochGuard { store: &self.store, budget: &self.budget, flows: self.dataflows.lock().await }
    }
}

impl EpochGuard<'_> {
    /// The latest committed state (the writer's view of the world).
    pub fn snapshot(&self) -> Arc<dyn Snapshot> {
        self.store.snapshot()
    }

    fn state_context(&self, snapshot: &Arc<dyn Snapshot>, fresh: bool) -> StateContext {
        StateContext { snapshot: snapshot.clone(), budget: self.budget.clone(), fresh }
    }

    /// Applies table changes, maintains every dependent view, and commits:
    /// table rows, view rows and the operators' state changes in one batch.
    pub fn commit(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>) -> Result<()> {
        let snapshot = self.store.snapshot();
        let state = self.state_context(&snapshot, false);
        let mut batch = WriteBatch::default();
        let mut input = EpochInput::new(state.clone());
        for (relation, change) in changes {
            storage::apply_change(&relation, snapshot.as_ref(), &change, &mut batch)?;
            input.insert(relation.id, change)?;
        }
        let mut failed: BTreeSet<RelationId> = BTreeSet::new();
        let mut stepped: Vec<Arc<Relation>> = Vec::new();
        let mut aborted: Option<SqlError> = None;
        for flow in self.flows.views.iter_mut() {
            if flow.view.failure.lock().is_some() {
                failed.insert(flow.view.id);
                continue;
            }
            if let Some(broken) = flow.inputs.iter().find(|r| failed.contains(r)) {
                let error = SqlError::new(
                    crate::error::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("it reads relation {broken}, which failed"),
                );
                batch.put(failure_key(flow.view.id).to_vec(), error.message.clone().into_bytes());
                *flow.view.failure.lock() = Some(error);
                failed.insert(flow.view.id);
                continue;
            }
            if !flow.inputs.iter().any(|r| input.touches(*r)) {
                continue;
            }
            stepped.push(flow.view.clone());
            match flow.root.step(&input) {
                Ok(delta) => {
                    let staged = storage::apply_change(&flow.view, snapshot.as_ref(), &delta, &mut batch)
                        .and_then(|()| input.insert(flow.view.id, delta))
                        .and_then(|()| flow.root.flush(&state, &mut batch));
                    if let Err(error) = staged {
                        aborted = Some(error);
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(view = %flow.view.name, %error, "materialized view failed");
                    // Stored, so that a restart does not resume the view
                    // from state that missed this epoch (it is rebuilt).
                    batch.put(failure_key(flow.view.id).to_vec(), error.message.clone().into_bytes());
                    *flow.view.failure.lock() = Some(error);
                    failed.insert(flow.view.id);
                }
            }
        }
        let written = match aborted {
            Some(error) => Err(error),
            None => self.write(batch),
        };
        if let Err(error) = &written {
            // The views' operators have taken this epoch in, but it was not
            // stored: their state is ahead of their rows. Refuse to serve
            // them rather than serve wrong results.
            for view in stepped {
                *view.failure.lock() = Some(error.clone());
            }
        }
        written
    }

    /// Backfills a new view from the current contents of its inputs and adds
    /// its dataflow, so it follows every later epoch with no gap. The view's
    /// rows, its operators' state and its catalog entry are written in one
    /// epoch.
    pub fn create_view(&mut self, flow: ViewDataflow, sources: &[Arc<Relation>], catalog_entry: Vec<u8>) -> Result<()> {
        let mut flow = flow;
        let snapshot = self.store.snapshot();
        let mut batch = WriteBatch::default();
        self.build_view(&mut flow, sources, &snapshot, &mut batch)?;
        batch.put(catalog_key(flow.view.id).to_vec(), catalog_entry);
        self.write(batch)?;
        self.flows.views.push(flow);
        Ok(())
    }

    /// Runs a view's dataflow over its inputs' rows from scratch, staging its
    /// rows and operator state in `batch`. The view must have no stored rows
    /// or state, or `batch` must already delete them: the new ones are
    /// written as they are, not merged with old ones, and the operators do
    /// not look anything up (ids of dropped views are cleared with them).
    fn build_view(
        &self,
        flow: &mut ViewDataflow,
        sources: &[Arc<Relation>],
        snapshot: &Arc<dyn Snapshot>,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let state = self.state_context(snapshot, true);
        let delta = backfill(flow, sources, &state)?;
        storage::apply_change(&flow.view, &crate::state::EmptySnapshot, &delta, batch)?;
        flow.root.flush(&state, batch)
    }

    /// At startup: brings back a stored view's dataflow. Its operators read
    /// their state from the store as they need it, so nothing is recomputed;
    /// only a view stored as failed is rebuilt from its inputs (and stays
    /// failed if that fails again).
    pub fn restore_view(&mut self, flow: ViewDataflow, sources: &[Arc<Relation>]) -> Result<()> {
        let mut flow = flow;
        let snapshot = self.store.snapshot();
        if snapshot.get(&failure_key(flow.view.id)).is_some() {
            let mut batch = WriteBatch::default();
            snapshot.scan_prefix(&relation_prefix(flow.view.id), &mut |key, _| batch.delete(key.to_vec()));
            snapshot.scan_prefix(&view_state_prefix(flow.view.id), &mut |key, _| batch.delete(key.to_vec()));
            batch.delete(failure_key(flow.view.id).to_vec());
            let rebuilt = self.build_view(&mut flow, sources, &snapshot, &mut batch).and_then(|()| self.write(batch));
            if let Err(error) = rebuilt {
                tracing::warn!(view = %flow.view.name, %error, "materialized view failed again while being rebuilt");
                *flow.view.failure.lock() = Some(error);
            } else {
                tracing::info!(view = %flow.view.name, "failed materialized view rebuilt");
            }
        }
        self.flows.views.push(flow);
        Ok(())
    }

    /// Records a relation's defining statement (tables and plain views; a
    /// materialized view's is written with its rows by `create_view`).
    pub fn write_catalog_entry(&mut self, relation: RelationId, entry: Vec<u8>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(catalog_key(relation).to_vec(), entry);
        self.write(batch)
    }

    /// Removes a relation's dataflow (if any), its rows and its state.
    pub fn drop_relation(&mut self, relation: &Relation) -> Result<()> {
        self.flows.views.retain(|f| f.view.id != relation.id);
        let snapshot = self.store.snapshot();
        let mut batch = WriteBatch::default();
        snapshot.scan_prefix(&relation_prefix(relation.id), &mut |key, _| batch.delete(key.to_vec()));
        snapshot.scan_prefix(&view_state_prefix(relation.id), &mut |key, _| batch.delete(key.to_vec()));
        batch.delete(catalog_key(relation.id).to_vec());
        batch.delete(failure_key(relation.id).to_vec());
        self.write(batch)
    }

    fn write(&mut self, batch: WriteBatch) -> Result<()> {
        // Every epoch goes to the store, even one with no changes, so its
        // number is the store's committed epoch.
        let epoch = self.flows.next_epoch;
        self.store.commit(epoch, batch)?;
        self.flows.next_epoch += 1;
        Ok(())
    }
}

/// Runs a view's dataflow over the whole current contents of its inputs.
fn backfill(flow: &mut ViewDataflow, sources: &[Arc<Relation>], state: &StateContext) -> Result<ChangeBatch> {
    let mut input = EpochInput::new(state.clone());
    for source in sources {
        source.check_healthy()?;
        let rows = storage::scan_all(source, state.snapshot.as_ref())?;
        input.insert(source.id, ChangeBatch::uniform(rows, 1))?;
    }
    flow.root.step(&input)
}
