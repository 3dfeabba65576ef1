//! CREATE TABLE and CREATE SOURCE: a table (plain, or fed by a connector)
//! or a source, from its columns, keys, WITH options and WATERMARK FOR.
//!
//! The statement is read in steps, each a function here: Freshet's options
//! (`WATERMARK FOR`, the idle timeout, the relation kind, the connector),
//! the columns and primary key DataFusion planned, the connector's reader
//! (with the settings a table `FROM` a postgres-cdc source inherits), and
//! the watermark; then the relation is registered and, unless the catalog
//! is being recovered, stored (and filled, for CREATE TABLE … AS).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{Constraint, TableReference};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{CreateTable, Statement};

use super::ddl::{catalog_entry, check_absent, schema_provider};
use super::options::Options;
use super::{Engine, Outcome, syntax};
use crate::catalog::{QualifiedName, Relation, RelationKind, TableWatermark, qualify};
use crate::connectors::{ConnectorOptions, Reader};
use crate::db::provider::RelationProvider;
use crate::db::writes;
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::RelationId;

pub async fn create_table(engine: &Engine, create: &CreateTable) -> Result<Outcome> {
    let state = engine.ctx.state();
    // DataFusion plans the table without Freshet's options.
    let mut plain = create.clone();
    let mut options = Options::take(&mut plain.table_options)?;
    let watermark = options.take_watermark()?;
    let idle_timeout = idle_timeout(&mut options, watermark.is_some())?;
    let is_source = is_source(&mut options)?;
    // A source, or a table fed by a connector (it stores what arrives).
    let connector = if is_source || options.get("connector").is_some() || options.get(syntax::CDC_SOURCE).is_some() {
        Some(ConnectorOptions { values: std::mem::take(&mut options).into_map() })
    } else {
        options.reject_unknown("table")?;
        None
    };
    let done = Outcome::Command { tag: if is_source { "CREATE SOURCE" } else { "CREATE TABLE" }, rows: None };
    let plan = state.statement_to_plan(DfStatement::Statement(Box::new(Statement::CreateTable(plain)))).await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(table)) = plan else {
        return Err(SqlError::not_supported(format!("this form of CREATE TABLE: {create}")));
    };
    if table.temporary {
        return Err(SqlError::not_supported("CREATE TEMPORARY TABLE"));
    }
    let name = qualify(&table.name);
    if table.or_replace {
        return Err(SqlError::not_supported("CREATE OR REPLACE TABLE"));
    }
    if check_absent(engine, &name, table.if_not_exists)? {
        return Ok(done);
    }
    let primary_key = primary_key(&table.constraints, &name)?;
    let schema = columns(table.input.schema().as_arrow(), &primary_key)?;
    let connected = match connector {
        Some(options) => Some(connect(engine, options, &name, &primary_key, &schema, is_source)?),
        None => None,
    };
    let kind = if is_source { RelationKind::Source } else { RelationKind::Table };
    // The connector's columns: the declared ones, or all when none are
    // declared, plus any it adds (INCLUDE partition, …).
    let schema = match &connected {
        Some(c) if schema.fields().len() != c.reader.connector().schema().fields().len() => {
            c.reader.connector().schema()
        }
        _ => schema,
    };
    let mut relation = Relation::new(engine.catalog.allocate_id(), name.clone(), kind, schema, primary_key)?;
    relation.column_defaults = table.column_defaults.iter().cloned().collect();
    if let Some(connected) = connected {
        if let Some(source) = connected.cdc_source {
            relation.depends_on.insert(source);
        }
        if kind == RelationKind::Source {
            relation.connector_options = Some(connected.options);
        } else {
            let prefix = crate::state::feed_errors_prefix(relation.id);
            engine.coordinator.run_state(relation.id).stats.register_bad_records(&name.to_string(), &prefix);
        }
        relation.reader = Some(connected.reader);
    }
    if let Some((column, expression)) = watermark {
        let def = table_watermark(engine, &relation, &column, &expression, idle_timeout)?;
        if engine.recovering() && relation.kind == RelationKind::Table {
            restore_watermark(engine, &relation, &def)?;
        }
        relation.watermarked = vec![def.column];
        relation.watermark = Some(Arc::new(def));
    }
    let relation = Arc::new(relation);
    let schema_provider = schema_provider(engine, &name)?;
    engine.catalog.add(relation.clone())?;
    schema_provider.register_table(
        name.name.clone(),
        Arc::new(RelationProvider::new(relation.clone(), engine.coordinator.clone())),
    )?;

    if engine.recovering() {
        // Its rows are stored; only the catalog had to be rebuilt.
        return Ok(done);
    }
    let mut guard = engine.coordinator.begin().await;
    guard.write_catalog_entry(relation.id, catalog_entry(Statement::CreateTable(create.clone()), &name))?;

    // CREATE TABLE … AS SELECT: fill it in one epoch.
    if !matches!(table.input.as_ref(), LogicalPlan::EmptyRelation(_)) && relation.kind == RelationKind::Table {
        std::mem::drop(guard);
        let source = engine.ctx.execute_logical_plan(table.input.as_ref().clone()).await?;
        let rows =
            super::query_memory::collect_within(source, engine.query_memory.bytes(), "CREATE TABLE … AS").await?;
        let mut guard = engine.coordinator.begin().await;
        writes::insert(&mut guard, &relation, &rows, &writes::OnConflict::Error)?;
    }
    Ok(done)
}

