//! SUBSCRIBE on the wire: a table's or materialized view's rows, then
//! every committed change, as rows `(epoch, op, <columns>)` with op
//! `insert` or `delete` (a row whose count changed by n comes n times).
//!
//! - `SUBSCRIBE [TO] name [WITH (snapshot = false)]` (simple protocol):
//!   rows stream to the client as epochs commit, until it cancels (57014)
//!   or disconnects. Each epoch's rows are flushed at once.
//! - `COPY (SUBSCRIBE …) TO STDOUT [WITH (FORMAT csv)]`: the same as COPY
//!   data, so `psql` prints changes as they come.
//! - `DECLARE c CURSOR FOR SUBSCRIBE …`, then `FETCH [n | ALL] [FROM] c
//!   [WITH (timeout = '1s')]` and `CLOSE c` (both protocols, any driver):
//!   FETCH returns what has arrived, waiting for at least one row unless
//!   the timeout passes first.
//!
//! The statements are read by `sql::command`; how the changes are kept and
//! handed over is `db::subscribe`'s.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, ConnectionHandle};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyOutResponse};
use pgwire::messages::data::DataRow;
use tokio::sync::Mutex as AsyncMutex;

use crate::catalog::RelationKind;
use crate::db::subscribe::Feed;
use crate::error::{Result, SqlError, sqlstate};
use crate::sql::Engine;
use crate::sql::command::{SubscribeCommand, Target};
use crate::stream::ChangeBatch;

/// One subscription's output: its schema and where its rows come from.
pub struct Subscription {
    pub schema: SchemaRef,
    feed: Feed,
    /// Rows that arrived but were not handed out yet.
    ready: VecDeque<RecordBatch>,
    relation: String,
}

impl Subscription {
    /// Starts following the relation (its rows first, if asked).
    pub async fn start(engine: &Engine, target: &Target) -> Result<Self> {
        let relation = engine.catalog.by_name(&target.relation).ok_or_else(|| {
            SqlError::new(sqlstate::UNDEFINED_TABLE, format!("relation \"{}\" does not exist", target.relation))
        })?;
        if !matches!(relation.kind, RelationKind::Table | RelationKind::MaterializedView) {
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!(
                    "\"{}\" is a {}: SUBSCRIBE follows tables and materialized views (create a materialized view over it)",
                    relation.name,
                    relation.kind.noun()
                ),
            ));
        }
        engine.coordinator.run_state(relation.id).check_healthy(&relation)?;
        let mut fields = vec![Field::new("epoch", DataType::Int64, false), Field::new("op", DataType::Utf8, false)];
        fields.extend(relation.schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
        let schema = Arc::new(Schema::new(fields));
        let (epoch, rows, feed) = engine.coordinator.subscribe(&relation, target.snapshot).await?;
        let mut subscription = Self { schema, feed, ready: VecDeque::new(), relation: relation.name.to_string() };
        if let Some(rows) = rows {
            let weights = Int64Array::from(vec![1; rows.num_rows()]);
            subscription.push(epoch, &ChangeBatch::new(rows, weights))?;
        }
        Ok(subscription)
    }

    /// Changes as output rows: a row of weight w comes |w| times.
    fn push(&mut self, epoch: crate::state::Epoch, changes: &ChangeBatch) -> Result<()> {
        let mut indices = Vec::new();
        let mut ops = Vec::new();
        for (i, weight) in changes.weights.values().iter().enumerate() {
            for _ in 0..weight.unsigned_abs() {
                indices.push(i as u32);
                ops.push(if *weight > 0 { "insert" } else { "delete" });
            }
        }
        if indices.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(indices);
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(vec![epoch as i64; indices.len()])), Arc::new(StringArray::from(ops))];
        for column in changes.rows.columns() {
            columns.push(take(column.as_ref(), &indices, None)?);
        }
        self.ready.push_back(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    /// Moves what has arrived into `ready`; waits for something if
    /// nothing is ready and `wait` (None: wait as long as it takes).
    async fn receive(&mut self, wait: Option<Duration>) -> Result<()> {
        while let Ok(update) = self.feed.updates.try_recv() {
            self.push(update.epoch, &update.changes)?;
        }
        if !self.ready.is_empty() {
            return Ok(());
        }
        let next = match wait {
            Some(wait) if wait.is_zero() => return self.check_open(),
            Some(wait) => match tokio::time::timeout(wait, self.feed.updates.recv()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            },
            None => self.feed.updates.recv().await,
        };
        match next {
            Some(update) => self.push(update.epoch, &update.changes),
            None => self.check_open(),
        }
    }

    /// An error once the feed has ended (cut off, or the relation dropped).
    fn check_open(&self) -> Result<()> {
        if self.feed.cut_off.load(Ordering::Acquire) {
            return Err(SqlError::new(
                "53000",
                format!(
                    "SUBSCRIBE to \"{}\" ended: the client fell {} epochs behind",
                    self.relation,
                    crate::db::subscribe::QUEUE_EPOCHS
                ),
            ));
        }
        if self.feed.updates.is_closed() && self.feed.updates.is_empty() {
            return Err(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("SUBSCRIBE to \"{}\" ended: the relation was dropped", self.relation),
            ));
        }
        Ok(())
    }

    /// Up to `limit` ready rows (None: all that are ready).
    fn take_rows(&mut self, limit: Option<usize>) -> Result<RecordBatch> {
        let mut out = Vec::new();
        let mut left = limit.unwrap_or(usize::MAX);
        while left > 0 {
            let Some(batch) = self.ready.pop_front() else { break };
            if batch.num_rows() <= left {
                left -= batch.num_rows();
                out.push(batch);
            } else {
                out.push(batch.slice(0, left));
                self.ready.push_front(batch.slice(left, batch.num_rows() - left));
                left = 0;
            }
        }
        Ok(datafusion::arrow::compute::concat_batches(&self.schema, &out)?)
    }
}

