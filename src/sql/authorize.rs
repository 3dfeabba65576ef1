//! What a statement needs of the session's role, checked before it runs:
//! SELECT on every relation it reads, INSERT / UPDATE / DELETE on the one it
//! writes, CREATE on the schema it creates in, ownership to drop, alter or
//! comment on a relation and to grant on it, superuser for roles, schemas and
//! anything else that reaches beyond relations. A denial is SQLSTATE 42501.
//!
//! Names that are no Freshet relation (pg_catalog, information_schema,
//! freshet_catalog, CTE names) need nothing here: the catalogs are readable
//! by every role, as in Postgres.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CopySource, CreateTable, CreateView, Expr, FunctionArg, FunctionArgExpr, Insert, ObjectName, ObjectType, Statement,
    TableFactor, TableObject, Visit, Visitor,
};

use super::Engine;
use crate::catalog::privileges::Privilege;
use crate::catalog::{QualifiedName, Relation};
use crate::error::{Result, SqlError};

pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

fn denied(message: String) -> SqlError {
    SqlError::new(INSUFFICIENT_PRIVILEGE, message)
}

fn relation(engine: &Engine, name: &ObjectName) -> Option<std::sync::Arc<Relation>> {
    engine.catalog.by_name(&super::ddl::object_name(engine, name))
}

