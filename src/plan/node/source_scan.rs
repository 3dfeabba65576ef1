//! A view reading a source directly: its own reader, position and watermark
//! ([`crate::stream::ops::source_scan::SourceScan`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use crate::stream::shared_read::SharedRead;
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
    // Its watermark turns idle after a time without rows: only an epoch
    // can say so.
    if source.watermark.as_ref().is_some_and(|def| def.idle_timeout.is_some()) {
        lowering.needs_ticks = true;
    }
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

/// A reader for each source that `root` scans more than once, shared by
/// those scans so that each epoch's records are read once
/// ([`SharedRead`]): one instance of the source's reader, filling the
/// columns any of the scans reads. Sources read once, and readers whose
/// reads cannot be repeated, get none (each scan reads on its own).
pub fn shared_reads(root: &Node) -> HashMap<String, Arc<dyn SourceReader>> {
    let mut scans: BTreeMap<&str, Vec<&SourceScanNode>> = BTreeMap::new();
    for node in root.walk() {
        if let Kind::SourceScan(scan) = &node.kind {
            scans.entry(scan.source.as_str()).or_default().push(scan);
        }
    }
    let mut shared = HashMap::new();
    for (source, scans) in scans {
        let [first, _, ..] = scans.as_slice() else { continue };
        let reader = first.reader.instance().unwrap_or_else(|| first.reader.clone());
        // The columns any scan reads (with the watermark's), or all of them.
        let mut read: Option<BTreeSet<usize>> = Some(BTreeSet::new());
        for scan in &scans {
            match (&mut read, &scan.projection) {
                (Some(read), Some(indices)) => {
                    read.extend(indices.iter().copied());
                    read.extend(scan.watermark.as_ref().map(|def| def.column));
                }
                _ => read = None,
            }
        }
        let reader = match read {
            Some(read) => reader.with_columns(&read.into_iter().collect::<Vec<_>>()).unwrap_or(reader),
            None => reader,
        };
        if let Some(one) = SharedRead::new(reader) {
            shared.insert(source.to_string(), one as Arc<dyn SourceReader>);
        }
    }
    shared
}

impl SourceScanNode {
    pub fn build(&self, node: &Node, cx: &BuildContext) -> Box<dyn Operator> {
        let reader = cx.shared_reads.get(&self.source).cloned().unwrap_or_else(|| self.reader.clone());
        Box::new(SourceScan::new(
            &self.source,
            reader,
            self.projection.clone(),
            self.watermark.clone(),
            node.schema.clone(),
            &cx.prefix(self.state),
            cx.stats.clone(),
        ))
    }
}
