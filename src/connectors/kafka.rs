//! The `kafka` source connector: one topic's records as rows.
//!
//! ```sql
//! CREATE SOURCE clicks (user_id BIGINT, url TEXT, ts TIMESTAMP)
//! INCLUDE partition AS p INCLUDE offset AS o
//! WITH (connector = 'kafka', topic = 'clicks', properties.bootstrap.server = 'localhost:9092',
//!       scan.startup.mode = 'earliest')
//! FORMAT PLAIN ENCODE JSON;
//! ```
//!
//! Each view reading the source has its own consumer (no consumer group:
//! partitions are assigned by hand), reading every partition of the topic
//! from the offsets in the view's checkpointed [`SourcePosition`]. Such a
//! view checkpoints every epoch (a read is not replayable), so its offsets
//! commit with its rows and after a crash it resumes exactly where its
//! last committed epoch ended, whatever the consumer had fetched beyond. A read takes only what the consumer has already
//! fetched in the background (it never waits for the broker), so a slow
//! broker slows the view, not the epochs of everything else. librdkafka
//! says when its queue turns non-empty (`stream::arrival`): the source
//! pump runs an epoch for the view once records came, and none while the
//! topic is idle.
//!
//! `scan.startup.mode` (`earliest`, default; `latest`; `timestamp` with
//! `scan.startup.timestamp.millis`) picks the first offsets when a view
//! starts; they are recorded in its position at once. `properties.X`
//! options are handed to librdkafka as `X`. `INCLUDE key | partition |
//! offset | timestamp [AS name]` adds the record's metadata as columns.
//! Records that do not decode are handed back as bad records, or fail the
//! view with `bad_records = 'fail'`.
//!
//! `FORMAT UPSERT ENCODE JSON` and `FORMAT DEBEZIUM ENCODE JSON` (see
//! `changelog`) read keyed changes, for a table with a primary key.
//! `FORMAT PLAIN ENCODE AVRO (schema.registry = 'http://…')` reads the
//! Confluent wire format (see `avro`); while the registry cannot be
//! reached, records wait in Kafka and the reader retries with backoff.
//!
//! While the broker cannot be reached the view reads nothing and the
//! connector retries with backoff (up to 10 s); the error is logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, Int32Builder, Int64Builder, RecordBatch, RecordBatchOptions,
    TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::changelog::{self, Change, Envelope};
use super::decode::{Encoding, PayloadDecoder, Payloads};
use super::{BadRecord, Connector, ConnectorOptions, KeyedChanges, KeyedReader, Retry, SourcePosition, SourceReader};
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::arrival::Arrival;
use crate::stream::change::all_nullable;

/// How long a metadata or offset request to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Startup {
    Earliest,
    Latest,
    Timestamp(i64),
}

/// Record metadata a source can add as columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Include {
    Key,
    Partition,
    Offset,
    Timestamp,
}

impl Include {
    const ALL: [(Include, &'static str); 4] = [
        (Include::Key, "key"),
        (Include::Partition, "partition"),
        (Include::Offset, "offset"),
        (Include::Timestamp, "timestamp"),
    ];

    fn data_type(self) -> DataType {
        match self {
            Include::Key => DataType::Binary,
            Include::Partition => DataType::Int32,
            Include::Offset => DataType::Int64,
            Include::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
        }
    }
}

/// Hears librdkafka's errors (a broker down, a refused connection), which
/// it reports besides the records, for the reader's status.
#[derive(Default)]
struct ReaderContext {
    last_error: Mutex<Option<(Instant, String)>>,
}

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka client");
        *self.last_error.lock() = Some((Instant::now(), format!("{error}: {reason}")));
    }
}

impl ConsumerContext for ReaderContext {}

/// How long after a client error without a record since the status says so.
const ERROR_SHOWN_FOR: Duration = Duration::from_secs(10);

/// The consumer of one view, and the offsets it will deliver next.
struct Connection {
    consumer: BaseConsumer<ReaderContext>,
    assigned: BTreeMap<i32, i64>,
}

