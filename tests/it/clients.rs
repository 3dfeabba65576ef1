//! Real clients: psql (with -c and with a script file) and tokio-postgres
//! over the extended protocol with parameters, checking values and types.

use std::process::Command;

use tokio_postgres::types::Type;

use crate::server::{TestServer, rows};

/// psql connected to `server`: unaligned, tuples only, stop on the first error.
fn psql_command(server: &TestServer) -> Command {
    let mut command = Command::new("psql");
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &server.port.to_string(),
        "-U",
        "freshet",
        "-d",
        "freshet",
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
    ]);
    command
}

fn psql(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let output = psql_command(server)
        .args(args)
        .output()
        .expect("psql must be installed (make test installs postgresql-client)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_commands_and_script_file() {
    let server = TestServer::start();
    let (ok, _, err) =
        psql(&server, &["-c", "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, amount NUMERIC(12,2))"]);
    assert!(ok, "psql -c failed: {err}");

    let script = std::env::temp_dir().join(format!("freshet-psql-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "INSERT INTO orders VALUES (1, 'ann', 10.50), (2, 'bob', 3.00), (3, 'ann', 1.25);\n\
         CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer;\n\
         UPDATE orders SET amount = 20 WHERE id = 1;\n\
         SELECT customer, n, total FROM per_customer ORDER BY customer;\n",
    )
    .expect("write script");
    let (ok, out, err) = psql(&server, &["-f", script.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&script);
    assert!(ok, "psql -f failed: {err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains('|')).collect();
    assert_eq!(lines, vec!["ann|2|21.25", "bob|1|3.00"], "psql output was:\n{out}");

    // A psql meta-command that queries pg_catalog.
    let (ok, out, err) = psql(&server, &["-c", "\\dt"]);
    assert!(ok, "\\dt failed: {err}");
    assert!(out.contains("orders"), "\\dt did not list orders:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_parameters_and_types() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, price DOUBLE PRECISION, qty INT, ok BOOLEAN, day DATE);
             CREATE MATERIALIZED VIEW stock AS SELECT name, sum(qty) AS total, max(price) AS top FROM items GROUP BY name;",
        )
        .await
        .expect("setup");

    let insert = client
        .prepare("INSERT INTO items (id, name, price, qty, ok, day) VALUES ($1, $2, $3, $4, $5, '2024-01-02')")
        .await
        .expect("prepare insert");
    for (id, name, price, qty) in [(1i64, "pen", 1.5f64, 3i32), (2, "ink", 7.25, 1), (3, "pen", 2.0, 4)] {
        let n = client.execute(&insert, &[&id, &name, &price, &qty, &true]).await.expect("insert");
        assert_eq!(n, 1);
    }

    let select =
        client.prepare("SELECT id, name, price, qty, ok, day FROM items WHERE id = $1").await.expect("prepare select");
    let types: Vec<Type> = select.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(types, vec![Type::INT8, Type::TEXT, Type::FLOAT8, Type::INT4, Type::BOOL, Type::DATE]);
    let row = client.query_one(&select, &[&2i64]).await.expect("select by key");
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, String>(1), "ink");
    assert_eq!(row.get::<_, f64>(2), 7.25);
    assert_eq!(row.get::<_, i32>(3), 1);
    assert!(row.get::<_, bool>(4));

    let rows_typed = client.query("SELECT name, total, top FROM stock ORDER BY name", &[]).await.expect("view");
    let got: Vec<(String, i64, f64)> = rows_typed.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(got, vec![("ink".to_string(), 1, 7.25), ("pen".to_string(), 7, 2.0)]);

    let updated =
        client.execute("UPDATE items SET qty = qty + $1 WHERE name = $2", &[&10i32, &"pen"]).await.expect("update");
    assert_eq!(updated, 2);
    let deleted = client.execute("DELETE FROM items WHERE id = $1", &[&2i64]).await.expect("delete");
    assert_eq!(deleted, 1);
    assert_eq!(rows(&client, "SELECT name, total FROM stock").await, vec![vec!["pen".to_string(), "27".to_string()]]);

    // Text output as Postgres prints it. (Timestamps are not yet: the wire
    // encoder always prints six fractional digits.)
    let text = rows(
        &client,
        "SELECT true, false, 1.5::double precision, NULL::int, CAST(12.50 AS NUMERIC(10,2)), DATE '2024-01-02'",
    )
    .await;
    assert_eq!(
        text,
        vec![vec!["t", "f", "1.5", "NULL", "12.50", "2024-01-02"].into_iter().map(String::from).collect::<Vec<_>>()]
    );

    // SHOW TABLES / VIEWS through Parse, Describe, Execute: described with
    // their one column, so the client can read the rows (found by the SQL
    // fuzzer: they were described with none).
    let shown = client.query("SHOW TABLES", &[]).await.expect("SHOW TABLES, extended");
    let names: Vec<String> = shown.iter().map(|row| row.get::<_, String>("name")).collect();
    assert!(names.contains(&"items".to_string()), "{names:?}");
    let views = client.query("SHOW MATERIALIZED VIEWS", &[]).await.expect("SHOW MATERIALIZED VIEWS, extended");
    let names: Vec<String> = views.iter().map(|row| row.get::<_, String>(0)).collect();
    assert_eq!(names, vec!["stock".to_string()]);
}

fn psql_stdin(server: &TestServer, command: &str, input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = psql_command(server)
        .args(["-c", command])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("psql output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_csv_and_text() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE c (id INT PRIMARY KEY, name TEXT, amount NUMERIC(10,2));
             CREATE MATERIALIZED VIEW c_total AS SELECT count(*) AS n, sum(amount) AS total FROM c;",
        )
        .await
        .expect("setup");

    let (ok, out, err) = psql_stdin(
        &server,
        "COPY c FROM STDIN WITH (FORMAT csv, HEADER true)",
        "id,name,amount\n1,ann,1.50\n2,\"b,ob\",2\n3,,3.25\n",
    );
    assert!(ok, "csv copy failed: {err}");
    assert_eq!(out.trim(), "COPY 3");
    let (ok, out, err) = psql_stdin(&server, "COPY c (id, name, amount) FROM STDIN", "4\tdan\\tx\t4.25\n5\t\\N\t5\n");
    assert!(ok, "text copy failed: {err}");
    assert_eq!(out.trim(), "COPY 2");

    let got = rows(&client, "SELECT id, name, amount FROM c ORDER BY id").await;
    let want: Vec<Vec<String>> = [
        ["1", "ann", "1.50"],
        ["2", "b,ob", "2.00"],
        ["3", "NULL", "3.25"],
        ["4", "dan\tx", "4.25"],
        ["5", "NULL", "5.00"],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
    assert_eq!(rows(&client, "SELECT n, total FROM c_total").await, vec![vec!["5".to_string(), "16.00".to_string()]]);

    // Bad data: a clear error, nothing of that COPY applied, the session goes on.
    let (ok, _, err) = psql_stdin(&server, "COPY c FROM STDIN WITH (FORMAT csv)", "6,eve,1\n7,fay,not-a-number\n");
    assert!(!ok && err.contains("not-a-number"), "expected a parse error, got: {err}");
    let (ok, _, err) = psql_stdin(&server, "COPY c FROM STDIN WITH (FORMAT csv)", "1,dup,1\n");
    assert!(!ok && err.contains("duplicate key"), "expected a unique violation, got: {err}");
    assert_eq!(rows(&client, "SELECT count(*) FROM c").await, vec![vec!["5".to_string()]]);
}
