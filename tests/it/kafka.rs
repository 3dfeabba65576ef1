//! Kafka sources against a real Kafka-protocol broker (started here with
//! scripts/kafka-broker.sh): JSON and CSV records into views, exactly once
//! across a kill -9 while records keep arriving; malformed records kept in
//! freshet_catalog.source_errors; startup modes; a broker restarted while
//! a view reads it; a table fed by a topic; clear errors for bad
//! definitions.

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::oracle::sorted;
use crate::server::{TestServer, describe, error_code, repo_root, rows, tempdir::TempDir};

/// A broker process on its own port and data directory.
pub struct Broker {
    pub address: String,
    port: u16,
    data: TempDir,
}

fn broker_script(args: &[&str]) -> String {
    let output =
        Command::new(repo_root().join("scripts/kafka-broker.sh")).args(args).output().expect("run kafka-broker.sh");
    assert!(output.status.success(), "kafka-broker.sh {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Broker {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let data = TempDir::new("kafka");
        let dir = data.0.to_string_lossy().into_owned();
        let address = broker_script(&["start", &port.to_string(), &dir]);
        Self { address, port, data }
    }

    pub fn stop(&self) {
        broker_script(&["stop", &self.data.0.to_string_lossy()]);
    }

    pub fn restart(&self) {
        broker_script(&["start", &self.port.to_string(), &self.data.0.to_string_lossy()]);
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.address).create().expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create topic");
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new().set("bootstrap.servers", &self.address).set("linger.ms", "5").create().expect("producer")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/kafka-broker.sh"))
            .args(["stop", &self.data.0.to_string_lossy()])
            .output();
    }
}

/// Sends one record to a partition; returns its offset.
async fn send(producer: &FutureProducer, topic: &str, partition: i32, key: &str, payload: &str) -> i64 {
    let record = FutureRecord::to(topic).partition(partition).key(key).payload(payload);
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(delivery) => delivery.offset,
        Err((error, _)) => panic!("send to {topic}/{partition}: {error}"),
    }
}

/// An order: id, customer, amount (all derived from the id).
fn order(id: i64) -> (i64, i64, i64) {
    (id, id % 17, (id * 7919) % 1000)
}

/// Sends orders with these ids as JSON to a topic of three partitions
/// (by id), many in flight at once.
async fn send_orders(producer: &FutureProducer, topic: &str, ids: std::ops::Range<i64>) {
    let mut pending = Vec::new();
    for id in ids {
        let (id, customer, amount) = order(id);
        let payload = format!(r#"{{"id": {id}, "customer": {customer}, "amount": {amount}, "note": "x"}}"#);
        let key = id.to_string();
        let record = FutureRecord::to(topic).partition((id % 3) as i32).key(&key).payload(&payload);
        pending.push(producer.send_result(record).expect("queue a record"));
        if pending.len() >= 500 {
            for delivery in pending.drain(..) {
                delivery.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("send: {e}"));
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("send: {e}"));
    }
}

pub(crate) async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    rows(client, sql).await[0][0].parse().unwrap_or(0)
}

