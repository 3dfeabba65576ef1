//! SUBSCRIBE: a client gets the relation's rows, then exactly the changes
//! concurrent DML makes, in epoch order, until it cancels; through a
//! streaming simple query (tokio-postgres), a cursor with FETCH over the
//! extended protocol, and psql's COPY (SUBSCRIBE …) TO STDOUT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::server::{TestServer, describe, error_code, rows};

/// (epoch, op, columns…) of the next `n` streamed rows.
async fn next_rows(
    stream: &mut std::pin::Pin<Box<tokio_postgres::SimpleQueryStream>>,
    n: usize,
) -> Vec<(i64, String, Vec<String>)> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no row within 30 s; have {out:?}"))
            .expect("the subscription ended")
            .unwrap_or_else(|e| panic!("subscription error: {}", describe(&e)));
        if let SimpleQueryMessage::Row(row) = message {
            let epoch: i64 = row.get(0).and_then(|e| e.parse().ok()).expect("epoch");
            let op = row.get(1).expect("op").to_string();
            let values = (2..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_string()).collect();
            out.push((epoch, op, values));
        }
    }
    out
}

fn changes(rows: &[(i64, String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
    let mut changes: Vec<(String, Vec<String>)> = rows.iter().map(|(_, op, v)| (op.clone(), v.clone())).collect();
    changes.sort();
    changes
}

fn row(op: &str, values: &[&str]) -> (String, Vec<String>) {
    (op.to_string(), values.iter().map(|v| v.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_the_snapshot_then_every_change_in_epoch_order() {
    let server = TestServer::start();
    let writer = server.connect().await;
    writer
        .batch_execute(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT);
             INSERT INTO accounts VALUES (1, 100), (2, 200);
             CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(balance) AS s FROM accounts;
             CREATE VIEW plain AS SELECT id FROM accounts;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    // A streaming subscription (simple protocol).
    let subscriber = server.connect().await;
    let mut stream = Box::pin(subscriber.simple_query_raw("SUBSCRIBE TO accounts").await.expect("subscribe"));
    let snapshot = next_rows(&mut stream, 2).await;
    assert_eq!(changes(&snapshot), vec![row("insert", &["1", "100"]), row("insert", &["2", "200"])]);
    let snapshot_epoch = snapshot[0].0;
    assert!(snapshot.iter().all(|r| r.0 == snapshot_epoch), "{snapshot:?}");

    // Concurrent DML, one epoch per statement.
    writer.batch_execute("INSERT INTO accounts VALUES (3, 300)").await.expect("insert");
    writer.batch_execute("UPDATE accounts SET balance = 150 WHERE id = 1").await.expect("update");
    writer.batch_execute("DELETE FROM accounts WHERE id = 2").await.expect("delete");
    let streamed = next_rows(&mut stream, 4).await;
    assert_eq!(
        changes(&streamed),
        vec![
            row("delete", &["1", "100"]),
            row("delete", &["2", "200"]),
            row("insert", &["1", "150"]),
            row("insert", &["3", "300"]),
        ]
    );
    let epochs: Vec<i64> = streamed.iter().map(|r| r.0).collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]) && epochs[0] > snapshot_epoch, "{epochs:?}");
    // The insert, the update and the delete are three epochs, in order.
    assert_eq!(streamed[0], (epochs[0], "insert".to_string(), vec!["3".to_string(), "300".to_string()]));
    assert_eq!(streamed[3], (epochs[3], "delete".to_string(), vec!["2".to_string(), "200".to_string()]));
    assert!(epochs[0] < epochs[1] && epochs[2] < epochs[3], "{epochs:?}");

    // Cancel ends it with 57014, and the connection serves on.
    subscriber.cancel_token().cancel_query(NoTls).await.expect("cancel");
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("the cancel is heard") {
            Some(Ok(_)) => continue,
            Some(Err(error)) => break error,
            None => panic!("the subscription ended without an error"),
        }
    };
    assert_eq!(ended.code().map(|c| c.code()), Some("57014"), "{}", describe(&ended));
    drop(stream);
    assert_eq!(rows(&subscriber, "SELECT count(*) FROM accounts").await, vec![vec!["2".to_string()]]);

    // A cursor over a materialized view, fetched over the extended protocol.
    let reader = server.connect().await;
    reader.batch_execute("DECLARE c CURSOR FOR SUBSCRIBE TO total").await.expect("declare");
    let first = reader.query("FETCH ALL c", &[]).await.unwrap_or_else(|e| panic!("fetch: {}", describe(&e)));
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].get::<_, String>(1), first[0].get::<_, i64>(2), first[0].get::<_, i64>(3)),
        ("insert".to_string(), 2, 450)
    );
    writer.batch_execute("INSERT INTO accounts VALUES (4, 50)").await.expect("insert");
    let next = reader
        .query("FETCH ALL c WITH (timeout = '10s')", &[])
        .await
        .unwrap_or_else(|e| panic!("fetch: {}", describe(&e)));
    let mut got: Vec<(String, i64, i64)> =
        next.iter().map(|r| (r.get::<_, String>(1), r.get::<_, i64>(2), r.get::<_, i64>(3))).collect();
    got.sort();
    assert_eq!(got, vec![("delete".to_string(), 2, 450), ("insert".to_string(), 3, 500)]);
    assert!(reader.query("FETCH ALL c WITH (timeout = '0s')", &[]).await.expect("nothing new").is_empty());
    reader.batch_execute("CLOSE c").await.expect("close");

    // What cannot be subscribed to, and where.
    assert_eq!(error_code(&reader, "SUBSCRIBE TO nothing").await, "42P01");
    assert_eq!(error_code(&reader, "SUBSCRIBE TO plain").await, "42809");
    assert_eq!(error_code(&reader, "FETCH ALL FROM c").await, "34000");
    let extended = reader.query("SUBSCRIBE TO accounts", &[]).await.expect_err("extended SUBSCRIBE");
    assert_eq!(extended.code().map(|c| c.code()), Some("0A000"), "{}", describe(&extended));

    // psql prints changes as they come with COPY (SUBSCRIBE …) TO STDOUT.
    // (stdbuf: psql's stdout is a pipe here, which stdio would buffer
    // until exit; on a terminal psql prints each line as it comes.)
    let mut psql = Command::new("stdbuf")
        .args([
            "-oL",
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "freshet",
            "-d",
            "freshet",
            "-X",
        ])
        .args(["-c", "COPY (SUBSCRIBE TO accounts WITH (snapshot = false)) TO STDOUT"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql");
    let stdout = psql.stdout.take().expect("psql's output");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The subscription starts when psql's query arrives; write until a
    // line shows (each write is one epoch with one new row).
    let mut line = None;
    for id in 100..200 {
        writer.batch_execute(&format!("INSERT INTO accounts VALUES ({id}, 7)")).await.expect("insert");
        if let Ok(text) = lines_rx.recv_timeout(Duration::from_millis(300)) {
            line = Some(text);
            break;
        }
    }
    let _ = psql.kill();
    let _ = psql.wait();
    let line = line.expect("psql printed a change");
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert_eq!((fields[1], fields[3]), ("insert", "7"), "{line}");
}
