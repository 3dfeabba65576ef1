//! Transaction blocks on the wire: BEGIN / START TRANSACTION, COMMIT / END,
//! ROLLBACK / ABORT, SAVEPOINT, RELEASE and ROLLBACK TO, and Postgres's
//! rule that after an error in a block every statement is refused (25P02)
//! until the block ends. pgwire tracks the block's state for ReadyForQuery;
//! `db::transaction` keeps its snapshot and staged writes.
//!
//! DDL inside a block takes effect at once (as in Materialize); only table
//! writes wait for COMMIT.

use datafusion::sql::sqlparser::ast::{Statement, TransactionAccessMode, TransactionMode};
use datafusion_postgres::hooks::HookClient;
use futures::Sink;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::{NoticeResponse, TransactionStatus};

use super::errors::to_pgwire;
use crate::db::transaction;
use crate::error::{SqlError, sqlstate};
use crate::sql::Engine;

pub(super) fn aborted() -> PgWireError {
    to_pgwire(SqlError::new(
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    ))
}

async fn warn(client: &mut dyn HookClient, code: &str, message: &str) -> PgWireResult<()> {
    let notice = ErrorInfo::new("WARNING".to_string(), code.to_string(), message.to_string());
    client.send_message(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(notice))).await
}

pub(super) fn is_transaction_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
    )
}

/// Answers a transaction statement. Whether a block is open is our
/// slot's to say: pgwire's status lags behind within one simple query
/// of several statements (`BEGIN; INSERT …; COMMIT`); its Error state
/// says an earlier statement of the block failed.
pub(super) async fn respond(
    engine: &Engine,
    statement: &Statement,
    client: &mut dyn HookClient,
) -> PgWireResult<Response> {
    let failed = client.transaction_status() == TransactionStatus::Error;
    let open = transaction::is_open();
    match statement {
        Statement::StartTransaction { .. } if failed => Err(aborted()),
        Statement::StartTransaction { .. } if open => {
            warn(client, "25001", "there is already a transaction in progress").await?;
            Ok(Response::Execution(Tag::new("BEGIN")))
        }
        Statement::StartTransaction { modes, .. } => {
            let read_only =
                modes.iter().any(|m| matches!(m, TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)));
            transaction::begin(engine.coordinator.store().as_ref(), read_only);
            Ok(Response::TransactionStart(Tag::new("BEGIN")))
        }
        Statement::Commit { .. } if failed => {
            drop(transaction::take());
            Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
        }
        Statement::Commit { .. } => match transaction::take() {
            Some(open) => {
                open.commit(&engine.coordinator, &engine.catalog).await.map_err(to_pgwire)?;
                Ok(Response::TransactionEnd(Tag::new("COMMIT")))
            }
            None => {
                warn(client, "25P01", "there is no transaction in progress").await?;
                Ok(Response::TransactionEnd(Tag::new("COMMIT")))
            }
        },
        Statement::Rollback { savepoint: None, .. } => {
            if !open && !failed {
                warn(client, "25P01", "there is no transaction in progress").await?;
            }
            drop(transaction::take());
            Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
        }
        Statement::Rollback { savepoint: Some(name), .. } => {
            savepoint(failed, "ROLLBACK TO SAVEPOINT", |open| open.to_savepoint(&name.value, true))?;
            Ok(Response::Execution(Tag::new("ROLLBACK")))
        }
        Statement::Savepoint { name } => {
            savepoint(failed, "SAVEPOINT", |open| {
                open.savepoint(name.value.clone());
                Ok(())
            })?;
            Ok(Response::Execution(Tag::new("SAVEPOINT")))
        }
        Statement::ReleaseSavepoint { name } => {
            savepoint(failed, "RELEASE SAVEPOINT", |open| open.to_savepoint(&name.value, false))?;
            Ok(Response::Execution(Tag::new("RELEASE")))
        }
        other => Err(to_pgwire(SqlError::internal(format!("not a transaction statement: {other}")))),
    }
}

/// A savepoint command, valid only inside a block.
fn savepoint(
    failed: bool,
    command: &str,
    apply: impl FnOnce(&mut transaction::Transaction) -> crate::error::Result<()>,
) -> PgWireResult<()> {
    if failed {
        return Err(to_pgwire(SqlError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("{command} after an error in a transaction block: ROLLBACK the whole transaction"),
        )));
    }
    match transaction::with_open(apply) {
        Some(result) => result.map_err(to_pgwire),
        None => Err(to_pgwire(SqlError::new(
            sqlstate::NO_ACTIVE_SQL_TRANSACTION,
            format!("{command} can only be used in transaction blocks"),
        ))),
    }
}

/// COMMIT sent as a simple query, answered here in full: a COMMIT that
/// fails (a concurrent transaction won) still ends the block, as in
/// Postgres, so the client is told the session is idle again, which
/// pgwire's status tracking cannot express. `None` outside an open block
/// (or in a failed one), where COMMIT goes the usual way.
pub async fn simple_commit<C>(engine: &Engine, client: &mut C) -> Option<PgWireResult<()>>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if client.transaction_status() == TransactionStatus::Error || !transaction::is_open() {
        return None;
    }
    let open = transaction::take()?;
    let message = match open.commit(&engine.coordinator, &engine.catalog).await {
        Ok(()) => PgWireBackendMessage::CommandComplete(Tag::new("COMMIT").into()),
        Err(error) => {
            let info = ErrorInfo::new("ERROR".to_string(), error.code.to_string(), error.message);
            PgWireBackendMessage::ErrorResponse(info.into())
        }
    };
    let sent = async {
        futures::SinkExt::feed(client, message).await?;
        client.set_transaction_status(TransactionStatus::Idle);
        pgwire::api::query::send_ready_for_query(client, TransactionStatus::Idle).await
    };
    Some(sent.await)
}

/// A COMMIT that failed where we could not answer it in full (over the
/// extended protocol, or inside a query of several statements) left pgwire
/// believing the block failed; the block is over, so the session is idle.
/// Called before each query and at each Sync.
pub fn end_failed_commit<C: ClientInfo + ?Sized>(client: &mut C) {
    if client.transaction_status() == TransactionStatus::Error && !transaction::is_open() {
        client.set_transaction_status(TransactionStatus::Idle);
    }
}
