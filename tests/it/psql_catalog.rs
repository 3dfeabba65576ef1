//! psql's meta-commands (`\dt \dv \dm \dE \di \dn \l \du \d NAME \d+ NAME`)
//! against a catalog with a table with a primary key, a view, a
//! materialized view, a source and comments: psql sends its own catalog
//! queries, and the output must say what Postgres would say. Also the
//! lineage system table and catalog functions drivers call.

use std::process::Command;

use crate::server::{TestServer, describe, error_code, rows, tempdir::TempDir};

/// psql's unaligned output (with headers) of `command`; fails on error.
fn psql(server: &TestServer, command: &str) -> String {
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "freshet", "-d", "freshet"])
        .args(["-X", "-A", "-v", "ON_ERROR_STOP=1", "-c", command])
        .output()
        .expect("psql must be installed (make test installs postgresql-client)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success() && !stderr.contains("ERROR"), "psql -c '{command}' failed: {stderr}\n{stdout}");
    stdout
}

fn lines(output: &str) -> Vec<&str> {
    output.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_describe_the_catalog() {
    let data = TempDir::new("psql-catalog");
    let mut server = TestServer::start_in(&data.0, &[]);
    let mut client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(12,2), placed TIMESTAMP);
             CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100;
             CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer;
             CREATE SOURCE ticks (n BIGINT) WITH (connector = 'datagen', datagen.rows.per.second = 10, fields.n.kind = 'sequence');
             CREATE MATERIALIZED VIEW tick_count AS SELECT count(*) AS c FROM ticks;
             COMMENT ON TABLE orders IS 'every order placed';
             COMMENT ON COLUMN orders.amount IS 'in euros';
             COMMENT ON MATERIALIZED VIEW per_customer IS 'totals per customer';
             COMMENT ON SOURCE ticks IS 'a clock';",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));

    let tables = psql(&server, "\\dt");
    assert!(lines(&tables).contains(&"public|orders|table|freshet"), "{tables}");
    assert!(!tables.contains("per_customer") && !tables.contains("big_orders"), "{tables}");
    let views = psql(&server, "\\dv");
    assert!(lines(&views).contains(&"public|big_orders|view|freshet"), "{views}");
    assert!(!views.contains("per_customer") && !views.contains("freshet_catalog"), "{views}");
    let matviews = psql(&server, "\\dm");
    assert!(lines(&matviews).contains(&"public|per_customer|materialized view|freshet"), "{matviews}");
    assert!(lines(&matviews).contains(&"public|tick_count|materialized view|freshet"), "{matviews}");
    let sources = psql(&server, "\\dE");
    assert!(lines(&sources).contains(&"public|ticks|foreign table|freshet"), "{sources}");
    let indexes = psql(&server, "\\di");
    assert!(lines(&indexes).contains(&"public|orders_pkey|index|freshet|orders"), "{indexes}");
    let schemas = psql(&server, "\\dn");
    assert!(lines(&schemas).contains(&"public|freshet"), "{schemas}");
    let databases = psql(&server, "\\l");
    assert!(databases.lines().any(|l| l.starts_with("freshet|")), "{databases}");
    let roles = psql(&server, "\\du");
    assert!(roles.lines().any(|l| l.starts_with("freshet|") && l.contains("Superuser")), "{roles}");

    // \d NAME: columns with Postgres type names, nullability, the key.
    let table = psql(&server, "\\d orders");
    assert!(table.contains("Table \"public.orders\""), "{table}");
    for line in [
        "id|bigint||not null|",
        "customer|text||not null|",
        "amount|numeric(12,2)|||",
        "placed|timestamp without time zone|||",
    ] {
        assert!(lines(&table).contains(&line), "missing {line:?} in\n{table}");
    }
    assert!(table.contains("\"orders_pkey\" PRIMARY KEY, btree (id)"), "{table}");
    // \d+ shows comments and view definitions.
    let table_plus = psql(&server, "\\d+ orders");
    assert!(table_plus.lines().any(|l| l.starts_with("amount|") && l.ends_with("|in euros")), "{table_plus}");
    let matview = psql(&server, "\\d+ per_customer");
    assert!(matview.contains("Materialized view \"public.per_customer\""), "{matview}");
    assert!(matview.contains("View definition:"), "{matview}");
    assert!(matview.contains("GROUP BY customer"), "{matview}");
    let described = psql(&server, "\\dt+ orders");
    assert!(
        described.lines().any(|l| l.starts_with("public|orders|table|") && l.ends_with("|every order placed")),
        "{described}"
    );

    // The same through SQL, as drivers and BI tools ask.
    assert_eq!(
        rows(
            &client,
            "SELECT obj_description('public.orders'::regclass, 'pg_class'), col_description('orders'::regclass, 3)"
        )
        .await,
        vec![vec!["every order placed".to_string(), "in euros".to_string()]]
    );
    assert_eq!(
        rows(&client, "SELECT relkind FROM pg_catalog.pg_class WHERE relname IN ('orders', 'big_orders', 'per_customer', 'ticks', 'orders_pkey') ORDER BY relname").await,
        vec![vec!["v".to_string()], vec!["r".to_string()], vec!["i".to_string()], vec!["m".to_string()], vec!["f".to_string()]]
    );
    assert_eq!(
        rows(&client, "SELECT matviewname FROM pg_matviews ORDER BY 1").await,
        vec![vec!["per_customer".to_string()], vec!["tick_count".to_string()]]
    );
    let version = rows(&client, "SELECT version()").await;
    assert!(version[0][0].starts_with("PostgreSQL 16"), "{version:?}");
    assert_eq!(rows(&client, "SELECT current_setting('server_version_num')").await, vec![vec!["160006".to_string()]]);
    assert_eq!(error_code(&client, "SELECT current_setting('no_such_setting')").await, "42704");

    // Lineage: what feeds what, directly.
    assert_eq!(
        rows(&client, "SELECT object, object_kind, upstream, upstream_kind FROM freshet_catalog.lineage ORDER BY 1, 3")
            .await,
        vec![
            vec!["big_orders".to_string(), "view".to_string(), "orders".to_string(), "table".to_string()],
            vec![
                "per_customer".to_string(),
                "materialized view".to_string(),
                "orders".to_string(),
                "table".to_string()
            ],
            vec!["tick_count".to_string(), "materialized view".to_string(), "ticks".to_string(), "source".to_string()],
        ]
    );

    // Comments survive a restart with the catalog, and go with DROP.
    assert_eq!(error_code(&client, "COMMENT ON TABLE nothing IS 'x'").await, "42P01");
    assert_eq!(error_code(&client, "COMMENT ON VIEW orders IS 'x'").await, "42809");
    assert_eq!(error_code(&client, "COMMENT ON COLUMN orders.colour IS 'x'").await, "42703");
    client.batch_execute("COMMENT ON COLUMN orders.amount IS NULL").await.expect("remove a comment");
    assert_eq!(rows(&client, "SELECT col_description('orders'::regclass, 3)").await, vec![vec!["NULL".to_string()]]);
    server.kill9();
    server = TestServer::start_in(&data.0, &[]);
    client = server.connect().await;
    assert_eq!(
        rows(&client, "SELECT obj_description('orders'::regclass), col_description('orders'::regclass, 3)").await,
        vec![vec!["every order placed".to_string(), "NULL".to_string()]],
        "comments as they were before the kill"
    );
    let sources = psql(&server, "\\dE+");
    assert!(
        sources.lines().any(|l| l.starts_with("public|ticks|foreign table|") && l.ends_with("|a clock")),
        "{sources}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_behave_as_in_postgres() {
    let server = TestServer::start();
    let client = server.connect().await;
    let one = |sql: &'static str| {
        let client = &client;
        async move { rows(client, sql).await[0][0].clone() }
    };
    assert_eq!(one("SHOW server_version").await, "16.6");
    assert_eq!(one("SHOW transaction isolation level").await, "repeatable read");
    assert_eq!(one("SHOW standard_conforming_strings").await, "on");
    client.batch_execute("SET application_name = 'reports'").await.expect("set application_name");
    assert_eq!(one("SHOW application_name").await, "reports");
    // Custom parameters, as tools set their own.
    client.batch_execute("SET myapp.mode = 'fast'").await.expect("set a custom parameter");
    assert_eq!(one("SHOW myapp.mode").await, "fast");
    client.batch_execute("RESET myapp.mode").await.expect("reset");
    assert_eq!(error_code(&client, "SHOW myapp.mode").await, "42704");
    assert_eq!(error_code(&client, "SHOW no_such_parameter").await, "42704");
    let all = rows(&client, "SHOW ALL").await;
    assert!(all.iter().any(|r| r[0] == "server_version_num" && r[1] == "160006"), "{all:?}");
    client.batch_execute("DISCARD ALL").await.expect("discard all");
    // The same over the extended protocol (drivers' prepared statements).
    let prepared = client.query("SHOW server_version", &[]).await.expect("extended SHOW");
    assert_eq!(prepared[0].get::<_, String>(0), "16.6");
}
