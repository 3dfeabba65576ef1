//! Many sessions at once: consistent reads while writers run, and read-your-
//! writes across sessions.

use std::time::{Duration, Instant};

use crate::server::{TestServer, describe, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_readers_see_consistent_epochs() {
    let server = TestServer::start();
    let setup = server.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE acct (id INT PRIMARY KEY, bal INT);
             INSERT INTO acct SELECT CAST(value AS INT), 100 FROM generate_series(1, 20);
             CREATE MATERIALIZED VIEW total AS SELECT sum(bal) AS s, count(*) AS n FROM acct;",
        )
        .await
        .expect("setup");

    let mut writers = Vec::new();
    for w in 0..6i32 {
        let client = server.connect().await;
        writers.push(tokio::spawn(async move {
            for i in 0..40i32 {
                let (a, b) = (1 + (w * 7 + i) % 20, 1 + (w * 3 + i * 5 + 1) % 20);
                if a == b {
                    continue;
                }
                // One statement, one epoch: the sum of balances never changes.
                client
                    .batch_execute(&format!(
                        "UPDATE acct SET bal = CASE WHEN id = {a} THEN bal - 1 ELSE bal + 1 END WHERE id IN ({a}, {b})"
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("transfer: {}", describe(&e)));
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..3 {
        let client = server.connect().await;
        readers.push(tokio::spawn(async move {
            let mut checks = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while checks < 60 && Instant::now() < deadline {
                // The view and the table, read in one statement, are at one epoch.
                let got =
                    rows(&client, "SELECT (SELECT s FROM total), (SELECT sum(bal) FROM acct), (SELECT n FROM total)")
                        .await;
                assert_eq!(got, vec![vec!["2000".to_string(), "2000".to_string(), "20".to_string()]]);
                checks += 1;
            }
        }));
    }
    for task in writers.into_iter().chain(readers) {
        task.await.expect("task");
    }

    // Read-your-writes across sessions: once INSERT returns, any session sees it.
    let other = server.connect().await;
    for id in 100..130 {
        setup.batch_execute(&format!("INSERT INTO acct VALUES ({id}, 1)")).await.expect("insert");
        let n = rows(&other, "SELECT n FROM total").await;
        assert_eq!(n, vec![vec![(id - 100 + 21).to_string()]]);
    }
}
