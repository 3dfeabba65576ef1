//! SQL-level prepared statements, per session as in Postgres: `PREPARE
//! name [(types)] AS statement`, `EXECUTE name [(arguments)]`, `DEALLOCATE
//! [PREPARE] name | ALL` (and DISCARD ALL, see `session`).
//!
//! DataFusion plans the statement once at PREPARE (inferring the types of
//! parameters not declared), so errors in it show there. EXECUTE evaluates
//! the arguments, casts them to the parameters' types and runs the plan
//! with them: queries through DataFusion, INSERT / UPDATE / DELETE through
//! the engine, exactly as a statement bound over the extended protocol.
//! The statements live in a task-local map around each connection
//! (DataFusion's own would be shared by every session).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::common::{DFSchema, ParamValues, ScalarValue};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Ident, ObjectName, Statement};
use pgwire::api::results::Response;
use pgwire::error::PgWireResult;

use super::respond::{no_rows_plan, respond};
use crate::db::snapshot;
use crate::error::{Result, SqlError, sqlstate};
use crate::sql::{Engine, Outcome, dml_support};

const INVALID_SQL_STATEMENT_NAME: &str = "26000";
const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";

/// A prepared statement: what was prepared, and its plan with placeholders
/// (DataFusion's `Prepare`, which knows the parameters' types).
struct Prepared {
    statement: Statement,
    plan: LogicalPlan,
}

tokio::task_local! {
    static PREPARED: RefCell<HashMap<String, Prepared>>;
}

/// Runs a connection with its own prepared statements.
pub async fn scope<F: std::future::Future>(work: F) -> F::Output {
    PREPARED.scope(RefCell::new(HashMap::new()), work).await
}

/// Forgets every prepared statement of the session (DEALLOCATE ALL,
/// DISCARD ALL).
pub fn clear() {
    let _ = PREPARED.try_with(|map| map.borrow_mut().clear());
}

fn folded(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

fn missing(name: &str) -> SqlError {
    SqlError::new(INVALID_SQL_STATEMENT_NAME, format!("prepared statement \"{name}\" does not exist"))
}

fn statement_name(name: &ObjectName) -> String {
    name.0.last().and_then(|p| p.as_ident()).map(folded).unwrap_or_default()
}

async fn prepare(name: &Ident, statement: &Statement, session: &SessionContext) -> Result<Outcome> {
    let Statement::Prepare { data_types, statement: inner, .. } = statement else {
        return Err(SqlError::internal("not a PREPARE"));
    };
    let name = folded(name);
    if PREPARED.try_with(|map| map.borrow().contains_key(&name)).unwrap_or(false) {
        return Err(SqlError::new(
            DUPLICATE_PREPARED_STATEMENT,
            format!("prepared statement \"{name}\" already exists"),
        ));
    }
    // DataFusion does not plan ON CONFLICT; the engine applies it.
    let plannable = match inner.as_ref() {
        Statement::Insert(insert) => Statement::Insert(dml_support::plannable_insert(insert)?.0),
        Statement::Query(_) | Statement::Update(_) | Statement::Delete(_) => inner.as_ref().clone(),
        other => {
            let head: String = other.to_string().split_whitespace().next().unwrap_or_default().to_uppercase();
            return Err(SqlError::new(
                sqlstate::SYNTAX_ERROR,
                format!("cannot PREPARE {head}: a prepared statement is a SELECT, VALUES, INSERT, UPDATE or DELETE"),
            ));
        }
    };
    let to_plan = Statement::Prepare {
        name: Ident::new(name.clone()),
        data_types: data_types.clone(),
        statement: Box::new(plannable),
    };
    let plan = session.state().statement_to_plan(DfStatement::Statement(Box::new(to_plan))).await?;
    let prepared = Prepared { statement: inner.as_ref().clone(), plan };
    PREPARED
        .try_with(|map| map.borrow_mut().insert(name, prepared))
        .map_err(|_| SqlError::internal("no prepared statements in this task"))?;
    Ok(Outcome::Command { tag: "PREPARE", rows: None })
}

/// EXECUTE `name` (`arguments`) for the session role `user`.
async fn execute(engine: &Engine, name: &str, arguments: &[Expr], user: &str) -> Result<Outcome> {
    let session = &engine.ctx;
    let found =
        PREPARED.try_with(|map| map.borrow().get(name).map(|p| (p.statement.clone(), p.plan.clone()))).ok().flatten();
    let (statement, plan) = found.ok_or_else(|| missing(name))?;
    // Privileges as of now, not as of PREPARE.
    crate::sql::authorize::check(engine, user, &statement)?;
    let LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(prepare)) = &plan else {
        return Err(SqlError::internal("a prepared statement without its Prepare plan"));
    };
    if arguments.len() != prepare.fields.len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            format!(
                "wrong number of parameters for prepared statement \"{name}\": expected {} but got {}",
                prepare.fields.len(),
                arguments.len()
            ),
        ));
    }
    let values = evaluate(arguments, session).await?;
    let mut parameters = Vec::with_capacity(values.len());
    for (index, (value, field)) in values.into_iter().zip(&prepare.fields).enumerate() {
        let cast = value.cast_to(field.data_type()).map_err(|e| {
            SqlError::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!(
                    "parameter ${} of prepared statement \"{name}\" is not a {}: {e}",
                    index + 1,
                    field.data_type()
                ),
            )
        })?;
        parameters.push(cast);
    }
    let bound = plan.with_param_values(ParamValues::from(parameters))?;
    snapshot::begin_statement();
    match &statement {
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
            engine.execute(&statement, Some(&bound), None).await
        }
        _ => Ok(Outcome::Rows(session.execute_logical_plan(bound).await?)),
    }
}

