//! What lowering one view's query shares across its plan nodes: compiling
//! expressions, numbering stateful operators, what was read. The node kinds
//! (`plan/node/`) use it; `plan/lower.rs` walks the plan.
//!
//! Anything that cannot be maintained incrementally is refused here, at
//! CREATE time, with 0A000 and the name of the construct — never a view that
//! is silently wrong. Scalar expressions are compiled with DataFusion into
//! `PhysicalExpr`s, so a view computes exactly what an ad-hoc query would.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable, SortExpr};
use datafusion::physical_plan::PhysicalExpr;

use super::{RelationResolver, temporal};
use crate::error::{Result, SqlError};
use crate::stream::RelationId;

/// What lowering one view collects on its way down the plan.
pub struct Lowering<'a> {
    pub state: &'a SessionState,
    pub resolver: &'a dyn RelationResolver,
    /// The tables and views the scans read (sources are read by the view).
    pub inputs: BTreeSet<RelationId>,
    /// Number of the next stateful operator (its state key prefix).
    next_operator: u16,
    pub emit_on_window_close: bool,
    /// Aggregates grouped by a watermarked column.
    pub windowed_aggregates: usize,
    /// The view follows the passing time or reads sources.
    pub clocked: bool,
    /// The view must be stepped as time passes even when no data comes: a
    /// temporal filter, or a source watermark that goes idle after a time.
    pub needs_ticks: bool,
}

/// Columns a sort or a window's ORDER BY orders rows by: the expressions,
/// and the schema and directions their row codec is built from.
#[derive(Clone)]
pub struct SortKeys {
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub schema: SchemaRef,
    pub options: Vec<SortOptions>,
}

pub fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::not_supported(format!("{what} is not supported in a materialized view"))
}

impl<'a> Lowering<'a> {
    pub fn new(state: &'a SessionState, resolver: &'a dyn RelationResolver, emit_on_window_close: bool) -> Self {
        Self {
            state,
            resolver,
            inputs: BTreeSet::new(),
            next_operator: 0,
            emit_on_window_close,
            windowed_aggregates: 0,
            clocked: false,
            needs_ticks: false,
        }
    }

    /// The number of the next stateful operator. Operators are numbered in
    /// lowering order (inputs first), so a stored view's statement always
    /// gets the same numbers, and finds its state, after a restart.
    pub fn state_number(&mut self) -> Result<u16> {
        let number = self.next_operator;
        self.next_operator =
            number.checked_add(1).ok_or_else(|| unsupported("a query with more than 65535 stateful operators"))?;
        Ok(number)
    }

    /// `expr` compiled over `schema`; refused if a view cannot maintain it.
    pub fn expr(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        if temporal::reads_now(expr) {
            return Err(unsupported(format!(
                "function now() can be used in a materialized view only in a WHERE comparison of a row's value with \
                 now() plus or minus a constant (a temporal filter), not in {expr}"
            )));
        }
        if expr.is_volatile() {
            return Err(unsupported(format!("the volatile expression {expr}")));
        }
        self.state.create_physical_expr(expr.clone(), schema).map_err(|e| {
            let err = SqlError::from(e);
            if err.code == crate::error::sqlstate::INTERNAL_ERROR {
                unsupported(format!("the expression {expr}"))
            } else {
                err
            }
        })
    }

    pub fn exprs(&self, exprs: &[Expr], schema: &DFSchema) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        exprs.iter().map(|e| self.expr(e, schema)).collect()
    }

    /// The sort keys of `sort` over `schema`.
    pub fn sort_keys(&self, sort: &[SortExpr], schema: &DFSchema) -> Result<SortKeys> {
        let exprs: Vec<Expr> = sort.iter().map(|s| s.expr.clone()).collect();
        let physical = self.exprs(&exprs, schema)?;
        let fields = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| Ok(Field::new(format!("s{i}"), e.get_type(schema)?, true)))
            .collect::<Result<Vec<_>>>()?;
        let options = sort.iter().map(|s| SortOptions { descending: !s.asc, nulls_first: s.nulls_first }).collect();
        Ok(SortKeys { exprs: physical, schema: Arc::new(Schema::new(fields)), options })
    }
}