#[derive(Default)]
struct Health {
    /// When to try the broker again after a failure.
    retry: Retry,
    /// The last failure, until a read succeeds again.
    error: Option<String>,
}

pub struct KafkaReader {
    topic: String,
    config: ClientConfig,
    startup: Startup,
    /// Columns from the payload, then the included metadata columns.
    schema: SchemaRef,
    includes: Vec<Include>,
    decoder: Arc<PayloadDecoder>,
    /// PLAIN appends; UPSERT and DEBEZIUM change rows by key.
    envelope: Envelope,
    /// Primary-key columns (keyed formats), and a decoder of the rows of
    /// deletes, in which only they need be present.
    key_columns: Vec<String>,
    key_decoder: Arc<PayloadDecoder>,
    fail_on_bad: bool,
    connection: Mutex<Option<Connection>>,
    health: Mutex<Health>,
    /// Set by librdkafka's thread when the consumer's queue turns
    /// non-empty, cleared before a read drains it: the source pump runs
    /// no epoch for a view whose readers have nothing new.
    arrival: Arc<Arrival>,
}

/// Most events that are not records one read serves before it leaves the
/// rest for the next read.
const MAX_EVENTS_PER_READ: usize = 64;

/// How many events (records, errors, librdkafka's own) wait in the queue
/// the consumer polls. rdkafka has no safe call for it.
fn queued(consumer: &BaseConsumer<ReaderContext>) -> usize {
    // SAFETY: the client handle is valid while `consumer` lives, which
    // outlives this call; `rd_kafka_queue_get_consumer` returns a new
    // reference to the consumer's queue (or null), released here at once.
    unsafe {
        let queue = rdkafka::bindings::rd_kafka_queue_get_consumer(consumer.client().native_ptr());
        if queue.is_null() {
            return 0;
        }
        let length = rdkafka::bindings::rd_kafka_queue_length(queue);
        rdkafka::bindings::rd_kafka_queue_destroy(queue);
        length
    }
}

fn bad_option(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, message)
}

fn broker_error(topic: &str, error: impl std::fmt::Display) -> SqlError {
    SqlError::new(sqlstate::UNABLE_TO_CONNECT, format!("cannot read Kafka topic \"{topic}\": {error}"))
}

impl KafkaReader {
    /// Its format reads keyed changes (UPSERT, DEBEZIUM), not rows.
    pub fn keyed(&self) -> bool {
        self.envelope.keyed()
    }

