//! The session timeouts. `statement_timeout`: a statement still running
//! when the session's timeout has passed is canceled with 57014, as in
//! PostgreSQL. `idle_in_transaction_session_timeout`: a session left idle
//! inside a transaction block longer than that is terminated with 25P03
//! (its block rolled back), so it holds nothing forever; the watchdog that
//! ends the connection lives in `connection`.
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

/// Where the session's idle_in_transaction_session_timeout is kept (the
/// session hook stores every SET in the connection's metadata).
const IDLE_IN_TRANSACTION_SETTING: &str = "idle_in_transaction_session_timeout";

/// A duration setting in milliseconds: a plain number is milliseconds, as
/// in PostgreSQL; any unit `crate::duration` reads is understood.
fn parse_millis(text: &str) -> Option<u64> {
    u64::try_from(crate::duration::parse(text, crate::duration::Unit::Milliseconds)?.as_millis()).ok()
}

/// Called when a statement (or an extended-protocol Sync) has been answered:
/// if the session is now idle inside a transaction block and has an
/// idle_in_transaction_session_timeout, arms the connection's deadline
/// (past it the connection is terminated with 25P03); otherwise disarms it.
fn arm_idle_in_transaction<C: ClientInfo + ?Sized>(client: &C) {
    use pgwire::api::PgWireConnectionState;
    use pgwire::messages::response::TransactionStatus;
    let in_block = crate::db::transaction::is_open() || client.transaction_status() != TransactionStatus::Idle;
    let copying = matches!(client.state(), PgWireConnectionState::CopyInProgress(_));
    let timeout = client.metadata().get(IDLE_IN_TRANSACTION_SETTING).and_then(|v| parse_millis(v)).filter(|ms| *ms > 0);
    let deadline = match timeout {
        Some(ms) if in_block && !copying => Some(Instant::now() + Duration::from_millis(ms)),
        _ => None,
    };
    super::connection::set_idle_deadline(deadline);
}

/// Called when a statement (or an extended-protocol Sync) has been
/// answered: arms the idle-in-transaction deadline, and lets go of the
/// statement's snapshot (an idle session holds none: a failed store is
/// reopened only once no reader holds it; see `db::store_health`).
pub fn answered<C: ClientInfo + ?Sized>(client: &C) {
    arm_idle_in_transaction(client);
    crate::db::snapshot::begin_statement();
}

/// Called when a statement starts: the session is busy, not idle.
pub fn busy() {
    super::connection::set_idle_deadline(None);
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn durations_as_postgres_reads_them() {
        assert_eq!(parse_millis("1500"), Some(1500));
        assert_eq!(parse_millis("'2s'"), Some(2000));
        assert_eq!(parse_millis("250ms"), Some(250));
        assert_eq!(parse_millis("1min"), Some(60_000));
        assert_eq!(parse_millis("0"), Some(0));
        assert_eq!(parse_millis("soon"), None);
        assert_eq!(parse_millis("5 parsecs"), None);
    }
}
