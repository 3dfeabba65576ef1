//! The durable [`StateStore`]: RocksDB on disk, read through RocksDB
//! snapshots, with a bounded cache in front.
//!
//! A commit writes the epoch's batch plus the epoch number in one RocksDB
//! write batch through the WAL (fsynced when `sync` is on). A statement is
//! acknowledged only after its epoch is written, and after a crash RocksDB
//! holds exactly the committed epochs. Readers take a RocksDB snapshot, so
//! they see whole epochs and never block the writer.
//!
//! Memory: RocksDB's block cache and its memtables are charged to one LRU
//! cache of `cache_bytes` (a write-buffer manager accounts memtables
//! against it, index and filter blocks live in it), so the store's resident
//! memory is bounded by that figure whatever the size of the data. State
//! beyond it stays on disk and is read back on demand. Startup reads nothing
//! but the metadata: recovery time does not grow with the data.
//!
//! Key space: `m…` is this store's metadata (format version, committed
//! epoch); every other prefix belongs to the callers (see `state::mod`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rocksdb::{BlockBasedOptions, Cache, DB, Direction, IteratorMode, Options, ReadOptions, WriteOptions};

use super::{Epoch, Snapshot, StateStore, WriteBatch};
use crate::error::{Result, SqlError, sqlstate};

/// Bumped whenever the on-disk layout changes incompatibly.
/// 2: operator state stored under `s` keys (format 1 rebuilt it at startup).
/// 3: operator state written at checkpoints, epochs since logged under `l`
///    (format 2 dirs have no log and are read as they are).
pub const FORMAT_VERSION: u32 = 3;
/// Older formats this build reads (and marks as its own on open).
const READABLE_FORMATS: &[u32] = &[2];
// Under the `m` (store metadata) tag of `keys.rs`.
const FORMAT_KEY: &[u8] = b"m/format";
const EPOCH_KEY: &[u8] = b"m/epoch";

/// How the store trades durability and memory.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Fsync the WAL before a commit returns (`false`: a commit survives a
    /// crash of the process, not of the machine).
    pub sync: bool,
    /// Bytes of memory for RocksDB's block cache and memtables together.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { sync: true, cache_bytes: 256 << 20 }
    }
}

pub struct DurableStore {
    /// The open database. Empty only inside [`StateStore::recover_writes`],
    /// which swaps in a fresh handle after a failed write.
    db: RwLock<Option<Arc<DB>>>,
    dir: PathBuf,
    /// What the database was opened with (to open it again).
    options: Options,
    sync: bool,
    /// Held so the cache outlives the DB handle's use of it.
    _cache: Cache,
}

fn storage_error(what: &str, error: impl std::fmt::Display) -> SqlError {
    SqlError::new(sqlstate::IO_ERROR, format!("{what}: {error}"))
}

impl DurableStore {
    /// Opens (or creates) the store in `dir`. Refuses a directory written by
    /// another format version, or one whose contents cannot be read.
    pub fn open(dir: &Path, store: StoreOptions) -> Result<Self> {
        let cache_bytes = store.cache_bytes.max(8 << 20);
        let cache = Cache::new_lru_cache(cache_bytes);
        let options = db_options(&cache, cache_bytes);
        let db = DB::open(&options, dir)
            .map_err(|e| storage_error(&format!("cannot open data dir {}", dir.display()), e))?;
        check_format(&db, dir)?;
        Ok(Self {
            db: RwLock::new(Some(Arc::new(db))),
            dir: dir.to_path_buf(),
            options,
            sync: store.sync,
            _cache: cache,
        })
    }

    /// The open database.
    fn db(&self) -> Arc<DB> {
        match self.db.read().as_ref() {
            Some(db) => db.clone(),
            // Only `recover_writes` empties the slot, under the write lock,
            // and it fills it again or stops the process.
            None => fatal_store_error("the data dir is not open"),
        }
    }

    /// RocksDB's estimate of the stored data's size in bytes (for logs).
    pub fn estimated_bytes(&self) -> u64 {
        let db = self.db();
        db.property_int_value("rocksdb.estimate-live-data-size").ok().flatten().unwrap_or(0)
            + db.property_int_value("rocksdb.cur-size-all-mem-tables").ok().flatten().unwrap_or(0)
    }

