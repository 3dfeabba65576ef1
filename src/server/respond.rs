//! A statement's outcome as the wire answer pgwire sends: a command tag
//! (with the row count where Postgres gives one) or the rows, encoded as
//! the portal asks; the empty plan that describes a statement without
//! rows at Parse; and the frame of a simple-protocol statement the server
//! answers itself, in place of pgwire ([`take_over`], [`hand_back`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use futures::{Sink, SinkExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{Response, Tag};
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};

use super::errors::to_pgwire;
use crate::sql::Outcome;

pub(super) async fn respond(outcome: crate::error::Result<Outcome>) -> PgWireResult<Response> {
    respond_in(outcome, &Format::UnifiedText).await
}

/// [`respond`], with rows encoded in `format` (a portal's result format).
pub(super) async fn respond_in(outcome: crate::error::Result<Outcome>, format: &Format) -> PgWireResult<Response> {
    match outcome.map_err(to_pgwire)? {
        Outcome::Command { tag, rows } => {
            let mut tag_out = Tag::new(tag);
            if tag == "INSERT" {
                tag_out = tag_out.with_oid(0);
            }
            if let Some(rows) = rows {
                tag_out = tag_out.with_rows(rows);
            }
            Ok(Response::Execution(tag_out))
        }
        Outcome::Rows(frame) => {
            let response = arrow_pg::datatypes::df::encode_dataframe(frame, format, None).await?;
            Ok(Response::Query(response))
        }
    }
}

pub(super) fn no_rows_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(DFSchema::try_from(Schema::empty()).unwrap_or_else(|_| DFSchema::empty())),
    })
}

/// Starts answering a simple-protocol statement in place of pgwire's query
/// handling (COPY TO, a streaming SUBSCRIBE): the connection is busy until
/// [`hand_back`]. Returns the transaction status to report at the end.
pub(super) fn take_over<C: ClientInfo>(client: &mut C) -> PgWireResult<TransactionStatus> {
    if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
        return Err(PgWireError::NotReadyForQuery);
    }
    client.set_state(PgWireConnectionState::QueryInProgress);
    Ok(client.transaction_status())
}

/// Ends what [`take_over`] started: the statement's error, if it failed (a
/// cancel as 57014), then ReadyForQuery with `status`.
pub(super) async fn hand_back<C>(
    client: &mut C,
    status: TransactionStatus,
    outcome: PgWireResult<()>,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let error = match outcome {
        Ok(()) => None,
        Err(PgWireError::QueryCanceled) => Some(ErrorInfo::new(
            "ERROR".to_string(),
            "57014".to_string(),
            "canceling statement due to user request".to_string(),
        )),
        Err(error) => Some(super::errors::error_info(error)),
    };
    if let Some(info) = error {
        client.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
    }
    client.set_state(PgWireConnectionState::ReadyForQuery);
    client.send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status))).await?;
    Ok(())
}
