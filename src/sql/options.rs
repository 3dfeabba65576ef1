//! `WITH (key = value, …)` options of CREATE TABLE / SOURCE / MATERIALIZED
//! VIEW: Freshet's own (watermarks, EMIT ON WINDOW CLOSE, connectors; see
//! `syntax` for the clauses that become them), read into plain strings.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{CreateTableOptions, Expr, SqlOption, Value, ValueWithSpan};

use super::syntax;
use crate::error::{Result, SqlError, sqlstate};

/// Options by (lower-case) name, values as text.
#[derive(Debug, Default, Clone)]
pub struct Options {
    values: BTreeMap<String, String>,
}

impl Options {
    /// Reads `WITH (…)` options, leaving `options` empty (DataFusion plans
    /// the statement without them).
    pub fn take(options: &mut CreateTableOptions) -> Result<Self> {
        let list = match std::mem::take(options) {
            CreateTableOptions::None => return Ok(Self::default()),
            CreateTableOptions::With(list) => list,
            other => {
                *options = other;
                return Err(SqlError::not_supported(format!("table options {options}")));
            }
        };
        let mut values = BTreeMap::new();
        for option in list {
            let SqlOption::KeyValue { key, value } = option else {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    format!("option {option} needs the form key = value"),
                ));
            };
            let name = key.value.to_ascii_lowercase();
            let text = match &value {
                Expr::Value(ValueWithSpan { value, .. }) => match value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                    Value::Number(n, _) => n.clone(),
                    Value::Boolean(b) => b.to_string(),
                    other => other.to_string(),
                },
                Expr::Identifier(ident) => ident.value.clone(),
                other => other.to_string(),
            };
            if values.insert(name.clone(), text).is_some() {
                return Err(SqlError::new(sqlstate::SYNTAX_ERROR, format!("option \"{name}\" given more than once")));
            }
        }
        Ok(Self { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Removes and returns an option.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    /// The `WATERMARK FOR` clause: (column, expression).
    pub fn take_watermark(&mut self) -> Result<Option<(String, String)>> {
        match (self.remove(syntax::WATERMARK_COLUMN), self.remove(syntax::WATERMARK_EXPRESSION)) {
            (Some(column), Some(expression)) => Ok(Some((column, expression))),
            (None, None) => Ok(None),
            _ => Err(SqlError::new(
                sqlstate::SYNTAX_ERROR,
                "watermark_column and watermark_expression go together (WATERMARK FOR column AS expression)",
            )),
        }
    }

    /// Fails, naming them, if options are left that nothing understood.
    pub fn reject_unknown(&self, what: &str) -> Result<()> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => {
                Err(SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, format!("unrecognized {what} option \"{name}\"")))
            }
        }
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.values
    }
}
