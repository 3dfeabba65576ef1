//! The `postgres-cdc` connector: a Postgres table's rows, then its changes.
//!
//! ```sql
//! CREATE SOURCE pg WITH (connector = 'postgres-cdc', hostname = '127.0.0.1', port = '5432',
//!     username = 'postgres', password = '…', database.name = 'shop');
//! CREATE TABLE orders (id BIGINT, amount NUMERIC(12,2), PRIMARY KEY (id))
//!     FROM pg TABLE 'public.orders';
//! ```
//!
//! The source only holds the connection settings. Each table created FROM
//! it reads one upstream table through a logical replication slot of its
//! own (`slot.name`, default `freshet_<table>`; a `slot.name` given on the
//! source is used as a prefix) and a publication (`publication.name`,
//! default the slot's name, created FOR TABLE the upstream table when it
//! does not exist).
//!
//! Exactly once. The slot is created with an exported snapshot; the table's
//! rows are copied at that snapshot and delivered as one read, at the slot's
//! consistent point. From there, each upstream transaction arrives whole at
//! its commit (pgoutput) and is applied as keyed changes in one epoch. The
//! table's read position is the commit LSN of the last transaction applied,
//! written with the rows; the slot's confirmed LSN is moved only to positions
//! already committed here ([`SourceReader::committed`]). After a restart (of
//! Freshet or of Postgres) streaming resumes from the slot, and transactions
//! at or before the stored position are skipped: nothing is lost or repeated.
//!
//! The replication session runs in a background task that hands complete
//! transactions over a bounded channel (backpressure: a table that falls
//! behind stops the stream, and Postgres keeps the WAL). A lost connection
//! is retried with backoff and shown in `freshet_catalog.source_status`.
//!
//! Values arrive as Postgres text and are cast to the table's column types
//! a column at a time; a row with a value that does not cast is kept as a
//! bad record (with its LSN) instead of being applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use datafusion::arrow::array::{Array, ArrayRef, BinaryBuilder, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options, concat, concat_batches};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use parking_lot::Mutex;
use pgwire_replication::client::{ReplicationClient, ReplicationEvent};
use pgwire_replication::{Lsn, ReplicationConfig, TlsConfig};
use tokio::sync::mpsc;

use super::{BadRecord, Connector, ConnectorOptions, KeyedChanges, KeyedReader, Retry, SourcePosition};
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::change::all_nullable;

pub const CONNECTOR: &str = "postgres-cdc";
/// Option naming the upstream table (`schema.table`), from `FROM src TABLE '…'`.
pub const TABLE_OPTION: &str = "table.name";
/// Transactions buffered between the replication session and the table.
const CHANNEL_TRANSACTIONS: usize = 256;

/// How to reach the upstream database.
#[derive(Clone, Debug)]
struct Connection {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
}

