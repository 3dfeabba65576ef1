//! The hottest aggregate calls computed inline, without DataFusion's boxed
//! accumulators: `count`, and `sum`, `min` and `max` of BIGINT, when the
//! input only inserts (an aggregate's accumulating mode).
//!
//! A group of a streaming aggregate sees a few rows per epoch, so a boxed
//! accumulator costs more in its calls than in its arithmetic: the group's
//! rows gathered with `take` into new arrays, a dynamic `update_batch`, a
//! `ScalarValue` built to compare. A [`Native`] accumulator is a plain
//! value in the group, updated row by row straight from the epoch's
//! argument column.
//!
//! Its results, NULL handling and stored state are exactly those of the
//! DataFusion accumulator it stands for (count: `Int64` state, NULLs not
//! counted, logical NULLs included; sum: wrapping `Int64`, NULL until a
//! non-NULL value; min/max: the value, NULL until one), so a group stored
//! by one decodes into the other and the batch oracle agrees with both.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::{Result, SqlError};

/// Which inline accumulator a call gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeKind {
    /// `count(x)` (and `count(*)`, which is `count(1)`).
    Count,
    /// `sum(x)`, `min(x)`, `max(x)` of a BIGINT `x`.
    Sum,
    Min,
    Max,
}

impl NativeKind {
    /// The inline accumulator for `function` over arguments of
    /// `argument_types`, if it has one (not DISTINCT, no ORDER BY, one
    /// argument; BIGINT for sum, min and max).
    pub fn of(function: &AggregateFunctionExpr, argument_types: &[DataType]) -> Option<Self> {
        if function.is_distinct() || !function.order_bys().is_empty() {
            return None;
        }
        let [argument] = argument_types else { return None };
        let name = function.fun().name().to_ascii_lowercase();
        let result = function.field().data_type().clone();
        let int64 = *argument == DataType::Int64 && result == DataType::Int64;
        match name.as_str() {
            "count" if result == DataType::Int64 => Some(NativeKind::Count),
            "sum" if int64 => Some(NativeKind::Sum),
            "min" if int64 => Some(NativeKind::Min),
            "max" if int64 => Some(NativeKind::Max),
            _ => None,
        }
    }

    /// A group's accumulator before any row.
    pub fn fresh(self) -> Native {
        match self {
            NativeKind::Count => Native::Count(0),
            NativeKind::Sum => Native::Sum(None),
            NativeKind::Min => Native::Min(None),
            NativeKind::Max => Native::Max(None),
        }
    }

    /// A group's accumulator from its stored state (the single state
    /// column `state`, at `row`), as DataFusion's accumulator writes it.
    pub fn from_state(self, state: &ArrayRef, row: usize) -> Result<Native> {
        let values = state
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| SqlError::internal(format!("stored {self:?} state is {}", state.data_type())))?;
        let value = (row < values.len() && values.is_valid(row)).then(|| values.value(row));
        Ok(match self {
            NativeKind::Count => Native::Count(value.unwrap_or(0)),
            NativeKind::Sum => Native::Sum(value),
            NativeKind::Min => Native::Min(value),
            NativeKind::Max => Native::Max(value),
        })
    }
}

/// One epoch's argument column of a call, read once per batch.
pub enum NativeInput<'a> {
    /// What `count` needs: which rows are NULL (logically).
    Nulls(Option<NullBuffer>),
    /// The BIGINT values of sum, min and max.
    Int64(&'a Int64Array),
}

impl<'a> NativeInput<'a> {
    pub fn new(kind: NativeKind, argument: &'a ArrayRef) -> Result<Self> {
        Ok(match kind {
            NativeKind::Count => NativeInput::Nulls(argument.logical_nulls()),
            NativeKind::Sum | NativeKind::Min | NativeKind::Max => NativeInput::Int64(
                argument
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| SqlError::internal(format!("{kind:?} argument is {}", argument.data_type())))?,
            ),
        })
    }
}

/// A group's inline accumulator.
#[derive(Clone, Debug, PartialEq)]
pub enum Native {
    Count(i64),
    Sum(Option<i64>),
    Min(Option<i64>),
    Max(Option<i64>),
}

impl Native {
    pub fn kind(&self) -> NativeKind {
        match self {
            Native::Count(_) => NativeKind::Count,
            Native::Sum(_) => NativeKind::Sum,
            Native::Min(_) => NativeKind::Min,
            Native::Max(_) => NativeKind::Max,
        }
    }