/// A connection's subscription cursors, in its session extensions.
#[derive(Default)]
pub struct Cursors {
    by_name: parking_lot::Mutex<HashMap<String, Arc<AsyncMutex<Subscription>>>>,
}

impl Cursors {
    pub fn of(client: &(impl ClientInfo + ?Sized)) -> Arc<Cursors> {
        client.session_extensions().get_or_insert_with(Cursors::default)
    }

    pub fn get(&self, name: &str) -> Option<Arc<AsyncMutex<Subscription>>> {
        self.by_name.lock().get(name).cloned()
    }

    fn insert(&self, name: String, subscription: Subscription) -> Result<()> {
        let mut by_name = self.by_name.lock();
        if by_name.contains_key(&name) {
            return Err(SqlError::new("42P03", format!("cursor \"{name}\" already exists")));
        }
        by_name.insert(name, Arc::new(AsyncMutex::new(subscription)));
        Ok(())
    }

    /// Closes one cursor (whether it was ours) or all.
    fn close(&self, name: Option<&str>) -> bool {
        let mut by_name = self.by_name.lock();
        match name {
            Some(name) => by_name.remove(name).is_some(),
            None => {
                by_name.clear();
                true
            }
        }
    }
}

pub(super) fn wire(fields: &SchemaRef, format: &Format) -> PgWireResult<Arc<Vec<FieldInfo>>> {
    Ok(Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(fields, format, None)?))
}

/// The rows of `batch` as DataRows, printed as Postgres prints values.
pub(super) async fn data_rows(fields: &Arc<Vec<FieldInfo>>, batch: RecordBatch) -> PgWireResult<Vec<DataRow>> {
    let rows: Vec<PgWireResult<DataRow>> = arrow_pg::datatypes::encode_recordbatch(fields.clone(), batch).collect();
    let response = QueryResponse::new(fields.clone(), futures::stream::iter(rows));
    let Response::Query(mut fixed) = super::pg_text::postgres_text(Response::Query(response)) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    while let Some(row) = fixed.data_rows().next().await {
        out.push(row?);
    }
    Ok(out)
}

/// Serves DECLARE, FETCH and CLOSE of subscription cursors (both
/// protocols; `format`: the result formats the client asked for);
/// `None` for a FETCH or CLOSE of another cursor.
pub async fn serve_cursor_command(
    engine: &Engine,
    client: &(dyn ClientInfo + Send + Sync),
    command: &SubscribeCommand,
    format: &Format,
) -> Option<PgWireResult<(Option<SchemaRef>, Response)>> {
    let cursors = Cursors::of(client);
    let result: PgWireResult<(Option<SchemaRef>, Response)> = match command {
        SubscribeCommand::Declare { cursor, target } => {
            let user = super::connection::session_user(client);
            let started = match crate::sql::authorize::check_subscribe(engine, &user, &target.relation) {
                Ok(()) => Subscription::start(engine, target).await,
                Err(denied) => Err(denied),
            };
            match started.and_then(|s| cursors.insert(cursor.clone(), s)) {
                Ok(()) => Ok((None, Response::Execution(Tag::new("DECLARE CURSOR")))),
                Err(error) => Err(super::errors::to_pgwire(error)),
            }
        }
        SubscribeCommand::Fetch { cursor, count, timeout } => {
            let subscription = cursors.get(cursor)?;
            let mut subscription = subscription.lock().await;
            let fetched = async {
                subscription.receive(*timeout).await?;
                subscription.take_rows(*count)
            }
            .await;
            match fetched {
                Ok(batch) => {
                    let schema = subscription.schema.clone();
                    let rows = match wire(&schema, format) {
                        Ok(fields) => data_rows(&fields, batch).await.map(|rows| (fields, rows)),
                        Err(error) => Err(error),
                    };
                    rows.map(|(fields, rows)| {
                        let response = QueryResponse::new(fields, futures::stream::iter(rows.into_iter().map(Ok)));
                        (Some(schema), Response::Query(response))
                    })
                }
                Err(error) => Err(super::errors::to_pgwire(error)),
            }
        }
        SubscribeCommand::Close(name) => {
            if !cursors.close(name.as_deref()) {
                return None;
            }
            Ok((None, Response::Execution(Tag::new("CLOSE CURSOR"))))
        }
        SubscribeCommand::Subscribe(_) | SubscribeCommand::Copy { .. } => return None,
    };
    Some(result)
}

