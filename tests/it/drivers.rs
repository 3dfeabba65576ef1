//! Real client drivers against a real server: psycopg2, psycopg 3 (server-
//! side binding, binary results), asyncpg, SQLAlchemy's inspector,
//! node-postgres and pgjdbc, each running the scripts in tests/drivers,
//! which assert the values they get back. `scripts/drivers.sh` installs the drivers once
//! (a virtualenv and an npm folder in a cache outside the repository).

use std::process::Command;

use crate::server::{TestServer, repo_root};

/// The path `scripts/drivers.sh <kind>` prints (after installing).
fn driver_path(kind: &str) -> String {
    let output =
        Command::new(repo_root().join("scripts/drivers.sh")).arg(kind).output().expect("run scripts/drivers.sh");
    assert!(
        output.status.success(),
        "installing the {kind} drivers failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn run_python(sections: &[&str]) {
    let python = driver_path("python");
    let server = TestServer::start();
    let output = Command::new(python)
        .arg(repo_root().join("tests/drivers/python_drivers.py"))
        .arg(server.port.to_string())
        .args(sections)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{sections:?} failed:\n{stdout}\n{stderr}");
    for section in sections {
        assert!(stdout.lines().any(|l| l == format!("ok {section}")), "{section} did not finish:\n{stdout}\n{stderr}");
    }
}

#[test]
fn psycopg2_typed_parameters_results_and_errors() {
    run_python(&["psycopg2"]);
}

#[test]
fn psycopg3_server_side_binding_text_and_binary() {
    run_python(&["psycopg"]);
}

#[test]
fn asyncpg_binary_protocol_and_prepared_statements() {
    run_python(&["asyncpg"]);
}

#[test]
fn sqlalchemy_inspector_reflects_tables_views_and_keys() {
    run_python(&["sqlalchemy"]);
}

#[test]
fn node_postgres_parameters_and_types() {
    let modules = driver_path("node");
    let server = TestServer::start();
    let output = Command::new("node")
        .arg(repo_root().join("tests/drivers/node_pg.js"))
        .arg(server.port.to_string())
        .env("NODE_PATH", modules)
        .output()
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("ok node-postgres"),
        "node-postgres failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn pgjdbc_parameters_metadata_and_transactions() {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        std::path::Path::new(jar).exists(),
        "{jar} is missing: scripts/install-deps.sh installs libpostgresql-jdbc-java"
    );
    let server = TestServer::start();
    let output = Command::new("java")
        .arg("-cp")
        .arg(jar)
        .arg(repo_root().join("tests/drivers/Jdbc.java"))
        .arg(server.port.to_string())
        .output()
        .expect("java must be installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("ok jdbc"), "pgjdbc failed:\n{stdout}\n{stderr}");
}
