//! Bad input gets a clear error with the right SQLSTATE, and the server keeps
//! serving (this session and others), with nothing accepted lost.

use std::io::{Read, Write};

use crate::server::{TestServer, error_code, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstates_and_the_server_keeps_serving() {
    let mut server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, v INT, s TEXT);
             INSERT INTO t VALUES (1, 10, 'a'), (2, 0, 'b');",
        )
        .await
        .expect("setup");

    assert_eq!(error_code(&client, "SELEC 1").await, "42601");
    assert_eq!(error_code(&client, "SELECT * FROM nowhere").await, "42P01");
    assert_eq!(error_code(&client, "SELECT nope FROM t").await, "42703");
    assert_eq!(error_code(&client, "CREATE TABLE t (x INT)").await, "42P07");
    assert_eq!(error_code(&client, "INSERT INTO t VALUES (1, 5, 'dup')").await, "23505");
    assert_eq!(error_code(&client, "INSERT INTO t VALUES (NULL, 5, 'x')").await, "23502");
    assert_eq!(error_code(&client, "SELECT 1 / 0").await, "22012");
    assert_eq!(
        error_code(&client, "CREATE MATERIALIZED VIEW w AS SELECT v, count(*) AS n FROM t GROUP BY ROLLUP (v)").await,
        "0A000"
    );
    assert_eq!(error_code(&client, "CREATE MATERIALIZED VIEW w AS SELECT id FROM t LIMIT 1").await, "0A000");
    assert_eq!(error_code(&client, "DROP TABLE nothing_here").await, "42P01");
    assert_eq!(error_code(&client, "INSERT INTO t VALUES ('abc', 1, 'x')").await, "22P02");
    assert_eq!(error_code(&client, "INSERT INTO t VALUES (3000000000, 1, 'x')").await, "22003");
    assert_eq!(error_code(&client, "SELECT 'a' + 1").await, "42883");
    assert_eq!(error_code(&client, "SELECT abs('x')").await, "42883");
    assert_eq!(error_code(&client, "UPDATE t SET nope = 1").await, "42703");
    assert_eq!(error_code(&client, "DROP VIEW t").await, "42809");
    assert_eq!(error_code(&client, "CREATE TABLE dup_cols (a INT, a INT)").await, "42701");
    assert_eq!(error_code(&client, "CREATE MATERIALIZED VIEW m AS SELECT * FROM pg_catalog.pg_class").await, "0A000");

    // Functions a view could not be kept correct over are refused by name
    // (directly, in a subquery, or through a plain view); a SELECT or a
    // plain view may still use them.
    for (query, function) in [
        ("SELECT id, random() AS r FROM t", "random"),
        ("SELECT id FROM t WHERE id IN (SELECT id FROM t WHERE random() < 0.5)", "random"),
        ("SELECT id FROM t WHERE now() > TIMESTAMP '2020-01-01 00:00:00'", "now"),
        ("SELECT id, current_date AS d FROM t", "current_date"),
        ("SELECT * FROM dice", "random"),
    ] {
        if query.contains("dice") {
            client.batch_execute("CREATE VIEW dice AS SELECT id, random() AS r FROM t").await.expect("plain view");
        }
        let error = client
            .simple_query(&format!("CREATE MATERIALIZED VIEW m AS {query}"))
            .await
            .expect_err("a materialized view over a volatile or time function");
        let db = error.as_db_error().unwrap_or_else(|| panic!("{query}: {error}"));
        assert_eq!(db.code().code(), "0A000", "{query}");
        assert!(db.message().contains(&format!("function {function}()")), "{query}: {}", db.message());
    }
    assert_eq!(rows(&client, "SELECT count(*) FROM dice WHERE r >= 0 AND r < 1").await, vec![vec!["2".to_string()]]);
    client.batch_execute("DROP VIEW dice").await.expect("drop dice");

    // Several statements in one message: execution stops at the failing one.
    assert_eq!(
        error_code(
            &client,
            "INSERT INTO t VALUES (50, 1, 'm'); INSERT INTO t VALUES (1, 1, 'dup'); INSERT INTO t VALUES (51, 1, 'n')"
        )
        .await,
        "23505"
    );
    assert_eq!(rows(&client, "SELECT count(*) FROM t WHERE id = 51").await, vec![vec!["0".to_string()]]);
    client.batch_execute("DELETE FROM t WHERE id = 50").await.expect("cleanup");

    // A view that divides by zero on a new row reports it; others keep working.
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW ratio AS SELECT id, 100 / v AS r FROM t WHERE v <> 0;
             CREATE MATERIALIZED VIEW risky AS SELECT id, 100 / v AS r FROM t;
             CREATE MATERIALIZED VIEW total AS SELECT sum(v) AS s FROM t;",
        )
        .await
        .expect_err("risky divides by zero during backfill");
    client.batch_execute("CREATE MATERIALIZED VIEW total AS SELECT sum(v) AS s FROM t").await.expect("total");
    client
        .batch_execute("CREATE MATERIALIZED VIEW risky AS SELECT id, 100 / v AS r FROM t WHERE id > 5")
        .await
        .expect("risky");
    client.batch_execute("INSERT INTO t VALUES (9, 0, 'z')").await.expect("the insert itself is accepted");
    assert_eq!(error_code(&client, "SELECT * FROM risky").await, "22012");
    assert_eq!(rows(&client, "SELECT s FROM total").await, vec![vec!["10".to_string()]]);
    assert_eq!(rows(&client, "SELECT count(*) FROM ratio").await, vec![vec!["1".to_string()]]);

    // Garbage bytes on a socket: that connection fails, the server does not.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("raw connect");
    raw.write_all(b"\x00\x00\x00\x08garbage!garbage!garbage!").expect("write garbage");
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok();
    let mut sink = [0u8; 256];
    let _ = raw.read(&mut sink);
    drop(raw);
    assert!(server.is_alive(), "the server died on garbage input");

    // Other sessions (old and new) still work and nothing was lost.
    let other = server.connect().await;
    assert_eq!(
        rows(&other, "SELECT id FROM t ORDER BY id").await,
        vec![vec!["1".to_string()], vec!["2".to_string()], vec!["9".to_string()]]
    );
    assert_eq!(rows(&client, "SELECT count(*) FROM t").await, vec![vec!["3".to_string()]]);
}