    /// Writes `batch` and the epoch number atomically; `sync`: waits until
    /// the write-ahead log is on disk.
    fn write_epoch(&self, epoch: Epoch, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut disk = rocksdb::WriteBatch::default();
        // In key order: RocksDB's memtable inserts each key from where the
        // previous one went, so sorted keys skip most of its skip-list
        // search (random ones cost a search from the top each; a profile of
        // q8 had it at 12% of the run). The sort is stable: of two writes
        // to one key the later still wins.
        let mut ops: Vec<&(Vec<u8>, Option<Vec<u8>>)> = batch.ops().iter().collect();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in ops {
            match value {
                Some(value) => disk.put(key, value),
                None => disk.delete(key),
            }
        }
        disk.put(EPOCH_KEY, epoch.to_be_bytes());
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        // On failure (disk full, I/O error) nothing is visible: the
        // statement fails and readers keep the previous epoch. RocksDB then
        // refuses further writes until `recover_writes` reopens it; reads go on.
        self.db().write_opt(disk, &options).map_err(|e| {
            let error = storage_error("writing the epoch to disk", &e);
            if e.to_string().contains("No space left on device") {
                SqlError::new(sqlstate::DISK_FULL, error.message)
            } else {
                error
            }
        })
    }
}

/// RocksDB's options for the store (see the module docs for the memory
/// they allow).
fn db_options(cache: &Cache, cache_bytes: usize) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Index and filter blocks count against the budget too (otherwise
    // they grow with the data, outside any limit). They are partitioned
    // (two-level index, partitioned filters) so a lookup reads one small
    // partition instead of a whole file's filter: with a small cache, a
    // monolithic filter of a large file is evicted and re-read (and
    // checksummed) on every lookup. The top levels stay pinned.
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_bloom_filter(10.0, false);
    table.set_optimize_filters_for_memory(true);
    table.set_block_size(16 << 10);

    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_block_based_table_factory(&table);
    // Memtables are charged to the same cache: a write burst evicts
    // cached blocks instead of growing the process. Each memtable is at
    // most an eighth of the budget so a flush frees memory in steps.
    let write_buffers =
        rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(cache_bytes / 2, false, cache.clone());
    options.set_write_buffer_manager(&write_buffers);
    options.set_write_buffer_size((cache_bytes / 8).clamp(4 << 20, 64 << 20));
    options.set_max_write_buffer_number(3);
    options.set_max_background_jobs(2);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Refuse to open (rather than silently drop) a WAL with a torn or
    // corrupt record in the middle; a torn tail from a crash is fine.
    options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    options.set_paranoid_checks(true);
    options
}

/// Checks (or, in a new directory, writes) the store's format version.
fn check_format(db: &DB, dir: &Path) -> Result<()> {
    let format = db.get(FORMAT_KEY).map_err(|e| storage_error("reading the data dir's format version", e))?;
    match format {
        Some(bytes) => {
            let version = <[u8; 4]>::try_from(bytes.as_slice()).ok().map(u32::from_be_bytes);
            if let Some(old) = version.filter(|v| READABLE_FORMATS.contains(v)) {
                tracing::info!(from = old, to = FORMAT_VERSION, "upgrading the data dir's format version");
                let mut options = WriteOptions::default();
                options.set_sync(true);
                db.put_opt(FORMAT_KEY, FORMAT_VERSION.to_be_bytes(), &options)
                    .map_err(|e| storage_error("upgrading the data dir's format version", e))?;
            } else if version != Some(FORMAT_VERSION) {
                return Err(storage_error(
                    &format!("data dir {}", dir.display()),
                    format!(
                        "it was written in storage format {}, this build reads format {FORMAT_VERSION}",
                        version.map_or_else(|| "unknown".to_string(), |v| v.to_string())
                    ),
                ));
            }
        }
        None => {
            let holds_data = db.iterator(IteratorMode::Start).next().is_some();
            if holds_data {
                return Err(storage_error(
                    &format!("data dir {}", dir.display()),
                    "it holds data but no format version",
                ));
            }
            let mut options = WriteOptions::default();
            options.set_sync(true);
            db.put_opt(FORMAT_KEY, FORMAT_VERSION.to_be_bytes(), &options)
                .map_err(|e| storage_error("initializing the data dir", e))?;
        }
    }
    Ok(())
}

/// Bytes a probe writes (and syncs) in the data dir before the store is
/// reopened after a failed write: room for RocksDB to start a new WAL and
/// flush what the old one holds.
const PROBE_BYTES: usize = 8 << 20;

