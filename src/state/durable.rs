//! The durable [`StateStore`]: RocksDB on disk, with the whole committed
//! state also held in a [`MemStore`] that serves every read.
//!
//! A commit writes the epoch's batch plus the epoch number in one RocksDB
//! write batch through the WAL (fsynced when `sync` is on), and only then
//! publishes it in memory: a statement is acknowledged only after its epoch
//! is on disk, and after a crash RocksDB holds exactly the committed epochs.
//! At startup every pair is read back into memory.
//!
//! Holding everything in memory is the first step: the memory budget with
//! spilling to RocksDB (reads falling through to it) comes next, behind
//! the same interface.
//!
//! Key space: `m…` is this store's metadata (format version, committed
//! epoch); every other prefix belongs to the callers (see `state::mod`).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{DB, Options, WriteOptions};

use super::{Epoch, MemStore, Snapshot, StateStore, WriteBatch};
use crate::error::{Result, SqlError, sqlstate};

/// Bumped whenever the on-disk layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &[u8] = b"m/format";
const EPOCH_KEY: &[u8] = b"m/epoch";

pub struct DurableStore {
    db: DB,
    memory: MemStore,
    sync: bool,
    loaded_pairs: usize,
}

fn storage_error(what: &str, error: impl std::fmt::Display) -> SqlError {
    SqlError::new(sqlstate::IO_ERROR, format!("{what}: {error}"))
}

impl DurableStore {
    /// Opens (or creates) the store in `dir`. Refuses a directory written by
    /// another format version, or one whose contents cannot be read.
    pub fn open(dir: &Path, sync: bool) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        // Commits are small and frequent; the WAL makes them durable and
        // memtables absorb them. A 64 MiB write buffer keeps flushes rare.
        options.set_write_buffer_size(64 << 20);
        options.set_max_background_jobs(2);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Refuse to open (rather than silently drop) a WAL with a torn or
        // corrupt record in the middle; a torn tail from a crash is fine.
        options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        options.set_paranoid_checks(true);
        let db = DB::open(&options, dir)
            .map_err(|e| storage_error(&format!("cannot open data dir {}", dir.display()), e))?;

        let format = db.get(FORMAT_KEY).map_err(|e| storage_error("reading the data dir's format version", e))?;
        let mut pairs = Vec::new();
        let mut epoch: Epoch = 0;
        for item in db.iterator(rocksdb::IteratorMode::Start) {
            let (key, value) = item.map_err(|e| storage_error("reading the data dir", e))?;
            if key.as_ref() == EPOCH_KEY {
                epoch =
                    decode_u64(&value).ok_or_else(|| storage_error("reading the data dir", "corrupt epoch record"))?;
            } else if !key.starts_with(b"m/") {
                pairs.push((key.into_vec(), value.into_vec()));
            }
        }
        match format {
            Some(bytes) => {
                let version = (bytes.len() == 4).then(|| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
                if version != Some(FORMAT_VERSION) {
                    return Err(storage_error(
                        &format!("data dir {}", dir.display()),
                        format!(
                            "it was written in storage format {}, this build reads format {FORMAT_VERSION}",
                            version.map_or_else(|| "unknown".to_string(), |v| v.to_string())
                        ),
                    ));
                }
            }
            None if !pairs.is_empty() => {
                return Err(storage_error(
                    &format!("data dir {}", dir.display()),
                    "it holds data but no format version",
                ));
            }
            None => {
                let mut options = WriteOptions::default();
                options.set_sync(true);
                db.put_opt(FORMAT_KEY, FORMAT_VERSION.to_be_bytes(), &options)
                    .map_err(|e| storage_error("initializing the data dir", e))?;
            }
        }
        let loaded_pairs = pairs.len();
        Ok(Self { db, memory: MemStore::loaded(epoch, pairs), sync, loaded_pairs })
    }

    /// Number of pairs read back at startup (for the startup log).
    pub fn loaded_pairs(&self) -> usize {
        self.loaded_pairs
    }
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl StateStore for DurableStore {
    fn snapshot(&self) -> Arc<dyn Snapshot> {
        self.memory.snapshot()
    }

    fn commit(&self, epoch: Epoch, batch: WriteBatch) -> Result<()> {
        let mut disk = rocksdb::WriteBatch::default();
        for (key, value) in batch.ops() {
            match value {
                Some(value) => disk.put(key, value),
                None => disk.delete(key),
            }
        }
        disk.put(EPOCH_KEY, epoch.to_be_bytes());
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        // On failure (disk full, I/O error) nothing is published: the
        // statement fails and memory still equals the disk.
        self.db.write_opt(disk, &options).map_err(|e| storage_error("writing the epoch to disk", e))?;
        self.memory.commit(epoch, batch)
    }

    fn committed_epoch(&self) -> Epoch {
        self.memory.committed_epoch()
    }
}
