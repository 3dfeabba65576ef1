//! Temporal filters in materialized views: `now()` in a WHERE comparison.
//!
//! DataFusion folds `now()` into a constant when it optimizes a plan, which
//! would freeze a view at its creation time. Before a view's query is
//! optimized, [`mark_now`] replaces `now()` in its WHERE clauses by
//! [`EpochNow`] — the same value, but volatile, so it is not folded — and
//! lowering turns each comparison with it into a
//! [`TemporalFilter`](crate::stream::ops::temporal_filter::TemporalFilter)
//! that evaluates it at every epoch's time. `now()` anywhere else in a view
//! is still refused (see `volatility`).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::error::{Result, SqlError};
use crate::stream::ops::temporal_filter::{Comparison, NOW_COLUMN, check_threshold};

/// Name of the function standing for the epoch's time in a view.
pub const EPOCH_NOW: &str = "freshet_epoch_now";

/// The epoch's time: in a view, each epoch's; evaluated directly (outside
/// a view), the current time.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EpochNow {
    signature: Signature,
}

impl EpochNow {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self { signature: Signature::nullary(Volatility::Volatile) }))
    }
}

impl ScalarUDFImpl for EpochNow {
    fn name(&self) -> &str {
        EPOCH_NOW
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let now = crate::stream::wall_clock_nanos();
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(Some(now), Some("+00:00".into()))))
    }
}

/// Replaces `now()` (and `current_timestamp`) in the plan's WHERE clauses
/// by [`EpochNow`].
pub fn mark_now(plan: LogicalPlan, epoch_now: &Arc<ScalarUDF>) -> Result<LogicalPlan> {
    let rewritten = plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Filter(filter) = node else { return Ok(Transformed::no(node)) };
        let mut filter = filter;
        let predicate = filter.predicate.clone().transform_up(|e| {
            Ok(match e {
                Expr::ScalarFunction(call) if call.func.name().eq_ignore_ascii_case("now") && call.args.is_empty() => {
                    Transformed::yes(epoch_now.call(vec![]))
                }
                other => Transformed::no(other),
            })
        })?;
        if !predicate.transformed {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        }
        filter.predicate = predicate.data;
        Ok(Transformed::yes(LogicalPlan::Filter(filter)))
    })?;
    Ok(rewritten.data)
}

/// Whether an expression reads the epoch's time.
pub fn reads_now(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::ScalarFunction(call) if call.func.name() == EPOCH_NOW))).unwrap_or(false)
}

/// One temporal comparison: `value OP threshold(now)`.
pub struct TemporalConjunct {
    /// The row's side.
    pub value: Expr,
    /// The time's side, over [`NOW_COLUMN`].
    pub threshold: Expr,
    pub comparison: Comparison,
}

/// Reads a WHERE conjunct that compares a row value with a bound on now().
pub fn temporal_conjunct(conjunct: &Expr) -> Result<TemporalConjunct> {
    let refuse = || {
        SqlError::not_supported(format!(
            "function now() can be used in a materialized view only in a WHERE comparison of a row's value with \
             now() plus or minus a constant (a temporal filter, e.g. ts > now() - INTERVAL '1' HOUR), not in {conjunct}"
        ))
    };
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else { return Err(refuse()) };
    let (value, bound, comparison) = match (reads_now(left), reads_now(right)) {
        (false, true) => (left, right, comparison_of(*op).ok_or_else(refuse)?),
        (true, false) => (right, left, flip(comparison_of(*op).ok_or_else(refuse)?)),
        _ => return Err(refuse()),
    };
    // The value side must read the row: a constant compared with now() is
    // not a filter on rows.
    if value.column_refs().is_empty() {
        return Err(refuse());
    }
    let now_column = Expr::Column(Column::new_unqualified(NOW_COLUMN));
    let threshold = (**bound)
        .clone()
        .transform_up(|e| {
            Ok(match e {
                Expr::ScalarFunction(call) if call.func.name() == EPOCH_NOW => Transformed::yes(now_column.clone()),
                other => Transformed::no(other),
            })
        })?
        .data;
    let schema = DFSchema::try_from(crate::stream::ops::temporal_filter::now_schema().as_ref().clone())?;
    check_threshold(&schema, &threshold)?;
    Ok(TemporalConjunct { value: (**value).clone(), threshold, comparison })
}

fn comparison_of(op: Operator) -> Option<Comparison> {
    Some(match op {
        Operator::Gt => Comparison::Greater,
        Operator::GtEq => Comparison::GreaterOrEqual,
        Operator::Lt => Comparison::Less,
        Operator::LtEq => Comparison::LessOrEqual,
        _ => return None,
    })
}

/// `bound OP value` read as `value OP' bound`.
fn flip(comparison: Comparison) -> Comparison {
    match comparison {
        Comparison::Greater => Comparison::Less,
        Comparison::GreaterOrEqual => Comparison::LessOrEqual,
        Comparison::Less => Comparison::Greater,
        Comparison::LessOrEqual => Comparison::GreaterOrEqual,
    }
}
