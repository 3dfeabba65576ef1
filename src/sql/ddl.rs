//! CREATE TABLE, CREATE [MATERIALIZED] VIEW and DROP.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::SchemaProvider;
use datafusion::common::{Constraint, TableReference};
use datafusion::datasource::{ViewTable, source_as_provider};
use datafusion::logical_expr::{DdlStatement, LogicalPlan, TableScan};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{CreateTable, CreateView, Ident, ObjectName, ObjectType, Statement};

use super::options::Options;
use super::{DATABASE, Engine, Outcome, syntax};
use crate::catalog::{QualifiedName, Relation, RelationKind, qualify};
use crate::connectors::ConnectorOptions;
use crate::db::coordinator::{BuildOperators, ViewDataflow};
use crate::db::provider::RelationProvider;
use crate::db::writes;
use crate::error::{Result, SqlError, sqlstate};
use crate::plan::{self, RelationResolver, stream_schema};
use crate::stream::RelationId;

fn schema_provider(engine: &Engine, name: &QualifiedName) -> Result<Arc<dyn SchemaProvider>> {
    engine
        .ctx
        .catalog(DATABASE)
        .and_then(|c| c.schema(&name.schema))
        .ok_or_else(|| SqlError::new(sqlstate::UNDEFINED_SCHEMA, format!("schema \"{}\" does not exist", name.schema)))
}

/// `schema.name` as a SQL object name, quoted so it reads back unchanged.
fn stored_name(name: &QualifiedName) -> ObjectName {
    ObjectName::from(vec![Ident::with_quote('"', &name.schema), Ident::with_quote('"', &name.name)])
}

pub(super) fn object_name(engine: &Engine, name: &ObjectName) -> QualifiedName {
    let reference = engine.ctx.state().resolve_table_references_for(name);
    qualify(&reference)
}

trait ResolveName {
    fn resolve_table_references_for(&self, name: &ObjectName) -> TableReference;
}

impl ResolveName for datafusion::execution::SessionState {
    fn resolve_table_references_for(&self, name: &ObjectName) -> TableReference {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p.as_ident() {
                Some(ident) if ident.quote_style.is_some() => ident.value.clone(),
                Some(ident) => ident.value.to_lowercase(),
                None => p.to_string(),
            })
            .collect();
        match parts.as_slice() {
            [table] => TableReference::bare(table.as_str()),
            [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
            [catalog, schema, table] => TableReference::full(catalog.as_str(), schema.as_str(), table.as_str()),
            _ => TableReference::bare(name.to_string()),
        }
    }
}

/// Fails with 42P07 unless `if_not_exists` (then reports "skip").
fn check_absent(engine: &Engine, name: &QualifiedName, if_not_exists: bool) -> Result<bool> {
    let exists = engine.catalog.by_name(name).is_some() || schema_provider(engine, name)?.table_exist(&name.name);
    match (exists, if_not_exists) {
        (false, _) => Ok(false),
        (true, true) => Ok(true),
        (true, false) => Err(SqlError::duplicate_object(name)),
    }
}

