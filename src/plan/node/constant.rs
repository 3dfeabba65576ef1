//! Rows known when the view is created: VALUES, or a query with no FROM
//! ([`crate::stream::ops::constant::Constant`]), given once, in the first
//! epoch.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan, Values};

use super::{Kind, Node};
use crate::error::{Result, SqlError};
use crate::plan::lowering::Lowering;
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::ops::constant::Constant;

#[derive(Clone)]
pub struct ConstantNode {
    pub rows: RecordBatch,
}

fn node(plan: &LogicalPlan, rows: RecordBatch) -> Node {
    let schema = rows.schema();
    Node {
        kind: Kind::Constant(ConstantNode { rows }),
        inputs: Vec::new(),
        watermarked: vec![false; schema.fields().len()],
        schema,
        detail: plan.display().to_string(),
    }
}

/// No rows, or one row of no columns (`SELECT 1` before its projection).
pub(in crate::plan) fn lower_empty(plan: &LogicalPlan, empty: &EmptyRelation) -> Result<Node> {
    let schema = stream_schema(&empty.schema);
    let rows = if empty.produce_one_row { 1 } else { 0 };
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(node(plan, RecordBatch::try_new_with_options(schema, vec![], &options)?))
}

/// A VALUES list, its cells evaluated now.
pub(in crate::plan) fn lower_values(lowering: &mut Lowering, plan: &LogicalPlan, values: &Values) -> Result<Node> {
    let schema = stream_schema(&values.schema);
    let empty = DFSchema::empty();
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (c, field) in schema.fields().iter().enumerate() {
        let mut parts = Vec::with_capacity(values.values.len());
        for row in &values.values {
            let cell = row.get(c).ok_or_else(|| SqlError::internal("a VALUES row narrower than its schema"))?;
            let array = lowering.expr(cell, &empty)?.evaluate(&one_row)?.into_array(1)?;
            parts.push(datafusion::arrow::compute::cast(&array, field.data_type())?);
        }
        let refs: Vec<&dyn datafusion::arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
        columns.push(datafusion::arrow::compute::concat(&refs)?);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(values.values.len()));
    Ok(node(plan, RecordBatch::try_new_with_options(schema, columns, &options)?))
}

impl ConstantNode {
    pub fn build(&self) -> Box<dyn Operator> {
        Box::new(Constant::new(self.rows.clone()))
    }
}
