//! The members of one multiset group with their multiplicities, and for
//! each what the next checkpoint must write: the per-group part of
//! `MultisetState`.
//!
//! A member carries two flags next to its count: `changed` (since the last
//! checkpoint) and `stored` (the store holds it, as of that checkpoint). So
//! one lookup both updates a member and records the change, and a member
//! that the store holds and that leaves is kept as a tombstone (count 0)
//! until the checkpoint deletes it; one that came and went in between is
//! simply dropped and never written. Reads see only live members.
//!
//! Many groups of a join side hold one row (Nexmark q7 keys bids by price:
//! 2M events have 1.84M bids at 898k prices, most of them bid once, within
//! a time bound fewer still), so a group keeps a single member inline and
//! only a group that grows gets a map. A one-member group then costs its
//! member's bytes instead of a B-tree node (about 400 bytes). The map is a
//! B-tree (members in byte order) for the tables whose readers want them
//! in order (top-N, window partitions, MIN/MAX), a hash map for the others
//! (a join side: one hash instead of a B-tree's comparisons of row bytes,
//! each a cache miss). Its hasher has a fixed seed, so a group's members
//! come out in the same order in every run given the same changes (a
//! group read back from the store after a restart or an eviction is built
//! in store order, so its order may differ: readers of a hashed group must
//! not depend on it).

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::collections::hash_map;

/// A group's members when order does not matter.
type HashedMembers = std::collections::HashMap<Vec<u8>, Entry, foldhash::fast::FixedState>;

/// A member's multiplicity and what the next checkpoint must do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Zero only for a tombstone: a stored member that left.
    n: i64,
    /// Changed since the last checkpoint.
    changed: bool,
    /// The store holds this member (as of the last checkpoint). A clean
    /// member is always stored: the cache agrees with the store.
    stored: bool,
}

impl Entry {
    fn live(&self) -> bool {
        self.n != 0
    }
}

/// How an update changed a group's entries (for its owner's byte count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footprint {
    /// A new entry was made.
    Grew,
    /// An entry was dropped.
    Shrank,
    /// The entries are the same ones.
    Same,
}

/// A group's members with their multiplicities (in byte order, if the
/// group grew ordered).
#[derive(Debug, Default)]
pub enum Members {
    #[default]
    Empty,
    One(Vec<u8>, Entry),
    /// `live`: how many entries are not tombstones.
    Many {
        map: BTreeMap<Vec<u8>, Entry>,
        live: usize,
    },
    Hashed {
        map: HashedMembers,
        live: usize,
    },
}

impl Members {
    /// No live members (tombstones may wait for the checkpoint).
    pub fn is_empty(&self) -> bool {
        match self {
            Members::Empty => true,
            Members::One(_, entry) => !entry.live(),
            Members::Many { live, .. } | Members::Hashed { live, .. } => *live == 0,
        }
    }

    /// No entries at all, tombstones included.
    pub fn is_vacant(&self) -> bool {
        match self {
            Members::Empty => true,
            Members::One(..) => false,
            Members::Many { map, .. } => map.is_empty(),
            Members::Hashed { map, .. } => map.is_empty(),
        }
    }

    fn entry(&self, member: &[u8]) -> Option<&Entry> {
        match self {
            Members::One(only, entry) if only.as_slice() == member => Some(entry),
            Members::Many { map, .. } => map.get(member),
            Members::Hashed { map, .. } => map.get(member),
            _ => None,
        }
    }

    /// A live member's multiplicity.
    pub fn get(&self, member: &[u8]) -> Option<&i64> {
        self.entry(member).filter(|e| e.live()).map(|e| &e.n)
    }

    /// A member read from the store (clean and stored; not yet present).
    /// `ordered`: a group that grows keeps its members in byte order.
    pub fn insert_stored(&mut self, member: Vec<u8>, n: i64, ordered: bool) {
        self.insert(member, Entry { n, changed: false, stored: true }, ordered);
    }

    fn insert(&mut self, member: Vec<u8>, entry: Entry, ordered: bool) {
        let more = usize::from(entry.live());
        match self {
            Members::Empty => *self = Members::One(member, entry),
            Members::One(..) => {
                let Members::One(only, first) = std::mem::take(self) else { return };
                let live = usize::from(first.live()) + more;
                *self = if ordered {
                    Members::Many { map: BTreeMap::from([(only, first), (member, entry)]), live }
                } else {
                    let mut map = HashedMembers::with_capacity_and_hasher(4, Default::default());
                    map.insert(only, first);
                    map.insert(member, entry);
                    Members::Hashed { map, live }
                };
            }
            Members::Many { map, live } => {
                *live += more;
                map.insert(member, entry);
            }
            Members::Hashed { map, live } => {
                *live += more;
                map.insert(member, entry);
            }
        }
    }

