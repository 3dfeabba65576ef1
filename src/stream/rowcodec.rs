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

    /// The memcomparable property the state store's keys rely on, for every
    /// column type a key can have: byte order of the encodings equals the
    /// order of the values (NULLs first ascending, last descending; floats
    /// in IEEE total order), and no encoding is a proper prefix of another.
    #[test]
    fn every_key_type_encodes_in_value_order() {
        use datafusion::arrow::array::*;
        use datafusion::arrow::compute::SortOptions;
        use datafusion::arrow::datatypes::{IntervalMonthDayNano, TimeUnit};
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let mut rng = StdRng::seed_from_u64(7);
        const N: usize = 300;
        let maybe = |rng: &mut StdRng| rng.random_ratio(1, 8);
        let strings = ["", "a", "ab", "a\u{0}", "a\u{0}b", "b", "\u{ff}", "é", "zz", "A"];
        let mut columns: Vec<ArrayRef> = Vec::new();
        columns
            .push(Arc::new((0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random::<bool>())).collect::<BooleanArray>()));
        columns.push(Arc::new((0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random::<i8>())).collect::<Int8Array>()));
        columns.push(Arc::new((0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random::<i16>())).collect::<Int16Array>()));
        columns.push(Arc::new((0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random::<i32>())).collect::<Int32Array>()));
        columns.push(Arc::new(
            (0..N)
                .map(|_| (!maybe(&mut rng)).then(|| rng.random::<i64>() >> rng.random_range(0..63)))
                .collect::<Int64Array>(),
        ));
        columns
            .push(Arc::new((0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random::<u32>())).collect::<UInt32Array>()));
        columns
            .push(Arc::new((0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random::<u64>())).collect::<UInt64Array>()));
        let specials = [0.0f64, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, f64::MIN_POSITIVE, -1e300, 1e-300];
        columns.push(Arc::new(
            (0..N)
                .map(|_| {
                    (!maybe(&mut rng)).then(|| {
                        if rng.random_ratio(1, 4) {
                            specials[rng.random_range(0..specials.len())]
                        } else {
                            rng.random::<f64>() * 2e6 - 1e6
                        }
                    })
                })
                .collect::<Float64Array>(),
        ));
        columns.push(Arc::new(
            (0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random::<f32>() - 0.5)).collect::<Float32Array>(),
        ));
        columns.push(Arc::new(
            (0..N)
                .map(|_| (!maybe(&mut rng)).then(|| rng.random_range(-10i128.pow(20)..10i128.pow(20))))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(38, 4)
                .unwrap(),
        ));
        columns.push(Arc::new(
            (0..N)
                .map(|_| {
                    (!maybe(&mut rng)).then(|| {
                        let mut s = String::new();
                        for _ in 0..rng.random_range(0..4) {
                            s.push_str(strings[rng.random_range(0..strings.len())]);
                        }
                        s
                    })
                })
                .collect::<StringArray>(),
        ));
        columns.push(Arc::new(
            (0..N)
                .map(|_| {
                    (!maybe(&mut rng)).then(|| {
                        (0..rng.random_range(0..40)).map(|_| rng.random_range(0..3u8) * 127).collect::<Vec<u8>>()
                    })
                })
                .collect::<BinaryArray>(),
        ));
        columns.push(Arc::new(
            (0..N).map(|_| (!maybe(&mut rng)).then(|| rng.random_range(-800_000..800_000))).collect::<Date32Array>(),
        ));
        columns.push(Arc::new(
            (0..N)
                .map(|_| (!maybe(&mut rng)).then(|| rng.random_range(-10i64.pow(17)..10i64.pow(17))))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("+00:00"),
        ));
        columns.push(Arc::new(
            (0..N)
                .map(|_| (!maybe(&mut rng)).then(|| rng.random_range(0..86_400_000_000i64)))
                .collect::<Time64MicrosecondArray>(),
        ));
        columns.push(Arc::new(
            (0..N)
                .map(|_| {
                    (!maybe(&mut rng)).then(|| {
                        IntervalMonthDayNano::new(
                            rng.random_range(-3..3),
                            rng.random_range(-3..3),
                            rng.random_range(-3..3),
                        )
                    })
                })
                .collect::<IntervalMonthDayNanoArray>(),
        ));
        let _ = TimeUnit::Microsecond;

        for column in &columns {
            for options in [
                SortOptions { descending: false, nulls_first: true },
                SortOptions { descending: true, nulls_first: false },
            ] {
                let field = Field::new("k", column.data_type().clone(), true);
                let codec = RowCodec::with_options(Arc::new(Schema::new(vec![field])), &[options]).unwrap();
                let rows = codec.encode(std::slice::from_ref(column)).unwrap();
                let compare = make_comparator(column.as_ref(), column.as_ref(), options).unwrap();
                for i in 0..N {
                    for j in 0..N {
                        let (a, b) = (rows.row(i).data(), rows.row(j).data());
                        assert_eq!(
                            a.cmp(b),
                            compare(i, j),
                            "{} {options:?}: rows {i} and {j} order differently as bytes",
                            column.data_type()
                        );
                        if a != b {
                            assert!(
                                !b.starts_with(a),
                                "{}: row {i} encodes to a prefix of row {j}",
                                column.data_type()
                            );
                        }
                    }
                }
                // And it decodes back to the same values.
                let decoded = codec.decode(rows.iter().map(|r| r.data())).unwrap();
                assert_eq!(decoded.column(0).as_ref(), column.as_ref(), "{} round trip", column.data_type());
            }
        }
    }
}
