//! Session settings as Postgres keeps them: `SHOW name` (the session's
//! value, else the default), `SHOW ALL`, `SET` of any parameter (custom
//! ones too, as tools set their own), `RESET name | ALL` and `DISCARD
//! ALL`. A parameter never set and unknown to Postgres is an error
//! (42704), as there.
//!
//! datafusion-postgres' SET/SHOW hook still handles what it does more of:
//! the parameters it reports to the client (DateStyle, application_name, …),
//! statement_timeout (which it enforces) and the time zone. Values live in
//! the connection's metadata, where that hook keeps them too.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Reset, Set, Statement};
use datafusion_postgres::hooks::HookClient;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::PgWireResult;

use super::errors::to_pgwire;
use super::respond::respond;
use crate::error::{SqlError, sqlstate};
use crate::pg_catalog::tables::SETTINGS;
use crate::sql::Outcome;

/// Parameters datafusion-postgres' hook sets (and reports, or enforces).
fn set_by_datafusion_postgres(name: &str) -> bool {
    matches!(
        name,
        "statement_timeout"
            | "datestyle"
            | "bytea_output"
            | "intervalstyle"
            | "application_name"
            | "extra_float_digits"
            | "timezone"
            | "time zone"
    )
}

/// SHOW forms datafusion-postgres' hook answers correctly.
fn shown_by_datafusion_postgres(name: &str) -> bool {
    matches!(name, "time zone" | "timezone" | "statement_timeout" | "catalogs")
}

/// What a session statement does.
pub(super) enum Action {
    Show(String),
    ShowAll,
    Set(String, String),
    Reset(Option<String>),
    Discard,
}

/// The session statement `statement` is, if it is one.
pub(super) fn action(statement: &Statement) -> Option<Action> {
    match statement {
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|v| v.value.to_lowercase()).collect();
            // `SHOW a.b` arrives as two names, like `SHOW time zone`.
            let spaced = words.join(" ");
            let name =
                if matches!(spaced.as_str(), "time zone" | "transaction isolation level" | "session authorization")
                    || words.len() == 1
                {
                    spaced
                } else {
                    words.join(".")
                };
            match name.as_str() {
                "all" => Some(Action::ShowAll),
                _ if shown_by_datafusion_postgres(&name) => None,
                "transaction isolation level" => Some(Action::Show("transaction_isolation".to_string())),
                _ => Some(Action::Show(name)),
            }
        }
        Statement::Set(Set::SingleAssignment { variable, values, hivevar: false, .. }) => {
            let name = variable.to_string().to_lowercase();
            if set_by_datafusion_postgres(&name) {
                return None;
            }
            let value = values
                .iter()
                .map(|v| match v {
                    datafusion::sql::sqlparser::ast::Expr::Value(value) => {
                        value.clone().into_string().unwrap_or_else(|| value.to_string())
                    }
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            Some(Action::Set(name, value))
        }
        Statement::Reset(reset) => Some(Action::Reset(match &reset.reset {
            Reset::ALL => None,
            Reset::ConfigurationParameter(name) => Some(name.to_string().to_lowercase()),
        })),
        Statement::Discard { .. } => Some(Action::Discard),
        _ => None,
    }
}

/// A parameter's value for this session: as set, else the default.
fn value_of(client: &(dyn ClientInfo + Send + Sync), name: &str) -> Option<String> {
    let metadata = client.metadata();
    metadata
        .get(name)
        .or_else(|| metadata.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
        .cloned()
        .or_else(|| crate::pg_catalog::tables::setting(name).map(str::to_string))
}

fn text_batch(columns: &[&str], rows: Vec<Vec<String>>) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(columns.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect::<Vec<_>>()));
    let arrays = (0..columns.len())
        .map(|i| {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.get(i).cloned().unwrap_or_default()))) as _
        })
        .collect();
    RecordBatch::try_new(schema, arrays).unwrap_or_else(|_| RecordBatch::new_empty(Arc::new(Schema::empty())))
}

/// The rows SHOW answers with.
fn show_rows(client: &(dyn ClientInfo + Send + Sync), action: &Action) -> Result<Option<RecordBatch>, SqlError> {
    Ok(match action {
        Action::ShowAll => {
            let mut rows: Vec<Vec<String>> = SETTINGS
                .iter()
                .map(|(name, _, description)| {
                    vec![name.to_string(), value_of(client, name).unwrap_or_default(), description.to_string()]
                })
                .collect();
            rows.sort_by_key(|r| r.first().map(|name| name.to_lowercase()));
            Some(text_batch(&["name", "setting", "description"], rows))
        }
        Action::Show(name) => match value_of(client, name) {
            Some(value) => Some(text_batch(&[name.as_str()], vec![vec![value]])),
            None => {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("unrecognized configuration parameter \"{name}\""),
                ));
            }
        },
        _ => None,
    })
}

/// Answers a session statement.
pub(super) async fn run(
    action: Action,
    session: &SessionContext,
    client: &mut dyn HookClient,
) -> PgWireResult<Response> {
    match action {
        Action::Show(_) | Action::ShowAll => {
            let batch = show_rows(&*client, &action).map_err(to_pgwire)?.unwrap_or_else(|| text_batch(&[], vec![]));
            let frame = session.read_batch(batch).map_err(|e| to_pgwire(e.into()))?;
            respond(Ok(Outcome::Rows(frame))).await
        }
        Action::Set(name, value) => {
            client.metadata_mut().insert(name, value);
            Ok(Response::Execution(Tag::new("SET")))
        }
        Action::Reset(name) => {
            reset(client, name);
            Ok(Response::Execution(Tag::new("RESET")))
        }
        Action::Discard => {
            if crate::db::transaction::is_open() {
                return Err(to_pgwire(SqlError::new(
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    "DISCARD ALL cannot run inside a transaction block",
                )));
            }
            // As Postgres: RESET ALL, DEALLOCATE ALL (and close cursors,
            // which end with the block they live in).
            reset(client, None);
            super::prepared::clear();
            Ok(Response::Execution(Tag::new("DISCARD ALL")))
        }
    }
}

/// RESET of one parameter, or of all (`None`).
fn reset(client: &mut dyn HookClient, name: Option<String>) {
    let names: Vec<String> = match name {
        Some(name) => vec![name],
        None => SETTINGS.iter().map(|(n, _, _)| n.to_lowercase()).collect(),
    };
    for name in names {
        // Keep what the client sent at startup (user, database).
        if !matches!(name.as_str(), "user" | "database") {
            client.metadata_mut().remove(&name);
        }
    }
}

/// The plan a session statement is described by at Parse (only its
/// result's columns matter).
pub(super) fn describe(
    action: &Action,
    session: &SessionContext,
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<LogicalPlan> {
    let batch = match show_rows(client, action) {
        Ok(Some(batch)) => batch,
        Ok(None) => text_batch(&[], vec![]),
        Err(error) => return Err(to_pgwire(error)),
    };
    session.read_batch(batch).map(|frame| frame.into_unoptimized_plan()).map_err(|e| to_pgwire(e.into()))
}
