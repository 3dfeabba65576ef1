//! Operator state kept in the state store, with a bounded cache in front.
//!
//! Every stateful operator of a materialized view owns the keys under its
//! operator prefix (`state::operator_prefix`): prefix ++ vnode ++ group key
//! [++ member]. The group key is the operator's key in Arrow's row format
//! (memcomparable, prefix-free), and the vnode (a stable hash of the group
//! key) spreads groups over 256 virtual partitions, so that state can later
//! be split between workers or machines by vnode without re-keying it.
//!
//! Two shapes cover the operators:
//! - [`ValueState`]: one value per group (an aggregate's accumulators);
//! - [`MultisetState`](crate::stream::multiset_state::MultisetState): a
//!   multiset of byte strings per group (a join side's rows per join key, a
//!   group's rows for MIN/MAX, a top-N or window partition's rows), one
//!   store key per distinct member (`stream/multiset_state.rs`).
//!
//! Operators load the groups an epoch touches before using them (a miss
//! reads the committed store: the state as of the last checkpoint), mark
//! what they change dirty, and [`flush`](ValueState::flush) at the end of
//! each epoch. At a checkpoint the flush writes the dirty entries into the
//! epoch's write batch and they become clean; between checkpoints they stay
//! dirty in memory (the epoch log covers them). An entry that came and went
//! between two checkpoints (a join row that expired within a second) is
//! never written: the tables know what the store holds, and delete only
//! that. Only clean entries may be
//! evicted: each table shrinks to its share of the shared [`StateBudget`],
//! least recently used groups first, and a cache over budget with dirty
//! entries makes the coordinator checkpoint early.

use std::sync::Arc;

use crate::error::Result;
use crate::state::{Snapshot, WriteBatch};
use crate::stream::cache_account::{CacheAccount, Cached};
use crate::stream::slot_index::{Slot, SlotIndex};

/// Virtual partitions of an operator's key space.
pub const VNODES: u16 = 256;

/// Memory a cached group costs besides its key and value bytes: its hash
/// table entry and slab slot. Measured sizes, rounded up:
/// an accounting that undercounts lets the cache outgrow its budget.
const GROUP_OVERHEAD: usize = 160;

/// What an operator needs to reach its stored state in one epoch.
#[derive(Clone)]
pub struct StateContext {
    /// The committed state as of the last epoch.
    pub snapshot: Arc<dyn Snapshot>,
    pub budget: Arc<StateBudget>,
    /// The operator's stored state is known to be empty (a new view's
    /// backfill, a rebuild): misses need not be looked up.
    pub fresh: bool,
    /// This epoch is a checkpoint: flushes write the dirty state.
    pub checkpoint: bool,
}

pub use crate::stream::cache_account::StateBudget;

/// The vnode of a group key: FNV-1a, stable across builds and machines.
pub fn vnode(group: &[u8]) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in group {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % VNODES as u32) as u16
}

pub(crate) fn group_key(prefix: &[u8], group: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 2 + group.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(&vnode(group).to_be_bytes());
    key.extend_from_slice(group);
    key
}

/// A loaded group's place in its [`ValueState`]: valid until the table's
/// next flush (which may evict or drop groups and reuse their places).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotId(u32);

struct ValueSlot<V> {
    /// The group key; empty for a vacant slot (on the free list).
    group: Box<[u8]>,
    /// The key's hash in the table's index (kept so that removal and the
    /// index's growth need not hash the key again).
    hash: u64,
    value: Option<V>,
    dirty: bool,
    /// Changed since the last flush: its size is to be counted again.
    resized: bool,
    /// The store holds a value for this group (as of the last flush).
    stored: bool,
    vacant: bool,
    /// The clock of the last `locate` that touched the group.
    used: u64,
    /// In that `locate`, the group's index among the distinct groups.
    mark: u32,
    size: usize,
}