/// Writes, syncs and removes a probe file of [`PROBE_BYTES`] in `dir`.
fn probe_disk(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join("write-probe");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..PROBE_BYTES / chunk.len() {
            file.write_all(&chunk)?;
        }
        file.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A RocksDB snapshot together with the handle it borrows from.
struct DiskSnapshot {
    // Declared before `db`: fields drop in order, so the snapshot is
    // released while the DB it belongs to is still alive.
    snapshot: rocksdb::SnapshotWithThreadMode<'static, DB>,
    db: Arc<DB>,
    epoch: Epoch,
}

impl DiskSnapshot {
    fn new(db: Arc<DB>) -> Result<Self> {
        let snapshot = db.snapshot();
        // SAFETY: the snapshot borrows the DB behind `db`'s Arc, which this
        // struct owns and drops after the snapshot (field order above); the
        // Arc's target never moves, so the borrow stays valid for the
        // snapshot's whole life.
        let snapshot: rocksdb::SnapshotWithThreadMode<'static, DB> = unsafe { std::mem::transmute(snapshot) };
        let epoch = snapshot
            .get(EPOCH_KEY)
            .map_err(|e| storage_error("reading the committed epoch", e))?
            .map(|bytes| {
                decode_u64(&bytes).ok_or_else(|| storage_error("reading the data dir", "corrupt epoch record"))
            })
            .transpose()?
            .unwrap_or(0);
        Ok(Self { snapshot, db, epoch })
    }

    fn read_options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        options.set_snapshot(&self.snapshot);
        options
    }
}

impl Snapshot for DiskSnapshot {
    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.snapshot.get(key) {
            Ok(value) => value,
            Err(error) => {
                // The read interface has no error channel; a failing disk is
                // reported loudly and the read treated as a miss would be
                // wrong data, so stop the process instead.
                fatal_read_error(error)
            }
        }
    }

    fn multi_get(&self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        self.snapshot
            .multi_get(keys)
            .into_iter()
            .map(|result| result.unwrap_or_else(|error| fatal_read_error(error)))
            .collect()
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8])) {
        let mut options = self.read_options();
        if let Some(end) = prefix_end(prefix) {
            options.set_iterate_upper_bound(end);
        }
        for item in self.db.iterator_opt(IteratorMode::From(prefix, Direction::Forward), options) {
            match item {
                Ok((key, value)) => {
                    if !key.starts_with(prefix) {
                        break;
                    }
                    visit(&key, &value);
                }
                Err(error) => fatal_read_error(error),
            }
        }
    }
}

fn fatal_read_error(error: rocksdb::Error) -> ! {
    fatal_store_error(&format!("reading the data dir failed: {error}"))
}

/// Stops the process: the store can no longer be read, and serving
/// anything would be serving wrong data.
fn fatal_store_error(error: &str) -> ! {
    tracing::error!(%error, "stopping rather than serve wrong data");
    eprintln!("freshet: {error}");
    std::process::exit(3)
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl StateStore for DurableStore {
    fn snapshot(&self) -> Arc<dyn Snapshot> {
        match DiskSnapshot::new(self.db()) {
            Ok(snapshot) => Arc::new(snapshot),
            Err(error) => {
                tracing::error!(%error, "reading the data dir failed; stopping rather than serve wrong data");
                eprintln!("freshet: {error}");
                std::process::exit(3)
            }
        }
    }

    fn commit(&self, epoch: Epoch, batch: WriteBatch) -> Result<()> {
        self.write_epoch(epoch, batch, self.sync)
    }

    fn commit_unsynced(&self, epoch: Epoch, batch: WriteBatch) -> Result<()> {
        self.write_epoch(epoch, batch, false)
    }

    /// RocksDB keeps refusing writes after a failed one (its "background
    /// error"), and the C API it is driven through cannot resume it: the
    /// database is closed and opened again, which replays its WAL. First a
    /// probe file shows whether the disk takes writes again; then the old
    /// handle must be the last one (every reader's snapshot holds it, and
    /// RocksDB refuses to open a directory twice in one process).
    fn recover_writes(&self) -> Result<bool> {
        probe_disk(&self.dir).map_err(|e| storage_error("the data dir still cannot be written", e))?;
        let mut slot = self.db.write();
        if slot.as_ref().is_some_and(|db| Arc::strong_count(db) > 1) {
            return Ok(false);
        }
        // Closes the old handle before the new one opens the directory.
        drop(slot.take());
        let mut last = None;
        for attempt in 0..3u32 {
            match DB::open(&self.options, &self.dir) {
                Ok(db) => {
                    *slot = Some(Arc::new(db));
                    return Ok(true);
                }
                Err(error) => {
                    last = Some(error);
                    std::thread::sleep(std::time::Duration::from_millis(100 << attempt));
                }
            }
        }
        let error = last.map_or_else(String::new, |e| e.to_string());
        fatal_store_error(&format!("reopening data dir {} after a failed write failed: {error}", self.dir.display()))
    }

    fn committed_epoch(&self) -> Epoch {
        match self.db().get(EPOCH_KEY) {
            Ok(Some(bytes)) => decode_u64(&bytes).unwrap_or(0),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"r\x00\x01"), Some(b"r\x00\x02".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
