//! Rows as bytes: Arrow's row format turns a set of columns into one
//! comparable byte string per row. Stateful operators use these bytes as hash
//! keys and to store rows; they decode back into columns in one vectorized call.
//!
//! The row format orders like the columns do (it is memcomparable), so keys in
//! the state store scan in SQL order. It is not stable across Arrow versions:
//! the durable encoding is the durability issue's to pin down.

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::arrow::compute::SortOptions;

use crate::error::Result;

pub struct RowCodec {
    converter: RowConverter,
    schema: SchemaRef,
}

impl RowCodec {
    /// A codec for all columns of `schema`, ascending, NULLs last.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(Self { converter: RowConverter::new(fields)?, schema })
    }

    /// A codec with explicit sort options per column (for ORDER BY keys).
    pub fn with_options(schema: SchemaRef, options: &[SortOptions]) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .zip(options)
            .map(|(f, o)| SortField::new_with_options(f.data_type().clone(), *o))
            .collect();
        Ok(Self { converter: RowConverter::new(fields)?, schema })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }

    /// Decodes row bytes (as produced by [`RowCodec::encode`]) into a batch.
    pub fn decode<'a>(&self, rows: impl IntoIterator<Item = &'a [u8]>) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        let rows: Vec<_> = rows.into_iter().map(|bytes| parser.parse(bytes)).collect();
        let count = rows.len();
        let columns = self.converter.convert_rows(rows)?;
        let options = RecordBatchOptions::new().with_row_count(Some(count));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}
