//! A session's explicit transaction (BEGIN … COMMIT): every read sees one
//! committed epoch plus the transaction's own writes, and its writes reach
//! the tables (and every view downstream) in one epoch at COMMIT, or not at
//! all.
//!
//! The transaction pins a snapshot at BEGIN. Table writes inside it are
//! computed as usual (`writes`, with the same key and NOT NULL checks) but
//! against an [`Overlay`] of that snapshot, and staged: their storage
//! writes go into the overlay, their change batches into a list. COMMIT
//! checks that no other epoch changed a row the transaction wrote since its
//! snapshot (first committer wins: 40001 otherwise, 23505 for a key two
//! transactions both inserted) and commits the staged changes as one epoch.
//! This is snapshot isolation, Postgres's REPEATABLE READ.
//!
//! The open transaction lives in a task-local slot around each connection
//! (see `snapshot::with_statement_scope`), like the statement snapshot.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::coordinator::Coordinator;
use super::storage;
use crate::catalog::{Catalog, Relation, RelationKind};
use crate::error::{Result, SqlError, sqlstate};
use crate::state::{Epoch, Snapshot, StateStore, WriteBatch, relation_prefix};
use crate::stream::{ChangeBatch, RelationId};

tokio::task_local! {
    static OPEN: RefCell<Option<Transaction>>;
}

/// The task-local slot of a connection's transaction.
pub(super) fn scope<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    OPEN.scope(RefCell::new(None), work)
}

/// An open transaction block.
pub struct Transaction {
    /// The committed epoch the transaction reads.
    base: Arc<dyn Snapshot>,
    /// `base` with the transaction's writes on top.
    overlay: Overlay,
    /// The change batches of its writes, in order, per table.
    staged: Vec<(Arc<Relation>, ChangeBatch)>,
    read_only: bool,
    /// SAVEPOINTs: name, overlay and staged length when it was set.
    savepoints: Vec<(String, Overlay, usize)>,
}

/// Opens a transaction reading the latest committed epoch (BEGIN).
/// Returns false if one is open already (or the task has no slot).
pub fn begin(store: &dyn StateStore, read_only: bool) -> bool {
    OPEN.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_some() {
            return false;
        }
        let base = store.snapshot();
        let overlay = Overlay { base: base.clone(), writes: imbl::OrdMap::new() };
        *slot = Some(Transaction { base, overlay, staged: Vec::new(), read_only, savepoints: Vec::new() });
        true
    })
    .unwrap_or(false)
}

/// Whether this task is inside a transaction block.
pub fn is_open() -> bool {
    OPEN.try_with(|slot| slot.borrow().is_some()).unwrap_or(false)
}

/// What a statement inside the transaction reads: its snapshot with its own
/// writes. `None` outside a transaction.
pub fn snapshot() -> Option<Arc<dyn Snapshot>> {
    OPEN.try_with(|slot| slot.borrow().as_ref().map(Transaction::snapshot)).ok().flatten()
}

/// Runs `write` against the open transaction (its staged writes); `None`
/// when no transaction is open.
pub fn with_open<T>(write: impl FnOnce(&mut Transaction) -> T) -> Option<T> {
    OPEN.try_with(|slot| slot.borrow_mut().as_mut().map(write)).ok().flatten()
}

/// Ends the transaction, returning it (to commit), or `None` if none was open.
pub fn take() -> Option<Transaction> {
    OPEN.try_with(|slot| slot.borrow_mut().take()).ok().flatten()
}

impl Transaction {
    /// The snapshot the transaction's statements read and write against.
    pub fn snapshot(&self) -> Arc<dyn Snapshot> {
        Arc::new(self.overlay.clone())
    }

