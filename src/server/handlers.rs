//! The pgwire handler set: startup (the configured authentication method,
//! see `auth`), simple and extended query handling (datafusion-postgres
//! with our hooks, privileges checked first), errors with SQLSTATEs, and
//! query cancellation.

use std::borrow::Cow;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::DfSessionService;
use futures::Sink;
use pgwire::api::Type;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::copy::CopyInHandler;
use super::errors::SqlStateErrorHandler;
use super::hook::StatementHook;
use super::pg_text::postgres_text;
use super::subscribe;
use crate::sql::Engine;
use crate::sql::command::{self, Command, SubscribeCommand};
use pgwire::api::portal::Portal;

pub struct FreshetHandlers {
    extended: Arc<FreshetExtendedQuery>,
    copy: Arc<CopyInHandler>,
    simple: Arc<FreshetSimpleQuery>,
    auth: super::auth::AuthMethod,
    engine: Arc<Engine>,
    connections: Arc<ConnectionManager>,
    cancel: Arc<DefaultCancelHandler>,
    /// Open connections, against `--max-connections`.
    open: Arc<super::connection::ConnectionCount>,
}

impl FreshetHandlers {
    pub fn new(
        engine: Arc<Engine>,
        auth: super::auth::AuthMethod,
        open: Arc<super::connection::ConnectionCount>,
    ) -> Self {
        // Under trust, a name that is no role gets in as a superuser (as
        // every client did before roles); with passwords only roles log in.
        engine.catalog.access.set_unknown_users_are_superusers(auth == super::auth::AuthMethod::Trust);
        let ctx = Arc::new(engine.ctx.clone());
        let engine_for_streams = engine.clone();
        let copy = Arc::new(CopyInHandler::new(engine.clone()));
        // Ours first (it routes every statement: see `server::hook`); then
        // datafusion-postgres' own (SET/SHOW of what it reports, cursors).
        let mut hooks: Vec<Arc<dyn datafusion_postgres::QueryHook>> =
            vec![Arc::new(StatementHook { engine: engine.clone() })];
        hooks.extend([
            Arc::new(datafusion_postgres::hooks::cursor::CursorStatementHook)
                as Arc<dyn datafusion_postgres::QueryHook>,
            Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
        ]);
        let session = Arc::new(DfSessionService::new_with_hooks(ctx, hooks));
        let connections = Arc::new(ConnectionManager::new());
        Self {
            simple: Arc::new(FreshetSimpleQuery {
                inner: session.clone(),
                copy: copy.clone(),
                engine: engine_for_streams.clone(),
            }),
            copy,
            extended: Arc::new(FreshetExtendedQuery::new(session, engine_for_streams)),
            auth,
            engine,
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
            open,
        }
    }
}

impl PgWireServerHandlers for FreshetHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.simple.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.extended.clone()
    }
    /// Called once per connection: SCRAM's handler holds the exchange's
    /// state, so every connection needs its own.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(super::auth::Startup::new(self.auth, &self.engine.catalog, &self.connections, &self.open))
    }
    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.copy.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrorHandler)
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// Simple-query handling: Freshet's own bare statements that no SQL parser
/// knows (`FLUSH`) and COPY FROM STDIN, then everything else through
/// datafusion-postgres.
pub struct FreshetSimpleQuery {
    inner: Arc<DfSessionService>,
    copy: Arc<CopyInHandler>,
    engine: Arc<Engine>,
}

#[async_trait]
impl SimpleQueryHandler for FreshetSimpleQuery {
    /// SUBSCRIBE and COPY (SUBSCRIBE …) stream their rows themselves;
    /// everything else goes the usual way.
    async fn on_query<C>(&self, client: &mut C, query: pgwire::messages::simplequery::Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::timeout::busy();
        let answered = self.answer_query(client, query).await;
        super::timeout::answered(client);
        answered
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let deadline = super::timeout::deadline(client);
        let responses = super::timeout::run_until(deadline, self.run_statements(client, query)).await?;
        Ok(responses.into_iter().map(|response| super::timeout::rows_until(response, deadline)).collect())
    }
}