impl Connection {
    fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database)
            .application_name("freshet")
            .connect_timeout(Duration::from_secs(5));
        config
    }

    async fn connect(&self) -> std::result::Result<tokio_postgres::Client, String> {
        let (client, connection) = self.config().connect(tokio_postgres::NoTls).await.map_err(|e| describe(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => error.to_string(),
    }
}

/// What one table reads.
#[derive(Clone, Debug)]
struct Upstream {
    schema: String,
    table: String,
    slot: String,
    publication: String,
    key_columns: Vec<String>,
}

impl Upstream {
    fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What the replication task hands the table.
enum Delivery {
    /// The table's rows at the slot's consistent point.
    Snapshot { lsn: u64, changes: KeyedChanges, bad: Vec<BadRecord> },
    /// One upstream transaction, ending at `end_lsn`.
    Transaction { end_lsn: u64, changes: KeyedChanges, bad: Vec<BadRecord> },
    /// The stream cannot go on (the slot is gone, the table changed).
    Failed(SqlError),
}

/// State shared with the replication task.
#[derive(Default)]
struct Shared {
    status: Mutex<String>,
    /// The position committed here: what the slot may confirm.
    committed: AtomicU64,
    stop: AtomicBool,
    /// Drop the slot (and a publication we created) when stopping.
    release: AtomicBool,
}

pub struct PostgresCdcReader {
    connection: Connection,
    /// `None` for the source itself, which only holds settings.
    upstream: Option<Upstream>,
    schema: SchemaRef,
    shared: Arc<Shared>,
    deliveries: Mutex<Option<mpsc::Receiver<Delivery>>>,
}

fn bad_option(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, message)
}

impl PostgresCdcReader {
    pub fn new(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Self> {
        options.reject_unknown(&|key| {
            matches!(
                key,
                "connector"
                    | "hostname"
                    | "port"
                    | "username"
                    | "password"
                    | "database.name"
                    | "schema.name"
                    | "slot.name"
                    | "publication.name"
                    | TABLE_OPTION
                    | super::PRIMARY_KEY_OPTION
            )
        })?;
        let need = |key: &str| {
            options
                .get(key)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| bad_option(format!("connector '{CONNECTOR}' needs {key} = '…'")))
        };
        let port = match options.get("port") {
            None => 5432,
            Some(p) => p.trim().parse().map_err(|_| bad_option(format!("port = '{p}' is not a port number")))?,
        };
        let connection = Connection {
            host: need("hostname")?,
            port,
            user: need("username")?,
            password: options.get("password").unwrap_or_default().to_string(),
            database: need("database.name")?,
        };
        let schema = declared.unwrap_or_else(|| Arc::new(Schema::empty()));
        let upstream = match options.get(TABLE_OPTION) {
            None => None,
            Some(name) => {
                let (schema_name, table) = match name.split_once('.') {
                    Some((s, t)) => (s.to_string(), t.to_string()),
                    None => (options.get("schema.name").unwrap_or("public").to_string(), name.to_string()),
                };
                if table.is_empty() || schema_name.is_empty() {
                    return Err(bad_option(format!("table '{name}' is not a table name like 'public.orders'")));
                }
                let key_columns: Vec<String> = options
                    .get(super::PRIMARY_KEY_OPTION)
                    .map(|k| k.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect())
                    .unwrap_or_default();
                if key_columns.is_empty() {
                    return Err(SqlError::new(
                        sqlstate::INVALID_TABLE_DEFINITION,
                        format!("a table FROM a '{CONNECTOR}' source needs a PRIMARY KEY (the upstream table's)"),
                    ));
                }
                let slot = options.get("slot.name").map(str::to_string).unwrap_or_else(|| format!("freshet_{table}"));
                if !slot.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') || slot.len() > 63 {
                    return Err(bad_option(format!(
                        "slot.name = '{slot}': a replication slot name has lower-case letters, digits and _ only (at most 63)"
                    )));
                }
                let publication = options.get("publication.name").map(str::to_string).unwrap_or_else(|| slot.clone());
                Some(Upstream { schema: schema_name, table, slot, publication, key_columns })
            }
        };
        Ok(Self { connection, upstream, schema, shared: Arc::new(Shared::default()), deliveries: Mutex::new(None) })
    }

    /// Runs `future` to completion from synchronous code on a runtime thread.
    fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| SqlError::internal("the postgres-cdc connector needs the server's runtime"))?;
        Ok(tokio::task::block_in_place(|| handle.block_on(future)))
    }

    /// At CREATE: the database answers with wal_level = logical, and the
    /// upstream table has the declared columns with compatible types and
    /// the same primary key.
    async fn check_upstream(&self) -> Result<()> {
        let unreachable = |e: String| {
            SqlError::new(
                sqlstate::UNABLE_TO_CONNECT,
                format!("cannot connect to Postgres at {}:{}: {e}", self.connection.host, self.connection.port),
            )
        };
        let client = self.connection.connect().await.map_err(unreachable)?;
        let query_error = |e: tokio_postgres::Error| SqlError::new(sqlstate::UNABLE_TO_CONNECT, describe(&e));
        let wal_level: String = client.query_one("SHOW wal_level", &[]).await.map_err(query_error)?.get(0);
        if wal_level != "logical" {
            return Err(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("Postgres runs with wal_level = {wal_level}; CDC needs wal_level = logical"),
            ));
        }
        let Some(upstream) = &self.upstream else { return Ok(()) };
        let columns = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
                   AND a.attnum > 0 AND NOT a.attisdropped",
                &[&upstream.schema, &upstream.table],
            )
            .await
            .map_err(|e| {
                SqlError::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("upstream table {}.{}: {}", upstream.schema, upstream.table, describe(&e)),
                )
            })?;
        let found: HashMap<String, (String, String)> =
            columns.iter().map(|row| (row.get(0), (row.get(1), row.get(2)))).collect();
        for field in self.schema.fields() {
            let Some((shown, type_name)) = found.get(field.name()) else {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!(
                        "column \"{}\" does not exist in upstream table {}.{}",
                        field.name(),
                        upstream.schema,
                        upstream.table
                    ),
                ));
            };
            if !compatible(type_name, field.data_type()) {
                return Err(SqlError::new(
                    sqlstate::DATATYPE_MISMATCH,
                    format!(
                        "column \"{}\" is {} here but {shown} in upstream table {}.{}",
                        field.name(),
                        field.data_type(),
                        upstream.schema,
                        upstream.table
                    ),
                ));
            }
        }
        let key: Vec<String> = client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&upstream.schema, &upstream.table],
            )
            .await
            .map_err(query_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if key != upstream.key_columns {
            return Err(SqlError::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!(
                    "the PRIMARY KEY ({}) differs from upstream table {}.{}'s ({})",
                    upstream.key_columns.join(", "),
                    upstream.schema,
                    upstream.table,
                    if key.is_empty() { "none".to_string() } else { key.join(", ") }
                ),
            ));
        }
        Ok(())
    }

    /// Starts the replication task, resuming after `position`.
    fn start(&self, position: &SourcePosition) -> Result<mpsc::Receiver<Delivery>> {
        let upstream = self.upstream.clone().ok_or_else(|| {
            SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                "a postgres-cdc source is read through tables: CREATE TABLE t (…) FROM source TABLE 'schema.table'",
            )
        })?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| SqlError::internal("the postgres-cdc connector needs the server's runtime"))?;
        let (sender, receiver) = mpsc::channel(CHANNEL_TRANSACTIONS);
        self.shared.committed.store(position.next, Ordering::SeqCst);
        let task = ReplicationTask {
            connection: self.connection.clone(),
            upstream,
            schema: self.schema.clone(),
            shared: self.shared.clone(),
            sender,
            resume_from: position.next,
        };
        handle.spawn(task.run());
        Ok(receiver)
    }
}

