//! Crash recovery: the real server is killed with SIGKILL at random moments
//! while several clients write, and restarted on the same data dir. After
//! every restart (a) every write the server acknowledged is there and
//! (b) every materialized view equals the batch oracle over the recovered
//! tables — and keeps doing so as writes go on, so the views' operator state
//! was rebuilt correctly too.
//!
//! Seeded and reproducible: set FRESHET_CRASH_SEED to replay a failure.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::oracle::{SETUP, VIEWS, VIEWS_ON_VIEWS, random_statement, sorted};
use crate::server::{TestServer, describe, rows, tempdir::TempDir, try_rows};

const KILLS: usize = 20;
const CLIENTS: usize = 3;

fn seed() -> u64 {
    std::env::var("FRESHET_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261125)
}

/// One writer: random DML on t1/t2/t3 plus a ledger insert per statement,
/// until the server goes away. Returns the ledger ids it got acknowledged.
async fn writer(server_url: String, seed: u64, client: usize, round: usize) -> Vec<i64> {
    let Ok((db, connection)) = tokio_postgres::connect(&server_url, tokio_postgres::NoTls).await else {
        return Vec::new();
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut rng = StdRng::seed_from_u64(seed ^ ((client as u64) << 32) ^ round as u64);
    // Disjoint id ranges per client and round: inserts never collide.
    let mut next_id = 1_000_000 * (client as i64 + 1) + 10_000 * round as i64;
    let mut acknowledged = Vec::new();
    for step in 0..200i64 {
        let statement = random_statement(&mut rng, &mut next_id);
        if db.simple_query(&statement).await.is_err() {
            break;
        }
        let ledger_id = next_id * 1000 + step;
        match db.simple_query(&format!("INSERT INTO ledger VALUES ({ledger_id}, {client})")).await {
            Ok(_) => acknowledged.push(ledger_id),
            Err(_) => break,
        }
    }
    acknowledged
}

/// What the DDL client did: every view it tried to create (name -> query),
/// which CREATEs were acknowledged, which DROPs were sent (a DROP cut off by
/// a kill may or may not have committed) and which were acknowledged.
#[derive(Default)]
struct DdlLog {
    attempted: std::collections::HashMap<String, &'static str>,
    created: std::collections::HashSet<String>,
    drop_sent: std::collections::HashSet<String>,
    dropped: std::collections::HashSet<String>,
}

/// Creates materialized views (each a backfill over the current tables) and
/// drops some of them, until the server goes away: kills land during
/// CREATE, backfill and DROP.
async fn ddl_client(server_url: String, seed: u64, round: usize, log: Arc<Mutex<DdlLog>>) {
    let Ok((db, connection)) = tokio_postgres::connect(&server_url, tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut rng = StdRng::seed_from_u64(seed ^ 0xdd1 ^ ((round as u64) << 40));
    for i in 0..50 {
        let name = format!("ddl_r{round}_{i}");
        let query = VIEWS[rng.random_range(0..VIEWS.len())].1;
        log.lock().attempted.insert(name.clone(), query);
        if db.simple_query(&format!("CREATE MATERIALIZED VIEW {name} AS {query}")).await.is_err() {
            return;
        }
        log.lock().created.insert(name.clone());
        if rng.random_bool(0.5) {
            log.lock().drop_sent.insert(name.clone());
            if db.simple_query(&format!("DROP MATERIALIZED VIEW {name}")).await.is_err() {
                return;
            }
            log.lock().dropped.insert(name);
        }
    }
}

/// After a restart: acknowledged CREATEs exist, acknowledged DROPs do not,
/// and every surviving view (including ones whose CREATE was cut off and
/// happened to commit) equals the oracle. Then the survivors are dropped.
async fn check_ddl(client: &tokio_postgres::Client, seed: u64, round: usize, log: &Mutex<DdlLog>) {
    let existing: std::collections::HashSet<String> =
        rows(client, "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'ddl_r%'")
            .await
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
    let survivors: Vec<(String, &'static str)> = {
        let log = log.lock();
        for name in log.created.difference(&log.drop_sent) {
            assert!(existing.contains(name), "seed {seed}, restart {round}: acknowledged CREATE of {name} lost");
        }
        for name in &log.dropped {
            assert!(!existing.contains(name), "seed {seed}, restart {round}: acknowledged DROP of {name} undone");
        }
        existing
            .iter()
            .map(|name| {
                let query = log.attempted.get(name).copied();
                (name.clone(), query.unwrap_or_else(|| panic!("seed {seed}: unknown view {name} after restart")))
            })
            .collect()
    };
    for (name, query) in &survivors {
        let view = sorted(rows(client, &format!("SELECT * FROM {name}")).await);
        let batch = sorted(rows(client, query).await);
        assert_eq!(view, batch, "seed {seed}, after restart {round}: view {name} differs from the batch oracle");
        client.batch_execute(&format!("DROP MATERIALIZED VIEW {name}")).await.expect("drop survivor");
        let mut log = log.lock();
        log.drop_sent.insert(name.clone());
        log.dropped.insert(name.clone());
    }
}

async fn check_views(client: &tokio_postgres::Client, seed: u64, round: usize) {
    for (name, query) in VIEWS.iter().chain(VIEWS_ON_VIEWS).chain(&[("ledger_counts", LEDGER_VIEW)]) {
        let view = sorted(rows(client, &format!("SELECT * FROM {name}")).await);
        let batch = sorted(rows(client, query).await);
        assert_eq!(view, batch, "seed {seed}, after restart {round}: view {name} differs from the batch oracle");
    }
}

const LEDGER_VIEW: &str = "SELECT client, count(*) AS n, max(id) AS last FROM ledger GROUP BY client";

/// The oracle's tables and views, plus the ledger and its view.
async fn create_schema(client: &tokio_postgres::Client) {
    client.batch_execute(SETUP).await.expect("setup");
    client.batch_execute("CREATE TABLE ledger (id BIGINT PRIMARY KEY, client INT)").await.expect("ledger");
    for (name, query) in VIEWS.iter().chain(VIEWS_ON_VIEWS).chain(&[("ledger_counts", LEDGER_VIEW)]) {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {}", describe(&e)));
    }
}

/// `count` random DML statements, each of which must succeed.
async fn random_writes(client: &tokio_postgres::Client, rng: &mut StdRng, next_id: &mut i64, count: usize) {
    for _ in 0..count {
        let statement = random_statement(rng, next_id);
        try_rows(client, &statement).await.unwrap_or_else(|e| panic!("{statement}: {}", describe(&e)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let seed = seed();
    let data = TempDir::new("crash");
    // Checkpoints every commit, often, or (within a round) never by time,
    // so that kills land at and between checkpoints and restarts replay
    // epoch logs of every length.
    let intervals = ["0", "50", "3600000"];
    let args =
        |round: usize| ["--sync-commits", "false", "--workers", "2", "--checkpoint-interval-ms", intervals[round % 3]];
    let mut server = TestServer::start_in(&data.0, &args(0));
    {
        let client = server.connect().await;
        create_schema(&client).await;
    }
    let acknowledged: Arc<Mutex<Vec<i64>>> = Arc::default();
    let ddl: Arc<Mutex<DdlLog>> = Arc::default();
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..KILLS {
        let ddl_task = tokio::spawn(ddl_client(server.url(), seed, round, ddl.clone()));
        let writers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let acknowledged = acknowledged.clone();
                let url = server.url();
                tokio::spawn(async move {
                    let ids = writer(url, seed, client, round).await;
                    acknowledged.lock().extend(ids);
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        server.kill9();
        for writer in writers {
            writer.await.expect("writer task");
        }
        ddl_task.await.expect("ddl task");

        server = TestServer::start_in(&data.0, &args(round + 1));
        let client = server.connect().await;
        let stored: std::collections::HashSet<i64> = rows(&client, "SELECT id FROM ledger")
            .await
            .into_iter()
            .map(|r| r[0].parse().unwrap_or_else(|_| panic!("ledger id {:?}", r[0])))
            .collect();
        let missing: Vec<i64> = acknowledged.lock().iter().copied().filter(|id| !stored.contains(id)).collect();
        assert!(missing.is_empty(), "seed {seed}, restart {round}: acknowledged writes lost: {missing:?}");
        check_views(&client, seed, round).await;
        check_ddl(&client, seed, round, &ddl).await;
        // The restored operator state keeps views right under new changes.
        let mut next_id = 9_000_000 + 1000 * round as i64;
        for _ in 0..5 {
            let statement = random_statement(&mut rng, &mut next_id);
            if let Err(e) = try_rows(&client, &statement).await {
                panic!("seed {seed}, restart {round}: {statement}: {}", describe(&e));
            }
        }
        check_views(&client, seed, round).await;
    }
    // The kills must have interrupted real work, not idle servers.
    let ddl_done = ddl.lock().created.len();
    assert!(ddl_done >= KILLS, "seed {seed}: only {ddl_done} CREATEs were acknowledged in {KILLS} rounds");
    let acknowledged = acknowledged.lock().len();
    assert!(
        acknowledged >= KILLS * CLIENTS,
        "seed {seed}: only {acknowledged} writes were acknowledged in {KILLS} rounds"
    );
    let client = server.connect().await;
    let total = rows(&client, "SELECT count(*) FROM ledger").await;
    assert!(total[0][0].parse::<usize>().unwrap_or(0) >= acknowledged);
}

/// A data dir written by another storage format is refused at startup with
/// a message that says so; the data is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_format_is_refused() {
    let data = TempDir::new("format");
    {
        let mut server = TestServer::start_in(&data.0, &[]);
        let client = server.connect().await;
        client
            .batch_execute("CREATE TABLE kept (id INT PRIMARY KEY); INSERT INTO kept VALUES (1)")
            .await
            .expect("write");
        server.kill9();
    }
    // Restart on the same dir: the table and its row are back.
    {
        let server = TestServer::start_in(&data.0, &[]);
        let client = server.connect().await;
        assert_eq!(rows(&client, "SELECT id FROM kept").await, vec![vec!["1".to_string()]]);
    }
    // Rewrite the format marker as a future version would.
    {
        let db = rocksdb_marker::overwrite_format(&data.0.join("state"), 999);
        assert!(db, "could not rewrite the format marker");
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data.0)
        .env("FRESHET_LOG", "error")
        .output()
        .expect("run freshet");
    assert!(!output.status.success(), "freshet started on a data dir of another format");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage format 999"), "unclear error: {stderr}");
}

mod rocksdb_marker {
    /// Sets the stored format version, the way a different build would have.
    pub fn overwrite_format(dir: &std::path::Path, version: u32) -> bool {
        let Ok(db) = rocksdb::DB::open_default(dir) else { return false };
        db.put(b"m/format", version.to_be_bytes()).is_ok()
    }
}

/// A view whose dataflow failed is stored as failed; at the next start it is
/// rebuilt from its inputs (not resumed from state that missed the failing
/// epoch), and equals the oracle once the offending row is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_view_is_rebuilt_from_its_inputs_at_restart() {
    let data = TempDir::new("failed-view");
    let mut server = TestServer::start_in(&data.0, &[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, x INT);
             INSERT INTO t VALUES (1, 2), (2, 5);
             CREATE MATERIALIZED VIEW q AS SELECT id, 10 / x AS y FROM t;
             CREATE MATERIALIZED VIEW total AS SELECT sum(y) AS s FROM q;",
        )
        .await
        .expect("setup");
    client.batch_execute("INSERT INTO t VALUES (3, 0)").await.expect("the table takes the row");
    let error = client.simple_query("SELECT * FROM q").await.expect_err("q failed on 10 / 0");
    assert!(describe(&error).to_lowercase().contains("division by zero"), "{}", describe(&error));
    assert!(client.simple_query("SELECT * FROM total").await.is_err(), "a view over a failed view fails too");
    client.batch_execute("DELETE FROM t WHERE id = 3; INSERT INTO t VALUES (4, 1)").await.expect("more changes");
    drop(client);
    server.kill9();

    let server = TestServer::start_in(&data.0, &[]);
    let client = server.connect().await;
    assert_eq!(
        sorted(rows(&client, "SELECT * FROM q").await),
        sorted(rows(&client, "SELECT id, 10 / x FROM t").await),
        "rebuilt view differs from the oracle"
    );
    assert_eq!(rows(&client, "SELECT * FROM total").await, vec![vec!["17".to_string()]]);
    client.batch_execute("INSERT INTO t VALUES (5, 10)").await.expect("insert after rebuild");
    assert_eq!(rows(&client, "SELECT * FROM total").await, vec![vec!["18".to_string()]]);
}

/// Operator state is keyed by group, not by worker: a restart with another
/// number of workers routes groups differently, and every worker finds the
/// groups it now owns in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_another_worker_count_keeps_views_right() {
    let seed = seed();
    let data = TempDir::new("rescale");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5ca1e);
    let mut next_id = 100;
    let mut server = TestServer::start_in(&data.0, &["--workers", "1"]);
    {
        let client = server.connect().await;
        create_schema(&client).await;
        random_writes(&client, &mut rng, &mut next_id, 40).await;
    }
    for (round, workers) in ["3", "2"].into_iter().enumerate() {
        server.kill9();
        server = TestServer::start_in(&data.0, &["--workers", workers]);
        let client = server.connect().await;
        check_views(&client, seed, round).await;
        random_writes(&client, &mut rng, &mut next_id, 40).await;
        check_views(&client, seed, round).await;
    }
}

/// Counts the keys under `prefix` in a stopped server's store (opened
/// read-only: the test looks, the server's files stay as they were).
fn stored_keys(data_dir: &std::path::Path, prefix: &[u8]) -> usize {
    let db = rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), data_dir.join("state"), false)
        .expect("open the stopped server's store");
    db.prefix_iterator(prefix).map(|item| item.expect("read")).take_while(|(key, _)| key.starts_with(prefix)).count()
}

/// Between checkpoints, commits log their table changes instead of writing
/// operator state: a kill then leaves a log, which the restart feeds
/// through the views (from the last checkpoint's state) and clears with a
/// checkpoint. When writes pause, the background checkpoint clears the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_logged_since_the_last_checkpoint_are_replayed_at_restart() {
    let seed = seed();
    let data = TempDir::new("epoch-log");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x10c);
    let mut next_id = 100;
    // No checkpoint by time: only the views' creation checkpoints.
    let never = ["--checkpoint-interval-ms", "3600000"];
    let mut server = TestServer::start_in(&data.0, &never);
    {
        let client = server.connect().await;
        create_schema(&client).await;
        random_writes(&client, &mut rng, &mut next_id, 60).await;
        check_views(&client, seed, 0).await;
    }
    server.kill9();
    let logged = stored_keys(&data.0, b"l");
    assert!(logged >= 30, "expected most of the 60 statements in the epoch log, found {logged} entries");

    let mut server = TestServer::start_in(&data.0, &["--checkpoint-interval-ms", "200"]);
    {
        let client = server.connect().await;
        check_views(&client, seed, 1).await;
        // The replayed state is the operators' real state: later changes
        // (which reach groups changed only in replayed epochs) stay right.
        random_writes(&client, &mut rng, &mut next_id, 40).await;
        check_views(&client, seed, 1).await;
        // Writes pause: the background checkpoint runs within the interval.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    server.kill9();
    assert_eq!(stored_keys(&data.0, b"l"), 0, "the log outlived a pause in writes");
    assert!(stored_keys(&data.0, b"s") > 0, "no operator state was checkpointed");

    let server = TestServer::start_in(&data.0, &never);
    let client = server.connect().await;
    check_views(&client, seed, 2).await;
}

/// A tmpfs of a fixed size, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` when this process may not mount (not root).
    fn mount(dir: &std::path::Path, megabytes: u32) -> Option<Self> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Self(dir.to_path_buf()))
    }
    fn grow(&self, megabytes: u32) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.0)
            .status()
            .expect("remount");
        assert!(status.success(), "remount failed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk fails the write that hit it with 53100 and a message naming
/// the cause; reads go on; nothing acknowledged is lost; after a restart
/// with space the server takes writes again and the view is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_writes_clearly_and_loses_nothing() {
    let dir = TempDir::new("full-disk");
    let is_root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let Some(disk) = SmallDisk::mount(&dir.0, 24) else {
        // Mounting needs root; CI runs as root, so there this must work.
        assert!(!is_root, "root could not mount a tmpfs for the full-disk test");
        eprintln!("full-disk test skipped: mounting a small filesystem needs root");
        return;
    };
    let data = dir.0.join("d");
    let args = ["--memory-budget-mb", "16"];
    let mut server = TestServer::start_in(&data, &args);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, s TEXT);
             CREATE MATERIALIZED VIEW c AS SELECT count(*) AS n, sum(length(s)) AS bytes FROM t;",
        )
        .await
        .expect("setup");
    let mut acknowledged = 0i64;
    let mut failure = None;
    for chunk in 0..100i64 {
        let (first, last) = (chunk * 20_000 + 1, chunk * 20_000 + 20_000);
        let insert =
            format!("INSERT INTO t SELECT value AS id, repeat('x', 100) AS s FROM generate_series({first}, {last})");
        match client.batch_execute(&insert).await {
            Ok(()) => acknowledged += 20_000,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let failure = failure.expect("a 24 MiB disk filled up");
    let db = failure.as_db_error().expect("a server error");
    // The write that meets the full disk is this INSERT's (53100), or a
    // background checkpoint's a moment earlier, which turned the server
    // read-only (25006); either way the error names the full disk.
    assert!(["53100", "25006"].contains(&db.code().code()), "{}: {}", db.code().code(), db.message());
    assert!(db.message().contains("No space left on device"), "{}", db.message());
    assert!(acknowledged > 0, "some inserts fit before the disk filled");
    // Reads go on, and see exactly the acknowledged rows.
    assert_eq!(rows(&client, "SELECT count(*) FROM t").await, vec![vec![acknowledged.to_string()]]);
    drop(client);
    server.kill9();

    disk.grow(128);
    let server = TestServer::start_in(&data, &args);
    let client = server.connect().await;
    assert_eq!(rows(&client, "SELECT count(*) FROM t").await, vec![vec![acknowledged.to_string()]]);
    client.batch_execute("INSERT INTO t VALUES (-1, 'after')").await.expect("writes work again with space");
    assert_eq!(
        rows(&client, "SELECT * FROM c").await,
        rows(&client, "SELECT count(*), sum(length(s)) FROM t").await,
        "view differs from the oracle after the full disk"
    );
}
