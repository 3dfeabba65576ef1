//! Postgres CDC against a real PostgreSQL (wal_level = logical, started
//! here): a table's snapshot, then a stream of inserts, updates and deletes
//! (single statements and multi-statement transactions), with Freshet
//! killed -9 and Postgres crashed and restarted in the middle; the table
//! must end up equal to the upstream table and the view over it to the
//! batch query. Also: the slot's confirmed position moves, DROP TABLE
//! releases the slot, and bad definitions get clear errors.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::oracle::sorted;
use crate::postgres::Postgres;
use crate::server::{TestServer, describe, error_code, rows, tempdir::TempDir};

const UPSTREAM: &str = "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(12,2),
     placed TIMESTAMPTZ, rush BOOLEAN, note TEXT)";
const MIRROR: &str = "(id BIGINT, customer TEXT NOT NULL, amount NUMERIC(12,2), placed TIMESTAMPTZ, rush BOOLEAN,
     PRIMARY KEY (id))";
const COLUMNS: &str = "id, customer, amount, placed, rush";

/// One random change to the upstream table, as SQL.
fn random_change(rng: &mut StdRng, next_id: &mut i64) -> String {
    let id = rng.random_range(0..(*next_id).max(1));
    match rng.random_range(0..10) {
        0..=4 => {
            *next_id += 1;
            let n = *next_id;
            format!(
                "INSERT INTO orders VALUES ({n}, 'c{}', {}.{:02}, '2024-01-01 00:00:00+00'::timestamptz + interval '{n} seconds', {}, 'n')",
                n % 13,
                rng.random_range(0..500),
                rng.random_range(0..100),
                rng.random_bool(0.5)
            )
        }
        5..=7 => format!(
            "UPDATE orders SET amount = amount + {}, rush = NOT rush, customer = 'c{}' WHERE id = {id}",
            rng.random_range(1..9),
            rng.random_range(0..13)
        ),
        8 => format!("DELETE FROM orders WHERE id = {id}"),
        // A key change: the old row goes, the new one comes.
        _ => format!("UPDATE orders SET id = id + 1000000 WHERE id = {id} AND id < 1000000"),
    }
}

