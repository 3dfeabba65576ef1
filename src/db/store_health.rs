//! Whether the store takes writes, and what the server does when it stops.
//!
//! A write to the store can fail: the disk is full, the data dir was
//! removed, the device reports an I/O error. The epoch that failed is not
//! written (a client whose statement it carried gets the error) and the
//! server turns *read-only*: every later write (a statement, a connector's
//! rows, a checkpoint, a sink's delivered outbox) is refused at once with
//! SQLSTATE 25006 and a message that names the cause, without running the
//! dataflows (so no view takes in changes that cannot be stored). Reads go
//! on from the last committed epoch.
//!
//! The coordinator's healer task ([`super::coordinator::Coordinator::spawn_store_healer`])
//! asks the store to take writes again ([`crate::state::StateStore::recover_writes`])
//! with a backoff from a quarter second up to [`MAX_RETRY`]; once it
//! succeeds, writes are accepted again. The change is logged once each way
//! and shown in `freshet_catalog.storage`.
//!
//! Materialized views whose operators took in the failed epoch have state
//! ahead of what is stored: they are failed (reads report the write error)
//! and, once the store takes writes again, rebuilt before any other epoch
//! runs: fresh operators built from the view's stream plan (the dataflow's
//! [`super::coordinator::BuildOperators`]), backfilled from its inputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::error::{Result, SqlError, sqlstate};

/// The longest wait between two attempts to make the store writable.
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// Why and since when the server refuses writes.
#[derive(Clone, Debug)]
pub struct ReadOnly {
    /// The failed write's error.
    pub cause: SqlError,
    pub since: SystemTime,
    /// The last attempt to make the store writable, if it failed.
    pub last_attempt: Option<SqlError>,
}

#[derive(Default)]
pub struct StoreHealth {
    /// `state.is_some()`, readable without the lock (checked by every write).
    read_only: AtomicBool,
    state: Mutex<Option<ReadOnly>>,
}

impl StoreHealth {
    /// `Ok` while the store takes writes; else the refusal a writer reports.
    pub fn check_writable(&self) -> Result<()> {
        if !self.read_only.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.state.lock().as_ref() {
            Some(read_only) => Err(refusal(read_only)),
            None => Ok(()),
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// The read-only state, if the server is in it.
    pub fn status(&self) -> Option<ReadOnly> {
        self.state.lock().clone()
    }

    /// A write failed with `cause`: the server turns read-only. Logged
    /// once, when it turns.
    pub fn write_failed(&self, cause: &SqlError) {
        let mut state = self.state.lock();
        if state.is_none() {
            tracing::error!(
                error = %cause.message,
                "writing to the data dir failed: the server is read-only (writes are refused with 25006, reads go \
                 on) until it can write again; retrying"
            );
            *state = Some(ReadOnly { cause: cause.clone(), since: SystemTime::now(), last_attempt: None });
            self.read_only.store(true, Ordering::Release);
        }
    }

    /// An attempt to make the store writable failed with `error`.
    pub fn attempt_failed(&self, error: SqlError) {
        if let Some(state) = self.state.lock().as_mut() {
            state.last_attempt = Some(error);
        }
    }

    /// The store takes writes again.
    pub fn recovered(&self) {
        let mut state = self.state.lock();
        if let Some(read_only) = state.take() {
            let seconds = read_only.since.elapsed().map_or(0.0, |d| d.as_secs_f64());
            tracing::info!(read_only_seconds = seconds, "the data dir can be written again: writes are accepted");
        }
        self.read_only.store(false, Ordering::Release);
    }
}

/// The error a write gets while the server is read-only.
fn refusal(read_only: &ReadOnly) -> SqlError {
    let since = format_time(read_only.since);
    SqlError::new(
        sqlstate::READ_ONLY_SQL_TRANSACTION,
        format!(
            "cannot write: the server is read-only since {since} because writing to its data dir failed ({}); \
             it takes writes again as soon as the data dir can be written",
            read_only.cause.message
        ),
    )
}

/// `time` as `2026-12-06 04:55:00 UTC`.
pub fn format_time(time: SystemTime) -> String {
    let seconds = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    match datafusion::arrow::temporal_conversions::timestamp_s_to_datetime(seconds) {
        Some(utc) => format!("{utc} UTC"),
        None => format!("{seconds} seconds after 1970"),
    }
}

/// Whether a view failed because the store failed to write an epoch its
/// operators took in (their state is ahead of the store: rebuilt once the
/// store takes writes again).
pub fn is_store_failure(error: &SqlError) -> bool {
    error.code == sqlstate::IO_ERROR || error.code == sqlstate::DISK_FULL
}

/// Whether `error` is a refusal of [`StoreHealth::check_writable`] (a task
/// that retries writes logs the turn once, not every refusal).
pub fn is_refusal(error: &SqlError) -> bool {
    error.code == sqlstate::READ_ONLY_SQL_TRANSACTION
        && error.message.starts_with("cannot write: the server is read-only")
}

/// The wait before the attempt after `attempts` failed ones: a quarter
/// second, doubling, at most [`MAX_RETRY`].
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_millis(250).saturating_mul(1u32 << attempts.min(6)).min(MAX_RETRY)
}
