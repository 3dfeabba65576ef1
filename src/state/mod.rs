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
//! Key prefixes: `c` catalog entries, `r` relation rows, `s` operator state
//! (see `stream::state_table`), `l` the epoch log (table changes since the
//! last checkpoint, see `db::epoch_log`), `f` failed views, `w` table
//! watermarks, `m` store metadata.
//!
//! This module owns only bytes; it knows nothing of Arrow or SQL.

mod durable;
mod memory;

pub use durable::{DurableStore, FORMAT_VERSION, StoreOptions};
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
    fn committed_epoch(&self) -> Epoch;
    /// After a failed commit: makes the store take writes again if it can.
    /// `Ok(true)`: it does; `Ok(false)`: not yet, try again later; an error
    /// says why it still cannot. (A store whose commits cannot fail, or that
    /// takes writes again by itself, keeps the default.)
    fn recover_writes(&self) -> crate::error::Result<bool> {
        Ok(true)
    }
}

/// Prefix of a sink's outbox: one entry per epoch (`o` + sink id + epoch),
/// the epoch's changes to deliver, written with the epoch.
pub fn outbox_prefix(sink_id: u32) -> [u8; 5] {
    let id = sink_id.to_be_bytes();
    [b'o', id[0], id[1], id[2], id[3]]
}

pub fn outbox_key(sink_id: u32, epoch: Epoch) -> Vec<u8> {
    let mut key = outbox_prefix(sink_id).to_vec();
    key.extend_from_slice(&epoch.to_be_bytes());
    key
}

/// Key of one relation's catalog entry (its defining statement).
pub fn catalog_key(relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [b'c', id[0], id[1], id[2], id[3]]
}

/// Key of a relation's COMMENT ON texts.
pub fn comment_key(relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [b'd', id[0], id[1], id[2], id[3]]
}

/// Key prefix of relation access records (owner and grants).
pub const ACL_PREFIX: &[u8] = b"g";

/// Key of a relation's access record.
pub fn acl_key(relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [b'g', id[0], id[1], id[2], id[3]]
}

/// Prefix of all relations' comments.
pub const COMMENT_PREFIX: &[u8] = b"d";

/// Prefix of all catalog entries, in relation-id (creation) order.
pub const CATALOG_PREFIX: &[u8] = b"c";

/// Key prefix of one relation's (table's or view's) rows.
pub fn relation_prefix(relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [b'r', id[0], id[1], id[2], id[3]]
}

/// Key prefix of one stateful operator of a materialized view: the view's
/// id, then the operator's number in the view's dataflow (stable because the
/// dataflow is lowered from the same stored statement by the same rules).
pub fn operator_prefix(view_id: u32, operator: u16) -> [u8; 7] {
    let id = view_id.to_be_bytes();
    let op = operator.to_be_bytes();
    [b's', id[0], id[1], id[2], id[3], op[0], op[1]]
}

/// Prefix of all operator state of one view.
pub fn view_state_prefix(view_id: u32) -> [u8; 5] {
    let id = view_id.to_be_bytes();
    [b's', id[0], id[1], id[2], id[3]]
}

/// Key marking a materialized view whose dataflow failed (value: the error).
pub fn failure_key(view_id: u32) -> [u8; 5] {
    let id = view_id.to_be_bytes();
    [b'f', id[0], id[1], id[2], id[3]]
}

/// Key of a table's watermark (an 8-byte big-endian integer in the
/// watermark column's unit), written with every epoch that moves it.
pub fn watermark_key(relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [b'w', id[0], id[1], id[2], id[3]]
}

/// Key of a connector-fed table's read position, written in the same
/// batch as the rows read up to it.
pub fn feed_position_key(table_id: u32) -> [u8; 5] {
    let id = table_id.to_be_bytes();
    [b'p', id[0], id[1], id[2], id[3]]
}

/// Prefix of a connector-fed table's bad records (then partition and
/// offset, big-endian).
pub fn feed_errors_prefix(table_id: u32) -> [u8; 5] {
    let id = table_id.to_be_bytes();
    [b'b', id[0], id[1], id[2], id[3]]
}

/// Key of a view's event-time counters (late rows), among its operator
/// state (so DROP and rebuilds clear it), written at checkpoints.
pub fn view_stats_key(view_id: u32) -> [u8; 7] {
    operator_prefix(view_id, u16::MAX)
}

/// Prefix of the epoch log's entries, in epoch order.
pub const LOG_PREFIX: &[u8] = b"l";

/// Key of the epoch log's entry for `epoch`.
pub fn log_key(epoch: Epoch) -> [u8; 9] {
    let e = epoch.to_be_bytes();
    [b'l', e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]
}
