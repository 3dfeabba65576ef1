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
use crate::state::{Epoch, Snapshot, StateStore, WriteBatch, catalog_key, relation_prefix};
use crate::stream::{ChangeBatch, EpochInput, Operator, RelationId};

/// A materialized view's dataflow.
pub struct ViewDataflow {
    pub view: Arc<Relation>,
    pub root: Box<dyn Operator>,
    pub inputs: BTreeSet<RelationId>,
}

pub struct Coordinator {
    store: Arc<dyn StateStore>,
    dataflows: Mutex<Dataflows>,
}

struct Dataflows {
    next_epoch: Epoch,
    views: Vec<ViewDataflow>,
}

/// Exclusive right to write the next epoch.
pub struct EpochGuard<'a> {
    store: &'a Arc<dyn StateStore>,
    flows: MutexGuard<'a, Dataflows>,
}

impl Coordinator {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        let next_epoch = store.committed_epoch() + 1;
        Self { store, dataflows: Mutex::new(Dataflows { next_epoch, views: Vec::new() }) }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub async fn begin(&self) -> EpochGuard<'_> {
        EpochGuard { store: &self.store, flows: self.dataflows.lock().await }
    }
}

impl EpochGuard<'_> {
    /// The latest committed state (the writer's view of the world).
    pub fn snapshot(&self) -> Arc<dyn Snapshot> {
        self.store.snapshot()
    }

    /// Applies table changes, maintains every dependent view, and commits.
    pub fn commit(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>) -> Result<()> {
        let snapshot = self.store.snapshot();
        let mut batch = WriteBatch::default();
        let mut input = EpochInput::default();
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
                        .and_then(|()| input.insert(flow.view.id, delta));
                    if let Err(error) = staged {
                        aborted = Some(error);
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(view = %flow.view.name, %error, "materialized view failed");
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
    /// rows and its catalog entry are written in one epoch.
    pub fn create_view(&mut self, flow: ViewDataflow, sources: &[Arc<Relation>], catalog_entry: Vec<u8>) -> Result<()> {
        let mut flow = flow;
        let snapshot = self.store.snapshot();
        let delta = backfill(&mut flow, sources, snapshot.as_ref())?;
        let mut batch = WriteBatch::default();
        storage::apply_change(&flow.view, snapshot.as_ref(), &delta, &mut batch)?;
        batch.put(catalog_key(flow.view.id).to_vec(), catalog_entry);
        self.write(batch)?;
        self.flows.views.push(flow);
        Ok(())
    }

    /// At startup: rebuilds a stored view's operator state from the current
    /// contents of its inputs. The view's rows are already stored, at the
    /// same committed epoch as its inputs, so nothing is written.
    pub fn restore_view(&mut self, flow: ViewDataflow, sources: &[Arc<Relation>]) -> Result<()> {
        let mut flow = flow;
        let snapshot = self.store.snapshot();
        if let Err(error) = backfill(&mut flow, sources, snapshot.as_ref()) {
            tracing::warn!(view = %flow.view.name, %error, "materialized view failed while being restored");
            *flow.view.failure.lock() = Some(error);
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

    /// Removes a relation's dataflow (if any) and all its rows.
    pub fn drop_relation(&mut self, relation: &Relation) -> Result<()> {
        self.flows.views.retain(|f| f.view.id != relation.id);
        let snapshot = self.store.snapshot();
        let mut batch = WriteBatch::default();
        snapshot.scan_prefix(&relation_prefix(relation.id), &mut |key, _| batch.delete(key.to_vec()));
        batch.delete(catalog_key(relation.id).to_vec());
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
fn backfill(flow: &mut ViewDataflow, sources: &[Arc<Relation>], snapshot: &dyn Snapshot) -> Result<ChangeBatch> {
    let mut input = EpochInput::default();
    for source in sources {
        source.check_healthy()?;
        let rows = storage::scan_all(source, snapshot)?;
        input.insert(source.id, ChangeBatch::uniform(rows, 1))?;
    }
    flow.root.step(&input)
}