/// Whether a Postgres type's text can be cast to a column type.
fn compatible(pg_type: &str, data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Boolean => pg_type == "bool",
        DataType::Int16 | DataType::Int32 | DataType::Int64 => matches!(pg_type, "int2" | "int4" | "int8"),
        DataType::Float32 | DataType::Float64 => {
            matches!(pg_type, "int2" | "int4" | "int8" | "float4" | "float8" | "numeric")
        }
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
            matches!(pg_type, "int2" | "int4" | "int8" | "numeric")
        }
        DataType::Date32 | DataType::Date64 => pg_type == "date",
        DataType::Timestamp(_, None) => matches!(pg_type, "timestamp" | "date"),
        DataType::Timestamp(_, Some(_)) => matches!(pg_type, "timestamptz" | "timestamp"),
        DataType::Time64(_) | DataType::Time32(_) => pg_type == "time",
        DataType::Interval(_) => pg_type == "interval",
        DataType::Binary | DataType::LargeBinary => pg_type == "bytea",
        _ => false,
    }
}

impl Connector for PostgresCdcReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn check(&self) -> Result<()> {
        Self::block_on(self.check_upstream())?
    }

    fn status(&self) -> Option<String> {
        let status = self.shared.status.lock().clone();
        Some(if status.is_empty() { "starting".to_string() } else { status })
    }

    fn committed(&self, position: &SourcePosition) {
        self.shared.committed.fetch_max(position.next, Ordering::SeqCst);
    }

    fn release(&self) {
        let Some(upstream) = self.upstream.clone() else { return };
        self.shared.release.store(true, Ordering::SeqCst);
        self.shared.stop.store(true, Ordering::SeqCst);
        let running = self.deliveries.lock().take().is_some();
        let connection = self.connection.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        if !running {
            // No task to stop: drop what a previous run left.
            handle.spawn(async move { drop_slot(&connection, &upstream).await });
        }
    }
}

