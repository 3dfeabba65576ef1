//! A scan of a table or materialized view: the relation's changes in each
//! epoch ([`crate::stream::ops::scan::Scan`]). A scan of a source is a
//! [`super::source_scan`] node instead: the view reads the source itself.

use datafusion::logical_expr::TableScan;

use super::{Kind, Node};
use crate::error::Result;
use crate::plan::lowering::{Lowering, unsupported};
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::RelationId;
use crate::stream::ops::scan::Scan;

#[derive(Clone)]
pub struct ScanNode {
    pub relation: RelationId,
    /// The relation's columns read, in output order (`None`: all).
    pub projection: Option<Vec<usize>>,
    /// The relation's columns that carry a watermark.
    pub relation_watermarked: Vec<usize>,
    /// The relation's changes only insert rows.
    pub append_only: bool,
}

pub(in crate::plan) fn lower(lowering: &mut Lowering, scan: &TableScan) -> Result<Node> {
    if scan.fetch.is_some() {
        return Err(unsupported("LIMIT without ORDER BY"));
    }
    let relation = lowering.resolver.resolve(scan)?;
    let schema = stream_schema(&scan.projected_schema);
    let detail = format!("{}", datafusion::logical_expr::LogicalPlan::TableScan(scan.clone()).display());
    if let Some(source) = relation.source {
        return super::source_scan::lower(lowering, scan, &source, schema, detail);
    }
    lowering.inputs.insert(relation.id);
    let read: Vec<usize> = match &scan.projection {
        Some(indices) => indices.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let watermarked = read.iter().map(|c| relation.watermarked.contains(c)).collect();
    Ok(Node {
        kind: Kind::Scan(ScanNode {
            relation: relation.id,
            projection: scan.projection.clone(),
            relation_watermarked: relation.watermarked,
            append_only: relation.append_only,
        }),
        inputs: Vec::new(),
        schema,
        watermarked,
        detail,
    })
}

impl ScanNode {
    pub fn build(&self, node: &Node) -> Box<dyn Operator> {
        Box::new(Scan::new(self.relation, self.projection.clone(), &self.relation_watermarked, node.schema.clone()))
    }
}