impl<V> Slot for ValueSlot<V> {
    fn group(&self) -> &[u8] {
        &self.group
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

impl<V> Cached for ValueSlot<V> {
    fn evictable(&self) -> Option<(u64, usize)> {
        (!self.vacant && !self.dirty).then_some((self.used, self.size))
    }
}

/// The groups a [`ValueState::locate`] call touched.
#[derive(Debug, Default)]
pub struct Located {
    /// The distinct groups, in order of first appearance.
    pub slots: Vec<SlotId>,
    /// Per distinct group, the index of the item it first appeared at.
    pub first: Vec<u32>,
    /// Per item, the index of its group in `slots`.
    pub of_item: Vec<u32>,
}

/// One value per group.
///
/// The groups live in a slab (`slots`) indexed by a hash table of slot
/// numbers, so an operator finds each touched group once per epoch
/// ([`locate`](Self::locate), one probe per input row) and then reaches it
/// by [`SlotId`], without hashing its key again.
pub struct ValueState<V> {
    prefix: Vec<u8>,
    index: SlotIndex,
    slots: Vec<ValueSlot<V>>,
    /// The slots made dirty since the last checkpoint, so that a flush
    /// visits them and not the whole cache (may hold repeats, and slots
    /// vacated since: each is checked when visited).
    dirty: Vec<u32>,
    /// The slots changed since the last flush (their sizes are recounted
    /// at every flush; the dirty ones are written only at a checkpoint).
    changed: Vec<u32>,
    /// The slots a `locate` cached as empty since the last checkpoint
    /// (groups not in the store): a checkpoint drops those still empty.
    empty: Vec<u32>,
    /// Bytes, budget charge, clock, completeness.
    cache: CacheAccount,
}

impl<V> ValueState<V> {
    pub fn new(prefix: &[u8]) -> Self {
        Self {
            prefix: prefix.to_vec(),
            index: SlotIndex::default(),
            slots: Vec::new(),
            dirty: Vec::new(),
            changed: Vec::new(),
            empty: Vec::new(),
            cache: CacheAccount::default(),
        }
    }

    /// The slot holding `group`, if cached.
    fn find(&self, group: &[u8]) -> Option<u32> {
        self.index.find(&self.slots, group, self.index.hash(group))
    }

    /// A new cached group with no value yet, in a vacant slot or a new one.
    fn allocate(&mut self, group: &[u8], hash: u64) -> u32 {
        let slot = ValueSlot {
            group: group.into(),
            hash,
            value: None,
            dirty: false,
            resized: false,
            stored: false,
            vacant: false,
            used: self.cache.clock(),
            mark: 0,
            size: 0,
        };
        self.index.place(&mut self.slots, slot)
    }

    /// Drops a group from the cache (its bytes are the caller's to account).
    fn vacate(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else { return };
        if slot.vacant {
            return;
        }
        self.index.release(id, slot.hash);
        slot.group = Box::default();
        slot.value = None;
        slot.dirty = false;
        slot.stored = false;
        slot.vacant = true;
    }

    /// Finds the group of every item of `groups` (repeats allowed), caching
    /// the ones not cached: those are read from the store in one batch and
    /// decoded in one call (or known empty without a read, while the cache
    /// is complete). One hash probe per item.
    pub fn locate<'g>(
        &mut self,
        ctx: &StateContext,
        groups: impl IntoIterator<Item = &'g [u8]>,
        decode: impl FnOnce(&[&[u8]]) -> Result<Vec<V>>,
    ) -> Result<Located> {
        let clock = self.cache.tick(ctx.fresh);
        let groups = groups.into_iter();
        let mut located = Located { of_item: Vec::with_capacity(groups.size_hint().0), ..Located::default() };
        let mut missing: Vec<u32> = Vec::new();
        for (item, group) in groups.enumerate() {
            let hash = self.index.hash(group);
            let id = match self.index.find(&self.slots, group, hash) {
                Some(id) => id,
                None => {
                    let id = self.allocate(group, hash);
                    missing.push(id);
                    if let Some(slot) = self.slots.get_mut(id as usize) {
                        // Not yet touched by this call (below).
                        slot.used = clock - 1;
                    }
                    id
                }
            };
            let Some(slot) = self.slots.get_mut(id as usize) else {
                return Err(crate::error::SqlError::internal("state slot out of range"));
            };
            if slot.used != clock {
                slot.used = clock;
                slot.mark = located.slots.len() as u32;
                located.slots.push(SlotId(id));
                located.first.push(item as u32);
            }
            located.of_item.push(slot.mark);
        }
        if missing.is_empty() {
            return Ok(located);
        }
        if let Err(error) = self.fill(ctx, &missing, decode) {
            // Leave no placeholder behind that would pass for an empty group.
            for id in missing {
                self.vacate(id);
            }
            return Err(error);
        }
        Ok(located)
    }

    /// Reads newly cached groups' values from the store.
    fn fill(
        &mut self,
        ctx: &StateContext,
        missing: &[u32],
        decode: impl FnOnce(&[&[u8]]) -> Result<Vec<V>>,
    ) -> Result<()> {
        let stored: Vec<Option<Vec<u8>>> = if self.cache.complete() {
            vec![None; missing.len()]
        } else {
            let keys: Vec<Vec<u8>> = missing
                .iter()
                .filter_map(|&id| self.slots.get(id as usize))
                .map(|slot| group_key(&self.prefix, &slot.group))
                .collect();
            ctx.snapshot.multi_get(&keys)
        };
        let found: Vec<&[u8]> = stored.iter().flatten().map(Vec::as_slice).collect();
        let mut decoded = if found.is_empty() { Vec::new() } else { decode(&found)? }.into_iter();
        for (&id, bytes) in missing.iter().zip(&stored) {
            let Some(slot) = self.slots.get_mut(id as usize) else { continue };
            if bytes.is_none() {
                self.empty.push(id);
            }
            slot.value = if bytes.is_some() { decoded.next() } else { None };
            slot.stored = bytes.is_some();
            slot.size = slot.group.len() + GROUP_OVERHEAD + bytes.as_ref().map_or(0, Vec::len);
            self.cache.bytes += slot.size;
        }
        Ok(())
    }

    /// Makes sure every group in `groups` is cached (see [`locate`](Self::locate)).
    pub fn load(
        &mut self,
        ctx: &StateContext,
        groups: &[Vec<u8>],
        decode: impl FnOnce(&[&[u8]]) -> Result<Vec<V>>,
    ) -> Result<()> {
        self.locate(ctx, groups.iter().map(Vec::as_slice), decode).map(|_| ())
    }

    /// Every group stored under this table's prefix as of the committed
    /// snapshot (a scan of the whole table: for rebuilding an index at
    /// startup, when the table's state is bounded).
    pub fn stored_groups(&self, ctx: &StateContext) -> Vec<Vec<u8>> {
        let mut groups = Vec::new();
        let skip = self.prefix.len() + 2;
        ctx.snapshot.scan_prefix(&self.prefix, &mut |key, _| {
            if let Some(group) = key.get(skip..) {
                groups.push(group.to_vec());
            }
        });
        groups
    }

    /// How many groups the cache holds.
    pub fn cached(&self) -> usize {
        self.index.occupied(self.slots.len())
    }

    /// The cached value of a loaded group, for change: it is written back
    /// at the next flush. `None` for a group never loaded.
    pub fn get_mut(&mut self, group: &[u8]) -> Option<&mut Option<V>> {
        let id = self.find(group)?;
        self.value_mut(SlotId(id))
    }

    /// The value in a slot [`locate`](Self::locate) returned this epoch,
    /// for change (written back at the next flush).
    pub fn value_mut(&mut self, id: SlotId) -> Option<&mut Option<V>> {
        let slot = self.slots.get_mut(id.0 as usize).filter(|s| !s.vacant)?;
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(id.0);
        }
        if !slot.resized {
            slot.resized = true;
            self.changed.push(id.0);
        }
        Some(&mut slot.value)
    }

