//! What the stream layer needs of a connector, and nothing of how one works:
//! the [`SourceReader`] a source scan (or a connector-fed table) reads, the
//! position it keeps in its state, and the records that did not make a row.
//! The options a connector is created from and the [`SinkWriter`] a sink's
//! delivery task writes to are here too. Implementations live in
//! `crate::connectors`, which depends on this module; this module never
//! names `connectors`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;

use super::ChangeBatch;
use crate::error::{Result, SqlError, sqlstate};

/// Retrying an external system (a broker, a database, a sink's target)
/// after a failure: the first wait is 200 ms, each failure in a row
/// doubles it, up to 10 s; a success starts over.
#[derive(Clone, Debug, Default)]
pub struct Retry {
    wait: Duration,
    until: Option<Instant>,
}

impl Retry {
    pub const FIRST: Duration = Duration::from_millis(200);
    pub const MAX: Duration = Duration::from_secs(10);

    /// Notes a failure; returns how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        self.wait = (self.wait * 2).clamp(Self::FIRST, Self::MAX);
        self.until = Some(Instant::now() + self.wait);
        self.wait
    }

    /// Notes a success: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// The wait after the last failure has not passed yet.
    pub fn waiting(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() < until)
    }
}

/// Most records one epoch reads from one source.
pub const MAX_RECORDS_PER_EPOCH: usize = 100_000;

/// How far a reader has read: a count of the connector's records (events,
/// rows) consumed, and when reading started (for paced generators).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePosition {
    pub next: u64,
    /// Epoch time of the first read, nanoseconds (0: not started).
    pub started_nanos: i64,
    /// Partitioned connectors (Kafka): the next offset to read, per
    /// partition (empty: not started).
    pub offsets: BTreeMap<i32, i64>,
}

impl SourcePosition {
    /// As stored with a connector-fed table's rows.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(20 + 12 * self.offsets.len());
        bytes.extend_from_slice(&self.next.to_be_bytes());
        bytes.extend_from_slice(&self.started_nanos.to_be_bytes());
        self.encode_offsets(&mut bytes);
        bytes
    }

    /// Appends the partition offsets: a count, then (partition, offset)
    /// pairs, big-endian. (A source scan's stored progress embeds them.)
    pub fn encode_offsets(&self, bytes: &mut Vec<u8>) {
        bytes.extend_from_slice(&(self.offsets.len() as u32).to_be_bytes());
        for (partition, offset) in &self.offsets {
            bytes.extend_from_slice(&partition.to_be_bytes());
            bytes.extend_from_slice(&offset.to_be_bytes());
        }
    }

    /// The inverse of [`encode_offsets`](Self::encode_offsets), from the
    /// start of `bytes`; `None` for other bytes.
    pub fn decode_offsets(bytes: &[u8]) -> Option<BTreeMap<i32, i64>> {
        let count = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
        let mut offsets = BTreeMap::new();
        for i in 0..count {
            let at = 4 + 12 * i;
            let partition = i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            offsets.insert(partition, i64::from_be_bytes(bytes.get(at + 4..at + 12)?.try_into().ok()?));
        }
        Some(offsets)
    }

    /// The inverse of [`encode`](Self::encode); `None` for other bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let next = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let started_nanos = i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let offsets = Self::decode_offsets(bytes.get(16..)?)?;
        Some(Self { next, started_nanos, offsets })
    }
}

/// A record that did not become a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub error: String,
}

/// What a changelog connector read (Postgres CDC, `FORMAT UPSERT`,
/// `FORMAT DEBEZIUM`): rows in the order they happened, each either the
/// new version of the row with its primary key (an upsert) or, where
/// `deletes` is true, the deletion of the row with that key (only the key
/// columns of such a row are meaningful).
pub struct KeyedChanges {
    pub rows: RecordBatch,
    pub deletes: BooleanArray,
    /// Cells (row, column) of upserts that the upstream did not send
    /// because they did not change (Postgres leaves unchanged TOASTed
    /// values out of an UPDATE): they keep the stored row's value.
    pub unchanged: Vec<(u32, u32)>,
}

impl KeyedChanges {
    /// Rows that are all upserts.
    pub fn upserts(rows: RecordBatch) -> Self {
        let deletes = BooleanArray::from(vec![false; rows.num_rows()]);
        Self { rows, deletes, unchanged: Vec::new() }
    }
}

