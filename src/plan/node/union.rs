//! UNION ALL ([`crate::stream::ops::union::Union`]): the inputs' changes
//! together. A column carries a watermark if it does in every input.

use datafusion::logical_expr::LogicalPlan;

use super::{Kind, Node};
use crate::error::Result;
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::ops::union::Union;

#[derive(Clone)]
pub struct UnionNode;

pub(in crate::plan) fn lower(union: &datafusion::logical_expr::Union, inputs: Vec<Node>) -> Result<Node> {
    let schema = stream_schema(&union.schema);
    let watermarked = (0..schema.fields().len())
        .map(|c| !inputs.is_empty() && inputs.iter().all(|i| i.watermarked.get(c) == Some(&true)))
        .collect();
    Ok(Node {
        kind: Kind::Union(UnionNode),
        inputs,
        schema,
        watermarked,
        detail: LogicalPlan::Union(union.clone()).display().to_string(),
    })
}

impl UnionNode {
    pub fn build(&self, node: &Node, inputs: Vec<Box<dyn Operator>>) -> Box<dyn Operator> {
        Box::new(Union::new(inputs, node.schema.clone()))
    }
}
