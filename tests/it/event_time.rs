//! Watermarks and windows that close: views over a table with
//! `WATERMARK FOR` equal the batch query over the rows that were on time,
//! restricted (with EMIT ON WINDOW CLOSE) to the windows the watermark has
//! closed; late rows are counted; state stays flat over a long stream; a
//! kill -9 in the middle changes nothing.
//!
//! The test keeps its own watermark (the largest event time inserted minus
//! the delay) and records, next to every row it inserts, the watermark
//! before the insert. A row's window is late when the watermark had already
//! passed it; the oracle queries drop exactly those.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::oracle::sorted;
use crate::server::{TestServer, rows, tempdir::TempDir};

const DELAY_SECONDS: i64 = 4;
/// Event times start here (2024-01-01 00:00:00 UTC), in milliseconds.
const START_MS: i64 = 1_704_067_200_000;

/// (view name, view query, oracle over `arrivals`) — `{closed_tumble}` and
/// `{closed_hop}` are replaced by the current bounds of closed windows.
const VIEWS: &[(&str, &str, &str)] = &[
    (
        "tumble_eowc",
        "SELECT auction, window_start, window_end, count(*) AS n, max(price) AS top, sum(price) AS total \
         FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE",
        "SELECT auction, window_start, window_end, count(*) AS n, max(price) AS top, sum(price) AS total \
         FROM TUMBLE(arrivals, ts, INTERVAL '10' SECOND) \
         WHERE (wm IS NULL OR window_start >= date_bin(INTERVAL '10' SECOND, wm, TIMESTAMP '1970-01-01')) \
         AND window_start < {closed_tumble} GROUP BY auction, window_start, window_end",
    ),
    (
        "tumble_live",
        "SELECT window_start, count(*) AS n, min(price) AS low FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) \
         GROUP BY window_start",
        "SELECT window_start, count(*) AS n, min(price) AS low FROM TUMBLE(arrivals, ts, INTERVAL '10' SECOND) \
         WHERE (wm IS NULL OR window_start >= date_bin(INTERVAL '10' SECOND, wm, TIMESTAMP '1970-01-01')) \
         GROUP BY window_start",
    ),
    (
        "hop_eowc",
        "SELECT window_start, window_end, count(*) AS n, sum(price) AS total \
         FROM HOP(bid, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY window_start, window_end \
         EMIT ON WINDOW CLOSE",
        "SELECT window_start, window_end, count(*) AS n, sum(price) AS total \
         FROM HOP(arrivals, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) \
         WHERE (wm IS NULL OR window_start >= date_bin(INTERVAL '2' SECOND, wm, TIMESTAMP '1970-01-01') - INTERVAL '4' SECOND) \
         AND window_start < {closed_hop} GROUP BY window_start, window_end",
    ),
    (
        "hottest_eowc",
        "SELECT window_start, max(n) AS most FROM \
         (SELECT auction, window_start, count(*) AS n FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) \
          GROUP BY auction, window_start) per_auction \
         GROUP BY window_start EMIT ON WINDOW CLOSE",
        "SELECT window_start, max(n) AS most FROM \
         (SELECT auction, window_start, count(*) AS n FROM TUMBLE(arrivals, ts, INTERVAL '10' SECOND) \
          WHERE (wm IS NULL OR window_start >= date_bin(INTERVAL '10' SECOND, wm, TIMESTAMP '1970-01-01')) \
          AND window_start < {closed_tumble} GROUP BY auction, window_start) per_auction \
         GROUP BY window_start",
    ),
];

fn timestamp(ms: i64) -> String {
    format!("to_timestamp_millis({ms})::TIMESTAMP")
}

/// Floor of `ms` to a multiple of `step_ms`.
fn bin(ms: i64, step_ms: i64) -> i64 {
    ms.div_euclid(step_ms) * step_ms
}

struct Stream {
    /// Largest event time inserted, ms.
    max_ms: Option<i64>,
    next_id: i64,
}

