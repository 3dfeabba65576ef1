//! EXPLAIN CREATE MATERIALIZED VIEW: the stream plan, one line per node,
//! each above its inputs and indented below the node it feeds, with the
//! state it keeps (the numbers are its state key prefixes within the view)
//! the columns that carry a watermark, how an aggregate keeps its groups,
//! and whether it runs once per worker behind an exchange. A subplan the
//! query repeats is printed once: its later places say it is the one above.

use std::collections::HashSet;

use super::common_subplans::{fingerprint, shared_subplans};
use super::node::{Kind, Node};

/// The lines describing `root` on a view with `workers` workers.
pub fn render(root: &Node, workers: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut shared = Shared { subplans: shared_subplans(root), printed: HashSet::new() };
    render_into(root, 0, workers, &mut lines, &mut shared);
    lines
}

/// The repeated subplans, and those already printed.
struct Shared {
    subplans: HashSet<String>,
    printed: HashSet<String>,
}

fn render_into(node: &Node, depth: usize, workers: usize, lines: &mut Vec<String>, shared: &mut Shared) {
    let mut facts = Vec::new();
    let mut repeat = false;
    if !shared.subplans.is_empty() {
        let fingerprint = fingerprint(node);
        if shared.subplans.contains(&fingerprint) {
            repeat = !shared.printed.insert(fingerprint);
            facts.push(if repeat { "shared: the operator above" } else { "shared: computed once" }.to_string());
        }
    }
    if let Some(number) = node.kind.state() {
        facts.push(format!("state #{number}"));
    }
    if let Kind::Aggregate(aggregate) = &node.kind {
        facts.push(aggregate.mode(node).describe().to_string());
    }
    if let Kind::Join(join) = &node.kind
        && join.time.is_some()
    {
        facts.push("rows leave as watermarks pass".to_string());
    }
    let watermarked: Vec<&str> = node
        .watermarked_columns()
        .iter()
        .filter_map(|&c| node.schema.fields().get(c))
        .map(|f| f.name().as_str())
        .collect();
    if !watermarked.is_empty() {
        facts.push(format!("watermark on {}", watermarked.join(", ")));
    }
    if node.partitioned(workers) {
        facts.push(format!("exchange by key, {workers} workers"));
    }
    let facts = if facts.is_empty() { String::new() } else { format!(" [{}]", facts.join("; ")) };
    lines.push(format!("{}{}{facts}: {}", "  ".repeat(depth), node.kind.name(), node.detail));
    if repeat {
        return;
    }
    for input in &node.inputs {
        render_into(input, depth + 1, workers, lines, shared);
    }
}
