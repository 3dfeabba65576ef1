//! SUBSCRIBE: the committed changes of a table or materialized view,
//! pushed to clients epoch by epoch.
//!
//! A subscriber is registered under the epoch lock, at the same committed
//! epoch its snapshot (the relation's rows) is read at, so it gets every
//! later change exactly once and nothing the snapshot already holds. The
//! coordinator hands each epoch's changes of subscribed relations to
//! [`Subscriptions::publish`] only after the epoch is written.
//!
//! Each subscriber has a bounded queue of epochs. A client that reads so
//! slowly that its queue fills is cut off (its subscription ends with an
//! error) rather than holding back every writer or growing without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::state::Epoch;
use crate::stream::{ChangeBatch, RelationId};

/// Epochs a subscriber may have waiting before it is cut off.
pub const QUEUE_EPOCHS: usize = 1024;

/// One epoch's changes to a subscribed relation.
pub struct Update {
    pub epoch: Epoch,
    pub changes: ChangeBatch,
}

struct Subscriber {
    queue: mpsc::Sender<Update>,
    cut_off: Arc<AtomicBool>,
}

/// The receiving end of a subscription.
pub struct Feed {
    pub updates: mpsc::Receiver<Update>,
    /// Set when the queue overflowed: no update after the queued ones.
    pub cut_off: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Subscriptions {
    by_relation: Mutex<HashMap<RelationId, Vec<Subscriber>>>,
}

impl Subscriptions {
    /// Whether `relation` has subscribers (their changes are kept for
    /// [`publish`](Self::publish)).
    pub fn wanted(&self, relation: RelationId) -> bool {
        self.by_relation.lock().get(&relation).is_some_and(|s| !s.is_empty())
    }

    /// A new subscriber of `relation`: call under the epoch lock.
    pub fn add(&self, relation: RelationId) -> Feed {
        let (queue, updates) = mpsc::channel(QUEUE_EPOCHS);
        let cut_off = Arc::new(AtomicBool::new(false));
        self.by_relation.lock().entry(relation).or_default().push(Subscriber { queue, cut_off: cut_off.clone() });
        Feed { updates, cut_off }
    }

    /// Hands a committed epoch's changes to the subscribers; drops those
    /// that are gone or too far behind.
    pub fn publish(&self, epoch: Epoch, changes: Vec<(RelationId, ChangeBatch)>) {
        if changes.is_empty() {
            return;
        }
        let mut by_relation = self.by_relation.lock();
        for (relation, change) in changes {
            let Some(subscribers) = by_relation.get_mut(&relation) else { continue };
            subscribers.retain(|subscriber| {
                match subscriber.queue.try_send(Update { epoch, changes: change.clone() }) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        subscriber.cut_off.store(true, Ordering::Release);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        by_relation.retain(|_, subscribers| !subscribers.is_empty());
    }

    /// Drops the subscribers of a relation that is dropped: their feeds end.
    pub fn remove_relation(&self, relation: RelationId) {
        self.by_relation.lock().remove(&relation);
    }
}
