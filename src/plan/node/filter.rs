//! A WHERE clause ([`crate::stream::ops::filter::Filter`]). Comparisons
//! with `now()` are split off into temporal filters above it
//! ([`super::temporal_filter`]), one per comparison.

use std::sync::Arc;

use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::physical_plan::PhysicalExpr;

use super::{Kind, Node};
use crate::error::Result;
use crate::plan::lowering::Lowering;
use crate::plan::temporal;
use crate::stream::Operator;
use crate::stream::ops::filter::Filter;

#[derive(Clone)]
pub struct FilterNode {
    pub predicate: Arc<dyn PhysicalExpr>,
}

pub(in crate::plan) fn lower(
    lowering: &mut Lowering,
    f: &datafusion::logical_expr::Filter,
    input: Node,
) -> Result<Node> {
    let mut node = input;
    let (timed, plain): (Vec<&Expr>, Vec<&Expr>) =
        split_conjunction(&f.predicate).into_iter().partition(|c| temporal::reads_now(c));
    if let Some(predicate) = conjunction(plain.into_iter().cloned()) {
        let compiled = lowering.expr(&predicate, f.input.schema())?;
        node = Node {
            kind: Kind::Filter(FilterNode { predicate: compiled }),
            schema: node.schema.clone(),
            watermarked: node.watermarked.clone(),
            detail: format!("Filter: {predicate}"),
            inputs: vec![node],
        };
    }
    for conjunct in timed {
        node = super::temporal_filter::lower(lowering, node, conjunct, f.input.schema())?;
    }
    Ok(node)
}

impl FilterNode {
    pub fn build(&self, input: Box<dyn Operator>) -> Box<dyn Operator> {
        Box::new(Filter::new(input, self.predicate.clone()))
    }
}
