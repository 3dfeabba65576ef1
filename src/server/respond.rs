//! A statement's outcome as the wire answer pgwire sends: a command tag
//! (with the row count where Postgres gives one) or the rows, encoded as
//! the portal asks; and the empty plan that describes a statement without
//! rows at Parse.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use pgwire::api::portal::Format;
use pgwire::api::results::{Response, Tag};
use pgwire::error::PgWireResult;

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
