//! COPY table | (query) TO STDOUT on the simple protocol: the rows as COPY
//! data in Postgres's text format (tab-separated, `\N` for NULL) or CSV,
//! optionally after a header line, batch by batch as the query produces
//! them.

use std::fmt::Debug;

use bytes::Bytes;
use datafusion::sql::sqlparser::ast::Statement;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format;
use pgwire::api::results::Tag;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};

use super::errors::to_pgwire;
use super::subscribe::{copy_line, data_rows, wire};
use crate::error::SqlError;
use crate::sql::Engine;
use crate::sql::command::CopyOut;

/// Runs the COPY and answers the client, in place of pgwire's query
/// handling (which has no COPY TO).
pub async fn serve<C>(engine: &Engine, client: &mut C, statement: &Statement, copy: CopyOut) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let status = super::respond::take_over(client)?;
    let outcome = copy_rows(engine, client, statement, copy).await;
    super::respond::hand_back(client, status, outcome).await
}

async fn copy_rows<C>(engine: &Engine, client: &mut C, statement: &Statement, copy: CopyOut) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let user = super::connection::session_user(client);
    crate::sql::authorize::check(engine, &user, statement).map_err(to_pgwire)?;
    crate::db::snapshot::begin_statement();
    let frame = engine.ctx.sql(&copy.query).await.map_err(|e| to_pgwire(SqlError::from_datafusion(&e)))?;
    let mut batches = frame.execute_stream().await.map_err(|e| to_pgwire(SqlError::from_datafusion(&e)))?;
    let schema = batches.schema();
    let fields = wire(&schema, &Format::UnifiedText)?;
    let columns = fields.len();
    let response = CopyOutResponse::new(0, columns as i16, vec![0; columns]);
    client.send(PgWireBackendMessage::CopyOutResponse(response)).await?;
    if copy.header {
        let names: Vec<String> = schema.fields().iter().map(|f| header_name(f.name(), copy.csv)).collect();
        let line = format!("{}\n", names.join(if copy.csv { "," } else { "\t" }));
        client.feed(PgWireBackendMessage::CopyData(CopyData::new(Bytes::from(line)))).await?;
    }
    let mut count = 0usize;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| to_pgwire(SqlError::from_datafusion(&e)))?;
        let mut chunk = Vec::with_capacity(batch.num_rows() * 16);
        for row in data_rows(&fields, batch).await? {
            chunk.extend_from_slice(&copy_line(&row, copy.csv));
            count += 1;
        }
        if !chunk.is_empty() {
            client.feed(PgWireBackendMessage::CopyData(CopyData::new(Bytes::from(chunk)))).await?;
        }
    }
    client.feed(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
    let tag = Tag::new("COPY").with_rows(count);
    client.send(PgWireBackendMessage::CommandComplete(tag.into())).await?;
    Ok(())
}

/// A column name in a header line, quoted in CSV when it must be.
fn header_name(name: &str, csv: bool) -> String {
    if csv && name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_string()
    }
}
