//! Faults of the disk under the data dir, for real: a full disk (a small
//! tmpfs of the server's own), a corrupted WAL tail and a deleted state
//! file. The server refuses what it cannot do with a clear error, loses
//! nothing it acknowledged, and never serves wrong data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{TestServer, error_of, rows, tempdir::TempDir, try_rows};

/// Writes zeros to `path` until the disk is full.
fn fill_disk(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler file");
    let chunk = vec![0u8; 1 << 20];
    loop {
        if file.write_all(&chunk).and_then(|()| file.flush()).is_err() {
            break;
        }
    }
    // Whatever is still buffered is dropped with the error.
    let _ = file.sync_all();
}

async fn storage_status(client: &tokio_postgres::Client) -> (bool, Option<String>) {
    let messages = client
        .simple_query("SELECT writable, cause FROM freshet_catalog.storage")
        .await
        .expect("freshet_catalog.storage");
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return (row.get(0) == Some("t"), row.get(1).map(str::to_string));
        }
    }
    panic!("freshet_catalog.storage has no row")
}

/// Whether view `bid_count` has read its (finite) source to the end.
async fn bids_read(client: &tokio_postgres::Client) -> bool {
    rows(client, "SELECT sources_done FROM freshet_catalog.materialized_views WHERE name = 'bid_count'").await
        == vec![vec!["t".to_string()]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_turns_the_server_read_only_until_space_returns() {
    let (server, disk) = TestServer::start_on_small_disk(48 << 20, &["--memory-budget-mb", "32"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, v INT);
             CREATE TABLE log (id INT PRIMARY KEY, s TEXT);
             CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(v) AS s FROM t;
             CREATE MATERIALIZED VIEW log_size AS SELECT count(*) AS n, max(id) AS last FROM log;
             INSERT INTO t VALUES (1, 10), (2, 20);
             INSERT INTO log VALUES (0, 'first');
             CREATE SOURCE bids WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = 30000,
               nexmark.event.rate = 100, nexmark.min.event.gap.in.ns = 300000, nexmark.max.chunk.size = 1000);
             CREATE MATERIALIZED VIEW bid_count AS SELECT count(*) AS n FROM bids;",
        )
        .await
        .expect("schema");

    fill_disk(&server.data_path(&disk.0.join("filler")));
    // RocksDB preallocates its log: the first writes may still fit. Write
    // until one fails, keeping what was acknowledged.
    let (mut acknowledged, mut last_id) = (1i64, 0i64);
    let mut failure = None;
    for batch in 0..200i64 {
        let sql = format!(
            "INSERT INTO log SELECT value, repeat('x', 1000) FROM generate_series({}, {})",
            batch * 1000 + 1,
            batch * 1000 + 1000
        );
        match client.simple_query(&sql).await {
            Ok(_) => {
                acknowledged += 1000;
                last_id = batch * 1000 + 1000;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a write on the full disk failed");
    // A view over a finite source (30,000 events over 9 s of wall-clock
    // time) was still reading it when the write failed.
    assert!(!bids_read(&client).await, "the source was read to its end before the disk filled");
    // The write that hit the full disk reports it; if the source's epoch
    // hit it first, the INSERT is refused as read-only, naming the cause.
    let code = failure.code().map(|c| c.code().to_string());
    let message = failure.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(
        matches!(code.as_deref(), Some("53100") | Some("58030"))
            || (code.as_deref() == Some("25006") && message.contains("No space left")),
        "{failure:?}"
    );

    // Read-only now: writes refused with 25006 naming the cause, reads go on,
    // and so does every other session.
    let (code, message) = error_of(&client, "INSERT INTO t VALUES (3, 30)").await;
    assert_eq!(code, "25006", "{message}");
    assert!(message.contains("read-only") && message.contains("No space left"), "{message}");
    let (code, _) = error_of(&client, "CREATE TABLE more (id INT)").await;
    assert_eq!(code, "25006");
    let other = server.connect().await;
    assert_eq!(rows(&other, "SELECT count(*) FROM log").await, vec![vec![acknowledged.to_string()]]);
    assert_eq!(rows(&other, "SELECT n, s FROM totals").await, vec![vec!["2".to_string(), "30".to_string()]]);
    let (writable, cause) = storage_status(&other).await;
    assert!(!writable);
    assert!(cause.is_some_and(|c| c.contains("No space left")));
    // Said once in the log, not once per refused write.
    let turned = server.log_lines_with("the server is read-only");
    assert_eq!(turned.len(), 1, "{turned:?}");

    // Space comes back: the server takes writes again by itself.
    std::fs::remove_file(server.data_path(&disk.0.join("filler"))).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !storage_status(&other).await.0 {
        assert!(Instant::now() < deadline, "still read-only 60 s after the disk was freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client.batch_execute("INSERT INTO t VALUES (3, 30)").await.expect("a write after recovery");
    assert_eq!(rows(&client, "SELECT n, s FROM totals").await, vec![vec!["3".to_string(), "60".to_string()]]);
    // Nothing acknowledged was lost (read back from the reopened store).
    assert_eq!(rows(&client, "SELECT count(*) FROM log").await, vec![vec![acknowledged.to_string()]]);
    // The view whose operators took in the failed write was rebuilt from
    // its inputs, and follows new writes.
    assert_eq!(
        rows(&client, "SELECT n, last FROM log_size").await,
        vec![vec![acknowledged.to_string(), last_id.to_string()]]
    );
    client.batch_execute("INSERT INTO log VALUES (1000000, 'after')").await.expect("a log write after recovery");
    assert_eq!(
        rows(&client, "SELECT n, last FROM log_size").await,
        vec![vec![(acknowledged + 1).to_string(), "1000000".to_string()]]
    );
    // The view over the source, rebuilt too (its operators took in the
    // failed epoch), reads the source from its start to its end and says so
    // (when the rebuilt view's readers counted on top of the old ones, it
    // never did, and its source kept being polled); the batch oracle agrees.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bids_read(&client).await {
        assert!(Instant::now() < deadline, "the rebuilt view never read its source to the end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows(&client, "SELECT n FROM bid_count").await,
        rows(&client, "SELECT count(*) FROM nexmark('bid', 30000, 0, 100)").await
    );
    client.batch_execute("CREATE TABLE more (id INT); INSERT INTO more VALUES (1)").await.expect("DDL after recovery");
    assert_eq!(rows(&client, "SELECT count(*) FROM more").await, vec![vec!["1".to_string()]]);
}

/// The newest WAL file of a data dir.
fn newest_wal(data: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(data.join("state"))
        .expect("the state dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a WAL file")
}

/// Runs `freshet serve` on `data` to see it refuse to start: its exit
/// status and what it printed.
fn refused_start(data: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start freshet");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("freshet started on a data dir it should refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("freshet's output");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_wal_tail_loses_nothing_acknowledged_and_a_corrupted_middle_is_refused() {
    let data = TempDir::new("wal-tail");
    let mut server = TestServer::start_in(&data.0, &["--checkpoint-interval-ms", "3600000"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, v INT);
             CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(v) AS s FROM t;",
        )
        .await
        .expect("schema");
    for id in 1..=50 {
        client.batch_execute(&format!("INSERT INTO t VALUES ({id}, {id})")).await.expect("insert");
    }
    server.kill9();

    // A torn, garbled last record (a crash mid-append): dropped at start,
    // every acknowledged write before it kept.
    let wal = newest_wal(&data.0);
    let mut file = std::fs::OpenOptions::new().append(true).open(&wal).expect("open the WAL");
    file.write_all(&[0xA5; 37]).expect("garble the tail");
    drop(file);
    let server = TestServer::start_in(&data.0, &[]);
    let client = server.connect().await;
    assert_eq!(rows(&client, "SELECT count(*), sum(v) FROM t").await, vec![vec!["50".to_string(), "1275".to_string()]]);
    assert_eq!(rows(&client, "SELECT n, s FROM totals").await, vec![vec!["50".to_string(), "1275".to_string()]]);
    client.batch_execute("INSERT INTO t VALUES (51, 51)").await.expect("writes go on");
    drop(client);
    drop(server);

    // A corrupted record in the middle of the log: the server refuses to
    // start (it would otherwise drop acknowledged writes), saying why.
    let wal = newest_wal(&data.0);
    let mut bytes = std::fs::read(&wal).expect("read the WAL");
    assert!(bytes.len() > 200, "the WAL holds the writes ({} bytes)", bytes.len());
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xFF;
    }
    std::fs::write(&wal, &bytes).expect("corrupt the WAL");
    let (status, output) = refused_start(&data.0);
    assert!(!status.success(), "{output}");
    assert!(output.contains("cannot open data dir") && output.to_lowercase().contains("corrupt"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_state_file_is_refused_at_start_with_its_name() {
    let data = TempDir::new("deleted-sst");
    // A small memory budget: RocksDB flushes its memtables to files soon.
    let mut server = TestServer::start_in(&data.0, &["--memory-budget-mb", "16"]);
    let client = server.connect().await;
    client.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, s TEXT)").await.expect("schema");
    let state = data.0.join("state");
    let tables = || -> Vec<PathBuf> {
        std::fs::read_dir(&state)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "sst"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut batch = 0;
    while tables().is_empty() {
        assert!(batch < 200, "RocksDB wrote no table file");
        let sql = format!(
            "INSERT INTO t SELECT value, repeat('x', 500) FROM generate_series({}, {})",
            batch * 5000 + 1,
            batch * 5000 + 5000
        );
        client.batch_execute(&sql).await.expect("insert");
        batch += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(try_rows(&client, "SELECT count(*) FROM t").await.is_ok());
    server.kill9();
    let victim = tables().pop().expect("a table file");
    std::fs::remove_file(&victim).expect("delete a table file");
    let (status, output) = refused_start(&data.0);
    assert!(!status.success(), "{output}");
    let name = victim.file_name().and_then(|n| n.to_str()).expect("file name").to_string();
    assert!(output.contains("cannot open data dir") && output.contains(&name), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}