impl Stream {
    fn watermark_ms(&self) -> Option<i64> {
        self.max_ms.map(|m| m - DELAY_SECONDS * 1000)
    }
}

async fn check(client: &tokio_postgres::Client, stream: &Stream, when: &str) {
    // With no watermark yet, nothing is closed.
    let (closed_tumble, closed_hop) = match stream.watermark_ms() {
        Some(w) => (timestamp(bin(w, 10_000)), timestamp(bin(w, 2_000) - 4_000)),
        None => ("TIMESTAMP '1970-01-01'".to_string(), "TIMESTAMP '1970-01-01'".to_string()),
    };
    for (name, _, oracle) in VIEWS {
        let oracle = oracle.replace("{closed_tumble}", &closed_tumble).replace("{closed_hop}", &closed_hop);
        let view = sorted(rows(client, &format!("SELECT * FROM {name}")).await);
        let batch = sorted(rows(client, &oracle).await);
        assert_eq!(view, batch, "{when}: view {name} differs from the batch query over on-time rows");
    }
    // Late rows: window copies that the oracles drop.
    let late = |size: &str, slide: &str, lag: &str| {
        format!(
            "SELECT count(*) FROM HOP(arrivals, ts, INTERVAL '{slide}' SECOND, INTERVAL '{size}' SECOND) \
             WHERE wm IS NOT NULL AND window_start < date_bin(INTERVAL '{slide}' SECOND, wm, TIMESTAMP '1970-01-01') - INTERVAL '{lag}' SECOND"
        )
    };
    let late_tumble = rows(client, &late("10", "10", "0")).await;
    let late_hop = rows(client, &late("6", "2", "4")).await;
    let counted = sorted(rows(client, "SELECT name, late_rows FROM freshet_catalog.materialized_views").await);
    let expected = sorted(vec![
        vec!["hop_eowc".to_string(), late_hop[0][0].clone()],
        vec!["hottest_eowc".to_string(), late_tumble[0][0].clone()],
        vec!["tumble_eowc".to_string(), late_tumble[0][0].clone()],
        vec!["tumble_live".to_string(), late_tumble[0][0].clone()],
    ]);
    assert_eq!(counted, expected, "{when}: late rows counted");
}

