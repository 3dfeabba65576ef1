//! A view reading a source directly: its own reader, position and watermark
//! ([`crate::stream::ops::source_scan::SourceScan`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::TableScan;

use super::BuildContext;
use super::{Kind, Node};
use crate::catalog::Relation;
use crate::error::{Result, SqlError};
use crate::plan::lowering::Lowering;
use crate::stream::Operator;
use crate::stream::connector::{Reader, SourceReader};
use crate::stream::ops::source_scan::SourceScan;
use crate::stream::watermark::TableWatermark;

#[derive(Clone)]
pub struct SourceScanNode {
    pub source: String,
    /// The source's reader; each build reads through a new instance of it.
    pub reader: Arc<dyn SourceReader>,
    pub projection: Option<Vec<usize>>,
    pub watermark: Option<Arc<TableWatermark>>,
    pub state: u16,
}

pub(super) fn lower(
    lowering: &mut Lowering,
    scan: &TableScan,
    source: &Relation,
    schema: SchemaRef,
    detail: String,
) -> Result<Node> {
    let reader = match source.reader.clone() {
        Some(Reader::Appends(reader)) => reader,
        Some(Reader::Keyed(_)) => {
            return Err(SqlError::new(
                crate::error::sqlstate::WRONG_OBJECT_TYPE,
                format!(
                    "source {} yields changes by key, which only a table can apply: read it through a table \
                     (CREATE TABLE t (…) FROM {} TABLE 'schema.table')",
                    source.name, source.name
                ),
            ));
        }
        None => return Err(SqlError::internal(format!("source {} has no reader", source.name))),
    };
    let state = lowering.state_number()?;
    lowering.clocked = true;
    let mut watermarked = vec![false; schema.fields().len()];
    if let Some(def) = &source.watermark {
        let output = match &scan.projection {
            Some(indices) => indices.iter().position(|&i| i == def.column),
            None => Some(def.column),
        };
        if let Some(slot) = output.and_then(|column| watermarked.get_mut(column)) {
            *slot = true;
        }
    }
    Ok(Node {
        kind: Kind::SourceScan(SourceScanNode {
            source: source.name.to_string(),
            reader,
            projection: scan.projection.clone(),
            watermark: source.watermark.clone(),
            state,
        }),
        inputs: Vec::new(),
        schema,
        watermarked,
        detail,
    })
}

impl SourceScanNode {
    pub fn build(&self, node: &Node, cx: &BuildContext) -> Box<dyn Operator> {
        Box::new(SourceScan::new(
            &self.source,
            self.reader.clone(),
            self.projection.clone(),
            self.watermark.clone(),
            node.schema.clone(),
            &cx.prefix(self.state),
            cx.stats.clone(),
        ))
    }
}