    /// Drops an entry whatever it holds.
    fn erase(&mut self, member: &[u8]) {
        match self {
            Members::One(only, _) if only.as_slice() == member => *self = Members::Empty,
            Members::Many { map, .. } => {
                map.remove(member);
            }
            Members::Hashed { map, .. } => {
                map.remove(member);
            }
            _ => {}
        }
    }

    /// Sets an existing entry's count (recording the change); a member the
    /// store does not hold is dropped when its count reaches zero.
    fn set(&mut self, member: &[u8], n: i64) -> Footprint {
        let (entry, live) = match self {
            Members::One(only, entry) if only.as_slice() == member => (entry, None),
            Members::Many { map, live } => match map.get_mut(member) {
                Some(entry) => (entry, Some(live)),
                None => return Footprint::Same,
            },
            Members::Hashed { map, live } => match map.get_mut(member) {
                Some(entry) => (entry, Some(live)),
                None => return Footprint::Same,
            },
            _ => return Footprint::Same,
        };
        let was_live = entry.live();
        entry.n = n;
        entry.changed = true;
        if let Some(live) = live {
            *live = *live + usize::from(entry.live()) - usize::from(was_live);
        }
        if n == 0 && !entry.stored {
            self.erase(member);
            return Footprint::Shrank;
        }
        Footprint::Same
    }

    /// Adds `weight` to a member's multiplicity, recording the change
    /// (`ordered`: as for [`insert_stored`](Self::insert_stored)).
    pub fn add(&mut self, member: &[u8], weight: i64, ordered: bool) -> Footprint {
        if weight == 0 {
            return Footprint::Same;
        }
        match self.entry(member).map(|e| e.n) {
            Some(n) => self.set(member, n + weight),
            None => {
                self.insert(member.to_vec(), Entry { n: weight, changed: true, stored: false }, ordered);
                Footprint::Grew
            }
        }
    }

    /// Removes a member whatever its multiplicity; returns the multiplicity
    /// it had, if it was live.
    pub fn remove(&mut self, member: &[u8]) -> (Option<i64>, Footprint) {
        match self.entry(member).map(|e| e.n).filter(|&n| n != 0) {
            Some(n) => (Some(n), self.set(member, 0)),
            None => (None, Footprint::Same),
        }
    }

    /// Removes every member; returns the lengths of the members dropped
    /// (the stored ones stay as tombstones until the checkpoint).
    pub fn clear(&mut self) -> Vec<usize> {
        let live: Vec<Vec<u8>> = self.iter().map(|(m, _)| m.clone()).collect();
        let mut dropped = Vec::new();
        for member in live {
            if self.set(&member, 0) == Footprint::Shrank {
                dropped.push(member.len());
            }
        }
        dropped
    }

    /// At a checkpoint: hands every changed member to `write` (its count, or
    /// `None` to delete it from the store), marks it clean and stored, and
    /// drops the tombstones. Returns the lengths of the dropped members.
    pub fn checkpoint(&mut self, mut write: impl FnMut(&[u8], Option<i64>)) -> Vec<usize> {
        let mut dropped = Vec::new();
        let mut visit = |member: &Vec<u8>, entry: &mut Entry| -> bool {
            if entry.changed {
                entry.changed = false;
                if entry.live() {
                    write(member, Some(entry.n));
                    entry.stored = true;
                } else {
                    if entry.stored {
                        write(member, None);
                    }
                    dropped.push(member.len());
                    return false;
                }
            }
            true
        };
        match self {
            Members::Empty => {}
            Members::One(member, entry) => {
                if !visit(member, entry) {
                    *self = Members::Empty;
                }
            }
            Members::Many { map, .. } => map.retain(|member, entry| visit(member, entry)),
            Members::Hashed { map, .. } => {
                map.retain(|member, entry| visit(member, entry));
                // A hash map keeps its capacity when entries leave: give it
                // back once most are gone (a join key whose rows expired).
                if map.capacity() > 4 * map.len().max(4) {
                    map.shrink_to(map.len());
                }
            }
        }
        dropped
    }

    /// The live members (in byte order if ordered).
    pub fn iter(&self) -> MembersIter<'_> {
        match self {
            Members::Empty => MembersIter::One(None),
            Members::One(only, entry) => MembersIter::One(entry.live().then_some((only, &entry.n))),
            Members::Many { map, .. } => MembersIter::Many(map.iter()),
            Members::Hashed { map, .. } => MembersIter::Hashed(map.iter()),
        }
    }
}