/// Inserts a few rows around the stream's head, some of them late.
async fn insert_some(client: &tokio_postgres::Client, stream: &mut Stream, rng: &mut StdRng, head_ms: i64) {
    let mut bids = Vec::new();
    let mut arrivals = Vec::new();
    let before = stream.watermark_ms();
    for _ in 0..rng.random_range(1..15) {
        stream.next_id += 1;
        let ts = head_ms + rng.random_range(-15_000..3_000);
        let (auction, price) = (rng.random_range(1..5), rng.random_range(1..1000));
        bids.push(format!("({}, {auction}, {price}, {})", stream.next_id, timestamp(ts)));
        let wm = before.map_or("NULL".to_string(), timestamp);
        arrivals.push(format!("({}, {auction}, {price}, {}, {wm})", stream.next_id, timestamp(ts)));
        stream.max_ms = Some(stream.max_ms.map_or(ts, |m| m.max(ts)));
    }
    client.batch_execute(&format!("INSERT INTO bid VALUES {}", bids.join(", "))).await.expect("insert bids");
    client
        .batch_execute(&format!("INSERT INTO arrivals VALUES {}", arrivals.join(", ")))
        .await
        .expect("insert arrivals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_watermarks_equal_the_batch_query_over_on_time_rows_across_a_kill() {
    let seed = std::env::var("FRESHET_EVENT_TIME_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(11u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let data = TempDir::new("event-time");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE bid (id BIGINT PRIMARY KEY, auction BIGINT, price BIGINT, ts TIMESTAMP, \
               WATERMARK FOR ts AS ts - INTERVAL '{DELAY_SECONDS}' SECOND);
             CREATE TABLE arrivals (id BIGINT PRIMARY KEY, auction BIGINT, price BIGINT, ts TIMESTAMP, wm TIMESTAMP);"
        ))
        .await
        .expect("tables");
    let mut stream = Stream { max_ms: None, next_id: 0 };
    // Some rows before the views exist: the backfill sees them all on time.
    insert_some(&client, &mut stream, &mut rng, START_MS + 20_000).await;
    for (name, query, _) in VIEWS {
        client.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}")).await.expect("view");
    }
    // The rows inserted before the views are on time for them.
    client.batch_execute("UPDATE arrivals SET wm = NULL").await.expect("reset");
    check(&client, &stream, "after the backfill").await;
    let mut head = START_MS + 20_000;
    for step in 1..=40 {
        head += rng.random_range(500..4_000);
        insert_some(&client, &mut stream, &mut rng, head).await;
        check(&client, &stream, &format!("seed {seed}, step {step}")).await;
        if step == 20 {
            // Mid-stream, with epochs in the log since the last checkpoint.
            server.kill9();
            server = TestServer::start_in(&data.0, &[]);
            client = server.connect().await;
            check(&client, &stream, &format!("seed {seed}, after the restart")).await;
        }
    }
    let closed: i64 = rows(&client, "SELECT count(*) FROM tumble_eowc").await[0][0].parse().expect("count");
    assert!(closed > 10, "only {closed} windows closed");
    let late: i64 =
        rows(&client, "SELECT late_rows FROM freshet_catalog.materialized_views WHERE name = 'tumble_eowc'").await[0]
            [0]
        .parse()
        .expect("late");
    assert!(late > 10, "only {late} late rows: the test did not exercise lateness");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_state_stays_flat_over_a_long_stream() {
    let server = TestServer::start_with(&["--checkpoint-interval-ms", "0"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE events (id BIGINT, k BIGINT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND);
             CREATE MATERIALIZED VIEW per_key AS SELECT k, window_start, count(*) AS n, sum(v) AS total
               FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY k, window_start EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW busiest AS SELECT window_start, max(v) AS top, count(DISTINCT k) AS keys
               FROM TUMBLE(events, ts, INTERVAL '5' SECOND) GROUP BY window_start;",
        )
        .await
        .expect("setup");
    // Nexmark q5's shape: the keys whose count reaches their window's
    // highest, a semi join of two aggregates on the window.
    client.batch_execute(&format!("CREATE MATERIALIZED VIEW hot AS {HOT}")).await.expect("setup");
    // 1M events, 1 ms of event time apart, 100 keys: 1,000 s of event time in
    // 50 inserts of 20k rows; a 10 s window of 100 keys holds 100 groups.
    const BATCH: i64 = 20_000;
    const BATCHES: i64 = 50;
    let mut peak_keys = 0i64;
    for batch in 0..BATCHES {
        let first = batch * BATCH;
        client
            .batch_execute(&format!(
                "INSERT INTO events SELECT value, value % 100, value % 997, to_timestamp_millis({START_MS} + value)::TIMESTAMP \
                 FROM generate_series({first}, {}) AS g(value)",
                first + BATCH - 1
            ))
            .await
            .expect("insert");
        let keys: Vec<Vec<String>> =
            rows(&client, "SELECT view, sum(stored_keys) FROM freshet_catalog.view_state GROUP BY view ORDER BY view")
                .await;
        for row in &keys {
            let count: i64 = row[1].parse().expect("count");
            peak_keys = peak_keys.max(count);
            // At most two windows are open at a time (the delay is 2 s):
            // per_key holds one group per key and window (2 x 100);
            // busiest, a multiset of its windows' rows for max() and
            // count(DISTINCT) (2 x 5,000) and a group per window. Without
            // closing they would hold 1,000 groups and 1M rows.
            // (Plus one key: the bound the aggregate has closed below.)
            // hot: the counts (2 x 100, plus the bound), the maximum's
            // rows (2 x at most 100, its groups and their bound), the join's
            // sides (2 x 100 counts, 2 maxima); without the join leaving
            // windows behind, its counts would pile up (10,000 at the end).
            let bound = match row[0].as_str() {
                "per_key" => 2 * 100 + 1,
                "hot" => 3 * (2 * 100 + 1) + 2 + 2 + 2,
                _ => 2 * 5_000 + 2 + 1,
            };
            assert!(count <= bound, "{}: {count} stored keys after batch {batch}", row[0]);
        }
    }
    // Every closed window is in the view: 100 s of event time, 10 s windows.
    let windows: i64 =
        rows(&client, "SELECT count(DISTINCT window_start) FROM per_key").await[0][0].parse().expect("n");
    assert!(windows >= 9, "{windows} windows");
    let total: i64 = rows(&client, "SELECT sum(n) FROM per_key").await[0][0].parse().expect("sum");
    let closed_rows: i64 = rows(
        &client,
        &format!(
            "SELECT count(*) FROM events WHERE ts < to_timestamp_millis({})::TIMESTAMP",
            START_MS + windows * 10_000
        ),
    )
    .await[0][0]
        .parse()
        .expect("count");
    assert_eq!(total, closed_rows, "every event of a closed window is counted once");
    assert!(peak_keys > 0);
    // No event was late: hot holds what the same query over the table says.
    let expected = sorted(rows(&client, HOT).await);
    // 1,000 s of event time: 100 windows, in each nearly every key ties at the top.
    assert!(expected.len() > 5_000, "{} rows", expected.len());
    assert_eq!(sorted(rows(&client, "SELECT * FROM hot").await), expected);
}

/// Nexmark q5's shape over `events`: per 10 s window, the keys counted
/// most often.
const HOT: &str = "SELECT c.k, c.n, c.w FROM \
     (SELECT k, window_start AS w, count(*) AS n FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY k, window_start) c \
     JOIN (SELECT max(m.n) AS top, m.w FROM \
       (SELECT k, window_start AS w, count(*) AS n FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY k, window_start) m \
       GROUP BY m.w) t ON c.w = t.w AND c.n >= t.top";

/// The views' rows as (view, id), read in one statement (one epoch).
async fn temporal_rows(client: &tokio_postgres::Client) -> Vec<Vec<String>> {
    sorted(
        rows(
            client,
            "SELECT 'recent', id FROM recent UNION ALL SELECT 'due', id FROM due \
             UNION ALL SELECT 'count', n FROM recent_count",
        )
        .await,
    )
}

fn expect(recent: &[i64], due: &[i64]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = recent.iter().map(|id| vec!["recent".to_string(), id.to_string()]).collect();
    out.extend(due.iter().map(|id| vec!["due".to_string(), id.to_string()]));
    out.push(vec!["count".to_string(), recent.len().to_string()]);
    sorted(out)
}

/// Polls until the views hold `want` (the clock moves them once a second).
async fn wait_for(client: &tokio_postgres::Client, want: &[Vec<String>], what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = temporal_rows(client).await;
        if got == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: still {got:?}, want {want:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_filters_let_rows_leave_and_enter_as_time_passes() {
    let data = TempDir::new("temporal");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE ev (id BIGINT PRIMARY KEY, ts TIMESTAMPTZ);
             CREATE MATERIALIZED VIEW recent AS SELECT id FROM ev WHERE ts > now() - INTERVAL '3' SECOND;
             CREATE MATERIALIZED VIEW due AS SELECT id FROM ev WHERE ts <= now() AND id > 0;
             CREATE MATERIALIZED VIEW recent_count AS
               SELECT count(*) AS n FROM ev WHERE now() - INTERVAL '3' SECOND < ts;",
        )
        .await
        .expect("setup");
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    client
        .batch_execute(&format!(
            "INSERT INTO ev VALUES (1, to_timestamp_millis({})), (2, to_timestamp_millis({t0})), \
             (3, to_timestamp_millis({})), (4, to_timestamp_millis({}))",
            t0 - 10_000,
            t0 + 2_000,
            t0 + 60_000
        ))
        .await
        .expect("insert");
    // Right after the insert (well before t0 + 2 s).
    assert_eq!(temporal_rows(&client).await, expect(&[2, 3, 4], &[1, 2]));
    // Row 2 leaves `recent` after t0 + 3 s; by then row 3 is due (t0 + 2 s):
    // both views move in the same epoch, so no read sees one without the other.
    wait_for(&client, &expect(&[3, 4], &[1, 2, 3]), "row 2 leaving").await;
    // A kill -9 and a restart: the views and their pending rows come back.
    server.kill9();
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    wait_for(&client, &expect(&[4], &[1, 2, 3]), "row 3 leaving, after the restart").await;
    client.batch_execute("DELETE FROM ev WHERE id = 4").await.expect("delete");
    assert_eq!(temporal_rows(&client).await, expect(&[], &[1, 2, 3]));
    for bad in [
        "CREATE MATERIALIZED VIEW bad AS SELECT id, now() AS t FROM ev",
        "CREATE MATERIALIZED VIEW bad AS SELECT id FROM ev WHERE ts = now()",
        "CREATE MATERIALIZED VIEW bad AS SELECT id FROM ev WHERE ts > now() OR id = 1",
    ] {
        assert_eq!(crate::server::error_code(&client, bad).await, "0A000", "{bad}");
    }
}

/// (view, query, oracle over `a_seen`/`b_seen`, which record each row with
/// the watermark of its own table before it arrived).
const JOINS: &[(&str, &str, &str)] = &[
    (
        "interval_join",
        "SELECT a.id AS aid, b.id AS bid, a.k FROM a JOIN b ON a.k = b.k \
         AND b.ts BETWEEN a.ts - INTERVAL '2' SECOND AND a.ts + INTERVAL '3' SECOND",
        "SELECT a.id AS aid, b.id AS bid, a.k FROM a_seen a JOIN b_seen b ON a.k = b.k \
         AND b.ts BETWEEN a.ts - INTERVAL '2' SECOND AND a.ts + INTERVAL '3' SECOND \
         WHERE (a.wm IS NULL OR a.ts >= a.wm) AND (b.wm IS NULL OR b.ts >= b.wm)",
    ),
    (
        "window_join",
        "SELECT x.window_start, x.k, count(*) AS n FROM TUMBLE(a, ts, INTERVAL '5' SECOND) x \
         JOIN TUMBLE(b, ts, INTERVAL '5' SECOND) y ON x.window_start = y.window_start AND x.k = y.k \
         GROUP BY x.window_start, x.k",
        "SELECT x.window_start, x.k, count(*) AS n FROM TUMBLE(a_seen, ts, INTERVAL '5' SECOND) x \
         JOIN TUMBLE(b_seen, ts, INTERVAL '5' SECOND) y ON x.window_start = y.window_start AND x.k = y.k \
         WHERE (x.wm IS NULL OR x.window_start >= date_bin(INTERVAL '5' SECOND, x.wm, TIMESTAMP '1970-01-01')) \
         AND (y.wm IS NULL OR y.window_start >= date_bin(INTERVAL '5' SECOND, y.wm, TIMESTAMP '1970-01-01')) \
         GROUP BY x.window_start, x.k",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_and_window_joins_equal_the_join_of_on_time_rows_and_keep_state_flat() {
    let seed = std::env::var("FRESHET_EVENT_TIME_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(5u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let server = TestServer::start_with(&["--checkpoint-interval-ms", "0"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE a (id BIGINT PRIMARY KEY, k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
             CREATE TABLE b (id BIGINT PRIMARY KEY, k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
             CREATE TABLE a_seen (id BIGINT PRIMARY KEY, k BIGINT, ts TIMESTAMP, wm TIMESTAMP);
             CREATE TABLE b_seen (id BIGINT PRIMARY KEY, k BIGINT, ts TIMESTAMP, wm TIMESTAMP);",
        )
        .await
        .expect("tables");
    for (name, query, _) in JOINS {
        client.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}")).await.expect("view");
    }
    // Each table's watermark: its largest time minus a second.
    let mut max_ms: [Option<i64>; 2] = [None, None];
    let mut next_id = 0i64;
    let mut head = START_MS;
    for step in 1..=40 {
        head += rng.random_range(200..1_500);
        for (side, table) in ["a", "b"].iter().enumerate() {
            let before = max_ms[side].map(|m| m - 1_000);
            let (mut rows_in, mut seen) = (Vec::new(), Vec::new());
            for _ in 0..rng.random_range(1..8) {
                next_id += 1;
                let ts = head + rng.random_range(-4_000..1_000);
                let k = rng.random_range(1..4);
                rows_in.push(format!("({next_id}, {k}, {})", timestamp(ts)));
                let wm = before.map_or("NULL".to_string(), timestamp);
                seen.push(format!("({next_id}, {k}, {}, {wm})", timestamp(ts)));
                max_ms[side] = Some(max_ms[side].map_or(ts, |m| m.max(ts)));
            }
            client.batch_execute(&format!("INSERT INTO {table} VALUES {}", rows_in.join(", "))).await.expect("insert");
            client.batch_execute(&format!("INSERT INTO {table}_seen VALUES {}", seen.join(", "))).await.expect("seen");
        }
        for (name, _, oracle) in JOINS {
            let view = sorted(rows(&client, &format!("SELECT * FROM {name}")).await);
            let batch = sorted(rows(&client, oracle).await);
            assert_eq!(view, batch, "seed {seed}, step {step}: {name} differs from the join of on-time rows");
        }
    }
    let pairs: i64 = rows(&client, "SELECT count(*) FROM interval_join").await[0][0].parse().expect("pairs");
    assert!(pairs > 20, "only {pairs} pairs");
    let late: i64 =
        rows(&client, "SELECT late_rows FROM freshet_catalog.materialized_views WHERE name = 'interval_join'").await[0]
            [0]
        .parse()
        .expect("late");
    assert!(late > 0, "no late rows: the test did not exercise lateness");

    // A long stream: 400k rows per side, 1 ms apart, each row's key only
    // in the row of the same time on the other side. A side's row stays
    // until the other side's watermark is 3 s (left) or 2 s (right) past
    // it: a few thousand rows, however long the stream.
    client.batch_execute("DROP MATERIALIZED VIEW window_join").await.expect("drop");
    const BATCH: i64 = 20_000;
    for batch in 0..20 {
        let first = 1_000_000 + batch * BATCH;
        for table in ["a", "b"] {
            client
                .batch_execute(&format!(
                    "INSERT INTO {table} SELECT value AS id, value AS k, to_timestamp_millis({} + value)::TIMESTAMP \
                     FROM generate_series({first}, {}) AS g(value)",
                    head + 10_000 - 1_000_000,
                    first + BATCH - 1
                ))
                .await
                .expect("insert");
        }
        let stored: i64 = rows(
            &client,
            "SELECT coalesce(sum(stored_keys), 0) FROM freshet_catalog.view_state WHERE view = 'interval_join'",
        )
        .await[0][0]
            .parse()
            .expect("keys");
        // Without cleaning, 40k rows a batch would pile up (800k at the end).
        assert!(stored <= BATCH, "{stored} stored keys after batch {batch}: the join's state grows");
    }
    let total: i64 = rows(&client, "SELECT count(*) FROM interval_join").await[0][0].parse().expect("pairs");
    assert_eq!(total, pairs + 400_000, "every row of the long stream meets its partner once");
}