/// Reads a source's rows.
///
/// A reader keeps no read position of its own: the caller (a view's source
/// scan, or the feed of a connector-fed table) holds the
/// [`SourcePosition`], checkpoints it with the epoch that read up to it,
/// and after a crash reads again from the checkpointed one. So a reader
/// must give the same records from the same position.
///
/// A finite source of numbers, read two records at a time:
///
/// ```
/// use std::sync::Arc;
/// use datafusion::arrow::array::{Int64Array, RecordBatch};
/// use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
/// use freshet::error::{Result, SqlError};
/// use freshet::stream::connector::{BadRecord, Connector, SourcePosition, SourceReader};
///
/// struct Numbers {
///     schema: SchemaRef,
///     values: Vec<i64>,
/// }
///
/// impl Connector for Numbers {
///     fn schema(&self) -> SchemaRef {
///         self.schema.clone()
///     }
/// }
///
/// impl SourceReader for Numbers {
///     fn read(&self, position: &mut SourcePosition, _now_nanos: i64, max_records: usize,
///             _bad: &mut Vec<BadRecord>) -> Result<RecordBatch> {
///         let start = (position.next as usize).min(self.values.len());
///         let end = (start + max_records).min(self.values.len());
///         position.next = end as u64;
///         let values = self.values.get(start..end).unwrap_or_default().to_vec();
///         Ok(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(Int64Array::from(values))])?)
///     }
///     fn exhausted(&self, position: &SourcePosition) -> bool {
///         position.next as usize >= self.values.len()
///     }
/// }
///
/// let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
/// let reader = Numbers { schema, values: vec![10, 20, 30] };
/// let mut position = SourcePosition::default();
/// assert_eq!(reader.read(&mut position, 0, 2, &mut Vec::new())?.num_rows(), 2);
/// let saved = position.clone(); // what a checkpoint keeps
/// assert_eq!(reader.read(&mut position, 0, 2, &mut Vec::new())?.num_rows(), 1);
/// assert!(reader.exhausted(&position));
/// // After a crash: the same records again, from the saved position.
/// let again = reader.read(&mut saved.clone(), 0, 2, &mut Vec::new())?;
/// assert_eq!(again.column(0).as_ref(), &Int64Array::from(vec![30]) as &dyn datafusion::arrow::array::Array);
/// # Ok::<(), SqlError>(())
/// ```
pub trait SourceReader: Connector {
    /// Up to `max_records` records after `position` among those due at
    /// `now_nanos`, as rows; advances `position`. Records that do not make
    /// a row go to `bad` (or fail the read, if the source says so).
    fn read(
        &self,
        position: &mut SourcePosition,
        now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<RecordBatch>;
    /// No record will come after `position` (a finite source read to its end).
    fn exhausted(&self, position: &SourcePosition) -> bool;
    /// A reader of its own for one more view, for readers holding a
    /// connection; `None` when one reader can serve every view.
    fn instance(&self) -> Option<std::sync::Arc<dyn SourceReader>> {
        None
    }
    /// A reader that fills only the columns `read` (indices into its
    /// schema) with the records' values, for a reader that saves work by
    /// skipping the others: they come back as empty values of their type
    /// (empty strings, zeros), which the caller must not read. `None`: it
    /// reads every column. The reader's schema, positions and records stay
    /// the same.
    fn with_columns(&self, _read: &[usize]) -> Option<std::sync::Arc<dyn SourceReader>> {
        None
    }
    /// Whether a read from a position at an epoch time reads the same
    /// records again later (generators: yes). A Kafka read takes what the
    /// consumer has fetched so far, which a replay cannot repeat, so views
    /// reading such a source checkpoint every epoch instead of replaying.
    fn replayable(&self) -> bool {
        true
    }
    /// For a reader told when records come (Kafka): the flag its client
    /// sets then, which lets the source pump skip this reader's view while
    /// nothing has come (see `stream::arrival`). `None`: the pump finds out
    /// by reading.
    fn arrival(&self) -> Option<std::sync::Arc<super::arrival::Arrival>> {
        None
    }
}

/// What every connector's reader does, whatever it yields: its schema, a
/// check at creation, its status, and the lifecycle of what it holds
/// upstream.
pub trait Connector: Send + Sync {
    /// The rows' schema.
    fn schema(&self) -> SchemaRef;
    /// Checks, at CREATE, that the connector can be read (e.g. the broker
    /// answers and the topic exists). Not called at recovery, so a system
    /// that is down then does not keep the catalog from loading.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// How reading goes, for readers of external systems ("reading",
    /// "retrying: <error>"); `None` for generators.
    fn status(&self) -> Option<String> {
        None
    }
    /// The epoch holding what was read up to `position` is committed: a
    /// connector whose upstream keeps data until told (a replication slot)
    /// may let it go now.
    fn committed(&self, _position: &SourcePosition) {}
    /// The relation reading this connector was dropped: release what it
    /// holds upstream (a replication slot).
    fn release(&self) {}
}

/// Reads keyed changes (Postgres CDC, `FORMAT UPSERT`, `FORMAT DEBEZIUM`):
/// upserts and deletes by primary key, which only a table with that
/// primary key can apply.
pub trait KeyedReader: Connector {
    /// Up to `max_records` records after `position`, as keyed changes in
    /// the order they happened; advances `position`. Records that do not
    /// make a change go to `bad`.
    fn read_changes(
        &self,
        position: &mut SourcePosition,
        now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<KeyedChanges>;
}

/// A connector's reader, of one of the two kinds.
#[derive(Clone)]
pub enum Reader {
    /// Appends rows: read by a view's source scan or into a table.
    Appends(std::sync::Arc<dyn SourceReader>),
    /// Upserts and deletes by key: read into a table with a primary key.
    Keyed(std::sync::Arc<dyn KeyedReader>),
}

impl Reader {
    /// What both kinds do.
    pub fn connector(&self) -> &dyn Connector {
        match self {
            Reader::Appends(reader) => reader.as_ref(),
            Reader::Keyed(reader) => reader.as_ref(),
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reader::Appends(_) => "Reader::Appends",
            Reader::Keyed(_) => "Reader::Keyed",
        })
    }
}

/// A bad record as stored: partition and offset are its key.
pub fn bad_record_key(record: &BadRecord) -> Vec<u8> {
    let mut key = Vec::with_capacity(12);
    key.extend_from_slice(&record.partition.to_be_bytes());
    key.extend_from_slice(&record.offset.to_be_bytes());
    key
}

pub fn encode_bad_record(record: &BadRecord) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + record.payload.len() + record.error.len());
    bytes.extend_from_slice(&record.partition.to_be_bytes());
    bytes.extend_from_slice(&record.offset.to_be_bytes());
    bytes.extend_from_slice(&(record.payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&record.payload);
    bytes.extend_from_slice(record.error.as_bytes());
    bytes
}

