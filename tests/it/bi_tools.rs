//! The catalog queries of Grafana, Metabase, DBeaver and pgAdmin 4, copied
//! from their sources into tests/bi/queries.sql, run against a catalog with
//! a table, a materialized view and comments: each must succeed and return
//! what its tool looks for, over the simple protocol and (as the JDBC tools
//! send them) the extended one. Queries not answered yet are kept, with
//! the reason, in tests/bi/unsupported.sql.

use crate::server::{TestServer, describe, repo_root, rows};

struct BiQuery {
    name: String,
    expect: Vec<String>,
    sql: String,
}

fn queries() -> Vec<BiQuery> {
    let text = std::fs::read_to_string(repo_root().join("tests/bi/queries.sql")).expect("read tests/bi/queries.sql");
    let mut queries: Vec<BiQuery> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- query: ") {
            queries.push(BiQuery { name: name.to_string(), expect: Vec::new(), sql: String::new() });
        } else if let Some(query) = queries.last_mut() {
            match line.strip_prefix("-- expect: ") {
                Some(expect) if query.sql.is_empty() => query.expect.push(expect.to_string()),
                _ => {
                    query.sql.push_str(line);
                    query.sql.push('\n');
                }
            }
        }
    }
    queries
}

/// What is wrong with `result` for `query`, if anything.
fn check(query: &BiQuery, result: &[Vec<String>]) -> Option<String> {
    for expect in &query.expect {
        let ok = match expect.strip_prefix("rows ") {
            Some(count) => count.parse::<usize>().is_ok_and(|n| n == result.len()),
            None => expect == "ok" || result.iter().flatten().any(|cell| cell == expect),
        };
        if !ok {
            return Some(format!("expected {expect:?} in {result:?}"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_tool_catalog_queries_run_and_find_the_objects() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, status TEXT, amount NUMERIC(12,2),
                                  created_at TIMESTAMP);
             INSERT INTO orders VALUES (1, 'ann', 'shipped', 12.50, '2024-05-01 01:00:00'),
                                       (2, 'bob', 'open', 3.00, '2024-05-01 02:00:00');
             CREATE MATERIALIZED VIEW order_totals AS SELECT customer, count(*) AS n, sum(amount) AS total
               FROM orders GROUP BY customer;
             COMMENT ON TABLE orders IS 'every order';",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let oid = rows(&client, "SELECT oid FROM pg_class WHERE relname = 'orders'").await[0][0].clone();
    let mut failures = Vec::new();
    let all = queries();
    assert!(all.len() >= 34, "{} queries read", all.len());
    for query in &all {
        let sql = query.sql.replace("{orders_oid}", &oid);
        match crate::server::try_rows(&client, &sql).await {
            Ok(result) => {
                if let Some(problem) = check(query, &result) {
                    failures.push(format!("{} (simple): {problem}", query.name));
                }
            }
            Err(error) => failures.push(format!("{} (simple): {}", query.name, describe(&error))),
        }
        // Single SELECTs also as prepared statements, as pgjdbc sends them.
        let single = sql.trim().trim_end_matches(';');
        let head = single.trim_start().to_ascii_lowercase();
        if !single.contains(';') && (head.starts_with("select") || head.starts_with("with")) {
            if let Err(error) = client.query(single, &[]).await {
                failures.push(format!("{} (extended): {}", query.name, describe(&error)));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} BI queries failed:\n{}", failures.len(), all.len(), failures.join("\n"));
}