    pub fn new(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Self> {
        options.reject_unknown(&|key| {
            matches!(
                key,
                "connector"
                    | "topic"
                    | "scan.startup.mode"
                    | "scan.startup.timestamp.millis"
                    | "format"
                    | "encode"
                    | "delimiter"
                    | "bad_records"
                    | super::PRIMARY_KEY_OPTION
            ) || super::avro::is_option(key)
                || key.starts_with("properties.")
                || key.strip_prefix("include.").is_some_and(|k| Include::ALL.iter().any(|(_, name)| *name == k))
        })?;
        let topic = options
            .get("topic")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad_option("connector 'kafka' needs topic = '…'"))?
            .to_string();
        let servers = options
            .get("properties.bootstrap.server")
            .or_else(|| options.get("properties.bootstrap.servers"))
            .ok_or_else(|| bad_option("connector 'kafka' needs properties.bootstrap.server = 'host:port'"))?;
        let envelope = Envelope::from_options(options)?;
        let key_columns: Vec<String> = options
            .get(super::PRIMARY_KEY_OPTION)
            .map(|keys| keys.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect())
            .unwrap_or_default();
        if envelope.keyed() && key_columns.is_empty() {
            return Err(SqlError::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!(
                    "FORMAT {} needs a table with a PRIMARY KEY (CREATE TABLE t (…, PRIMARY KEY (id)) WITH (connector = 'kafka', …))",
                    options.get("format").unwrap_or_default().to_uppercase()
                ),
            ));
        }
        let encoding = Encoding::from_options(options)?;
        // Keys and delete rows are read as JSON.
        if envelope.keyed() && encoding != Encoding::Json {
            return Err(SqlError::not_supported("FORMAT UPSERT and FORMAT DEBEZIUM with an encoding other than JSON"));
        }
        let startup = match options.get("scan.startup.mode").map(str::to_ascii_lowercase).as_deref() {
            None | Some("earliest") => Startup::Earliest,
            Some("latest") => Startup::Latest,
            Some("timestamp") => {
                let millis = options
                    .get("scan.startup.timestamp.millis")
                    .ok_or_else(|| bad_option("scan.startup.mode = 'timestamp' needs scan.startup.timestamp.millis"))?;
                Startup::Timestamp(millis.trim().parse().map_err(|_| {
                    bad_option(format!("scan.startup.timestamp.millis = '{millis}' is not a whole number"))
                })?)
            }
            Some(other) => {
                return Err(bad_option(format!("scan.startup.mode = '{other}' (modes: earliest, latest, timestamp)")));
            }
        };
        let fail_on_bad = match options.get("bad_records").map(str::to_ascii_lowercase).as_deref() {
            None | Some("dead_letter") => false,
            Some("fail") => true,
            Some(other) => return Err(bad_option(format!("bad_records = '{other}' (dead_letter or fail)"))),
        };
        let payload = declared.filter(|s| !s.fields().is_empty()).ok_or_else(|| {
            bad_option("connector 'kafka' needs the source's columns, e.g. CREATE SOURCE s (id BIGINT, …) WITH (…)")
        })?;