/// Every relation name the statement mentions where a table may stand
/// (FROM items, DML targets), once per mention, and the relations handed
/// to table functions by name (`TUMBLE(bids, …)`).
fn mentioned(statement: &Statement) -> Vec<ObjectName> {
    struct Mentions(Vec<ObjectName>);
    impl Visitor for Mentions {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            self.0.push(relation.clone());
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { args: Some(args), .. } = factor {
                for arg in &args.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) = arg {
                        match expr {
                            Expr::Identifier(ident) => self.0.push(ObjectName::from(vec![ident.clone()])),
                            Expr::CompoundIdentifier(idents) => self.0.push(ObjectName::from(idents.clone())),
                            _ => {}
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut mentions = Mentions(Vec::new());
    let _ = statement.visit(&mut mentions);
    mentions.0
}

/// Requires `privilege` on a relation (a table, source, view, materialized
/// view or sink) for `user`.
pub fn require(engine: &Engine, user: &str, relation: &Relation, privilege: Privilege) -> Result<()> {
    if engine.catalog.access.may(user, relation.id, privilege) {
        return Ok(());
    }
    Err(denied(format!("permission denied for {} {}", noun(relation), relation.name.name)))
}

fn noun(relation: &Relation) -> &'static str {
    use crate::catalog::RelationKind;
    match relation.kind {
        RelationKind::View => "view",
        RelationKind::MaterializedView => "materialized view",
        _ => "table",
    }
}

/// SELECT on every mentioned relation except `skip_once` (the statement's
/// write target, which needs its own privilege), taken out once.
fn require_reads(engine: &Engine, user: &str, statement: &Statement, skip_once: Option<&QualifiedName>) -> Result<()> {
    let mut skipped = false;
    for name in mentioned(statement) {
        let Some(relation) = relation(engine, &name) else { continue };
        if !skipped && skip_once.is_some_and(|target| *target == relation.name) {
            skipped = true;
            continue;
        }
        require(engine, user, &relation, Privilege::Select)?;
    }
    Ok(())
}

fn require_owner(engine: &Engine, user: &str, name: &ObjectName) -> Result<()> {
    let Some(relation) = relation(engine, name) else { return Ok(()) };
    if engine.catalog.access.owns(user, relation.id) {
        return Ok(());
    }
    Err(denied(format!("must be owner of {} {}", noun(&relation), relation.name.name)))
}

fn require_superuser(engine: &Engine, user: &str, what: &str) -> Result<()> {
    if engine.catalog.access.is_superuser(user) {
        return Ok(());
    }
    Err(denied(format!("permission denied to {what}: only a superuser may")))
}

fn require_create(engine: &Engine, user: &str, name: &ObjectName) -> Result<()> {
    let schema = super::ddl::object_name(engine, name).schema;
    if engine.catalog.access.may_create_in(user, &schema) {
        return Ok(());
    }
    Err(denied(format!("permission denied for schema {schema}")))
}

/// The target of a DML statement, if it is a Freshet relation.
fn target_of(engine: &Engine, statement: &Statement) -> Option<std::sync::Arc<Relation>> {
    match statement {
        Statement::Insert(Insert { table: TableObject::TableName(name), .. }) => relation(engine, name),
        Statement::Update(update) => match &update.table.relation {
            TableFactor::Table { name, .. } => relation(engine, name),
            _ => None,
        },
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                datafusion::sql::sqlparser::ast::FromTable::WithFromKeyword(t)
                | datafusion::sql::sqlparser::ast::FromTable::WithoutKeyword(t) => t,
            };
            match tables.first().map(|t| &t.relation) {
                Some(TableFactor::Table { name, .. }) => relation(engine, name),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Checks that `user` may run `statement`.
pub fn check(engine: &Engine, user: &str, statement: &Statement) -> Result<()> {
    let access = &engine.catalog.access;
    if access.is_superuser(user) {
        return Ok(());
    }
    match statement {
        Statement::Query(_) => require_reads(engine, user, statement, None),
        Statement::Insert(insert) => {
            let target = target_of(engine, statement);
            if let Some(target) = &target {
                require(engine, user, target, Privilege::Insert)?;
                if insert.on.is_some() {
                    require(engine, user, target, Privilege::Update)?;
                }
            }
            require_reads(engine, user, statement, target.as_ref().map(|t| &t.name))
        }
        Statement::Update(update) => {
            let target = target_of(engine, statement);
            if let Some(target) = &target {
                require(engine, user, target, Privilege::Update)?;
                // Reading the target's rows to choose them needs SELECT.
                if update.selection.is_some() {
                    require(engine, user, target, Privilege::Select)?;
                }
            }
            require_reads(engine, user, statement, target.as_ref().map(|t| &t.name))
        }
        Statement::Delete(delete) => {
            let target = target_of(engine, statement);
            if let Some(target) = &target {
                require(engine, user, target, Privilege::Delete)?;
                if delete.selection.is_some() {
                    require(engine, user, target, Privilege::Select)?;
                }
            }
            require_reads(engine, user, statement, target.as_ref().map(|t| &t.name))
        }
        Statement::Truncate(truncate) => {
            for table in &truncate.table_names {
                if let Some(target) = relation(engine, &table.name) {
                    require(engine, user, &target, Privilege::Delete)?;
                }
            }
            Ok(())
        }
        Statement::Copy { source, to, .. } => match source {
            CopySource::Table { table_name, .. } => match relation(engine, table_name) {
                Some(target) => require(engine, user, &target, if *to { Privilege::Select } else { Privilege::Insert }),
                None => Ok(()),
            },
            CopySource::Query(_) => require_reads(engine, user, statement, None),
        },
        Statement::Explain { statement: inner, .. } => check(engine, user, inner),
        Statement::Declare { stmts } => {
            for declare in stmts {
                if let Some(query) = &declare.for_query {
                    check(engine, user, &Statement::Query(query.clone()))?;
                }
            }
            Ok(())
        }
        Statement::Prepare { statement: inner, .. } => check(engine, user, inner),
        Statement::CreateTable(CreateTable { name, .. }) | Statement::CreateView(CreateView { name, .. }) => {
            require_create(engine, user, name)?;
            // A view's owner must be able to read what it reads.
            require_reads(engine, user, statement, None)
        }
        Statement::Drop { object_type, names, .. } => match object_type {
            ObjectType::Table | ObjectType::View | ObjectType::MaterializedView => {
                names.iter().try_for_each(|name| require_owner(engine, user, name))
            }
            ObjectType::Role => require_superuser(engine, user, "drop roles"),
            other => require_superuser(engine, user, &format!("drop a {other}")),
        },
        Statement::Comment { object_name, .. } => require_owner(engine, user, object_name),
        Statement::AlterTable(alter) => require_owner(engine, user, &alter.name),
        Statement::AlterRole { name, operation } => {
            use datafusion::sql::sqlparser::ast::{AlterRoleOperation, RoleOption};
            // Any role may change its own password.
            let own_password = matches!(operation, AlterRoleOperation::WithOptions { options }
                if options.iter().all(|o| matches!(o, RoleOption::Password(_))));
            let target = if name.quote_style.is_some() { name.value.clone() } else { name.value.to_lowercase() };
            if own_password && target == user {
                return Ok(());
            }
            require_superuser(engine, user, "alter roles")
        }
        Statement::CreateRole(_) => require_superuser(engine, user, "create roles"),
        Statement::Grant(datafusion::sql::sqlparser::ast::Grant { objects, .. })
        | Statement::Revoke(datafusion::sql::sqlparser::ast::Revoke { objects, .. }) => {
            match super::roles::subject_names(objects) {
                // The owner of a relation grants on it.
                Ok((true, names)) => names.iter().try_for_each(|name| require_owner(engine, user, name)),
                _ => require_superuser(engine, user, "grant on schemas"),
            }
        }
        // Session state, transactions, cursors, catalog listings.
        Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Execute { .. } => Ok(()),
        other => {
            let text = other.to_string();
            let head: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            require_superuser(engine, user, &format!("run {head}"))
        }
    }
}

/// SELECT on the relation a SUBSCRIBE follows.
pub fn check_subscribe(engine: &Engine, user: &str, relation: &QualifiedName) -> Result<()> {
    match engine.catalog.by_name(relation) {
        Some(relation) => require(engine, user, &relation, Privilege::Select),
        None => Ok(()),
    }
}
