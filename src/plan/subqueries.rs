//! Uncorrelated scalar subqueries as joins.
//!
//! DataFusion runs an uncorrelated scalar subquery (`WHERE v > (SELECT
//! avg(w) FROM t2)`) as a separate physical step, which a dataflow cannot
//! maintain. Here each one becomes a LEFT JOIN (with no key) of the outer
//! input with the subquery, and the subquery expression a column of it, so
//! when the subquery's value changes the dependent rows change with it.
//! A subquery that returns no row yields NULL, as in SQL.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, NullEquality};
use datafusion::logical_expr::{
    Expr, Filter, Join, JoinConstraint, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, Subquery,
};

use crate::error::{Result, SqlError};

/// Rewrites every uncorrelated scalar subquery in `plan` into a join.
pub fn scalar_subqueries_to_joins(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut counter = 0usize;
    let rewritten = plan.transform_up(|node| {
        let rewritten = match &node {
            LogicalPlan::Filter(filter) if has_scalar_subquery(&filter.predicate) => {
                let original_schema = filter.input.schema().clone();
                let (input, mut exprs) =
                    join_subqueries(filter.input.as_ref().clone(), vec![filter.predicate.clone()], &mut counter)
                        .map_err(|e| e.into_datafusion())?;
                let predicate = exprs.remove(0);
                let filtered = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?);
                Some(restore_schema(filtered, original_schema)?)
            }
            LogicalPlan::Projection(projection) if projection.expr.iter().any(has_scalar_subquery) => {
                let (input, exprs) =
                    join_subqueries(projection.input.as_ref().clone(), projection.expr.clone(), &mut counter)
                        .map_err(|e| e.into_datafusion())?;
                Some(LogicalPlan::Projection(Projection::try_new_with_schema(
                    exprs,
                    Arc::new(input),
                    projection.schema.clone(),
                )?))
            }
            _ => None,
        };
        Ok(match rewritten {
            Some(plan) => Transformed::yes(plan),
            None => Transformed::no(node),
        })
    })?;
    let plan = rewritten.data;
    // Anything left (in other nodes, or correlated) cannot be maintained.
    let mut leftover = false;
    plan.apply(|node| {
        for expr in node.expressions() {
            if has_scalar_subquery(&expr) {
                leftover = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if leftover {
        return Err(SqlError::not_supported(
            "a scalar subquery in this position is not supported in a materialized view",
        ));
    }
    Ok(plan)
}

fn has_scalar_subquery(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_)))).unwrap_or(false)
}

/// Joins `input` with every scalar subquery found in `exprs` and replaces
/// each subquery by the column that now carries its value.
fn join_subqueries(input: LogicalPlan, exprs: Vec<Expr>, counter: &mut usize) -> Result<(LogicalPlan, Vec<Expr>)> {
    let mut input = input;
    let mut rewritten = Vec::with_capacity(exprs.len());
    for expr in exprs {
        let mut joins: Vec<(String, Subquery)> = Vec::new();
        let expr = expr
            .transform_up(|e| match e {
                Expr::ScalarSubquery(subquery) if subquery.outer_ref_columns.is_empty() => {
                    *counter += 1;
                    let alias = format!("__scalar_subquery_{counter}");
                    let column_name = subquery.subquery.schema().field(0).name().clone();
                    joins.push((alias.clone(), subquery));
                    Ok(Transformed::yes(Expr::Column(Column::new(Some(alias), column_name))))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        for (alias, subquery) in joins {
            // The subquery may hold scalar subqueries of its own.
            let inner = scalar_subqueries_to_joins(subquery.subquery.as_ref().clone())?;
            let right = LogicalPlanBuilder::from(inner).alias(alias)?.build()?;
            // A keyless LEFT JOIN: every outer row meets the subquery's one row.
            input = LogicalPlan::Join(Join::try_new(
                Arc::new(input),
                Arc::new(right),
                vec![],
                None,
                JoinType::Left,
                JoinConstraint::On,
                NullEquality::NullEqualsNothing,
                false,
            )?);
        }
        rewritten.push(expr);
    }
    Ok((input, rewritten))
}

/// Projects `plan` back onto the columns of `schema` (dropping join columns).
fn restore_schema(plan: LogicalPlan, schema: DFSchemaRef) -> datafusion::error::Result<LogicalPlan> {
    let columns: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    Ok(LogicalPlan::Projection(Projection::try_new_with_schema(columns, Arc::new(plan), schema)?))
}