    /// At a checkpoint, writes the dirty groups into `batch` (`encode` turns
    /// all of them into bytes in one call; an emptied group is deleted).
    /// Then shrinks the cache to its share of the budget.
    pub fn flush(
        &mut self,
        ctx: &StateContext,
        batch: &mut WriteBatch,
        size_of: impl Fn(&V) -> usize,
        encode: impl FnOnce(&mut [&mut V]) -> Result<Vec<Vec<u8>>>,
    ) -> Result<()> {
        let budget = &ctx.budget;
        // The sizes of the groups changed this epoch (recently touched, so
        // this is cheap; the dirty ones are only visited at a checkpoint).
        for id in std::mem::take(&mut self.changed) {
            let Some(slot) = self.slots.get_mut(id as usize) else { continue };
            if !slot.resized || slot.vacant {
                continue;
            }
            slot.resized = false;
            let size = slot.group.len() + GROUP_OVERHEAD + slot.value.as_ref().map_or(0, &size_of);
            self.cache.bytes = self.cache.bytes + size - slot.size;
            slot.size = size;
        }
        if ctx.checkpoint {
            self.dirty.sort_unstable();
            self.dirty.dedup();
        }
        let mut groups: Vec<&[u8]> = Vec::new();
        let mut values: Vec<&mut V> = Vec::new();
        // The dirty slots, each borrowed once: the ids are sorted and
        // distinct, so each is split off the part of the slab after the last.
        let mut rest: &mut [ValueSlot<V>] = &mut self.slots;
        let mut base = 0usize;
        let dirty: &[u32] = if ctx.checkpoint { &self.dirty } else { &[] };
        for &id in dirty {
            let Some((_, tail)) = std::mem::take(&mut rest).split_at_mut_checked(id as usize - base) else { break };
            let Some((slot, tail)) = tail.split_first_mut() else { break };
            rest = tail;
            base = id as usize + 1;
            if !slot.dirty || slot.vacant {
                continue;
            }
            slot.dirty = false;
            match &mut slot.value {
                Some(value) => {
                    slot.stored = true;
                    groups.push(&slot.group);
                    values.push(value);
                }
                // A group created since the last checkpoint is not stored.
                None if slot.stored => {
                    slot.stored = false;
                    batch.delete(group_key(&self.prefix, &slot.group));
                }
                None => {}
            }
        }
        if !values.is_empty() {
            let encoded = encode(&mut values)?;
            for (group, bytes) in groups.into_iter().zip(encoded) {
                batch.put(group_key(&self.prefix, group), bytes);
            }
        }
        if ctx.checkpoint {
            // A group deleted from the store leaves the cache too, or groups
            // that come and go (closed windows) would pile up; so does a
            // group cached as empty and left so.
            let mut gone: Vec<u32> = std::mem::take(&mut self.dirty);
            gone.append(&mut self.empty);
            gone.sort_unstable();
            gone.dedup();
            gone.retain(|&id| self.slots.get(id as usize).is_some_and(|s| !s.vacant && s.value.is_none() && !s.dirty));
            self.remove(&gone);
        }
        let evicted = self.cache.victims(budget, &self.slots);
        if !evicted.is_empty() {
            self.remove(&evicted);
            self.cache.settle(budget);
        }
        Ok(())
    }