pub async fn create_table(engine: &Engine, create: &CreateTable) -> Result<Outcome> {
    let done = Outcome::Command { tag: "CREATE TABLE", rows: None };
    let state = engine.ctx.state();
    // DataFusion plans the table without Freshet's options.
    let mut plain = create.clone();
    let mut options = Options::take(&mut plain.table_options)?;
    let watermark = options.take_watermark()?;
    let idle_timeout = match options.remove(syntax::WATERMARK_IDLE_TIMEOUT) {
        None => None,
        Some(_) if watermark.is_none() => {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("{} needs a WATERMARK FOR clause", syntax::WATERMARK_IDLE_TIMEOUT),
            ));
        }
        Some(text) => {
            Some(crate::duration::parse_nanos(&text, crate::duration::Unit::Seconds).filter(|n| *n > 0).ok_or_else(
                || {
                    SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("{} = '{text}' is not a duration like '10 seconds'", syntax::WATERMARK_IDLE_TIMEOUT),
                    )
                },
            )?)
        }
    };
    let is_source = match options.remove(syntax::RELATION_KIND).as_deref() {
        Some("source") => true,
        Some(other) => {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("{} = '{other}'", syntax::RELATION_KIND),
            ));
        }
        None => false,
    };
    // A source, or a table fed by a connector (it stores what arrives).
    let connector = if is_source || options.get("connector").is_some() || options.get(syntax::CDC_SOURCE).is_some() {
        Some(ConnectorOptions { values: std::mem::take(&mut options).into_map() })
    } else {
        options.reject_unknown("table")?;
        None
    };
    let done = if is_source { Outcome::Command { tag: "CREATE SOURCE", rows: None } } else { done };
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
    let mut primary_key: Vec<usize> = Vec::new();
    for constraint in table.constraints.iter() {
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
    // Primary-key columns are NOT NULL, as in Postgres.
    let input_schema = table.input.schema().as_arrow().clone();
    let fields: Vec<Field> = input_schema
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
    let mut schema = Arc::new(Schema::new(fields));
    let mut kind = RelationKind::Table;
    let mut reader = None;
    let mut cdc_source = None;
    let mut connector_options = None;
    if let Some(options) = &connector {
        let mut options = options.clone();
        // CREATE TABLE t (…) FROM source TABLE 'schema.table': the source's
        // settings plus the upstream table.
        if let Some(source_name) = options.values.remove(syntax::CDC_SOURCE) {
            let source_name = qualify(&TableReference::parse_str(&source_name));
            let source = engine.catalog.by_name(&source_name).ok_or_else(|| {
                SqlError::new(sqlstate::UNDEFINED_OBJECT, format!("source \"{source_name}\" does not exist"))
            })?;
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
            // One slot per table: `<source's slot.name, or freshet>_<table>`
            // unless the table names its own.
            let prefix = merged.remove("slot.name").unwrap_or_else(|| "freshet".to_string());
            let table_part: String = name
                .name
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
                .collect();
            merged.insert("slot.name".to_string(), format!("{prefix}_{table_part}"));
            merged.insert(crate::connectors::postgres_cdc::TABLE_OPTION.to_string(), upstream);
            merged.extend(options.values);
            options = ConnectorOptions { values: merged };
            cdc_source = Some(source.id);
        }
        if !primary_key.is_empty() {
            let names: Vec<&str> = primary_key.iter().map(|&i| schema.field(i).name().as_str()).collect();
            options.values.insert(crate::connectors::PRIMARY_KEY_OPTION.to_string(), names.join(","));
        }
        let keyed_format = options
            .get("format")
            .is_some_and(|f| f.eq_ignore_ascii_case("upsert") || f.eq_ignore_ascii_case("debezium"));
        if keyed_format && is_source {
            return Err(SqlError::not_supported(
                "FORMAT UPSERT or DEBEZIUM on a source (a source keeps no rows to change): use CREATE TABLE … PRIMARY KEY",
            ));
        }
        let source_reader = crate::connectors::reader(&options, Some(schema.clone()))?;
        if !primary_key.is_empty() && !matches!(source_reader, crate::connectors::Reader::Keyed(_)) {
            return Err(SqlError::not_supported(if is_source {
                "a PRIMARY KEY on a source (a source keeps no rows to key)"
            } else {
                "a PRIMARY KEY on a table fed by a connector with FORMAT PLAIN (use FORMAT UPSERT or DEBEZIUM)"
            }));
        }
        if !engine.recovering() {
            source_reader.connector().check()?;
        }
        // The connector's columns: the declared ones, or all when none are
        // declared, plus any it adds (INCLUDE partition, …).
        if schema.fields().len() != source_reader.connector().schema().fields().len() {
            schema = source_reader.connector().schema();
        }
        if is_source {
            kind = RelationKind::Source;
        }
        reader = Some(source_reader);
        connector_options = Some(options);
    }
    let mut relation = Relation::new(engine.catalog.allocate_id(), name.clone(), kind, schema, primary_key)?;
    relation.column_defaults = table.column_defaults.iter().cloned().collect();
    relation.reader = reader;
    if kind == RelationKind::Source {
        relation.connector_options = connector_options;
    }
    if let Some(source) = cdc_source {
        relation.depends_on.insert(source);
    }
    if kind == RelationKind::Table && relation.reader.is_some() {
        let prefix = crate::state::feed_errors_prefix(relation.id);
        relation.stats.register_bad_records(&name.to_string(), &prefix);
    }
    if let Some((column, expression)) = watermark {
        let def = table_watermark(engine, &relation, &column, &expression, idle_timeout)?;
        if engine.recovering() && relation.kind == RelationKind::Table {
            let stored = engine.coordinator.store().snapshot().get(&crate::state::watermark_key(relation.id));
            if let Some(value) = stored.and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes))
            {
                let data_type = relation.schema.field(def.column).data_type();
                *def.value.lock() = Some(crate::stream::watermark::from_i64(value, data_type)?);
            }
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
                "WATERMARK FOR {column} AS {expression}: the expression must read only \"{column}\" and grow with it,                  e.g. {column} - INTERVAL '5' SECOND"
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

/// Maps table scans in a view's plan to our relations.
pub(super) struct CatalogResolver;

impl RelationResolver for CatalogResolver {
    fn resolve(&self, scan: &TableScan) -> Result<plan::Resolved> {
        let provider = source_as_provider(&scan.source)?;
        match provider.downcast_ref::<RelationProvider>() {
            Some(p) => Ok(plan::Resolved {
                id: p.relation.id,
                watermarked: p.relation.watermarked.clone(),
                source: (p.relation.kind == RelationKind::Source).then(|| p.relation.clone()),
            }),
            None => Err(SqlError::not_supported(format!(
                "reading \"{}\" in a materialized view (only tables and materialized views can be maintained)",
                scan.table_name
            ))),
        }
    }
}

/// Every relation of ours a (not yet inlined) plan reads, views included,
/// and the relations read through table functions (TUMBLE, HOP), whose
/// scans carry their own plan.
fn referenced_relations(engine: &Engine, plan: &LogicalPlan) -> BTreeSet<RelationId> {
    let mut found = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match engine.catalog.by_name(&qualify(&scan.table_name)) {
                Some(relation) => {
                    found.insert(relation.id);
                }
                None => {
                    let inner = source_as_provider(&scan.source).ok().and_then(|provider| {
                        provider.downcast_ref::<ViewTable>().map(|view| view.logical_plan().clone())
                    });
                    if let Some(inner) = inner {
                        found.extend(referenced_relations(engine, &inner));
                    }
                }
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

pub async fn create_view(engine: &Engine, create: &CreateView) -> Result<Outcome> {
    let materialized = create.materialized;
    let tag = if materialized { "CREATE MATERIALIZED VIEW" } else { "CREATE VIEW" };
    let name = object_name(engine, &create.name);
    if create.or_replace || create.or_alter {
        return Err(SqlError::not_supported("CREATE OR REPLACE VIEW"));
    }
    if check_absent(engine, &name, create.if_not_exists)? {
        return Ok(Outcome::Command { tag, rows: None });
    }
    let mut options = Options::take(&mut create.options.clone())?;
    let is_sink = match options.remove(syntax::RELATION_KIND).as_deref() {
        None => false,
        Some("sink") if materialized => true,
        Some(other) => {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("{} = '{other}'", syntax::RELATION_KIND),
            ));
        }
    };
    let tag = if is_sink { "CREATE SINK" } else { tag };
    let emit_on_window_close = match options.remove(syntax::EMIT).map(|e| e.to_ascii_lowercase()) {
        None => false,
        Some(e) if e == syntax::EMIT_ON_WINDOW_CLOSE && materialized => true,
        Some(e) if e == "on_update" || e == "immediately" => false,
        Some(other) => {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("emit = '{other}': a materialized view emits on_window_close or on_update"),
            ));
        }
    };
    let sink_options = if is_sink {
        Some(ConnectorOptions { values: std::mem::take(&mut options).into_map() })
    } else {
        options.reject_unknown("view")?;
        None
    };
    let state = engine.ctx.state();
    let query = Statement::Query(create.query.clone());
    let plan = state.statement_to_plan(DfStatement::Statement(Box::new(query))).await?;
    let depends_on = referenced_relations(engine, &plan);

    // Column names: the view's own list, else the query's output names.
    let output = stream_schema(plan.schema());
    if !create.columns.is_empty() && create.columns.len() != output.fields().len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            format!(
                "view \"{name}\" names {} columns but its query returns {}",
                create.columns.len(),
                output.fields().len()
            ),
        ));
    }
    let fields: Vec<Field> = output
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = create.columns.get(i).map(|c| c.name.value.clone()).unwrap_or_else(|| f.name().clone());
            f.as_ref().clone().with_name(name)
        })
        .collect();
    let mut seen = HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().clone()) {
            return Err(SqlError::new("42701", format!("column \"{}\" specified more than once", f.name())));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let schema_provider = schema_provider(engine, &name)?;
    let kind = match (materialized, is_sink) {
        (_, true) => RelationKind::Sink,
        (true, false) => RelationKind::MaterializedView,
        (false, false) => RelationKind::View,
    };
    let mut relation = Relation::new(engine.catalog.allocate_id(), name.clone(), kind, schema.clone(), vec![])?;
    if let Some(options) = &sink_options {
        let writer = crate::connectors::sink::writer(&name.to_string(), options, schema.clone())?;
        if !engine.recovering() {
            let checked = writer.clone();
            tokio::task::spawn_blocking(move || checked.check())
                .await
                .map_err(|e| SqlError::internal(format!("sink check: {e}")))??;
        }
        relation.sink = Some(writer);
        relation.connector_options = Some(options.clone());
    }
    relation.depends_on = depends_on;
    relation.definition = Some(create.query.to_string());

    if !materialized {
        // A plain view is its query, inlined into whatever reads it.
        let plan = if create.columns.is_empty() {
            plan
        } else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            datafusion::logical_expr::LogicalPlanBuilder::from(plan)
                .project(names.iter().zip(output.fields()).map(|(n, f)| {
                    datafusion::prelude::col(datafusion::common::Column::new_unqualified(f.name())).alias(*n)
                }))?
                .build()?
        };
        let relation = Arc::new(relation);
        let id = relation.id;
        engine.catalog.add(relation)?;
        schema_provider
            .register_table(name.name.clone(), Arc::new(ViewTable::new(plan, Some(create.query.to_string()))))?;
        if !engine.recovering() {
            engine
                .coordinator
                .begin()
                .await
                .write_catalog_entry(id, catalog_entry(Statement::CreateView(create.clone()), &name))?;
        }
        return Ok(Outcome::Command { tag, rows: None });
    }

    // now() in WHERE comparisons follows each epoch's time (temporal filters).
    let epoch_now = datafusion::execution::FunctionRegistry::udf(&engine.ctx, plan::temporal::EPOCH_NOW)?;
    let plan = plan::temporal::mark_now(plan, &epoch_now)?;
    // Stored views were accepted when created; refuse only new ones.
    if !engine.recovering() {
        plan::check_materializable(&plan)?;
    }
    let optimized = state.optimize(&plan)?;
    if !engine.recovering() {
        // The analyzer inlines plain views the query reads: check them too.
        plan::check_materializable(&optimized)?;
    }
    let spec = plan::ViewSpec { id: relation.id, workers: engine.workers, emit_on_window_close };
    let stream_plan = plan::lower(&optimized, &state, &CatalogResolver, &spec)?;
    relation.watermarked = stream_plan.watermarked();
    relation.emit_on_window_close = emit_on_window_close;
    let relation = Arc::new(relation);
    let sources: Vec<Arc<Relation>> = stream_plan.inputs.iter().filter_map(|id| engine.catalog.get(*id)).collect();
    let mut guard = engine.coordinator.begin().await;
    // Re-check under the epoch lock: another session may have won the name.
    if engine.catalog.by_name(&name).is_some() {
        return Err(SqlError::duplicate_object(&name));
    }
    let (inputs, clocked) = (stream_plan.inputs.clone(), stream_plan.clocked);
    let stats = relation.stats.clone();
    let build: BuildOperators = Arc::new(move || stream_plan.build(&stats));
    let mut flow = ViewDataflow::new(relation.clone(), build, inputs, sources)?;
    flow.clocked = clocked;
    if engine.recovering() {
        guard.restore_view(flow);
    } else {
        guard.create_view(flow, catalog_entry(Statement::CreateView(create.clone()), &name))?;
    }
    engine.catalog.add(relation.clone())?;
    // A sink keeps no rows to query.
    if !is_sink {
        schema_provider
            .register_table(name.name.clone(), Arc::new(RelationProvider::new(relation, engine.coordinator.clone())))?;
    }
    Ok(Outcome::Command { tag, rows: None })
}

