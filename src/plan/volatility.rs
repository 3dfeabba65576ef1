//! Which queries a materialized view can be kept correct for: only those
//! whose functions give the same result for the same arguments.
//!
//! A view is maintained by feeding each change through its query: a delete
//! retracts what the row's insert produced by computing it again. With a
//! volatile function (`random()`) the second computation differs, so the
//! view drifts from its query; a replay of the epoch log after a crash would
//! also recompute different values. Functions of the current time (`now()`,
//! `current_date`, ...) are stable within a statement but DataFusion folds
//! them into constants at planning, so a view would silently freeze the time
//! of its creation. Both are refused at CREATE, naming the function, as
//! Materialize does, instead of giving a view that is quietly wrong — except
//! now() in a WHERE comparison (a temporal filter), which `temporal` marks
//! before this check and lowering evaluates at every epoch's time.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

use crate::error::{Result, SqlError, sqlstate};

/// Fails with 0A000 if `plan` (as planned, before constant folding) calls a
/// function a materialized view cannot be maintained over.
pub fn check_materializable(plan: &LogicalPlan) -> Result<()> {
    let mut refused: Option<(String, Volatility)> = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e {
                    // The epoch's time of a temporal filter (see `temporal`).
                    if call.func.name() == super::temporal::EPOCH_NOW {
                        return Ok(TreeNodeRecursion::Continue);
                    }
                    let volatility = call.func.signature().volatility;
                    if volatility != Volatility::Immutable {
                        refused = Some((call.func.name().to_string(), volatility));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    match refused {
        None => Ok(()),
        Some((name, Volatility::Volatile)) => Err(SqlError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "function {name}() is volatile and cannot be used in a materialized view: a row's \
                 delete would not retract the value its insert produced (use it in a SELECT or a plain view)"
            ),
        )),
        Some((name, _)) => Err(SqlError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "function {name}() depends on the current time and cannot be used here in a materialized \
                 view: the view would keep the time of its creation (a WHERE comparison with now(), such as \
                 ts > now() - INTERVAL '1' HOUR, is a temporal filter and works)"
            ),
        )),
    }
}
