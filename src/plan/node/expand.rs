//! A UNION ALL of shifted copies of one input
//! ([`crate::stream::ops::expand::Expand`]), the shape a hopping window
//! takes (`sql/windows.rs`: one copy per window a row falls in, each its
//! pane start minus a multiple of the slide):
//!
//! ```text
//! Union                                         Expand [5 copies]
//!   Projection: k, date_bin(2s, t) AS w           Projection 0: k, date_bin(2s, t) AS w
//!     TableScan: bid                 becomes      Projection 1: k, date_bin(2s, t) - 2s AS w
//!   Projection: k, date_bin(2s, t) - 2s AS w      …
//!     TableScan: bid                                TableScan: bid
//!   …
//! ```
//!
//! Every copy's column is the first copy's column, or it plus or minus a
//! constant, so rows the first copy maps to the same output have the same
//! output in every copy. The operator reads its input once, keeps one row
//! per distinct first-copy output with the rows' weights summed, and only
//! then makes the copies: Nexmark q5 counts ~18 bids per auction and
//! 2-second pane, so its aggregate sees each (auction, window) once per
//! epoch with a weight instead of once per bid.

use std::sync::Arc;

use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator as BinaryOp, Projection, Union};
use datafusion::physical_plan::PhysicalExpr;

use super::{Kind, Node};
use crate::error::Result;
use crate::plan::lowering::Lowering;
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::ops::expand::Expand;
use crate::stream::watermark;

#[derive(Clone)]
pub struct ExpandNode {
    /// Per copy, its output columns over the input.
    pub copies: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Per copy, for each output column the input column it is monotone in.
    pub monotone: Vec<Vec<Option<usize>>>,
}

/// The copies' projections, when `union` is copies of one input each
/// projected by the first copy's columns shifted by constants; `None` for
/// any other union.
pub(in crate::plan) fn recognize(union: &Union) -> Option<Vec<&Projection>> {
    let copies: Vec<&Projection> = union
        .inputs
        .iter()
        .map(|input| match input.as_ref() {
            LogicalPlan::Projection(p) => Some(p),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let (first, rest) = copies.split_first()?;
    if rest.is_empty() || first.expr.iter().any(Expr::is_volatile) {
        return None;
    }
    let same_shape = rest.iter().all(|copy| {
        copy.input == first.input
            && copy.expr.len() == first.expr.len()
            && copy.expr.iter().zip(&first.expr).all(|(e, base)| shifted(e.clone().unalias(), &base.clone().unalias()))
    });
    same_shape.then_some(copies)
}

/// Whether `expr` is `base`, or `base` plus or minus a literal.
fn shifted(expr: Expr, base: &Expr) -> bool {
    if &expr == base {
        return true;
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: BinaryOp::Plus | BinaryOp::Minus, right }) => {
            left.as_ref() == base && matches!(right.as_ref(), Expr::Literal(..))
        }
        _ => false,
    }
}

/// The node over `input` (the copies' common input, lowered once).
pub(in crate::plan) fn lower(
    lowering: &mut Lowering,
    union: &Union,
    copies: &[&Projection],
    input: Node,
) -> Result<Node> {
    let schema = stream_schema(&union.schema);
    let mut exprs = Vec::with_capacity(copies.len());
    let mut monotone = Vec::with_capacity(copies.len());
    for copy in copies {
        exprs.push(lowering.exprs(&copy.expr, copy.input.schema())?);
        monotone.push(copy.expr.iter().map(|e| watermark::monotone_column(e, copy.input.schema())).collect::<Vec<_>>());
    }
    // As a union: a column carries a watermark if it does in every copy.
    let watermarked = (0..schema.fields().len())
        .map(|c| {
            monotone.iter().all(|columns: &Vec<Option<usize>>| {
                columns.get(c).copied().flatten().is_some_and(|i| input.watermarked.get(i) == Some(&true))
            })
        })
        .collect();
    // The first copy's columns in full, then what each other copy changes.
    let first: Vec<String> = copies.first().map(|c| c.expr.iter().map(Expr::to_string).collect()).unwrap_or_default();
    let others: Vec<String> = copies
        .iter()
        .skip(1)
        .map(|copy| {
            let changed: Vec<String> =
                copy.expr.iter().map(Expr::to_string).filter(|column| !first.contains(column)).collect();
            format!("[{}]", changed.join(", "))
        })
        .collect();
    let detail = format!(
        "{} copies, rows merged before copying: [{}], then {}",
        copies.len(),
        first.join(", "),
        others.join(", ")
    );
    Ok(Node {
        kind: Kind::Expand(ExpandNode { copies: exprs, monotone }),
        inputs: vec![input],
        schema,
        watermarked,
        detail,
    })
}

impl ExpandNode {
    pub fn build(&self, node: &Node, input: Box<dyn Operator>) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Expand::new(input, self.copies.clone(), &self.monotone, node.schema.clone())?))
    }
}
