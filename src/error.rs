//! Errors that reach a client: every error carries a Postgres SQLSTATE so that
//! drivers and tools can react to it the way they would with Postgres.
//!
//! DataFusion errors are classified here too (by variant and, where DataFusion
//! offers nothing better, by message), so the front end never has to guess.

use std::fmt;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// SQLSTATE codes used by Freshet (names as in the Postgres manual, appendix A).
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_SCHEMA: &str = "3F000";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const UNABLE_TO_CONNECT: &str = "08001";
    pub const DUPLICATE_OBJECT: &str = "42P07";
    pub const DUPLICATE_SCHEMA: &str = "42P06";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const WRONG_OBJECT_TYPE: &str = "42809";
    pub const INVALID_TABLE_DEFINITION: &str = "42P16";
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const CARDINALITY_VIOLATION: &str = "21000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const OBJECT_IN_USE: &str = "55006";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const IO_ERROR: &str = "58030";
    pub const DISK_FULL: &str = "53100";
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
    pub const INVALID_SAVEPOINT_SPECIFICATION: &str = "3B001";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
    pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
    /// "stack depth limit exceeded": a statement nested too deep to plan.
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    pub const QUERY_CANCELED: &str = "57014";
    pub const OUT_OF_MEMORY: &str = "53200";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
}

