//! Transaction blocks: writes inside BEGIN … COMMIT reach tables and views
//! together at COMMIT (or never), reads inside a block see one epoch plus
//! the block's own writes, the first of two conflicting committers wins,
//! and the failed-block rules are Postgres's.

use std::time::{Duration, Instant};

use crate::server::{TestServer, describe, error_code, rows, try_rows};

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    rows(client, sql).await[0][0].parse().unwrap_or_else(|_| panic!("not a number from {sql}"))
}

/// The SQLSTATE of a failed query, or "ok".
async fn outcome(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => "ok".to_string(),
        Err(e) => e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_else(|| e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_writes_at_commit_reads_one_epoch_and_rolls_back_whole() {
    let server = TestServer::start();
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute(
        "CREATE TABLE acct (id INT PRIMARY KEY, bal INT NOT NULL);
         CREATE TABLE log (msg TEXT);
         INSERT INTO acct VALUES (1, 100), (2, 100), (3, 100);
         CREATE MATERIALIZED VIEW total AS SELECT sum(bal) AS s, count(*) AS n FROM acct;",
    )
    .await
    .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    // Inside the block: its own writes are visible to it, to no one else.
    rows(&a, "BEGIN").await;
    rows(&a, "INSERT INTO acct VALUES (4, 50), (5, 50)").await;
    rows(&a, "UPDATE acct SET bal = bal - 10 WHERE id = 1").await;
    rows(&a, "DELETE FROM acct WHERE id = 2").await;
    rows(&a, "INSERT INTO log VALUES ('moved'), ('moved')").await;
    assert_eq!(
        rows(&a, "SELECT id, bal FROM acct ORDER BY id").await,
        [["1", "90"], ["3", "100"], ["4", "50"], ["5", "50"]].map(|r| r.map(String::from).to_vec()).to_vec()
    );
    // Keys are checked against the block's own writes too.
    assert_eq!(error_code(&a, "INSERT INTO acct VALUES (4, 1)").await, "23505");
    assert_eq!(error_code(&a, "SELECT 1").await, "25P02", "a failed block refuses statements");
    rows(&a, "ROLLBACK").await;
    assert_eq!(count(&b, "SELECT count(*) FROM acct").await, 3);
    assert_eq!(count(&a, "SELECT count(*) FROM log").await, 0, "ROLLBACK kept nothing");

    rows(&a, "BEGIN").await;
    rows(&a, "INSERT INTO acct VALUES (4, 50), (5, 50)").await;
    rows(&a, "UPDATE acct SET bal = bal - 10 WHERE id = 1").await;
    rows(&a, "DELETE FROM acct WHERE id = 2").await;
    rows(&a, "INSERT INTO log VALUES ('moved')").await;
    assert_eq!(count(&a, "SELECT count(*) FROM acct").await, 4);
    assert_eq!(count(&b, "SELECT count(*) FROM acct").await, 3, "uncommitted rows leaked");
    assert_eq!(rows(&b, "SELECT s, n FROM total").await, vec![vec!["300".to_string(), "3".to_string()]]);
    rows(&a, "COMMIT").await;
    assert_eq!(
        rows(&b, "SELECT id, bal FROM acct ORDER BY id").await,
        [["1", "90"], ["3", "100"], ["4", "50"], ["5", "50"]].map(|r| r.map(String::from).to_vec()).to_vec()
    );
    assert_eq!(rows(&b, "SELECT s, n FROM total").await, vec![vec!["290".to_string(), "4".to_string()]]);
    assert_eq!(count(&b, "SELECT count(*) FROM log").await, 1);

    // COMMIT after an error in the block rolls it back.
    rows(&a, "BEGIN").await;
    rows(&a, "INSERT INTO log VALUES ('lost')").await;
    assert_eq!(error_code(&a, "INSERT INTO acct VALUES (1, 1)").await, "23505");
    let ended = a.simple_query("COMMIT").await.unwrap_or_else(|e| panic!("commit: {}", describe(&e)));
    let tag = ended.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(_) => Some(()),
        _ => None,
    });
    assert!(tag.is_some());
    assert_eq!(count(&a, "SELECT count(*) FROM log WHERE msg = 'lost'").await, 0);

    // Reads inside a block see one epoch.
    rows(&a, "BEGIN").await;
    let before = count(&a, "SELECT count(*) FROM log").await;
    rows(&b, "INSERT INTO log VALUES ('from b')").await;
    assert_eq!(count(&a, "SELECT count(*) FROM log").await, before, "a block saw another session's commit");
    assert_eq!(rows(&a, "SELECT n FROM total").await, vec![vec!["4".to_string()]]);
    rows(&a, "COMMIT").await;
    assert_eq!(count(&a, "SELECT count(*) FROM log").await, before + 1);

    // Several statements in one query: the block opens and commits in it.
    rows(&a, "BEGIN; INSERT INTO log VALUES ('one'); INSERT INTO log VALUES ('two'); COMMIT").await;
    assert_eq!(count(&b, "SELECT count(*) FROM log WHERE msg IN ('one', 'two')").await, 2);

    // Savepoints.
    rows(&a, "BEGIN").await;
    rows(&a, "INSERT INTO log VALUES ('s1')").await;
    rows(&a, "SAVEPOINT sp").await;
    rows(&a, "INSERT INTO log VALUES ('s2')").await;
    rows(&a, "ROLLBACK TO SAVEPOINT sp").await;
    rows(&a, "INSERT INTO log VALUES ('s3')").await;
    rows(&a, "RELEASE SAVEPOINT sp").await;
    assert_eq!(error_code(&a, "ROLLBACK TO SAVEPOINT sp").await, "3B001");
    rows(&a, "ROLLBACK").await;
    rows(&a, "BEGIN; INSERT INTO log VALUES ('s1'); SAVEPOINT sp; INSERT INTO log VALUES ('s2');").await;
    rows(&a, "ROLLBACK TO sp; INSERT INTO log VALUES ('s3'); COMMIT").await;
    assert_eq!(
        rows(&b, "SELECT msg FROM log WHERE msg LIKE 's_' ORDER BY msg").await,
        vec![vec!["s1".to_string()], vec!["s3".to_string()]]
    );
    assert_eq!(error_code(&a, "SAVEPOINT outside").await, "25P01");

    // Read-only blocks refuse writes.
    rows(&a, "BEGIN READ ONLY").await;
    assert_eq!(error_code(&a, "INSERT INTO log VALUES ('ro')").await, "25006");
    rows(&a, "ROLLBACK").await;

    // The extended protocol, with typed parameters, through the driver's
    // own transaction API.
    let mut c = server.connect().await;
    let tx = c.transaction().await.expect("begin");
    for id in 10..20i32 {
        tx.execute("INSERT INTO acct VALUES ($1, $2)", &[&id, &(id * 2)]).await.expect("insert");
    }
    let seen: i64 = tx.query_one("SELECT count(*) FROM acct WHERE id >= $1", &[&10i32]).await.expect("read").get(0);
    assert_eq!(seen, 10);
    assert_eq!(count(&b, "SELECT count(*) FROM acct WHERE id >= 10").await, 0);
    tx.commit().await.expect("commit");
    assert_eq!(count(&b, "SELECT count(*) FROM acct WHERE id >= 10").await, 10);
    let tx = c.transaction().await.expect("begin");
    tx.execute("DELETE FROM acct WHERE id >= $1", &[&10i32]).await.expect("delete");
    drop(tx); // rolls back
    assert_eq!(count(&b, "SELECT count(*) FROM acct WHERE id >= 10").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_committer_wins_and_a_failed_commit_ends_the_block() {
    let server = TestServer::start();
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute(
        "CREATE TABLE acct (id INT PRIMARY KEY, bal INT);
         CREATE TABLE tally (n INT);
         INSERT INTO acct VALUES (1, 100), (2, 100);
         INSERT INTO tally VALUES (1), (1);",
    )
    .await
    .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    // Both update row 1: the second COMMIT fails, and its block is over.
    rows(&a, "BEGIN").await;
    rows(&b, "BEGIN").await;
    rows(&a, "UPDATE acct SET bal = bal + 1 WHERE id = 1").await;
    rows(&b, "UPDATE acct SET bal = bal + 5 WHERE id = 1").await;
    rows(&b, "UPDATE acct SET bal = bal + 5 WHERE id = 2").await;
    rows(&a, "COMMIT").await;
    assert_eq!(outcome(&b, "COMMIT").await, "40001");
    assert_eq!(outcome(&b, "SELECT 1").await, "ok", "a failed COMMIT leaves the session idle");
    assert_eq!(
        rows(&b, "SELECT bal FROM acct ORDER BY id").await,
        vec![vec!["101".to_string()], vec!["100".to_string()]]
    );

    // Different rows of one table: both commit.
    rows(&a, "BEGIN").await;
    rows(&b, "BEGIN").await;
    rows(&a, "UPDATE acct SET bal = 0 WHERE id = 1").await;
    rows(&b, "UPDATE acct SET bal = 0 WHERE id = 2").await;
    rows(&b, "INSERT INTO acct VALUES (3, 3)").await;
    rows(&a, "COMMIT").await;
    rows(&b, "COMMIT").await;
    assert_eq!(count(&a, "SELECT sum(bal) FROM acct").await, 3);

    // Both insert one key: the second gets a unique violation at COMMIT.
    rows(&a, "BEGIN; INSERT INTO acct VALUES (7, 1)").await;
    rows(&b, "BEGIN; INSERT INTO acct VALUES (7, 2)").await;
    rows(&b, "COMMIT").await;
    assert_eq!(outcome(&a, "COMMIT").await, "23505");
    assert_eq!(rows(&a, "SELECT bal FROM acct WHERE id = 7").await, vec![vec!["2".to_string()]]);

    // Rows without a key: concurrent inserts never conflict, and a delete
    // conflicts only if the copies it removed are gone.
    rows(&a, "BEGIN; INSERT INTO tally VALUES (1); DELETE FROM tally WHERE n = 1").await;
    rows(&b, "INSERT INTO tally VALUES (1)").await;
    rows(&a, "COMMIT").await;
    assert_eq!(count(&b, "SELECT count(*) FROM tally").await, 1, "the block deleted the copies it saw");
    rows(&a, "BEGIN; DELETE FROM tally").await;
    rows(&b, "DELETE FROM tally").await;
    assert_eq!(outcome(&a, "COMMIT").await, "40001");

    // A table dropped under an open block.
    rows(&a, "CREATE TABLE gone (x INT)").await;
    rows(&a, "BEGIN; INSERT INTO gone VALUES (1)").await;
    rows(&b, "DROP TABLE gone").await;
    assert_eq!(outcome(&a, "COMMIT").await, "40001");
}

/// Transfers in blocks of two statements each: a reader never sees money
/// in flight, in the table or in the view, and the view equals the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_in_blocks_are_atomic_for_every_reader() {
    let server = TestServer::start();
    let setup = server.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE acct (id INT PRIMARY KEY, bal INT);
             INSERT INTO acct SELECT CAST(value AS INT), 100 FROM generate_series(1, 10);
             CREATE MATERIALIZED VIEW total AS SELECT sum(bal) AS s FROM acct;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let mut writers = Vec::new();
    for w in 0..4i32 {
        let client = server.connect().await;
        writers.push(tokio::spawn(async move {
            let (mut committed, mut conflicts) = (0, 0);
            for i in 0..30i32 {
                let (from, to) = (1 + (w * 3 + i) % 10, 1 + (w * 7 + i * 3 + 1) % 10);
                if from == to {
                    continue;
                }
                let block = format!(
                    "BEGIN; UPDATE acct SET bal = bal - 7 WHERE id = {from}; \
                     UPDATE acct SET bal = bal + 7 WHERE id = {to}; COMMIT"
                );
                match client.simple_query(&block).await {
                    Ok(_) => committed += 1,
                    Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "40001") => conflicts += 1,
                    Err(e) => panic!("transfer: {}", describe(&e)),
                }
            }
            (committed, conflicts)
        }));
    }
    let reader = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reads = 0;
    while writers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
        let sum = try_rows(&reader, "SELECT sum(bal) FROM acct").await.expect("read");
        assert_eq!(sum, vec![vec!["1000".to_string()]], "a reader saw half a transfer");
        let view = try_rows(&reader, "SELECT s FROM total").await.expect("read view");
        assert_eq!(view, vec![vec!["1000".to_string()]], "the view saw half a transfer");
        reads += 1;
    }
    let mut committed = 0;
    for writer in writers {
        let (done, _) = writer.await.expect("writer");
        committed += done;
    }
    assert!(committed > 0 && reads > 0);
    assert_eq!(count(&reader, "SELECT sum(bal) FROM acct").await, 1000);
    assert_eq!(count(&reader, "SELECT s FROM total").await, 1000);
}

