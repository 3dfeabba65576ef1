//! Statement handling: the statements Freshet owns (DDL, DML, SHOW), over
//! one DataFusion `SessionContext` that also answers ad-hoc queries.
//!
//! DataFusion plans everything it can (CREATE TABLE column types and
//! defaults, INSERT sources, UPDATE/DELETE, view queries); this module turns
//! the plans into catalog changes, dataflows and table writes. It knows
//! nothing of the wire protocol: results are [`Outcome`]s.

pub mod authorize;
mod bytea;
pub mod command;
mod comment;
pub mod copy;
mod create_table;
mod ddl;
mod dml;
mod explain;
pub mod limits;
mod nexmark;
mod options;
pub mod query_memory;
mod roles;
pub mod search_path;
pub mod session_user;
pub mod syntax;
mod values;
mod windows;

/// Helpers the wire front end needs to plan INSERT … ON CONFLICT.
pub mod dml_support {
    pub use super::dml::plannable_insert;
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{CreateTable, CreateView, ObjectType, Statement};

use crate::catalog::{Catalog, RelationKind};
use crate::db::coordinator::Coordinator;
use crate::db::snapshot;
use crate::error::{Result, SqlError, sqlstate};
use crate::state::{MemStore, StateStore};
use crate::stream::RelationId;
use crate::stream::state_table::StateBudget;

pub use crate::catalog::DATABASE;

/// What a statement produced.
pub enum Outcome {
    /// A command tag such as `CREATE TABLE` or `INSERT 0 3`.
    Command { tag: &'static str, rows: Option<usize> },
    /// Rows to send back.
    Rows(DataFrame),
}

pub struct Engine {
    pub ctx: SessionContext,
    pub catalog: Arc<Catalog>,
    pub coordinator: Arc<Coordinator>,
    /// Workers each stateful operator of a view is partitioned over.
    pub workers: usize,
    /// Set while [`Engine::recover`] rebuilds the catalog from the store.
    recovering: AtomicBool,
    /// The memory one ad-hoc query may take (see `query_memory`).
    pub query_memory: Arc<query_memory::QueryMemoryLimit>,
}

/// What [`Engine::recover`] rebuilt.
#[derive(Debug, Default)]
pub struct Recovery {
    pub relations: usize,
    pub epoch: crate::state::Epoch,
    /// Epochs logged after the last checkpoint, fed through the views again.
    pub replayed_epochs: usize,
}

/// The default number of dataflow workers: the machine's cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Engine {
    pub fn new() -> Result<Arc<Self>> {
        Self::with_store(Arc::new(MemStore::new()), default_workers(), StateBudget::unlimited(), Duration::ZERO)
    }

