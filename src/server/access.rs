//! The first query hook: every statement, on both protocols, is checked
//! against the session role's privileges (`sql::access`) before anything
//! runs it; role and grant statements run here, where the session's role
//! is known.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::results::Response;
use pgwire::error::PgWireResult;

use super::connection::session_user;
use super::errors::to_pgwire;
use super::hook::{no_rows_plan, respond};
use crate::sql::Engine;

pub struct AccessHook {
    pub engine: Arc<Engine>,
}

fn is_role_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Drop { object_type: ObjectType::Role, .. }
    )
}

impl AccessHook {
    async fn run(&self, statement: &Statement, user: &str) -> Option<PgWireResult<Response>> {
        crate::sql::session_user::set(user);
        if let Err(denied) = crate::sql::access::check(&self.engine, user, statement) {
            return Some(Err(to_pgwire(denied)));
        }
        if is_role_statement(statement) {
            return Some(respond(self.engine.execute_access(statement, user).await).await);
        }
        None
    }
}

#[async_trait]
impl QueryHook for AccessHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let user = session_user(client);
        self.run(statement, &user).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let user = session_user(client);
        crate::sql::session_user::set(&user);
        if let Err(denied) = crate::sql::access::check(&self.engine, &user, statement) {
            return Some(Err(to_pgwire(denied)));
        }
        is_role_statement(statement).then(|| Ok(no_rows_plan()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Checked again: grants may have changed since the statement was
        // prepared.
        let user = session_user(client);
        self.run(statement, &user).await
    }
}
