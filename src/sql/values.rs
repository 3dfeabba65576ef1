//! A fast path for `INSERT … VALUES` of plain literals.
//!
//! Planning a VALUES list through DataFusion costs tens of microseconds per
//! row (type coercion and simplification of every expression), which bounds
//! bulk INSERT throughput. Rows that are only numbers, strings, booleans and
//! NULLs are instead turned into one string column per table column and cast
//! to the column types with Arrow's kernels, as COPY does. Anything else
//! (expressions, parameters, columns left to their DEFAULT, other types)
//! takes the general path.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{Expr, Insert, SetExpr, TableObject, UnaryOperator, Value};

use super::Engine;
use crate::catalog::{Relation, RelationKind};
use crate::error::{Result, SqlError, sqlstate};

/// The rows of `insert` as a batch for its table, if they are plain literals.
pub fn literal_rows(engine: &Engine, insert: &Insert) -> Result<Option<(Arc<Relation>, RecordBatch)>> {
    let TableObject::TableName(name) = &insert.table else {
        return Ok(None);
    };
    let Some(relation) = engine.catalog.by_name(&super::ddl::object_name(engine, name)) else {
        return Ok(None);
    };
    if relation.kind != RelationKind::Table {
        return Ok(None);
    }
    let Some(query) = &insert.source else {
        return Ok(None);
    };
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Ok(None);
    }
    let SetExpr::Values(values) = query.body.as_ref() else {
        return Ok(None);
    };
    let schema = &relation.schema;
    let columns: Vec<usize> = if insert.columns.is_empty() {
        (0..schema.fields().len()).collect()
    } else {
        let mut indices = Vec::with_capacity(insert.columns.len());
        for column in &insert.columns {
            let Some(ident) = column.0.last().and_then(|p| p.as_ident()) else {
                return Ok(None);
            };
            let name = if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() };
            let Ok(index) = schema.index_of(&name) else {
                return Ok(None);
            };
            indices.push(index);
        }
        indices
    };
    let defaulted = (0..schema.fields().len()).filter(|i| !columns.contains(i));
    if defaulted.clone().any(|i| relation.column_defaults.contains_key(schema.field(i).name())) {
        return Ok(None);
    }
    if columns.iter().any(|&i| !castable_from_text(schema.field(i).data_type())) {
        return Ok(None);
    }
    let rows = values.rows.len();
    let mut texts: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows); columns.len()];
    for row in &values.rows {
        if row.content.len() != columns.len() {
            return Ok(None);
        }
        for (texts, expr) in texts.iter_mut().zip(&row.content) {
            let Some(text) = literal_text(expr) else {
                return Ok(None);
            };
            texts.push(text);
        }
    }
    let mut arrays: Vec<ArrayRef> = schema.fields().iter().map(|f| new_null_array(f.data_type(), rows)).collect();
    let options = CastOptions { safe: false, ..Default::default() };
    for (texts, column) in texts.iter().zip(&columns) {
        let strings = StringArray::from_iter(texts.iter().map(|t| t.as_deref()));
        let target = schema.field(*column);
        let Some(slot) = arrays.get_mut(*column) else { return Ok(None) };
        *slot = cast_with_options(&strings, target.data_type(), &options).map_err(|error| {
            // A number too large for its column is out of range, not malformed.
            let too_big = target.data_type().is_integer()
                && texts.iter().flatten().any(|t| {
                    t.parse::<f64>().is_ok()
                        && cast_with_options(&StringArray::from(vec![t.as_str()]), target.data_type(), &options)
                            .is_err()
                });
            if too_big {
                SqlError::new(
                    sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    format!("value out of range for column \"{}\" ({})", target.name(), target.data_type()),
                )
            } else {
                SqlError::from(error)
            }
        })?;
    }
    // Nullable here; the insert's checks report a NULL in a NOT NULL column.
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    Ok(Some((relation, batch)))
}

fn castable_from_text(ty: &DataType) -> bool {
    ty.is_integer()
        || ty.is_floating()
        || matches!(
            ty,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Boolean | DataType::Decimal128(_, _) | DataType::Date32
        )
}

/// The text of a literal (None inside means SQL NULL); `None` if `expr` is
/// not a plain literal.
fn literal_text(expr: &Expr) -> Option<Option<String>> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(Some(n.to_string())),
            Value::SingleQuotedString(s) => Some(Some(s.clone())),
            Value::Boolean(b) => Some(Some(b.to_string())),
            Value::Null => Some(None),
            _ => None,
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Some(Some(format!("-{n}"))),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}