    /// Drops groups from the cache, and their bytes from its count.
    fn remove(&mut self, ids: &[u32]) {
        for &id in ids {
            let size = self.slots.get(id as usize).map_or(0, |s| s.size);
            self.cache.bytes = self.cache.bytes.saturating_sub(size);
            self.vacate(id);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::{MemStore, StateStore};

    pub(crate) fn context(store: &MemStore, fresh: bool, checkpoint: bool) -> StateContext {
        StateContext { snapshot: store.snapshot(), budget: StateBudget::unlimited(), fresh, checkpoint }
    }

    /// The keys a batch puts and deletes, without the table's prefix and vnode.
    pub(crate) fn writes(batch: &WriteBatch, prefix: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let skip = prefix.len() + 2;
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for (key, value) in batch.ops() {
            let rest = key[skip..].to_vec();
            if value.is_some() { puts.push(rest) } else { deletes.push(rest) }
        }
        puts.sort();
        deletes.sort();
        (puts, deletes)
    }

    /// A group created and emptied between two checkpoints is never
    /// written; a stored group that empties is deleted.
    #[test]
    fn value_state_deletes_only_stored_groups() {
        let store = MemStore::new();
        let prefix = b"pv".to_vec();
        let encode = |values: &mut [&mut u8]| Ok(values.iter().map(|v| vec![**v]).collect());
        let decode = |stored: &[&[u8]]| Ok(stored.iter().map(|b| b[0]).collect());
        let mut table: ValueState<u8> = ValueState::new(&prefix);
        let ctx = context(&store, true, true);
        table.load(&ctx, &[b"a".to_vec(), b"b".to_vec()], decode).expect("load");
        *table.get_mut(b"a").expect("loaded") = Some(7);
        *table.get_mut(b"b").expect("loaded") = Some(8);
        *table.get_mut(b"b").expect("loaded") = None;
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch, |_| 1, encode).expect("flush");
        assert_eq!(writes(&batch, &prefix), (vec![b"a".to_vec()], vec![]));
        store.commit(1, batch).expect("commit");

        let mut table: ValueState<u8> = ValueState::new(&prefix);
        let ctx = context(&store, false, true);
        table.load(&ctx, &[b"a".to_vec()], decode).expect("load");
        let slot = table.get_mut(b"a").expect("loaded");
        assert_eq!(*slot, Some(7));
        *slot = None;
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch, |_| 1, encode).expect("flush");
        assert_eq!(writes(&batch, &prefix), (vec![], vec![b"a".to_vec()]));
    }

