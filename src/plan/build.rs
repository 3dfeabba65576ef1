//! Building: a stream plan into live operators, the one place that does it.
//!
//! Inputs are built first, then the node's operator over them. A keyed node
//! on a view with several workers (see [`Node::partitioned`]) becomes an
//! [`Exchange`]: each input is routed by its key to one copy of the operator
//! per worker, and each copy owns the keys that hash to it. Building has no
//! effect beyond the operators it returns (a source scan opens a new
//! instance of its reader), so a plan is built again whenever its operators
//! must start over: at CREATE, at startup, after a failed write.

use super::common_subplans;
use super::node::{BuildContext, Kind, Node};
use crate::error::{Result, SqlError};
use crate::stream::ops::exchange::{Exchange, Feed, Ownership, Routed};
use crate::stream::ops::shared::Shared;
use crate::stream::{EpochInput, Operator};

/// The operators of `node` and its inputs; a subtree the plan repeats is
/// built the first time and handed out after that.
pub fn build(node: &Node, cx: &BuildContext) -> Result<Box<dyn Operator>> {
    if cx.shared_subplans.is_empty() {
        return build_node(node, cx);
    }
    let fingerprint = common_subplans::fingerprint(node);
    if !cx.shared_subplans.contains(&fingerprint) {
        return build_node(node, cx);
    }
    if let Some(built) = cx.built_subplans.borrow().get(&fingerprint) {
        return Ok(Box::new(built.another()));
    }
    let shared = Shared::new(build_node(node, cx)?);
    let handle = shared.another();
    cx.built_subplans.borrow_mut().insert(fingerprint, shared);
    Ok(Box::new(handle))
}

/// The operator of `node` over its inputs' (built by [`build`]).
fn build_node(node: &Node, cx: &BuildContext) -> Result<Box<dyn Operator>> {
    let inputs = node.inputs.iter().map(|input| build(input, cx)).collect::<Result<Vec<_>>>()?;
    let op = if node.partitioned(cx.workers) {
        exchange(node, inputs, cx)?
    } else {
        one(node, inputs, Ownership::all(), cx)?
    };
    if cfg!(debug_assertions) {
        // The plan's watermark columns are derived without operators; they
        // must be the ones the operators derive.
        let derived: Vec<bool> = op.watermarks(&EpochInput::probe())?.iter().map(Option::is_some).collect();
        if derived != node.watermarked {
            return Err(SqlError::internal(format!(
                "{} plans watermarks on {:?} but its operator has them on {derived:?}",
                node.kind.name(),
                node.watermarked
            )));
        }
    }
    Ok(op)
}

/// One copy of `node`'s operator over `inputs`, owning the keys `ownership`
/// gives it.
fn one(
    node: &Node,
    inputs: Vec<Box<dyn Operator>>,
    ownership: Ownership,
    cx: &BuildContext,
) -> Result<Box<dyn Operator>> {
    if let Kind::Union(union) = &node.kind {
        return Ok(union.build(node, inputs));
    }
    let mut inputs = inputs.into_iter();
    let mut input =
        || inputs.next().ok_or_else(|| SqlError::internal(format!("{} node without its input", node.kind.name())));
    Ok(match &node.kind {
        Kind::Scan(scan) => scan.build(node),
        Kind::SourceScan(scan) => scan.build(node, cx),
        Kind::Project(project) => project.build(node, input()?),
        Kind::Expand(expand) => expand.build(node, input()?)?,
        Kind::Filter(filter) => filter.build(input()?),
        Kind::TemporalFilter(filter) => filter.build(input()?, cx)?,
        Kind::Aggregate(aggregate) => aggregate.build(node, input()?, ownership, cx)?,
        Kind::Join(join) => {
            let left = input()?;
            join.build(node, left, input()?, ownership, cx)?
        }
        Kind::Union(_) => return Err(SqlError::internal("a union is built above")),
        Kind::TopN(topn) => topn.build(input()?, cx)?,
        Kind::Window(window) => window.build(node, input()?, cx)?,
        Kind::Constant(constant) => constant.build(),
    })
}

/// `node`'s operator once per worker, each copy fed the rows whose keys it
/// owns.
fn exchange(node: &Node, inputs: Vec<Box<dyn Operator>>, cx: &BuildContext) -> Result<Box<dyn Operator>> {
    let routes = node.kind.routes().unwrap_or_default();
    if routes.len() != inputs.len() {
        return Err(SqlError::internal(format!("{} node without a route for each input", node.kind.name())));
    }
    let key_types = routes.first().map(|route| route.types.clone()).unwrap_or_default();
    let mut routed = Vec::with_capacity(inputs.len());
    let mut feeds_by_input: Vec<std::vec::IntoIter<Feed>> = Vec::with_capacity(inputs.len());
    for (input, route) in inputs.into_iter().zip(routes) {
        let (r, feeds) = Routed::new(input, route.keys.clone(), route.types.clone(), cx.workers);
        routed.push(r);
        feeds_by_input.push(feeds.into_iter());
    }
    let mut workers = Vec::with_capacity(cx.workers);
    for worker in 0..cx.workers {
        let feeds: Vec<Box<dyn Operator>> =
            feeds_by_input.iter_mut().filter_map(|f| f.next()).map(|f| Box::new(f) as Box<dyn Operator>).collect();
        let ownership = Ownership { worker, workers: cx.workers, key_types: key_types.clone() };
        workers.push(one(node, feeds, ownership, cx)?);
    }
    Ok(Box::new(Exchange::new(routed, workers, node.schema.clone())))
}