/// A join's residual filter only ever sees two rows that were in the
/// view's state together: in one block, the only partner (`y = 0`) leaves
/// and a row arrives that `x / y` would divide by it; the view keeps
/// working, holds nothing, and matches the row once a partner comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_filter_never_pairs_a_row_with_one_that_left_in_the_same_epoch() {
    let server = TestServer::start();
    let a = server.connect().await;
    a.batch_execute(
        "CREATE TABLE l (k INT, x INT);
         CREATE TABLE r (k INT, y INT);
         INSERT INTO r VALUES (1, 0);
         CREATE MATERIALIZED VIEW big AS
           SELECT k, x FROM l WHERE EXISTS (SELECT 1 FROM r WHERE r.k = l.k AND l.x / r.y > 1);",
    )
    .await
    .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    rows(&a, "BEGIN").await;
    rows(&a, "DELETE FROM r WHERE k = 1").await;
    rows(&a, "INSERT INTO l VALUES (1, 5)").await;
    rows(&a, "COMMIT").await;
    assert_eq!(count(&a, "SELECT count(*) FROM big").await, 0);
    rows(&a, "INSERT INTO r VALUES (1, 2)").await;
    assert_eq!(rows(&a, "SELECT k, x FROM big").await, vec![vec!["1".to_string(), "5".to_string()]]);
    assert_eq!(
        rows(&a, "SELECT k, x FROM l WHERE EXISTS (SELECT 1 FROM r WHERE r.k = l.k AND l.x / r.y > 1)").await.len(),
        1
    );
}