impl FreshetSimpleQuery {
    /// One simple Query message, answered in full (see `on_query`).
    async fn answer_query<C>(&self, client: &mut C, query: pgwire::messages::simplequery::Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::transaction::end_failed_commit(client);
        // Before any parser builds a tree of it (see `sql::limits`).
        crate::sql::limits::check_statement_depth(&query.query).map_err(super::errors::to_pgwire)?;
        // What streams, speaks COPY or ends a transaction block is answered
        // here, in place of pgwire's query handling; a malformed one is
        // reported by `run_statements`, as any statement's error is.
        match command::parse(&query.query) {
            Ok(Command::Subscription(command @ (SubscribeCommand::Subscribe(_) | SubscribeCommand::Copy { .. }))) => {
                return subscribe::stream(&self.engine, client, command).await;
            }
            Ok(Command::CopyOut(statement, copy)) => {
                return super::copy_out::serve(&self.engine, client, &statement, copy).await;
            }
            Ok(Command::Commit) => {
                if let Some(response) = super::transaction::simple_commit(&self.engine, client).await {
                    return response;
                }
            }
            _ => {}
        }
        self._on_query(client, query).await
    }

    /// The statements of one simple Query message (see `do_query`).
    async fn run_statements<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let standard = standard_sql(&self.engine, client, query)?;
        let query = standard.as_ref();
        match command::parse(query).map_err(super::errors::to_pgwire)? {
            // Subscription cursors (DECLARE … FOR SUBSCRIBE, FETCH, CLOSE);
            // FETCH and CLOSE of other cursors go on to DataFusion.
            Command::Subscription(command) => {
                let text = pgwire::api::portal::Format::UnifiedText;
                if let Some(served) = subscribe::serve_cursor_command(&self.engine, client, &command, &text).await {
                    return Ok(vec![postgres_text(served?.1)]);
                }
            }
            // Every DML statement returns only after its epoch committed, so
            // there is never anything to wait for.
            Command::Flush => return Ok(vec![Response::Execution(Tag::new("FLUSH"))]),
            Command::Copy(statement) | Command::CopyOut(statement, _) => {
                let user = super::connection::session_user(client);
                crate::sql::authorize::check(&self.engine, &user, &statement).map_err(super::errors::to_pgwire)?;
                return Ok(vec![self.copy.start(client.socket_addr(), &statement)?]);
            }
            Command::Commit | Command::Statements => {}
        }
        // Several statements: run them one by one so that, as in Postgres,
        // the results of those before a failing one still reach the client.
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        if let Ok(statements) = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, query)
            && statements.len() > 1
        {
            let mut responses = Vec::with_capacity(statements.len());
            for statement in statements {
                match SimpleQueryHandler::do_query(self.inner.as_ref(), client, &statement.to_string()).await {
                    Ok(mut results) => responses.append(&mut results),
                    Err(error) => {
                        responses.push(Response::Error(Box::new(super::errors::error_info(error))));
                        break;
                    }
                }
            }
            return Ok(responses.into_iter().map(postgres_text).collect());
        }
        let responses = match SimpleQueryHandler::do_query(self.inner.as_ref(), client, query).await {
            // Postgres expressions DataFusion lacks, rewritten into ones it
            // has; only after a failure, as datafusion-postgres replaces
            // some catalog queries whole when it sees them as sent.
            Err(error) if crate::pg_catalog::compat::lacks_function(&error.to_string()) => {
                match crate::pg_catalog::compat::rewrite(query) {
                    Some(compatible) => SimpleQueryHandler::do_query(self.inner.as_ref(), client, &compatible).await?,
                    None => return Err(error),
                }
            }
            other => other?,
        };
        Ok(responses.into_iter().map(postgres_text).collect())
    }
}

/// Extended-protocol handling: datafusion-postgres (with our hook), with
/// result text corrected to what Postgres prints.
pub struct FreshetExtendedQuery {
    inner: Arc<DfSessionService>,
    parser: Arc<FreshetQueryParser>,
    engine: Arc<Engine>,
}

impl FreshetExtendedQuery {
    fn new(inner: Arc<DfSessionService>, engine: Arc<Engine>) -> Self {
        let parser = Arc::new(FreshetQueryParser { inner: inner.query_parser(), engine: engine.clone() });
        Self { inner, parser, engine }
    }
}

/// datafusion-postgres' parser, after Freshet's own clauses are rewritten
/// into standard SQL (as for simple queries).
pub struct FreshetQueryParser {
    inner: Arc<datafusion_postgres::Parser>,
    engine: Arc<Engine>,
}

