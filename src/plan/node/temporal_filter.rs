//! A WHERE comparison of a row's value with `now()` plus or minus a constant
//! ([`crate::stream::ops::temporal_filter::TemporalFilter`]): rows enter and
//! leave the view as the epochs' time passes (see `plan/temporal.rs`).

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::PhysicalExpr;

use super::BuildContext;
use super::{Kind, Node};
use crate::error::Result;
use crate::plan::lowering::Lowering;
use crate::plan::temporal;
use crate::stream::Operator;
use crate::stream::ops::temporal_filter::{Comparison, TemporalFilter, now_schema};

#[derive(Clone)]
pub struct TemporalFilterNode {
    /// The row's side of the comparison.
    pub value: Arc<dyn PhysicalExpr>,
    /// The time's side, over [`now_schema`].
    pub threshold: Arc<dyn PhysicalExpr>,
    pub comparison: Comparison,
    pub state: u16,
}

/// `input` filtered by one temporal conjunct over `schema` (the input's).
pub(super) fn lower(lowering: &mut Lowering, input: Node, conjunct: &Expr, schema: &DFSchema) -> Result<Node> {
    let timed = temporal::temporal_conjunct(conjunct)?;
    let value = lowering.expr(&timed.value, schema)?;
    let now = DFSchema::try_from(now_schema().as_ref().clone())?;
    let threshold = lowering.state.create_physical_expr(timed.threshold, &now)?;
    let state = lowering.state_number()?;
    lowering.clocked = true;
    lowering.needs_ticks = true;
    Ok(Node {
        kind: Kind::TemporalFilter(TemporalFilterNode { value, threshold, comparison: timed.comparison, state }),
        schema: input.schema.clone(),
        watermarked: input.watermarked.clone(),
        detail: format!("Filter: {conjunct}"),
        inputs: vec![input],
    })
}

impl TemporalFilterNode {
    pub fn build(&self, input: Box<dyn Operator>, cx: &BuildContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(TemporalFilter::new(
            input,
            self.value.clone(),
            self.threshold.clone(),
            self.comparison,
            &cx.prefix(self.state),
        )?))
    }
}