pub(crate) async fn wait_for_count(client: &tokio_postgres::Client, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = count(client, sql).await;
        if have == want {
            return;
        }
        assert!(have <= want, "{sql}: {have} rows, more than the {want} sent");
        assert!(Instant::now() < deadline, "{sql}: {have} rows after 120 s, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_reach_views_exactly_once_across_a_kill_and_bad_ones_are_kept() {
    let broker = Broker::start();
    broker.create_topic("orders", 3).await;
    let producer = broker.producer();
    send_orders(&producer, "orders", 0..3000).await;
    // Malformed records among the good ones: cut-off JSON, a value of the
    // wrong type, no JSON at all, an empty message.
    let mut bad_sent = Vec::new();
    for (i, payload) in [r#"{"id": 1, "customer": "#, r#"{"id": "seven", "customer": 1, "amount": 2}"#, "not json", ""]
        .iter()
        .enumerate()
    {
        let partition = (i % 3) as i32;
        let offset = send(&producer, "orders", partition, "bad", payload).await;
        bad_sent.push(vec![partition.to_string(), offset.to_string(), payload.to_string()]);
    }

    let data = TempDir::new("kafka-server");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders (id BIGINT, customer INT, amount BIGINT)
               INCLUDE partition AS part INCLUDE offset AS off INCLUDE key AS k
               WITH (connector = 'kafka', topic = 'orders', properties.bootstrap.server = '{}',
                     scan.startup.mode = 'earliest')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_customer AS
               SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer;
             CREATE MATERIALIZED VIEW everything AS SELECT id, part, off, k FROM orders;",
            broker.address
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_for_count(&client, "SELECT count(*) FROM everything", 3000).await;

    // More records arrive while the server is killed in the middle of them.
    let more = tokio::spawn({
        let producer = producer.clone();
        async move { send_orders(&producer, "orders", 3000..9000).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&client, "SELECT count(*) FROM everything").await < 4000 {
        assert!(Instant::now() < deadline, "the view does not follow the topic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    more.await.expect("producer task");
    wait_for_count(&client, "SELECT count(*) FROM everything", 9000).await;

    // Every record once: ids, and (partition, offset) pairs, are distinct,
    // and the key is the one sent.
    let distinct = rows(
        &client,
        "SELECT count(DISTINCT id), count(DISTINCT CAST(part AS BIGINT) * 1000000 + off), min(id), max(id), \
         sum(CASE WHEN CAST(k AS VARCHAR) = CAST(id AS VARCHAR) THEN 1 ELSE 0 END) FROM everything",
    )
    .await;
    assert_eq!(distinct, vec![vec!["9000", "9000", "0", "8999", "9000"]]);
    let by_partition = rows(&client, "SELECT part, count(*) FROM everything WHERE id % 3 <> part GROUP BY part").await;
    assert!(by_partition.is_empty(), "records in the wrong partition: {by_partition:?}");

    // The aggregate equals the batch query over the same records.
    client.batch_execute("CREATE TABLE sent (id BIGINT, customer INT, amount BIGINT)").await.expect("table");
    for chunk in (0..9000).collect::<Vec<i64>>().chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|&id| {
                let (id, customer, amount) = order(id);
                format!("({id}, {customer}, {amount})")
            })
            .collect();
        client.batch_execute(&format!("INSERT INTO sent VALUES {}", values.join(", "))).await.expect("insert");
    }
    let got = sorted(rows(&client, "SELECT * FROM per_customer").await);
    let want = sorted(rows(&client, "SELECT customer, count(*), sum(amount) FROM sent GROUP BY customer").await);
    assert_eq!(want.len(), 17);
    assert_eq!(got, want, "per_customer differs from the batch over the records sent");

    // The malformed records are kept, once per view reading them, with
    // where they came from and why; and they survived the kill.
    for view in ["everything", "per_customer"] {
        let kept = rows(
            &client,
            &format!(
                "SELECT partition, \"offset\", payload FROM freshet_catalog.source_errors \
                 WHERE relation = '{view}' AND source = 'orders' ORDER BY partition, \"offset\""
            ),
        )
        .await;
        let mut want = bad_sent.clone();
        want.sort_by_key(|r| (r[0].parse::<i32>().unwrap_or(0), r[1].parse::<i64>().unwrap_or(0)));
        assert_eq!(kept, want, "{view}: bad records");
    }
    let reasons = rows(&client, "SELECT error FROM freshet_catalog.source_errors WHERE relation = 'everything'").await;
    assert!(reasons.iter().all(|r| !r[0].is_empty()), "{reasons:?}");
    assert!(reasons.iter().any(|r| r[0].contains("id")), "the wrong-typed field is named: {reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_records_startup_modes_failing_sources_and_a_broker_restart() {
    let broker = Broker::start();
    broker.create_topic("lines", 2).await;
    let producer = broker.producer();
    for n in 0..5 {
        send(&producer, "lines", n % 2, "k", &format!("{n},before")).await;
    }
    let server = TestServer::start();
    let client = server.connect().await;
    let address = &broker.address;
    client
        .batch_execute(&format!(
            "CREATE SOURCE old_and_new (n INT, word TEXT)
               WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}')
               FORMAT PLAIN ENCODE CSV;
             CREATE SOURCE only_new (n INT, word TEXT)
               WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}',
                     scan.startup.mode = 'latest')
               FORMAT PLAIN ENCODE CSV;
             CREATE SOURCE strict (n INT, word TEXT)
               WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}',
                     bad_records = 'fail')
               FORMAT PLAIN ENCODE CSV (delimiter = ',');
             CREATE MATERIALIZED VIEW all_lines AS SELECT count(*) AS c, sum(n) AS s FROM old_and_new;
             CREATE MATERIALIZED VIEW new_lines AS SELECT count(*) AS c, sum(n) AS s FROM only_new;
             CREATE MATERIALIZED VIEW strict_lines AS SELECT count(*) AS c FROM strict;"
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    // 'latest' was fixed when the view started: the next records count.
    for n in 5..15 {
        send(&producer, "lines", n % 2, "k", &format!("{n},\"after, quoted\"")).await;
    }
    wait_for_count(&client, "SELECT c FROM all_lines", 15).await;
    wait_for_count(&client, "SELECT c FROM new_lines", 10).await;
    assert_eq!(rows(&client, "SELECT s FROM new_lines").await, vec![vec![(5..15).sum::<i32>().to_string()]]);
    wait_for_count(&client, "SELECT c FROM strict_lines", 15).await;

    // The broker goes away and comes back; the views catch up.
    broker.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rows(&client, "SELECT c FROM all_lines").await, vec![vec!["15".to_string()]], "still serving");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status =
            rows(&client, "SELECT status FROM freshet_catalog.source_status WHERE relation = 'all_lines'").await;
        if status.first().is_some_and(|s| s[0].starts_with("error") || s[0].starts_with("retrying")) {
            break;
        }
        assert!(Instant::now() < deadline, "the broker's absence is not reported: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.restart();
    let producer = broker.producer();
    for n in 15..25 {
        send(&producer, "lines", n % 2, "k", &format!("{n},again")).await;
    }
    wait_for_count(&client, "SELECT c FROM all_lines", 25).await;
    assert_eq!(rows(&client, "SELECT s FROM all_lines").await, vec![vec![(0..25).sum::<i32>().to_string()]]);
    assert_eq!(
        rows(&client, "SELECT status FROM freshet_catalog.source_status WHERE relation = 'all_lines'").await,
        vec![vec!["reading".to_string()]]
    );

    // A record that does not fit: kept for the lenient source, fatal for
    // the strict one, which names where it is.
    let offset = send(&producer, "lines", 1, "k", "twenty-five,bad").await;
    send(&producer, "lines", 0, "k", "26,fine").await;
    wait_for_count(&client, "SELECT c FROM all_lines", 26).await;
    // Bad records are shown as of the view's last checkpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kept = loop {
        let kept = rows(
            &client,
            "SELECT partition, \"offset\", payload FROM freshet_catalog.source_errors WHERE relation = 'all_lines'",
        )
        .await;
        if !kept.is_empty() || Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(kept, vec![vec!["1".to_string(), offset.to_string(), "twenty-five,bad".to_string()]]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let failure = loop {
        let failure =
            rows(&client, "SELECT failure FROM freshet_catalog.materialized_views WHERE name = 'strict_lines'").await;
        if failure[0][0] != "NULL" {
            break failure[0][0].clone();
        }
        assert!(Instant::now() < deadline, "the strict source did not fail its view");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failure.contains(&format!("partition 1 offset {offset}")), "{failure}");
    assert_eq!(error_code(&client, "SELECT * FROM strict_lines").await, "22P02");
    // The other views keep going.
    send(&producer, "lines", 0, "k", "27,last").await;
    wait_for_count(&client, "SELECT c FROM all_lines", 27).await;

    for (bad, code) in [
        (format!("CREATE SOURCE b1 (a INT) WITH (connector = 'kafka', topic = 'nope', properties.bootstrap.server = '{address}') FORMAT PLAIN ENCODE JSON"), "42704"),
        ("CREATE SOURCE b2 (a INT) WITH (connector = 'kafka', properties.bootstrap.server = 'x:1')".to_string(), "22023"),
        ("CREATE SOURCE b3 (a INT) WITH (connector = 'kafka', topic = 't', properties.bootstrap.server = '127.0.0.1:1') FORMAT PLAIN ENCODE JSON".to_string(), "08001"),
        (format!("CREATE SOURCE b4 (a INT) WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}') FORMAT PLAIN ENCODE AVRO"), "22023"),
        (format!("CREATE SOURCE b5 (a INT) WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}') FORMAT DEBEZIUM ENCODE JSON"), "0A000"),
        (format!("CREATE SOURCE b6 (a INT) WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}', scan.startup.mode = 'soon')"), "22023"),
        (format!("CREATE SOURCE b7 WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}')"), "22023"),
        (format!("CREATE SOURCE b8 (a INT) INCLUDE colour WITH (connector = 'kafka', topic = 'lines', properties.bootstrap.server = '{address}')"), "22023"),
    ] {
        assert_eq!(error_code(&client, &bad).await, code, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_fed_by_a_topic_stores_each_record_once_across_a_kill() {
    let broker = Broker::start();
    broker.create_topic("payments", 3).await;
    let producer = broker.producer();
    send_orders(&producer, "payments", 0..2000).await;
    let bad_offset = send(&producer, "payments", 2, "bad", r#"{"id": 1, "customer": [1]}"#).await;

    let data = TempDir::new("kafka-table");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE payments (id BIGINT, customer INT, amount BIGINT) INCLUDE partition AS part
               WITH (connector = 'kafka', topic = 'payments', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW paid AS SELECT customer, count(*) AS n, sum(amount) AS total
               FROM payments GROUP BY customer;",
            broker.address
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_for_count(&client, "SELECT count(*) FROM payments", 2000).await;
    let more = tokio::spawn({
        let producer = producer.clone();
        async move { send_orders(&producer, "payments", 2000..8000).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&client, "SELECT count(*) FROM payments").await < 3000 {
        assert!(Instant::now() < deadline, "the table does not follow the topic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    more.await.expect("producer task");
    wait_for_count(&client, "SELECT count(*) FROM payments", 8000).await;
    assert_eq!(
        rows(
            &client,
            "SELECT count(DISTINCT id), min(id), max(id), sum(CASE WHEN part = id % 3 THEN 1 ELSE 0 END) FROM payments"
        )
        .await,
        vec![vec!["8000", "0", "7999", "8000"]]
    );
    // The table's rows are what was sent, and the view over it is the
    // batch query over the table.
    let sent: i64 = (0..8000).map(|id| order(id).2).sum();
    assert_eq!(rows(&client, "SELECT sum(amount) FROM payments").await, vec![vec![sent.to_string()]]);
    // The table also takes INSERTs.
    client.batch_execute("INSERT INTO payments VALUES (-1, 3, 5, NULL)").await.expect("insert");
    wait_for_count(&client, "SELECT count(*) FROM payments", 8001).await;
    let got = sorted(rows(&client, "SELECT * FROM paid").await);
    let want = sorted(rows(&client, "SELECT customer, count(*), sum(amount) FROM payments GROUP BY customer").await);
    assert_eq!(got, want, "the view over the fed table differs from the batch query");
    let kept = rows(
        &client,
        "SELECT relation, source, partition, \"offset\" FROM freshet_catalog.source_errors WHERE relation = 'payments'",
    )
    .await;
    assert_eq!(
        kept,
        vec![vec!["payments".to_string(), "payments".to_string(), "2".to_string(), bad_offset.to_string()]]
    );
    assert_eq!(
        error_code(
            &client,
            &format!(
                "CREATE TABLE keyed (id BIGINT PRIMARY KEY) WITH (connector = 'kafka', topic = 'payments', \
                 properties.bootstrap.server = '{}') FORMAT PLAIN ENCODE JSON",
                broker.address
            )
        )
        .await,
        "0A000"
    );
}

async fn committed_epoch(client: &tokio_postgres::Client) -> i64 {
    count(client, "SELECT committed_epoch FROM freshet_catalog.storage").await
}

/// The committed epoch once it has stood still for 300 ms (a server whose
/// epochs never stop fails here, within 20 s).
async fn settled_epoch(client: &tokio_postgres::Client) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = committed_epoch(client).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = committed_epoch(client).await;
        if now == last {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "epochs kept running with no record coming (at {now})");
        last = now;
    }
}

/// A Kafka reader is told when records come, so an idle topic costs no
/// epochs (each would be a synced checkpoint of the view reading it), and a
/// record that comes later still reaches the view, after a restart too
/// (nothing but the arrival makes the view read it: no poll, no clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_topic_runs_no_polling_epochs_and_a_record_that_comes_wakes_its_view() {
    let broker = Broker::start();
    broker.create_topic("quiet", 3).await;
    let producer = broker.producer();
    send_orders(&producer, "quiet", 0..100).await;

    let data = TempDir::new("kafka-quiet");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE quiet (id BIGINT, customer INT, amount BIGINT)
               WITH (connector = 'kafka', topic = 'quiet', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW ids AS SELECT id FROM quiet;
             CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n FROM quiet GROUP BY customer;",
            broker.address
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_for_count(&client, "SELECT count(*) FROM ids", 100).await;
    wait_for_count(&client, "SELECT sum(n) FROM per_customer", 100).await;

    for round in 0..2 {
        // Idle: the committed epoch stands still. Before readers said when
        // records come, the pump ran an epoch (for these views a synced
        // checkpoint) every 50 ms, 30 in 1.5 s, and the clock one a second.
        // The window opens once the server has settled: a reader that has
        // just connected (at start, after the restart) is told of the
        // assignment it made and reads once more, and a view created last
        // may still be taking its first records.
        let before = settled_epoch(&client).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let idle_epochs = committed_epoch(&client).await - before;
        assert_eq!(idle_epochs, 0, "round {round}: epochs ran in 1.5 s while no record came");

        // A record on two of the partitions wakes both views.
        let first = 100 + 2 * round;
        send(&producer, "quiet", 0, "k", &format!(r#"{{"id": {first}, "customer": 1, "amount": 5}}"#)).await;
        send(&producer, "quiet", 2, "k", &format!(r#"{{"id": {}, "customer": 2, "amount": 7}}"#, first + 1)).await;
        wait_for_count(&client, "SELECT count(*) FROM ids", first + 2).await;
        wait_for_count(&client, "SELECT sum(n) FROM per_customer", first + 2).await;
        let got = sorted(rows(&client, "SELECT id FROM ids WHERE id >= 100").await);
        let want: Vec<Vec<String>> = (100..first + 2).map(|id| vec![id.to_string()]).collect();
        assert_eq!(got, sorted(want), "round {round}");
        if round == 0 {
            server.kill9();
            server = TestServer::start_in(&data.0, &[]);
            client = server.connect().await;
            wait_for_count(&client, "SELECT count(*) FROM ids", 102).await;
        }
    }
}
