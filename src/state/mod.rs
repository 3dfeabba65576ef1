//! The state store: every piece of durable state (catalog entries, table
//! rows, view contents, operator state; later source offsets) is a
//! key/value pair here.
//!
//! Two backends: [`MemStore`] (in memory only) and [`DurableStore`]
//! (RocksDB, what the server runs on). The interface is RocksDB's:
//! - ordered byte keys, prefix scans (a relation's rows share a key prefix);
//! - one atomic [`WriteBatch`] per epoch;
//! - consistent read [`Snapshot`]s at a committed epoch, so readers never block
//!   the writer and never see half an epoch.
//!
//! Every key starts with a one-byte tag; `keys.rs` lists them all, with
//! what each holds and which module owns it, and builds the keys.
//!
//! This module owns only bytes; it knows nothing of Arrow or SQL.

mod durable;
pub mod keys;
mod memory;

pub use durable::{DurableStore, FORMAT_VERSION, StoreOptions};
pub use keys::{
    ACL_PREFIX, CATALOG_PREFIX, COMMENT_PREFIX, LOG_PREFIX, ROLE_PREFIX, acl_key, catalog_key, comment_key,
    failure_key, feed_errors_prefix, feed_position_key, log_key, operator_prefix, outbox_key, outbox_prefix,
    relation_prefix, role_key, view_state_prefix, view_stats_key, watermark_key,
};
pub use memory::MemStore;

/// Epoch numbers: epoch `n` is committed once its write batch is applied.
pub type Epoch = u64;

/// A set of puts and deletes applied atomically by [`StateStore::commit`].
#[derive(Default, Debug)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }
}

/// A consistent view of the store at one committed epoch.
pub trait Snapshot: Send + Sync {
    fn epoch(&self) -> Epoch;
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Point reads of many keys at once (one call to the store).
    fn multi_get(&self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Calls `visit` for every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]));
}

/// A snapshot of nothing (to stage writes as if a key range were empty).
pub struct EmptySnapshot;

impl Snapshot for EmptySnapshot {
    fn epoch(&self) -> Epoch {
        0
    }
    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn scan_prefix(&self, _prefix: &[u8], _visit: &mut dyn FnMut(&[u8], &[u8])) {}
}

/// The store itself: snapshots for readers, atomic commits for the writer.
pub trait StateStore: Send + Sync {
    fn snapshot(&self) -> std::sync::Arc<dyn Snapshot>;
    /// Applies `batch` atomically as epoch `epoch`; readers see all or nothing.
    fn commit(&self, epoch: Epoch, batch: WriteBatch) -> crate::error::Result<()>;
    /// [`commit`](Self::commit) without waiting for the disk: for a batch a
    /// machine crash may lose because a restart redoes it (a sink's
    /// delivered outbox entries, which the sink's own record of what it
    /// holds skips again). A later synced commit makes it durable too.
    fn commit_unsynced(&self, epoch: Epoch, batch: WriteBatch) -> crate::error::Result<()> {
        self.commit(epoch, batch)
    }
    fn committed_epoch(&self) -> Epoch;
    /// After a failed commit: makes the store take writes again if it can.
    /// `Ok(true)`: it does; `Ok(false)`: not yet, try again later; an error
    /// says why it still cannot. (A store whose commits cannot fail, or that
    /// takes writes again by itself, keeps the default.)
    fn recover_writes(&self) -> crate::error::Result<bool> {
        Ok(true)
    }
}
