//! Rows as bytes: Arrow's row format turns a set of columns into one
//! comparable byte string per row. Stateful operators use these bytes as hash
//! keys and to store rows; they decode back into columns in one vectorized call.
//!
//! The row format orders like the columns do (it is memcomparable), so keys in
//! the state store scan in SQL order. It is not stable across Arrow versions:
//! the durable encoding is the durability issue's to pin down.

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};

use crate::error::Result;

pub struct RowCodec {
    converter: RowConverter,
    schema: SchemaRef,
}

impl RowCodec {
    /// A codec for all columns of `schema`, ascending, NULLs first.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::RowCodec;

    /// Storage prefix scans rely on this: the encoding of a row's leading
    /// columns is a byte prefix of the whole row's encoding, and byte order
    /// is value order (NULLs first).
    #[test]
    fn leading_columns_encode_to_a_prefix_and_order_is_preserved() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]));
        let full = RowCodec::new(schema.clone()).unwrap();
        let lead = RowCodec::new(Arc::new(schema.project(&[0]).unwrap())).unwrap();
        let strings: ArrayRef =
            Arc::new(StringArray::from(vec![Some("a"), Some("ab"), Some(""), None, Some("a\u{0}b")]));
        let numbers: ArrayRef = Arc::new(Int64Array::from(vec![Some(-5), Some(7), None, Some(0), Some(i64::MAX)]));
        let rows = full.encode(&[strings.clone(), numbers]).unwrap();
        let prefixes = lead.encode(&[strings]).unwrap();
        for i in 0..5 {
            assert!(rows.row(i).data().starts_with(prefixes.row(i).data()), "row {i}");
        }
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by(|&a, &b| rows.row(a).data().cmp(rows.row(b).data()));
        // NULL < "" < "a" < "a\0b" < "ab"
        assert_eq!(order, vec![3, 2, 0, 4, 1]);
    }
}
