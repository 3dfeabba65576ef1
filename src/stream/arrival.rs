//! Records arriving at a source reader that is told when they do, and the
//! wake-up of the source pump that waits for them.
//!
//! Most readers cannot say whether a read would find anything (a paced
//! generator, lines appended to a file): the source pump asks them by
//! running an epoch, and backs off while epochs read nothing. A reader
//! whose client says when records come (a Kafka consumer: librdkafka calls
//! back when its queue turns non-empty) keeps an [`Arrival`] instead:
//! set from the client's thread when records come, cleared by the reader
//! just before it takes what has come. While every reader of a view has a
//! clear `Arrival`, the pump runs no epoch for that view (an epoch of a
//! Kafka-reading view is a checkpoint and a synced write, so an empty one
//! costs a disk flush), and it sleeps until an arrival wakes it rather
//! than for its backoff.
//!
//! ```
//! use std::sync::Arc;
//! use freshet::stream::arrival::Arrival;
//!
//! let arrival = Arc::new(Arrival::default());
//! assert!(arrival.pending(), "a new reader has not looked yet");
//! arrival.taking(); // the reader drains what has come
//! assert!(!arrival.pending());
//! let wake = Arc::new(tokio::sync::Notify::new());
//! arrival.wake(&wake);
//! arrival.arrived(); // the client's thread: records came
//! assert!(arrival.pending());
//! // The pump's wait returns at once: the wake-up was kept for it.
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! wake.notified().await;
//! # });
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Whether records have come to one reader since it last took them.
pub struct Arrival {
    arrived: AtomicBool,
    /// The pump to wake when records come (set by the pump itself).
    wake: Mutex<Option<Arc<Notify>>>,
}

impl Default for Arrival {
    /// Pending: a reader that has not read yet must be read once (to
    /// connect, and to find what came before it was made).
    fn default() -> Self {
        Self { arrived: AtomicBool::new(true), wake: Mutex::new(None) }
    }
}

impl Arrival {
    /// Records came (or something else the reader must look at: an error,
    /// a retry that is due): the next pump round reads, and a waiting pump
    /// wakes. Safe from any thread.
    pub fn arrived(&self) {
        self.arrived.store(true, Ordering::SeqCst);
        if let Some(wake) = self.wake.lock().as_ref() {
            // Kept for a pump not yet waiting: no arrival is lost between
            // its look at the flags and its wait.
            wake.notify_one();
        }
    }

    /// The reader left records (or events) behind: the next pump round
    /// reads again, without waking the pump before its wait ends (a queue
    /// that keeps something it never hands out must not make it spin).
    pub fn left_behind(&self) {
        self.arrived.store(true, Ordering::SeqCst);
    }

    /// The reader is about to take everything that has come: what comes
    /// after this sets the flag again.
    pub fn taking(&self) {
        self.arrived.store(false, Ordering::SeqCst);
    }

    /// Something may be there to read.
    pub fn pending(&self) -> bool {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Makes arrivals wake `pump` (the pump calls this before it looks at
    /// the flag, so an arrival after the look wakes its wait).
    pub fn wake(&self, pump: &Arc<Notify>) {
        let mut wake = self.wake.lock();
        if !wake.as_ref().is_some_and(|w| Arc::ptr_eq(w, pump)) {
            *wake = Some(pump.clone());
        }
    }
}
