//! Connector latency (`make bench-connectors`), on a release server:
//!
//! - CDC freshness: a Postgres table gets 10,000 rows/s (a transaction of
//!   100 rows every 10 ms); a Freshet table FROM a postgres-cdc source
//!   follows it. Latency of a transaction = from its COMMIT returning to
//!   the writer until `SELECT max(id)` on Freshet shows its last row
//!   (polled back to back).
//! - End to end: 10,000 records/s into a Kafka topic (100 every 10 ms), a
//!   view over them, and a Postgres sink of the view. Latency of a batch =
//!   from handing its records to the producer until the sink's target
//!   table in Postgres shows its last id.
//!
//! Prints p50/p90/p99/max in milliseconds. Starts its own PostgreSQL
//! (scripts/postgres.sh) and broker (scripts/kafka-broker.sh).
//!
//! Usage: cargo bench --bench connector_latency -- [SECONDS]   (default 20)
//!
//! `FRESHET_BIN=path` runs that server binary instead of the one cargo
//! built with the bench (to time a release build from a bench client
//! built in the dev profile, which needs no optimized dependencies).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

const BATCH: i64 = 100;
const PERIOD: Duration = Duration::from_millis(10);
/// The wait between two polls of where a batch should show.
const POLL_EVERY: Duration = Duration::from_millis(1);

fn script(name: &str, args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(format!("{root}/scripts/{name}")).args(args).output().expect("script");
    assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn start_freshet(data: &std::path::Path) -> (Child, String) {
    let port = free_port();
    // FRESHET_SYNC_COMMITS=false measures without an fsync per commit.
    let binary = std::env::var("FRESHET_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_freshet").to_string());
    let child = Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("FRESHET_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start freshet");
    (child, format!("host=127.0.0.1 port={port} user=freshet dbname=freshet"))
}

/// Latencies of batches: when each batch's last id was sent, and when a
/// poll first showed an id at or past it.
#[derive(Default)]
struct Samples {
    sent: BTreeMap<i64, Instant>,
    latencies: Vec<f64>,
}

impl Samples {
    fn seen(&mut self, max_id: i64) {
        let now = Instant::now();
        let done: Vec<i64> = self.sent.range(..=max_id).map(|(id, _)| *id).collect();
        for id in done {
            if let Some(at) = self.sent.remove(&id) {
                self.latencies.push(now.duration_since(at).as_secs_f64() * 1000.0);
            }
        }
    }

    fn report(mut self, what: &str) {
        self.latencies.sort_by(f64::total_cmp);
        let n = self.latencies.len();
        if n == 0 {
            println!("{what}: no samples");
            return;
        }
        let at = |q: f64| self.latencies[((n as f64 * q) as usize).min(n - 1)];
        println!(
            "{what}: {n} batches, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (unseen at the end: {})",
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0),
            self.sent.len()
        );
    }
}

/// Sends a batch of ids (`send(first, last)`) every PERIOD until `until`,
/// stamping each batch's last id in `samples`: before sending
/// (`stamp_before`) or once `send` has returned.
fn paced<F, Fut>(
    samples: Arc<Mutex<Samples>>,
    until: Instant,
    stamp_before: bool,
    mut send: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(i64, i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut next = 0i64;
        let mut tick = tokio::time::interval(PERIOD);
        while Instant::now() < until {
            tick.tick().await;
            let last = next + BATCH - 1;
            if stamp_before {
                samples.lock().expect("samples").sent.insert(last, Instant::now());
            }
            send(next, last).await;
            if !stamp_before {
                samples.lock().expect("samples").sent.insert(last, Instant::now());
            }
            next += BATCH;
        }
    })
}