impl KeyedReader for PostgresCdcReader {
    fn read_changes(
        &self,
        position: &mut SourcePosition,
        _now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<KeyedChanges> {
        let mut slot = self.deliveries.lock();
        if slot.is_none() {
            *slot = Some(self.start(position)?);
        }
        let Some(receiver) = slot.as_mut() else { return Err(SqlError::internal("no replication task")) };
        let mut parts: Vec<KeyedChanges> = Vec::new();
        let mut count = 0usize;
        while count < max_records {
            let delivery = match receiver.try_recv() {
                Ok(delivery) => delivery,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    *slot = None;
                    return Err(SqlError::internal("the replication task ended"));
                }
            };
            match delivery {
                Delivery::Snapshot { lsn, changes, bad: rejected } if position.next == 0 => {
                    position.next = lsn;
                    count += changes.rows.num_rows().max(1);
                    bad.extend(rejected);
                    parts.push(changes);
                }
                // A snapshot taken again after this table already had one.
                Delivery::Snapshot { .. } => {}
                Delivery::Transaction { end_lsn, changes, bad: rejected } => {
                    // Applied before a restart or a reconnection: skip.
                    if end_lsn <= position.next {
                        continue;
                    }
                    position.next = end_lsn;
                    count += changes.rows.num_rows().max(1);
                    bad.extend(rejected);
                    parts.push(changes);
                }
                Delivery::Failed(error) => {
                    *slot = None;
                    return Err(error);
                }
            }
        }
        drop(slot);
        let nullable = all_nullable(&self.schema);
        let batches: Vec<RecordBatch> = parts.iter().map(|p| p.rows.clone()).collect();
        let rows = concat_batches(&nullable, &batches)?;
        let mut unchanged = Vec::new();
        let mut offset = 0u32;
        for part in &parts {
            unchanged.extend(part.unchanged.iter().map(|&(row, column)| (row + offset, column)));
            offset += part.rows.num_rows() as u32;
        }
        let deletes: Vec<&dyn Array> = parts.iter().map(|p| &p.deletes as &dyn Array).collect();
        let deletes = if deletes.is_empty() {
            BooleanArray::from(Vec::<bool>::new())
        } else {
            concat(&deletes)?
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| SqlError::internal("deletes are not booleans"))?
        };
        Ok(KeyedChanges { rows, deletes, unchanged })
    }
}

/// Drops a table's slot (retrying while its session lets go of it) and
/// the publication if it is the one made for it.
async fn drop_slot(connection: &Connection, upstream: &Upstream) {
    let Ok(client) = connection.connect().await else { return };
    for _ in 0..50 {
        let dropped = client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&upstream.slot],
            )
            .await;
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if upstream.publication == upstream.slot {
        let _ =
            client.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&upstream.publication))).await;
    }
}

/// One row change of a transaction, as text values in our column order.
struct TextChange {
    values: Vec<Option<String>>,
    /// Columns the upstream left out as unchanged (TOASTed values).
    unchanged: Vec<usize>,
    delete: bool,
    /// Where it came from (the bad record's offset if it does not cast).
    lsn: u64,
}

/// The replication session of one table, reconnecting until stopped.
struct ReplicationTask {
    connection: Connection,
    upstream: Upstream,
    schema: SchemaRef,
    shared: Arc<Shared>,
    sender: mpsc::Sender<Delivery>,
    /// The end of the last snapshot or transaction handed over (0: none:
    /// the table needs its snapshot).
    resume_from: u64,
}

/// A session error: worth retrying, or the end.
enum SessionError {
    Retry(String),
    Fatal(SqlError),
    Stopped,
}

