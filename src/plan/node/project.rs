//! Computed columns ([`crate::stream::ops::project::Project`]). A column
//! that grows with a watermarked input column (the column itself, a cast,
//! `date_bin`, plus a constant) carries a watermark too.

use std::sync::Arc;

use datafusion::logical_expr::{LogicalPlan, Projection};
use datafusion::physical_plan::PhysicalExpr;

use super::{Kind, Node};
use crate::error::Result;
use crate::plan::lowering::Lowering;
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::ops::project::Project;
use crate::stream::watermark;

#[derive(Clone)]
pub struct ProjectNode {
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// For each output column, the input column it is monotone in.
    pub monotone: Vec<Option<usize>>,
}

pub(in crate::plan) fn lower(lowering: &mut Lowering, p: &Projection, input: Node) -> Result<Node> {
    let exprs = lowering.exprs(&p.expr, p.input.schema())?;
    let monotone: Vec<Option<usize>> = p.expr.iter().map(|e| watermark::monotone_column(e, p.input.schema())).collect();
    let watermarked = monotone.iter().map(|m| m.is_some_and(|c| input.watermarked.get(c) == Some(&true))).collect();
    Ok(Node {
        kind: Kind::Project(ProjectNode { exprs, monotone }),
        inputs: vec![input],
        schema: stream_schema(&p.schema),
        watermarked,
        detail: LogicalPlan::Projection(p.clone()).display().to_string(),
    })
}

impl ProjectNode {
    pub fn build(&self, node: &Node, input: Box<dyn Operator>) -> Box<dyn Operator> {
        Box::new(Project::new(input, self.exprs.clone(), &self.monotone, node.schema.clone()))
    }
}
