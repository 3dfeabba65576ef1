//! Turns every error into an ErrorResponse with a meaningful SQLSTATE.

use datafusion::error::DataFusionError;
use pgwire::api::{ClientInfo, ErrorHandler};
use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::{SqlError, sqlstate};

pub fn to_pgwire(error: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_string(), error.code.to_string(), error.message)))
}

/// Classifies errors raised inside datafusion-postgres (which reports them
/// all as "API errors") the way the engine would.
pub struct SqlStateErrorHandler;

/// The ErrorInfo a client gets for `error`.
pub fn error_info(error: PgWireError) -> ErrorInfo {
    let mut error = error;
    classify(&mut error);
    match error {
        PgWireError::UserError(info) => *info,
        other => ErrorInfo::new("ERROR".to_string(), sqlstate::INTERNAL_ERROR.to_string(), other.to_string()),
    }
}

impl ErrorHandler for SqlStateErrorHandler {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        classify(error);
        tracing::debug!(%error, "sending error");
    }
}

fn classify(error: &mut PgWireError) {
    {
        if let PgWireError::ApiError(inner) = error {
            let classified = if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                SqlError::from_datafusion(df)
            } else if let Some(sql) = inner.downcast_ref::<SqlError>() {
                sql.clone()
            } else if let Some(parse) = inner.downcast_ref::<datafusion::sql::sqlparser::parser::ParserError>() {
                SqlError::from_parser(parse)
            } else {
                let message = inner.to_string();
                let code = if message.contains("recursion limit exceeded") {
                    sqlstate::STATEMENT_TOO_COMPLEX
                } else if message.contains("sql parser error") || message.contains("Expected") {
                    sqlstate::SYNTAX_ERROR
                } else {
                    sqlstate::INTERNAL_ERROR
                };
                SqlError::new(code, message)
            };
            *error = to_pgwire(classified);
        }
    }
}