async fn wait_until_equal(freshet: &tokio_postgres::Client, upstream: &tokio_postgres::Client, what: &str) {
    let query = format!("SELECT {COLUMNS} FROM orders ORDER BY id");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let want = rows(upstream, &query).await;
        let have = crate::server::try_rows(freshet, &query).await.unwrap_or_default();
        if have == want {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|r| !have.contains(r)).take(5).collect();
            let extra: Vec<_> = have.iter().filter(|r| !want.contains(r)).take(5).collect();
            panic!(
                "{what}: the table differs from upstream after 120 s ({} vs {} rows); missing {missing:?}, extra {extra:?}",
                have.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A few upstream transactions of one to four random statements each.
async fn transactions(upstream: &tokio_postgres::Client, rng: &mut StdRng, next_id: &mut i64, count: usize) {
    for _ in 0..count {
        let statements: Vec<String> = (0..rng.random_range(1..5)).map(|_| random_change(rng, next_id)).collect();
        // Several statements in one simple query are one transaction.
        upstream.batch_execute(&statements.join(";")).await.expect("upstream change");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_changes_arrive_exactly_once_across_kills_and_a_postgres_restart() {
    let pg = Postgres::start();
    let mut upstream = pg.connect().await;
    upstream.batch_execute(UPSTREAM).await.expect("upstream table");
    let mut next_id = 0i64;
    let mut rng = StdRng::seed_from_u64(7);
    let initial: Vec<String> = (0..1500).map(|_| random_change(&mut rng, &mut next_id)).collect();
    upstream.batch_execute(&initial.join(";")).await.expect("initial rows");

    let data = TempDir::new("cdc");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut freshet = server.connect().await;
    freshet
        .batch_execute(&format!(
            "CREATE SOURCE pg WITH ({});
             CREATE TABLE orders {MIRROR} FROM pg TABLE 'public.orders';
             CREATE MATERIALIZED VIEW per_customer AS
               SELECT customer, count(*) AS n, sum(amount) AS total, sum(CASE WHEN rush THEN 1 ELSE 0 END) AS rushed
               FROM orders GROUP BY customer;",
            pg.cdc_options()
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    wait_until_equal(&freshet, &upstream, "after the snapshot").await;

    // Changes stream in; Freshet is killed; changes made while it is down
    // are read when it is back.
    transactions(&upstream, &mut rng, &mut next_id, 40).await;
    server.kill9();
    transactions(&upstream, &mut rng, &mut next_id, 30).await;
    server = TestServer::start_in(&data.0, &[]);
    freshet = server.connect().await;
    transactions(&upstream, &mut rng, &mut next_id, 40).await;
    wait_until_equal(&freshet, &upstream, "after a kill -9 of Freshet").await;

    // Postgres crashes and comes back: the stream reconnects and goes on.
    pg.restart();
    upstream = pg.connect().await;
    transactions(&upstream, &mut rng, &mut next_id, 30).await;
    wait_until_equal(&freshet, &upstream, "after the Postgres restart").await;
    let status = rows(&freshet, "SELECT status FROM freshet_catalog.source_status WHERE relation = 'orders'").await;
    assert_eq!(status, vec![vec!["reading".to_string()]]);

    // A kill in the middle of a stream of transactions.
    let writer = tokio::spawn({
        let upstream = pg.connect().await;
        let mut rng = StdRng::seed_from_u64(8);
        let mut next_id = next_id + 500_000;
        async move { transactions(&upstream, &mut rng, &mut next_id, 60).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    server = TestServer::start_in(&data.0, &[]);
    freshet = server.connect().await;
    writer.await.expect("writer");
    transactions(&upstream, &mut rng, &mut next_id, 20).await;
    wait_until_equal(&freshet, &upstream, "at the end").await;

    // The view is the batch query over the table, and the same query upstream.
    let query =
        "SELECT customer, count(*), sum(amount), sum(CASE WHEN rush THEN 1 ELSE 0 END) FROM orders GROUP BY customer";
    let batch = sorted(rows(&freshet, query).await);
    assert_eq!(
        sorted(rows(&freshet, "SELECT * FROM per_customer").await),
        batch,
        "the view differs from the batch query"
    );
    assert_eq!(sorted(rows(&upstream, query).await), batch, "the view differs from the same query upstream");
    assert!(batch.len() >= 10, "{batch:?}");

    // The slot's confirmed position follows what Freshet committed.
    let confirmed = rows(
        &upstream,
        "SELECT confirmed_flush_lsn > '0/0' FROM pg_replication_slots WHERE slot_name = 'freshet_orders'",
    )
    .await;
    assert_eq!(confirmed, vec![vec!["t".to_string()]]);

    // DROP TABLE lets go of the slot.
    freshet.batch_execute("DROP TABLE orders CASCADE").await.expect("drop");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots =
            rows(&upstream, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'freshet_orders'").await;
        if slots == vec![vec!["0".to_string()]] {
            break;
        }
        assert!(Instant::now() < deadline, "the slot outlived its table");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_and_bad_values_get_clear_errors() {
    let pg = Postgres::start();
    let upstream = pg.connect().await;
    upstream
        .batch_execute(
            "CREATE TABLE items (id INT PRIMARY KEY, name TEXT, price NUMERIC(8,2), tags TEXT);
             CREATE TABLE keyless (a INT, b TEXT);
             INSERT INTO items VALUES (1, 'one', 1.50, 'a'), (2, 'two', 2.00, 'b');",
        )
        .await
        .expect("upstream");
    let server = TestServer::start();
    let client = server.connect().await;
    client.batch_execute(&format!("CREATE SOURCE pg WITH ({})", pg.cdc_options())).await.expect("source");
    client.batch_execute("CREATE TABLE plain (a INT)").await.expect("plain table");
    for (sql, code) in [
        ("CREATE TABLE t1 (id INT, nope TEXT, PRIMARY KEY (id)) FROM pg TABLE 'public.items'", "42703"),
        ("CREATE TABLE t2 (id INT, name INT, PRIMARY KEY (id)) FROM pg TABLE 'public.items'", "42804"),
        ("CREATE TABLE t3 (id INT, name TEXT, PRIMARY KEY (name)) FROM pg TABLE 'public.items'", "42P16"),
        ("CREATE TABLE t4 (id INT, name TEXT) FROM pg TABLE 'public.items'", "42P16"),
        ("CREATE TABLE t5 (id INT, PRIMARY KEY (id)) FROM pg TABLE 'public.missing'", "42P01"),
        ("CREATE TABLE t6 (a INT, PRIMARY KEY (a)) FROM pg TABLE 'public.keyless'", "42P16"),
        ("CREATE TABLE t7 (id INT, PRIMARY KEY (id)) FROM plain TABLE 'public.items'", "42809"),
        ("CREATE TABLE t8 (id INT, PRIMARY KEY (id)) FROM nosuch TABLE 'public.items'", "42704"),
        ("CREATE TABLE t9 (id INT, PRIMARY KEY (id)) FROM pg TABLE", "42601"),
        // A CDC source yields changes by key: only a table applies them.
        ("CREATE MATERIALIZED VIEW direct AS SELECT * FROM pg", "42809"),
        (
            "CREATE SOURCE down WITH (connector = 'postgres-cdc', hostname = '127.0.0.1', port = '1', username = 'u', database.name = 'd')",
            "08001",
        ),
        ("CREATE SOURCE half WITH (connector = 'postgres-cdc', hostname = '127.0.0.1')", "22023"),
        (
            "CREATE SOURCE odd WITH (connector = 'postgres-cdc', hostname = 'h', username = 'u', database.name = 'd', colour = 'red')",
            "22023",
        ),
    ] {
        assert_eq!(error_code(&client, sql).await, code, "{sql}");
    }
    // A good table after the bad ones; the server kept serving.
    client
        .batch_execute("CREATE TABLE items (id INT, name TEXT, price NUMERIC(8,2), tags TEXT, PRIMARY KEY (id)) FROM pg TABLE 'public.items'")
        .await
        .unwrap_or_else(|e| panic!("items: {}", describe(&e)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(&client, "SELECT count(*) FROM items").await != vec![vec!["2".to_string()]] {
        assert!(Instant::now() < deadline, "the snapshot did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    upstream
        .batch_execute("UPDATE items SET price = 3.25 WHERE id = 2; INSERT INTO items VALUES (3, 'three', NULL, 'c')")
        .await
        .expect("changes");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rows(&client, "SELECT id, name, price FROM items ORDER BY id").await;
        if got.len() == 3 {
            assert_eq!(
                got,
                vec![
                    vec!["1".to_string(), "one".to_string(), "1.50".to_string()],
                    vec!["2".to_string(), "two".to_string(), "3.25".to_string()],
                    vec!["3".to_string(), "three".to_string(), "NULL".to_string()],
                ]
            );
            break;
        }
        assert!(Instant::now() < deadline, "changes did not arrive: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Large values are stored out of line (TOAST); an UPDATE that leaves
    // one alone does not send it: the table keeps the value it has, also
    // for a row inserted and updated in one transaction.
    let big = "(SELECT string_agg(md5(g::text || 'salt'), '') FROM generate_series(1, 400) g)";
    upstream.batch_execute(&format!("UPDATE items SET tags = {big} WHERE id = 1")).await.expect("big value");
    let lengths = "SELECT id, price, length(tags) FROM items ORDER BY id";
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(&client, lengths).await != rows(&upstream, lengths).await {
        assert!(Instant::now() < deadline, "the large value did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    upstream
        .batch_execute(&format!(
            "UPDATE items SET price = 9.99 WHERE id = 1;
             INSERT INTO items VALUES (4, 'four', 4.00, {big});
             UPDATE items SET price = 4.50 WHERE id = 4;
             UPDATE items SET name = 'FOUR' WHERE id = 4;"
        ))
        .await
        .expect("updates leaving the large values alone");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let want = rows(&upstream, lengths).await;
        if rows(&client, lengths).await == want {
            assert_eq!(want[0][2], "12800", "{want:?}");
            break;
        }
        assert!(Instant::now() < deadline, "large values were lost: {:?} vs {want:?}", rows(&client, lengths).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // DROP SOURCE refuses while a table reads it.
    assert_eq!(error_code(&client, "DROP SOURCE pg").await, "2BP01");
}
