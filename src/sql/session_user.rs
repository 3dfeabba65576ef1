//! `current_user`, `session_user`, `current_role` and `user`: the role the
//! connection logged in as. The front end records it for the connection's
//! task before each statement ([`set`]); DataFusion folds these stable,
//! argument-less functions into constants while planning, which happens on
//! that task. Elsewhere they answer the bootstrap role.

use std::cell::RefCell;
use std::future::Future;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::catalog::privileges::BOOTSTRAP_ROLE;

tokio::task_local! {
    static SESSION_USER: RefCell<String>;
}

/// Runs a connection with its own session-user slot.
pub async fn scope<F: Future>(work: F) -> F::Output {
    SESSION_USER.scope(RefCell::new(BOOTSTRAP_ROLE.to_string()), work).await
}

/// Records the connection's role (a no-op outside [`scope`]).
pub fn set(user: &str) {
    let _ = SESSION_USER.try_with(|slot| {
        if slot.borrow().as_str() != user {
            *slot.borrow_mut() = user.to_string();
        }
    });
}

pub fn current() -> String {
    SESSION_USER.try_with(|slot| slot.borrow().clone()).unwrap_or_else(|_| BOOTSTRAP_ROLE.to_string())
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SessionUser {
    name: &'static str,
    signature: Signature,
}

/// The functions, one per name.
pub fn udfs() -> Vec<ScalarUDF> {
    ["current_user", "session_user", "current_role", "user"]
        .into_iter()
        .map(|name| ScalarUDF::new_from_impl(SessionUser { name, signature: Signature::nullary(Volatility::Stable) }))
        .collect()
}

impl ScalarUDFImpl for SessionUser {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(current()))))
    }
}