/// The text DataFusion is given for `sql`, on both protocols: Freshet's
/// own clauses (WATERMARK FOR, EMIT ON WINDOW CLOSE, …) rewritten into
/// standard SQL, `'name'::regclass` into catalog lookups, and names
/// resolved along the session's search_path.
/// Most statements need none of it and come back borrowed, uncopied.
fn standard_sql<'a, C: ClientInfo + ?Sized>(engine: &Engine, client: &C, sql: &'a str) -> PgWireResult<Cow<'a, str>> {
    let mut text = Cow::Borrowed(sql);
    if let Some(rewritten) = crate::sql::syntax::rewrite(&text).map_err(super::errors::to_pgwire)? {
        text = Cow::Owned(rewritten);
    }
    if let Some(catalogs) = crate::pg_catalog::compat::regclass(&text) {
        text = Cow::Owned(catalogs);
    }
    if let Some(resolved) = resolve_names(engine, client, &text) {
        text = Cow::Owned(resolved);
    }
    Ok(text)
}

/// `sql` with clients' own search-path subqueries replaced by the
/// session's schemas and unqualified names resolved along its search_path
/// (`None` if neither applies; see `sql::search_path`).
fn resolve_names<C: ClientInfo + ?Sized>(engine: &Engine, client: &C, sql: &str) -> Option<String> {
    use crate::sql::search_path;
    let set = client.metadata().get("search_path").cloned();
    // Most statements need neither: no work for them on every round trip.
    if set.is_none() && !sql.contains("current_setting('search_path')") {
        return None;
    }
    let path = set.clone().unwrap_or_else(|| search_path::DEFAULT.to_string());
    let schemas = search_path::schemas(&path, &super::connection::session_user(client));
    let expanded = search_path::expand_path_subqueries(sql, &schemas);
    let sql = expanded.as_deref().unwrap_or(sql);
    let qualified = match set {
        Some(_) => search_path::qualify(sql, &schemas, &search_path::CatalogNames(&engine.ctx)),
        None => None,
    };
    qualified.or(expanded)
}

#[async_trait]
impl QueryParser for FreshetQueryParser {
    type Statement = <datafusion_postgres::Parser as QueryParser>::Statement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        crate::sql::limits::check_statement_depth(sql).map_err(super::errors::to_pgwire)?;
        if let Some(parsed) = command::subscription(sql) {
            let command = parsed.map_err(super::errors::to_pgwire)?;
            if let Some(statement) = subscription_statement(client, sql, &command)? {
                return Ok(Some(statement));
            }
        }
        let standard = standard_sql(&self.engine, client, sql)?;
        let sql = standard.as_ref();
        match self.inner.parse_sql(client, sql, types).await {
            Err(error) if crate::pg_catalog::compat::lacks_function(&error.to_string()) => {
                match crate::pg_catalog::compat::rewrite(sql) {
                    Some(compatible) => self.inner.parse_sql(client, &compatible, types).await,
                    None => Err(error),
                }
            }
            other => other,
        }
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        column_format: Option<&pgwire::api::portal::Format>,
    ) -> PgWireResult<Vec<pgwire::api::results::FieldInfo>> {
        use datafusion::sql::sqlparser::ast::Statement as Ast;
        // INSERT / UPDATE / DELETE describe no rows (NoData), as in
        // Postgres; DataFusion's DML plans have a count column, which makes
        // drivers such as pgjdbc expect a result set.
        if let Some((Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_), _)) = &statement.1 {
            return Ok(Vec::new());
        }
        // SHOW TABLES / SHOW [MATERIALIZED] VIEWS are answered by the engine
        // (one `name` column); their parse-time plan has no columns, and a
        // client told of none cannot read the rows that come.
        if let Some((Ast::ShowTables { .. } | Ast::ShowViews { .. }, _)) = &statement.1 {
            let schema = datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new(
                "name",
                datafusion::arrow::datatypes::DataType::Utf8,
                false,
            )]);
            let format = column_format.unwrap_or(&pgwire::api::portal::Format::UnifiedText);
            return datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields(&schema, format, None);
        }
        self.inner.get_result_schema(statement, column_format)
    }
}

