//! [`ChangeBatch`]: an Arrow record batch plus a weight per row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::kernels::filter::filter;
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;

/// Rows with weights: +n means n copies inserted, -n means n copies deleted.
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    pub rows: RecordBatch,
    pub weights: Int64Array,
}

impl ChangeBatch {
    pub fn new(rows: RecordBatch, weights: Int64Array) -> Self {
        debug_assert_eq!(rows.num_rows(), weights.len());
        Self { rows, weights }
    }

    pub fn empty(schema: SchemaRef) -> Self {
        Self::new(RecordBatch::new_empty(schema), Int64Array::from(Vec::<i64>::new()))
    }

    /// Every row of `rows` with the same weight.
    pub fn uniform(rows: RecordBatch, weight: i64) -> Self {
        let weights = Int64Array::from(vec![weight; rows.num_rows()]);
        Self::new(rows, weights)
    }

    pub fn schema(&self) -> SchemaRef {
        self.rows.schema()
    }
    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.num_rows() == 0
    }

    /// Keeps the rows where `mask` is true (NULL counts as false).
    pub fn filter(&self, mask: &BooleanArray) -> Result<Self> {
        let mask = null_as_false(mask);
        let rows = filter_record_batch(&self.rows, &mask)?;
        Ok(Self::new(rows, as_weights(filter(&self.weights, &mask)?)?))
    }

    /// Replaces the rows by other columns of the same length (projection).
    pub fn with_columns(&self, schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<Self> {
        let options = RecordBatchOptions::new().with_row_count(Some(self.len()));
        let rows = RecordBatch::try_new_with_options(schema, columns, &options)?;
        Ok(Self::new(rows, self.weights.clone()))
    }

    pub fn take(&self, indices: &datafusion::arrow::array::UInt32Array) -> Result<Self> {
        let rows = take_record_batch(&self.rows, indices)?;
        Ok(Self::new(rows, as_weights(datafusion::arrow::compute::take(&self.weights, indices, None)?)?))
    }

    /// Concatenates change batches of one schema; the result takes `schema`'s
    /// field names (inputs of a UNION may name their columns differently).
    pub fn concat(schema: &SchemaRef, parts: &[ChangeBatch]) -> Result<Self> {
        let non_empty: Vec<&ChangeBatch> = parts.iter().filter(|p| !p.is_empty()).collect();
        match non_empty.as_slice() {
            [] => Ok(Self::empty(schema.clone())),
            [one] => Ok(Self::new(rebind(schema, &one.rows)?, one.weights.clone())),
            many => {
                let rebound: Vec<RecordBatch> = many.iter().map(|p| rebind(schema, &p.rows)).collect::<Result<_>>()?;
                let rows = concat_batches(schema, &rebound)?;
                let weights: Vec<i64> = many.iter().flat_map(|p| p.weights.values().iter().copied()).collect();
                Ok(Self::new(rows, Int64Array::from(weights)))
            }
        }
    }
}

/// Gives `batch` the schema `schema` (same types, possibly other names).
pub fn rebind(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    if Arc::ptr_eq(schema, &batch.schema()) || schema.as_ref() == batch.schema().as_ref() {
        return Ok(batch.clone());
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), batch.columns().to_vec(), &options)?)
}

/// The result of a kernel applied to weights, as weights again.
fn as_weights(array: ArrayRef) -> Result<Int64Array> {
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| crate::error::SqlError::internal("weights kernel returned a non-Int64 array"))
}

/// A filter mask with NULL read as false (SQL WHERE semantics).
/// `schema` with every field nullable (rows that carry only some columns:
/// a delete by key, the rows an upsert replaces).
pub fn all_nullable(schema: &datafusion::arrow::datatypes::Schema) -> SchemaRef {
    std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ))
}

pub fn null_as_false(mask: &BooleanArray) -> BooleanArray {
    if mask.null_count() > 0 { datafusion::arrow::compute::prep_null_mask_filter(mask) } else { mask.clone() }
}