/// An error with the SQLSTATE a Postgres client expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(sqlstate::FEATURE_NOT_SUPPORTED, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(sqlstate::INTERNAL_ERROR, message)
    }
    pub fn undefined_table(name: impl fmt::Display) -> Self {
        Self::new(sqlstate::UNDEFINED_TABLE, format!("relation \"{name}\" does not exist"))
    }
    pub fn duplicate_object(name: impl fmt::Display) -> Self {
        Self::new(sqlstate::DUPLICATE_OBJECT, format!("relation \"{name}\" already exists"))
    }

    /// Wraps this error so it can travel through DataFusion's execution and be
    /// recovered (with its SQLSTATE) by [`SqlError::from_datafusion`].
    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }

    /// Classifies a DataFusion error into a SQLSTATE.
    pub fn from_datafusion(error: &DataFusionError) -> SqlError {
        match error {
            DataFusionError::External(inner) => {
                if let Some(sql) = inner.downcast_ref::<SqlError>() {
                    return sql.clone();
                }
                if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                    return Self::from_datafusion(df);
                }
                Self::internal(inner.to_string())
            }
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => Self::from_datafusion(inner),
            DataFusionError::Shared(inner) => Self::from_datafusion(inner),
            DataFusionError::Collection(errors) => {
                errors.first().map(Self::from_datafusion).unwrap_or_else(|| Self::internal("unknown error"))
            }
            DataFusionError::SQL(e, _) => Self::from_parser(e),
            DataFusionError::ResourcesExhausted(m) => Self::new(
                sqlstate::OUT_OF_MEMORY,
                format!("out of memory: the query needs more than its memory limit ({})", clean_message(m)),
            ),
            DataFusionError::ArrowError(e, _) => Self::from_arrow(e),
            DataFusionError::NotImplemented(m) => Self::not_supported(clean_message(m)),
            DataFusionError::SchemaError(e, _) => {
                let message = clean_message(&e.to_string());
                let code = if message.contains("No field named") || message.contains("not found") {
                    sqlstate::UNDEFINED_COLUMN
                } else if message.contains("ambiguous") {
                    "42702"
                } else {
                    sqlstate::INVALID_TABLE_DEFINITION
                };
                Self::new(code, message)
            }
            DataFusionError::Plan(m) => Self::from_message(m, sqlstate::DATATYPE_MISMATCH),
            DataFusionError::Execution(m) => Self::from_message(m, sqlstate::INTERNAL_ERROR),
            other => Self::from_message(&other.to_string(), sqlstate::INTERNAL_ERROR),
        }
    }

    /// A parser error: a syntax error, or nesting past the parser's
    /// recursion limit (54001, as PostgreSQL's "stack depth limit exceeded").
    pub fn from_parser(error: &datafusion::sql::sqlparser::parser::ParserError) -> SqlError {
        use datafusion::sql::sqlparser::parser::ParserError;
        match error {
            ParserError::RecursionLimitExceeded => Self::new(
                sqlstate::STATEMENT_TOO_COMPLEX,
                "stack depth limit exceeded: the statement nests parentheses or subqueries too deep",
            ),
            other => Self::new(sqlstate::SYNTAX_ERROR, clean_message(&other.to_string())),
        }
    }

    fn from_arrow(error: &ArrowError) -> SqlError {
        match error {
            ArrowError::DivideByZero => Self::new(sqlstate::DIVISION_BY_ZERO, "division by zero"),
            // A number that does not fit its target type, vs. text that is no number.
            ArrowError::CastError(m) if m.starts_with("Can't cast value") => {
                Self::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, m.clone())
            }
            ArrowError::CastError(m) | ArrowError::ParseError(m) => {
                Self::new(sqlstate::INVALID_TEXT_REPRESENTATION, m.clone())
            }
            ArrowError::ArithmeticOverflow(m) => Self::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, m.clone()),
            ArrowError::ExternalError(inner) => {
                if let Some(sql) = inner.downcast_ref::<SqlError>() {
                    return sql.clone();
                }
                if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                    return Self::from_datafusion(df);
                }
                Self::internal(inner.to_string())
            }
            other => Self::from_message(&other.to_string(), sqlstate::INTERNAL_ERROR),
        }
    }

    /// DataFusion reports many distinct conditions as plain strings.
    fn from_message(raw: &str, fallback: &'static str) -> SqlError {
        let message = clean_message(raw);
        let lower = message.to_ascii_lowercase();
        let code = if lower.contains("divide by zero") || lower.contains("division by zero") {
            sqlstate::DIVISION_BY_ZERO
        } else if (lower.contains("table") || lower.contains("relation"))
            && (lower.contains("not found") || lower.contains("does not exist"))
        {
            sqlstate::UNDEFINED_TABLE
        } else if lower.contains("no field named") || lower.contains("column") && lower.contains("not found") {
            sqlstate::UNDEFINED_COLUMN
        } else if lower.contains("non-nullable but contains null") || lower.contains("violates not-null") {
            sqlstate::NOT_NULL_VIOLATION
        } else if lower.contains("already exists") {
            sqlstate::DUPLICATE_OBJECT
        } else if lower.contains("invalid function")
            || lower.contains("unknown function")
            || lower.contains("no function matches")
            || lower.contains("cannot coerce arithmetic expression")
        {
            sqlstate::UNDEFINED_FUNCTION
        } else if lower.contains("types don't match and no valid cast exists") {
            sqlstate::DATATYPE_MISMATCH
        } else if lower.contains("placeholder") && lower.contains("was not provided a value") {
            // PostgreSQL: "there is no parameter $1".
            "42P02"
        } else if lower.contains("schema") && lower.contains("doesn't exist") {
            sqlstate::UNDEFINED_SCHEMA
        } else if lower.contains("can't cast value") || lower.contains("out of range") {
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
        } else if lower.contains("cannot cast") || lower.contains("cast error") {
            sqlstate::INVALID_TEXT_REPRESENTATION
        } else if lower.contains("overflow") {
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
        } else if lower.contains("unsupported") || lower.contains("not supported") || lower.contains("not implemented")
        {
            sqlstate::FEATURE_NOT_SUPPORTED
        } else {
            fallback
        };
        let message = if code == sqlstate::DIVISION_BY_ZERO { "division by zero".to_string() } else { message };
        SqlError::new(code, message)
    }
}

/// Strips DataFusion's "Error during planning: " style prefixes and backtraces.
fn clean_message(raw: &str) -> String {
    let mut message = raw.trim();
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "This feature is not implemented: ",
        "SQL error: ",
        "Schema error: ",
        "Arrow error: ",
        "External error: ",
        "Invalid argument error: ",
        "Compute error: ",
    ] {
        while let Some(rest) = message.strip_prefix(prefix) {
            message = rest;
        }
    }
    message.split("\n\nbacktrace").next().unwrap_or(message).trim().to_string()
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqlError {}

impl From<DataFusionError> for SqlError {
    fn from(error: DataFusionError) -> Self {
        SqlError::from_datafusion(&error)
    }
}

impl From<ArrowError> for SqlError {
    fn from(error: ArrowError) -> Self {
        SqlError::from_arrow(&error)
    }
}