/// The statement a relation is rebuilt from at startup: the original CREATE,
/// with its name qualified and without IF NOT EXISTS.
fn catalog_entry(mut statement: Statement, name: &QualifiedName) -> Vec<u8> {
    match &mut statement {
        Statement::CreateTable(create) => {
            create.name = stored_name(name);
            create.if_not_exists = false;
        }
        Statement::CreateView(create) => {
            create.name = stored_name(name);
            create.if_not_exists = false;
        }
        _ => {}
    }
    statement.to_string().into_bytes()
}

pub async fn drop(
    engine: &Engine,
    object_type: ObjectType,
    if_exists: bool,
    names: &[ObjectName],
    cascade: bool,
) -> Result<Outcome> {
    let (kind, mut tag) = match object_type {
        ObjectType::Table => (RelationKind::Table, "DROP TABLE"),
        ObjectType::View => (RelationKind::View, "DROP VIEW"),
        ObjectType::MaterializedView => (RelationKind::MaterializedView, "DROP MATERIALIZED VIEW"),
        other => return Err(SqlError::not_supported(format!("DROP {other}"))),
    };
    let mut guard = engine.coordinator.begin().await;
    for name in names {
        let qualified = object_name(engine, name);
        let Some(relation) = engine.catalog.by_name(&qualified) else {
            if if_exists {
                continue;
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("{} \"{qualified}\" does not exist", kind.noun()),
            ));
        };
        // DROP SOURCE arrives as DROP TABLE, DROP SINK as DROP
        // MATERIALIZED VIEW (see `syntax`).
        let same_kind = relation.kind == kind
            || (kind == RelationKind::Table && relation.kind == RelationKind::Source)
            || (kind == RelationKind::MaterializedView && relation.kind == RelationKind::Sink);
        if relation.kind == RelationKind::Sink {
            tag = "DROP SINK";
        }
        if !same_kind {
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("\"{qualified}\" is not a {}", kind.noun()),
            ));
        }
        // Everything that reads it, transitively, dependents before what they read.
        let mut order: Vec<Arc<Relation>> = Vec::new();
        let mut stack = vec![relation.clone()];
        while let Some(next) = stack.pop() {
            for dependent in engine.catalog.dependents(next.id) {
                if !order.iter().any(|r| r.id == dependent.id) {
                    stack.push(dependent.clone());
                    order.push(dependent);
                }
            }
        }
        if !order.is_empty() && !cascade {
            let list: Vec<String> = order
                .iter()
                .map(|r| format!("{} {} depends on {} {}", r.kind.noun(), r.name, relation.kind.noun(), relation.name))
                .collect();
            return Err(SqlError::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop {} {} because other objects depend on it ({}); use DROP ... CASCADE to drop the dependent objects too",
                    relation.kind.noun(),
                    relation.name,
                    list.join("; ")
                ),
            ));
        }
        // Later-created relations depend on earlier ones: drop newest first.
        order.sort_by_key(|r| std::cmp::Reverse(r.id));
        order.push(relation);
        for victim in order {
            guard.drop_relation(&victim)?;
            if victim.kind == RelationKind::Table {
                // A CDC table's replication slot goes with it.
                if let Some(reader) = &victim.reader {
                    reader.connector().release();
                }
            }
            engine.catalog.remove(victim.id);
            engine.catalog.access.forget_relation(victim.id);
            if let Ok(provider) = schema_provider(engine, &victim.name) {
                provider.deregister_table(&victim.name.name)?;
            }
        }
    }
    Ok(Outcome::Command { tag, rows: None })
}