        let mut fields: Vec<Field> = payload.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut includes = Vec::new();
        for (include, name) in Include::ALL {
            if let Some(column) = options.get(&format!("include.{name}")) {
                if fields.iter().any(|f| f.name() == column) {
                    return Err(SqlError::new("42701", format!("column \"{column}\" specified more than once")));
                }
                includes.push(include);
                // Nullable: a row INSERTed into a connector-fed table has no offset.
                fields.push(Field::new(column, include.data_type(), true));
            }
        }

        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", servers)
            // Offsets live in Freshet's checkpoints, not in a consumer group.
            .set("group.id", "freshet")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            // Never jump elsewhere on its own (that would skip or repeat
            // records): an offset the broker refuses is an error, and the
            // next read assigns the position's offsets again.
            .set("auto.offset.reset", "error")
            .set("socket.timeout.ms", "5000");
        for (key, value) in &options.values {
            if let Some(property) = key.strip_prefix("properties.")
                && property != "bootstrap.server"
            {
                config.set(property, value);
            }
        }
        let key_decoder = Arc::new(PayloadDecoder::new(all_nullable(&payload), Encoding::Json));
        let decoder = Arc::new(PayloadDecoder::for_source(payload, options, Some(&topic))?);
        Ok(Self {
            topic,
            config,
            startup,
            schema: Arc::new(Schema::new(fields)),
            includes,
            key_decoder,
            decoder,
            envelope,
            key_columns,
            fail_on_bad,
            connection: Mutex::new(None),
            arrival: Arc::new(Arrival::default()),
            health: Mutex::new(Health::default()),
        })
    }

    fn consumer(&self) -> Result<BaseConsumer<ReaderContext>> {
        self.config
            .create_with_context(ReaderContext::default())
            .map_err(|e| bad_option(format!("Kafka client options: {e}")))
    }

    /// The topic's partitions, from the broker.
    fn partitions(&self, consumer: &BaseConsumer<ReaderContext>) -> Result<Vec<i32>> {
        let metadata =
            consumer.fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT).map_err(|e| broker_error(&self.topic, e))?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.topic).ok_or_else(|| {
            SqlError::new(sqlstate::UNDEFINED_OBJECT, format!("Kafka topic \"{}\" does not exist", self.topic))
        })?;
        if topic.error().is_some() || topic.partitions().is_empty() {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("Kafka topic \"{}\" does not exist or has no partitions", self.topic),
            ));
        }
        Ok(topic.partitions().iter().map(|p| p.id()).collect())
    }

    /// Where a view starts reading each partition.
    fn start_offsets(&self, consumer: &BaseConsumer<ReaderContext>) -> Result<BTreeMap<i32, i64>> {
        let partitions = self.partitions(consumer)?;
        let mut offsets = BTreeMap::new();
        let mut found_by_time = BTreeMap::new();
        if let Startup::Timestamp(millis) = self.startup {
            let mut query = TopicPartitionList::new();
            for &p in &partitions {
                query
                    .add_partition_offset(&self.topic, p, Offset::Offset(millis))
                    .map_err(|e| broker_error(&self.topic, e))?;
            }
            let answer =
                consumer.offsets_for_times(query, REQUEST_TIMEOUT).map_err(|e| broker_error(&self.topic, e))?;
            for element in answer.elements() {
                if let Offset::Offset(o) = element.offset() {
                    found_by_time.insert(element.partition(), o);
                }
            }
            drop(answer);
        }
        for p in partitions {
            let (low, high) =
                consumer.fetch_watermarks(&self.topic, p, REQUEST_TIMEOUT).map_err(|e| broker_error(&self.topic, e))?;
            let start = match self.startup {
                Startup::Earliest => low,
                Startup::Latest => high,
                // No record at or after the time yet: from the end.
                Startup::Timestamp(_) => found_by_time.get(&p).copied().unwrap_or(high),
            };
            offsets.insert(p, start);
        }
        Ok(offsets)
    }

    /// Connects (once) and points the consumer at `position`.
    fn prepare(&self, slot: &mut Option<Connection>, position: &mut SourcePosition) -> Result<()> {
        if slot.is_none() {
            let mut consumer = self.consumer()?;
            // From librdkafka's thread, when fetched records (or an error)
            // land in the queue a read polls.
            let arrival = self.arrival.clone();
            consumer.set_nonempty_callback(move || arrival.arrived());
            *slot = Some(Connection { consumer, assigned: BTreeMap::new() });
        }
        let connection = slot.as_mut().ok_or_else(|| SqlError::internal("no Kafka connection"))?;
        if position.offsets.is_empty() {
            position.offsets = self.start_offsets(&connection.consumer)?;
        }
        if connection.assigned != position.offsets {
            let mut assignment = TopicPartitionList::new();
            for (&p, &o) in &position.offsets {
                assignment
                    .add_partition_offset(&self.topic, p, Offset::Offset(o))
                    .map_err(|e| broker_error(&self.topic, e))?;
            }
            connection.consumer.assign(&assignment).map_err(|e| broker_error(&self.topic, e))?;
            drop(assignment);
            connection.assigned = position.offsets.clone();
        }
        Ok(())
    }

    /// The metadata columns of the records read.
    fn metadata_columns(&self, metadata: &Metadata, kept: &[bool]) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.includes.len());
        for include in &self.includes {
            let rows = (0..metadata.partitions.len()).filter(|&i| kept.get(i) == Some(&true));
            let column: ArrayRef = match include {
                Include::Partition => {
                    let mut b = Int32Builder::with_capacity(kept.len());
                    rows.for_each(|i| b.append_option(metadata.partitions.get(i).copied()));
                    Arc::new(b.finish())
                }
                Include::Offset => {
                    let mut b = Int64Builder::with_capacity(kept.len());
                    rows.for_each(|i| b.append_option(metadata.offsets.get(i).copied()));
                    Arc::new(b.finish())
                }
                Include::Timestamp => {
                    let mut b = TimestampNanosecondBuilder::with_capacity(kept.len()).with_timezone("+00:00");
                    let nanos = |i: usize| metadata.timestamps.get(i).copied().flatten()?.checked_mul(1_000_000);
                    rows.for_each(|i| b.append_option(nanos(i)));
                    Arc::new(b.finish())
                }
                Include::Key => {
                    let mut b = BinaryBuilder::with_capacity(kept.len(), metadata.keys.len());
                    rows.for_each(|i| match metadata.key(i) {
                        Some(key) => b.append_value(key),
                        None => b.append_null(),
                    });
                    Arc::new(b.finish())
                }
            };
            columns.push(column);
        }
        columns
    }

    /// Puts back records fetched but not read (`position` returns to
    /// `before`, and the consumer is pointed there again), after `error`.
    fn unread(&self, position: &mut SourcePosition, before: SourcePosition, error: &SqlError) {
        *position = before;
        if let Some(connection) = self.connection.lock().as_mut() {
            connection.assigned.clear();
        }
        self.failed(error);
    }

    /// Notes a failure to reach the broker; reads wait out the backoff.
    fn failed(&self, error: &SqlError) {
        // Read again (once the retry is due) whether or not records come.
        self.arrival.arrived();
        let mut health = self.health.lock();
        let wait = health.retry.failed();
        health.error = Some(error.message.clone());
        tracing::warn!(topic = %self.topic, retry_in = ?wait, "{}", error.message);
    }
}

