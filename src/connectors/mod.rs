//! Connectors: where a source's rows come from.
//!
//! A [`SourceReader`] turns a source's `WITH (connector = …)` options into
//! batches of rows. Readers hold no position of their own: the reading
//! operator keeps a [`SourcePosition`] in its state, checkpointed with the
//! rest of the view, and a reader reads the same rows again from the same
//! position at the same epoch time. That is what makes a replay after a
//! crash feed the view exactly what the lost epochs fed it (exactly-once
//! from source to view). The generators here (`nexmark`, `datagen`) are
//! deterministic by construction. `kafka` is not (a read takes what has
//! been fetched so far), so its readers say so and the views reading them
//! checkpoint every epoch: their positions and rows commit together.
//!
//! A record a reader cannot turn into a row (a payload that does not parse
//! or does not fit the columns) is handed back as a [`BadRecord`]: the
//! reading operator keeps it, with its offset and the error, where
//! `freshet_catalog.source_errors` shows it, and the stream goes on.
//!
//! This module may call `stream` types (schemas, errors); the stream layer
//! reaches connectors only through [`SourceReader`].

pub mod avro;
pub mod changelog;
pub mod datagen;
pub mod decode;
pub mod file;
#[cfg(test)]
mod fuzz;
pub mod kafka;
pub mod nexmark;
pub mod payload;
pub mod postgres_cdc;
pub mod sink;

use std::collections::BTreeMap;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{Result, SqlError, sqlstate};

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
        bytes.extend_from_slice(&(self.offsets.len() as u32).to_be_bytes());
        for (partition, offset) in &self.offsets {
            bytes.extend_from_slice(&partition.to_be_bytes());
            bytes.extend_from_slice(&offset.to_be_bytes());
        }
        bytes
    }

    /// The inverse of [`encode`](Self::encode); `None` for other bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let next = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let started_nanos = i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let count = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?) as usize;
        let mut offsets = BTreeMap::new();
        for i in 0..count {
            let at = 20 + 12 * i;
            let partition = i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            offsets.insert(partition, i64::from_be_bytes(bytes.get(at + 4..at + 12)?.try_into().ok()?));
        }
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
pub trait SourceReader: Send + Sync {
    /// The rows' schema.
    fn schema(&self) -> SchemaRef;
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
    /// Checks, at CREATE SOURCE, that the connector can be read (e.g. the
    /// broker answers and the topic exists). Not called at recovery, so a
    /// system that is down then does not keep the catalog from loading.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// A reader of its own for one more view, for readers holding a
    /// connection; `None` when one reader can serve every view.
    fn instance(&self) -> Option<std::sync::Arc<dyn SourceReader>> {
        None
    }
    /// Whether a read from a position at an epoch time reads the same
    /// records again later (generators: yes). A Kafka read takes what the
    /// consumer has fetched so far, which a replay cannot repeat, so views
    /// reading such a source checkpoint every epoch instead of replaying.
    fn replayable(&self) -> bool {
        true
    }
    /// How reading goes, for readers of external systems ("reading",
    /// "retrying: <error>"); `None` for generators.
    fn status(&self) -> Option<String> {
        None
    }
    /// Whether the connector yields keyed changes (upserts and deletes by
    /// primary key) rather than appended rows: such a connector feeds a
    /// table with a primary key, through [`read_changes`](Self::read_changes).
    fn keyed(&self) -> bool {
        false
    }
    /// [`read`](Self::read) for keyed connectors.
    fn read_changes(
        &self,
        position: &mut SourcePosition,
        now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<KeyedChanges> {
        Ok(KeyedChanges::upserts(self.read(position, now_nanos, max_records, bad)?))
    }
    /// The epoch holding what was read up to `position` is committed: a
    /// connector whose upstream keeps data until told (a replication slot)
    /// may let it go now.
    fn committed(&self, _position: &SourcePosition) {}
    /// The relation reading this connector was dropped: release what it
    /// holds upstream (a replication slot).
    fn release(&self) {}
}

/// The option through which a table hands its primary-key column names
/// (comma-separated) to a keyed connector.
pub const PRIMARY_KEY_OPTION: &str = "primary_key";

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

/// The reader of a source; `declared` is the column list of CREATE SOURCE
/// (`None` when left to the connector).
pub fn reader(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Box<dyn SourceReader>> {
    match options.connector() {
        Some("nexmark") => Ok(Box::new(nexmark::NexmarkReader::new(options, declared)?)),
        Some("datagen") => Ok(Box::new(datagen::DatagenReader::new(options, declared)?)),
        Some("kafka") => Ok(Box::new(kafka::KafkaReader::new(options, declared)?)),
        Some("file") => Ok(Box::new(file::FileReader::new(options, declared)?)),
        Some(postgres_cdc::CONNECTOR) => Ok(Box::new(postgres_cdc::PostgresCdcReader::new(options, declared)?)),
        Some(other) => Err(SqlError::not_supported(format!(
            "connector '{other}' (connectors: kafka, postgres-cdc, file, nexmark, datagen)"
        ))),
        None => Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "a source needs WITH (connector = 'kafka' | 'postgres-cdc' | 'file' | 'nexmark' | 'datagen', …)",
        )),
    }
}

/// Checks that declared columns are those the connector produces.
pub fn check_declared(connector: &str, produced: &SchemaRef, declared: Option<&SchemaRef>) -> Result<()> {
    let Some(declared) = declared.filter(|d| !d.fields().is_empty()) else { return Ok(()) };
    if declared.fields().len() != produced.fields().len() {
        return Err(SqlError::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "connector '{connector}' produces {} columns ({}), the source declares {}",
                produced.fields().len(),
                produced.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                declared.fields().len()
            ),
        ));
    }
    for (want, have) in produced.fields().iter().zip(declared.fields()) {
        let compatible = want.data_type() == have.data_type()
            || datafusion::arrow::compute::can_cast_types(want.data_type(), have.data_type());
        if want.name() != have.name() || !compatible {
            return Err(SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "connector '{connector}' produces column \"{}\" {}, the source declares \"{}\" {}",
                    want.name(),
                    want.data_type(),
                    have.name(),
                    have.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// Records due at `now_nanos` for a paced reader: `gap_nanos` apart from
/// the start (a gap of 0 is unpaced: everything is due).
pub fn due(position: &SourcePosition, now_nanos: i64, gap_nanos: u64) -> u64 {
    if gap_nanos == 0 {
        return u64::MAX;
    }
    let started = if position.started_nanos == 0 { now_nanos } else { position.started_nanos };
    let elapsed = now_nanos.saturating_sub(started).max(0) as u64;
    // The first record is due at the start.
    elapsed / gap_nanos + 1
}

/// `'10 seconds'`, `'2h'`, `'1 day'` as nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let seconds = match unit.trim_end_matches('s') {
        "" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds)?.checked_mul(1_000_000_000)
}
