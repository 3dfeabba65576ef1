//! Ingest, freshness and point-query benchmarks over the real wire protocol.
//!
//! The server runs in this process (same code and store as `freshet serve`:
//! RocksDB, fsync per commit unless FRESHET_BENCH_SYNC=false); a
//! tokio-postgres client drives it over loopback TCP.
//! - ingest: 1,000-row INSERTs into a table feeding an aggregate view and a
//!   join view (rows/s; each INSERT returns after both views are updated).
//! - freshness: one-row INSERT followed by a SELECT on the view that shows
//!   it; prints p50/p99 of the pair.
//! - point_query: primary-key SELECTs on a table of `FRESHET_BENCH_ROWS`
//!   rows (default 1,000,000) and on a materialized view over it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

struct Bench {
    runtime: Runtime,
    client: tokio_postgres::Client,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn next_bench_dir() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// FRESHET_BENCH_SYNC=false measures without an fsync per commit.
fn sync_commits() -> bool {
    std::env::var("FRESHET_BENCH_SYNC").map(|v| v != "false").unwrap_or(true)
}

/// The server's default checkpoint interval.
const DEFAULT_CHECKPOINT_MS: u64 = 100;

fn start() -> Bench {
    start_on(Store::Rocks { fsync: sync_commits(), checkpoint_ms: DEFAULT_CHECKPOINT_MS })
}

/// Where the server keeps its state.
#[derive(Clone, Copy, Debug)]
enum Store {
    /// RocksDB; `fsync` per commit (the server's default; without it a
    /// commit survives a process crash, not a power loss); operator state
    /// checkpointed every `checkpoint_ms` (0: every commit).
    Rocks { fsync: bool, checkpoint_ms: u64 },
    /// In memory only: no checkpoint at all (the baseline for their cost).
    Memory,
}

impl Store {
    fn label(self) -> String {
        match self {
            Store::Memory => "memory".to_string(),
            Store::Rocks { fsync, checkpoint_ms } => {
                format!("rocksdb_{}_checkpoint_{checkpoint_ms}ms", if fsync { "fsync" } else { "nofsync" })
            }
        }
    }
}

fn start_on(store: Store) -> Bench {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = runtime.block_on(async move {
        // The server's own store: RocksDB with an fsync per commit (the
        // default), in a fresh directory.
        let dir = std::env::temp_dir().join(format!("freshet-bench-{}-{}", std::process::id(), next_bench_dir()));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = match store {
            Store::Memory => freshet::sql::Engine::new().expect("engine"),
            Store::Rocks { fsync, checkpoint_ms } => {
                let options = freshet::state::StoreOptions { sync: fsync, cache_bytes: 512 << 20 };
                let store = freshet::state::DurableStore::open(&dir, options).expect("store");
                let budget = freshet::stream::state_table::StateBudget::new(512 << 20);
                let interval = std::time::Duration::from_millis(checkpoint_ms);
                let engine = freshet::sql::Engine::with_store(
                    Arc::new(store),
                    freshet::sql::default_workers(),
                    budget,
                    interval,
                )
                .expect("engine");
                engine.coordinator.spawn_checkpointer();
                engine
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(freshet::server::serve(listener, Arc::clone(&engine), Default::default(), stopped));
        let url = format!("host=127.0.0.1 port={port} user=freshet dbname=freshet");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    });
    Bench { runtime, client, _stop: stop }
}

fn insert_sql(table: &str, first_id: i64, rows: i64) -> String {
    let values: Vec<String> =
        (first_id..first_id + rows).map(|id| format!("({id}, {}, {})", id % 100, id % 997)).collect();
    format!("INSERT INTO {table} VALUES {}", values.join(","))
}

/// A table feeding an aggregate view (100 groups) and a join view.
fn setup_ingest(bench: &Bench) {
    bench.runtime.block_on(async {
        bench
            .client
            .batch_execute(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, k INT, v INT);
                 CREATE TABLE dim (k INT PRIMARY KEY, name TEXT);
                 INSERT INTO dim SELECT CAST(value AS INT), 'n' || CAST(value AS TEXT) FROM generate_series(0, 99);
                 CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k;
                 CREATE MATERIALIZED VIEW joined AS SELECT t.id, d.name, t.v FROM t JOIN dim d ON t.k = d.k;",
            )
            .await
            .expect("setup");
    });
}

/// INSERTs of `rows` rows into `t`, each returning after the views are
/// updated.
fn bench_inserts(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    bench: &Bench,
    next_id: &mut i64,
    rows: i64,
) {
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            let statements: Vec<String> = (0..iterations)
                .map(|_| {
                    let sql = insert_sql("t", *next_id, rows);
                    *next_id += rows;
                    sql
                })
                .collect();
            bench.runtime.block_on(async {
                let start = Instant::now();
                for sql in &statements {
                    bench.client.batch_execute(sql).await.expect("insert");
                }
                start.elapsed()
            })
        })
    });
}

