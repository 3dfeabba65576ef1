//! The `kafka` sink: a view's changes as JSON messages on a topic.
//!
//! Each epoch is one Kafka transaction (a transactional producer whose id
//! is the sink's), and every message carries the epoch in a
//! `freshet_epoch` header. Consumers reading `read_committed` see whole
//! epochs or nothing. After a restart or a failed commit the producer is
//! made again (which fences any older one and aborts its open transaction)
//! and the last committed epoch is read back from the tail of each
//! partition: epochs up to it are skipped, so nothing is written twice.
//!
//! Messages: `append-only`: the row; `upsert`: key = the key columns as a
//! JSON object, value = the row, or no value (a tombstone) for a delete;
//! `debezium`: value = `{"before": …, "after": …, "op": "c"|"u"|"d",
//! "ts_ms": …}`, keyed like upsert.

use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{SinkShape, SinkType, SinkWriter, json_rows};
use crate::connectors::ConnectorOptions;
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::ChangeBatch;

const EPOCH_HEADER: &str = "freshet_epoch";
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaSink {
    topic: String,
    producer_config: ClientConfig,
    consumer_config: ClientConfig,
    shape: SinkShape,
    producer: Mutex<Option<BaseProducer>>,
}

fn failed(topic: &str, error: impl std::fmt::Display) -> SqlError {
    SqlError::new(sqlstate::UNABLE_TO_CONNECT, format!("Kafka sink to topic \"{topic}\": {error}"))
}