    /// Adds row `row` of the epoch's argument.
    #[inline]
    pub fn update(&mut self, input: &NativeInput, row: usize) {
        match (self, input) {
            (Native::Count(n), NativeInput::Nulls(nulls)) if nulls.as_ref().is_none_or(|nulls| nulls.is_valid(row)) => {
                *n += 1;
            }
            (Native::Sum(sum), NativeInput::Int64(values)) if values.is_valid(row) => {
                let v = values.value(row);
                *sum = Some(sum.map_or(v, |s| s.wrapping_add(v)));
            }
            (Native::Min(min), NativeInput::Int64(values)) if values.is_valid(row) => {
                let v = values.value(row);
                *min = Some(min.map_or(v, |m| m.min(v)));
            }
            (Native::Max(max), NativeInput::Int64(values)) if values.is_valid(row) => {
                let v = values.value(row);
                *max = Some(max.map_or(v, |m| m.max(v)));
            }
            _ => {}
        }
    }

    /// The aggregate's value.
    pub fn evaluate(&self) -> ScalarValue {
        match *self {
            Native::Count(n) => ScalarValue::Int64(Some(n)),
            Native::Sum(v) | Native::Min(v) | Native::Max(v) => ScalarValue::Int64(v),
        }
    }

    /// The state DataFusion's accumulator would store: one value, the same
    /// as the result.
    pub fn state(&self) -> Vec<ScalarValue> {
        vec![self.evaluate()]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{NullArray, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;

    use super::*;

    fn call(name: &str, data_type: DataType) -> (Arc<AggregateFunctionExpr>, Arc<Schema>) {
        use datafusion::functions_aggregate::{count::count_udaf, min_max, sum::sum_udaf};
        let schema = Arc::new(Schema::new(vec![Field::new("x", data_type, true)]));
        let udaf = match name {
            "count" => count_udaf(),
            "sum" => sum_udaf(),
            "min" => min_max::min_udaf(),
            _ => min_max::max_udaf(),
        };
        let function = AggregateExprBuilder::new(udaf, vec![col("x", &schema).unwrap()])
            .schema(schema.clone())
            .alias(name)
            .build()
            .unwrap();
        (Arc::new(function), schema)
    }

    /// Each inline accumulator against DataFusion's over the same rows, fed
    /// in the same epochs: equal values, equal states, and a state stored
    /// by one read back by the other.
    #[test]
    fn inline_accumulators_agree_with_datafusion() {
        let epochs: Vec<Vec<Option<i64>>> = vec![
            vec![],
            vec![None, None],
            vec![Some(5), None, Some(-3)],
            vec![Some(i64::MAX), Some(2)],
            vec![Some(i64::MIN)],
        ];
        for name in ["count", "sum", "min", "max"] {
            let (function, schema) = call(name, DataType::Int64);
            let kind = NativeKind::of(&function, &[DataType::Int64]).expect("has an inline accumulator");
            let mut native = kind.fresh();
            let mut theirs = function.create_accumulator().unwrap();
            assert_eq!(native.evaluate(), theirs.evaluate().unwrap(), "{name} before any row");
            for values in &epochs {
                let argument: ArrayRef = Arc::new(Int64Array::from(values.clone()));
                let batch = RecordBatch::try_new(schema.clone(), vec![argument.clone()]).unwrap();
                let input = NativeInput::new(kind, batch.column(0)).unwrap();
                for row in 0..values.len() {
                    native.update(&input, row);
                }
                theirs.update_batch(&[argument]).unwrap();
                assert_eq!(native.evaluate(), theirs.evaluate().unwrap(), "{name} after {values:?}");
                let state = theirs.state().unwrap();
                assert_eq!(native.state(), state, "{name} state");
                let stored = ScalarValue::iter_to_array(state).unwrap();
                assert_eq!(kind.from_state(&stored, 0).unwrap(), native, "{name} decoded from DataFusion's state");
            }
        }
    }

    #[test]
    fn count_skips_logical_nulls_and_other_calls_have_no_inline_form() {
        let (function, _) = call("count", DataType::Null);
        let kind = NativeKind::of(&function, &[DataType::Null]).expect("count of anything");
        let nulls: ArrayRef = Arc::new(NullArray::new(3));
        let input = NativeInput::new(kind, &nulls).unwrap();
        let mut native = kind.fresh();
        (0..3).for_each(|row| native.update(&input, row));
        assert_eq!(native, Native::Count(0), "count(NULL) counts nothing");

        for name in ["sum", "min", "max"] {
            let (function, _) = call(name, DataType::Float64);
            assert_eq!(NativeKind::of(&function, &[DataType::Float64]), None, "{name} of double");
        }
    }
}