fn ingest(c: &mut Criterion) {
    let bench = start();
    setup_ingest(&bench);
    let mut next_id = 0i64;
    let mut group = c.benchmark_group("ingest");
    group.sample_size(20);
    bench_inserts(&mut group, "insert_1000_rows_agg_and_join_views", &bench, &mut next_id, 1000);
    group.finish();

    // Freshness: INSERT returns, then SELECT on the view shows it.
    let mut latencies: Vec<Duration> = Vec::new();
    bench.runtime.block_on(async {
        for i in 0..2000 {
            let id = 10_000_000 + i;
            let start = Instant::now();
            bench.client.batch_execute(&insert_sql("t", id, 1)).await.expect("insert");
            let rows =
                bench.client.simple_query(&format!("SELECT name FROM joined WHERE id = {id}")).await.expect("select");
            latencies.push(start.elapsed());
            assert!(rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))), "insert not visible");
        }
    });
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!("freshness (insert + select on a view over {} rows): p50 {:?}, p99 {:?}", next_id, pct(0.5), pct(0.99));
}

fn point_query(c: &mut Criterion) {
    let bench = start();
    let rows: i64 = std::env::var("FRESHET_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    bench.runtime.block_on(async {
        bench
            .client
            .batch_execute(
                "CREATE TABLE big (id BIGINT PRIMARY KEY, k INT, v INT);
                 CREATE MATERIALIZED VIEW big_view AS SELECT id, k, v + 1 AS v1 FROM big",
            )
            .await
            .expect("create");
        let mut id = 0;
        while id < rows {
            let n = (rows - id).min(10_000);
            bench.client.batch_execute(&insert_sql("big", id, n)).await.expect("load");
            id += n;
        }
    });
    let statement =
        bench.runtime.block_on(bench.client.prepare("SELECT id, k, v FROM big WHERE id = $1")).expect("prepare");
    let mut group = c.benchmark_group("point_query");
    group.throughput(Throughput::Elements(1));
    let mut key = 0i64;
    group.bench_function(format!("freshet_pk_lookup_{rows}_rows"), |b| {
        b.iter(|| {
            key = (key + 7919) % rows;
            bench.runtime.block_on(bench.client.query_one(&statement, &[&key])).expect("lookup")
        })
    });

    // The view is maintained as the table is loaded; its rows are stored in
    // key order with `id` leading, so `id = $1` reads one key range.
    let view_statement =
        bench.runtime.block_on(bench.client.prepare("SELECT id, k, v1 FROM big_view WHERE id = $1")).expect("prepare");
    group.bench_function(format!("freshet_view_lookup_{rows}_rows"), |b| {
        b.iter(|| {
            key = (key + 7919) % rows;
            bench.runtime.block_on(bench.client.query_one(&view_statement, &[&key])).expect("lookup")
        })
    });

    // The same lookups against a local PostgreSQL, for the ratio
    // (FRESHET_BENCH_PG=postgres://user@127.0.0.1:port/db).
    if let Ok(url) = std::env::var("FRESHET_BENCH_PG") {
        let pg = bench.runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to postgres");
            tokio::spawn(connection);
            client
                .batch_execute(
                    "DROP TABLE IF EXISTS big CASCADE; CREATE TABLE big (id BIGINT PRIMARY KEY, k INT, v INT)",
                )
                .await
                .expect("create in postgres");
            let mut id = 0;
            while id < rows {
                let n = (rows - id).min(10_000);
                client.batch_execute(&insert_sql("big", id, n)).await.expect("load postgres");
                id += n;
            }
            // Postgres cannot maintain a view incrementally; a materialized
            // view with a unique index, refreshed once, is its closest peer.
            client
                .batch_execute(
                    "CREATE MATERIALIZED VIEW big_view AS SELECT id, k, v + 1 AS v1 FROM big;
                     CREATE UNIQUE INDEX ON big_view (id); ANALYZE big; ANALYZE big_view",
                )
                .await
                .expect("analyze");
            client
        });
        let statement = bench.runtime.block_on(pg.prepare("SELECT id, k, v FROM big WHERE id = $1")).expect("prepare");
        group.bench_function(format!("postgres_pk_lookup_{rows}_rows"), |b| {
            b.iter(|| {
                key = (key + 7919) % rows;
                bench.runtime.block_on(pg.query_one(&statement, &[&key])).expect("lookup")
            })
        });
        let view_statement =
            bench.runtime.block_on(pg.prepare("SELECT id, k, v1 FROM big_view WHERE id = $1")).expect("prepare");
        group.bench_function(format!("postgres_view_lookup_{rows}_rows"), |b| {
            b.iter(|| {
                key = (key + 7919) % rows;
                bench.runtime.block_on(pg.query_one(&view_statement, &[&key])).expect("lookup")
            })
        });
    }
    group.finish();
}

/// The cost of durability: the ingest bench in memory (no store at all),
/// then on RocksDB with operator state checkpointed every commit, every
/// 10 ms, 100 ms and 1 s (each commit still writes its rows, view changes
/// and, between checkpoints, its epoch-log entry).
fn checkpoint_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(20);
    let mut stores = vec![Store::Memory];
    for fsync in [false, true] {
        for checkpoint_ms in [0, 10, 100, 1000] {
            stores.push(Store::Rocks { fsync, checkpoint_ms });
        }
    }
    for store in stores {
        let bench = start_on(store);
        setup_ingest(&bench);
        let mut next_id = 0i64;
        bench_inserts(&mut group, &format!("insert_1000_rows_{}", store.label()), &bench, &mut next_id, 1000);
        // Small transactions: every commit changes the same hot groups.
        bench_inserts(&mut group, &format!("insert_10_rows_{}", store.label()), &bench, &mut next_id, 10);
    }
    group.finish();
}

criterion_group!(benches, ingest, point_query, checkpoint_cost);
criterion_main!(benches);
