//! CREATE [MATERIALIZED] VIEW, CREATE SINK and DROP, and what every CREATE
//! shares (names, the stored catalog entry). CREATE TABLE and CREATE SOURCE
//! are `create_table.rs`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::SchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::{ViewTable, source_as_provider};
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, CreateView, Expr, Ident, ObjectName, ObjectType, SqlOption, Statement, Value,
};

use super::options::Options;
use super::{DATABASE, Engine, Outcome, syntax};
use crate::catalog::{QualifiedName, Relation, RelationKind, RowLayout, qualify};
use crate::connectors::ConnectorOptions;
use crate::db::coordinator::{BuildOperators, ViewDataflow};
use crate::db::provider::RelationProvider;
use crate::error::{Result, SqlError, sqlstate};
use crate::plan::{self, RelationResolver, stream_schema};
use crate::stream::RelationId;

pub(super) fn schema_provider(engine: &Engine, name: &QualifiedName) -> Result<Arc<dyn SchemaProvider>> {
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
pub(super) fn check_absent(engine: &Engine, name: &QualifiedName, if_not_exists: bool) -> Result<bool> {
    let exists = engine.catalog.by_name(name).is_some() || schema_provider(engine, name)?.table_exist(&name.name);
    match (exists, if_not_exists) {
        (false, _) => Ok(false),
        (true, true) => Ok(true),
        (true, false) => Err(SqlError::duplicate_object(name)),
    }
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
                append_only: p.relation.layout == crate::catalog::RowLayout::Blocks,
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
    // How the rows are stored: chosen from the query below unless given;
    // a stored view's entry always says (an entry from before layouts
    // existed says nothing, and its rows are stored as rows).
    let requested_layout = if materialized && !is_sink { options.remove(STORAGE_LAYOUT) } else { None };
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
    if !is_sink {
        relation.layout = choose_layout(requested_layout.as_deref(), stream_plan.append_only(), engine.recovering())?;
    }
    let relation = Arc::new(relation);
    let sources: Vec<Arc<Relation>> = stream_plan.inputs.iter().filter_map(|id| engine.catalog.get(*id)).collect();
    let mut guard = engine.coordinator.begin().await;
    // Re-check under the epoch lock: another session may have won the name.
    if engine.catalog.by_name(&name).is_some() {
        return Err(SqlError::duplicate_object(&name));
    }
    let (inputs, clocked, needs_ticks) = (stream_plan.inputs.clone(), stream_plan.clocked, stream_plan.needs_ticks);
    let run = engine.coordinator.run_state(relation.id);
    let stats = run.stats.clone();
    let build: BuildOperators = Arc::new(move || stream_plan.build(&stats));
    let mut flow = ViewDataflow::new(relation.clone(), run, build, inputs, sources)?;
    flow.clocked = clocked;
    flow.needs_ticks = needs_ticks;
    if engine.recovering() {
        guard.restore_view(flow);
    } else {
        let mut stored = create.clone();
        if !is_sink {
            with_option(&mut stored, STORAGE_LAYOUT, relation.layout.name());
        }
        guard.create_view(flow, catalog_entry(Statement::CreateView(stored), &name))?;
    }
    engine.catalog.add(relation.clone())?;
    // A sink keeps no rows to query.
    if !is_sink {
        schema_provider
            .register_table(name.name.clone(), Arc::new(RelationProvider::new(relation, engine.coordinator.clone())))?;
    }
    Ok(Outcome::Command { tag, rows: None })
}

/// `WITH (storage_layout = 'rows' | 'blocks')` on a materialized view.
const STORAGE_LAYOUT: &str = "storage_layout";

/// A materialized view's row layout: blocks for a query that only inserts
/// rows, rows otherwise, or the one asked for (blocks only where they fit).
fn choose_layout(requested: Option<&str>, append_only: bool, recovering: bool) -> Result<RowLayout> {
    match requested.map(str::to_ascii_lowercase).as_deref() {
        None if recovering => Ok(RowLayout::Rows),
        None if append_only => Ok(RowLayout::Blocks),
        None | Some("rows") => Ok(RowLayout::Rows),
        Some("blocks") if append_only => Ok(RowLayout::Blocks),
        Some("blocks") => Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "storage_layout = 'blocks' needs a query that only inserts rows (no aggregate, outer join, \
             top-N, window function or temporal filter, and only sources or views stored as blocks as inputs)",
        )),
        Some(other) => Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("storage_layout = '{other}': a materialized view is stored as 'rows' or 'blocks'"),
        )),
    }
}

/// Sets `name = 'value'` among the statement's WITH options.
fn with_option(create: &mut CreateView, name: &str, value: &str) {
    let option =
        SqlOption::KeyValue { key: Ident::new(name), value: Expr::value(Value::SingleQuotedString(value.to_string())) };
    match &mut create.options {
        CreateTableOptions::With(list) => {
            list.retain(|o| !matches!(o, SqlOption::KeyValue { key, .. } if key.value.eq_ignore_ascii_case(name)));
            list.push(option);
        }
        other => *other = CreateTableOptions::With(vec![option]),
    }
}

/// The statement a relation is rebuilt from at startup: the original CREATE,
/// with its name qualified and without IF NOT EXISTS.
pub(super) fn catalog_entry(mut statement: Statement, name: &QualifiedName) -> Vec<u8> {
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
