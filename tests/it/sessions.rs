//! What a session keeps for itself: SQL-level PREPARE / EXECUTE /
//! DEALLOCATE (typed, checked, for queries and writes; DISCARD ALL forgets
//! them) and the search_path unqualified names resolve along.

use crate::server::{TestServer, describe, error_code, rows};

fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter().map(|r| r.iter().map(|v| v.to_string()).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_belong_to_their_session_and_bind_typed_arguments() {
    let server = TestServer::start();
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute(
        "CREATE TABLE acct (id INT PRIMARY KEY, bal INT);
         INSERT INTO acct VALUES (1, 100), (2, 200);
         CREATE MATERIALIZED VIEW total AS SELECT sum(bal) AS s FROM acct;",
    )
    .await
    .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    rows(&a, "PREPARE q(int) AS SELECT id, bal FROM acct WHERE id = $1").await;
    assert_eq!(rows(&a, "EXECUTE q(1)").await, table(&[&["1", "100"]]));
    assert_eq!(rows(&a, "EXECUTE q('2')").await, table(&[&["2", "200"]]), "a text argument is cast");
    assert_eq!(rows(&a, "EXECUTE q(1 + 1)").await, table(&[&["2", "200"]]));
    // Another session has its own names.
    assert_eq!(error_code(&b, "EXECUTE q(1)").await, "26000");
    rows(&b, "PREPARE q AS SELECT 'mine'").await;
    assert_eq!(rows(&b, "EXECUTE q").await, table(&[&["mine"]]));
    assert_eq!(rows(&a, "EXECUTE q(1)").await, table(&[&["1", "100"]]));

    // Writes, with declared and inferred parameter types.
    rows(&a, "PREPARE ins(int, int) AS INSERT INTO acct VALUES ($1, $2)").await;
    rows(&a, "PREPARE up AS UPDATE acct SET bal = bal + $1 WHERE id = $2").await;
    rows(&a, "PREPARE upsert(int, int) AS INSERT INTO acct VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET bal = excluded.bal")
        .await;
    rows(&a, "PREPARE gone(int) AS DELETE FROM acct WHERE id = $1").await;
    rows(&a, "EXECUTE ins(3, 300)").await;
    rows(&a, "EXECUTE up(5, 1)").await;
    rows(&a, "EXECUTE upsert(2, 7)").await;
    rows(&a, "EXECUTE upsert(4, 40)").await;
    rows(&a, "EXECUTE gone(3)").await;
    assert_eq!(
        rows(&b, "SELECT id, bal FROM acct ORDER BY id").await,
        table(&[&["1", "105"], &["2", "7"], &["4", "40"]])
    );
    assert_eq!(rows(&b, "SELECT s FROM total").await, table(&[&["152"]]));
    assert_eq!(error_code(&a, "EXECUTE ins(1, 1)").await, "23505");

    // Inside a block, a prepared write waits for COMMIT like any other.
    rows(&a, "BEGIN").await;
    rows(&a, "EXECUTE ins(9, 9)").await;
    assert_eq!(rows(&b, "SELECT count(*) FROM acct WHERE id = 9").await, table(&[&["0"]]));
    rows(&a, "COMMIT").await;
    assert_eq!(rows(&b, "SELECT count(*) FROM acct WHERE id = 9").await, table(&[&["1"]]));

    // Over the extended protocol too, with typed results.
    let row = a.query_one("EXECUTE q(4)", &[]).await.unwrap_or_else(|e| panic!("extended: {}", describe(&e)));
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (4, 40));

    // Errors: each names the problem.
    assert_eq!(error_code(&a, "PREPARE q AS SELECT 1").await, "42P05");
    assert_eq!(error_code(&a, "EXECUTE q(1, 2)").await, "42601");
    assert_eq!(error_code(&a, "EXECUTE q").await, "42601");
    assert_eq!(error_code(&a, "EXECUTE q('x')").await, "22P02");
    assert_eq!(error_code(&a, "PREPARE bad AS SELECT * FROM nope").await, "42P01");
    assert_eq!(error_code(&a, "PREPARE ddl AS CREATE TABLE t (x INT)").await, "42601");
    assert_eq!(error_code(&a, "DEALLOCATE nope").await, "26000");

    rows(&a, "DEALLOCATE q").await;
    assert_eq!(error_code(&a, "EXECUTE q(1)").await, "26000");
    rows(&a, "DEALLOCATE PREPARE ins").await;
    assert_eq!(error_code(&a, "EXECUTE ins(5, 5)").await, "26000");
    rows(&a, "DEALLOCATE ALL").await;
    assert_eq!(error_code(&a, "EXECUTE up(1, 1)").await, "26000");

    // DISCARD ALL: prepared statements and settings go.
    rows(&a, "PREPARE z AS SELECT 1").await;
    rows(&a, "SET application_name = 'dashboards'").await;
    rows(&a, "DISCARD ALL").await;
    assert_eq!(error_code(&a, "EXECUTE z").await, "26000");
    assert_eq!(rows(&a, "SHOW application_name").await, table(&[&[""]]));
    rows(&a, "BEGIN").await;
    assert_eq!(error_code(&a, "DISCARD ALL").await, "25001");
    rows(&a, "ROLLBACK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unqualified_names_resolve_along_the_session_search_path() {
    let server = TestServer::start();
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute(
        "CREATE SCHEMA analytics;
         CREATE TABLE t (x INT);
         INSERT INTO t VALUES (1);
         CREATE TABLE analytics.t (x INT);
         INSERT INTO analytics.t VALUES (2);
         CREATE TABLE analytics.facts (y INT);
         INSERT INTO analytics.facts VALUES (3);",
    )
    .await
    .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    assert_eq!(rows(&a, "SHOW search_path").await, table(&[&["\"$user\", public"]]));
    rows(&a, "SET search_path TO analytics, public").await;
    assert_eq!(rows(&a, "SHOW search_path").await, table(&[&["analytics, public"]]));
    assert_eq!(rows(&a, "SELECT x FROM t").await, table(&[&["2"]]), "analytics.t comes first");
    assert_eq!(rows(&a, "SELECT y FROM facts").await, table(&[&["3"]]));
    assert_eq!(rows(&a, "WITH t AS (SELECT 7 AS x) SELECT x FROM t").await, table(&[&["7"]]), "a CTE is no table");
    // Writes and new relations go the same way; over the extended protocol too.
    rows(&a, "INSERT INTO t VALUES (20)").await;
    rows(&a, "CREATE TABLE fresh (z INT)").await;
    rows(&a, "CREATE MATERIALIZED VIEW total AS SELECT sum(x) AS s FROM t").await;
    let n: i64 = a.query_one("SELECT count(*) FROM t WHERE x > $1", &[&1i32]).await.expect("extended").get(0);
    assert_eq!(n, 2);
    // Another session still reads public.
    assert_eq!(rows(&b, "SELECT x FROM t").await, table(&[&["1"]]));
    assert_eq!(rows(&b, "SELECT s FROM analytics.total").await, table(&[&["22"]]));
    assert_eq!(rows(&b, "SELECT count(*) FROM analytics.fresh").await, table(&[&["0"]]));
    assert_eq!(error_code(&b, "SELECT * FROM facts").await, "42P01");
    // Back to the default.
    rows(&a, "RESET search_path").await;
    assert_eq!(rows(&a, "SELECT x FROM t").await, table(&[&["1"]]));
    rows(&a, "SET search_path = public, analytics").await;
    assert_eq!(rows(&a, "SELECT x FROM t").await, table(&[&["1"]]));
    assert_eq!(rows(&a, "SELECT y FROM facts").await, table(&[&["3"]]));
}