impl ReplicationTask {
    async fn run(mut self) {
        let mut retry = Retry::default();
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            match self.session().await {
                Ok(()) | Err(SessionError::Stopped) => break,
                Err(SessionError::Fatal(error)) => {
                    tracing::warn!(table = %self.upstream.table, %error, "postgres-cdc stream failed");
                    *self.shared.status.lock() = format!("failed: {}", error.message);
                    let _ = self.sender.send(Delivery::Failed(error)).await;
                    return;
                }
                Err(SessionError::Retry(error)) => {
                    let wait = retry.failed();
                    tracing::warn!(table = %self.upstream.table, %error, retry_in = ?wait, "postgres-cdc stream");
                    *self.shared.status.lock() = format!("retrying: {error}");
                    tokio::time::sleep(wait).await;
                }
            }
            if self.sender.is_closed() {
                break;
            }
        }
        if self.shared.release.load(Ordering::SeqCst) {
            drop_slot(&self.connection, &self.upstream).await;
        }
    }

    async fn session(&mut self) -> std::result::Result<(), SessionError> {
        let retry = SessionError::Retry;
        let setup = self.connection.connect().await.map_err(retry)?;
        let query_error = |e: tokio_postgres::Error| SessionError::Retry(describe(&e));
        let publication_exists = !setup
            .query("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&self.upstream.publication])
            .await
            .map_err(query_error)?
            .is_empty();
        if !publication_exists {
            setup
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    quote_ident(&self.upstream.publication),
                    self.upstream.qualified()
                ))
                .await
                .map_err(|e| SessionError::Fatal(SqlError::new(sqlstate::UNABLE_TO_CONNECT, describe(&e))))?;
        }
        let slot_exists = !setup
            .query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&self.upstream.slot])
            .await
            .map_err(query_error)?
            .is_empty();
        if slot_exists && self.resume_from == 0 {
            // A slot from a table whose snapshot never committed: start over.
            setup.execute("SELECT pg_drop_replication_slot($1)", &[&self.upstream.slot]).await.map_err(query_error)?;
        }
        if !slot_exists && self.resume_from != 0 {
            return Err(SessionError::Fatal(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "replication slot \"{}\" no longer exists; changes after LSN {} cannot be read (drop and create the table again)",
                    self.upstream.slot,
                    Lsn::from_u64(self.resume_from)
                ),
            )));
        }
        let committed = self.shared.committed.load(Ordering::SeqCst);
        let config = ReplicationConfig::new(
            self.connection.host.clone(),
            self.connection.user.clone(),
            self.connection.password.clone(),
            self.connection.database.clone(),
            self.upstream.slot.clone(),
            self.upstream.publication.clone(),
        )
        .with_port(self.connection.port)
        .with_tls(TlsConfig::disabled())
        .with_start_lsn(Lsn::from_u64(self.resume_from))
        .with_ack_lsn(Lsn::from_u64(committed))
        .with_status_interval(Duration::from_millis(500))
        .with_application_name("freshet");
        let mut client = ReplicationClient::connect_gated(config).await.map_err(|e| retry(e.to_string()))?;
        if self.resume_from == 0 {
            self.snapshot(&mut client, &setup).await?;
        }
        drop(setup);
        client.start().await.map_err(|e| retry(e.to_string()))?;
        client.wait_started().await.map_err(|e| retry(e.to_string()))?;
        *self.shared.status.lock() = "reading".to_string();
        let mut decoder = Decoder::new(&self.upstream, &self.schema);
        let mut acked = committed;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            let event = tokio::select! {
                event = client.recv() => event,
                _ = tick.tick() => {
                    if self.shared.stop.load(Ordering::SeqCst) || self.sender.is_closed() {
                        let _ = client.shutdown().await;
                        return Err(SessionError::Stopped);
                    }
                    let committed = self.shared.committed.load(Ordering::SeqCst);
                    if committed > acked {
                        client.update_applied_lsn(Lsn::from_u64(committed));
                        acked = committed;
                    }
                    continue;
                }
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => return Err(retry("the replication stream ended".to_string())),
                Err(error) => return Err(retry(error.to_string())),
            };
            match event {
                ReplicationEvent::Begin { .. } => decoder.begin(),
                ReplicationEvent::XLogData { data, wal_start, .. } => {
                    decoder.message(data, wal_start.as_u64()).map_err(SessionError::Fatal)?;
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    let end_lsn = end_lsn.as_u64();
                    let changes = decoder.commit();
                    if end_lsn <= self.resume_from {
                        continue;
                    }
                    let (changes, bad) = to_changes(&self.schema, &changes);
                    let changes = changes.map_err(SessionError::Fatal)?;
                    // A bounded channel: a table that falls behind holds the stream.
                    if self.sender.send(Delivery::Transaction { end_lsn, changes, bad }).await.is_err() {
                        return Err(SessionError::Stopped);
                    }
                    self.resume_from = end_lsn;
                }
                _ => {}
            }
        }
    }

    /// Creates the slot with an exported snapshot, copies the table at it,
    /// and hands the rows over at the slot's consistent point.
    async fn snapshot(
        &mut self,
        client: &mut ReplicationClient,
        setup: &tokio_postgres::Client,
    ) -> std::result::Result<(), SessionError> {
        let retry = |e: String| SessionError::Retry(e);
        *self.shared.status.lock() = "snapshot".to_string();
        let created = client
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(&self.upstream.slot)
            ))
            .await
            .map_err(|e| retry(e.to_string()))?;
        let text = |i: usize| -> Option<String> {
            created.first()?.get(i)?.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let (Some(point), Some(snapshot)) = (text(1), text(2)) else {
            return Err(retry("CREATE_REPLICATION_SLOT returned no snapshot".to_string()));
        };
        let lsn = Lsn::parse(&point).map_err(|e| retry(e.to_string()))?.as_u64();
        let columns: Vec<String> = self.schema.fields().iter().map(|f| quote_ident(f.name())).collect();
        let select = format!("SELECT {} FROM {}", columns.join(", "), self.upstream.qualified());
        let query_error = |e: tokio_postgres::Error| SessionError::Retry(describe(&e));
        setup
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(&snapshot)
            ))
            .await
            .map_err(query_error)?;
        let messages = setup.simple_query(&select).await.map_err(query_error)?;
        setup.batch_execute("COMMIT").await.map_err(query_error)?;
        let mut rows: Vec<TextChange> = Vec::new();
        for message in messages {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                let values = (0..self.schema.fields().len()).map(|i| row.get(i).map(str::to_string)).collect();
                rows.push(TextChange { values, unchanged: Vec::new(), delete: false, lsn });
            }
        }
        let (changes, bad) = to_changes(&self.schema, &rows);
        let changes = changes.map_err(SessionError::Fatal)?;
        if self.sender.send(Delivery::Snapshot { lsn, changes, bad }).await.is_err() {
            return Err(SessionError::Stopped);
        }
        self.resume_from = lsn;
        Ok(())
    }
}

