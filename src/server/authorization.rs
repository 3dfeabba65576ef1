//! Privileges on the wire: every statement, on both protocols, is checked
//! against the session role's privileges (`sql::authorize`) before anything
//! runs it (`server::hook` calls [`check`] first); role and grant
//! statements run here, where the session's role is known.

use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use pgwire::api::results::Response;
use pgwire::error::PgWireResult;

use super::errors::to_pgwire;
use super::respond::respond;
use crate::sql::Engine;

/// Statements about roles and privileges: they run here, where the
/// session's role is known.
pub(super) fn is_role_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Drop { object_type: ObjectType::Role, .. }
    )
}

/// Checks `statement` against the privileges of the session's role `user`
/// (who becomes the statement's session user).
pub(super) fn check(engine: &Engine, user: &str, statement: &Statement) -> PgWireResult<()> {
    crate::sql::session_user::set(user);
    crate::sql::authorize::check(engine, user, statement).map_err(to_pgwire)
}

/// Runs a role or grant statement for `user`.
pub(super) async fn run(engine: &Engine, statement: &Statement, user: &str) -> PgWireResult<Response> {
    respond(engine.execute_access(statement, user).await).await
}
