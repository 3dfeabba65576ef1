//! Runs the sqllogictest suites under sql/slt/ against a real server, over
//! the Postgres wire protocol (simple query protocol, text results).

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

use crate::server::TestServer;

struct Freshet {
    client: tokio_postgres::Client,
}

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SltError {}

#[async_trait]
impl AsyncDB for Freshet {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let messages = self.client.simple_query(sql).await.map_err(|e| {
            let detail = e
                .as_db_error()
                .map(|d| format!("{}: {}", d.code().code(), d.message()))
                .unwrap_or_else(|| e.to_string());
            SltError(detail)
        })?;
        let mut rows = Vec::new();
        let mut columns = 0;
        let mut is_query = false;
        for message in messages {
            match message {
                tokio_postgres::SimpleQueryMessage::RowDescription(desc) => {
                    is_query = true;
                    columns = desc.len();
                }
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    is_query = true;
                    columns = row.len();
                    rows.push((0..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_string()).collect::<Vec<_>>());
                }
                tokio_postgres::SimpleQueryMessage::CommandComplete(_) => {}
                _ => {}
            }
        }
        if is_query {
            Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; columns], rows })
        } else {
            Ok(DBOutput::StatementComplete(0))
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "freshet"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_suites() {
    let dir = crate::server::repo_root().join("sql/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("sql/slt")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        // A fresh server per file: suites do not see each other's objects.
        // Every epoch checkpoints, so suites can read stored state sizes.
        let server = TestServer::start_with(&["--checkpoint-interval-ms", "0"]);
        let client = server.connect().await;
        let mut runner = sqllogictest::Runner::new(|| {
            let client_url = server.url();
            async move {
                let (client, connection) = tokio_postgres::connect(&client_url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| SltError(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(Freshet { client })
            }
        });
        drop(client);
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} suites failed:\n{}", failures.len(), files.len(), failures.join("\n\n"));
}
