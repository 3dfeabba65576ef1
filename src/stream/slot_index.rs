//! [`SlotIndex`]: how a state table finds a cached group by its key. The
//! groups live in the table's slab (a `Vec` of its own slot type), and the
//! index is a hash table of slot numbers with the list of vacant slots, so
//! a group is hashed once per lookup, reached by number after that, and a
//! slot freed by a group that left is reused before the slab grows.
//!
//! Shared by [`ValueState`](crate::stream::state_table::ValueState) and
//! [`MultisetState`](crate::stream::multiset_state::MultisetState), whose
//! slots differ in what they hold beside the group key.

use std::hash::BuildHasher;

/// What the index needs of a table's slot.
pub trait Slot {
    /// The group key (empty for a vacant slot).
    fn group(&self) -> &[u8];
    /// The key's hash, kept so that removal and the table's growth need
    /// not hash the key again.
    fn hash(&self) -> u64;
}

/// A hash table of slot numbers keyed by the slots' group keys, and the
/// vacant slots.
#[derive(Default)]
pub struct SlotIndex {
    hasher: foldhash::fast::RandomState,
    table: hashbrown::HashTable<u32>,
    free: Vec<u32>,
}

impl SlotIndex {
    pub fn hash(&self, group: &[u8]) -> u64 {
        self.hasher.hash_one(group)
    }

    /// The slot holding `group` (with its `hash`), if cached.
    pub fn find<S: Slot>(&self, slots: &[S], group: &[u8], hash: u64) -> Option<u32> {
        self.table.find(hash, |&id| slots.get(id as usize).is_some_and(|s| s.group() == group)).copied()
    }

    /// Puts a new group's slot in a vacant place or at the slab's end, and
    /// indexes it.
    pub fn place<S: Slot>(&mut self, slots: &mut Vec<S>, slot: S) -> u32 {
        let hash = slot.hash();
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(place) = slots.get_mut(id as usize) {
                    *place = slot;
                }
                id
            }
            None => {
                slots.push(slot);
                (slots.len() - 1) as u32
            }
        };
        let slots = &*slots;
        self.table.insert_unique(hash, id, |&other| slots.get(other as usize).map_or(0, |s| s.hash()));
        id
    }

    /// Unindexes slot `id` (its group's `hash`) and lists it as vacant; the
    /// caller empties the slot.
    pub fn release(&mut self, id: u32, hash: u64) {
        if let Ok(entry) = self.table.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        self.free.push(id);
    }

    /// How many of `slab_len` slots hold a group.
    pub fn occupied(&self, slab_len: usize) -> usize {
        slab_len - self.free.len()
    }
}
