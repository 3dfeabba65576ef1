//! COPY table | (query) TO STDOUT on the simple protocol: the rows as COPY
//! data in Postgres's text format (tab-separated, `\N` for NULL) or CSV,
//! optionally after a header line, batch by batch as the query produces
//! them.

use std::fmt::Debug;

use bytes::Bytes;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::Tag;
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::response::ReadyForQuery;

use super::errors::to_pgwire;
use super::subscribe::{copy_line, data_rows, wire};
use crate::error::{Result, SqlError};
use crate::sql::Engine;

/// What a COPY … TO STDOUT asks for.
pub struct CopyOut {
    query: String,
    csv: bool,
    header: bool,
}

/// The COPY … TO STDOUT in `sql`, if that is what it is.
pub fn parse(sql: &str) -> Option<Result<(Statement, CopyOut)>> {
    let trimmed = sql.trim_start();
    // `get`, not `[..4]`: the fourth byte may fall inside a character.
    if !trimmed.get(..4).is_some_and(|word| word.eq_ignore_ascii_case("copy")) {
        return None;
    }
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let statement = statements.remove(0);
    let Statement::Copy { source, to: true, target: CopyTarget::Stdout, options, legacy_options, .. } = &statement
    else {
        return None;
    };
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table { table_name, columns } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table { table_name, columns } => {
            let list: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
            format!("SELECT {} FROM {table_name}", list.join(", "))
        }
    };
    let mut copy = CopyOut { query, csv: false, header: false };
    for option in options {
        match option {
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => copy.csv = true,
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => copy.csv = false,
            CopyOption::Header(header) => copy.header = *header,
            other => return Some(Err(SqlError::not_supported(format!("COPY TO option {other}")))),
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Csv(csv_options) => {
                copy.csv = true;
                for csv_option in csv_options {
                    match csv_option {
                        CopyLegacyCsvOption::Header => copy.header = true,
                        other => return Some(Err(SqlError::not_supported(format!("COPY TO option {other}")))),
                    }
                }
            }
            CopyLegacyOption::Header => copy.header = true,
            other => return Some(Err(SqlError::not_supported(format!("COPY TO option {other}")))),
        }
    }
    Some(Ok((statement, copy)))
}

/// Runs the COPY and answers the client, in place of pgwire's query
/// handling (which has no COPY TO).
pub async fn serve<C>(engine: &Engine, client: &mut C, statement: &Statement, copy: CopyOut) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
        return Err(PgWireError::NotReadyForQuery);
    }
    client.set_state(PgWireConnectionState::QueryInProgress);
    let transaction_status = client.transaction_status();
    if let Err(error) = copy_rows(engine, client, statement, copy).await {
        let info = super::errors::error_info(error);
        client.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
    }
    client.set_state(PgWireConnectionState::ReadyForQuery);
    client.send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(transaction_status))).await?;
    Ok(())
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
