//! Common subplans: a computation a query names twice runs once.
//!
//! Queries repeat themselves. Nexmark q5 counts bids per auction and window
//! in two subqueries, one to keep the counts and one to take their maximum;
//! a self-join reads one aggregate on both sides. Each copy would keep its
//! own state and redo the same work every epoch. Two steps make them one:
//!
//! 1. [`align_aggregates`] (on DataFusion's optimized plan, before
//!    lowering): aggregates over the same input with the same aggregate
//!    calls that group by the same columns in another order become the
//!    first one's aggregate under a projection that restores their column
//!    order. (q5 groups by `window_start, auction` in one subquery and by
//!    `auction, window_start` in the other.)
//! 2. [`shared_subplans`] (on the stream plan): subtrees that compute the
//!    same thing — same node kinds, what each computes, schemas and inputs,
//!    whatever their state numbers — are built once (`plan/build.rs`), and
//!    every place that reads them gets a handle on the one operator
//!    (`stream/ops/shared.rs`).
//!
//! Only subtrees rooted at a stateful operator are shared (the work worth
//! saving), and only over inputs that read the same rows every time they
//! are asked: tables and replayable sources. A Kafka source's scans each
//! consume on their own, so subtrees over them stay separate; so do inline
//! VALUES lists, whose plan text may abbreviate them.
//!
//! The shared operator keeps its state under the number of the first copy
//! (lowering numbers inputs first, left first, as building visits them),
//! so a view planned before sharing existed restores the same state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};

use super::node::{Kind, Node};
use crate::error::Result;

/// Rewrites every aggregate that equals an earlier one (bottom up, left
/// first) up to the order of its GROUP BY columns into that earlier
/// aggregate under a projection in its own column order.
pub fn align_aggregates(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut seen: Vec<Aggregate> = Vec::new();
    let aligned = plan.transform_up(|node| {
        let LogicalPlan::Aggregate(aggregate) = &node else { return Ok(Transformed::no(node)) };
        let first = seen.iter().find(|first| {
            first.input == aggregate.input
                && first.aggr_expr == aggregate.aggr_expr
                && first.group_expr != aggregate.group_expr
                && same_columns(&first.group_expr, &aggregate.group_expr)
        });
        let Some(first) = first else {
            if !aggregate.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
                seen.push(aggregate.clone());
            }
            return Ok(Transformed::no(node));
        };
        // The first aggregate's output has the same fields, in its order:
        // select them back in this one's.
        let columns = aggregate.schema.columns().into_iter().map(Expr::Column).collect();
        let projection = Projection::try_new(columns, Arc::new(LogicalPlan::Aggregate(first.clone())))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    })?;
    Ok(aligned.data)
}

/// Two GROUP BY lists with the same expressions (no grouping sets).
fn same_columns(a: &[Expr], b: &[Expr]) -> bool {
    let plain = |list: &[Expr]| !list.iter().any(|e| matches!(e, Expr::GroupingSet(_)));
    a.len() == b.len() && plain(a) && plain(b) && a.iter().all(|e| b.contains(e)) && b.iter().all(|e| a.contains(e))
}

/// What a subtree computes, in words: two subtrees with the same
/// fingerprint compute the same rows in every epoch. State numbers are
/// left out; everything that decides the output is in: the node kinds,
/// what each computes (DataFusion's description), schemas, watermarked
/// columns and the inputs', in order.
pub fn fingerprint(node: &Node) -> String {
    let fields: Vec<String> = node.schema.fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect();
    let inputs: Vec<String> = node.inputs.iter().map(fingerprint).collect();
    format!("{}|{}|{}|{:?}|[{}]", node.kind.name(), node.detail, fields.join(","), node.watermarked, inputs.join(";"))
}

/// The fingerprints of the subtrees of `root` that are built once and
/// read in several places: each appears at least twice where building
/// reaches it (building does not enter a shared subtree's later copies).
pub fn shared_subplans(root: &Node) -> HashSet<String> {
    let mut everywhere: HashMap<String, usize> = HashMap::new();
    for node in root.walk() {
        if shareable(node) {
            *everywhere.entry(fingerprint(node)).or_default() += 1;
        }
    }
    everywhere.retain(|_, count| *count > 1);
    if everywhere.is_empty() {
        return HashSet::new();
    }
    let mut reached: HashMap<String, usize> = HashMap::new();
    count_reached(root, &everywhere, &mut reached);
    reached.into_iter().filter(|(_, count)| *count > 1).map(|(fingerprint, _)| fingerprint).collect()
}

/// Visits the tree as building does, counting where each repeated subtree
/// is reached; a copy after the first is not entered.
fn count_reached(node: &Node, repeated: &HashMap<String, usize>, reached: &mut HashMap<String, usize>) {
    if repeated.contains_key(&fingerprint(node)) {
        let count = reached.entry(fingerprint(node)).or_default();
        *count += 1;
        if *count > 1 {
            return;
        }
    }
    for input in &node.inputs {
        count_reached(input, repeated, reached);
    }
}

/// A subtree worth sharing and safe to share: rooted at a stateful
/// operator, over inputs that give every reader the same rows.
fn shareable(node: &Node) -> bool {
    let stateful_root = node.kind.state().is_some() && !matches!(node.kind, Kind::SourceScan(_));
    stateful_root
        && node.walk().iter().all(|n| match &n.kind {
            Kind::SourceScan(scan) => scan.reader.replayable(),
            Kind::Constant(_) => false,
            _ => true,
        })
}
