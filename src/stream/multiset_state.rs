//! [`MultisetState`]: a multiset of byte strings per group, kept in the
//! state store under one key per distinct member (prefix ++ vnode ++ group
//! ++ member, the value its multiplicity, 8 bytes big-endian), with a cache
//! in front. A join side's rows per join key, a group's rows for MIN/MAX, a
//! top-N or window partition's rows, a temporal filter's pending rows.
//!
//! The cached groups live in a slab found through a hash table of slot
//! numbers (as in [`ValueState`](crate::stream::state_table::ValueState)):
//! a group's key is hashed once per call, and the groups changed since the
//! last checkpoint are listed, so that a checkpoint visits those and not
//! the whole cache. Each member records its own change (`stream/members.rs`),
//! so an update is one lookup in its group.

use crate::state::WriteBatch;
use crate::stream::cache_account::{CacheAccount, Cached};
use crate::stream::members::{Footprint, Members};
use crate::stream::slot_index::{Slot, SlotIndex};
use crate::stream::state_table::{StateContext, group_key};

/// Memory a cached group costs besides its key and members: its slab slot
/// and hash table entry, and once it grows past one member the map's first
/// allocation (a B-tree node holds 11 entries of 40 bytes and is allocated
/// whole; a hash map starts at 4 buckets). Rounded up: an accounting that
/// undercounts lets the cache outgrow its budget.
const GROUP_OVERHEAD: usize = 160 + 480;
/// Per member: its share of a B-tree node or of a hash map's buckets (up to
/// twice its 41 bytes just after the map doubles) and its heap block.
const MEMBER_OVERHEAD: usize = 96;

fn member_size(len: usize) -> usize {
    len + MEMBER_OVERHEAD
}

/// By how many bytes a member's update grew its group.
fn grown(member: &[u8], footprint: Footprint) -> isize {
    match footprint {
        Footprint::Grew => member_size(member.len()) as isize,
        Footprint::Shrank => -(member_size(member.len()) as isize),
        Footprint::Same => 0,
    }
}

struct GroupSlot {
    /// The group key; empty for a vacant slot (on the free list).
    group: Box<[u8]>,
    /// The key's hash in the table's index (kept so that removal and the
    /// index's growth need not hash the key again).
    hash: u64,
    members: Members,
    /// Has changes the next checkpoint writes (the slot is in `dirty`).
    dirty: bool,
    vacant: bool,
    /// The clock of the last `load` that touched the group.
    used: u64,
    size: usize,
}

