//! `statement_timeout`: a statement still running when the session's
//! timeout has passed is canceled with 57014, as in PostgreSQL.
//!
//! The session's value is the one datafusion-postgres' SET hook keeps in the
//! connection's metadata (`SET statement_timeout = '2s'`; 0 turns it off).
//! The deadline covers all of a statement: planning and running it (the
//! handler's future, dropped at the deadline as a cancel request drops it)
//! and streaming its rows (a result stream ends with the error at the
//! deadline, after the rows already sent, as PostgreSQL's does).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use pgwire::api::ClientInfo;
use pgwire::api::results::Response;
use pgwire::error::{PgWireError, PgWireResult};
use tokio::time::Instant;

use super::errors::to_pgwire;
use crate::error::{SqlError, sqlstate};

/// Where datafusion-postgres keeps the session's statement_timeout (ms).
const METADATA_STATEMENT_TIMEOUT: &str = "statement_timeout_ms";

/// When the statement starting now must have finished, if the session set
/// a timeout.
pub fn deadline<C: ClientInfo + ?Sized>(client: &C) -> Option<Instant> {
    let millis: u64 = client.metadata().get(METADATA_STATEMENT_TIMEOUT)?.parse().ok()?;
    (millis > 0).then(|| Instant::now() + Duration::from_millis(millis))
}

fn canceled() -> PgWireError {
    to_pgwire(SqlError::new(sqlstate::QUERY_CANCELED, "canceling statement due to statement timeout"))
}

/// Runs `work` until `deadline` (without one, to its end).
pub async fn run_until<T>(deadline: Option<Instant>, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, work).await.unwrap_or_else(|_| Err(canceled())),
        None => work.await,
    }
}

/// `response` with its rows, if any, cut off at `deadline` by the error.
pub fn rows_until(response: Response, deadline: Option<Instant>) -> Response {
    let Some(at) = deadline else { return response };
    let mut query = match response {
        Response::Query(query) => query,
        other => return other,
    };
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    let timer = Box::pin(tokio::time::sleep_until(at));
    query.data_rows = Box::pin(futures::stream::unfold(Some((rows, timer)), |state| async move {
        let (mut rows, mut timer) = state?;
        tokio::select! {
            biased;
            row = rows.next() => row.map(|row| (row, Some((rows, timer)))),
            _ = &mut timer => Some((Err(canceled()), None)),
        }
    }));
    Response::Query(query)
}
