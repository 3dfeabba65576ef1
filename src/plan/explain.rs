//! EXPLAIN CREATE MATERIALIZED VIEW: the dataflow a view would run, as
//! lowering builds it. Lowering records one line per plan node it turns
//! into operators (pre-order, so a node precedes its inputs), with the
//! stateful operators it allocated (their numbers are the state key
//! prefixes) and whether their input is partitioned by key over the
//! workers; nothing is created.

use datafusion::logical_expr::LogicalPlan;

/// One node of the lowered plan.
struct Line {
    depth: usize,
    label: &'static str,
    detail: String,
    state: Vec<u16>,
    partitioned: bool,
}

/// What lowering records while explaining.
#[derive(Default)]
pub struct Trace {
    lines: Vec<Line>,
    /// Line of each node being lowered, innermost last.
    open: Vec<usize>,
}

impl Trace {
    /// A node starts being lowered.
    pub fn enter(&mut self, plan: &LogicalPlan) {
        let (label, detail) = describe(plan);
        self.lines.push(Line { depth: self.open.len(), label, detail, state: Vec::new(), partitioned: false });
        self.open.push(self.lines.len() - 1);
    }

    pub fn exit(&mut self) {
        self.open.pop();
    }

    /// The node being lowered got a stateful operator numbered `number`.
    pub fn stateful(&mut self, number: u16) {
        if let Some(line) = self.open.last().and_then(|&line| self.lines.get_mut(line)) {
            line.state.push(number);
        }
    }

    /// The node's operator runs once per worker, its input exchanged by key.
    pub fn partitioned(&mut self) {
        if let Some(line) = self.open.last().and_then(|&line| self.lines.get_mut(line)) {
            line.partitioned = true;
        }
    }

    pub fn render(&self, workers: usize) -> Vec<String> {
        self.lines
            .iter()
            .map(|line| {
                let mut facts = Vec::new();
                if !line.state.is_empty() {
                    let numbers: Vec<String> = line.state.iter().map(|n| format!("#{n}")).collect();
                    facts.push(format!("state {}", numbers.join(", ")));
                }
                if line.partitioned {
                    facts.push(format!("exchange by key, {workers} workers"));
                }
                let label = match (line.label, line.state.is_empty()) {
                    ("Scan", false) => "SourceScan",
                    ("Filter", false) => "TemporalFilter",
                    (label, _) => label,
                };
                let facts = if facts.is_empty() { String::new() } else { format!(" [{}]", facts.join("; ")) };
                format!("{}{label}{facts}: {}", "  ".repeat(line.depth), line.detail)
            })
            .collect()
    }
}

/// The stream operator a plan node becomes, and DataFusion's one-line
/// description of the node (keys, expressions).
fn describe(plan: &LogicalPlan) -> (&'static str, String) {
    let label = match plan {
        LogicalPlan::Projection(_) => "Project",
        LogicalPlan::Filter(_) => "Filter",
        LogicalPlan::TableScan(_) => "Scan",
        LogicalPlan::SubqueryAlias(_) => "Alias",
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => "Aggregate",
        LogicalPlan::Join(_) => "Join",
        LogicalPlan::Union(_) => "Union",
        LogicalPlan::Sort(sort) if sort.fetch.is_some() => "TopN",
        LogicalPlan::Sort(_) => "Unordered",
        LogicalPlan::Limit(_) => "TopN",
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => "Constant",
        LogicalPlan::Window(_) => "Window",
        _ => "Node",
    };
    (label, plan.display().to_string())
}