impl KafkaSink {
    pub fn new(name: &str, options: &ConnectorOptions, shape: SinkShape) -> Result<Self> {
        options.reject_unknown(&|key| {
            matches!(key, "connector" | "topic" | "type" | "primary_key" | "force_append_only" | "format" | "encode")
                || key.starts_with("properties.")
        })?;
        let bad = |m: &str| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, m.to_string());
        let topic =
            options.get("topic").filter(|t| !t.is_empty()).ok_or_else(|| bad("a kafka sink needs topic = '…'"))?;
        let servers = options
            .get("properties.bootstrap.server")
            .or_else(|| options.get("properties.bootstrap.servers"))
            .ok_or_else(|| bad("a kafka sink needs properties.bootstrap.server = 'host:port'"))?;
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", servers)
            .set("transactional.id", format!("freshet-sink-{name}"))
            .set("enable.idempotence", "true")
            .set("socket.timeout.ms", "5000")
            .set("transaction.timeout.ms", "60000");
        let mut consumer_config = ClientConfig::new();
        consumer_config
            .set("bootstrap.servers", servers)
            .set("group.id", format!("freshet-sink-{name}"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("socket.timeout.ms", "5000");
        for (key, value) in &options.values {
            if let Some(property) = key.strip_prefix("properties.").filter(|p| !p.starts_with("bootstrap.server")) {
                producer_config.set(property, value);
            }
        }
        Ok(Self { topic: topic.to_string(), producer_config, consumer_config, shape, producer: Mutex::new(None) })
    }

    fn partitions(&self, consumer: &BaseConsumer) -> Result<Vec<i32>> {
        let metadata = consumer.fetch_metadata(Some(&self.topic), TIMEOUT).map_err(|e| failed(&self.topic, e))?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.topic);
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().iter().map(|p| p.id()).collect())
            }
            _ => Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("Kafka topic \"{}\" does not exist (create it before the sink)", self.topic),
            )),
        }
    }

    /// The largest epoch header among the committed messages from `start`
    /// to the end of a partition.
    fn last_epoch_from(&self, consumer: &BaseConsumer, partition: i32, start: i64, high: i64) -> Result<Option<u64>> {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, partition, Offset::Offset(start))
            .map_err(|e| failed(&self.topic, e))?;
        consumer.assign(&assignment).map_err(|e| failed(&self.topic, e))?;
        drop(assignment);
        let deadline = Instant::now() + TIMEOUT;
        let mut found = None;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    if let Some(headers) = message.headers() {
                        for header in headers.iter().filter(|h| h.key == EPOCH_HEADER) {
                            let epoch = header.value.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                            found = found.max(epoch);
                        }
                    }
                    // The end: the last offset (a transaction marker
                    // follows the last message of each transaction).
                    if message.offset() + 2 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(error)) => return Err(failed(&self.topic, error)),
                None => {
                    let position = consumer.position().ok().and_then(|p| {
                        p.find_partition(&self.topic, partition).and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                    });
                    if position.is_some_and(|p| p >= high) {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    fn producer(&self) -> Result<()> {
        let mut slot = self.producer.lock();
        if slot.is_none() {
            let producer: BaseProducer = self.producer_config.create().map_err(|e| failed(&self.topic, e))?;
            producer.init_transactions(TIMEOUT).map_err(|e| failed(&self.topic, e))?;
            *slot = Some(producer);
        }
        Ok(())
    }

    fn messages(&self, changes: &ChangeBatch) -> Result<Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>> {
        let shaped = self.shape.shape(changes)?;
        let keys = |rows: &RecordBatch| -> Result<Vec<Option<Vec<u8>>>> {
            if self.shape.key.is_empty() {
                return Ok(vec![None; rows.num_rows()]);
            }
            Ok(json_rows(&rows.project(&self.shape.key)?)?.into_iter().map(Some).collect())
        };
        let mut messages = Vec::new();
        match self.shape.kind {
            SinkType::AppendOnly { .. } | SinkType::Upsert => {
                for (key, value) in keys(&shaped.upserts)?.into_iter().zip(json_rows(&shaped.upserts)?) {
                    messages.push((key, Some(value)));
                }
                for key in keys(&shaped.deletes)? {
                    messages.push((key, None));
                }
            }
            SinkType::Debezium => {
                let now = crate::stream::wall_clock_nanos() / 1_000_000;
                let event = |before: Option<&[u8]>, after: Option<&[u8]>, op: &str| -> Vec<u8> {
                    let mut out = Vec::new();
                    out.extend_from_slice(b"{\"before\":");
                    out.extend_from_slice(before.unwrap_or(b"null"));
                    out.extend_from_slice(b",\"after\":");
                    out.extend_from_slice(after.unwrap_or(b"null"));
                    out.extend_from_slice(format!(",\"op\":\"{op}\",\"ts_ms\":{now}}}").as_bytes());
                    out
                };
                // A NULL replaced row (a new key) encodes as all-null: tell by validity.
                let replaced = json_rows(&shaped.replaced)?;
                let &first_key =
                    self.shape.key.first().ok_or_else(|| SqlError::internal("a Debezium sink without a key"))?;
                for (i, (key, after)) in keys(&shaped.upserts)?.into_iter().zip(json_rows(&shaped.upserts)?).enumerate()
                {
                    let existed = shaped.replaced.column(first_key).is_valid(i);
                    let before = replaced.get(i).filter(|_| existed).map(Vec::as_slice);
                    messages.push((key, Some(event(before, Some(&after), if existed { "u" } else { "c" }))));
                }
                for (key, before) in keys(&shaped.deletes)?.into_iter().zip(json_rows(&shaped.deletes)?) {
                    messages.push((key, Some(event(Some(&before), None, "d"))));
                }
            }
        }
        Ok(messages)
    }

    fn write_epoch(&self, epoch: u64, changes: &ChangeBatch) -> Result<()> {
        let messages = self.messages(changes)?;
        self.producer()?;
        let slot = self.producer.lock();
        let producer = slot.as_ref().ok_or_else(|| SqlError::internal("no Kafka producer"))?;
        producer.begin_transaction().map_err(|e| failed(&self.topic, e))?;
        let epoch_text = epoch.to_string();
        let sent = (|| -> Result<()> {
            for (key, value) in &messages {
                let headers =
                    OwnedHeaders::new().insert(Header { key: EPOCH_HEADER, value: Some(epoch_text.as_bytes()) });
                let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
                if let Some(key) = key {
                    record = record.key(key.as_slice());
                }
                if let Some(value) = value {
                    record = record.payload(value.as_slice());
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            producer.poll(Duration::from_millis(50));
                        }
                        Err((error, _)) => return Err(failed(&self.topic, error)),
                    }
                }
            }
            producer.commit_transaction(TIMEOUT * 3).map_err(|e| failed(&self.topic, e))
        })();
        if sent.is_err() {
            let _ = producer.abort_transaction(TIMEOUT);
        }
        sent
    }
}

impl SinkWriter for KafkaSink {
    fn delivered(&self) -> Result<Option<u64>> {
        let consumer: BaseConsumer = self.consumer_config.create().map_err(|e| failed(&self.topic, e))?;
        let mut last = None;
        for partition in self.partitions(&consumer)? {
            let (low, high) =
                consumer.fetch_watermarks(&self.topic, partition, TIMEOUT).map_err(|e| failed(&self.topic, e))?;
            // Look back from the end until a message with an epoch shows.
            let mut back = 64i64;
            loop {
                let start = (high - back).max(low);
                if start >= high {
                    break;
                }
                if let Some(epoch) = self.last_epoch_from(&consumer, partition, start, high)? {
                    last = last.max(Some(epoch));
                    break;
                }
                if start == low {
                    break;
                }
                back *= 4;
            }
        }
        Ok(last)
    }

    fn write(&self, epoch: u64, changes: &ChangeBatch) -> Result<()> {
        let written = self.write_epoch(epoch, changes);
        if written.is_err() {
            // Made again next time: fences this one, aborts what it had open.
            *self.producer.lock() = None;
        }
        written
    }

    fn check(&self) -> Result<()> {
        let consumer: BaseConsumer = self.consumer_config.create().map_err(|e| failed(&self.topic, e))?;
        self.partitions(&consumer).map(|_| ())
    }
}