/// Decodes pgoutput change messages of one table into text rows.
struct Decoder {
    schema_name: String,
    table: String,
    /// Our column count, and per upstream relation id the position of each
    /// of its columns among ours (`None`: a column we do not read), or
    /// `None` for a relation that is not our table.
    width: usize,
    names: Vec<String>,
    relations: HashMap<u32, Option<Vec<Option<usize>>>>,
    changes: Vec<TextChange>,
}

fn protocol(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::IO_ERROR, format!("pgoutput: {}", message.into()))
}

fn take_string(data: &mut Bytes) -> Result<String> {
    let end = data.iter().position(|&b| b == 0).ok_or_else(|| protocol("unterminated string"))?;
    let text = String::from_utf8_lossy(data.get(..end).unwrap_or_default()).into_owned();
    data.advance(end + 1);
    Ok(text)
}

fn need(data: &Bytes, bytes: usize) -> Result<()> {
    if data.remaining() < bytes { Err(protocol("truncated message")) } else { Ok(()) }
}

impl Decoder {
    fn new(upstream: &Upstream, schema: &SchemaRef) -> Self {
        Self {
            schema_name: upstream.schema.clone(),
            table: upstream.table.clone(),
            width: schema.fields().len(),
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            relations: HashMap::new(),
            changes: Vec::new(),
        }
    }

    fn begin(&mut self) {
        self.changes.clear();
    }

    fn commit(&mut self) -> Vec<TextChange> {
        std::mem::take(&mut self.changes)
    }

