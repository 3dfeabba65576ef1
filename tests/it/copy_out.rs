//! COPY table | view | (query) TO STDOUT from psql, in text and CSV, checked
//! against what SELECT returns for the same rows.

use std::process::Command;

use crate::server::{TestServer, describe, rows};

fn psql_copy(server: &TestServer, command: &str) -> String {
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "freshet", "-d", "freshet", "-X"])
        .args(["-v", "ON_ERROR_STOP=1", "-c", command])
        .output()
        .expect("psql must be installed (make test installs postgresql-client)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql -c '{command}' failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_in_text_and_csv() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, price NUMERIC(8,2), seen TIMESTAMP);
             INSERT INTO items VALUES
               (1, 'plain', 1.50, '2026-01-02 03:04:05'),
               (2, 'tab\there, comma', NULL, NULL),
               (3, 'quote \" and back\\slash', 10.00, '2026-12-31 23:59:59'),
               (4, '', 0.00, NULL);
             CREATE MATERIALIZED VIEW priced AS SELECT count(*) AS n, sum(price) AS total FROM items WHERE price IS NOT NULL;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    // The text format: tab-separated, \N for NULL, backslash escapes;
    // a table's rows in key order as SELECT gives them.
    let expected: Vec<String> = rows(&client, "SELECT id, name, price, seen FROM items ORDER BY id")
        .await
        .into_iter()
        .map(|row| {
            row.iter()
                .map(|v| if v == "NULL" { "\\N".to_string() } else { v.replace('\\', "\\\\").replace('\t', "\\t") })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect();
    let text = psql_copy(&server, "COPY (SELECT id, name, price, seen FROM items ORDER BY id) TO STDOUT");
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    assert!(text.lines().next().is_some_and(|l| l == "1\tplain\t1.50\t2026-01-02 03:04:05"), "{text}");

    let mut table = psql_copy(&server, "COPY items TO STDOUT").lines().map(str::to_string).collect::<Vec<_>>();
    table.sort();
    assert_eq!(table, expected, "COPY table gives the same rows");

    // CSV with a header: quoted where a value needs it, NULL empty, the
    // empty string quoted.
    let csv =
        psql_copy(&server, "COPY (SELECT id, name, price FROM items ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)");
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        vec![
            "id,name,price",
            "1,plain,1.50",
            "2,\"tab\there, comma\",",
            "3,\"quote \"\" and back\\slash\",10.00",
            "4,\"\",0.00"
        ]
    );
    // The legacy spelling psql users type, on a view, and a column list.
    let view = psql_copy(&server, "COPY priced TO STDOUT CSV HEADER");
    assert_eq!(view.lines().collect::<Vec<_>>(), vec!["n,total", "3,11.50"]);
    let columns = psql_copy(&server, "COPY items (name) TO STDOUT");
    assert_eq!(columns.lines().count(), 4);

    // Errors leave the session usable.
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "freshet", "-d", "freshet", "-X"])
        .args(["-c", "COPY nosuch TO STDOUT", "-c", "SELECT 'still here'"])
        .output()
        .expect("psql");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nosuch"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("still here"));
}
