//! Tables fed by a connector: `CREATE TABLE t (…) WITH (connector =
//! 'kafka', …) FORMAT PLAIN ENCODE JSON`.
//!
//! Unlike a source, such a table stores what arrives: it can be queried
//! directly, and views over it read its rows like any table's. One task
//! reads every such table's connector and appends what it read in an epoch
//! of its own, writing the table's read position (and its bad records) in
//! the same atomic batch as the rows. A restart resumes from the position
//! stored with the last rows, so each record is stored exactly once.
//! A read that fails for good (a bad record with `bad_records = 'fail'`)
//! stops that table's feed, says why in `freshet_catalog.source_status`,
//! and leaves the rows already stored in place.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::coordinator::{Backoff, Coordinator};
use crate::catalog::{Catalog, Relation, RelationKind};
use crate::connectors::{KeyedChanges, Reader, SourcePosition};
use crate::error::Result;
use crate::state::{WriteBatch, feed_errors_prefix, feed_position_key};
use crate::stream::RelationId;
use crate::stream::connector::{MAX_RECORDS_PER_EPOCH, bad_record_key, encode_bad_record};

/// What the feed task keeps between rounds.
#[derive(Default)]
struct Feeds {
    /// The position after the last committed read, per table (loaded from
    /// the store the first time a table is fed).
    positions: HashMap<RelationId, SourcePosition>,
    /// Tables whose feed stopped on an error.
    stopped: HashSet<RelationId>,
}

use crate::stream::wall_clock_nanos as now_nanos;

/// The key of a table's bad record.
fn error_key(table: RelationId, record: &crate::connectors::BadRecord) -> Vec<u8> {
    let mut key = feed_errors_prefix(table).to_vec();
    key.extend_from_slice(&bad_record_key(record));
    key
}

/// Whether a relation is a table with a connector.
pub fn is_fed(relation: &Relation) -> bool {
    relation.kind == RelationKind::Table && relation.reader.is_some()
}

/// Reads each fed table's connector once; reports whether anything came.
async fn feed_once(coordinator: &Coordinator, catalog: &Catalog, feeds: &mut Feeds) -> Result<bool> {
    // A sink far behind: let it catch up before taking in more. A
    // read-only server stores nothing: the connectors wait.
    if coordinator.sinks_backlogged() || coordinator.health().is_read_only() {
        return Ok(false);
    }
    let tables: Vec<Arc<Relation>> =
        catalog.list(RelationKind::Table).into_iter().filter(|t| is_fed(t) && !feeds.stopped.contains(&t.id)).collect();
    let mut read_any = false;
    for table in tables {
        let Some(reader) = table.reader.clone() else { continue };
        let name = table.name.to_string();
        let run = coordinator.run_state(table.id);
        let mut guard = coordinator.begin().await;
        // The table may have been dropped while we waited for the epoch.
        if catalog.get(table.id).is_none() {
            continue;
        }
        let mut position = match feeds.positions.get(&table.id) {
            Some(position) => position.clone(),
            None => guard
                .snapshot()
                .get(&feed_position_key(table.id))
                .and_then(|bytes| SourcePosition::decode(&bytes))
                .unwrap_or_default(),
        };
        let before = position.clone();
        let mut bad = Vec::new();
        let read = match &reader {
            Reader::Keyed(keyed) => keyed.read_changes(&mut position, now_nanos(), MAX_RECORDS_PER_EPOCH, &mut bad),
            Reader::Appends(appends) => {
                appends.read(&mut position, now_nanos(), MAX_RECORDS_PER_EPOCH, &mut bad).map(KeyedChanges::upserts)
            }
        };
        if let Some(status) = reader.connector().status() {
            run.stats.set_source_status(&name, status);
        }
        let changes = match read {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(table = %name, %error, "the table's connector failed; its feed stops");
                run.stats.set_source_status(&name, format!("failed: {}", error.message));
                feeds.stopped.insert(table.id);
                continue;
            }
        };
        if changes.rows.num_rows() == 0 && bad.is_empty() && position == before {
            feeds.positions.insert(table.id, position);
            continue;
        }
        let mut extra = WriteBatch::default();
        extra.put(feed_position_key(table.id).to_vec(), position.encode());
        for record in &bad {
            extra.put(error_key(table.id, record), encode_bad_record(record));
        }
        run.stats.add_bad_records(bad.len() as u64);
        let applied = if matches!(reader, Reader::Keyed(_)) {
            super::writes::apply_from_changelog(&mut guard, &table, &changes, extra)
        } else {
            super::writes::append_from_connector(&mut guard, &table, &changes.rows, extra)
        };
        match applied {
            Ok(count) => {
                run.stats.add_source_rows(count as u64);
                read_any |= count > 0 || !bad.is_empty();
                // Durable now: the upstream may let go of what was read.
                reader.connector().committed(&position);
                feeds.positions.insert(table.id, position);
            }
            // The store failed (or the server is read-only): nothing was
            // written, the same rows are read again once it takes writes.
            Err(error) if coordinator.health().is_read_only() => {
                tracing::debug!(table = %name, %error, "rows from the table's connector wait for the store");
            }
            Err(error) => {
                tracing::warn!(table = %name, %error, "rows from the table's connector were refused; its feed stops");
                run.stats.set_source_status(&name, format!("failed: {}", error.message));
                feeds.stopped.insert(table.id);
            }
        }
    }
    Ok(read_any)
}

/// Starts the task feeding connector tables: round after round while rows
/// come, backing off (up to `idle`) while none do.
pub fn spawn(coordinator: &Arc<Coordinator>, catalog: &Arc<Catalog>, idle: Duration) {
    let coordinator: Weak<Coordinator> = Arc::downgrade(coordinator);
    let catalog: Weak<Catalog> = Arc::downgrade(catalog);
    tokio::spawn(async move {
        let mut feeds = Feeds::default();
        let mut backoff = Backoff::new(idle);
        loop {
            let (Some(coordinator), Some(catalog)) = (coordinator.upgrade(), catalog.upgrade()) else { break };
            let read = feed_once(&coordinator, &catalog, &mut feeds).await;
            drop((coordinator, catalog));
            backoff.after(read, "feeding connector tables failed").await;
        }
    });
}
