//! Delivering sinks: each sink's outbox, epoch by epoch, to its writer.
//!
//! A sink's dataflow leaves its changes of every committed epoch in the
//! store's outbox (`state::outbox_key`). This task reads the outbox at the
//! committed snapshot and hands each epoch, in order, to the sink's
//! [`SinkWriter`](crate::connectors::sink::SinkWriter), which writes it
//! together with the epoch number. Before its first write, and after any
//! failure, it asks the writer which epoch the external system already
//! holds, and skips up to there: a crash between the external commit and
//! the outbox cleanup repeats nothing. Delivered entries are deleted in an
//! epoch of their own, not waited for on disk (lost in a machine crash, they
//! come back and are skipped the same way). A writer that fails is retried with backoff (the
//! sink's status says why); the outbox keeps the epochs meanwhile, and once
//! a sink is `SINK_BACKLOG_LIMIT` epochs behind, connectors stop reading
//! until it catches up (backpressure; user DML still goes through). An
//! error no retry can mend (an append-only sink given a delete) fails the
//! sink.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::coordinator::Coordinator;
use crate::catalog::{Catalog, Relation, RelationKind};
use crate::error::{Result, SqlError};
use crate::state::{WriteBatch, outbox_prefix};
use crate::stream::RelationId;
use crate::stream::connector::Retry;

/// How many outbox epochs a round delivers per sink at most.
const EPOCHS_PER_ROUND: usize = 64;

#[derive(Default)]
struct SinkProgress {
    /// What the external system holds (`None`: ask it first).
    delivered: Option<Option<u64>>,
    retry: Retry,
}

/// Delivers what each sink's outbox holds; reports whether anything went.
async fn deliver_once(
    coordinator: &Coordinator,
    catalog: &Catalog,
    progress: &mut HashMap<RelationId, SinkProgress>,
) -> Result<bool> {
    let sinks: Vec<Arc<Relation>> = catalog.list(RelationKind::Sink);
    progress.retain(|id, _| sinks.iter().any(|s| s.id == *id));
    let mut delivered_any = false;
    let mut backlog = 0usize;
    let (snapshot, written) = coordinator.outbox_snapshot().await;
    for sink in sinks {
        // A failed sink's dataflow adds nothing to its outbox.
        let run = coordinator.run_state(sink.id);
        let Some(writer) = sink.sink.clone().filter(|_| !run.failed()) else { continue };
        if writer.discards() {
            // Nothing reaches the outbox of a sink that keeps nothing.
            run.stats.set_source_status(&sink.name.to_string(), "discarding".to_string());
            continue;
        }
        let mut entries: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut pending = 0usize;
        snapshot.scan_prefix(&outbox_prefix(sink.id), &mut |key, value| {
            pending += 1;
            if entries.len() < EPOCHS_PER_ROUND
                && let Some(epoch) = key.get(5..13).and_then(|e| e.try_into().ok()).map(u64::from_be_bytes)
            {
                entries.push((epoch, key.to_vec(), value.to_vec()));
            }
        });
        let state = progress.entry(sink.id).or_default();
        let waiting = state.retry.waiting();
        backlog = backlog.max(pending);
        if entries.is_empty() || waiting {
            continue;
        }
        let name = sink.name.to_string();
        let sink_for_task = sink.clone();
        let known = state.delivered;
        // Writers block (librdkafka, a Postgres transaction): off the runtime's workers.
        let outcome = tokio::task::spawn_blocking(move || -> (Option<u64>, Vec<Vec<u8>>, Option<SqlError>) {
            let mut delivered = match known {
                Some(known) => known,
                None => match writer.delivered() {
                    Ok(epoch) => epoch,
                    Err(error) => return (None, Vec::new(), Some(error)),
                },
            };
            let mut done = Vec::new();
            for (epoch, key, value) in entries {
                if delivered.is_none_or(|d| epoch > d) {
                    let changes = match crate::db::epoch_log::decode_records(&value, &sink_for_task) {
                        Ok(changes) => changes,
                        Err(error) => return (delivered, done, Some(error)),
                    };
                    if let Err(error) = writer.write(epoch, &changes) {
                        return (delivered, done, Some(error));
                    }
                    delivered = Some(epoch);
                }
                done.push(key);
            }
            (delivered, done, None)
        })
        .await;
        let (delivered, done, error) = match outcome {
            Ok(outcome) => outcome,
            Err(panic) => (None, Vec::new(), Some(SqlError::internal(format!("sink writer panicked: {panic}")))),
        };
        let state = progress.entry(sink.id).or_default();
        match error {
            None => {
                state.delivered = Some(delivered);
                state.retry.succeeded();
                run.stats.set_source_status(&name, "delivering".to_string());
            }
            Some(error) if error.code == crate::connectors::sink::PERMANENT => {
                tracing::warn!(sink = %name, %error, "sink failed");
                run.stats.set_source_status(&name, format!("failed: {}", error.message));
                *run.failure.lock() = Some(error);
            }
            Some(error) => {
                let error = error.message;
                // Ask the external system again before the next write.
                state.delivered = None;
                let wait = state.retry.failed();
                tracing::warn!(sink = %name, %error, retry_in = ?wait, "sink delivery failed");
                run.stats.set_source_status(&name, format!("retrying: {error}"));
            }
        }
        if !done.is_empty() {
            let mut batch = WriteBatch::default();
            for key in done {
                batch.delete(key);
            }
            let mut guard = coordinator.begin().await;
            // Dropped meanwhile: its outbox is gone with it.
            if catalog.get(sink.id).is_some() {
                guard.forget_delivered(batch)?;
            }
            delivered_any = true;
        }
    }
    coordinator.set_sink_backlog(backlog, written);
    Ok(delivered_any)
}

/// Starts the task delivering sinks: round after round while epochs come,
/// backing off (up to `idle`) while none do.
pub fn spawn(coordinator: &Arc<Coordinator>, catalog: &Arc<Catalog>, idle: Duration) {
    let coordinator: Weak<Coordinator> = Arc::downgrade(coordinator);
    let catalog: Weak<Catalog> = Arc::downgrade(catalog);
    tokio::spawn(async move {
        let mut progress = HashMap::new();
        let mut backoff = crate::db::coordinator::Backoff::new(idle);
        loop {
            let (Some(coordinator), Some(catalog)) = (coordinator.upgrade(), catalog.upgrade()) else { break };
            let delivered = deliver_once(&coordinator, &catalog, &mut progress).await;
            drop((coordinator, catalog));
            backoff.after(delivered, "delivering sinks failed").await;
        }
    });
}
