//! INSERT (with ON CONFLICT DO NOTHING), UPDATE and DELETE.
//!
//! DataFusion plans the statement (so defaults, casts and parameters work as
//! for any query); INSERT's source rows are then written through
//! `db::writes`, and UPDATE/DELETE run through our `TableProvider`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, DoUpdate, Ident, Insert, ObjectName, OnConflictAction, OnInsert, SetExpr, Statement, TableObject,
};

use super::{Engine, Outcome};
use crate::catalog::{Relation, qualify};
use crate::db::writes::{self, ConflictUpdate, OnConflict};
use crate::error::{Result, SqlError, sqlstate};

/// An INSERT's ON CONFLICT clause, before it is compiled for its table.
pub enum ConflictClause {
    Error,
    DoNothing,
    DoUpdate(DoUpdate),
}

/// The INSERT without its ON CONFLICT clause (which DataFusion does not plan).
pub fn plannable_insert(insert: &Insert) -> Result<(Insert, ConflictClause)> {
    let mut insert = insert.clone();
    let on_conflict = match insert.on.take() {
        None => ConflictClause::Error,
        Some(OnInsert::OnConflict(c)) => match c.action {
            OnConflictAction::DoNothing => ConflictClause::DoNothing,
            OnConflictAction::DoUpdate(update) => ConflictClause::DoUpdate(update),
        },
        Some(_) => return Err(SqlError::not_supported("this ON … clause of INSERT")),
    };
    // The alias only names the existing row in ON CONFLICT DO UPDATE.
    insert.table_alias = None;
    if insert.returning.is_some() {
        return Err(SqlError::not_supported("INSERT … RETURNING"));
    }
    Ok((insert, on_conflict))
}

async fn plan_of(
    engine: &Engine,
    statement: Statement,
    plan: Option<&LogicalPlan>,
    params: Option<&ParamValues>,
) -> Result<LogicalPlan> {
    let plan = match plan {
        Some(plan) => plan.clone(),
        None => engine.ctx.state().statement_to_plan(DfStatement::Statement(Box::new(statement))).await?,
    };
    Ok(match params {
        Some(params) => plan.replace_params_with_values(params)?,
        None => plan,
    })
}

/// As in Postgres, `INSERT INTO t VALUES (…)` with fewer values than
/// columns fills the leading columns and leaves the rest to their defaults.
fn name_leading_columns(engine: &Engine, insert: &mut Insert) {
    let (true, Some(query), TableObject::TableName(name)) = (insert.columns.is_empty(), &insert.source, &insert.table)
    else {
        return;
    };
    let SetExpr::Values(values) = query.body.as_ref() else {
        return;
    };
    let Some(relation) = engine.catalog.by_name(&super::ddl::object_name(engine, name)) else {
        return;
    };
    let Some(width) = values.rows.first().map(|r| r.content.len()) else {
        return;
    };
    if width < relation.schema.fields().len() && values.rows.iter().all(|r| r.content.len() == width) {
        insert.columns = relation
            .schema
            .fields()
            .iter()
            .take(width)
            .map(|f| ObjectName::from(vec![Ident::with_quote('"', f.name())]))
            .collect();
    }
}

pub async fn insert(
    engine: &Engine,
    insert: &Insert,
    plan: Option<&LogicalPlan>,
    params: Option<&ParamValues>,
) -> Result<Outcome> {
    let (mut plannable, on_conflict) = plannable_insert(insert)?;
    if plan.is_none() {
        name_leading_columns(engine, &mut plannable);
    }
    if plan.is_none()
        && let Some((relation, rows)) = super::values::literal_rows(engine, &plannable)?
    {
        let on_conflict = compile_conflict_clause(engine, &relation, insert, on_conflict)?;
        let count = writes::write(&engine.coordinator, |w| writes::insert(w, &relation, &[rows], &on_conflict)).await?;
        return Ok(Outcome::Command { tag: "INSERT", rows: Some(count) });
    }
    let plan = plan_of(engine, Statement::Insert(plannable), plan, params).await?;
    let LogicalPlan::Dml(dml) = plan else {
        return Err(SqlError::internal("INSERT did not plan to a DML statement"));
    };
    if !matches!(dml.op, WriteOp::Insert(_)) {
        return Err(SqlError::internal("INSERT planned to another write"));
    }
    let relation =
        engine.catalog.by_name(&qualify(&dml.table_name)).ok_or_else(|| SqlError::undefined_table(&dml.table_name))?;
    let on_conflict = compile_conflict_clause(engine, &relation, insert, on_conflict)?;
    let source = engine.ctx.execute_logical_plan(dml.input.as_ref().clone()).await?;
    let rows = super::query_memory::collect_within(source, engine.query_memory.bytes(), "INSERT … SELECT").await?;
    let count = writes::write(&engine.coordinator, |w| writes::insert(w, &relation, &rows, &on_conflict)).await?;
    Ok(Outcome::Command { tag: "INSERT", rows: Some(count) })
}

fn compile_conflict_clause(
    engine: &Engine,
    relation: &Relation,
    insert: &Insert,
    clause: ConflictClause,
) -> Result<OnConflict> {
    Ok(match clause {
        ConflictClause::Error => OnConflict::Error,
        ConflictClause::DoNothing => OnConflict::DoNothing,
        ConflictClause::DoUpdate(update) => {
            let alias = insert.table_alias.as_ref().map(|a| a.alias.value.clone());
            OnConflict::DoUpdate(compile_conflict_update(engine, relation, alias, &update)?)
        }
    })
}

/// Compiles SET and WHERE of ON CONFLICT DO UPDATE over (existing row,
/// EXCLUDED row), the existing row named by the table (or its alias).
fn compile_conflict_update(
    engine: &Engine,
    relation: &Relation,
    alias: Option<String>,
    update: &DoUpdate,
) -> Result<ConflictUpdate> {
    let state = engine.ctx.state();
    let table = alias.unwrap_or_else(|| relation.name.name.clone());
    let existing = DFSchema::try_from_qualified_schema(table.as_str(), &relation.schema)?;
    let excluded = DFSchema::try_from_qualified_schema("excluded", &relation.schema)?;
    let combined = existing.join(&excluded)?;
    let compile = |sql: &str| -> Result<Arc<dyn PhysicalExpr>> {
        let expr = state.create_logical_expr(sql, &combined)?;
        Ok(state.create_physical_expr(expr, &combined)?)
    };
    let mut assignments = Vec::with_capacity(update.assignments.len());
    for assignment in &update.assignments {
        let AssignmentTarget::ColumnName(name) = &assignment.target else {
            return Err(SqlError::not_supported("tuple assignment in ON CONFLICT DO UPDATE"));
        };
        let column = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() })
            .unwrap_or_default();
        let index = relation.schema.index_of(&column).map_err(|_| {
            SqlError::new(
                sqlstate::UNDEFINED_COLUMN,
                format!("column \"{column}\" of relation \"{}\" does not exist", relation.name),
            )
        })?;
        if relation.primary_key.contains(&index) {
            return Err(SqlError::not_supported("changing the primary key in ON CONFLICT DO UPDATE"));
        }
        assignments.push((index, compile(&assignment.value.to_string())?));
    }
    let selection = update.selection.as_ref().map(|s| compile(&s.to_string())).transpose()?;
    Ok(ConflictUpdate { assignments, selection })
}

pub async fn update_or_delete(
    engine: &Engine,
    statement: &Statement,
    plan: Option<&LogicalPlan>,
    params: Option<&ParamValues>,
) -> Result<Outcome> {
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
