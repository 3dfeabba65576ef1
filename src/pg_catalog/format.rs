//! Postgres's `format(formatstr, args…)`: `%s` (the value as text, NULL as
//! empty), `%I` (quoted as an identifier when it must be), `%L` (quoted as
//! a literal, NULL as `NULL`) and `%%`. Metabase builds `schema.table`
//! names with it. Positional (`%1$s`) and width flags are refused.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Format {
    signature: Signature,
}

impl Format {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Format { signature: Signature::variadic_any(Volatility::Immutable) })
    }
}

/// An identifier as `quote_ident` prints it.
fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_string() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

/// A string literal, quotes doubled; an `E'…'` literal with backslashes
/// doubled when it has any (as `quote_literal` prints it).
pub(super) fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') { format!("E'{}'", quoted.replace('\\', "\\\\")) } else { format!("'{quoted}'") }
}

/// One row: the format string and the arguments' text (None for NULL).
fn format_row(template: &str, args: &[Option<&str>]) -> DfResult<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut next = 0;
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec =
            chars.next().ok_or_else(|| DataFusionError::Execution("unterminated format() type specifier".into()))?;
        if spec == '%' {
            out.push('%');
            continue;
        }
        let arg = args.get(next).ok_or_else(|| DataFusionError::Execution("too few arguments for format()".into()))?;
        next += 1;
        match (spec, arg) {
            ('s', Some(text)) => out.push_str(text),
            ('s', None) => {}
            ('I', Some(text)) => out.push_str(&quote_ident(text)),
            ('I', None) => {
                return Err(DataFusionError::Execution("null values cannot be formatted as an SQL identifier".into()));
            }
            ('L', Some(text)) => out.push_str(&quote_literal(text)),
            ('L', None) => out.push_str("NULL"),
            (other, _) => {
                return Err(DataFusionError::Execution(format!("unrecognized format() type specifier \"{other}\"")));
            }
        }
    }
    Ok(out)
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some((template, rest)) = arrays.split_first() else {
            return Err(DataFusionError::Plan("format() needs a format string".into()));
        };
        let text = |array: &ArrayRef| -> DfResult<StringArray> {
            let cast = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
            Ok(cast
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::from(vec![None::<&str>; array.len()])))
        };
        let template = text(template)?;
        let rest = rest.iter().map(text).collect::<DfResult<Vec<_>>>()?;
        let rows = if scalar { 1 } else { args.number_rows };
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        for row in 0..rows {
            if template.is_null(row) {
                out.append_null();
                continue;
            }
            let values: Vec<Option<&str>> = rest.iter().map(|a| a.is_valid(row).then(|| a.value(row))).collect();
            out.append_value(format_row(template.value(row), &values)?);
        }
        let array: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&array, 0)?))
        } else {
            Ok(ColumnarValue::Array(array))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format_row;

    #[test]
    fn formats_as_postgres_does() {
        assert_eq!(format_row("%I.%I", &[Some("public"), Some("Orders")]).ok().as_deref(), Some("public.\"Orders\""));
        assert_eq!(format_row("%s|%L|%L|%%", &[None, Some("it's"), None]).ok().as_deref(), Some("|'it''s'|NULL|%"));
        assert!(format_row("%s %s", &[Some("one")]).is_err());
        assert!(format_row("%x", &[Some("one")]).is_err());
    }
}
