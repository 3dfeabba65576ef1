//! EXPLAIN CREATE MATERIALIZED VIEW shows the stream plan (operators, the
//! state they keep, partitioning over workers) without creating the view;
//! EXPLAIN SELECT shows DataFusion's batch plan.

use crate::server::{TestServer, describe, error_code, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_stream_plan_of_a_view() {
    let server = TestServer::start_with(&["--workers", "2"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT);
             CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount BIGINT);",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let plan: Vec<String> = rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW spend AS
           SELECT c.name, count(*) AS n, sum(o.amount) AS total
           FROM orders o JOIN customers c ON o.customer = c.id WHERE o.amount > 0 GROUP BY c.name",
    )
    .await
    .into_iter()
    .map(|r| r.join(""))
    .collect();
    let text = plan.join("\n");
    assert!(plan[0].starts_with("Materialized view spend (2 workers; reads customers, orders)"), "{text}");
    // Operators in order, each below the one it feeds.
    let position =
        |needle: &str| plan.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {text}"));
    let aggregate = position("Aggregate [state #");
    let join = position("Join [state #");
    let filter =
        plan.iter().position(|l| l.trim_start().starts_with("Filter")).unwrap_or_else(|| panic!("Filter: {text}"));
    assert!(aggregate < join && join < filter, "{text}");
    assert!(plan[aggregate].contains("exchange by key, 2 workers") && plan[aggregate].contains("groupBy"), "{text}");
    assert!(plan[join].contains("exchange by key, 2 workers"), "{text}");
    assert_eq!(plan.iter().filter(|l| l.trim_start().starts_with("Scan")).count(), 2, "{text}");
    let indent = |l: &str| l.len() - l.trim_start().len();
    assert!(indent(&plan[join]) > indent(&plan[aggregate]), "{text}");
    // How the aggregate keeps its groups: count and sum retract.
    assert!(plan[aggregate].contains("groups as retracting accumulators"), "{text}");
    // max over a table (rows come and go) keeps each group's rows; over a
    // source, which only appends, one value per group.
    client
        .batch_execute(
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = 10)",
        )
        .await
        .unwrap_or_else(|e| panic!("source: {}", describe(&e)));
    for (query, keeps) in [
        ("SELECT customer, max(amount) AS top FROM orders GROUP BY customer", "groups as their rows"),
        ("SELECT auction, max(price) AS top FROM bid GROUP BY auction", "groups as accumulators, input only inserts"),
    ] {
        let plan = rows(&client, &format!("EXPLAIN CREATE MATERIALIZED VIEW top AS {query}")).await;
        let aggregate = plan.iter().map(|r| r.join("")).find(|l| l.contains("Aggregate [state #"));
        assert!(aggregate.as_ref().is_some_and(|l| l.contains(keeps)), "{query}: {aggregate:?}");
    }
    // Nothing was created.
    assert_eq!(error_code(&client, "SELECT * FROM spend").await, "42P01");
    // What CREATE would refuse, EXPLAIN refuses the same way.
    assert_eq!(
        error_code(&client, "EXPLAIN CREATE MATERIALIZED VIEW bad AS SELECT random() FROM orders").await,
        "0A000"
    );
    // EXPLAIN of a query is the batch plan.
    let batch: Vec<String> =
        rows(&client, "EXPLAIN SELECT count(*) FROM orders").await.into_iter().map(|r| r.join("|")).collect();
    assert!(batch.iter().any(|l| l.starts_with("logical_plan")), "{batch:?}");
    assert!(batch.iter().any(|l| l.starts_with("physical_plan")), "{batch:?}");
}
