//! PostgreSQL's text input for `bytea`: `'\x0102ff'` (hex format) and
//! `'a\\b\001'` (escape format).
//!
//! Arrow's cast from a string to binary copies the string's bytes, so
//! `'\x01'::bytea` would be the four bytes `\`, `x`, `0`, `1`. Every string
//! to binary conversion goes through [`text_to_bytea`] instead: casts in
//! planned SQL (literals, INSERT into a bytea column, view expressions) are
//! rewritten to the `pg_bytea_in` function, and the literal-VALUES and COPY
//! paths call it directly.

use std::sync::Arc;

use crate::error::{SqlError, sqlstate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Decodes one value in either of Postgres' bytea input formats.
pub fn parse_bytea(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    if let Some(hex) = text.strip_prefix("\\x").or_else(|| text.strip_prefix("\\X")) {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err("invalid hexadecimal data: odd number of digits".into());
        }
        for pair in digits.chunks_exact(2) {
            if let &[high, low] = pair {
                out.push(hex_value(high)? << 4 | hex_value(low)?);
            }
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&first, after)) = rest.split_first() {
        rest = match (first, after) {
            (b'\\', [b'\\', after @ ..]) => {
                out.push(b'\\');
                after
            }
            (b'\\', [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', after @ ..]) => {
                out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
                after
            }
            (b'\\', _) => return Err("invalid input syntax for type bytea".into()),
            (byte, after) => {
                out.push(byte);
                after
            }
        };
    }
    Ok(out)
}

fn hex_value(digit: u8) -> Result<u8, String> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(format!("invalid hexadecimal digit: \"{}\"", digit as char)),
    }
}

/// Converts a string array (any of Arrow's string types) to a binary array
/// of the `target` binary type.
pub fn text_to_bytea(strings: &dyn Array, target: &DataType) -> DfResult<ArrayRef> {
    let mut builder = BinaryBuilder::with_capacity(strings.len(), strings.len() * 8);
    let mut append =
        |value: Option<&str>| -> DfResult<()> {
            match value {
                Some(text) => builder.append_value(parse_bytea(text).map_err(|message| {
                    SqlError::new(sqlstate::INVALID_TEXT_REPRESENTATION, message).into_datafusion()
                })?),
                None => builder.append_null(),
            }
            Ok(())
        };
    match strings.data_type() {
        DataType::Utf8 => strings.as_string::<i32>().iter().try_for_each(&mut append)?,
        DataType::LargeUtf8 => strings.as_string::<i64>().iter().try_for_each(&mut append)?,
        DataType::Utf8View => strings.as_string_view().iter().try_for_each(&mut append)?,
        other => {
            return Err(DataFusionError::Internal(format!("bytea input from {other}")));
        }
    }
    let binary: ArrayRef = Arc::new(builder.finish());
    if target == &DataType::Binary { Ok(binary) } else { Ok(datafusion::arrow::compute::cast(&binary, target)?) }
}

fn is_string(ty: &DataType) -> bool {
    matches!(ty, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

pub fn is_binary(ty: &DataType) -> bool {
    matches!(ty, DataType::Binary | DataType::LargeBinary | DataType::BinaryView)
}

/// `pg_bytea_in(text) -> bytea`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ByteaInput {
    signature: Signature,
}

impl ByteaInput {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self { signature: Signature::string(1, Volatility::Immutable) }))
    }
}

impl ScalarUDFImpl for ByteaInput {
    fn name(&self) -> &str {
        "pg_bytea_in"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Binary)
    }
    /// Named like the cast it replaces (a cast takes its operand's name).
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args.first() {
            Some(arg) => Ok(arg.schema_name().to_string()),
            None => Ok(self.name().to_string()),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match args.args.first() {
            Some(ColumnarValue::Array(array)) => Ok(ColumnarValue::Array(text_to_bytea(array, &DataType::Binary)?)),
            Some(ColumnarValue::Scalar(scalar)) => {
                let array = text_to_bytea(&scalar.to_array()?, &DataType::Binary)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?))
            }
            None => Err(DataFusionError::Internal("pg_bytea_in takes one argument".into())),
        }
    }
}

/// Rewrites `CAST(<string> AS bytea)` into `pg_bytea_in(<string>)` before
/// DataFusion's analysis, wherever the cast appears.
#[derive(Debug)]
pub struct ByteaCastRewrite {
    udf: Arc<ScalarUDF>,
}

impl ByteaCastRewrite {
    pub fn new(udf: Arc<ScalarUDF>) -> Self {
        Self { udf }
    }
}

impl FunctionRewrite for ByteaCastRewrite {
    fn name(&self) -> &str {
        "bytea_cast_rewrite"
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema, _config: &ConfigOptions) -> DfResult<Transformed<Expr>> {
        let (inner, target) = match &expr {
            Expr::Cast(Cast { expr: inner, field }) | Expr::TryCast(TryCast { expr: inner, field }) => {
                (inner, field.data_type())
            }
            _ => return Ok(Transformed::no(expr)),
        };
        if !is_binary(target) || !inner.get_type(schema).is_ok_and(|ty| is_string(&ty)) {
            return Ok(Transformed::no(expr));
        }
        let call = Expr::ScalarFunction(ScalarFunction::new_udf(self.udf.clone(), vec![inner.as_ref().clone()]));
        let rewritten = if target == &DataType::Binary { call } else { call.cast_to(target, schema)? };
        Ok(Transformed::yes(rewritten))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytea;

    #[test]
    fn postgres_bytea_input_formats() {
        assert_eq!(parse_bytea("\\x0102ff"), Ok(vec![1, 2, 255]));
        assert_eq!(parse_bytea("\\xDE AD"), Ok(vec![0xde, 0xad]));
        assert_eq!(parse_bytea("ab\\\\c\\001"), Ok(vec![b'a', b'b', b'\\', b'c', 1]));
        assert_eq!(parse_bytea(""), Ok(vec![]));
        assert!(parse_bytea("\\x0").is_err());
        assert!(parse_bytea("\\xzz").is_err());
        assert!(parse_bytea("a\\b").is_err());
    }
}
