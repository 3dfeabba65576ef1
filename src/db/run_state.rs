//! What changes about a relation while the server runs, kept apart from its
//! definition (`catalog::Relation`, which only DDL changes): whether its
//! dataflow or delivery failed, what its operators and readers counted, and
//! its columns' watermarks as of the last epoch that stepped it.
//!
//! The coordinator owns one [`RunState`] per relation that has any, made
//! on first use and dropped with the relation; the dataflow, feeds, sink
//! delivery and the `freshet_catalog` tables all reach it through
//! [`RunStates`].

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::catalog::Relation;
use crate::error::{Result, SqlError};
use crate::stream::RelationId;
use crate::stream::watermark::{ViewStats, Watermarks};

/// One relation's run-time state.
#[derive(Default)]
pub struct RunState {
    /// Set when a view's dataflow or a sink's delivery failed; reads of the
    /// view report it.
    pub failure: Mutex<Option<SqlError>>,
    /// What a view's operators, a view's or table's source readers, or a
    /// sink's delivery counted.
    pub stats: Arc<ViewStats>,
    /// A materialized view's column watermarks as of the last epoch that
    /// stepped it.
    pub current_watermarks: Mutex<Watermarks>,
}

impl RunState {
    /// Fails with the view's failure, if it has one: what reads report.
    pub fn check_healthy(&self, relation: &Relation) -> Result<()> {
        match self.failure.lock().as_ref() {
            Some(e) => Err(SqlError::new(
                e.code,
                format!(
                    "materialized view \"{}\" failed: {} (it is rebuilt from its inputs when the server restarts; \
                     or DROP and CREATE it again)",
                    relation.name, e.message
                ),
            )),
            None => Ok(()),
        }
    }

    pub fn failed(&self) -> bool {
        self.failure.lock().is_some()
    }
}

/// Every relation's run-time state, by id.
#[derive(Default)]
pub struct RunStates {
    by_id: RwLock<HashMap<RelationId, Arc<RunState>>>,
}

impl RunStates {
    /// The run-time state of relation `id` (a fresh one the first time).
    pub fn of(&self, id: RelationId) -> Arc<RunState> {
        if let Some(state) = self.by_id.read().get(&id) {
            return state.clone();
        }
        self.by_id.write().entry(id).or_default().clone()
    }

    /// Forgets a dropped relation's state.
    pub fn remove(&self, id: RelationId) {
        self.by_id.write().remove(&id);
    }
}
