//! `ENCODE AVRO` sources against a real Kafka-protocol broker: records
//! written by Apache Arrow's Avro writer in the Confluent wire format with
//! schemas from a registry (two schema versions on one topic, a registry
//! outage, a kill -9), raw datums with an inline schema, bad records kept,
//! and clear errors at CREATE.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::kafka::{Broker, count};
use crate::schema_registry::SchemaRegistry;
use crate::server::{TestServer, describe, error_code, rows, tempdir::TempDir};

const ORDER_V1: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"},
    {"name": "customer", "type": "int"},
    {"name": "amount", "type": "double"},
    {"name": "note", "type": ["null", "string"], "default": null}]}"#;

/// Version 2 adds a field (with a default, as a compatible change must).
const ORDER_V2: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"},
    {"name": "customer", "type": "int"},
    {"name": "amount", "type": "double"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "region", "type": "string", "default": "eu"}]}"#;

/// Version 3 adds one more.
const ORDER_V3: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"},
    {"name": "customer", "type": "int"},
    {"name": "amount", "type": "double"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "region", "type": "string", "default": "eu"},
    {"name": "channel", "type": "string", "default": "web"}]}"#;

/// Orders with these ids as rows of `schema` (v1, v2 or v3): customer is
/// id % 7, amount id / 2, a note on even ids, region "us" on ids divisible
/// by 3 and "eu" otherwise.
fn orders(schema: &str, ids: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = ids.collect();
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer", DataType::Int32, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("note", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int32Array::from(ids.iter().map(|i| (i % 7) as i32).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(ids.iter().map(|&i| i as f64 / 2.0).collect::<Vec<_>>())),
        Arc::new(StringArray::from(ids.iter().map(|i| (i % 2 == 0).then(|| format!("note {i}"))).collect::<Vec<_>>())),
    ];
    if schema.contains("region") {
        fields.push(Field::new("region", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(
            ids.iter().map(|i| if i % 3 == 0 { "us" } else { "eu" }).collect::<Vec<_>>(),
        )));
    }
    if schema.contains("channel") {
        fields.push(Field::new("channel", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec!["app"; ids.len()])));
    }
    let metadata = [(SCHEMA_METADATA_KEY.to_string(), schema.to_string())].into_iter().collect();
    RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, metadata)), columns).expect("orders")
}

/// Each row of `batch` as one message: in the Confluent wire format with
/// schema id `id`, or a raw datum when `id` is `None`.
fn encode(batch: &RecordBatch, id: Option<u32>) -> Vec<Vec<u8>> {
    let builder = WriterBuilder::new(batch.schema().as_ref().clone());
    let mut encoder = match id {
        Some(id) => builder.with_fingerprint_strategy(FingerprintStrategy::Id(id)).build_encoder::<AvroSoeFormat>(),
        None => builder.build_encoder::<AvroBinaryFormat>(),
    }
    .expect("Avro encoder");
    encoder.encode(batch).expect("encode");
    encoder.flush().iter().map(|row| row.to_vec()).collect()
}

async fn send_bytes(producer: &FutureProducer, topic: &str, partition: i32, payload: &[u8]) -> i64 {
    let record = FutureRecord::<(), [u8]>::to(topic).partition(partition).payload(payload);
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(delivery) => delivery.offset,
        Err((error, _)) => panic!("send to {topic}/{partition}: {error}"),
    }
}

/// Sends the messages round-robin over `partitions` partitions.
async fn send_all(producer: &FutureProducer, topic: &str, partitions: i32, messages: &[Vec<u8>]) {
    for (i, message) in messages.iter().enumerate() {
        send_bytes(producer, topic, i as i32 % partitions, message).await;
    }
}

