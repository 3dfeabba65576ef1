//! Which committed epoch a statement reads.
//!
//! Every statement reads all relations at one epoch: the first relation it
//! scans pins the latest committed snapshot for the rest of the statement.
//! The pin lives in a task-local slot around each client connection and is
//! cleared when the next statement starts (so a statement always sees the
//! writes of the statements before it: read-your-writes). Inside a
//! transaction block every statement reads the transaction's snapshot
//! (see `transaction`).

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use crate::state::{Snapshot, StateStore};

tokio::task_local! {
    static PINNED: RefCell<Option<Arc<dyn Snapshot>>>;
}

/// Runs a connection (or any unit of work) with its own snapshot and
/// transaction slots.
pub async fn with_statement_scope<F: Future>(work: F) -> F::Output {
    super::transaction::scope(PINNED.scope(RefCell::new(None), work)).await
}

/// Marks the start of a new statement: the next scan pins a fresh snapshot.
pub fn begin_statement() {
    let _ = PINNED.try_with(|slot| slot.borrow_mut().take());
}

/// The snapshot the current statement reads (pinning one if needed).
pub fn statement_snapshot(store: &dyn StateStore) -> Arc<dyn Snapshot> {
    if let Some(snapshot) = super::transaction::snapshot() {
        return snapshot;
    }
    PINNED
        .try_with(|slot| slot.borrow_mut().get_or_insert_with(|| store.snapshot()).clone())
        .unwrap_or_else(|_| store.snapshot())
}