/// The inverse of [`encode_bad_record`]; `None` for bytes it did not write.
pub fn decode_bad_record(bytes: &[u8]) -> Option<BadRecord> {
    let partition = i32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?);
    let offset = i64::from_be_bytes(bytes.get(4..12)?.try_into().ok()?);
    let length = u32::from_be_bytes(bytes.get(12..16)?.try_into().ok()?) as usize;
    let payload = bytes.get(16..16 + length)?.to_vec();
    let error = String::from_utf8_lossy(bytes.get(16 + length..)?).into_owned();
    Some(BadRecord { partition, offset, payload, error })
}

/// A source's connector options, as given in WITH (…).
#[derive(Clone, Debug, Default)]
pub struct ConnectorOptions {
    pub values: BTreeMap<String, String>,
}

impl ConnectorOptions {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn connector(&self) -> Option<&str> {
        self.get("connector")
    }

    /// An integer option, or `default`.
    pub fn integer(&self, key: &str, default: u64) -> Result<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => text.trim().parse().map_err(|_| {
                SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("option {key} = '{text}' is not a whole number"),
                )
            }),
        }
    }

    /// Fails naming the first option no part of the connector knows.
    pub fn reject_unknown(&self, known: &dyn Fn(&str) -> bool) -> Result<()> {
        match self.values.keys().find(|k| !known(k)) {
            None => Ok(()),
            Some(key) => Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("unrecognized option \"{key}\" for connector '{}'", self.connector().unwrap_or("")),
            )),
        }
    }
}

/// Writes epochs to an external system, exactly once.
pub trait SinkWriter: Send + Sync {
    /// The last epoch the external system holds from this sink (`None`:
    /// none yet). Asked before the first write and after any failure.
    fn delivered(&self) -> Result<Option<u64>>;
    /// Writes one epoch's changes and the epoch number, atomically.
    fn write(&self, epoch: u64, changes: &ChangeBatch) -> Result<()>;
    /// Checks, at CREATE SINK, that the target can be written.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// The sink keeps nothing (`blackhole`): its changes are not even
    /// written to the outbox.
    fn discards(&self) -> bool {
        false
    }
}