    fn message(&mut self, mut data: Bytes, lsn: u64) -> Result<()> {
        need(&data, 1)?;
        let tag = data.get_u8();
        match tag {
            b'R' => {
                need(&data, 4)?;
                let id = data.get_u32();
                let namespace = take_string(&mut data)?;
                let name = take_string(&mut data)?;
                need(&data, 3)?;
                let _identity = data.get_u8();
                let count = data.get_u16() as usize;
                let mut positions = Vec::with_capacity(count);
                for _ in 0..count {
                    need(&data, 1)?;
                    let _flags = data.get_u8();
                    let column = take_string(&mut data)?;
                    need(&data, 8)?;
                    let _type = data.get_u32();
                    let _modifier = data.get_i32();
                    positions.push(self.names.iter().position(|n| *n == column));
                }
                let ours = namespace == self.schema_name && name == self.table;
                if ours
                    && let Some(missing) =
                        self.names.iter().find(|n| !positions.iter().flatten().any(|&p| self.names.get(p) == Some(*n)))
                {
                    return Err(SqlError::new(
                        sqlstate::DATATYPE_MISMATCH,
                        format!("upstream table {namespace}.{name} no longer has column \"{missing}\""),
                    ));
                }
                self.relations.insert(id, ours.then_some(positions));
            }
            b'I' => {
                need(&data, 5)?;
                let id = data.get_u32();
                let _new = data.get_u8();
                self.tuple(id, &mut data, false, lsn)?;
            }
            b'U' => {
                need(&data, 5)?;
                let id = data.get_u32();
                let mut kind = data.get_u8();
                if kind == b'K' || kind == b'O' {
                    // The old key or row: the key may have changed.
                    self.tuple(id, &mut data, true, lsn)?;
                    need(&data, 1)?;
                    kind = data.get_u8();
                }
                if kind != b'N' {
                    return Err(protocol(format!("update without a new tuple ({})", kind as char)));
                }
                self.tuple(id, &mut data, false, lsn)?;
            }
            b'D' => {
                need(&data, 5)?;
                let id = data.get_u32();
                let _kind = data.get_u8();
                self.tuple(id, &mut data, true, lsn)?;
            }
            b'T' => {
                need(&data, 9)?;
                let count = data.get_u32() as usize;
                let _options = data.get_u8();
                for _ in 0..count {
                    need(&data, 4)?;
                    let id = data.get_u32();
                    if matches!(self.relations.get(&id), Some(Some(_))) {
                        return Err(SqlError::not_supported(format!(
                            "TRUNCATE of upstream table {}.{} (drop and create the table again)",
                            self.schema_name, self.table
                        )));
                    }
                }
            }
            // Types, origins, logical messages: nothing to apply.
            _ => {}
        }
        Ok(())
    }

    /// Reads a TupleData; keeps it if it is our table's.
    fn tuple(&mut self, id: u32, data: &mut Bytes, delete: bool, lsn: u64) -> Result<()> {
        need(data, 2)?;
        let count = data.get_u16() as usize;
        let positions = self.relations.get(&id).cloned().flatten();
        let mut values: Vec<Option<String>> = vec![None; self.width];
        let mut unchanged = Vec::new();
        for i in 0..count {
            need(data, 1)?;
            let kind = data.get_u8();
            let at = positions.as_ref().and_then(|p| p.get(i).copied().flatten());
            let value = match kind {
                b'n' => None,
                b'u' => {
                    unchanged.extend(at);
                    None
                }
                b't' | b'b' => {
                    need(data, 4)?;
                    let len = data.get_u32() as usize;
                    need(data, len)?;
                    let text = String::from_utf8_lossy(data.get(..len).unwrap_or_default()).into_owned();
                    data.advance(len);
                    Some(text)
                }
                other => return Err(protocol(format!("unknown tuple value kind {}", other as char))),
            };
            if let Some(slot) = at.and_then(|at| values.get_mut(at)) {
                *slot = value;
            }
        }
        if positions.is_some() {
            self.changes.push(TextChange { values, unchanged, delete, lsn });
        }
        Ok(())
    }
}