async fn wait_for(
    client: &tokio_postgres::Client,
    sql: &str,
    what: &str,
    ok: impl Fn(&[Vec<String>]) -> bool,
) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = rows(client, sql).await;
        if ok(&have) {
            return have;
        }
        assert!(Instant::now() < deadline, "{what}: {sql} gives {have:?} after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The totals view's expected row for orders with ids in `ids`.
fn totals(ids: impl Iterator<Item = i64> + Clone) -> Vec<Vec<String>> {
    let n = ids.clone().count();
    let id_sum: i64 = ids.clone().sum();
    let customers: i64 = ids.clone().map(|i| i % 7).sum();
    let notes = ids.clone().filter(|i| i % 2 == 0).count();
    let amount: f64 = ids.map(|i| i as f64 / 2.0).sum();
    vec![vec![n.to_string(), id_sum.to_string(), customers.to_string(), notes.to_string(), amount.to_string()]]
}

const TOTALS: &str = "SELECT c, ids, customers, notes, amount FROM order_totals";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_with_a_schema_registry_and_an_inline_schema() {
    let broker = Broker::start();
    broker.create_topic("orders_avro", 2).await;
    broker.create_topic("orders_raw", 1).await;
    let mut registry = SchemaRegistry::start().await;
    let v1 = registry.register("orders_avro-value", ORDER_V1);
    let producer = broker.producer();
    send_all(&producer, "orders_avro", 2, &encode(&orders(ORDER_V1, 0..100), Some(v1))).await;

    let data = TempDir::new("avro-server");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    let (address, url) = (&broker.address, &registry.url.clone());
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders (id BIGINT, customer BIGINT, amount DOUBLE PRECISION, note TEXT)
               WITH (connector = 'kafka', topic = 'orders_avro', properties.bootstrap.server = '{address}')
               FORMAT PLAIN ENCODE AVRO (schema.registry = '{url}');
             CREATE MATERIALIZED VIEW order_totals AS
               SELECT count(*) AS c, sum(id) AS ids, sum(customer) AS customers, count(note) AS notes,
                      sum(amount) AS amount FROM orders;"
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_for(&client, TOTALS, "version 1 records", |r| r == totals(0..100)).await;

    // The producer moves to version 2 (a new field); the source reads both
    // versions, and a new source can ask for the new column, NULL in
    // records written with version 1.
    let v2 = registry.register("orders_avro-value", ORDER_V2);
    assert_ne!(v1, v2);
    send_all(&producer, "orders_avro", 2, &encode(&orders(ORDER_V2, 100..160), Some(v2))).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders_by_region (id BIGINT, region TEXT)
               WITH (connector = 'kafka', topic = 'orders_avro', properties.bootstrap.server = '{address}')
               FORMAT PLAIN ENCODE AVRO (schema.registry = '{url}');
             CREATE MATERIALIZED VIEW per_region AS
               SELECT coalesce(region, 'none') AS region, count(*) AS n, sum(id) AS ids FROM orders_by_region GROUP BY 1;"
        ))
        .await
        .unwrap_or_else(|e| panic!("second source: {}", describe(&e)));

    // Bad records among good ones: not in the wire format, a schema id the
    // registry does not have, a body cut short.
    let good = encode(&orders(ORDER_V2, 160..161), Some(v2)).remove(0);
    let mut unknown_id = good.clone();
    unknown_id[1..5].copy_from_slice(&99u32.to_be_bytes());
    let cut = good[..good.len() - 3].to_vec();
    let mut bad_sent = Vec::new();
    for (payload, error) in [
        (br#"{"id": 1}"#.to_vec(), "wire format"),
        (unknown_id, "schema id 99 is not in the schema registry"),
        (cut, ""),
    ] {
        let offset = send_bytes(&producer, "orders_avro", 1, &payload).await;
        bad_sent.push((offset, payload, error));
    }
    send_all(&producer, "orders_avro", 2, &encode(&orders(ORDER_V2, 160..170), Some(v2))).await;
    wait_for(&client, TOTALS, "both versions", |r| r == totals(0..170)).await;
    let by_region = "SELECT region, n, ids FROM per_region ORDER BY region";
    let expected_regions = |last: i64| {
        let ids = |f: &dyn Fn(i64) -> bool| (0..last).filter(|&i| f(i)).collect::<Vec<_>>();
        let mut out = Vec::new();
        for (name, group) in [
            ("eu", ids(&|i| i >= 100 && i % 3 != 0)),
            ("none", ids(&|i| i < 100)),
            ("us", ids(&|i| i >= 100 && i % 3 == 0)),
        ] {
            out.push(vec![name.to_string(), group.len().to_string(), group.iter().sum::<i64>().to_string()]);
        }
        out
    };
    wait_for(&client, by_region, "per region", |r| r == expected_regions(170)).await;
    let kept = wait_for(
        &client,
        "SELECT \"offset\", payload, error FROM freshet_catalog.source_errors WHERE relation = 'order_totals' ORDER BY 1",
        "bad records kept",
        |r| r.len() == 3,
    )
    .await;
    for ((offset, _, error), row) in bad_sent.iter().zip(&kept) {
        assert_eq!(row[0], offset.to_string());
        assert!(row[2].contains(error) && !row[2].is_empty(), "offset {offset}: {}", row[2]);
    }

    // The registry goes away just as a new schema version appears: the
    // records wait (none is called bad), the status says why, and they
    // arrive once the registry is back.
    let v3 = registry.register("orders_avro-value", ORDER_V3);
    registry.stop();
    send_all(&producer, "orders_avro", 2, &encode(&orders(ORDER_V3, 170..200), Some(v3))).await;
    wait_for(
        &client,
        "SELECT status FROM freshet_catalog.source_status WHERE relation = 'order_totals'",
        "the registry outage reported",
        |r| r.first().is_some_and(|s| s[0].contains("schema registry")),
    )
    .await;
    assert_eq!(rows(&client, TOTALS).await, totals(0..170), "nothing read past the unknown schema");
    registry.restart().await;
    wait_for(&client, TOTALS, "after the outage", |r| r == totals(0..200)).await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM freshet_catalog.source_errors WHERE relation = 'order_totals'").await,
        3
    );

    // kill -9: the restarted server looks the schemas up again and
    // counts each record once.
    server.kill9();
    send_all(&producer, "orders_avro", 2, &encode(&orders(ORDER_V3, 200..230), Some(v3))).await;
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    wait_for(&client, TOTALS, "after kill -9", |r| r == totals(0..230)).await;
    wait_for(&client, by_region, "per region after kill -9", |r| r == expected_regions(230)).await;

    // An inline schema: raw Avro datums, no registry.
    let raw = encode(&orders(ORDER_V1, 0..50), None);
    send_all(&producer, "orders_raw", 1, &raw).await;
    let garbage_offset = send_bytes(&producer, "orders_raw", 0, &[0xff, 0xff, 0xff]).await;
    send_all(&producer, "orders_raw", 1, &encode(&orders(ORDER_V1, 50..60), None)).await;
    let inline = ORDER_V1.replace('\n', " ");
    client
        .batch_execute(&format!(
            "CREATE SOURCE raw_orders (id BIGINT, note TEXT)
               WITH (connector = 'kafka', topic = 'orders_raw', properties.bootstrap.server = '{address}')
               FORMAT PLAIN ENCODE AVRO (schema = '{inline}');
             CREATE MATERIALIZED VIEW raw_totals AS SELECT count(*) AS c, sum(id) AS ids, count(note) AS notes FROM raw_orders;"
        ))
        .await
        .unwrap_or_else(|e| panic!("inline schema: {}", describe(&e)));
    let want = vec![vec!["60".to_string(), (0..60).sum::<i64>().to_string(), "30".to_string()]];
    wait_for(&client, "SELECT c, ids, notes FROM raw_totals", "raw datums", |r| r == want).await;
    let kept = wait_for(
        &client,
        "SELECT \"offset\" FROM freshet_catalog.source_errors WHERE relation = 'raw_totals'",
        "the raw bad record kept",
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(kept, vec![vec![garbage_offset.to_string()]]);

    // Definitions that cannot work fail at CREATE, naming the problem.
    let source = |columns: &str, encode: &str| {
        format!(
            "CREATE SOURCE bad ({columns}) WITH (connector = 'kafka', topic = 'orders_avro', \
             properties.bootstrap.server = '{address}') FORMAT PLAIN ENCODE AVRO {encode}"
        )
    };
    for (sql, code, words) in [
        (source("id BIGINT, colour TEXT", &format!("(schema.registry = '{url}')")), "42804", "colour"),
        (source("note BIGINT", &format!("(schema.registry = '{url}')")), "42804", "note"),
        (source("id BIGINT", "(schema.registry = 'http://127.0.0.1:1')"), "08001", "127.0.0.1:1"),
        (
            source("id BIGINT", &format!("(schema.registry = '{url}', schema.registry.subject = 'nobody')")),
            "42704",
            "nobody",
        ),
        (source("id BIGINT", ""), "22023", "schema.registry"),
        (source("id BIGINT", "(schema = '{\"type\": \"nonsense\"}')"), "22023", "schema"),
        (source("id BIGINT, colour TEXT", &format!("(schema = '{inline}')")), "42804", "colour"),
    ] {
        let error = client.simple_query(&sql).await.expect_err(&sql);
        let db = error.as_db_error().unwrap_or_else(|| panic!("{sql}: {error}"));
        assert_eq!(db.code().code(), code, "{sql}: {}", db.message());
        assert!(db.message().contains(words), "{sql}: {}", db.message());
    }
    assert_eq!(error_code(&client, "SELECT * FROM bad").await, "42P01");
    // Nothing above disturbed the running views.
    assert_eq!(rows(&client, TOTALS).await, totals(0..230));
}