/// The `watermark.idle_timeout` option, in nanoseconds: how long a table
/// may receive nothing before its watermark stops holding views back.
fn idle_timeout(options: &mut Options, has_watermark: bool) -> Result<Option<i64>> {
    let Some(text) = options.remove(syntax::WATERMARK_IDLE_TIMEOUT) else { return Ok(None) };
    if !has_watermark {
        return Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{} needs a WATERMARK FOR clause", syntax::WATERMARK_IDLE_TIMEOUT),
        ));
    }
    let nanos = crate::duration::parse_nanos(&text, crate::duration::Unit::Seconds).filter(|n| *n > 0);
    let nanos = nanos.ok_or_else(|| {
        SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{} = '{text}' is not a duration like '10 seconds'", syntax::WATERMARK_IDLE_TIMEOUT),
        )
    })?;
    Ok(Some(nanos))
}

/// Whether the statement was CREATE SOURCE (rewritten into CREATE TABLE
/// with a relation-kind option, see `sql::syntax`).
fn is_source(options: &mut Options) -> Result<bool> {
    match options.remove(syntax::RELATION_KIND).as_deref() {
        Some("source") => Ok(true),
        Some(other) => {
            Err(SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, format!("{} = '{other}'", syntax::RELATION_KIND)))
        }
        None => Ok(false),
    }
}

/// The primary key's column positions (empty without one).
fn primary_key(constraints: &[Constraint], name: &QualifiedName) -> Result<Vec<usize>> {
    let mut primary_key: Vec<usize> = Vec::new();
    for constraint in constraints {
        match constraint {
            Constraint::PrimaryKey(columns) if primary_key.is_empty() => primary_key = columns.clone(),
            Constraint::PrimaryKey(_) => {
                return Err(SqlError::new(
                    sqlstate::INVALID_TABLE_DEFINITION,
                    format!("multiple primary keys for table \"{name}\" are not allowed"),
                ));
            }
            Constraint::Unique(_) => {
                return Err(SqlError::not_supported("UNIQUE constraints other than PRIMARY KEY"));
            }
        }
    }
    Ok(primary_key)
}

/// The declared columns, primary-key columns NOT NULL (as in Postgres);
/// a column named twice is refused.
fn columns(declared: &Schema, primary_key: &[usize]) -> Result<SchemaRef> {
    let fields: Vec<Field> = declared
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| f.as_ref().clone().with_nullable(f.is_nullable() && !primary_key.contains(&i)))
        .collect();
    let mut seen = HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().clone()) {
            return Err(SqlError::new("42701", format!("column \"{}\" specified more than once", f.name())));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A connector-fed table's or a source's reader and the options it was
/// made from.
struct Connected {
    reader: Reader,
    options: ConnectorOptions,
    /// The postgres-cdc source a table `FROM` one reads through.
    cdc_source: Option<RelationId>,
}

/// The reader of a source or connector-fed table with the declared
/// `schema`, checked against the external system (unless recovering).
fn connect(
    engine: &Engine,
    mut options: ConnectorOptions,
    name: &QualifiedName,
    primary_key: &[usize],
    schema: &SchemaRef,
    is_source: bool,
) -> Result<Connected> {
    let mut cdc_source = None;
    // CREATE TABLE t (…) FROM source TABLE 'schema.table': the source's
    // settings plus the upstream table.
    if let Some(source_name) = options.values.remove(syntax::CDC_SOURCE) {
        let (merged, source) = cdc_table_options(engine, options, &source_name, name)?;
        options = merged;
        cdc_source = Some(source);
    }
    if !primary_key.is_empty() {
        let names: Vec<&str> = primary_key.iter().map(|&i| schema.field(i).name().as_str()).collect();
        options.values.insert(crate::connectors::PRIMARY_KEY_OPTION.to_string(), names.join(","));
    }
    let keyed_format =
        options.get("format").is_some_and(|f| f.eq_ignore_ascii_case("upsert") || f.eq_ignore_ascii_case("debezium"));
    if keyed_format && is_source {
        return Err(SqlError::not_supported(
            "FORMAT UPSERT or DEBEZIUM on a source (a source keeps no rows to change): use CREATE TABLE … PRIMARY KEY",
        ));
    }
    let reader = crate::connectors::reader(&options, Some(schema.clone()))?;
    if !primary_key.is_empty() && !matches!(reader, Reader::Keyed(_)) {
        return Err(SqlError::not_supported(if is_source {
            "a PRIMARY KEY on a source (a source keeps no rows to key)"
        } else {
            "a PRIMARY KEY on a table fed by a connector with FORMAT PLAIN (use FORMAT UPSERT or DEBEZIUM)"
        }));
    }
    if !engine.recovering() {
        reader.connector().check()?;
    }
    Ok(Connected { reader, options, cdc_source })
}

/// The connector options of table `table` read `FROM` the postgres-cdc
/// source `source_name`: the source's settings, the upstream table, a
/// replication slot of its own, and the table's own options over them.
fn cdc_table_options(
    engine: &Engine,
    mut options: ConnectorOptions,
    source_name: &str,
    table: &QualifiedName,
) -> Result<(ConnectorOptions, RelationId)> {
    let source_name = qualify(&TableReference::parse_str(source_name));
    let source = engine
        .catalog
        .by_name(&source_name)
        .ok_or_else(|| SqlError::new(sqlstate::UNDEFINED_OBJECT, format!("source \"{source_name}\" does not exist")))?;
    let settings = source
        .connector_options
        .clone()
        .filter(|_| source.kind == RelationKind::Source)
        .filter(|o| o.connector() == Some(crate::connectors::postgres_cdc::CONNECTOR));
    let Some(settings) = settings else {
        return Err(SqlError::new(
            sqlstate::WRONG_OBJECT_TYPE,
            format!("\"{source_name}\" is not a postgres-cdc source (CREATE TABLE … FROM reads one)"),
        ));
    };
    let upstream = options.values.remove(syntax::CDC_TABLE).unwrap_or_default();
    let mut merged = settings.values.clone();
    let prefix = merged.remove("slot.name").unwrap_or_else(|| "freshet".to_string());
    merged.insert("slot.name".to_string(), cdc_slot_name(&prefix, &table.name));
    merged.insert(crate::connectors::postgres_cdc::TABLE_OPTION.to_string(), upstream);
    merged.extend(options.values);
    Ok((ConnectorOptions { values: merged }, source.id))
}

/// One replication slot per table: `<source's slot.name, or freshet>_<table>`
/// (unless the table names its own), the table's name lower-cased with
/// anything but letters, digits and `_` replaced, as slot names allow.
fn cdc_slot_name(prefix: &str, table: &str) -> String {
    let table_part: String = table
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    format!("{prefix}_{table_part}")
}

/// At startup, a table's watermark as last committed.
fn restore_watermark(engine: &Engine, relation: &Relation, def: &TableWatermark) -> Result<()> {
    let stored = engine.coordinator.store().snapshot().get(&crate::state::watermark_key(relation.id));
    if let Some(value) = stored.and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes)) {
        let data_type = relation.schema.field(def.column).data_type();
        *def.value.lock() = Some(crate::stream::watermark::from_i64(value, data_type)?);
    }
    Ok(())
}

