//! Window functions over one PARTITION BY / ORDER BY
//! ([`crate::stream::ops::window::Window`]): ranks (row_number, rank,
//! dense_rank) counted by the operator, any other function evaluated by
//! DataFusion over the changed partitions.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, SortExpr};

use super::BuildContext;
use super::{KeyRoute, Kind, Node};
use crate::error::{Result, SqlError};
use crate::plan::lowering::{Lowering, SortKeys, unsupported};
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::ops::window::{Functions, Ranking, Window};
use crate::stream::rowcodec::RowCodec;

#[derive(Clone)]
pub struct WindowNode {
    pub functions: Functions,
    /// PARTITION BY: also the key the input is routed by.
    pub route: KeyRoute,
    /// The partition key's columns (`None` without PARTITION BY).
    pub partition_schema: Option<SchemaRef>,
    /// ORDER BY (`None` without one).
    pub order: Option<SortKeys>,
    pub state: u16,
}

/// The functions of one window node: all ranks, or any functions for
/// DataFusion to evaluate.
fn functions(
    lowering: &Lowering,
    window: &datafusion::logical_expr::Window,
) -> Result<(Functions, Vec<Expr>, Vec<SortExpr>)> {
    let mut rankings = Vec::new();
    let mut shape: Option<(Vec<Expr>, Vec<SortExpr>)> = None;
    let mut only_ranks = true;
    for expr in &window.window_expr {
        let Expr::WindowFunction(function) = expr.clone().unalias() else {
            return Err(unsupported(format!("the window expression {expr}")));
        };
        let name = function.fun.name().to_ascii_lowercase();
        match name.as_str() {
            "row_number" => rankings.push(Ranking::RowNumber),
            "rank" => rankings.push(Ranking::Rank),
            "dense_rank" => rankings.push(Ranking::DenseRank),
            _ => only_ranks = false,
        }
        let this = (function.params.partition_by.clone(), function.params.order_by.clone());
        match &shape {
            Some(existing) if *existing != this => {
                return Err(unsupported("window functions with different PARTITION BY / ORDER BY in one query"));
            }
            _ => shape = Some(this),
        }
    }
    let (partition_by, order_by) = shape.unwrap_or_default();
    if only_ranks {
        return Ok((Functions::Ranking(rankings), partition_by, order_by));
    }
    let context = datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default();
    let functions = window
        .window_expr
        .iter()
        .map(|e| {
            datafusion::physical_planner::create_window_expr(
                e,
                window.input.schema(),
                lowering.state.execution_props(),
                &context,
            )
            .map_err(|error| {
                let error = SqlError::from(error);
                if error.code == crate::error::sqlstate::INTERNAL_ERROR {
                    unsupported(format!("the window expression {e}"))
                } else {
                    error
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((Functions::General { functions }, partition_by, order_by))
}

pub(in crate::plan) fn lower(
    lowering: &mut Lowering,
    plan: &LogicalPlan,
    window: &datafusion::logical_expr::Window,
    input: Node,
) -> Result<Node> {
    let (functions, partition_by, order_by) = functions(lowering, window)?;
    let input_schema = window.input.schema();
    let state = lowering.state_number()?;
    let partition_exprs = lowering.exprs(&partition_by, input_schema)?;
    let partition_schema = if partition_by.is_empty() {
        None
    } else {
        let fields = partition_by
            .iter()
            .enumerate()
            .map(|(i, e)| Ok(Field::new(format!("p{i}"), e.get_type(input_schema)?, true)))
            .collect::<Result<Vec<_>>>()?;
        Some(Arc::new(Schema::new(fields)))
    };
    let order = if order_by.is_empty() { None } else { Some(lowering.sort_keys(&order_by, input_schema)?) };
    let key_types =
        partition_by.iter().map(|e| e.get_type(input_schema)).collect::<datafusion::error::Result<Vec<_>>>()?;
    let schema = stream_schema(&window.schema);
    Ok(Node {
        kind: Kind::Window(WindowNode {
            functions,
            route: KeyRoute { keys: partition_exprs, types: key_types },
            partition_schema,
            order,
            state,
        }),
        inputs: vec![input],
        watermarked: vec![false; schema.fields().len()],
        schema,
        detail: plan.display().to_string(),
    })
}

impl WindowNode {
    pub fn build(&self, node: &Node, input: Box<dyn Operator>, cx: &BuildContext) -> Result<Box<dyn Operator>> {
        let partition_codec = self.partition_schema.clone().map(RowCodec::new).transpose()?;
        let order = match &self.order {
            Some(sort) => (sort.exprs.clone(), Some(RowCodec::with_options(sort.schema.clone(), &sort.options)?)),
            None => (Vec::new(), None),
        };
        Ok(Box::new(Window::new(
            input,
            (self.route.keys.clone(), partition_codec),
            order,
            self.functions.clone(),
            node.schema.clone(),
            &cx.prefix(self.state),
        )?))
    }
}