/// Polls every POLL_EVERY until `until`: `query` with the oldest unseen
/// batch's last id for `{id}` returns that id (BIGINT) once it is there.
/// A point query, so the poll's own cost does not grow with the table.
async fn poll(client: &tokio_postgres::Client, query: &str, samples: &Arc<Mutex<Samples>>, until: Instant) {
    while Instant::now() < until {
        let oldest = samples.lock().expect("samples").sent.keys().next().copied();
        let Some(oldest) = oldest else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        if let Ok(row) = client.query_one(&query.replace("{id}", &oldest.to_string()), &[]).await {
            let max: Option<i64> = row.get(0);
            if let Some(max) = max {
                samples.lock().expect("samples").seen(max);
            }
        }
        // Back to back, the polls and the queries they cost kept one of
        // the machine's two cores busy, slowing what they measure.
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn cdc_freshness(pg_url: &str, pg_port: u16, seconds: u64) {
    let upstream = connect(pg_url).await;
    upstream.batch_execute("CREATE TABLE ticks (id BIGINT PRIMARY KEY, v INT)").await.expect("upstream table");
    let data = std::env::temp_dir().join(format!("freshet-bench-cdc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut server, url) = start_freshet(&data);
    let freshet = connect(&url).await;
    freshet
        .batch_execute(&format!(
            "CREATE SOURCE pg WITH (connector = 'postgres-cdc', hostname = '127.0.0.1', port = '{pg_port}',
               username = 'postgres', database.name = 'postgres');
             CREATE TABLE ticks (id BIGINT, v INT, PRIMARY KEY (id)) FROM pg TABLE 'public.ticks';"
        ))
        .await
        .expect("cdc table");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = Arc::new(Mutex::new(Samples::default()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let upstream = Arc::new(upstream);
    // Stamped when COMMIT has returned.
    let writer = paced(samples.clone(), until, false, move |first, last| {
        let upstream = upstream.clone();
        async move {
            upstream
                .batch_execute(&format!("INSERT INTO ticks SELECT g, g % 7 FROM generate_series({first}, {last}) g"))
                .await
                .expect("insert");
        }
    });
    poll(&freshet, "SELECT max(id) FROM ticks WHERE id = {id}", &samples, until + Duration::from_secs(2)).await;
    writer.await.expect("writer");
    let samples = Arc::try_unwrap(samples).ok().expect("samples").into_inner().expect("samples");
    samples.report("CDC freshness (Postgres commit -> Freshet table), 10,000 rows/s");
    let _ = freshet.batch_execute("DROP TABLE ticks").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}

async fn end_to_end(pg_url: &str, broker: &str, seconds: u64) {
    let target = connect(pg_url).await;
    target
        .batch_execute("CREATE TABLE buckets (bucket BIGINT PRIMARY KEY, last_id BIGINT, n BIGINT)")
        .await
        .expect("target");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", broker).create().expect("admin");
    let topic = NewTopic::new("events", 1, TopicReplication::Fixed(1));
    for result in admin.create_topics([&topic], &AdminOptions::new()).await.expect("create topic") {
        result.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
    let data = std::env::temp_dir().join(format!("freshet-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut server, url) = start_freshet(&data);
    let freshet = connect(&url).await;
    freshet
        .batch_execute(&format!(
            "CREATE SOURCE events (id BIGINT, v INT) WITH (connector = 'kafka', topic = 'events',
               properties.bootstrap.server = '{broker}') FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW buckets AS SELECT id % 100 AS bucket, max(id) AS last_id, count(*) AS n
               FROM events GROUP BY id % 100;
             CREATE SINK buckets_out FROM buckets WITH (connector = 'postgres', url = '{pg_url}',
               table = 'buckets', primary_key = 'bucket');"
        ))
        .await
        .expect("pipeline");
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", broker).set("linger.ms", "0").create().expect("producer");
    let samples = Arc::new(Mutex::new(Samples::default()));
    let until = Instant::now() + Duration::from_secs(seconds);
    // Stamped before the records are handed to the producer.
    let writer = paced(samples.clone(), until, true, move |first, last| {
        let producer = producer.clone();
        async move {
            let mut pending = Vec::with_capacity(BATCH as usize);
            for id in first..=last {
                let payload = format!(r#"{{"id": {id}, "v": {}}}"#, id % 7);
                let record: FutureRecord<'_, (), String> = FutureRecord::to("events").payload(&payload);
                pending.push(producer.send_result(record).map_err(|(e, _)| e).expect("queue"));
            }
            for delivery in pending {
                delivery.await.expect("delivery").map_err(|(e, _)| e).expect("send");
            }
        }
    });
    poll(&target, "SELECT max(last_id) FROM buckets WHERE last_id >= {id}", &samples, until + Duration::from_secs(3))
        .await;
    writer.await.expect("writer");
    let samples = Arc::try_unwrap(samples).ok().expect("samples").into_inner().expect("samples");
    samples.report("End to end (Kafka produce -> view -> Postgres sink), 10,000 records/s");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let base = std::env::temp_dir().join(format!("freshet-bench-latency-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("dir");
    let pg_dir = base.join("pg").to_string_lossy().into_owned();
    let pg_port = free_port();
    let pg_url = script("postgres.sh", &["start", &pg_port.to_string(), &pg_dir]);
    let broker_dir = base.join("kafka").to_string_lossy().into_owned();
    let broker = script("kafka-broker.sh", &["start", &free_port().to_string(), &broker_dir]);
    cdc_freshness(&pg_url, pg_port, seconds).await;
    end_to_end(&pg_url, &broker, seconds).await;
    script("kafka-broker.sh", &["stop", &broker_dir]);
    script("postgres.sh", &["stop", &pg_dir]);
    let _ = std::fs::remove_dir_all(&base);
}
