//! The Nexmark queries of `sql/nexmark/` as materialized views over tables
//! loaded from the reference generator: each view equals the same query run
//! as a batch by DataFusion, after a backfill, after more events arrive,
//! and after some bids are deleted.

use crate::oracle::sorted;
use crate::server::{TestServer, describe, rows};

/// Events per load (of all three streams, 1 : 3 : 46).
const EVENTS: i64 = 10_000;
/// Event-time rate: two loads span 200 s, so 10 s windows are many.
const EVENTS_PER_SECOND: i64 = 100;

fn queries() -> Vec<(String, String)> {
    let dir = crate::server::repo_root().join("sql/nexmark");
    let mut queries: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("sql/nexmark")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_string();
            (name.starts_with('q') && path.extension()? == "sql").then_some((name, path))
        })
        .map(|(name, path)| {
            let text = std::fs::read_to_string(&path).expect("query file");
            let query: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("--")).collect();
            (name, query.join("\n"))
        })
        .collect();
    queries.sort();
    queries
}

async fn load(client: &tokio_postgres::Client, first: i64) {
    for stream in ["person", "auction", "bid"] {
        client
            .batch_execute(&format!(
                "INSERT INTO {stream} SELECT * FROM nexmark('{stream}', {EVENTS}, {first}, {EVENTS_PER_SECOND})"
            ))
            .await
            .unwrap_or_else(|e| panic!("loading {stream}: {}", describe(&e)));
    }
}

async fn check(client: &tokio_postgres::Client, queries: &[(String, String)], when: &str) {
    for (name, query) in queries {
        let view = sorted(rows(client, &format!("SELECT * FROM {name}")).await);
        let batch = sorted(rows(client, query).await);
        assert_eq!(view.len(), batch.len(), "{when}: {name} has {} rows, the batch query {}", view.len(), batch.len());
        assert!(view == batch, "{when}: view {name} differs from the batch query");
        if std::env::var("FRESHET_NEXMARK_VERBOSE").is_ok() {
            eprintln!("{when}: {name}: {} rows", view.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_views_equal_the_batch_queries() {
    let server = TestServer::start();
    let client = server.connect().await;
    let tables =
        std::fs::read_to_string(crate::server::repo_root().join("sql/nexmark/tables.sql")).expect("tables.sql");
    client.batch_execute(&tables).await.expect("tables");
    load(&client, 0).await;
    let queries = queries();
    assert!(queries.len() >= 10, "only {} queries found", queries.len());
    for (name, query) in &queries {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {}", describe(&e)));
    }
    check(&client, &queries, "after the backfill").await;
    load(&client, EVENTS).await;
    check(&client, &queries, "after more events").await;
    client.batch_execute("DELETE FROM bid WHERE bidder % 3 = 0").await.expect("delete");
    check(&client, &queries, "after deleting bids").await;
    // The generator's proportions: 1 person, 3 auctions, 46 bids per 50 events.
    let counts = rows(&client, "SELECT (SELECT count(*) FROM person) AS p, (SELECT count(*) FROM auction) AS a").await;
    assert_eq!(counts, vec![vec![(2 * EVENTS / 50).to_string(), (2 * EVENTS * 3 / 50).to_string()]]);
}