impl Slot for GroupSlot {
    fn group(&self) -> &[u8] {
        &self.group
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

impl Cached for GroupSlot {
    fn evictable(&self) -> Option<(u64, usize)> {
        (!self.vacant && !self.dirty).then_some((self.used, self.size))
    }
}

/// A multiset of byte strings per group (see the module docs).
pub struct MultisetState {
    prefix: Vec<u8>,
    /// Groups keep their members in byte order (else hashed).
    ordered: bool,
    index: SlotIndex,
    slots: Vec<GroupSlot>,
    /// The slots changed since the last checkpoint.
    dirty: Vec<u32>,
    /// The slots loaded as empty since the last checkpoint (groups the
    /// store does not hold): a checkpoint drops those still empty.
    empty: Vec<u32>,
    /// Bytes, budget charge, clock, completeness.
    cache: CacheAccount,
}

impl MultisetState {
    /// A table whose groups list their members in byte order.
    pub fn new(prefix: &[u8]) -> Self {
        Self {
            prefix: prefix.to_vec(),
            ordered: true,
            index: SlotIndex::default(),
            slots: Vec::new(),
            dirty: Vec::new(),
            empty: Vec::new(),
            cache: CacheAccount::default(),
        }
    }

    /// A table whose groups list their members in no particular order
    /// (cheaper to update: a hash instead of byte comparisons).
    pub fn unordered(prefix: &[u8]) -> Self {
        let mut table = Self::new(prefix);
        table.ordered = false;
        table
    }

    /// The slot holding `group`, if cached.
    fn find(&self, group: &[u8], hash: u64) -> Option<u32> {
        self.index.find(&self.slots, group, hash)
    }

    fn slot(&self, group: &[u8]) -> Option<&GroupSlot> {
        let id = self.find(group, self.index.hash(group))?;
        self.slots.get(id as usize)
    }

    /// A new cached group, in a vacant slot or a new one.
    fn allocate(&mut self, group: &[u8], hash: u64, members: Members, size: usize) -> u32 {
        let slot = GroupSlot {
            group: group.into(),
            hash,
            members,
            dirty: false,
            vacant: false,
            used: self.cache.clock(),
            size,
        };
        self.cache.bytes += size;
        self.index.place(&mut self.slots, slot)
    }

    /// Drops a group from the cache, with its bytes.
    fn vacate(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else { return };
        if slot.vacant {
            return;
        }
        self.index.release(id, slot.hash);
        self.cache.bytes = self.cache.bytes.saturating_sub(slot.size);
        slot.group = Box::default();
        slot.members = Members::Empty;
        slot.dirty = false;
        slot.vacant = true;
    }

    /// Makes sure every group in `groups` is cached (one prefix scan per
    /// missing group). While the cache is complete a missing group is
    /// empty: nothing is read and no slot is made for it (a join probes its
    /// other side's keys every epoch; most have no rows there).
    pub fn load<'a>(&mut self, ctx: &StateContext, groups: impl IntoIterator<Item = &'a [u8]>) {
        let clock = self.cache.tick(ctx.fresh);
        for group in groups {
            let hash = self.index.hash(group);
            if let Some(id) = self.find(group, hash) {
                if let Some(slot) = self.slots.get_mut(id as usize) {
                    slot.used = clock;
                }
                continue;
            }
            if self.cache.complete() {
                continue;
            }
            let mut members = Members::default();
            let ordered = self.ordered;
            let mut size = group.len() + GROUP_OVERHEAD;
            let prefix = group_key(&self.prefix, group);
            ctx.snapshot.scan_prefix(&prefix, &mut |key, value| {
                let count = value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, i64::from_be_bytes);
                if count == 0 {
                    // Never written (a member leaves as a delete): not a member.
                    return;
                }
                let member = key.get(prefix.len()..).unwrap_or_default().to_vec();
                size += member_size(member.len());
                members.insert_stored(member, count, ordered);
            });
            let empty = members.is_vacant();
            let id = self.allocate(group, hash, members, size);
            if empty {
                self.empty.push(id);
            }
        }
    }

    /// The members of a loaded group (`None` if not loaded or empty).
    pub fn get(&self, group: &[u8]) -> Option<&Members> {
        self.slot(group).map(|s| &s.members).filter(|m| !m.is_empty())
    }

    /// Whether a loaded group has members.
    pub fn contains(&self, group: &[u8]) -> bool {
        self.get(group).is_some()
    }

    /// Whether a loaded group holds `member`.
    pub fn has(&self, group: &[u8], member: &[u8]) -> bool {
        self.slot(group).is_some_and(|s| s.members.get(member).is_some())
    }

