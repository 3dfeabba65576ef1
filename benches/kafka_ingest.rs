//! Kafka JSON ingest (`make bench-kafka`): records/s from a topic into an
//! aggregate view, with one partition and with several.
//!
//! For each partition count: a fresh broker topic filled with RECORDS JSON
//! records (`{"id", "customer", "amount", "note"}`, 1,000 customers), then a
//! fresh release server (`--sync-commits false`) with a Kafka source and
//! `SELECT customer, count(*), sum(amount) … GROUP BY customer`; the time
//! from CREATE MATERIALIZED VIEW until the view has counted every record
//! gives records/s. Peak RSS from VmHWM. The producer runs before the
//! clock starts, so the number is Freshet's consumption alone. In the same
//! run, first, a bare librdkafka consumer reads the same topic (no decoding): the
//! broker's and client's ceiling on this machine, for the ratio.
//!
//! Usage: cargo bench --bench kafka_ingest -- [RECORDS] [PARTITIONS…]
//!   (default 2,000,000 records; 1 and 4 partitions)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn script(args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(format!("{root}/scripts/kafka-broker.sh")).args(args).output().expect("kafka-broker.sh");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

async fn fill(address: &str, topic: &str, partitions: i32, records: i64) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", address).create().expect("admin");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new_topic], &AdminOptions::new()).await.expect("create topic") {
        result.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(10_000);
    for id in 0..records {
        let payload = format!(
            r#"{{"id": {id}, "customer": {}, "amount": {}, "note": "bench"}}"#,
            id % 1000,
            (id * 7919) % 10_000
        );
        let record: FutureRecord<'_, (), String> =
            FutureRecord::to(topic).partition((id % partitions as i64) as i32).payload(&payload);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).expect("queue"));
        if pending.len() == 10_000 {
            for delivery in pending.drain(..) {
                delivery.await.expect("delivery").map_err(|(e, _)| e).expect("send");
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery").map_err(|(e, _)| e).expect("send");
    }
}

/// Records/s a bare consumer reads the whole topic at (assign every
/// partition from the start, count messages).
fn raw_consume(address: &str, topic: &str, partitions: i32, records: i64) -> f64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let started = Instant::now();
    let mut seen = 0i64;
    while seen < records && started.elapsed() < Duration::from_secs(120) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(error)) => eprintln!("bare consumer: {error}"),
            None => {}
        }
    }
    if seen < records {
        eprintln!("bare consumer: only {seen} of {records} records after 120 s");
    }
    seen as f64 / started.elapsed().as_secs_f64()
}

fn peak_rss_mib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

async fn measure(address: &str, topic: &str, records: i64) -> (f64, u64) {
    let data = std::env::temp_dir().join(format!("freshet-bench-kafka-{}-{topic}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--sync-commits", "false", "--data-dir"])
        .arg(&data)
        .env("FRESHET_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start freshet");
    let url = format!("host=127.0.0.1 port={port} user=freshet dbname=freshet");
    let client = loop {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                break client;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders (id BIGINT, customer INT, amount BIGINT, note TEXT)
             WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{address}')
             FORMAT PLAIN ENCODE JSON"
        ))
        .await
        .expect("create source");
    let started = Instant::now();
    client
        .batch_execute("CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer")
        .await
        .expect("create view");
    loop {
        let row =
            client.query_one("SELECT CAST(coalesce(sum(n), 0) AS BIGINT) FROM per_customer", &[]).await.expect("count");
        let counted: i64 = row.get(0);
        if counted >= records {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1200), "only {counted} of {records} records after 20 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss = peak_rss_mib(&server);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
    (records as f64 / elapsed, rss)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let records: i64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let mut partitions: Vec<i32> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    if partitions.is_empty() {
        partitions = vec![1, 4];
    }
    let dir = std::env::temp_dir().join(format!("freshet-bench-broker-{}", std::process::id()));
    let dir_text = dir.to_string_lossy().into_owned();
    let address = script(&["start", &free_port().to_string(), &dir_text]);
    println!("partitions      records   records/s   peak MiB   bare consumer/s   ratio");
    for p in partitions {
        let topic = format!("bench_{p}");
        let filling = Instant::now();
        fill(&address, &topic, p, records).await;
        eprintln!("filled {topic} in {:.1} s", filling.elapsed().as_secs_f64());
        let raw = raw_consume(&address, &topic, p, records);
        let (rate, rss) = measure(&address, &topic, records).await;
        println!("{p:>10} {records:>12} {rate:>11.0} {rss:>10} {raw:>17.0} {:>7.2}", rate / raw);
    }
    script(&["stop", &dir_text]);
    let _ = std::fs::remove_dir_all(&dir);
}
