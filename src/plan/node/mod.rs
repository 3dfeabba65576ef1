//! The stream plan: what a view's dataflow is, as plain data.
//!
//! Lowering (`plan/lower.rs`) turns DataFusion's optimized `LogicalPlan` into
//! a tree of [`Node`]s; nothing runs yet. A node names the operator it
//! becomes ([`Kind`], one file per kind here, mirroring `stream/ops/`), its
//! output schema, which output columns carry a watermark, the state key
//! number of a stateful operator, and for a keyed operator the key each input
//! is routed by when the view runs on several workers. The tree can be
//! printed (EXPLAIN, `plan/explain.rs`), inspected in tests, and built into
//! live operators as many times as needed (`plan/build.rs`, the one place
//! that does it): at CREATE, at startup, and after a failed write.
//!
//! ```text
//! SELECT k, count(*) FROM t WHERE v > 0 GROUP BY k
//!
//! Aggregate [state #0; retracting; exchange by key]   group k, count(*)
//!   Filter                                 v > 0
//!     Scan                                 t
//! ```

pub mod aggregate;
pub mod constant;
pub mod expand;
pub mod filter;
pub mod join;
pub mod project;
pub mod scan;
pub mod source_scan;
pub mod temporal_filter;
pub mod topn;
pub mod union;
pub mod window;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_plan::PhysicalExpr;

use crate::stream::RelationId;
use crate::stream::watermark::ViewStats;

/// One operator of a view's dataflow, with the nodes it reads.
#[derive(Clone)]
pub struct Node {
    pub kind: Kind,
    /// The nodes whose output this one reads, in the operator's order
    /// (a join's left side first).
    pub inputs: Vec<Node>,
    /// The output schema (every field nullable).
    pub schema: SchemaRef,
    /// Which output columns carry a watermark.
    pub watermarked: Vec<bool>,
    /// What the node computes, in DataFusion's words (EXPLAIN prints it).
    pub detail: String,
}

/// The operator a node becomes, with what it is built from.
#[derive(Clone)]
pub enum Kind {
    Scan(scan::ScanNode),
    SourceScan(source_scan::SourceScanNode),
    Project(project::ProjectNode),
    Filter(filter::FilterNode),
    TemporalFilter(temporal_filter::TemporalFilterNode),
    Aggregate(aggregate::AggregateNode),
    Join(join::JoinNode),
    Union(union::UnionNode),
    Expand(expand::ExpandNode),
    TopN(topn::TopNNode),
    Window(window::WindowNode),
    Constant(constant::ConstantNode),
}

/// How one input of a keyed operator is split over workers: rows with equal
/// `keys` (cast to `types`, so a join's two sides hash alike) meet in the
/// same copy of the operator.
#[derive(Clone)]
pub struct KeyRoute {
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub types: Vec<DataType>,
}

impl Kind {
    /// The operator's name, as EXPLAIN prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Scan(_) => "Scan",
            Kind::SourceScan(_) => "SourceScan",
            Kind::Project(_) => "Project",
            Kind::Filter(_) => "Filter",
            Kind::TemporalFilter(_) => "TemporalFilter",
            Kind::Aggregate(_) => "Aggregate",
            Kind::Join(_) => "Join",
            Kind::Union(_) => "Union",
            Kind::Expand(_) => "Expand",
            Kind::TopN(_) => "TopN",
            Kind::Window(_) => "Window",
            Kind::Constant(_) => "Constant",
        }
    }

    /// The number of the operator's state (its key prefix within the view),
    /// for an operator that keeps state.
    pub fn state(&self) -> Option<u16> {
        match self {
            Kind::SourceScan(n) => Some(n.state),
            Kind::TemporalFilter(n) => Some(n.state),
            Kind::Aggregate(n) => Some(n.state),
            Kind::Join(n) => Some(n.state),
            Kind::TopN(n) => Some(n.state),
            Kind::Window(n) => Some(n.state),
            Kind::Scan(_)
            | Kind::Project(_)
            | Kind::Filter(_)
            | Kind::Union(_)
            | Kind::Expand(_)
            | Kind::Constant(_) => None,
        }
    }

    /// For an operator keyed by its inputs' rows, how each input is routed;
    /// `None` for the others, which run as one copy.
    pub fn routes(&self) -> Option<&[KeyRoute]> {
        match self {
            Kind::Aggregate(n) => Some(std::slice::from_ref(&n.route)),
            Kind::Join(n) => Some(&n.routes),
            Kind::Window(n) => Some(std::slice::from_ref(&n.route)),
            _ => None,
        }
    }
}

impl Node {
    /// Whether the node runs as one copy per worker behind an exchange: a
    /// keyed operator with a key on every input (a global aggregate or a
    /// join without equality keys has nothing to split by).
    pub fn partitioned(&self, workers: usize) -> bool {
        workers > 1 && self.kind.routes().is_some_and(|routes| routes.iter().all(|r| !r.keys.is_empty()))
    }

    /// Every node of the tree, this one first, each before its inputs.
    pub fn walk(&self) -> Vec<&Node> {
        let mut out = vec![self];
        for input in &self.inputs {
            out.extend(input.walk());
        }
        out
    }

    /// Whether the node's output only ever inserts rows (all weights
    /// positive): leaves that only append, and the operators that keep that
    /// (projections, filters, UNION ALL, inner joins). Everything that can
    /// take a row back — aggregates, outer joins, top-N, window functions,
    /// rows leaving a temporal filter — is not.
    pub fn append_only(&self) -> bool {
        let inputs = || self.inputs.iter().all(Node::append_only);
        match &self.kind {
            Kind::SourceScan(_) => true,
            Kind::Scan(scan) => scan.append_only,
            Kind::Project(_) | Kind::Filter(_) | Kind::Union(_) | Kind::Expand(_) => inputs(),
            Kind::Join(join) => matches!(join.join_kind, crate::stream::ops::join::JoinKind::Inner) && inputs(),
            Kind::TemporalFilter(_) | Kind::Aggregate(_) | Kind::TopN(_) | Kind::Window(_) | Kind::Constant(_) => false,
        }
    }

    /// The positions of the watermarked output columns.
    pub fn watermarked_columns(&self) -> Vec<usize> {
        self.watermarked.iter().enumerate().filter_map(|(i, w)| w.then_some(i)).collect()
    }
}

/// What building a view's operators needs besides its plan.
pub struct BuildContext {
    /// The view (its id leads its operators' state keys).
    pub view: RelationId,
    /// Copies of each partitioned operator.
    pub workers: usize,
    /// Where the operators count late rows and read sources.
    pub stats: Arc<ViewStats>,
    /// One reader per source the view scans more than once, shared by
    /// those scans (`source_scan::shared_reads`).
    pub shared_reads: std::collections::HashMap<String, Arc<dyn crate::stream::connector::SourceReader>>,
    /// The fingerprints of the subtrees built once and read in several
    /// places (`plan/common_subplans.rs`).
    pub shared_subplans: std::collections::HashSet<String>,
    /// Those built so far, by fingerprint: later readers get a handle.
    pub built_subplans: std::cell::RefCell<std::collections::HashMap<String, crate::stream::ops::shared::Shared>>,
}

impl BuildContext {
    /// The state key prefix of the view's stateful operator `number`.
    pub fn prefix(&self, number: u16) -> [u8; 7] {
        crate::state::operator_prefix(self.view, number)
    }
}