    /// An engine over `store`; the operators' caches together hold at most
    /// about `state_budget` bytes (the rest of their state stays in the
    /// store), and their state is written every `checkpoint_interval` (zero:
    /// every epoch).
    pub fn with_store(
        store: Arc<dyn StateStore>,
        workers: usize,
        state_budget: Arc<StateBudget>,
        checkpoint_interval: Duration,
    ) -> Result<Arc<Self>> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE, "public")
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(true);
        // Plain Utf8 strings: simplest for the row format and the wire encoder.
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        config.options_mut().sql_parser.enable_ident_normalization = true;
        // TIMESTAMPTZ keeps a zone (and prints its offset, as in Postgres);
        // without one DataFusion plans it as a plain TIMESTAMP.
        config.options_mut().execution.time_zone = Some("+00:00".to_string());
        let query_memory = query_memory::QueryMemoryLimit::new(query_memory::DEFAULT_QUERY_MEMORY_BYTES);
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_query_planner(Arc::new(query_memory::MemoryLimitedPlanner::new(query_memory.clone())))
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        let catalog = Arc::new(Catalog::default());
        let coordinator = Arc::new(Coordinator::new(store, state_budget, checkpoint_interval));
        crate::pg_catalog::install(&ctx, DATABASE, &catalog, &coordinator)?;
        install_session_functions(&ctx);
        ctx.register_udf(crate::plan::temporal::EpochNow::udf().as_ref().clone());
        let bytea_input = bytea::ByteaInput::udf();
        ctx.register_udf(bytea_input.as_ref().clone());
        ctx.register_function_rewrite(Arc::new(bytea::ByteaCastRewrite::new(bytea_input)))?;
        for kind in [windows::WindowKind::Tumble, windows::WindowKind::Hop, windows::WindowKind::Session] {
            let function = Arc::new(windows::WindowFunction::new(kind, catalog.clone(), coordinator.clone()));
            // DataFusion looks table functions up by the name as written.
            ctx.register_udtf(kind.name(), function.clone());
            ctx.register_udtf(&kind.name().to_uppercase(), function);
        }
        ctx.register_udtf("nexmark", Arc::new(nexmark::NexmarkFunction));
        let engine = Arc::new(Self {
            ctx,
            catalog,
            coordinator,
            workers: workers.max(1),
            recovering: AtomicBool::new(false),
            query_memory,
        });
        Ok(engine)
    }

    fn recovering(&self) -> bool {
        self.recovering.load(Ordering::Acquire)
    }

    /// Rebuilds the catalog from the store's entries at startup: every
    /// table, view and materialized view comes back under its own id, in
    /// creation order (so a view's inputs exist before it); materialized
    /// views resume from their stored state, brought up to the committed
    /// epoch by replaying the epoch log (see `db::coordinator`).
    pub async fn recover(&self) -> Result<Recovery> {
        let snapshot = self.coordinator.store().snapshot();
        let mut entries: Vec<(RelationId, String)> = Vec::new();
        let mut corrupt = None;
        snapshot.scan_prefix(crate::state::CATALOG_PREFIX, &mut |key, value| match (
            key.get(1..5).and_then(|id| id.try_into().ok()),
            std::str::from_utf8(value),
        ) {
            (Some(id), Ok(sql)) => entries.push((u32::from_be_bytes(id), sql.to_string())),
            _ => corrupt = Some(key.to_vec()),
        });
        if let Some(key) = corrupt {
            return Err(SqlError::new(sqlstate::IO_ERROR, format!("corrupt catalog entry {key:?} in the data dir")));
        }
        self.recovering.store(true, Ordering::Release);
        let result = self.replay(&entries).await;
        self.recovering.store(false, Ordering::Release);
        result?;
        if let Some((last, _)) = entries.last() {
            self.catalog.set_next_id(last + 1);
        }
        comment::restore(self)?;
        self.catalog.access.restore(snapshot.as_ref())?;
        let catalog = self.catalog.clone();
        let replayed_epochs = self.coordinator.begin().await.finish_recovery(&|id| catalog.get(id))?;
        Ok(Recovery { relations: entries.len(), epoch: snapshot.epoch(), replayed_epochs })
    }

    async fn replay(&self, entries: &[(RelationId, String)]) -> Result<()> {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        for (id, sql) in entries {
            let fail = |e: String| SqlError::new(sqlstate::IO_ERROR, format!("restoring relation {id} ({sql}): {e}"));
            let mut statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)
                .map_err(|e| fail(e.to_string()))?;
            let Some(statement) = statements.pop() else { return Err(fail("empty entry".into())) };
            // Schemas are not stored objects yet: recreate the ones in use.
            if let Statement::CreateTable(CreateTable { name, .. }) | Statement::CreateView(CreateView { name, .. }) =
                &statement
                && let [schema, _] = name.0.as_slice()
            {
                let schema = schema.to_string();
                self.ctx.sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
            }
            self.catalog.set_next_id(*id);
            self.execute(&statement, None, None).await.map_err(|e| fail(e.message))?;
        }
        Ok(())
    }

    /// Whether the engine handles `statement` itself (else DataFusion does).
    pub fn owns(statement: &Statement) -> bool {
        match statement {
            Statement::CreateTable(_)
            | Statement::CreateView(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_) => true,
            Statement::Drop { object_type, .. } => {
                matches!(object_type, ObjectType::Table | ObjectType::View | ObjectType::MaterializedView)
            }
            Statement::ShowTables { .. } | Statement::ShowViews { .. } => true,
            Statement::Comment { .. } => true,
            // EXPLAIN CREATE MATERIALIZED VIEW (EXPLAIN SELECT is DataFusion's).
            other if explain::is_stream_explain(other) => true,
            _ => false,
        }
    }

    /// Runs a role or grant statement (CREATE / ALTER / DROP ROLE, GRANT,
    /// REVOKE) for the session role `user`, already checked by `access`.
    pub async fn execute_access(&self, statement: &Statement, user: &str) -> Result<Outcome> {
        self.coordinator.health().check_writable()?;
        match statement {
            Statement::CreateRole(create) => roles::create_role(self, create).await,
            Statement::AlterRole { name, operation } => roles::alter_role(self, name, operation).await,
            Statement::Drop { object_type: ObjectType::Role, names, if_exists, .. } => {
                roles::drop_roles(self, names, *if_exists, user).await
            }
            Statement::Grant(grant) => roles::grant(self, grant).await,
            Statement::Revoke(revoke) => roles::revoke(self, revoke).await,
            other => Err(SqlError::internal(format!("not a role statement: {other}"))),
        }
    }

    /// The relation a CREATE TABLE / VIEW / SOURCE / SINK names, if it
    /// exists (asked before and after the statement runs, to tell whether
    /// it created it).
    pub fn created_relation(&self, statement: &Statement) -> Option<RelationId> {
        match statement {
            Statement::CreateTable(CreateTable { name, .. }) | Statement::CreateView(CreateView { name, .. }) => {
                self.catalog.by_name(&ddl::object_name(self, name)).map(|r| r.id)
            }
            _ => None,
        }
    }

    /// A relation `user` just created is theirs.
    pub async fn record_creator(&self, relation: RelationId, user: &str) -> Result<()> {
        roles::record_owner(self, relation, user).await
    }

    /// Executes a statement the engine owns. `plan` and `params` come from
    /// the extended protocol (a prepared statement's plan and its bound
    /// parameters).
    pub async fn execute(
        &self,
        statement: &Statement,
        plan: Option<&LogicalPlan>,
        params: Option<&ParamValues>,
    ) -> Result<Outcome> {
        snapshot::begin_statement();
        // A read-only server refuses a write before it changes anything,
        // the catalog in memory included (see `db::store_health`).
        if !matches!(statement, Statement::ShowTables { .. } | Statement::ShowViews { .. } | Statement::Explain { .. })
            && !self.recovering()
        {
            self.coordinator.health().check_writable()?;
        }
        let outcome = match statement {
            Statement::CreateTable(create) => create_table::create_table(self, create).await,
            Statement::CreateView(create) => ddl::create_view(self, create).await,
            Statement::Drop { object_type, if_exists, names, cascade, .. } => {
                ddl::drop(self, *object_type, *if_exists, names, *cascade).await
            }
            Statement::Insert(insert) => dml::insert(self, insert, plan, params).await,
            Statement::Update(_) | Statement::Delete(_) => dml::update_or_delete(self, statement, plan, params).await,
            Statement::ShowTables { .. } => self.show(RelationKind::Table),
            Statement::ShowViews { materialized, .. } => {
                self.show(if *materialized { RelationKind::MaterializedView } else { RelationKind::View })
            }
            Statement::Comment { object_type, object_name, comment, if_exists } => {
                comment::comment(self, *object_type, object_name, comment.as_deref(), *if_exists).await
            }
            Statement::Explain { statement: inner, .. } => match inner.as_ref() {
                Statement::CreateView(create) => explain::explain_view(self, create).await,
                other => Err(SqlError::internal(format!("EXPLAIN not handled by the engine: {other}"))),
            },
            other => Err(SqlError::internal(format!("statement not handled by the engine: {other}"))),
        };
        // Whatever this statement wrote, the next one reads afresh.
        snapshot::begin_statement();
        outcome
    }

    fn show(&self, kind: RelationKind) -> Result<Outcome> {
        let mut names: Vec<String> = self.catalog.list(kind).iter().map(|r| r.name.to_string()).collect();
        names.sort();
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(names))])?;
        Ok(Outcome::Rows(self.ctx.read_batch(batch)?))
    }
}

/// Registers the session functions of this layer (`current_user`,
/// `session_user`: they read the running statement's session).
fn install_session_functions(ctx: &SessionContext) {
    for udf in session_user::udfs() {
        ctx.register_udf(udf);
    }
}