    /// `locate` finds each item's group with repeats sharing one slot, in
    /// order of first appearance; groups emptied at a checkpoint and groups
    /// evicted over budget leave the cache, their slots are reused, and a
    /// group located again reads its value back from the store.
    #[test]
    fn value_state_locates_reuses_slots_and_reads_evicted_groups_back() {
        let store = MemStore::new();
        let prefix = b"pl".to_vec();
        let encode = |values: &mut [&mut u8]| Ok(values.iter().map(|v| vec![**v]).collect());
        let decode = |stored: &[&[u8]]| Ok(stored.iter().map(|b| b[0]).collect());
        let mut table: ValueState<u8> = ValueState::new(&prefix);
        let ctx = context(&store, true, true);
        let items: [&[u8]; 5] = [b"b", b"a", b"b", b"c", b"a"];
        let located = table.locate(&ctx, items, decode).expect("locate");
        assert_eq!(located.first, vec![0, 1, 3]);
        assert_eq!(located.of_item, vec![0, 1, 0, 2, 1]);
        for (slot, value) in located.slots.iter().zip([2u8, 1, 3]) {
            *table.value_mut(*slot).expect("located") = Some(value);
        }
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch, |_| 1, encode).expect("flush");
        store.commit(1, batch).expect("commit");

        // "a" empties: deleted from the store and from the cache.
        let located = table.locate(&ctx, [b"a".as_slice()], decode).expect("locate");
        *table.value_mut(located.slots[0]).expect("located") = None;
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch, |_| 1, encode).expect("flush");
        assert_eq!(writes(&batch, &prefix), (vec![], vec![b"a".to_vec()]));
        store.commit(2, batch).expect("commit");
        assert_eq!(table.cached(), 2);
        assert!(table.get_mut(b"a").is_none());

        // A new group takes the vacant slot; the others keep their values.
        let ctx = context(&store, false, true);
        let located = table.locate(&ctx, [b"d".as_slice(), b"b", b"c"], decode).expect("locate");
        assert_eq!(table.value_mut(located.slots[0]).map(|v| *v), Some(None));
        assert_eq!(table.value_mut(located.slots[1]).map(|v| *v), Some(Some(2)));
        assert_eq!(table.value_mut(located.slots[2]).map(|v| *v), Some(Some(3)));
        *table.value_mut(located.slots[0]).expect("located") = Some(4);
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch, |_| 1, encode).expect("flush");
        store.commit(3, batch).expect("commit");

        // Over a tiny budget every clean group is evicted, then read back.
        let tight = StateContext { budget: StateBudget::new(1), ..context(&store, false, true) };
        let mut table: ValueState<u8> = ValueState::new(&prefix);
        table.locate(&tight, [b"c".as_slice(), b"d"], decode).expect("locate");
        table.flush(&tight, &mut WriteBatch::default(), |_| 1, encode).expect("flush");
        assert_eq!(table.cached(), 0);
        let located = table.locate(&tight, [b"c".as_slice(), b"d", b"a"], decode).expect("locate");
        let values: Vec<Option<u8>> = located.slots.iter().map(|s| table.value_mut(*s).and_then(|v| *v)).collect();
        assert_eq!(values, vec![Some(3), Some(4), None]);
    }
}
