//! Window table functions (TUMBLE, HOP): materialized views grouped by
//! window stay equal to the same query run as a batch, under random
//! out-of-order inserts, updates and deletes; bad arguments get clear
//! errors.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::oracle::sorted;
use crate::server::{TestServer, error_code, rows};

const VIEWS: &[(&str, &str)] = &[
    (
        "per_auction_10s",
        "SELECT auction, window_start, window_end, count(*) AS n, max(price) AS top, sum(price) AS total \
         FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end",
    ),
    (
        "offset_10s",
        "SELECT window_start, count(*) AS n FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND, INTERVAL '3' SECOND) \
         GROUP BY window_start",
    ),
    (
        "hop_2s_10s",
        "SELECT window_start, window_end, count(*) AS n, min(price) AS low \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, window_end",
    ),
    (
        "hop_joined",
        "SELECT h.window_start, a.category, count(*) AS n \
         FROM HOP(bid, date_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) h JOIN auction a ON h.auction = a.id \
         GROUP BY h.window_start, a.category",
    ),
];

async fn check(client: &tokio_postgres::Client, seed: u64, step: usize) {
    for (name, query) in VIEWS {
        let view = sorted(rows(client, &format!("SELECT * FROM {name}")).await);
        let batch = sorted(rows(client, query).await);
        assert_eq!(view, batch, "seed {seed}, step {step}: view {name} differs from the batch query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_views_equal_the_batch_query_under_out_of_order_changes() {
    let seed = std::env::var("FRESHET_WINDOW_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE bid (id BIGINT PRIMARY KEY, auction BIGINT, price BIGINT, date_time TIMESTAMP);
             CREATE TABLE auction (id BIGINT PRIMARY KEY, category INT);
             INSERT INTO auction VALUES (1, 10), (2, 10), (3, 20), (4, 30);
             INSERT INTO bid VALUES (1, 1, 100, '2024-01-01 00:00:01'), (2, 2, 50, '2024-01-01 00:00:11');",
        )
        .await
        .expect("setup");
    for (name, query) in VIEWS {
        client.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}")).await.expect("view");
    }
    check(&client, seed, 0).await;
    let mut next_id = 3;
    for step in 1..=40 {
        let statement = match rng.random_range(0..10) {
            // Bids up to a minute apart, in no particular order.
            0..=5 => {
                let values: Vec<String> = (0..rng.random_range(1..20))
                    .map(|_| {
                        next_id += 1;
                        format!(
                            "({next_id}, {}, {}, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL '{}' MILLISECOND)",
                            rng.random_range(1..6),
                            rng.random_range(1..500),
                            rng.random_range(0..60_000)
                        )
                    })
                    .collect();
                format!("INSERT INTO bid VALUES {}", values.join(", "))
            }
            6 | 7 => format!(
                "UPDATE bid SET date_time = date_time + INTERVAL '{}' SECOND WHERE id % 7 = {}",
                rng.random_range(1..9),
                rng.random_range(0..7)
            ),
            8 => format!("DELETE FROM bid WHERE id % 5 = {}", rng.random_range(0..5)),
            _ => format!(
                "UPDATE auction SET category = {} WHERE id = {}",
                rng.random_range(1..4) * 10,
                rng.random_range(1..5)
            ),
        };
        client.batch_execute(&statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
        check(&client, seed, step).await;
    }
    // A hopping window counts each bid size / slide times.
    let bids: i64 = rows(&client, "SELECT count(*) FROM bid").await[0][0].parse().expect("count");
    let hopped: i64 = rows(&client, "SELECT sum(n) FROM hop_2s_10s").await[0][0].parse().expect("sum");
    assert_eq!(hopped, bids * 5);
    // Every row lies in its windows, which are aligned to the size (plus
    // the offset).
    let total: i64 = rows(&client, "SELECT sum(n) FROM per_auction_10s").await[0][0].parse().expect("sum");
    assert_eq!(total, bids);
    for query in [
        "SELECT count(*) FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND, INTERVAL '3' SECOND) \
         WHERE NOT (window_start <= date_time AND date_time < window_end \
         AND CAST(date_part('second', window_start) AS BIGINT) % 10 = 3)",
        "SELECT count(*) FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
         WHERE NOT (window_start <= date_time AND date_time < window_end \
         AND window_end - window_start = INTERVAL '10' SECOND)",
    ] {
        assert_eq!(rows(&client, query).await, vec![vec!["0".to_string()]], "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_functions_reject_bad_arguments_clearly() {
    let server = TestServer::start();
    let client = server.connect().await;
    client.batch_execute("CREATE TABLE bid (price BIGINT, date_time TIMESTAMP)").await.expect("setup");
    for (query, code) in [
        ("SELECT * FROM TUMBLE(nowhere, date_time, INTERVAL '1' SECOND)", "42P01"),
        ("SELECT * FROM TUMBLE(bid, nope, INTERVAL '1' SECOND)", "42703"),
        ("SELECT * FROM TUMBLE(bid, price, INTERVAL '1' SECOND)", "42804"),
        ("SELECT * FROM TUMBLE(bid, date_time)", "42883"),
        ("SELECT * FROM TUMBLE(bid, date_time, INTERVAL '1' MONTH)", "22023"),
        ("SELECT * FROM TUMBLE(bid, date_time, 10)", "22023"),
        ("SELECT * FROM HOP(bid, date_time, INTERVAL '3' SECOND, INTERVAL '10' SECOND)", "22023"),
        ("SELECT * FROM HOP(bid, date_time, INTERVAL '0' SECOND, INTERVAL '10' SECOND)", "22023"),
    ] {
        assert_eq!(error_code(&client, query).await, code, "{query}");
    }
    assert_eq!(rows(&client, "SELECT count(*) FROM bid").await, vec![vec!["0".to_string()]]);
}
