//! Sinks and keyed Kafka formats against a real broker and a real
//! PostgreSQL (both started here):
//! - a Postgres sink (upsert by key) and a Kafka sink (upsert) of a view
//!   over randomly changed tables end with exactly the view's rows after a
//!   kill -9 of Freshet in the middle of the changes;
//! - an append-only Kafka sink of an insert-only table holds every row
//!   exactly once (no duplicate, no gap) across a kill -9;
//! - a Debezium sink's topic read back by a table `FORMAT DEBEZIUM`, and an
//!   upsert topic with tombstones and malformed records read by a table
//!   `FORMAT UPSERT`, equal what was sent.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::kafka::Broker;
use crate::oracle::sorted;
use crate::postgres::Postgres;
use crate::server::{TestServer, describe, error_code, rows, tempdir::TempDir};

/// Every committed message of a topic's partitions: (key, value, epoch header).
fn read_topic(broker: &Broker, topic: &str, partitions: i32) -> Vec<(Option<String>, Option<String>, Option<u64>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "sink-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let mut ended = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                let epoch = message.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "freshet_epoch")
                        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
                });
                out.push((text(message.key()), text(message.payload()), epoch));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    out
}

/// The rows an upsert topic stands for: the last value per key, without
/// keys whose last message is a tombstone.
fn fold_upserts(messages: &[(Option<String>, Option<String>, Option<u64>)]) -> BTreeMap<String, serde_json::Value> {
    let mut state = BTreeMap::new();
    for (key, value, _) in messages {
        let key = key.clone().expect("upsert messages have keys");
        match value {
            Some(value) => {
                state.insert(key, serde_json::from_str(value).expect("JSON value"));
            }
            None => {
                state.remove(&key);
            }
        }
    }
    state
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not reached after 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Random DML on `stock(item, store, qty)`.
fn random_dml(rng: &mut StdRng, next: &mut i64) -> String {
    match rng.random_range(0..6) {
        0..=2 => {
            *next += 1;
            format!("INSERT INTO stock VALUES ({next}, 's{}', {})", rng.random_range(0..8), rng.random_range(1..100))
        }
        3 | 4 => format!("UPDATE stock SET qty = qty + 1 WHERE item % 7 = {}", rng.random_range(0..7)),
        _ => format!("DELETE FROM stock WHERE item % 11 = {}", rng.random_range(0..11)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_kafka_sinks_hold_the_view_exactly_once_across_a_kill() {
    let pg = Postgres::start();
    let target = pg.connect().await;
    target
        .batch_execute("CREATE TABLE per_store (store TEXT PRIMARY KEY, items BIGINT, total BIGINT)")
        .await
        .expect("target table");
    let broker = Broker::start();
    broker.create_topic("per_store", 2).await;
    broker.create_topic("stock_log", 3).await;
    broker.create_topic("per_store_cdc", 1).await;

    let data = TempDir::new("sinks");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    let address = &broker.address;
    client
        .batch_execute(&format!(
            "CREATE TABLE stock (item BIGINT PRIMARY KEY, store TEXT, qty INT);
             CREATE TABLE arrivals (id BIGINT, note TEXT);
             INSERT INTO stock VALUES (0, 's0', 5);
             CREATE MATERIALIZED VIEW per_store AS SELECT store, count(*) AS items, sum(qty) AS total FROM stock GROUP BY store;
             CREATE SINK per_store_pg FROM per_store
               WITH (connector = 'postgres', url = '{}', table = 'per_store', primary_key = 'store');
             CREATE SINK per_store_kafka FROM per_store
               WITH (connector = 'kafka', topic = 'per_store', properties.bootstrap.server = '{address}',
                     primary_key = 'store')
               FORMAT UPSERT ENCODE JSON;
             CREATE SINK per_store_debezium FROM per_store
               WITH (connector = 'kafka', topic = 'per_store_cdc', properties.bootstrap.server = '{address}',
                     primary_key = 'store')
               FORMAT DEBEZIUM ENCODE JSON;
             CREATE SINK arrivals_out FROM arrivals
               WITH (connector = 'kafka', topic = 'stock_log', properties.bootstrap.server = '{address}')
               FORMAT PLAIN ENCODE JSON;",
            pg.url()
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    let mut rng = StdRng::seed_from_u64(11);
    let mut next = 0i64;
    let mut arrival = 0i64;
    for round in 0..4 {
        for _ in 0..50 {
            client.batch_execute(&random_dml(&mut rng, &mut next)).await.expect("dml");
            client
                .batch_execute(&format!("INSERT INTO arrivals VALUES ({arrival}, 'a'), ({}, 'b')", arrival + 1))
                .await
                .expect("arrival");
            arrival += 2;
        }
        if round == 1 || round == 2 {
            server.kill9();
            server = TestServer::start_in(&data.0, &[]);
            client = server.connect().await;
        }
    }
    let view = sorted(rows(&client, "SELECT store, items, total FROM per_store").await);
    assert!(view.len() >= 5, "{view:?}");

    // Postgres: exactly the view's rows, and the last epoch recorded.
    wait_for("the Postgres sink holds the view", || {
        let target = &target;
        let view = view.clone();
        async move { sorted(rows(target, "SELECT store, items, total FROM per_store").await) == view }
    })
    .await;
    let progress =
        rows(&target, "SELECT count(*) FROM freshet_sink_progress WHERE sink = 'per_store_pg' AND epoch > 0").await;
    assert_eq!(progress, vec![vec!["1".to_string()]]);

    // Kafka upsert: folding the topic gives the view.
    let as_rows = |state: BTreeMap<String, serde_json::Value>| -> Vec<Vec<String>> {
        sorted(
            state
                .values()
                .map(|row| ["store", "items", "total"].iter().map(|c| json_text(&row[*c])).collect())
                .collect(),
        )
    };
    wait_for("the Kafka upsert sink holds the view", || {
        let view = view.clone();
        let messages = read_topic(&broker, "per_store", 2);
        async move { as_rows(fold_upserts(&messages)) == view }
    })
    .await;

    // Append-only: every arrival exactly once, epochs in order per partition.
    let want = arrival as usize;
    wait_for("the append-only sink holds every row", || {
        let n = read_topic(&broker, "stock_log", 3).len();
        async move { n >= want }
    })
    .await;
    let messages = read_topic(&broker, "stock_log", 3);
    let mut ids: Vec<i64> = messages
        .iter()
        .map(|(_, v, _)| {
            serde_json::from_str::<serde_json::Value>(v.as_deref().expect("value")).expect("JSON")["id"]
                .as_i64()
                .expect("id")
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (0..arrival).collect::<Vec<_>>(), "duplicates or gaps in the append-only sink");
    assert!(messages.iter().all(|(_, _, epoch)| epoch.is_some()), "every message names its epoch");

    // Debezium: the sink's topic read back by a FORMAT DEBEZIUM table is the view.
    client
        .batch_execute(&format!(
            "CREATE TABLE per_store_copy (store TEXT, items BIGINT, total BIGINT, PRIMARY KEY (store))
               WITH (connector = 'kafka', topic = 'per_store_cdc', properties.bootstrap.server = '{address}')
               FORMAT DEBEZIUM ENCODE JSON"
        ))
        .await
        .unwrap_or_else(|e| panic!("debezium table: {}", describe(&e)));
    wait_for("the Debezium copy equals the view", || {
        let client = &client;
        let view = view.clone();
        async move { sorted(rows(client, "SELECT store, items, total FROM per_store_copy").await) == view }
    })
    .await;
    let ops: HashMap<String, usize> =
        read_topic(&broker, "per_store_cdc", 1).iter().fold(HashMap::new(), |mut m, (_, v, _)| {
            let op = serde_json::from_str::<serde_json::Value>(v.as_deref().unwrap_or("{}")).expect("event")["op"]
                .as_str()
                .unwrap_or("")
                .to_string();
            *m.entry(op).or_default() += 1;
            m
        });
    assert!(ops.get("c").is_some() && ops.get("u").is_some(), "{ops:?}");

    // Bad sink definitions.
    for (sql, code) in [
        ("CREATE SINK b1 FROM per_store WITH (connector = 'kafka', properties.bootstrap.server = 'x')".to_string(), "22023"),
        (format!("CREATE SINK b2 FROM per_store WITH (connector = 'kafka', topic = 'missing', properties.bootstrap.server = '{address}')"), "42704"),
        (format!("CREATE SINK b3 FROM per_store WITH (connector = 'kafka', topic = 'per_store', properties.bootstrap.server = '{address}') FORMAT UPSERT ENCODE JSON"), "22023"),
        (format!("CREATE SINK b4 FROM per_store WITH (connector = 'kafka', topic = 'per_store', properties.bootstrap.server = '{address}', primary_key = 'nope') FORMAT UPSERT ENCODE JSON"), "42703"),
        (format!("CREATE SINK b5 FROM per_store WITH (connector = 'postgres', url = '{}', table = 'no_such_table', primary_key = 'store')", pg.url()), "42P01"),
        ("CREATE SINK b6 FROM per_store WITH (connector = 'smoke-signals')".to_string(), "0A000"),
        ("CREATE SINK b7 FROM nothing_here WITH (connector = 'kafka', topic = 't', properties.bootstrap.server = 'x')".to_string(), "42P01"),
    ] {
        assert_eq!(error_code(&client, &sql).await, code, "{sql}");
    }
    client.batch_execute("DROP SINK per_store_pg").await.expect("drop sink");
    assert_eq!(error_code(&client, "SELECT * FROM per_store_kafka").await, "42P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_topics_with_tombstones_and_bad_records_feed_keyed_tables() {
    let broker = Broker::start();
    broker.create_topic("users", 2).await;
    let producer = broker.producer();
    let mut expected: BTreeMap<i64, (String, i64)> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(5);
    for n in 0..600 {
        let id = rng.random_range(0..80i64);
        let key = format!(r#"{{"id": {id}}}"#);
        let partition = (id % 2) as i32;
        let record = if rng.random_range(0..5) == 0 {
            expected.remove(&id);
            FutureRecord::<String, str>::to("users").partition(partition).key(&key)
        } else {
            let name = format!("user{n}");
            expected.insert(id, (name.clone(), n));
            let payload = format!(r#"{{"id": {id}, "name": "{name}", "version": {n}}}"#);
            producer
                .send(
                    FutureRecord::to("users").partition(partition).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .expect("send");
            continue;
        };
        producer.send(record, Duration::from_secs(10)).await.expect("send tombstone");
    }
    // Malformed: not JSON, and a tombstone without a key.
    producer
        .send(FutureRecord::to("users").partition(0).key("{\"id\": 1}").payload("{broken"), Duration::from_secs(10))
        .await
        .expect("send");
    producer.send(FutureRecord::<str, str>::to("users").partition(1), Duration::from_secs(10)).await.expect("send");

    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE users (id BIGINT, name TEXT, version BIGINT, PRIMARY KEY (id))
               WITH (connector = 'kafka', topic = 'users', properties.bootstrap.server = '{}')
               FORMAT UPSERT ENCODE JSON;
             CREATE MATERIALIZED VIEW user_count AS SELECT count(*) AS n, sum(version) AS v FROM users;",
            broker.address
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let want: Vec<Vec<String>> =
        expected.iter().map(|(id, (name, v))| vec![id.to_string(), name.clone(), v.to_string()]).collect();
    wait_for("the upsert table equals the folded topic", || {
        let client = &client;
        let want = want.clone();
        async move { rows(client, "SELECT id, name, version FROM users ORDER BY id").await == want }
    })
    .await;
    let n = expected.len().to_string();
    let v: i64 = expected.values().map(|(_, v)| v).sum();
    assert_eq!(rows(&client, "SELECT n, v FROM user_count").await, vec![vec![n, v.to_string()]]);
    wait_for("both bad records are kept", || {
        let client = &client;
        async move {
            rows(client, "SELECT count(*) FROM freshet_catalog.source_errors WHERE relation = 'users'").await
                == vec![vec!["2".to_string()]]
        }
    })
    .await;
    for (sql, code) in [
        (
            format!(
                "CREATE TABLE u2 (id BIGINT, name TEXT) WITH (connector = 'kafka', topic = 'users', properties.bootstrap.server = '{}') FORMAT UPSERT ENCODE JSON",
                broker.address
            ),
            "42P16",
        ),
        (
            format!(
                "CREATE SOURCE u3 (id BIGINT) WITH (connector = 'kafka', topic = 'users', properties.bootstrap.server = '{}') FORMAT DEBEZIUM ENCODE JSON",
                broker.address
            ),
            "0A000",
        ),
        (
            format!(
                "CREATE TABLE u4 (id BIGINT, PRIMARY KEY (id)) WITH (connector = 'kafka', topic = 'users', properties.bootstrap.server = '{}') FORMAT UPSERT ENCODE CSV",
                broker.address
            ),
            "0A000",
        ),
    ] {
        assert_eq!(error_code(&client, &sql).await, code, "{sql}");
    }
}

/// Files in a directory: the epoch files a file sink wrote, each line parsed.
fn sink_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>())
        .map(|line| serde_json::from_str(&line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_and_out_exactly_once_across_a_kill() {
    let input = TempDir::new("file-in");
    let output = TempDir::new("file-out");
    let totals_dir = output.0.join("totals");
    let rows_dir = output.0.join("rows");
    let write_lines = |name: &str, ids: std::ops::Range<i64>, append: bool| {
        let text: String = ids.map(|id| format!("{{\"id\": {id}, \"kind\": \"k{}\"}}\n", id % 5)).collect();
        let path = input.0.join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .expect("open");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write");
    };
    write_lines("a.jsonl", 0..500, false);
    std::fs::write(input.0.join("ignored.txt"), "not matched\n").expect("write");

    let data = TempDir::new("file-server");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE events (id BIGINT, kind TEXT) WITH (connector = 'file', path = '{}/*.jsonl') FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_kind AS SELECT kind, count(*) AS n FROM events GROUP BY kind;
             CREATE SINK rows_out FROM events WITH (connector = 'file', path = '{}');
             CREATE SINK totals_out FROM per_kind WITH (connector = 'file', path = '{}', type = 'upsert', primary_key = 'kind');",
            input.0.display(),
            rows_dir.display(),
            totals_dir.display()
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_for("the first file is read", || {
        let client = &client;
        async move { rows(client, "SELECT count(*) FROM events").await == vec![vec!["500".to_string()]] }
    })
    .await;
    // Lines appended (one bad), a new file, a kill in between.
    write_lines("a.jsonl", 500..800, true);
    std::fs::OpenOptions::new()
        .append(true)
        .open(input.0.join("a.jsonl"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{oops\n"))
        .expect("bad line");
    server.kill9();
    write_lines("b.jsonl", 800..1000, false);
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    wait_for("every line is read", || {
        let client = &client;
        async move {
            rows(client, "SELECT count(*), count(DISTINCT id) FROM events").await
                == vec![vec!["1000".to_string(), "1000".to_string()]]
        }
    })
    .await;
    assert_eq!(
        rows(&client, "SELECT count(*) FROM freshet_catalog.source_errors WHERE relation = 'events'").await,
        vec![vec!["1".to_string()]]
    );
    // The row sink: each id once. The totals sink: folding it gives the view.
    wait_for("the row sink holds every row once", || {
        let n = sink_lines(&rows_dir).len();
        async move { n >= 1000 }
    })
    .await;
    let mut ids: Vec<i64> = sink_lines(&rows_dir).iter().map(|r| r["id"].as_i64().expect("id")).collect();
    ids.sort();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    let view = sorted(rows(&client, "SELECT kind, n FROM per_kind").await);
    wait_for("the totals sink folds to the view", || {
        let view = view.clone();
        let lines = sink_lines(&totals_dir);
        async move {
            let mut state: BTreeMap<String, String> = BTreeMap::new();
            for line in lines {
                let kind = json_text(&line["row"]["kind"]);
                if line["op"] == "delete" {
                    state.remove(&kind);
                } else {
                    state.insert(kind, json_text(&line["row"]["n"]));
                }
            }
            sorted(state.into_iter().map(|(k, n)| vec![k, n]).collect()) == view
        }
    })
    .await;
}

/// One number from a query.
async fn number(client: &tokio_postgres::Client, sql: &str) -> i64 {
    rows(client, sql).await[0][0].parse().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_deliver_holds_back_its_sources_until_it_catches_up() {
    let pg = Postgres::start();
    let target = pg.connect().await;
    target.batch_execute("CREATE TABLE generated (id BIGINT PRIMARY KEY, v BIGINT)").await.expect("target");
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE gen (id BIGINT, v BIGINT) WITH (connector = 'datagen', datagen.rows.per.second = 3000,
               fields.id.kind = 'sequence', fields.id.start = 1, fields.id.end = 10000000);
             CREATE MATERIALIZED VIEW generated AS SELECT id, v FROM gen;
             CREATE SINK generated_out FROM generated
               WITH (connector = 'postgres', url = '{}', table = 'generated', primary_key = 'id');",
            pg.url()
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_for("the sink delivers", || {
        let target = &target;
        async move { number(target, "SELECT count(*) FROM generated").await > 0 }
    })
    .await;
    drop(target);

    // The target goes away: the sink falls behind until the sources wait.
    pg.stop();
    wait_for("the sink reports its trouble and its backlog fills", || {
        let client = &client;
        async move {
            let row = rows(client, "SELECT status, pending_epochs FROM freshet_catalog.sinks").await;
            row[0][0].starts_with("retrying") && row[0][1].parse::<i64>().unwrap_or(0) >= 256
        }
    })
    .await;
    let before = number(&client, "SELECT count(*) FROM generated").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = number(&client, "SELECT count(*) FROM generated").await;
    assert!(after - before < 3000, "the source kept going while the sink was stuck: {before} -> {after}");
    let pending = number(&client, "SELECT pending_epochs FROM freshet_catalog.sinks").await;
    // The limit is 256 epochs; the epoch that reached it may add one more.
    assert!(pending <= 257, "the outbox grew past the limit: {pending}");

    // It comes back: the sink catches up and the source goes on.
    pg.start_again();
    let target = pg.connect().await;
    wait_for("the source goes on", || {
        let client = &client;
        async move { number(client, "SELECT count(*) FROM generated").await > after + 3000 }
    })
    .await;
    // Exactly the view's rows, once the generator is past what we compare.
    wait_for("the target holds every row the view had", || {
        let target = &target;
        async move { number(target, &format!("SELECT count(*) FROM generated WHERE id <= {after}")).await == after }
    })
    .await;
    let sample = rows(&client, &format!("SELECT id, v FROM generated WHERE id <= {after} ORDER BY id")).await;
    let copied = rows(&target, &format!("SELECT id, v FROM generated WHERE id <= {after} ORDER BY id")).await;
    assert_eq!(copied, sample);
}

/// A blackhole sink runs its query and keeps nothing: its sources are read
/// to the end, its outbox stays empty whatever the query emits (retractions
/// included), and an error in its query fails it as it would any sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_sink_runs_its_query_and_keeps_nothing() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = 20000,
               nexmark.min.event.gap.in.ns = 0, nexmark.max.chunk.size = 1000);
             CREATE SINK q0 AS SELECT auction, bidder, price, date_time FROM bid WITH (connector = 'blackhole');
             CREATE SINK per_auction AS SELECT auction, count(*) AS n, max(price) AS top FROM bid GROUP BY auction
               WITH (connector = 'blackhole');
             CREATE TABLE t (id BIGINT PRIMARY KEY, x BIGINT);
             CREATE SINK ratio AS SELECT id, 10 / x AS r FROM t WITH (connector = 'blackhole');",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_for("both bid sinks read every bid", || {
        let client = &client;
        async move {
            let done = rows(client, "SELECT sources_done FROM freshet_catalog.sinks WHERE name <> 'ratio'").await;
            done.len() == 2 && done.iter().all(|r| r[0] == "t")
        }
    })
    .await;
    let bids = number(&client, "SELECT count(*) FROM nexmark('bid', 20000)").await;
    let sinks = rows(
        &client,
        "SELECT name, connector, status, pending_epochs, failure, source_rows FROM freshet_catalog.sinks \
         WHERE name <> 'ratio' ORDER BY name",
    )
    .await;
    for (sink, name) in sinks.iter().zip(["per_auction", "q0"]) {
        let want: Vec<String> =
            [name, "blackhole", "discarding", "0", "NULL", &bids.to_string()].iter().map(|s| s.to_string()).collect();
        assert_eq!(sink, &want);
    }
    // Its query runs: a division by zero fails the sink, the server goes on.
    client.batch_execute("INSERT INTO t VALUES (1, 5), (2, 0)").await.expect("insert");
    wait_for("the failing sink says why", || {
        let client = &client;
        async move {
            let failure = rows(client, "SELECT failure FROM freshet_catalog.sinks WHERE name = 'ratio'").await;
            failure.first().is_some_and(|r| r[0].to_lowercase().contains("division by zero"))
        }
    })
    .await;
    assert_eq!(number(&client, "SELECT count(*) FROM t").await, 2);
    // It has no options to give.
    assert_eq!(
        error_code(&client, "CREATE SINK bad FROM t WITH (connector = 'blackhole', topic = 'x')").await,
        "22023"
    );
}