impl<'a> IntoIterator for &'a Members {
    type Item = (&'a Vec<u8>, &'a i64);
    type IntoIter = MembersIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The live members of a group, with their multiplicities.
pub enum MembersIter<'a> {
    One(Option<(&'a Vec<u8>, &'a i64)>),
    Many(btree_map::Iter<'a, Vec<u8>, Entry>),
    Hashed(hash_map::Iter<'a, Vec<u8>, Entry>),
}

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a Vec<u8>, &'a i64);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            MembersIter::One(one) => one.take(),
            MembersIter::Many(iter) => iter.find(|(_, e)| e.live()).map(|(m, e)| (m, &e.n)),
            MembersIter::Hashed(iter) => iter.find(|(_, e)| e.live()).map(|(m, e)| (m, &e.n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(members: &Members) -> Vec<(Vec<u8>, i64)> {
        members.iter().map(|(m, n)| (m.clone(), *n)).collect()
    }

    fn sorted(mut list: Vec<(Vec<u8>, i64)>) -> Vec<(Vec<u8>, i64)> {
        list.sort();
        list
    }

    fn written(members: &mut Members) -> Vec<(Vec<u8>, Option<i64>)> {
        let mut out = Vec::new();
        members.checkpoint(|m, n| out.push((m.to_vec(), n)));
        out.sort();
        out
    }

    /// Growing from one member to many and back keeps the multiset and its
    /// byte order, whatever the tombstones in between.
    #[test]
    fn members_from_one_to_many_in_byte_order() {
        let mut members = Members::default();
        assert!(members.is_empty() && members.iter().next().is_none());
        assert_eq!(members.add(b"m", 2, true), Footprint::Grew);
        assert_eq!(members.get(b"m"), Some(&2));
        members.add(b"c", 1, true);
        members.add(b"x", 3, true);
        assert_eq!(members.add(b"m", 5, true), Footprint::Same);
        assert_eq!(listed(&members), vec![(b"c".to_vec(), 1), (b"m".to_vec(), 7), (b"x".to_vec(), 3)]);
        assert_eq!(members.remove(b"m"), (Some(7), Footprint::Shrank));
        assert_eq!(members.remove(b"m"), (None, Footprint::Same));
        assert_eq!((&members).into_iter().count(), 2);
        assert_eq!(members.add(b"c", -1, true), Footprint::Shrank);
        assert_eq!(members.add(b"x", -3, true), Footprint::Shrank);
        assert!(members.is_empty() && members.is_vacant());
    }

    /// A hashed group gives its table's memory back at the checkpoint once
    /// most of its members have left.
    #[test]
    fn a_hashed_group_shrinks_when_its_members_leave() {
        let mut members = Members::default();
        let names: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for name in &names {
            members.add(name, 1, false);
        }
        let capacity = |m: &Members| match m {
            Members::Hashed { map, .. } => map.capacity(),
            _ => 0,
        };
        assert!(capacity(&members) >= 1000);
        for name in names.iter().skip(2) {
            members.add(name, -1, false);
        }
        members.checkpoint(|_, _| {});
        assert_eq!(sorted(listed(&members)), vec![(names[0].clone(), 1), (names[1].clone(), 1)]);
        assert!(capacity(&members) <= 16, "capacity {}", capacity(&members));
    }

    /// A checkpoint writes what changed since the last one: a member added
    /// and gone in between is never written, a stored member that leaves
    /// is deleted (and waits as a tombstone until then), and a stored
    /// member that returns before the checkpoint is simply rewritten;
    /// alike whether the group keeps its members in order or hashed.
    #[test]
    fn a_checkpoint_writes_only_what_the_store_must_change() {
        for ordered in [true, false] {
            let mut members = Members::default();
            members.insert_stored(b"kept".to_vec(), 1, ordered);
            members.insert_stored(b"gone".to_vec(), 2, ordered);
            members.insert_stored(b"back".to_vec(), 1, ordered);
            assert_eq!(written(&mut members), vec![], "nothing changed");
            members.add(b"brief", 1, ordered);
            members.add(b"brief", -1, ordered);
            assert_eq!(members.add(b"gone", -2, ordered), Footprint::Same, "a tombstone");
            assert_eq!(members.get(b"gone"), None);
            assert!(!members.is_vacant());
            members.remove(b"back");
            members.add(b"back", 4, ordered);
            members.add(b"new", 3, ordered);
            assert_eq!(
                written(&mut members),
                vec![(b"back".to_vec(), Some(4)), (b"gone".to_vec(), None), (b"new".to_vec(), Some(3))]
            );
            assert_eq!(
                sorted(listed(&members)),
                vec![(b"back".to_vec(), 4), (b"kept".to_vec(), 1), (b"new".to_vec(), 3)]
            );
            assert_eq!(written(&mut members), vec![], "all clean");

            // Cleared, the stored members are deleted at the next checkpoint;
            // an inline member leaves no tombstone once written.
            members.clear();
            assert!(members.is_empty() && !members.is_vacant());
            assert_eq!(written(&mut members).len(), 3);
            assert!(members.is_vacant());
            let mut one = Members::default();
            one.insert_stored(b"a".to_vec(), 1, ordered);
            assert_eq!(one.get(b"b"), None);
            assert_eq!(one.remove(b"a"), (Some(1), Footprint::Same));
            assert!(one.is_empty() && !one.is_vacant());
            assert_eq!(written(&mut one), vec![(b"a".to_vec(), None)]);
            assert!(one.is_vacant());
        }
    }
}