    /// Stages `changes`: applied to the overlay now, to the tables at COMMIT.
    pub fn stage(&mut self, changes: Vec<(Arc<Relation>, ChangeBatch)>) -> Result<()> {
        if self.read_only {
            let name = changes.first().map(|(r, _)| r.name.to_string()).unwrap_or_default();
            return Err(SqlError::new(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!("cannot write to table \"{name}\" in a read-only transaction"),
            ));
        }
        let mut batch = WriteBatch::default();
        for (relation, change) in &changes {
            storage::apply_change(relation, &self.overlay, change, &mut batch)?;
        }
        for (key, value) in batch.into_ops() {
            self.overlay.writes.insert(key, value);
        }
        self.staged.extend(changes.into_iter().filter(|(_, c)| !c.is_empty()));
        Ok(())
    }

    /// SAVEPOINT `name`: remembers the writes so far.
    pub fn savepoint(&mut self, name: String) {
        self.savepoints.push((name, self.overlay.clone(), self.staged.len()));
    }

    /// ROLLBACK TO SAVEPOINT `name`: undoes the writes made since (the
    /// savepoint stays); RELEASE (`undo` false) forgets it and later ones.
    pub fn to_savepoint(&mut self, name: &str, undo: bool) -> Result<()> {
        let Some(index) = self.savepoints.iter().rposition(|(n, _, _)| n == name) else {
            return Err(SqlError::new(
                sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
                format!("savepoint \"{name}\" does not exist"),
            ));
        };
        if undo {
            if let Some((_, overlay, staged)) = self.savepoints.get(index) {
                self.overlay = overlay.clone();
                self.staged.truncate(*staged);
            }
            self.savepoints.truncate(index + 1);
        } else {
            self.savepoints.truncate(index);
        }
        Ok(())
    }

    /// Commits the staged writes as one epoch, if no other epoch since the
    /// transaction's snapshot changed a row it wrote.
    pub async fn commit(self, coordinator: &Coordinator, catalog: &Catalog) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        // One change batch per table, in the order tables were first written.
        let mut order: Vec<Arc<Relation>> = Vec::new();
        let mut parts: HashMap<RelationId, Vec<ChangeBatch>> = HashMap::new();
        for (relation, change) in self.staged {
            if !parts.contains_key(&relation.id) {
                order.push(relation.clone());
            }
            parts.entry(relation.id).or_default().push(change);
        }
        let mut changes = Vec::with_capacity(order.len());
        for relation in order {
            let parts = parts.remove(&relation.id).unwrap_or_default();
            changes.push((relation.clone(), ChangeBatch::concat(&relation.schema, &parts)?));
        }
        let mut guard = coordinator.begin().await;
        let current = guard.snapshot();
        for (relation, _) in &changes {
            let still_there = catalog.get(relation.id).is_some_and(|r| r.kind == RelationKind::Table);
            if !still_there {
                return Err(SqlError::new(
                    sqlstate::SERIALIZATION_FAILURE,
                    format!("table \"{}\" was dropped while this transaction wrote to it", relation.name),
                ));
            }
            check_unchanged(relation, &self.overlay, self.base.as_ref(), current.as_ref())?;
        }
        guard.commit(changes)
    }
}

/// First committer wins: every row the transaction replaced or removed in
/// `relation` must be as the transaction's snapshot had it.
fn check_unchanged(relation: &Relation, overlay: &Overlay, base: &dyn Snapshot, current: &dyn Snapshot) -> Result<()> {
    if current.epoch() == base.epoch() {
        return Ok(());
    }
    let prefix = relation_prefix(relation.id);
    let keyed = relation.key_codec.is_some();
    for (key, written) in overlay.writes.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(&prefix)) {
        let before = base.get(key);
        let now = current.get(key);
        if keyed {
            match (&before, &now) {
                (None, Some(_)) => {
                    return Err(SqlError::new(
                        sqlstate::UNIQUE_VIOLATION,
                        format!(
                            "duplicate key value violates unique constraint \"{}_pkey\": a concurrent \
                             transaction inserted the same key",
                            relation.name.name
                        ),
                    ));
                }
                _ if before != now => return Err(concurrent_update(relation)),
                _ => {}
            }
        } else {
            // Rows without a key are counted copies: only copies this
            // transaction removed must still be there.
            let had = before.as_deref().map(storage::multiplicity).unwrap_or(0);
            let keeps = written.as_deref().map(storage::multiplicity).unwrap_or(0);
            let has = now.as_deref().map(storage::multiplicity).unwrap_or(0);
            if keeps < had && has < had - keeps {
                return Err(concurrent_update(relation));
            }
        }
    }
    Ok(())
}