/// Compiles `WATERMARK FOR column AS expression` against a new table.
fn table_watermark(
    engine: &Engine,
    relation: &Relation,
    column: &str,
    expression: &str,
    idle_timeout: Option<i64>,
) -> Result<crate::catalog::TableWatermark> {
    use crate::stream::watermark::{is_time_type, monotone_column};
    let index = relation.schema.index_of(column).map_err(|_| {
        SqlError::new(
            sqlstate::UNDEFINED_COLUMN,
            format!("column \"{column}\" named in WATERMARK FOR does not exist in table \"{}\"", relation.name),
        )
    })?;
    let data_type = relation.schema.field(index).data_type().clone();
    if !is_time_type(&data_type) {
        return Err(SqlError::new(
            sqlstate::DATATYPE_MISMATCH,
            format!("WATERMARK FOR column \"{column}\" is {data_type}; it must be a timestamp or a date"),
        ));
    }
    let df_schema = datafusion::common::DFSchema::try_from(relation.schema.as_ref().clone())?;
    let state = engine.ctx.state();
    let expr = state.create_logical_expr(expression, &df_schema).map_err(|e| {
        let error = SqlError::from(e);
        SqlError::new(error.code, format!("WATERMARK FOR {column} AS {expression}: {}", error.message))
    })?;
    if monotone_column(&expr, &df_schema) != Some(index) {
        return Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "WATERMARK FOR {column} AS {expression}: the expression must read only \"{column}\" and grow with it, e.g. {column} - INTERVAL '5' SECOND"
            ),
        ));
    }
    let expr_type = datafusion::logical_expr::ExprSchemable::get_type(&expr, &df_schema)?;
    let expr = if expr_type == data_type { expr } else { datafusion::logical_expr::cast(expr, data_type.clone()) };
    let physical = state.create_physical_expr(expr, &df_schema)?;
    let started = crate::stream::wall_clock_nanos();
    Ok(crate::catalog::TableWatermark {
        column: index,
        expression: physical,
        text: expression.to_string(),
        value: parking_lot::Mutex::new(None),
        idle_timeout,
        last_insert: parking_lot::Mutex::new(started),
        idle: parking_lot::Mutex::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::cdc_slot_name;

    #[test]
    fn each_cdc_table_gets_a_slot_named_after_it() {
        assert_eq!(cdc_slot_name("freshet", "Orders"), "freshet_orders");
        assert_eq!(cdc_slot_name("app", "order-items.v2"), "app_order_items_v2");
    }
}