impl KafkaReader {
    /// Takes up to `max_records` fetched records after `position` (which
    /// it advances); `None` when none are there.
    fn fetch(&self, position: &mut SourcePosition, max_records: usize) -> Result<Option<(Payloads, Metadata)>> {
        if self.health.lock().retry.waiting() {
            return Ok(None);
        }
        let mut slot = self.connection.lock();
        if let Err(error) = self.prepare(&mut slot, position) {
            if error.code == sqlstate::INVALID_PARAMETER_VALUE {
                return Err(error);
            }
            self.failed(&error);
            return Ok(None);
        }
        let Some(connection) = slot.as_mut() else { return Ok(None) };
        // Whatever lands in the queue from now on is news for the next read.
        self.arrival.taking();
        let mut polled_error = false;
        let mut events_served = 0;
        let mut payloads = Payloads::default();
        let mut metadata = Metadata::default();
        let want_keys = self.includes.contains(&Include::Key) || self.envelope.keyed();
        while payloads.len() < max_records {
            let message = match connection.consumer.poll(Duration::ZERO) {
                // Also what a poll says after serving an event that is not
                // a record (a log line, statistics): records may be behind it.
                None if events_served < MAX_EVENTS_PER_READ && queued(&connection.consumer) > 0 => {
                    events_served += 1;
                    continue;
                }
                None => break,
                Some(Err(error)) => {
                    self.failed(&broker_error(&self.topic, error));
                    polled_error = true;
                    // Re-assign at the position next time: a partition
                    // librdkafka gave up on stays given up otherwise.
                    connection.assigned.clear();
                    break;
                }
                Some(Ok(message)) => message,
            };
            let (partition, offset) = (message.partition(), message.offset());
            let Some(next) = connection.assigned.get_mut(&partition) else { continue };
            if offset < *next {
                continue;
            }
            *next = offset + 1;
            position.offsets.insert(partition, offset + 1);
            match message.payload() {
                Some(payload) => payloads.push(payload),
                None => payloads.push(&[]),
            }
            metadata.partitions.push(partition);
            metadata.offsets.push(offset);
            metadata.timestamps.push(message.timestamp().to_millis());
            if want_keys {
                match message.key() {
                    Some(key) => {
                        let start = metadata.keys.len();
                        metadata.keys.extend_from_slice(key);
                        metadata.key_ranges.push(Some((start, metadata.keys.len())));
                    }
                    None => metadata.key_ranges.push(None),
                }
            }
        }
        if !payloads.is_empty() {
            *connection.consumer.context().last_error.lock() = None;
        }
        if payloads.len() >= max_records || queued(&connection.consumer) > 0 {
            // Stopped before the queue was empty: it will not turn
            // non-empty again to say so.
            self.arrival.left_behind();
        }
        drop(slot);
        if !polled_error {
            let mut health = self.health.lock();
            health.error = None;
            if !payloads.is_empty() {
                health.retry.succeeded();
            }
        }
        Ok((!payloads.is_empty()).then_some((payloads, metadata)))
    }

