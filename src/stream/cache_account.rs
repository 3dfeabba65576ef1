//! [`CacheAccount`]: the memory books of one state table's cache, shared by
//! [`ValueState`](crate::stream::state_table::ValueState) and
//! [`MultisetState`](crate::stream::multiset_state::MultisetState).
//!
//! A table counts the bytes its cached groups hold, charges them to the
//! view's [`StateBudget`] (and gives them back when it is dropped), stamps
//! each group with the clock of the last load that touched it, and, when
//! the budget asks it to shrink, picks the clean groups to evict, least
//! recently used first. It also knows whether the cache is *complete* (it
//! holds every group the store holds, so a miss is an empty group without a
//! store read): true from a fresh build until the first eviction. Only the
//! epoch that builds a view is fresh, so once a table has evicted, no later
//! load makes it complete again.
//!
//! The tables differ in what a slot holds and how a group is written; the
//! books are the same, so they live here once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The memory all operators' caches may hold together.
#[derive(Debug)]
pub struct StateBudget {
    limit: usize,
    used: AtomicUsize,
}

impl StateBudget {
    pub fn new(limit_bytes: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit_bytes, used: AtomicUsize::new(0) })
    }
    /// No limit (the in-memory store: nothing to fall back on).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX)
    }
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
    /// The caches hold more than the limit (dirty state cannot be evicted
    /// until a checkpoint writes it).
    pub fn exceeded(&self) -> bool {
        self.used() > self.limit
    }
    pub(crate) fn charge(&self, before: usize, after: usize) {
        if after >= before {
            self.used.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
    /// How many bytes a table holding `own` should shrink to, if any.
    pub(crate) fn target_for(&self, own: usize) -> Option<usize> {
        let used = self.used();
        if used <= self.limit || own == 0 {
            return None;
        }
        // Shrink in proportion to the table's share, a quarter below the
        // limit so that eviction does not run again after every epoch.
        let share = (own as u128 * self.limit as u128 * 3 / 4 / used as u128) as usize;
        Some(share)
    }
}

/// What the books need of a cached group's slot.
pub trait Cached {
    /// The slot's last-use clock and its bytes, if it may be evicted (it
    /// holds a group and that group is clean); `None` otherwise.
    fn evictable(&self) -> Option<(u64, usize)>;
}

/// The bytes, budget charge, clock and completeness of one table's cache.
#[derive(Default)]
pub struct CacheAccount {
    /// Bytes the cached groups hold, as the table counts them.
    pub bytes: usize,
    clock: u64,
    /// The budget the bytes are charged to (from the first settle on), and
    /// how many are charged.
    budget: Option<Arc<StateBudget>>,
    charged: usize,
    complete: bool,
}

impl CacheAccount {
    /// Starts a load: a new clock value to stamp the groups it touches
    /// (and a fresh build makes the cache complete).
    /// `fresh`: the load is part of a fresh build (nothing stored).
    pub fn tick(&mut self, fresh: bool) -> u64 {
        self.clock += 1;
        self.complete |= fresh;
        self.clock
    }

    /// The clock of the latest load.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Whether the cache holds every stored group (a miss is empty).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Brings the budget's count of this table's bytes up to date.
    pub fn settle(&mut self, budget: &Arc<StateBudget>) {
        if self.budget.is_none() {
            self.budget = Some(budget.clone());
        }
        budget.charge(self.charged, self.bytes);
        self.charged = self.bytes;
    }

    /// Settles, then, if the budget wants this table smaller, the slots to
    /// evict (clean ones, least recently used first) until its bytes would
    /// fit the target. The caller vacates them (taking their bytes off
    /// [`bytes`](Self::bytes)) and settles again; the cache is no longer
    /// complete once any go.
    pub fn victims<S: Cached>(&mut self, budget: &Arc<StateBudget>, slots: &[S]) -> Vec<u32> {
        self.settle(budget);
        let Some(target) = budget.target_for(self.bytes) else { return Vec::new() };
        let mut candidates: Vec<(u64, u32, usize)> = slots
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| slot.evictable().map(|(used, size)| (used, id as u32, size)))
            .collect();
        candidates.sort_unstable();
        let mut victims = Vec::new();
        let mut bytes = self.bytes;
        for (_, id, size) in candidates {
            if bytes <= target {
                break;
            }
            bytes = bytes.saturating_sub(size);
            victims.push(id);
        }
        if !victims.is_empty() {
            self.complete = false;
        }
        victims
    }
}

impl Drop for CacheAccount {
    /// A dropped table gives its bytes back to the budget.
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.charge(self.charged, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slot(Option<(u64, usize)>);

    impl Cached for Slot {
        fn evictable(&self) -> Option<(u64, usize)> {
            self.0
        }
    }

    /// Over budget the least recently used clean slots go first, only as
    /// many as bring the bytes to the target; the charge follows the bytes
    /// and is given back on drop.
    #[test]
    fn victims_are_the_least_recently_used_clean_slots_down_to_the_target() {
        let budget = StateBudget::new(100);
        let mut account = CacheAccount::default();
        account.bytes = 250;
        // Slot 1 is dirty (not evictable); 2 is the oldest clean one.
        let slots = [Slot(Some((5, 100))), Slot(None), Slot(Some((1, 100))), Slot(Some((9, 50)))];
        let victims = account.victims(&budget, &slots);
        assert_eq!(budget.used(), 250, "the books were settled first");
        let target = budget.target_for(250).expect("over budget");
        assert!(target <= 100, "a table over the whole budget shrinks to at most it");
        let mut bytes = 250usize;
        for &id in &victims {
            bytes -= slots[id as usize].0.expect("evictable").1;
        }
        assert!(bytes <= target, "evicted down to the target: {victims:?}");
        assert_eq!(victims.first(), Some(&2), "the least recently used first");
        assert!(!victims.contains(&1), "a dirty slot stays");
        assert!(!account.complete());

        account.bytes = bytes;
        account.settle(&budget);
        assert_eq!(budget.used(), bytes);
        drop(account);
        assert_eq!(budget.used(), 0, "a dropped table gives its bytes back");
    }
}
