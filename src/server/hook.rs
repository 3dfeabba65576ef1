//! The one query hook: datafusion-postgres hands every parsed statement,
//! on both protocols, to [`StatementHook`], which decides once who answers
//! it ([`route`]) and then, in this order:
//!
//! 1. a transaction statement (BEGIN, COMMIT, SAVEPOINT …) is answered by
//!    `server::transaction`; inside a failed block any other statement is
//!    refused (25P02);
//! 2. the session role's privileges are checked (`server::access`);
//! 3. the statement's snapshot is started (`db::snapshot`);
//! 4. role and grant statements run in `server::access`, the statements
//!    Freshet owns (DDL, DML, SHOW of its objects) in `sql::Engine`, session
//!    settings (SET, SHOW, RESET, DISCARD) in `server::session`, PREPARE /
//!    EXECUTE / DEALLOCATE in `server::prepared`; anything else (SELECT
//!    above all) goes on to DataFusion.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::results::Response;
use pgwire::error::PgWireResult;
use pgwire::messages::response::TransactionStatus;

use super::errors::to_pgwire;
use super::respond::{no_rows_plan, respond};
use crate::db::snapshot;
use crate::sql::{Engine, Outcome, dml_support};

pub struct StatementHook {
    pub engine: Arc<Engine>,
}

/// Who answers a statement.
enum Route {
    Transaction,
    Role,
    Engine,
    Session(super::session::Action),
    Prepared,
    DataFusion,
}

/// Who answers `statement`: decided once, from its parsed form.
fn route(statement: &Statement) -> Route {
    if super::transaction::is_transaction_statement(statement) {
        Route::Transaction
    } else if super::authorization::is_role_statement(statement) {
        Route::Role
    } else if Engine::owns(statement) {
        Route::Engine
    } else if let Some(action) = super::session::action(statement) {
        Route::Session(action)
    } else if matches!(statement, Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. })
    {
        Route::Prepared
    } else {
        Route::DataFusion
    }
}

impl StatementHook {
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

impl StatementHook {
    /// Answers `statement` (with its plan and parameters on the extended
    /// protocol); `None` leaves it to DataFusion.
    async fn answer(
        &self,
        statement: &Statement,
        planned: Option<(&LogicalPlan, &ParamValues)>,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let route = route(statement);
        if let Route::Transaction = route {
            return Some(super::transaction::respond(&self.engine, statement, client).await);
        }
        if client.transaction_status() == TransactionStatus::Error {
            return Some(Err(super::transaction::aborted()));
        }
        // Checked on every execution: grants may have changed since the
        // statement was prepared.
        let user = super::connection::session_user(&*client);
        if let Err(denied) = super::authorization::check(&self.engine, &user, statement) {
            return Some(Err(denied));
        }
        snapshot::begin_statement();
        match route {
            Route::Transaction | Route::DataFusion => None,
            Route::Role => Some(super::authorization::run(&self.engine, statement, &user).await),
            Route::Engine => {
                let existed = self.engine.created_relation(statement);
                let outcome = match (statement, planned) {
                    (Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_), Some((plan, params))) => {
                        self.engine.execute(statement, Some(plan), Some(params)).await
                    }
                    _ => self.engine.execute(statement, None, None).await,
                };
                Some(respond(self.created(statement, existed, outcome, client).await).await)
            }
            Route::Session(action) => Some(super::session::run(action, session_context, client).await),
            Route::Prepared => super::prepared::answer(&self.engine, statement, session_context, &user).await,
        }
    }
}

#[async_trait]
impl QueryHook for StatementHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, None, session_context, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let route = route(statement);
        if let Route::Transaction = route {
            return Some(Ok(no_rows_plan()));
        }
        let user = super::connection::session_user(client);
        if let Err(denied) = super::authorization::check(&self.engine, &user, statement) {
            return Some(Err(denied));
        }
        match route {
            Route::Transaction | Route::Role => Some(Ok(no_rows_plan())),
            // DataFusion plans DML (so parameter types are inferred), except
            // the ON CONFLICT clause, which we apply ourselves.
            Route::Engine => match statement {
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
                _ => Some(Ok(no_rows_plan())),
            },
            Route::Session(action) => Some(super::session::describe(&action, session_context, client)),
            Route::Prepared => super::prepared::describe(statement),
            Route::DataFusion => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        params: &ParamValues,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, Some((logical_plan, params)), session_context, client).await
    }
}
