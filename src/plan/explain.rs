//! EXPLAIN CREATE MATERIALIZED VIEW: the stream plan, one line per node,
//! each above its inputs and indented below the node it feeds, with the
//! state it keeps (the numbers are its state key prefixes within the view)
//! the columns that carry a watermark, how an aggregate keeps its groups,
//! and whether it runs once per worker behind an exchange.

use super::node::{Kind, Node};

/// The lines describing `root` on a view with `workers` workers.
pub fn render(root: &Node, workers: usize) -> Vec<String> {
    let mut lines = Vec::new();
    render_into(root, 0, workers, &mut lines);
    lines
}

fn render_into(node: &Node, depth: usize, workers: usize, lines: &mut Vec<String>) {
    let mut facts = Vec::new();
    if let Some(number) = node.kind.state() {
        facts.push(format!("state #{number}"));
    }
    if let Kind::Aggregate(aggregate) = &node.kind {
        facts.push(aggregate.mode(node).describe().to_string());
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
    for input in &node.inputs {
        render_into(input, depth + 1, workers, lines);
    }
}