fn concurrent_update(relation: &Relation) -> SqlError {
    SqlError::new(
        sqlstate::SERIALIZATION_FAILURE,
        format!("could not serialize access due to concurrent update of table \"{}\"", relation.name),
    )
}

/// A snapshot with a transaction's uncommitted writes on top (a persistent
/// map: a statement's or a savepoint's copy is O(1)).
#[derive(Clone)]
pub struct Overlay {
    base: Arc<dyn Snapshot>,
    /// Storage key → value, or `None` where the transaction deleted it.
    writes: imbl::OrdMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Snapshot for Overlay {
    fn epoch(&self) -> Epoch {
        self.base.epoch()
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(written) => written.clone(),
            None => self.base.get(key),
        }
    }

    fn multi_get(&self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        if self.writes.is_empty() {
            return self.base.multi_get(keys);
        }
        let missing: Vec<Vec<u8>> = keys.iter().filter(|k| !self.writes.contains_key(*k)).cloned().collect();
        let mut from_base = self.base.multi_get(&missing).into_iter();
        keys.iter()
            .map(|k| match self.writes.get(k) {
                Some(written) => written.clone(),
                None => from_base.next().flatten(),
            })
            .collect()
    }

    /// The base's pairs merged with the transaction's, in key order.
    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8])) {
        let mut written = self.writes.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).peekable();
        self.base.scan_prefix(prefix, &mut |key, value| {
            while let Some((k, v)) = written.next_if(|(k, _)| k.as_slice() < key) {
                if let Some(v) = v {
                    visit(k, v);
                }
            }
            match written.next_if(|(k, _)| k.as_slice() == key) {
                Some((k, Some(v))) => visit(k, v),
                Some((_, None)) => {}
                None => visit(key, value),
            }
        });
        for (k, v) in written {
            if let Some(v) = v {
                visit(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemStore;

    fn store_with(pairs: &[(&str, &str)]) -> MemStore {
        let mut batch = WriteBatch::default();
        for (k, v) in pairs {
            batch.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        let store = MemStore::new();
        store.commit(1, batch).expect("commit");
        store
    }

    fn scan(snapshot: &dyn Snapshot, prefix: &str) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        snapshot.scan_prefix(prefix.as_bytes(), &mut |k, v| {
            seen.push((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
        });
        seen
    }

    #[test]
    fn an_overlay_merges_its_writes_into_the_base_in_key_order() {
        let store = store_with(&[("a1", "x"), ("a3", "x"), ("a5", "x"), ("b1", "x")]);
        let mut writes = imbl::OrdMap::new();
        for (k, v) in [("a0", Some("w")), ("a3", None), ("a4", Some("w")), ("a5", Some("w")), ("a9", Some("w"))] {
            writes.insert(k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        }
        writes.insert(b"b0".to_vec(), Some(b"w".to_vec()));
        let overlay = Overlay { base: store.snapshot(), writes };
        let expected: Vec<(String, String)> = [("a0", "w"), ("a1", "x"), ("a4", "w"), ("a5", "w"), ("a9", "w")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(scan(&overlay, "a"), expected);
        assert_eq!(overlay.get(b"a3"), None);
        assert_eq!(overlay.get(b"a1"), Some(b"x".to_vec()));
        let keys: Vec<Vec<u8>> = ["a3", "a1", "a4", "zz"].iter().map(|k| k.as_bytes().to_vec()).collect();
        assert_eq!(overlay.multi_get(&keys), vec![None, Some(b"x".to_vec()), Some(b"w".to_vec()), None]);
        assert_eq!(scan(&overlay, "b").len(), 2);
    }
}
