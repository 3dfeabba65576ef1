//! Users and security: password authentication (SCRAM-SHA-256 and md5)
//! with roles made by CREATE USER / ROLE, privileges granted and revoked
//! and enforced on every kind of statement (42501), all surviving a
//! restart; TLS with a generated certificate, from psql.

use std::process::Command;

use crate::server::tempdir::TempDir;
use crate::server::{TestServer, describe};

async fn login(server: &TestServer, user: &str, password: &str) -> Result<tokio_postgres::Client, String> {
    let url = format!("host=127.0.0.1 port={} user={user} password={password} dbname=freshet", server.port);
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Err(error) => Err(describe(&error)),
    }
}

async fn as_user(server: &TestServer, user: &str, password: &str) -> tokio_postgres::Client {
    login(server, user, password).await.unwrap_or_else(|e| panic!("{user} cannot log in: {e}"))
}

async fn run(client: &tokio_postgres::Client, sql: &str) {
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

/// The SQLSTATE a statement fails with (simple protocol).
async fn code(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => format!("succeeded: {sql}"),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no code: {e}")),
    }
}

async fn values(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    crate::server::rows(client, sql).await.into_iter().map(|r| r.join("|")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_passwords_and_grants_are_enforced_and_survive_restart() {
    let data = TempDir::new("security");
    let mut server = TestServer::start_in(&data.0, &["--auth", "scram-sha-256", "--superuser-password", "boot-secret"]);
    assert!(login(&server, "freshet", "wrong").await.unwrap_err().starts_with("28P01"));
    assert!(login(&server, "nobody", "boot-secret").await.unwrap_err().starts_with("28P01"));
    let admin = as_user(&server, "freshet", "boot-secret").await;
    run(
        &admin,
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT);
         INSERT INTO t VALUES (1, 'one'), (2, 'two');
         CREATE MATERIALIZED VIEW t_count AS SELECT count(*) AS n FROM t;
         CREATE VIEW t_ids AS SELECT id FROM t;
         CREATE USER alice WITH PASSWORD 'alice-pw';
         CREATE ROLE bob LOGIN PASSWORD 'bob-pw';
         CREATE ROLE reader PASSWORD 'reader-pw';",
    )
    .await;
    assert_eq!(code(&admin, "CREATE ROLE alice").await, "42710");
    assert_eq!(code(&admin, "GRANT SELECT ON t TO nosuchrole").await, "42704");
    // A role without LOGIN may not log in, even with the right password.
    assert!(login(&server, "reader", "reader-pw").await.unwrap_err().starts_with("28000"));
    assert!(login(&server, "alice", "bob-pw").await.unwrap_err().starts_with("28P01"));

    // No grants: every statement kind is refused with 42501.
    let alice = as_user(&server, "alice", "alice-pw").await;
    for sql in [
        "SELECT * FROM t",
        "SELECT n FROM t_count",
        "SELECT * FROM t_ids",
        "SELECT * FROM (SELECT id FROM t) AS s",
        "WITH x AS (SELECT * FROM t) SELECT count(*) FROM x",
        "SELECT * FROM TUMBLE(t, id, INTERVAL '1' MINUTE)",
        "INSERT INTO t VALUES (3, 'three')",
        "UPDATE t SET v = 'uno' WHERE id = 1",
        "DELETE FROM t WHERE id = 1",
        "CREATE TABLE mine (x INT)",
        "CREATE MATERIALIZED VIEW mv2 AS SELECT count(*) FROM t",
        "DROP TABLE t CASCADE",
        "DROP MATERIALIZED VIEW t_count",
        "COMMENT ON TABLE t IS 'mine now'",
        "CREATE ROLE carol",
        "ALTER ROLE bob PASSWORD 'stolen'",
        "DROP ROLE bob",
        "GRANT SELECT ON t TO alice",
        "DECLARE c CURSOR FOR SUBSCRIBE TO t_count",
        "COPY t TO STDOUT",
        "COPY (SELECT * FROM t) TO STDOUT",
        "EXPLAIN SELECT * FROM t",
    ] {
        assert_eq!(code(&alice, sql).await, "42501", "{sql}");
    }
    // Over the extended protocol too, parameters and all.
    let denied = alice.query("SELECT v FROM t WHERE id = $1", &[&1i64]).await.unwrap_err();
    assert_eq!(denied.code().map(|c| c.code()), Some("42501"), "{}", describe(&denied));
    let copy_in = alice.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN").await;
    assert_eq!(copy_in.err().and_then(|e| e.code().map(|c| c.code().to_string())).as_deref(), Some("42501"));
    // What every role may do: catalogs, session commands, its own password.
    assert_eq!(values(&alice, "SELECT rolname FROM pg_roles WHERE rolname = 'bob'").await, vec!["bob"]);
    assert_eq!(values(&alice, "SELECT count(*) FROM pg_tables WHERE tablename = 't'").await, vec!["1"]);
    run(&alice, "SET application_name = 'x'; SHOW application_name; SELECT 1").await;
    assert_eq!(values(&alice, "SELECT current_user AS u, session_user AS s").await, vec!["alice|alice"]);
    run(&alice, "ALTER USER alice PASSWORD 'alice-pw2'").await;
    assert!(login(&server, "alice", "alice-pw").await.unwrap_err().starts_with("28P01"));
    let alice = as_user(&server, "alice", "alice-pw2").await;

    // Grants open exactly what they name.
    run(&admin, "GRANT SELECT, INSERT ON t TO alice; GRANT SELECT ON t_count TO PUBLIC").await;
    assert_eq!(values(&alice, "SELECT id, v FROM t ORDER BY id").await, vec!["1|one", "2|two"]);
    let typed = alice.query("SELECT v FROM t WHERE id = $1", &[&2i64]).await.expect("extended select");
    assert_eq!(typed[0].get::<_, String>(0), "two");
    run(&alice, "INSERT INTO t VALUES (3, 'three')").await;
    assert_eq!(values(&alice, "SELECT n FROM t_count").await, vec!["3"]);
    let bob = as_user(&server, "bob", "bob-pw").await;
    assert_eq!(values(&bob, "SELECT n FROM t_count").await, vec!["3"], "PUBLIC's grant reaches bob");
    assert_eq!(code(&bob, "SELECT * FROM t").await, "42501");
    assert_eq!(code(&alice, "UPDATE t SET v = 'uno' WHERE id = 1").await, "42501");
    assert_eq!(code(&alice, "DELETE FROM t WHERE id = 1").await, "42501");
    assert_eq!(code(&alice, "SELECT * FROM t_ids").await, "42501", "a view needs its own grant");
    run(&admin, "REVOKE INSERT ON t FROM alice").await;
    assert_eq!(code(&alice, "INSERT INTO t VALUES (4, 'four')").await, "42501");
    assert_eq!(values(&alice, "SELECT count(*) FROM t").await, vec!["3"]);

    // CREATE on the schema: alice's tables are hers to use and to share.
    run(&admin, "GRANT CREATE ON SCHEMA public TO alice").await;
    run(&alice, "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'hi')").await;
    run(&alice, "CREATE MATERIALIZED VIEW note_count AS SELECT count(*) AS n FROM notes").await;
    assert_eq!(
        values(&admin, "SELECT tablename, tableowner FROM pg_tables WHERE tablename IN ('notes', 't') ORDER BY 1")
            .await,
        vec!["notes|alice", "t|freshet"]
    );
    assert_eq!(code(&bob, "SELECT * FROM notes").await, "42501");
    run(&alice, "GRANT SELECT ON notes TO bob").await;
    assert_eq!(values(&bob, "SELECT body FROM notes").await, vec!["hi"]);
    assert_eq!(code(&alice, "GRANT SELECT ON t TO bob").await, "42501", "only the owner grants");
    assert_eq!(code(&admin, "DROP ROLE alice").await, "2BP01", "alice still owns notes");

    // Everything above is stored: restart with md5 for old clients.
    drop((admin, alice, bob));
    server.kill9();
    let server = TestServer::start_in(&data.0, &["--auth", "md5", "--superuser-password", "boot-secret"]);
    let alice = as_user(&server, "alice", "alice-pw2").await;
    assert_eq!(values(&alice, "SELECT count(*) FROM t").await, vec!["3"]);
    assert_eq!(code(&alice, "INSERT INTO t VALUES (4, 'four')").await, "42501");
    assert_eq!(values(&alice, "SELECT n FROM note_count").await, vec!["1"]);
    let bob = as_user(&server, "bob", "bob-pw").await;
    assert_eq!(values(&bob, "SELECT body FROM notes").await, vec!["hi"]);
    assert!(login(&server, "bob", "alice-pw2").await.unwrap_err().starts_with("28P01"));

    // psql lists the roles with their attributes.
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "freshet", "-d", "freshet"])
        .args(["-X", "-A", "-c", "\\du"])
        .env("PGPASSWORD", "boot-secret")
        .output()
        .expect("psql");
    let roles = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(roles.lines().any(|l| l.starts_with("freshet|") && l.contains("Superuser")), "{roles}");
    assert!(roles.lines().any(|l| l.starts_with("reader|") && l.contains("Cannot login")), "{roles}");
    assert!(roles.lines().any(|l| l.starts_with("alice|") && !l.contains("Superuser")), "{roles}");

    let admin = as_user(&server, "freshet", "boot-secret").await;
    run(&admin, "DROP TABLE notes CASCADE; REVOKE SELECT ON t FROM alice").await;
    run(&admin, "DROP ROLE alice").await;
    assert!(login(&server, "alice", "alice-pw2").await.unwrap_err().starts_with("28P01"));
    assert_eq!(code(&admin, "DROP ROLE freshet").await, "55006");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_generated_certificate() {
    let dir = TempDir::new("tls");
    let cert = dir.0.join("server.crt");
    let key = dir.0.join("server.key");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (make test installs it)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let server = TestServer::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
    ]);
    let psql = |sslmode: &str| {
        let conninfo = format!("host=127.0.0.1 port={} user=freshet dbname=freshet sslmode={sslmode}", server.port);
        let output = Command::new("psql")
            .args([&conninfo, "-X", "-A", "-t", "-c", "\\conninfo", "-c", "SELECT 40 + 2"])
            .output()
            .expect("psql");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "sslmode={sslmode}: {stderr}");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let encrypted = psql("require");
    assert!(encrypted.contains("SSL connection (protocol: TLSv1."), "{encrypted}");
    assert!(encrypted.lines().any(|l| l == "42"), "{encrypted}");
    // TLS stays optional for clients that do not ask for it.
    let plain = psql("disable");
    assert!(!plain.contains("SSL connection"), "{plain}");
    assert!(plain.lines().any(|l| l == "42"), "{plain}");
}