    /// Changes a loaded group's members (one not cached is empty: loading
    /// made sure of that; `create` makes its slot). `change` says whether
    /// it changed anything and by how many bytes the group's entries grew;
    /// the group is then listed for the next checkpoint.
    fn change(&mut self, group: &[u8], create: bool, change: impl FnOnce(&mut Members) -> (bool, isize)) {
        let hash = self.index.hash(group);
        let id = match self.find(group, hash) {
            Some(id) => id,
            None if create => self.allocate(group, hash, Members::default(), group.len() + GROUP_OVERHEAD),
            None => return,
        };
        let Some(slot) = self.slots.get_mut(id as usize) else { return };
        let (changed, grown) = change(&mut slot.members);
        if !changed {
            return;
        }
        slot.size = slot.size.saturating_add_signed(grown);
        self.cache.bytes = self.cache.bytes.saturating_add_signed(grown);
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Adds `weight` to a member's multiplicity (the group must be loaded).
    pub fn add(&mut self, group: &[u8], member: &[u8], weight: i64) {
        if weight == 0 {
            return;
        }
        let ordered = self.ordered;
        self.change(group, true, |members| (true, grown(member, members.add(member, weight, ordered))));
    }

    /// Removes a member of a loaded group, whatever its multiplicity.
    pub fn remove(&mut self, group: &[u8], member: &[u8]) {
        self.change(group, false, |members| match members.remove(member) {
            (Some(_), footprint) => (true, grown(member, footprint)),
            (None, _) => (false, 0),
        });
    }

    /// Removes every member of a loaded group (deleted from the store at
    /// the next checkpoint).
    pub fn clear(&mut self, group: &[u8]) {
        self.change(group, false, |members| {
            if members.is_empty() {
                return (false, 0);
            }
            let freed: usize = members.clear().into_iter().map(member_size).sum();
            (true, -(freed as isize))
        });
    }

    /// How many groups the cache holds.
    pub fn cached(&self) -> usize {
        self.index.occupied(self.slots.len())
    }

    /// Every stored key under this table's prefix, without the prefix and
    /// vnode: group ++ member (for rebuilding an index at startup).
    pub fn stored_members(&self, ctx: &StateContext) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        let skip = self.prefix.len() + 2;
        ctx.snapshot.scan_prefix(&self.prefix, &mut |key, _| {
            if let Some(rest) = key.get(skip..) {
                found.push(rest.to_vec());
            }
        });
        found
    }

    /// At a checkpoint, writes the changed members into `batch` and drops
    /// the groups left empty. Then shrinks the cache to its share of the
    /// budget.
    pub fn flush(&mut self, ctx: &StateContext, batch: &mut WriteBatch) {
        let budget = &ctx.budget;
        if ctx.checkpoint {
            let mut visited = std::mem::take(&mut self.dirty);
            // In slab order: the writes come out near key order (they are
            // sorted before they reach the store anyway).
            visited.sort_unstable();
            for &id in &visited {
                let Some(slot) = self.slots.get_mut(id as usize) else { continue };
                if !slot.dirty || slot.vacant {
                    continue;
                }
                slot.dirty = false;
                let prefix = group_key(&self.prefix, &slot.group);
                let dropped = slot.members.checkpoint(|member, count| {
                    let mut key = Vec::with_capacity(prefix.len() + member.len());
                    key.extend_from_slice(&prefix);
                    key.extend_from_slice(member);
                    match count {
                        Some(n) => batch.put(key, n.to_be_bytes().to_vec()),
                        None => batch.delete(key),
                    }
                });
                let freed: usize = dropped.into_iter().map(member_size).sum();
                slot.size = slot.size.saturating_sub(freed);
                self.cache.bytes = self.cache.bytes.saturating_sub(freed);
            }
            // Emptied groups are now deleted from the store, and groups
            // loaded as empty hold nothing: both leave the cache.
            visited.append(&mut self.empty);
            for id in visited {
                if self.slots.get(id as usize).is_some_and(|s| !s.vacant && !s.dirty && s.members.is_vacant()) {
                    self.vacate(id);
                }
            }
        }
        let evicted = self.cache.victims(budget, &self.slots);
        if !evicted.is_empty() {
            for id in evicted {
                self.vacate(id);
            }
            self.cache.settle(budget);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemStore, StateStore};
    use crate::stream::cache_account::StateBudget;
    use crate::stream::state_table::tests::{context, writes};

    /// A member added and removed between two checkpoints is never written;
    /// one the store holds is deleted when it goes; the multiset read back
    /// from the store is the one in memory.
    #[test]
    fn multiset_writes_only_what_the_store_must_change() {
        let store = MemStore::new();
        let prefix = b"pm".to_vec();
        let mut table = MultisetState::new(&prefix);
        let ctx = context(&store, true, false);
        table.load(&ctx, [b"g".as_slice()]);
        table.add(b"g", b"kept", 1);
        table.add(b"g", b"brief", 1);
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch);
        assert!(batch.is_empty(), "no checkpoint, no writes");
        table.add(b"g", b"brief", -1);
        let mut batch = WriteBatch::default();
        table.flush(&context(&store, false, true), &mut batch);
        assert_eq!(writes(&batch, &prefix), (vec![b"gkept".to_vec()], vec![]));
        store.commit(1, batch).expect("commit");

        // A new table over the same store (a restart): the stored member
        // is read back, and its removal is a delete.
        let mut table = MultisetState::new(&prefix);
        let ctx = context(&store, false, true);
        table.load(&ctx, [b"g".as_slice()]);
        assert_eq!(
            table.get(b"g").map(|m| m.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()),
            Some(vec![b"kept".to_vec()])
        );
        table.remove(b"g", b"kept");
        table.add(b"g", b"new", 2);
        table.add(b"g", b"new", -2);
        table.add(b"g", b"last", 3);
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch);
        assert_eq!(writes(&batch, &prefix), (vec![b"glast".to_vec()], vec![b"gkept".to_vec()]));
        store.commit(2, batch).expect("commit");
        let mut table = MultisetState::new(&prefix);
        table.load(&context(&store, false, false), [b"g".as_slice()]);
        assert_eq!(table.get(b"g").and_then(|m| m.get(b"last".as_slice())), Some(&3));
        assert_eq!(table.get(b"g").map(|m| m.iter().count()), Some(1));

