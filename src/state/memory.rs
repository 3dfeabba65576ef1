//! In-memory [`StateStore`]: a persistent (structurally shared) ordered map,
//! so a snapshot is an O(1) clone and a commit never disturbs open readers.

use std::sync::Arc;

use imbl::OrdMap;
use parking_lot::RwLock;

use super::{Epoch, Snapshot, StateStore, WriteBatch};

type Map = OrdMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemStore {
    committed: RwLock<(Epoch, Map)>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `pairs` as of `epoch` (how a durable store fills its
    /// in-memory copy at startup).
    pub fn loaded(epoch: Epoch, pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        Self { committed: RwLock::new((epoch, pairs.into_iter().collect())) }
    }
}

struct MemSnapshot {
    epoch: Epoch,
    map: Map,
}

impl Snapshot for MemSnapshot {
    fn epoch(&self) -> Epoch {
        self.epoch
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }
    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8])) {
        for (key, value) in self.map.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            visit(key, value);
        }
    }
}

impl StateStore for MemStore {
    fn snapshot(&self) -> Arc<dyn Snapshot> {
        let guard = self.committed.read();
        Arc::new(MemSnapshot { epoch: guard.0, map: guard.1.clone() })
    }

    fn commit(&self, epoch: Epoch, batch: WriteBatch) -> crate::error::Result<()> {
        // Build the next version off to the side, then swap it in: readers
        // holding the old map keep a consistent view.
        let mut next = self.committed.read().1.clone();
        for (key, value) in batch.into_ops() {
            match value {
                Some(value) => {
                    next.insert(key, value);
                }
                None => {
                    next.remove(&key);
                }
            }
        }
        *self.committed.write() = (epoch, next);
        Ok(())
    }

    fn committed_epoch(&self) -> Epoch {
        self.committed.read().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_isolated_from_later_commits() {
        let store = MemStore::new();
        let mut batch = WriteBatch::default();
        batch.put(b"a1".to_vec(), b"x".to_vec());
        batch.put(b"a2".to_vec(), b"y".to_vec());
        batch.put(b"b1".to_vec(), b"z".to_vec());
        store.commit(1, batch).unwrap();
        let before = store.snapshot();
        let mut batch = WriteBatch::default();
        batch.delete(b"a1".to_vec());
        batch.put(b"a3".to_vec(), b"w".to_vec());
        store.commit(2, batch).unwrap();

        let mut seen = Vec::new();
        before.scan_prefix(b"a", &mut |k, v| seen.push((k.to_vec(), v.to_vec())));
        assert_eq!(seen, vec![(b"a1".to_vec(), b"x".to_vec()), (b"a2".to_vec(), b"y".to_vec())]);
        assert_eq!(before.epoch(), 1);

        let after = store.snapshot();
        let mut keys = Vec::new();
        after.scan_prefix(b"a", &mut |k, _| keys.push(k.to_vec()));
        assert_eq!(keys, vec![b"a2".to_vec(), b"a3".to_vec()]);
        assert_eq!(after.get(b"b1"), Some(b"z".to_vec()));
        assert_eq!(store.committed_epoch(), 2);
    }
}
