//! Lowering: DataFusion's optimized `LogicalPlan`, node by node, into the
//! stream plan ([`Node`]s). The inputs of a node are lowered first (so
//! stateful operators are numbered inputs first), then the file of its kind
//! under `plan/node/` makes the node over them.

use datafusion::logical_expr::{Distinct, LogicalPlan};

use super::lowering::{Lowering, unsupported};
use super::node::{self, Node};
use crate::error::Result;

/// The stream plan of `plan`.
pub fn lower(lowering: &mut Lowering, plan: &LogicalPlan) -> Result<Node> {
    let mut one = |input: &LogicalPlan| lower(lowering, input);
    match plan {
        LogicalPlan::Projection(p) => {
            let input = one(&p.input)?;
            node::project::lower(lowering, p, input)
        }
        LogicalPlan::Filter(f) => {
            let input = one(&f.input)?;
            node::filter::lower(lowering, f, input)
        }
        LogicalPlan::TableScan(scan) => node::scan::lower(lowering, scan),
        // An alias renames nothing a dataflow sees.
        LogicalPlan::SubqueryAlias(alias) => one(&alias.input),
        LogicalPlan::Aggregate(agg) => {
            let input = one(&agg.input)?;
            node::aggregate::lower(lowering, agg, input)
        }
        LogicalPlan::Distinct(Distinct::All(input_plan)) => {
            let input = one(input_plan)?;
            node::aggregate::lower_distinct(lowering, input_plan, input)
        }
        LogicalPlan::Distinct(Distinct::On(_)) => Err(unsupported("DISTINCT ON")),
        LogicalPlan::Join(join) => {
            let left = one(&join.left)?;
            let right = lower(lowering, &join.right)?;
            node::join::lower(lowering, join, left, right)
        }
        LogicalPlan::Union(union) => {
            if let Some(copies) = node::expand::recognize(union) {
                // Shifted copies of one input: lowered once. The other
                // copies' inputs are lowered too and dropped, so that the
                // state numbers after them stay those a plain union gives
                // (a view stored before keeps reading its state).
                let mut lowered = copies.iter().map(|copy| lower(lowering, &copy.input));
                let input = lowered.next().ok_or_else(|| unsupported("an empty UNION"))??;
                for other in lowered {
                    other?;
                }
                return node::expand::lower(lowering, union, &copies, input);
            }
            let inputs = union.inputs.iter().map(|input| lower(lowering, input)).collect::<Result<Vec<_>>>()?;
            node::union::lower(union, inputs)
        }
        LogicalPlan::Sort(sort) => match sort.fetch {
            Some(fetch) => {
                let input = one(&sort.input)?;
                node::topn::lower(lowering, plan, &sort.input, &sort.expr, 0, fetch, input)
            }
            // Rows of a view have no order; ORDER BY alone changes nothing.
            None => one(&sort.input),
        },
        LogicalPlan::Limit(limit) => {
            let (sort, skip, fetch) = node::topn::limit(limit)?;
            let input = one(&sort.input)?;
            node::topn::lower(lowering, plan, &sort.input, &sort.expr, skip, fetch, input)
        }
        LogicalPlan::EmptyRelation(empty) => node::constant::lower_empty(plan, empty),
        LogicalPlan::Values(values) => node::constant::lower_values(lowering, plan, values),
        LogicalPlan::Window(window) => {
            let input = one(&window.input)?;
            node::window::lower(lowering, plan, window, input)
        }
        LogicalPlan::RecursiveQuery(_) => Err(unsupported("WITH RECURSIVE")),
        LogicalPlan::Unnest(_) => Err(unsupported("UNNEST")),
        other => Err(unsupported(format!("the plan node {}", other.display()))),
    }
}
