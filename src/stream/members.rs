//! The members of one multiset group, and which of them changed since the
//! last checkpoint: the per-group parts of `MultisetState`.
//!
//! Many groups of a join side hold one row (Nexmark q7 keys bids by price:
//! 2M events have 1.84M bids at 898k prices, most of them bid once, within
//! a time bound fewer still), so both keep a single entry inline and only
//! a group that grows gets a B-tree (members, in order) or a hash map
//! (changes). A one-member group then costs its member's bytes instead of
//! a B-tree node (about 400 bytes) and a hash table.

use std::collections::BTreeMap;
use std::collections::btree_map;

use crate::hash::HashMap;

/// A group's members with their multiplicities, in byte order.
#[derive(Debug, Default)]
pub enum Members {
    #[default]
    Empty,
    One(Vec<u8>, i64),
    Many(BTreeMap<Vec<u8>, i64>),
}

impl Members {
    pub fn is_empty(&self) -> bool {
        match self {
            Members::Empty => true,
            Members::One(..) => false,
            Members::Many(map) => map.is_empty(),
        }
    }

    pub fn get(&self, member: &[u8]) -> Option<&i64> {
        match self {
            Members::One(only, n) if only.as_slice() == member => Some(n),
            Members::Many(map) => map.get(member),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, member: &[u8]) -> Option<&mut i64> {
        match self {
            Members::One(only, n) if only.as_slice() == member => Some(n),
            Members::Many(map) => map.get_mut(member),
            _ => None,
        }
    }

    /// Adds a member that is not there yet.
    pub fn insert(&mut self, member: Vec<u8>, n: i64) {
        match std::mem::take(self) {
            Members::Empty => *self = Members::One(member, n),
            Members::One(only, m) => {
                *self = Members::Many(BTreeMap::from([(only, m), (member, n)]));
            }
            Members::Many(mut map) => {
                map.insert(member, n);
                *self = Members::Many(map);
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> Option<i64> {
        match self {
            Members::One(only, n) if only.as_slice() == member => {
                let n = *n;
                *self = Members::Empty;
                Some(n)
            }
            Members::Many(map) => map.remove(member),
            _ => None,
        }
    }

    /// The members in byte order.
    pub fn iter(&self) -> MembersIter<'_> {
        match self {
            Members::Empty => MembersIter::One(None),
            Members::One(only, n) => MembersIter::One(Some((only, n))),
            Members::Many(map) => MembersIter::Many(map.iter()),
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

/// The members of a group in byte order, with their multiplicities.
pub enum MembersIter<'a> {
    One(Option<(&'a Vec<u8>, &'a i64)>),
    Many(btree_map::Iter<'a, Vec<u8>, i64>),
}

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a Vec<u8>, &'a i64);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            MembersIter::One(one) => one.take(),
            MembersIter::Many(iter) => iter.next(),
        }
    }
}

/// A group's members changed since the last checkpoint, each with whether
/// the store holds it (as of that checkpoint).
#[derive(Debug, Default)]
pub enum Changed {
    #[default]
    None,
    One(Vec<u8>, bool),
    Many(HashMap<Vec<u8>, bool>),
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        match self {
            Changed::None => true,
            Changed::One(..) => false,
            Changed::Many(map) => map.is_empty(),
        }
    }

    pub fn contains(&self, member: &[u8]) -> bool {
        match self {
            Changed::None => false,
            Changed::One(only, _) => only.as_slice() == member,
            Changed::Many(map) => map.contains_key(member),
        }
    }

    /// Records a change of `member`; the first change since the checkpoint
    /// says what the store holds, later ones keep it.
    pub fn mark(&mut self, member: &[u8], stored: bool) {
        if self.contains(member) {
            return;
        }
        match std::mem::take(self) {
            Changed::None => *self = Changed::One(member.to_vec(), stored),
            Changed::One(only, was) => {
                let mut map = HashMap::default();
                map.insert(only, was);
                map.insert(member.to_vec(), stored);
                *self = Changed::Many(map);
            }
            Changed::Many(mut map) => {
                map.insert(member.to_vec(), stored);
                *self = Changed::Many(map);
            }
        }
    }

    /// The changes, leaving none.
    pub fn take(&mut self) -> Vec<(Vec<u8>, bool)> {
        match std::mem::take(self) {
            Changed::None => Vec::new(),
            Changed::One(member, stored) => vec![(member, stored)],
            Changed::Many(map) => map.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Growing from one member to many and back keeps the multiset and its
    /// byte order; changes keep the first word on what the store holds.
    #[test]
    fn members_and_changes_from_one_to_many() {
        let mut members = Members::default();
        assert!(members.is_empty() && members.iter().next().is_none());
        members.insert(b"m".to_vec(), 2);
        assert_eq!(members.get(b"m"), Some(&2));
        members.insert(b"c".to_vec(), 1);
        members.insert(b"x".to_vec(), 3);
        *members.get_mut(b"m").expect("present") += 5;
        let listed: Vec<(Vec<u8>, i64)> = members.iter().map(|(m, n)| (m.clone(), *n)).collect();
        assert_eq!(listed, vec![(b"c".to_vec(), 1), (b"m".to_vec(), 7), (b"x".to_vec(), 3)]);
        assert_eq!(members.remove(b"m"), Some(7));
        assert_eq!(members.remove(b"m"), None);
        assert_eq!((&members).into_iter().count(), 2);
        let mut one = Members::One(b"a".to_vec(), 1);
        assert_eq!(one.get(b"b"), None);
        assert_eq!(one.remove(b"a"), Some(1));
        assert!(one.is_empty());

        let mut changed = Changed::default();
        changed.mark(b"a", true);
        changed.mark(b"a", false);
        changed.mark(b"b", false);
        changed.mark(b"b", true);
        assert!(changed.contains(b"a") && changed.contains(b"b") && !changed.contains(b"c"));
        let mut taken = changed.take();
        taken.sort();
        assert_eq!(taken, vec![(b"a".to_vec(), true), (b"b".to_vec(), false)]);
        assert!(changed.is_empty());
    }
}
