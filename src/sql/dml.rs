//! INSERT (with ON CONFLICT DO NOTHING), UPDATE and DELETE.
//!
//! DataFusion plans the statement (so defaults, casts and parameters work as
//! for any query); INSERT's source rows are then written through
//! `catalog::writes`, and UPDATE/DELETE run through our `TableProvider`.

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::common::ParamValues;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Insert, OnConflictAction, OnInsert, Statement};

use super::{Engine, Outcome};
use crate::catalog::qualify;
use crate::catalog::writes::{self, OnConflict};
use crate::error::{Result, SqlError};

/// The INSERT without its ON CONFLICT clause (which DataFusion does not plan).
pub fn plannable_insert(insert: &Insert) -> Result<(Insert, OnConflict)> {
    let mut insert = insert.clone();
    let on_conflict = match insert.on.take() {
        None => OnConflict::Error,
        Some(OnInsert::OnConflict(c)) => match c.action {
            OnConflictAction::DoNothing => OnConflict::DoNothing,
            OnConflictAction::DoUpdate(_) => return Err(SqlError::not_supported("INSERT … ON CONFLICT DO UPDATE")),
        },
        Some(_) => return Err(SqlError::not_supported("this ON … clause of INSERT")),
    };
    if insert.returning.is_some() {
        return Err(SqlError::not_supported("INSERT … RETURNING"));
    }
    Ok((insert, on_conflict))
}

async fn plan_of(engine: &Engine, statement: Statement, plan: Option<&LogicalPlan>, params: Option<&ParamValues>) -> Result<LogicalPlan> {
    let plan = match plan {
        Some(plan) => plan.clone(),
        None => engine.ctx.state().statement_to_plan(DfStatement::Statement(Box::new(statement))).await?,
    };
    Ok(match params {
        Some(params) => plan.replace_params_with_values(params)?,
        None => plan,
    })
}

pub async fn insert(engine: &Engine, insert: &Insert, plan: Option<&LogicalPlan>, params: Option<&ParamValues>) -> Result<Outcome> {
    let (plannable, on_conflict) = plannable_insert(insert)?;
    let plan = plan_of(engine, Statement::Insert(plannable), plan, params).await?;
    let LogicalPlan::Dml(dml) = plan else {
        return Err(SqlError::internal("INSERT did not plan to a DML statement"));
    };
    if !matches!(dml.op, WriteOp::Insert(_)) {
        return Err(SqlError::internal("INSERT planned to another write"));
    }
    let relation = engine
        .catalog
        .by_name(&qualify(&dml.table_name))
        .ok_or_else(|| SqlError::undefined_table(&dml.table_name))?;
    let rows = engine.ctx.execute_logical_plan(dml.input.as_ref().clone()).await?.collect().await?;
    let mut guard = engine.coordinator.begin().await;
    let count = writes::insert(&mut guard, &relation, &rows, on_conflict)?;
    Ok(Outcome::Command { tag: "INSERT", rows: Some(count) })
}

pub async fn update_or_delete(engine: &Engine, statement: &Statement, plan: Option<&LogicalPlan>, params: Option<&ParamValues>) -> Result<Outcome> {
    let tag = if matches!(statement, Statement::Update(_)) { "UPDATE" } else { "DELETE" };
    let plan = plan_of(engine, statement.clone(), plan, params).await?;
    let batches = engine.ctx.execute_logical_plan(plan).await?.collect().await?;
    let count: u64 = batches
        .iter()
        .filter_map(|b| b.column_by_name("count"))
        .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>().map(|a| a.iter().flatten().sum::<u64>()))
        .sum();
    Ok(Outcome::Command { tag, rows: Some(count as usize) })
}