    /// A record that did not make a row: kept, or failing the read with
    /// `bad_records = 'fail'`.
    fn bad_record(
        &self,
        metadata: &Metadata,
        payloads: &Payloads,
        i: usize,
        error: &str,
        bad: &mut Vec<BadRecord>,
    ) -> Result<()> {
        if self.fail_on_bad {
            return Err(SqlError::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!(
                    "Kafka topic \"{}\" partition {} offset {}: {error}",
                    self.topic,
                    metadata.partition(i),
                    metadata.offset(i)
                ),
            ));
        }
        bad.push(BadRecord {
            partition: metadata.partition(i),
            offset: metadata.offset(i),
            payload: payloads.get(i).to_vec(),
            error: error.to_string(),
        });
        Ok(())
    }
}

/// Per record: where it came from, in read order.
#[derive(Default)]
struct Metadata {
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
    keys: Vec<u8>,
    /// Where each key lies in `keys`, or `None` for a record without one.
    key_ranges: Vec<Option<(usize, usize)>>,
}

impl Metadata {
    // The vectors are filled together, one entry per record fetched; a
    // record past them reads as partition and offset -1 (none).
    fn partition(&self, i: usize) -> i32 {
        self.partitions.get(i).copied().unwrap_or(-1)
    }

    fn offset(&self, i: usize) -> i64 {
        self.offsets.get(i).copied().unwrap_or(-1)
    }

    fn key(&self, i: usize) -> Option<&[u8]> {
        let (start, end) = self.key_ranges.get(i).copied().flatten()?;
        self.keys.get(start..end)
    }
}

impl Connector for KafkaReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn check(&self) -> Result<()> {
        let consumer = self.consumer()?;
        self.partitions(&consumer)?;
        self.decoder.check()
    }

    fn status(&self) -> Option<String> {
        if let Some(error) = &self.health.lock().error {
            return Some(format!("retrying: {error}"));
        }
        let connection = self.connection.lock();
        let Some(connection) = connection.as_ref() else { return Some("starting".to_string()) };
        let client_error = connection.consumer.context().last_error.lock().clone();
        Some(match client_error {
            Some((at, error)) if at.elapsed() < ERROR_SHOWN_FOR => format!("error: {error}"),
            _ => "reading".to_string(),
        })
    }
}

