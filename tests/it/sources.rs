//! Sources: generator connectors (nexmark, datagen) read by materialized
//! views, each view from the start of the stream, exactly once across a
//! kill -9; compared with the same events computed as a batch.

use std::time::{Duration, Instant};

use crate::oracle::sorted;
use crate::server::{TestServer, describe, error_code, rows, tempdir::TempDir};

/// Waits until every view reading sources has read them to the end.
async fn wait_until_read(client: &tokio_postgres::Client, views: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = rows(client, "SELECT name, sources_done FROM freshet_catalog.materialized_views").await;
        let finished = views.iter().all(|v| done.iter().any(|r| r[0] == *v && r[1] == "t"));
        if finished {
            return;
        }
        assert!(Instant::now() < deadline, "sources not read to the end: {done:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn source_rows(client: &tokio_postgres::Client, view: &str) -> i64 {
    rows(client, &format!("SELECT source_rows FROM freshet_catalog.materialized_views WHERE name = '{view}'")).await[0]
        [0]
    .parse()
    .expect("source rows")
}

/// Each materialized view's name and storage layout, sorted.
async fn layouts(client: &tokio_postgres::Client) -> Vec<Vec<String>> {
    sorted(rows(client, "SELECT name, storage_layout FROM freshet_catalog.materialized_views").await)
}

/// The events' bids, as the batch oracle reads them.
const BIDS: &str = "nexmark('bid', 30000, 0, 100)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_source_feeds_views_exactly_once_across_a_kill() {
    let data = TempDir::new("sources");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    // 30,000 events at 10,000 a second of wall-clock time; 100 a second of
    // event time, so 10 s windows are many.
    client
        .batch_execute(
            "CREATE SOURCE bid (WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND) WITH (
                connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = 30000,
                nexmark.event.rate = 100, nexmark.min.event.gap.in.ns = 100000, nexmark.max.chunk.size = 1000);
             CREATE MATERIALIZED VIEW per_auction AS SELECT auction, count(*) AS n, max(price) AS top FROM bid GROUP BY auction;
             CREATE MATERIALIZED VIEW per_window AS SELECT window_start, count(*) AS n, sum(price) AS total
               FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW big_bids AS SELECT auction, bidder, price, date_time FROM bid WHERE price > 1000;
             CREATE MATERIALIZED VIEW big_per_bidder AS SELECT bidder, count(*) AS n, sum(price) AS total
               FROM big_bids GROUP BY bidder;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    // Kill the server while the views are reading.
    let deadline = Instant::now() + Duration::from_secs(60);
    while source_rows(&client, "per_auction").await < 5_000 {
        assert!(Instant::now() < deadline, "the source is not being read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill9();
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    // A view created after the restart still reads the source from its start.
    client
        .batch_execute("CREATE MATERIALIZED VIEW per_bidder AS SELECT bidder, count(*) AS n FROM bid GROUP BY bidder")
        .await
        .expect("late view");
    wait_until_read(&client, &["per_auction", "per_window", "per_bidder", "big_bids"]).await;

    let oracle = |query: &str| query.replace("{bids}", BIDS);
    for (view, batch) in [
        ("per_auction", oracle("SELECT auction, count(*) AS n, max(price) AS top FROM {bids} GROUP BY auction")),
        ("per_bidder", oracle("SELECT bidder, count(*) AS n FROM {bids} GROUP BY bidder")),
        // Stored as appended blocks, across the kill; and read by another view.
        ("big_bids", oracle("SELECT auction, bidder, price, date_time FROM {bids} WHERE price > 1000")),
        (
            "big_per_bidder",
            oracle("SELECT bidder, count(*) AS n, sum(price) AS total FROM {bids} WHERE price > 1000 GROUP BY bidder"),
        ),
        (
            "per_window",
            oracle(
                "SELECT date_bin(INTERVAL '10' SECOND, date_time, TIMESTAMP '1970-01-01') AS ws, count(*) AS n, \
                 sum(price) AS total FROM {bids} GROUP BY ws \
                 HAVING date_bin(INTERVAL '10' SECOND, date_time, TIMESTAMP '1970-01-01') < \
                   (SELECT date_bin(INTERVAL '10' SECOND, max(date_time) - INTERVAL '2' SECOND, TIMESTAMP '1970-01-01') FROM {bids})",
            ),
        ),
    ] {
        let got = sorted(rows(&client, &format!("SELECT * FROM {view}")).await);
        let want = sorted(rows(&client, &batch).await);
        assert!(!want.is_empty(), "{view}: empty oracle");
        assert_eq!(got.len(), want.len(), "{view}: {} rows, the batch {}", got.len(), want.len());
        assert!(got == want, "{view} differs from the batch over the same events");
    }
    // A query that only inserts is stored as blocks; the others row by row.
    let layouts = layouts(&client).await;
    let want: Vec<Vec<String>> = [
        ["big_bids", "blocks"],
        ["big_per_bidder", "rows"],
        ["per_auction", "rows"],
        ["per_bidder", "rows"],
        ["per_window", "rows"],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(layouts, want);
    // Over a source, count and max keep one value per group, not the
    // group's bids: at most one stored key per auction (groups changed
    // since the last checkpoint are not stored yet), one for how the
    // aggregate keeps its groups and one for the source's read position.
    // Keeping the bids would store 30,000 more.
    let count = |rows: Vec<Vec<String>>| rows.first().and_then(|r| r.first()).and_then(|v| v.parse::<i64>().ok());
    let stored = count(
        rows(&client, "SELECT sum(stored_keys) FROM freshet_catalog.view_state WHERE view = 'per_auction'").await,
    );
    let auctions = count(rows(&client, &oracle("SELECT count(DISTINCT auction) FROM {bids}")).await);
    assert!(
        stored.zip(auctions).is_some_and(|(s, a)| s > 0 && s <= a + 2),
        "per_auction stores {stored:?} keys for {auctions:?} auctions"
    );
    let late =
        rows(&client, "SELECT late_rows FROM freshet_catalog.materialized_views WHERE name = 'per_window'").await;
    assert_eq!(late, vec![vec!["0".to_string()]], "nexmark bids come in event-time order");
    // A source keeps no rows, and says so.
    assert_eq!(error_code(&client, "SELECT * FROM bid").await, "0A000");
    assert_eq!(error_code(&client, "DROP SOURCE bid").await, "2BP01");
    client.batch_execute("DROP SOURCE bid CASCADE").await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_is_stored_in_the_layout_asked_for_if_its_query_allows_it() {
    let data = TempDir::new("layouts");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = 3000,
                nexmark.min.event.gap.in.ns = 0);
             CREATE TABLE t (k INT, v INT);
             INSERT INTO t VALUES (1, 10), (1, 10), (2, 20);
             CREATE MATERIALIZED VIEW as_rows WITH (storage_layout = 'rows') AS SELECT auction, price FROM bid;
             CREATE MATERIALIZED VIEW as_blocks WITH (storage_layout = 'BLOCKS') AS SELECT auction, price FROM bid;
             CREATE MATERIALIZED VIEW of_table AS SELECT k, v FROM t;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    // Blocks hold only inserts: a table can be updated, an aggregate retracts.
    for refused in [
        "CREATE MATERIALIZED VIEW x WITH (storage_layout = 'blocks') AS SELECT k, v FROM t",
        "CREATE MATERIALIZED VIEW x WITH (storage_layout = 'blocks') AS SELECT auction, count(*) FROM bid GROUP BY auction",
        "CREATE MATERIALIZED VIEW x WITH (storage_layout = 'columns') AS SELECT auction FROM bid",
    ] {
        assert_eq!(error_code(&client, refused).await, "22023", "{refused}");
    }
    wait_until_read(&client, &["as_rows", "as_blocks"]).await;
    let expected: Vec<Vec<String>> = [["as_blocks", "blocks"], ["as_rows", "rows"], ["of_table", "rows"]]
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(layouts(&client).await, expected);
    let both = "SELECT * FROM as_rows EXCEPT ALL SELECT * FROM as_blocks UNION ALL \
                (SELECT * FROM as_blocks EXCEPT ALL SELECT * FROM as_rows)";
    assert!(rows(&client, both).await.is_empty(), "the two layouts hold the same rows");
    let count = rows(&client, "SELECT count(*) FROM as_blocks").await;
    // The layout is kept across a restart, and the rows with it.
    server.kill9();
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    assert_eq!(layouts(&client).await, expected, "after a restart");
    assert_eq!(rows(&client, "SELECT count(*) FROM as_blocks").await, count);
    assert!(rows(&client, both).await.is_empty(), "after a restart");
    client.batch_execute("INSERT INTO t VALUES (3, 30); UPDATE t SET v = 11 WHERE k = 1").await.expect("writes");
    assert_eq!(sorted(rows(&client, "SELECT * FROM of_table").await), sorted(rows(&client, "SELECT * FROM t").await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagen_source_generates_the_declared_columns() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE gen (id BIGINT, k INT, v DOUBLE PRECISION, s TEXT, ts TIMESTAMP) WITH (
                connector = 'datagen', datagen.rows.per.second = 0, datagen.max.chunk.size = 700,
                fields.id.kind = 'sequence', fields.id.start = 1, fields.id.end = 5000,
                fields.k.min = 1, fields.k.max = 9, fields.v.min = -1, fields.v.max = 1, fields.s.length = 4,
                fields.ts.max_past = '1 hour');
             CREATE MATERIALIZED VIEW stats AS SELECT k, count(*) AS n, sum(id) AS ids, min(v) AS low, max(v) AS high,
               min(length(s)) AS short, max(length(s)) AS long FROM gen GROUP BY k;
             CREATE MATERIALIZED VIEW recent AS SELECT count(*) AS n FROM gen WHERE ts > now() - INTERVAL '2' HOUR;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_until_read(&client, &["stats", "recent"]).await;
    let totals = rows(
        &client,
        "SELECT sum(n), sum(ids), min(k), max(k), min(low) >= -1, max(high) <= 1, min(short), max(long) FROM stats",
    )
    .await;
    let want: Vec<String> = ["5000", "12502500", "1", "9", "t", "t", "4", "4"].iter().map(|s| s.to_string()).collect();
    assert_eq!(totals, vec![want]);
    assert_eq!(rows(&client, "SELECT n FROM recent").await, vec![vec!["5000".to_string()]]);
    for (bad, code) in [
        ("CREATE SOURCE s1 WITH (connector = 'nexmark')", "22023"),
        ("CREATE SOURCE s2 WITH (connector = 'nexmark', nexmark.table.type = 'bids')", "22023"),
        ("CREATE SOURCE s3 WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.colour = 'red')", "22023"),
        ("CREATE SOURCE s4 (a INT) WITH (connector = 'datagen', fields.b.kind = 'sequence')", "22023"),
        ("CREATE SOURCE s5 (a INT) WITH (connector = 'kinesis')", "0A000"),
        ("CREATE SOURCE s6 (auction TEXT) WITH (connector = 'nexmark', nexmark.table.type = 'bid')", "42804"),
        ("CREATE SOURCE s7 (a INT)", "22023"),
    ] {
        assert_eq!(error_code(&client, bad).await, code, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_source_stops_holding_back_the_watermark_of_a_union() {
    let server = TestServer::start();
    let client = server.connect().await;
    // `busy` brings a row every 40 ms (event times 0..99 s); `quiet` and
    // `mute` one row at event time 0, then nothing. Only `quiet` has an
    // idle timeout.
    client
        .batch_execute(
            "CREATE SOURCE busy (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'datagen',
                datagen.rows.per.second = 25, fields.ts.kind = 'sequence', fields.ts.end = 99);
             CREATE SOURCE quiet (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'datagen',
                datagen.rows.per.second = 0, fields.ts.kind = 'sequence', fields.ts.end = 0,
                watermark_idle_timeout = '1 second');
             CREATE SOURCE mute (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'datagen',
                datagen.rows.per.second = 0, fields.ts.kind = 'sequence', fields.ts.end = 0);
             CREATE MATERIALIZED VIEW closed AS
               SELECT date_bin(INTERVAL '10' SECOND, ts, TIMESTAMP '1970-01-01') AS w, count(*) AS n
               FROM (SELECT ts FROM busy UNION ALL SELECT ts FROM quiet) u GROUP BY w EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW held AS
               SELECT date_bin(INTERVAL '10' SECOND, ts, TIMESTAMP '1970-01-01') AS w, count(*) AS n
               FROM (SELECT ts FROM busy UNION ALL SELECT ts FROM mute) u GROUP BY w EMIT ON WINDOW CLOSE;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_until_read(&client, &["closed", "held"]).await;
    // Once `quiet` is idle the union's watermark is `busy`'s (99 s at the
    // end): windows up to [80 s, 90 s) close. `mute` holds `held` at 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let closed = rows(&client, "SELECT count(*), sum(n), max(w) FROM closed").await;
        if closed[0][0] == "9" {
            assert_eq!(closed, vec![vec!["9".to_string(), "91".to_string(), "1970-01-01 00:01:20".to_string()]]);
            break;
        }
        assert!(Instant::now() < deadline, "windows did not close past the idle source: {closed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows(&client, "SELECT count(*) FROM held").await, vec![vec!["0".to_string()]]);
}