/// The plan describing EXECUTE's result over the extended protocol.
fn result_plan(name: &str) -> LogicalPlan {
    let schema = PREPARED
        .try_with(|map| match map.borrow().get(name).map(|p| &p.plan) {
            Some(LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(prepare)))
                if matches!(prepare.input.as_ref(), LogicalPlan::Dml(_)) =>
            {
                None
            }
            Some(LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(prepare))) => {
                Some(prepare.input.schema().clone())
            }
            _ => None,
        })
        .ok()
        .flatten();
    match schema {
        Some(schema) => LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(DFSchema::clone(&schema)),
        }),
        None => no_rows_plan(),
    }
}

/// The values of EXECUTE's argument expressions (constants, or any
/// expression without columns).
async fn evaluate(arguments: &[Expr], session: &SessionContext) -> Result<Vec<ScalarValue>> {
    if arguments.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = arguments.iter().enumerate().map(|(i, e)| format!("({e}) AS p{}", i + 1)).collect();
    let batches = session.sql(&format!("SELECT {}", list.join(", "))).await?.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Err(SqlError::internal("EXECUTE's arguments gave no row"));
    };
    batch.columns().iter().map(|column| Ok(ScalarValue::try_from_array(column.as_ref() as &dyn Array, 0)?)).collect()
}

fn deallocate(name: &Ident) -> Result<Outcome> {
    if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
        clear();
        return Ok(Outcome::Command { tag: "DEALLOCATE ALL", rows: None });
    }
    let name = folded(name);
    let removed = PREPARED.try_with(|map| map.borrow_mut().remove(&name).is_some()).unwrap_or(false);
    if !removed {
        return Err(missing(&name));
    }
    Ok(Outcome::Command { tag: "DEALLOCATE", rows: None })
}

/// Answers PREPARE, EXECUTE and DEALLOCATE; `None` for other statements.
pub(super) async fn answer(
    engine: &Engine,
    statement: &Statement,
    session: &SessionContext,
    user: &str,
) -> Option<PgWireResult<Response>> {
    let outcome = match statement {
        Statement::Prepare { name, .. } => prepare(name, statement, session).await,
        Statement::Execute { name: Some(name), parameters, immediate: false, using, .. } if using.is_empty() => {
            execute(engine, &statement_name(name), parameters, user).await
        }
        Statement::Deallocate { name, .. } => deallocate(name),
        _ => return None,
    };
    Some(respond(outcome).await)
}

/// The plan PREPARE, EXECUTE and DEALLOCATE are described by at Parse;
/// `None` for other statements.
pub(super) fn describe(statement: &Statement) -> Option<PgWireResult<LogicalPlan>> {
    match statement {
        Statement::Prepare { .. } | Statement::Deallocate { .. } => Some(Ok(no_rows_plan())),
        Statement::Execute { name: Some(name), immediate: false, .. } => Some(Ok(result_plan(&statement_name(name)))),
        _ => None,
    }
}

/// EXECUTE over the extended protocol, answered before datafusion-postgres
/// sees it so that rows are encoded as the portal asks (binary for many
/// drivers). `None` if `sql` is no EXECUTE.
pub async fn execute_portal(
    engine: &Engine,
    user: &str,
    failed_block: bool,
    sql: &str,
    format: &pgwire::api::portal::Format,
) -> Option<PgWireResult<Response>> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let Statement::Execute { name: Some(name), parameters, immediate: false, using, .. } = statements.remove(0) else {
        return None;
    };
    if !using.is_empty() {
        return None;
    }
    if failed_block {
        return Some(Err(super::transaction::aborted()));
    }
    let outcome = execute(engine, &statement_name(&name), &parameters, user).await;
    Some(super::respond::respond_in(outcome, format).await)
}