/// Text rows to typed keyed changes: each column is cast at once; a row
/// with a value that does not cast becomes a bad record.
fn to_changes(schema: &SchemaRef, rows: &[TextChange]) -> (Result<KeyedChanges>, Vec<BadRecord>) {
    let mut bad_rows = vec![false; rows.len()];
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (c, field) in schema.fields().iter().enumerate() {
        let text: StringArray = rows
            .iter()
            .map(|r| r.values.get(c).and_then(Option::as_deref).map(|v| normalize(v, field.data_type())))
            .collect();
        let column = match field.data_type() {
            DataType::Binary | DataType::LargeBinary => {
                let mut builder = BinaryBuilder::with_capacity(rows.len(), 0);
                for (value, bad) in text.iter().zip(bad_rows.iter_mut()) {
                    match value.map(decode_bytea) {
                        None => builder.append_null(),
                        Some(Some(bytes)) => builder.append_value(bytes),
                        Some(None) => {
                            *bad = true;
                            builder.append_null();
                        }
                    }
                }
                let array: ArrayRef = Arc::new(builder.finish());
                match cast_with_options(&array, field.data_type(), &CastOptions::default()) {
                    Ok(array) => array,
                    Err(error) => return (Err(error.into()), Vec::new()),
                }
            }
            other => match cast_with_options(&text, other, &CastOptions::default()) {
                Ok(array) => array,
                Err(error) => return (Err(error.into()), Vec::new()),
            },
        };
        // A value that did not cast came out NULL.
        for (i, bad) in bad_rows.iter_mut().enumerate() {
            if column.is_null(i) && !text.is_null(i) {
                *bad = true;
            }
        }
        columns.push(column);
    }
    let nullable = all_nullable(schema);
    let batch = match RecordBatch::try_new_with_options(
        nullable,
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    ) {
        Ok(batch) => batch,
        Err(error) => return (Err(error.into()), Vec::new()),
    };
    let mut bad = Vec::new();
    let bad_ones = rows.iter().zip(&bad_rows).enumerate().filter(|(_, (_, bad))| **bad);
    for (i, (row, _)) in bad_ones {
        let payload: Vec<String> = row.values.iter().map(|v| v.clone().unwrap_or_else(|| "NULL".into())).collect();
        bad.push(BadRecord {
            partition: 0,
            offset: row.lsn as i64,
            payload: payload.join("\t").into_bytes(),
            error: format!(
                "a value does not fit its column: {}",
                schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(c, _)| row.values.get(*c).is_some_and(Option::is_some) && batch.column(*c).is_null(i))
                    .map(|(_, f)| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let keep = BooleanArray::from(bad_rows.iter().map(|b| !b).collect::<Vec<_>>());
    // Unchanged cells, at the rows' places once bad rows are gone.
    let mut unchanged = Vec::new();
    let mut kept_row = 0u32;
    for (row, &bad) in rows.iter().zip(&bad_rows) {
        if bad {
            continue;
        }
        unchanged.extend(row.unchanged.iter().map(|&c| (kept_row, c as u32)));
        kept_row += 1;
    }
    let deletes = BooleanArray::from(rows.iter().map(|r| r.delete).collect::<Vec<_>>());
    let result = (|| -> Result<KeyedChanges> {
        let rows = datafusion::arrow::compute::filter_record_batch(&batch, &keep)?;
        let deletes = datafusion::arrow::compute::filter(&deletes, &keep)?;
        let deletes = deletes
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| SqlError::internal("deletes are not booleans"))?;
        Ok(KeyedChanges { rows, deletes, unchanged })
    })();
    (result, bad)
}

/// Postgres text a cast can read: a `+HH` zone offset as `+HH:00`.
fn normalize(value: &str, data_type: &DataType) -> String {
    if let DataType::Timestamp(_, Some(_)) = data_type {
        let zone_hours =
            matches!(value.as_bytes(), [_, .., b'+' | b'-', h, k] if h.is_ascii_digit() && k.is_ascii_digit());
        if zone_hours {
            return format!("{value}:00");
        }
    }
    value.to_string()
}

/// `\x0102ff` to bytes.
fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{Field, TimeUnit};

    use super::*;

    #[test]
    fn text_rows_cast_and_bad_values_are_singled_out() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())), true),
            Field::new("b", DataType::Binary, true),
        ]));
        let row = |id: &str, ts: Option<&str>, b: Option<&str>, delete| TextChange {
            values: vec![Some(id.into()), ts.map(Into::into), b.map(Into::into)],
            unchanged: Vec::new(),
            delete,
            lsn: 7,
        };
        let rows = vec![
            row("1", Some("2024-01-02 03:04:05+00"), Some("\\x01ff"), false),
            row("x", None, None, false),
            row("3", None, None, true),
        ];
        let (changes, bad) = to_changes(&schema, &rows);
        let changes = changes.expect("cast");
        assert_eq!(changes.rows.num_rows(), 2);
        let ids = changes.rows.column(0).as_any().downcast_ref::<Int64Array>().expect("ids");
        assert_eq!(ids.values().to_vec(), vec![1, 3]);
        let ts = changes.rows.column(1).as_any().downcast_ref::<TimestampNanosecondArray>().expect("ts");
        assert_eq!(ts.value(0), 1_704_164_645_000_000_000);
        assert_eq!(changes.deletes.iter().collect::<Vec<_>>(), vec![Some(false), Some(true)]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].offset, 7);
        assert!(bad[0].error.contains("id"), "{}", bad[0].error);
        assert_eq!(decode_bytea("\\x01ff"), Some(vec![1, 255]));
    }
}
