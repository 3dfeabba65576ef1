//! State beyond memory: with a 64 MiB budget, an aggregate and a join over
//! millions of distinct keys stay correct (against the batch oracle, also
//! after deletes and updates that reach evicted state) while the server's
//! resident memory stays near the budget instead of growing with the state.

use crate::oracle::sorted;
use crate::server::TestServer;

const KEYS: i64 = 2_000_000;
const CHUNK: i64 = 25_000;
const BUDGET_MB: u64 = 64;
/// What a server needs besides state: code, DataFusion, one epoch's
/// transient buffers of `CHUNK` rows. Without spilling, the state of this
/// test alone would be well over a gigabyte.
const OVERHEAD_MB: u64 = 192;

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_string()).collect())
            }
            _ => None,
        })
        .collect()
}

async fn assert_views_match_oracle(client: &tokio_postgres::Client, when: &str) {
    let checks = [
        (
            "SELECT count(*), sum(c), sum(s), min(s), max(s) FROM agg",
            "SELECT count(*), sum(c), sum(s), min(s), max(s) FROM (SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k) q",
        ),
        ("SELECT count(*), sum(id), sum(w) FROM j", "SELECT count(*), sum(t.id), sum(b.w) FROM t JOIN b ON t.k = b.k"),
        (
            "SELECT * FROM agg WHERE k IN (1, 777, 1000, 1999999, 2000000)",
            "SELECT k, count(*), sum(v) FROM t WHERE k IN (1, 777, 1000, 1999999, 2000000) GROUP BY k",
        ),
    ];
    for (view, oracle) in checks {
        assert_eq!(
            sorted(rows(client, view).await),
            sorted(rows(client, oracle).await),
            "{when}: `{view}` differs from the batch oracle"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_and_join_over_millions_of_keys_stay_within_the_memory_budget() {
    let budget = BUDGET_MB.to_string();
    let server = TestServer::start_with(&["--memory-budget-mb", &budget, "--sync-commits", "false"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, k BIGINT, v BIGINT);
             CREATE TABLE b (k BIGINT PRIMARY KEY, w BIGINT);
             CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k;
             CREATE MATERIALIZED VIEW j AS SELECT t.id, b.w FROM t JOIN b ON t.k = b.k;",
        )
        .await
        .expect("setup");
    let baseline = server.resident_bytes();
    let limit = baseline + (BUDGET_MB + OVERHEAD_MB) * (1 << 20);
    let mut peak = baseline;
    let mut first = 1;
    while first <= KEYS {
        let last = first + CHUNK - 1;
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT value AS id, value AS k, value * 2 AS v FROM generate_series({first}, {last});
                 INSERT INTO b SELECT value AS k, value % 1000 AS w FROM generate_series({first}, {last});"
            ))
            .await
            .unwrap_or_else(|e| panic!("inserting keys {first}..{last}: {e}"));
        peak = peak.max(server.resident_bytes());
        first = last + 1;
    }
    assert!(
        peak < limit,
        "resident memory reached {} MiB with a {BUDGET_MB} MiB budget (baseline {} MiB)",
        peak >> 20,
        baseline >> 20
    );
    assert_views_match_oracle(&client, "after loading").await;

    // Changes spread over the whole key space hit groups and join keys that
    // were evicted long ago: they must be read back, not taken as new.
    client
        .batch_execute(
            "DELETE FROM t WHERE id % 1000 = 0;
             UPDATE t SET v = v + 1 WHERE id % 777 = 0;
             UPDATE b SET w = w + 5 WHERE k % 333 = 0;
             INSERT INTO t VALUES (3000000, 1999999, 1), (3000001, 777, 1);",
        )
        .await
        .expect("changes");
    peak = peak.max(server.resident_bytes());
    assert!(peak < limit, "resident memory reached {} MiB after changes", peak >> 20);
    assert_views_match_oracle(&client, "after changes").await;
    eprintln!(
        "state budget test: {KEYS} keys, budget {BUDGET_MB} MiB, baseline {} MiB, peak resident {} MiB",
        baseline >> 20,
        peak >> 20
    );
}
