//! The query hook through which datafusion-postgres hands us the statements
//! Freshet owns (DDL, DML, SHOW), in both the simple and extended protocols.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format;
use pgwire::api::results::{Response, Tag};
use pgwire::error::PgWireResult;

use super::errors::to_pgwire;
use crate::db::snapshot;
use crate::sql::{Engine, Outcome, dml_support};

pub struct EngineHook {
    pub engine: Arc<Engine>,
}

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

impl EngineHook {
    /// A relation the session's role created is owned by that role.
    async fn created(
        &self,
        statement: &Statement,
        existed: Option<crate::stream::RelationId>,
        outcome: crate::error::Result<Outcome>,
        client: &dyn HookClient,
    ) -> crate::error::Result<Outcome> {
        let outcome = outcome?;
        if let (None, Some(created)) = (existed, self.engine.created_relation(statement)) {
            let user = super::connection::session_user(client);
            self.engine.record_creator(created, &user).await?;
        }
        Ok(outcome)
    }
}

#[async_trait]
impl QueryHook for EngineHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        snapshot::begin_statement();
        if !Engine::owns(statement) {
            return None;
        }
        let existed = self.engine.created_relation(statement);
        let outcome = self.engine.execute(statement, None, None).await;
        Some(respond(self.created(statement, existed, outcome, client).await).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match statement {
            // DataFusion plans DML (so parameter types are inferred), except
            // the ON CONFLICT clause, which we apply ourselves.
            Statement::Insert(insert) if insert.on.is_some() => {
                let plannable = match dml_support::plannable_insert(insert) {
                    Ok((plannable, _)) => plannable,
                    Err(e) => return Some(Err(to_pgwire(e))),
                };
                let planned = session_context
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(Statement::Insert(plannable))))
                    .await
                    .map_err(|e| to_pgwire(e.into()));
                Some(planned)
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => None,
            other if Engine::owns(other) => Some(Ok(no_rows_plan())),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        snapshot::begin_statement();
        if !Engine::owns(statement) {
            return None;
        }
        let existed = self.engine.created_relation(statement);
        let outcome = match statement {
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                self.engine.execute(statement, Some(logical_plan), Some(params)).await
            }
            _ => self.engine.execute(statement, None, None).await,
        };
        Some(respond(self.created(statement, existed, outcome, client).await).await)
    }
}
