//! The Postgres front end (`make bench-frontend`), on a release server,
//! each number next to a local PostgreSQL's on the same machine:
//!
//! - simple-query round trips/s: CLIENTS connections, each sending
//!   `SELECT 1` back to back, then a primary-key point read of a table;
//! - connections/s: CLIENTS tasks, each connecting, running `SELECT 1` and
//!   disconnecting in a loop (trust authentication on both);
//! - change delivery latency: one row INSERTed every 10 ms; the time from
//!   sending the INSERT until a subscriber receives the row. Freshet:
//!   `SUBSCRIBE TO t WITH (snapshot = false)`; PostgreSQL (which has no
//!   SUBSCRIBE): LISTEN on a channel an AFTER INSERT trigger NOTIFYs.
//!
//! Usage: cargo bench --bench frontend -- [SECONDS] [CLIENTS]   (defaults 5, 16)

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

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
    let child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("FRESHET_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start freshet");
    (child, format!("host=127.0.0.1 port={port} user=freshet dbname=freshet"))
}

/// Queries per second from `clients` connections sending `sql` back to back.
async fn round_trips(url: &str, sql: &'static str, clients: usize, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    // Every client connected before the clock starts: the rate counts
    // queries only.
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(connect(url).await);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in connected {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                client.simple_query(sql).await.expect("query");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Connections per second (connect, one query, disconnect) from `clients` tasks.
async fn connections(url: &str, clients: usize, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, done) = (url.to_string(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let (client, connection) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
                    let driver = tokio::spawn(connection);
                    client.simple_query("SELECT 1").await.expect("query");
                    drop(client);
                    let _ = driver.await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("connection task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentiles(mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        return "no samples".into();
    }
    let at = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
    format!("{n} rows, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", at(0.5), at(0.99), at(1.0))
}

/// Inserts one row every 10 ms for `seconds`; `receive` yields the ids
/// the subscriber got, as it gets them.
async fn delivery<S>(writer: tokio_postgres::Client, mut received: S, seconds: u64) -> Vec<f64>
where
    S: futures::Stream<Item = i64> + Unpin,
{
    let sent: Arc<parking_lot::Mutex<std::collections::HashMap<i64, Instant>>> = Arc::default();
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut id = 0i64;
            while Instant::now() < until {
                tick.tick().await;
                id += 1;
                sent.lock().insert(id, Instant::now());
                writer.simple_query(&format!("INSERT INTO ev VALUES ({id})")).await.expect("insert");
            }
            id
        })
    };
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 5);
    while let Ok(Some(id)) = tokio::time::timeout_at(deadline.into(), received.next()).await {
        if let Some(at) = sent.lock().remove(&id) {
            latencies.push(at.elapsed().as_secs_f64() * 1e3);
        }
        if sender.is_finished() && sent.lock().is_empty() {
            break;
        }
    }
    let _ = sender.await;
    latencies
}

async fn freshet_delivery(url: &str, seconds: u64) -> Vec<f64> {
    let admin = connect(url).await;
    admin.batch_execute("CREATE TABLE ev (id BIGINT)").await.expect("create ev");
    let subscriber = connect(url).await;
    let stream = subscriber.simple_query_raw("SUBSCRIBE TO ev WITH (snapshot = false)").await.expect("subscribe");
    // Rows are (epoch, op, id).
    let ids = stream.filter_map(|message| async move {
        match message {
            Ok(tokio_postgres::SimpleQueryMessage::Row(row)) => row.get(2).and_then(|v| v.parse().ok()),
            _ => None,
        }
    });
    delivery(connect(url).await, Box::pin(ids), seconds).await
}

async fn postgres_delivery(url: &str, seconds: u64) -> Vec<f64> {
    let admin = connect(url).await;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS ev; CREATE TABLE ev (id BIGINT);
             CREATE OR REPLACE FUNCTION ev_notify() RETURNS trigger AS $$
               BEGIN PERFORM pg_notify('ev', NEW.id::text); RETURN NEW; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER ev_notify AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION ev_notify();",
        )
        .await
        .expect("create ev");
    let (listener, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(note) = message {
                if let Ok(id) = note.payload().parse::<i64>() {
                    let _ = tx.unbounded_send(id);
                }
            }
        }
    });
    listener.batch_execute("LISTEN ev").await.expect("listen");
    let latencies = delivery(connect(url).await, rx, seconds).await;
    drop(listener);
    latencies
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let clients: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let base = std::env::temp_dir().join(format!("freshet-bench-frontend-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("bench dir");
    let (mut freshet, freshet_url) = start_freshet(&base.join("freshet"));
    let pg_dir = base.join("postgres").to_string_lossy().into_owned();
    let pg_port = free_port();
    let pg_url = script("postgres.sh", &["start", &pg_port.to_string(), &pg_dir]);
    // (DataFusion's generate_series names its column `value`.)
    for (url, fill) in [
        (&freshet_url, "INSERT INTO kv SELECT value, 'value ' || value FROM generate_series(1, 1000)"),
        (&pg_url, "INSERT INTO kv SELECT g, 'value ' || g FROM generate_series(1, 1000) AS g"),
    ] {
        let client = connect(url).await;
        client.batch_execute("CREATE TABLE kv (k BIGINT PRIMARY KEY, v TEXT)").await.expect("create kv");
        client.batch_execute(fill).await.expect("fill kv");
    }
    println!("{clients} clients, {seconds} s per measurement");
    let mut lines = Vec::new();
    for (what, sql) in [("SELECT 1", "SELECT 1"), ("point read", "SELECT v FROM kv WHERE k = 500")] {
        let ours = round_trips(&freshet_url, sql, clients, seconds).await;
        let theirs = round_trips(&pg_url, sql, clients, seconds).await;
        lines.push(format!(
            "round trips/s, {what}: freshet {ours:.0}, postgres {theirs:.0} (ratio {:.2})",
            ours / theirs
        ));
        println!("{}", lines.last().map(String::as_str).unwrap_or_default());
    }
    let ours = connections(&freshet_url, clients, seconds).await;
    let theirs = connections(&pg_url, clients, seconds).await;
    println!("connections/s: freshet {ours:.0}, postgres {theirs:.0} (ratio {:.2})", ours / theirs);
    println!("delivery latency, freshet SUBSCRIBE: {}", percentiles(freshet_delivery(&freshet_url, seconds).await));
    println!("delivery latency, postgres LISTEN/NOTIFY: {}", percentiles(postgres_delivery(&pg_url, seconds).await));
    let _ = freshet.kill();
    let _ = freshet.wait();
    script("postgres.sh", &["stop", &pg_dir]);
    let _ = std::fs::remove_dir_all(&base);
}
