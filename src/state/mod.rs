//! The state store: every piece of durable state (catalog entries, table
//! rows, view contents; later operator state and source offsets) is a
//! key/value pair here.
//!
//! Two backends: [`MemStore`] (in memory only) and [`DurableStore`]
//! (RocksDB, what the server runs on). The interface is RocksDB's:
//! - ordered byte keys, prefix scans (a relation's rows share a key prefix);
//! - one atomic [`WriteBatch`] per epoch;
//! - consistent read [`Snapshot`]s at a committed epoch, so readers never block
//!   the writer and never see half an epoch.
//!
//! Key prefixes: `c` catalog entries, `r` relation rows, `m` store metadata.
//!
//! This module owns only bytes; it knows nothing of Arrow or SQL.

mod durable;
mod memory;

pub use durable::{DurableStore, FORMAT_VERSION};
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
    /// Calls `visit` for every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]));
}

/// The store itself: snapshots for readers, atomic commits for the writer.
pub trait StateStore: Send + Sync {
    fn snapshot(&self) -> std::sync::Arc<dyn Snapshot>;
    /// Applies `batch` atomically as epoch `epoch`; readers see all or nothing.
    fn commit(&self, epoch: Epoch, batch: WriteBatch) -> crate::error::Result<()>;
    fn committed_epoch(&self) -> Epoch;
}

/// Key of one relation's catalog entry (its defining statement).
pub fn catalog_key(relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [b'c', id[0], id[1], id[2], id[3]]
}

/// Prefix of all catalog entries, in relation-id (creation) order.
pub const CATALOG_PREFIX: &[u8] = b"c";

/// Key prefix of one relation's (table's or view's) rows.
pub fn relation_prefix(relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [b'r', id[0], id[1], id[2], id[3]]
}
