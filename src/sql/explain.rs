//! EXPLAIN CREATE MATERIALIZED VIEW / SINK: the stream plan the view would
//! run (operators, their keys and expressions, which keep state and under
//! which key prefix, which are partitioned over the workers), planned and
//! lowered exactly as CREATE would, without creating anything. EXPLAIN of a
//! query stays DataFusion's (the batch plan).

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{CreateView, Statement};

use super::options::Options;
use super::{Engine, Outcome, syntax};
use crate::error::{Result, SqlError};
use crate::plan;

/// Whether `statement` is an EXPLAIN this module answers.
pub fn is_stream_explain(statement: &Statement) -> bool {
    matches!(statement, Statement::Explain { statement, .. } if matches!(statement.as_ref(), Statement::CreateView(_)))
}

pub async fn explain_view(engine: &Engine, create: &CreateView) -> Result<Outcome> {
    if !create.materialized {
        return Err(SqlError::not_supported(
            "EXPLAIN CREATE VIEW: a plain view is its query, run when read (EXPLAIN SELECT … shows its plan)",
        ));
    }
    let mut options = Options::take(&mut create.options.clone())?;
    let is_sink = options.remove(syntax::RELATION_KIND).as_deref() == Some("sink");
    let emit_on_window_close =
        options.remove(syntax::EMIT).is_some_and(|e| e.eq_ignore_ascii_case(syntax::EMIT_ON_WINDOW_CLOSE));
    let state = engine.ctx.state();
    let query = Statement::Query(create.query.clone());
    let planned = state.statement_to_plan(DfStatement::Statement(Box::new(query))).await?;
    let epoch_now = datafusion::execution::FunctionRegistry::udf(&engine.ctx, plan::temporal::EPOCH_NOW)?;
    let planned = plan::temporal::mark_now(planned, &epoch_now)?;
    plan::check_materializable(&planned)?;
    let optimized = state.optimize(&planned)?;
    plan::check_materializable(&optimized)?;
    // No view gets this id: the state numbers shown are within the view.
    let spec = plan::ViewSpec { id: u32::MAX, workers: engine.workers, emit_on_window_close };
    let stream_plan = plan::lower(&optimized, &state, &super::ddl::CatalogResolver, &spec)?;
    let lines = stream_plan.explain();
    let reads: Vec<String> =
        stream_plan.inputs.iter().filter_map(|id| engine.catalog.get(*id)).map(|r| r.name.to_string()).collect();
    let mut text = vec![format!(
        "{} {} ({} workers{}; reads {})",
        if is_sink { "Sink" } else { "Materialized view" },
        create.name,
        engine.workers,
        if emit_on_window_close { ", EMIT ON WINDOW CLOSE" } else { "" },
        if reads.is_empty() { "its sources only".to_string() } else { reads.join(", ") }
    )];
    text.extend(lines.into_iter().map(|line| format!("  {line}")));
    let schema = Arc::new(Schema::new(vec![Field::new("QUERY PLAN", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(text))])?;
    Ok(Outcome::Rows(engine.ctx.read_batch(batch)?))
}
