//! GROUP BY with aggregate functions, and DISTINCT (a GROUP BY on every
//! column with no function) ([`crate::stream::ops::aggregate::Aggregate`]).
//! A group key with a watermark (a window's start, usually) makes groups
//! close; EMIT ON WINDOW CLOSE then emits each group once, final.

use std::sync::Arc;

use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_plan::PhysicalExpr;

use super::BuildContext;
use super::{KeyRoute, Kind, Node};
use crate::error::{Result, SqlError};
use crate::plan::lowering::{Lowering, unsupported};
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::ops::aggregate::{Aggregate, AggregateCall, Mode, Windowing};
use crate::stream::ops::event_time::OpenGroups;
use crate::stream::ops::exchange::Ownership;
use crate::stream::watermark::{self, Derivation};

#[derive(Clone)]
pub struct AggregateNode {
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub calls: Vec<AggregateCall>,
    /// How the group key columns' watermarks follow from the input's.
    pub key_watermarks: Derivation,
    /// The output column (a group key) whose watermark closes groups.
    pub time_column: Option<usize>,
    pub emit_on_window_close: bool,
    pub route: KeyRoute,
    pub state: u16,
}

pub(in crate::plan) fn lower(
    lowering: &mut Lowering,
    agg: &datafusion::logical_expr::Aggregate,
    input: Node,
) -> Result<Node> {
    if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
        return Err(unsupported("GROUPING SETS / ROLLUP / CUBE"));
    }
    let input_schema = agg.input.schema();
    let group_exprs = lowering.exprs(&agg.group_expr, input_schema)?;
    let physical_input = input_schema.as_arrow();
    let calls = agg
        .aggr_expr
        .iter()
        .map(|e| {
            #[allow(deprecated)]
            let (function, filter, _) = datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                e,
                input_schema,
                physical_input,
                lowering.state.execution_props(),
            )?;
            Ok(AggregateCall::new(function, filter))
        })
        .collect::<Result<Vec<_>>>()?;
    let key_types =
        agg.group_expr.iter().map(|e| e.get_type(input_schema)).collect::<datafusion::error::Result<Vec<_>>>()?;
    // A group-key column with a watermark makes groups close.
    let monotone: Vec<Option<usize>> =
        agg.group_expr.iter().map(|e| watermark::monotone_column(e, input_schema)).collect();
    let carries = |m: &Option<usize>| m.is_some_and(|c| input.watermarked.get(c) == Some(&true));
    let time_column = monotone.iter().position(carries);
    if time_column.is_some() {
        lowering.windowed_aggregates += 1;
    } else if lowering.emit_on_window_close {
        return Err(SqlError::not_supported(format!(
            "EMIT ON WINDOW CLOSE with a GROUP BY on no watermarked column ({}): every aggregate must group by a \
             window (or other column with a watermark)",
            if agg.group_expr.is_empty() {
                "a global aggregate".to_string()
            } else {
                agg.group_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
            }
        )));
    }
    let schema = stream_schema(&agg.schema);
    let mut watermarked: Vec<bool> = monotone.iter().map(carries).collect();
    watermarked.resize(schema.fields().len(), false);
    let key_watermarks = Derivation::new(input.schema.clone(), &group_exprs, &monotone);
    let state = lowering.state_number()?;
    Ok(Node {
        kind: Kind::Aggregate(AggregateNode {
            route: KeyRoute { keys: group_exprs.clone(), types: key_types },
            group_exprs,
            calls,
            key_watermarks,
            time_column,
            emit_on_window_close: lowering.emit_on_window_close,
            state,
        }),
        inputs: vec![input],
        schema,
        watermarked,
        detail: LogicalPlan::Aggregate(agg.clone()).display().to_string(),
    })
}

/// SELECT DISTINCT: every column a group key, no aggregate function.
pub(in crate::plan) fn lower_distinct(lowering: &mut Lowering, plan: &LogicalPlan, input: Node) -> Result<Node> {
    let schema = plan.schema().clone();
    let columns: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    let group_exprs = lowering.exprs(&columns, &schema)?;
    let key_types = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    let output = stream_schema(&schema);
    let state = lowering.state_number()?;
    Ok(Node {
        kind: Kind::Aggregate(AggregateNode {
            route: KeyRoute { keys: group_exprs.clone(), types: key_types },
            group_exprs,
            calls: Vec::new(),
            key_watermarks: Derivation::new(output.clone(), &[], &[]),
            time_column: None,
            emit_on_window_close: false,
            state,
        }),
        inputs: vec![input],
        watermarked: vec![false; output.fields().len()],
        schema: output,
        detail: format!("Distinct: {}", columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")),
    })
}

impl AggregateNode {
    /// How a new copy keeps its groups: over an input that only inserts,
    /// min/max and the like keep one value per group, not the group's rows.
    pub fn mode(&self, node: &Node) -> Mode {
        Mode::choose(&self.calls, node.inputs.iter().all(Node::append_only))
    }

    /// One copy of the aggregate, holding the groups `ownership` gives it.
    pub fn build(
        &self,
        node: &Node,
        input: Box<dyn Operator>,
        ownership: Ownership,
        cx: &BuildContext,
    ) -> Result<Box<dyn Operator>> {
        let windowing = match self.time_column {
            Some(column) => Some(Windowing {
                open: OpenGroups::new(column, node.schema.field(column), ownership, cx.stats.clone())?,
                emit_on_close: self.emit_on_window_close,
            }),
            None => None,
        };
        Ok(Box::new(Aggregate::new(
            input,
            self.group_exprs.clone(),
            self.calls.clone(),
            self.mode(node),
            node.schema.clone(),
            &cx.prefix(self.state),
            self.key_watermarks.clone(),
            windowing,
        )?))
    }
}
