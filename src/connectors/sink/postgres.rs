//! The `postgres` sink: a view's rows in a Postgres table.
//!
//! Each epoch is one Postgres transaction: deletes by key, then upserts
//! (`INSERT … ON CONFLICT (key) DO UPDATE`), both as one statement over the
//! epoch's rows passed as a single JSON parameter (`json_populate_recordset`
//! turns it into rows of the target table's own types), and the epoch
//! number in `freshet_sink_progress` under the sink's name. After a crash
//! or a lost connection the progress row says which epochs are in: those
//! are skipped. Without a primary key (`type = 'append-only'`) rows are
//! only inserted.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{SinkShape, SinkType, SinkWriter, json_array};
use crate::connectors::ConnectorOptions;
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::ChangeBatch;

/// Where every sink's last written epoch is kept, in the target database.
const PROGRESS_TABLE: &str = "freshet_sink_progress";

pub struct PostgresSink {
    name: String,
    config: tokio_postgres::Config,
    target: String,
    shape: SinkShape,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` or `table`, quoted.
fn quote_qualified(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

fn failed(error: tokio_postgres::Error) -> SqlError {
    let message = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(&error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    };
    SqlError::new(sqlstate::UNABLE_TO_CONNECT, format!("Postgres sink: {message}"))
}

impl PostgresSink {
    pub fn new(name: &str, options: &ConnectorOptions, shape: SinkShape) -> Result<Self> {
        options.reject_unknown(&|key| {
            matches!(
                key,
                "connector"
                    | "url"
                    | "hostname"
                    | "port"
                    | "username"
                    | "user"
                    | "password"
                    | "database.name"
                    | "table"
                    | "table.name"
                    | "type"
                    | "primary_key"
                    | "force_append_only"
                    | "format"
                    | "encode"
            )
        })?;
        let bad = |m: String| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, m);
        let mut config = match options.get("url") {
            Some(url) => url.parse::<tokio_postgres::Config>().map_err(|e| bad(format!("url = '{url}': {e}")))?,
            None => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(options.get("hostname").ok_or_else(|| bad("a postgres sink needs url or hostname".into()))?)
                    .port(match options.get("port") {
                        None => 5432,
                        Some(p) => p.parse().map_err(|_| bad(format!("port = '{p}' is not a port number")))?,
                    })
                    .user(options.get("username").or(options.get("user")).unwrap_or("postgres"))
                    .dbname(options.get("database.name").unwrap_or("postgres"));
                if let Some(password) = options.get("password") {
                    config.password(password);
                }
                config
            }
        };
        config.application_name("freshet").connect_timeout(Duration::from_secs(5));
        let target = options
            .get("table")
            .or(options.get("table.name"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("a postgres sink needs table = 'target_table'".into()))?
            .to_string();
        if shape.kind == SinkType::Debezium {
            return Err(SqlError::not_supported("type = 'debezium' for a postgres sink (append-only or upsert)"));
        }
        Ok(Self { name: name.to_string(), config, target, shape, client: Mutex::new(None) })
    }

    fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| SqlError::internal("the postgres sink needs the server's runtime"))?;
        Ok(tokio::task::block_in_place(|| handle.block_on(future)))
    }

    async fn connect(&self) -> Result<Arc<tokio_postgres::Client>> {
        if let Some(client) = self.client.lock().clone().filter(|c| !c.is_closed()) {
            return Ok(client);
        }
        let (client, connection) = self.config.connect(tokio_postgres::NoTls).await.map_err(failed)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (sink TEXT PRIMARY KEY, epoch BIGINT NOT NULL)"
            ))
            .await
            .map_err(failed)?;
        let client = Arc::new(client);
        *self.client.lock() = Some(client.clone());
        Ok(client)
    }

    /// Drops the connection after a failure (the next call reconnects).
    fn reset<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            *self.client.lock() = None;
        }
        result
    }

    fn columns(&self) -> Vec<String> {
        self.shape.schema.fields().iter().map(|f| quote_ident(f.name())).collect()
    }

    async fn write_epoch(&self, epoch: u64, changes: &ChangeBatch) -> Result<()> {
        let shaped = self.shape.shape(changes)?;
        let client = self.connect().await?;
        let target = quote_qualified(&self.target);
        let columns = self.columns().join(", ");
        let mut statements: Vec<(String, String)> = Vec::new();
        if shaped.deletes.num_rows() > 0 {
            let matches: Vec<String> = self
                .shape
                .key
                .iter()
                .map(|&i| {
                    let c = quote_ident(self.shape.schema.field(i).name());
                    format!("t.{c} = d.{c}")
                })
                .collect();
            statements.push((
                format!(
                    "DELETE FROM {target} AS t USING json_populate_recordset(NULL::{target}, $1::text::json) AS d WHERE {}",
                    matches.join(" AND ")
                ),
                json_array(&shaped.deletes)?,
            ));
        }
        if shaped.upserts.num_rows() > 0 {
            let conflict = if self.shape.key.is_empty() {
                String::new()
            } else {
                let keys: Vec<String> =
                    self.shape.key.iter().map(|&i| quote_ident(self.shape.schema.field(i).name())).collect();
                let sets: Vec<String> = self
                    .columns()
                    .into_iter()
                    .filter(|c| !keys.contains(c))
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                if sets.is_empty() {
                    format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
                } else {
                    format!(" ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), sets.join(", "))
                }
            };
            statements.push((
                format!(
                    "INSERT INTO {target} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{target}, $1::text::json){conflict}"
                ),
                json_array(&shaped.upserts)?,
            ));
        }
        // One transaction: the rows and the epoch that holds them.
        client.batch_execute("BEGIN").await.map_err(failed)?;
        let body = async {
            for (sql, rows) in &statements {
                client.execute(sql.as_str(), &[rows]).await.map_err(failed)?;
            }
            client
                .execute(
                    &format!(
                        "INSERT INTO {PROGRESS_TABLE} (sink, epoch) VALUES ($1, $2) \
                         ON CONFLICT (sink) DO UPDATE SET epoch = EXCLUDED.epoch"
                    ),
                    &[&self.name, &(epoch as i64)],
                )
                .await
                .map_err(failed)?;
            client.batch_execute("COMMIT").await.map_err(failed)
        };
        match body.await {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(error)
            }
        }
    }
}

impl SinkWriter for PostgresSink {
    fn delivered(&self) -> Result<Option<u64>> {
        let result = Self::block_on(async {
            let client = self.connect().await?;
            let rows = client
                .query(&format!("SELECT epoch FROM {PROGRESS_TABLE} WHERE sink = $1"), &[&self.name])
                .await
                .map_err(failed)?;
            Ok(rows.first().map(|row| row.get::<_, i64>(0) as u64))
        })?;
        self.reset(result)
    }

    fn write(&self, epoch: u64, changes: &ChangeBatch) -> Result<()> {
        let result = Self::block_on(self.write_epoch(epoch, changes))?;
        self.reset(result)
    }

    fn check(&self) -> Result<()> {
        let result = Self::block_on(async {
            let client = self.connect().await?;
            let target = quote_qualified(&self.target);
            client.query(&format!("SELECT {} FROM {target} LIMIT 0", self.columns().join(", ")), &[]).await.map_err(
                |e| {
                    let mut error = failed(e);
                    error.code = sqlstate::UNDEFINED_TABLE;
                    error.message =
                        format!("the target table {} does not fit the sink: {}", self.target, error.message);
                    error
                },
            )?;
            Ok(())
        })?;
        self.reset(result)
    }
}