/// A FETCH's result columns, for a client that describes it first.
pub fn fetch_schema(client: &(dyn ClientInfo + Send + Sync), command: &SubscribeCommand) -> Option<SchemaRef> {
    let SubscribeCommand::Fetch { cursor, .. } = command else { return None };
    let subscription = Cursors::of(client).get(cursor)?;

    subscription.try_lock().ok().map(|s| s.schema.clone())
}

/// One text-format COPY line (tab-separated, `\N` for NULL) or CSV line
/// of a DataRow of text values.
pub(super) fn copy_line(row: &DataRow, csv: bool) -> Vec<u8> {
    let mut line = Vec::with_capacity(row.data.len() + 8);
    let data = &row.data[..];
    let mut at = 0;
    for i in 0..row.field_count.max(0) as usize {
        if i > 0 {
            line.push(if csv { b',' } else { b'\t' });
        }
        let Some(len) = data.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(i32::from_be_bytes) else {
            break;
        };
        at += 4;
        if len < 0 {
            if !csv {
                line.extend_from_slice(b"\\N");
            }
            continue;
        }
        let value = data.get(at..at + len as usize).unwrap_or_default();
        at += len as usize;
        if csv {
            let quote = value.is_empty() || value.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
            if quote {
                line.push(b'"');
            }
            for &b in value {
                if b == b'"' {
                    line.push(b'"');
                }
                line.push(b);
            }
            if quote {
                line.push(b'"');
            }
        } else {
            for &b in value {
                match b {
                    b'\\' => line.extend_from_slice(b"\\\\"),
                    b'\t' => line.extend_from_slice(b"\\t"),
                    b'\n' => line.extend_from_slice(b"\\n"),
                    b'\r' => line.extend_from_slice(b"\\r"),
                    other => line.push(other),
                }
            }
        }
    }
    line.push(b'\n');
    line
}

/// Runs a streaming SUBSCRIBE or COPY (SUBSCRIBE …) on the simple
/// protocol, in place of pgwire's query handling (which would hold rows
/// back until the statement ends): rows go out epoch by epoch until the
/// client cancels or goes away.
pub async fn stream<C>(engine: &Engine, client: &mut C, command: SubscribeCommand) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let status = super::respond::take_over(client)?;
    let cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
        Some(handle) => Some(handle.start_query().await),
        None => None,
    };
    let outcome = follow(engine, client, command, cancel).await;
    super::respond::hand_back(client, status, outcome).await
}

async fn follow<C>(
    engine: &Engine,
    client: &mut C,
    command: SubscribeCommand,
    cancel: Option<futures::channel::oneshot::Receiver<()>>,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let (target, copy_csv) = match command {
        SubscribeCommand::Subscribe(target) => (target, None),
        SubscribeCommand::Copy { target, csv } => (target, Some(csv)),
        _ => return Err(PgWireError::ApiError("not a streaming SUBSCRIBE".into())),
    };
    let user = super::connection::session_user(client);
    crate::sql::authorize::check_subscribe(engine, &user, &target.relation).map_err(super::errors::to_pgwire)?;
    let mut subscription = Subscription::start(engine, &target).await.map_err(super::errors::to_pgwire)?;
    let fields = wire(&subscription.schema, &Format::UnifiedText)?;
    match copy_csv {
        None => {
            let description = pgwire::messages::data::RowDescription::new(fields.iter().map(Into::into).collect());
            client.send(PgWireBackendMessage::RowDescription(description)).await?;
        }
        Some(_) => {
            let columns = fields.len() as i16;
            let response = CopyOutResponse::new(0, columns, vec![0; fields.len()]);
            client.send(PgWireBackendMessage::CopyOutResponse(response)).await?;
        }
    }
    let mut cancel = cancel;
    loop {
        let receive = subscription.receive(None);
        let received = match cancel.as_mut() {
            Some(cancel) => tokio::select! {
                received = receive => received,
                _ = cancel => return Err(PgWireError::QueryCanceled),
            },
            None => receive.await,
        };
        received.map_err(super::errors::to_pgwire)?;
        let batch = subscription.take_rows(None).map_err(super::errors::to_pgwire)?;
        if batch.num_rows() == 0 {
            continue;
        }
        for row in data_rows(&fields, batch).await? {
            match copy_csv {
                None => client.feed(PgWireBackendMessage::DataRow(row)).await?,
                Some(csv) => {
                    let line = Bytes::from(BytesMut::from(&copy_line(&row, csv)[..]));
                    client.feed(PgWireBackendMessage::CopyData(CopyData::new(line))).await?
                }
            }
        }
        // Each epoch's rows reach the client now, not when a buffer fills.
        client.flush().await?;
    }
}