        // Cleared, a group's stored members are all deleted, and the group
        // leaves the cache.
        let ctx = context(&store, false, true);
        table.clear(b"g");
        assert!(!table.contains(b"g"));
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch);
        assert_eq!(writes(&batch, &prefix), (vec![], vec![b"glast".to_vec()]));
        assert_eq!(table.cached(), 0);
    }

    /// The byte count follows the members (tombstones until the checkpoint
    /// that deletes them); groups loaded empty leave at the checkpoint; over
    /// a tiny budget the clean groups are evicted and read back on demand.
    #[test]
    fn multiset_counts_its_bytes_and_evicts_clean_groups() {
        let store = MemStore::new();
        let prefix = b"pb".to_vec();
        let mut table = MultisetState::new(&prefix);
        let ctx = context(&store, true, true);
        table.load(&ctx, [b"a".as_slice(), b"b"]);
        table.add(b"a", b"x", 1);
        table.add(b"a", b"yy", 2);
        table.add(b"b", b"z", 1);
        let group = |g: &[u8]| g.len() + GROUP_OVERHEAD;
        assert_eq!(table.cache.bytes, group(b"a") + member_size(1) + member_size(2) + group(b"b") + member_size(1));
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch);
        store.commit(1, batch).expect("commit");
        table.remove(b"a", b"x");
        assert_eq!(table.cache.bytes, group(b"a") + member_size(1) + member_size(2) + group(b"b") + member_size(1));
        let mut batch = WriteBatch::default();
        table.flush(&ctx, &mut batch);
        assert_eq!(writes(&batch, &prefix), (vec![], vec![b"ax".to_vec()]));
        store.commit(2, batch).expect("commit");
        assert_eq!(table.cache.bytes, group(b"a") + member_size(2) + group(b"b") + member_size(1));

        // A table that is not fresh reads misses from the store; a group the
        // store lacks is cached empty until the checkpoint.
        let mut table = MultisetState::new(&prefix);
        let ctx = context(&store, false, true);
        table.load(&ctx, [b"a".as_slice(), b"nothing"]);
        assert_eq!(table.cached(), 2);
        table.flush(&ctx, &mut WriteBatch::default());
        assert_eq!(table.cached(), 1);

        let tight = StateContext { budget: StateBudget::new(1), ..context(&store, false, true) };
        let mut table = MultisetState::new(&prefix);
        table.load(&tight, [b"a".as_slice(), b"b"]);
        assert_eq!(table.cached(), 2);
        table.flush(&tight, &mut WriteBatch::default());
        assert_eq!((table.cached(), table.cache.bytes), (0, 0));
        table.load(&tight, [b"b".as_slice()]);
        assert_eq!(table.get(b"b").and_then(|m| m.get(b"z".as_slice())), Some(&1));
    }
}