#[async_trait]
impl ExtendedQueryHandler for FreshetExtendedQuery {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = FreshetQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::timeout::busy();
        let deadline = super::timeout::deadline(client);
        let response = super::timeout::run_until(deadline, self.run_portal(client, portal, max_rows)).await?;
        Ok(super::timeout::rows_until(response, deadline))
    }

    /// As pgwire's, except that a statement with parameters and no result
    /// columns is described with NoData, as Postgres does (pgwire sends an
    /// empty RowDescription, which makes pgjdbc expect a result set from
    /// an INSERT run through a named statement).
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::store::Entry;
        use pgwire::messages::data::{NoData, ParameterDescription};
        if message.target_type == pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(Entry::Value(statement)) = client.portal_store().get_statement(name) {
                let described = self.do_describe_statement(client, &statement).await?;
                if described.fields.is_empty() {
                    let oids = described.parameters.iter().map(|t| t.oid()).collect();
                    futures::SinkExt::send(
                        client,
                        PgWireBackendMessage::ParameterDescription(ParameterDescription::new(oids)),
                    )
                    .await?;
                    futures::SinkExt::send(client, PgWireBackendMessage::NoData(NoData::default())).await?;
                    return Ok(());
                }
            }
        }
        self._on_describe(client, message).await
    }

    /// As pgwire's, after ending a block whose COMMIT failed (see
    /// `transaction::end_failed_commit`).
    async fn on_sync<C>(&self, client: &mut C, _message: pgwire::messages::extendedquery::Sync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::transaction::end_failed_commit(client);
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        let status = client.transaction_status();
        futures::SinkExt::send(
            client,
            PgWireBackendMessage::ReadyForQuery(pgwire::messages::response::ReadyForQuery::new(status)),
        )
        .await?;
        futures::SinkExt::flush(client).await?;
        super::timeout::answered(client);
        Ok(())
    }
}

impl FreshetExtendedQuery {
    /// One Execute of a portal (see `do_query`).
    async fn run_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<<Self as ExtendedQueryHandler>::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = <Self as ExtendedQueryHandler>::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Subscription cursors, as parsed by `subscription_statement`.
        let (text, _) = &portal.statement.statement;
        if let Some(Ok(command)) = command::subscription(text) {
            let format = &portal.result_column_format;
            if let Some(served) = subscribe::serve_cursor_command(&self.engine, client, &command, format).await {
                return Ok(postgres_text(served?.1));
            }
        }
        let user = super::connection::session_user(client);
        let failed = client.transaction_status() == pgwire::messages::response::TransactionStatus::Error;
        if let Some(response) =
            super::prepared::execute_portal(&self.engine, &user, failed, text, &portal.result_column_format).await
        {
            return response.map(postgres_text);
        }
        let response = ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows).await?;
        Ok(postgres_text(response))
    }
}

/// The prepared form of a subscription statement over the extended
/// protocol: DECLARE … FOR SUBSCRIBE, and FETCH / CLOSE of a subscription
/// cursor (its result columns described by an empty plan of that schema).
/// `None` for FETCH / CLOSE of other cursors, which DataFusion's serve.
fn subscription_statement<C>(
    client: &C,
    sql: &str,
    command: &SubscribeCommand,
) -> PgWireResult<Option<<datafusion_postgres::Parser as QueryParser>::Statement>>
where
    C: ClientInfo + Unpin + Send + Sync,
{
    use SubscribeCommand as Command;
    let client: &(dyn ClientInfo + Send + Sync) = client;
    let schema = match command {
        Command::Subscribe(_) | Command::Copy { .. } => {
            return Err(super::errors::to_pgwire(crate::error::SqlError::not_supported(
                "SUBSCRIBE over the extended protocol (it streams until canceled): use DECLARE c CURSOR FOR SUBSCRIBE … and FETCH ALL c",
            )));
        }
        Command::Declare { .. } => None,
        Command::Fetch { .. } => match subscribe::fetch_schema(client, command) {
            Some(schema) => Some(schema),
            None => return Ok(None),
        },
        Command::Close(Some(name)) if subscribe::Cursors::of(client).get(name).is_some() => None,
        Command::Close(_) => return Ok(None),
    };
    let plan = match schema {
        None => None,
        Some(schema) => {
            let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
            let placeholder = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, "SELECT 1")
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?
                .remove(0);
            let schema = datafusion::common::DFSchema::try_from(schema.as_ref().clone())
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            let plan = datafusion::logical_expr::LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(schema),
            });
            Some((placeholder, plan))
        }
    };
    Ok(Some((sql.to_string(), plan)))
}
