//! A real PostgreSQL server for a test (started with scripts/postgres.sh,
//! wal_level = logical), and a client of it.

use std::process::Command;

use crate::server::{repo_root, tempdir::TempDir};

pub struct Postgres {
    pub port: u16,
    data: TempDir,
}

fn script(args: &[&str]) -> String {
    let output = Command::new(repo_root().join("scripts/postgres.sh")).args(args).output().expect("run postgres.sh");
    assert!(output.status.success(), "postgres.sh {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Postgres {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        // Under /tmp: the server runs as user postgres, which must reach it.
        let data = TempDir::new("postgres");
        let dir = data.0.join("pgdata");
        script(&["start", &port.to_string(), &dir.to_string_lossy()]);
        Self { port, data }
    }

    fn dir(&self) -> String {
        self.data.0.join("pgdata").to_string_lossy().into_owned()
    }

    /// Stops the server at once (like a crash) and starts it again.
    pub fn restart(&self) {
        script(&["restart", &self.port.to_string(), &self.dir()]);
    }

    pub fn stop(&self) {
        script(&["stop", &self.dir()]);
    }

    /// Starts it again after [`stop`](Self::stop).
    pub fn start_again(&self) {
        script(&["start", &self.port.to_string(), &self.dir()]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        crate::server::connect_to(&self.url()).await
    }

    /// Settings of a postgres-cdc source reading this server.
    pub fn cdc_options(&self) -> String {
        format!(
            "connector = 'postgres-cdc', hostname = '127.0.0.1', port = '{}', username = 'postgres', \
             password = 'x', database.name = 'postgres'",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/postgres.sh")).args(["stop", &self.dir()]).output();
        // The data dir belongs to user postgres; TempDir removes it as root.
    }
}