impl SourceReader for KafkaReader {
    fn read(
        &self,
        position: &mut SourcePosition,
        _now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<RecordBatch> {
        if self.envelope.keyed() {
            return Err(SqlError::internal("a keyed Kafka format is read through read_changes"));
        }
        let before = position.clone();
        let Some((payloads, metadata)) = self.fetch(position, max_records)? else {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        };
        if let Err(error) = self.decoder.resolve(&payloads) {
            // The schema registry is down: read these records again later.
            self.unread(position, before, &error);
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let decoded = self.decoder.decode(&payloads)?;
        let mut kept = vec![true; payloads.len()];
        for (i, error) in &decoded.bad {
            if let Some(kept) = kept.get_mut(*i) {
                *kept = false;
            }
            self.bad_record(&metadata, &payloads, *i, error, bad)?;
        }
        let mut columns = decoded.rows.columns().to_vec();
        columns.extend(self.metadata_columns(&metadata, &kept));
        let options = RecordBatchOptions::new().with_row_count(Some(decoded.rows.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }

    fn exhausted(&self, _position: &SourcePosition) -> bool {
        false
    }

    fn replayable(&self) -> bool {
        false
    }

    fn arrival(&self) -> Option<Arc<Arrival>> {
        Some(self.arrival.clone())
    }

    fn instance(&self) -> Option<Arc<dyn SourceReader>> {
        Some(Arc::new(Self {
            topic: self.topic.clone(),
            config: self.config.clone(),
            startup: self.startup,
            schema: self.schema.clone(),
            includes: self.includes.clone(),
            decoder: self.decoder.clone(),
            envelope: self.envelope,
            key_columns: self.key_columns.clone(),
            key_decoder: self.key_decoder.clone(),
            fail_on_bad: self.fail_on_bad,
            connection: Mutex::new(None),
            arrival: Arc::new(Arrival::default()),
            health: Mutex::new(Health::default()),
        }))
    }
}

impl KeyedReader for KafkaReader {
    fn read_changes(
        &self,
        position: &mut SourcePosition,
        _now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<KeyedChanges> {
        // connectors::reader hands out only keyed formats as KeyedReader.
        if !self.envelope.keyed() {
            return Err(SqlError::internal("a PLAIN Kafka format is read through read"));
        }
        let Some((payloads, metadata)) = self.fetch(position, max_records)? else {
            return Ok(KeyedChanges::upserts(RecordBatch::new_empty(self.schema.clone())));
        };
        // Take the envelopes apart: row payloads to upsert, key payloads
        // to delete, and which message each came from.
        let (mut upserts, mut deletes) = (Payloads::default(), Payloads::default());
        let (mut upsert_of, mut delete_of) = (Vec::new(), Vec::new());
        let mut kept = vec![false; payloads.len()];
        for i in 0..payloads.len() {
            match changelog::split(self.envelope, metadata.key(i), payloads.get(i), &self.key_columns) {
                Ok(Change::Upsert(row)) => {
                    upserts.push(&row);
                    upsert_of.push(i);
                }
                Ok(Change::Delete(key)) => {
                    deletes.push(&key);
                    delete_of.push(i);
                }
                Ok(Change::Skip) => {}
                Err(error) => self.bad_record(&metadata, &payloads, i, &error.message, bad)?,
            }
        }
        let decoded_upserts = self.decoder.decode(&upserts)?;
        let decoded_deletes = self.key_decoder.decode(&deletes)?;
        // Message index -> (0 = upsert rows | 1 = delete rows, row), in order.
        let mut place: Vec<Option<(usize, usize)>> = vec![None; payloads.len()];
        for (side, decoded, of) in [(0, &decoded_upserts, &upsert_of), (1, &decoded_deletes, &delete_of)] {
            let mut failed = vec![false; of.len()];
            for (j, error) in &decoded.bad {
                if let (Some(failed), Some(&message)) = (failed.get_mut(*j), of.get(*j)) {
                    *failed = true;
                    self.bad_record(&metadata, &payloads, message, error, bad)?;
                }
            }
            let mut row = 0;
            for (&message, &failed) in of.iter().zip(&failed) {
                if !failed {
                    if let Some(place) = place.get_mut(message) {
                        *place = Some((side, row));
                    }
                    row += 1;
                }
            }
        }
        let order: Vec<(usize, usize)> = place.iter().flatten().copied().collect();
        for (kept, place) in kept.iter_mut().zip(&place) {
            *kept = place.is_some();
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for c in 0..decoded_upserts.rows.num_columns() {
            let sides = [decoded_upserts.rows.column(c).as_ref(), decoded_deletes.rows.column(c).as_ref()];
            columns.push(datafusion::arrow::compute::interleave(&sides, &order)?);
        }
        columns.extend(self.metadata_columns(&metadata, &kept));
        let nullable = all_nullable(&self.schema);
        let options = RecordBatchOptions::new().with_row_count(Some(order.len()));
        let rows = RecordBatch::try_new_with_options(nullable, columns, &options)?;
        let deletes = BooleanArray::from(order.iter().map(|(side, _)| *side == 1).collect::<Vec<_>>());
        Ok(KeyedChanges { rows, deletes, unchanged: Vec::new() })
    }
}
