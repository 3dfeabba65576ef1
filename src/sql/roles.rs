//! CREATE / ALTER / DROP ROLE (and USER, rewritten to ROLE by `syntax`),
//! GRANT and REVOKE: each change is written to the store as an epoch of its
//! own, then put in place in [`crate::catalog::privileges::AccessControl`].
//!
//! Who may run these is decided before they get here (`sql::authorize`).

use datafusion::sql::sqlparser::ast::{
    Action, AlterRoleOperation, CreateRole, Expr, Grant, GrantObjects, Grantee, GranteeName, GranteesType, Ident,
    ObjectName, Password, Privileges, Revoke, RoleOption, Value,
};

use super::{Engine, Outcome};
use crate::catalog::privileges::{Acl, PasswordVerifier, Privilege, Role, acl_key, role_key};
use crate::error::{Result, SqlError, sqlstate};
use crate::state::WriteBatch;

/// Role names as Postgres folds them: unquoted lower-cased.
fn role_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

fn object_role_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part.as_ident().map(role_name).ok_or_else(|| invalid_name(name)),
        _ => Err(invalid_name(name)),
    }
}

fn invalid_name(name: &ObjectName) -> SqlError {
    SqlError::new(sqlstate::SYNTAX_ERROR, format!("invalid role name \"{name}\""))
}

fn undefined_role(name: &str) -> SqlError {
    SqlError::new(sqlstate::UNDEFINED_OBJECT, format!("role \"{name}\" does not exist"))
}

fn reserved(name: &str) -> Result<()> {
    if name == "public" || name == "none" || name.starts_with("pg_") {
        return Err(SqlError::new("42939", format!("role name \"{name}\" is reserved")));
    }
    Ok(())
}

fn password_text(password: &Password) -> Result<Option<String>> {
    match password {
        Password::NullPassword => Ok(None),
        Password::Password(Expr::Value(value)) => match &value.value {
            Value::SingleQuotedString(text) | Value::EscapedStringLiteral(text) => Ok(Some(text.clone())),
            Value::Null => Ok(None),
            other => Err(SqlError::new(sqlstate::SYNTAX_ERROR, format!("a password is a string literal, not {other}"))),
        },
        Password::Password(other) => {
            Err(SqlError::new(sqlstate::SYNTAX_ERROR, format!("a password is a string literal, not {other}")))
        }
    }
}

async fn write(engine: &Engine, batch: WriteBatch) -> Result<()> {
    engine.coordinator.begin().await.write_batch(batch)
}

async fn store_role(engine: &Engine, role: Role) -> Result<()> {
    let mut batch = WriteBatch::default();
    batch.put(role_key(&role.name), role.encode());
    write(engine, batch).await?;
    engine.catalog.access.set_role(role);
    Ok(())
}

pub async fn create_role(engine: &Engine, create: &CreateRole) -> Result<Outcome> {
    let access = &engine.catalog.access;
    for name in &create.names {
        let name = object_role_name(name)?;
        reserved(&name)?;
        if access.role(&name).is_some() {
            if create.if_not_exists {
                continue;
            }
            return Err(SqlError::new("42710", format!("role \"{name}\" already exists")));
        }
        let mut role = Role::new(&name);
        role.login = create.login.unwrap_or(false);
        role.superuser = create.superuser.unwrap_or(false);
        if let Some(password) = &create.password {
            role.password = password_text(password)?.map(|text| PasswordVerifier::new(&name, &text));
        }
        store_role(engine, role).await?;
    }
    Ok(Outcome::Command { tag: "CREATE ROLE", rows: None })
}

pub async fn alter_role(engine: &Engine, name: &Ident, operation: &AlterRoleOperation) -> Result<Outcome> {
    let name = role_name(name);
    let mut role = engine.catalog.access.role(&name).ok_or_else(|| undefined_role(&name))?;
    let AlterRoleOperation::WithOptions { options } = operation else {
        return Err(SqlError::not_supported(format!("ALTER ROLE … {operation}")));
    };
    for option in options {
        match option {
            RoleOption::Login(login) => role.login = *login,
            RoleOption::SuperUser(superuser) => {
                if name == crate::catalog::privileges::BOOTSTRAP_ROLE && !superuser {
                    return Err(SqlError::new(
                        "42501",
                        format!("permission denied to remove superuser from the bootstrap role \"{name}\""),
                    ));
                }
                role.superuser = *superuser
            }
            RoleOption::Password(password) => {
                role.password = password_text(password)?.map(|text| PasswordVerifier::new(&name, &text));
            }
            // Accepted and without effect, as on a single-node server that
            // has no replication or row-level security.
            RoleOption::Inherit(_)
            | RoleOption::CreateDB(_)
            | RoleOption::CreateRole(_)
            | RoleOption::Replication(_)
            | RoleOption::BypassRLS(_)
            | RoleOption::ConnectionLimit(_)
            | RoleOption::ValidUntil(_) => {}
        }
    }
    store_role(engine, role).await?;
    Ok(Outcome::Command { tag: "ALTER ROLE", rows: None })
}

pub async fn drop_roles(engine: &Engine, names: &[ObjectName], if_exists: bool, session_user: &str) -> Result<Outcome> {
    let access = &engine.catalog.access;
    for name in names {
        let name = object_role_name(name)?;
        if access.role(&name).is_none() {
            if if_exists {
                continue;
            }
            return Err(undefined_role(&name));
        }
        if name == crate::catalog::privileges::BOOTSTRAP_ROLE || name == session_user {
            return Err(SqlError::new("55006", format!("role \"{name}\" cannot be dropped: it is in use")));
        }
        let held = access.relations_of(&name);
        if !held.is_empty() {
            let names: Vec<String> =
                held.iter().filter_map(|id| engine.catalog.get(*id)).map(|r| r.name.to_string()).collect();
            return Err(SqlError::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "role \"{name}\" cannot be dropped because some objects depend on it: it owns or holds privileges on {}",
                    names.join(", ")
                ),
            ));
        }
        let mut batch = WriteBatch::default();
        batch.delete(role_key(&name));
        write(engine, batch).await?;
        access.remove_role(&name);
    }
    Ok(Outcome::Command { tag: "DROP ROLE", rows: None })
}

/// The privilege bits a GRANT / REVOKE names on tables.
fn table_privileges(privileges: &Privileges) -> Result<u8> {
    match privileges {
        Privileges::All { .. } => Ok(Privilege::all_bits()),
        Privileges::Actions(actions) => {
            let mut bits = 0;
            for action in actions {
                bits |= match action {
                    Action::Select { .. } => Privilege::Select as u8,
                    Action::Insert { .. } => Privilege::Insert as u8,
                    Action::Update { .. } => Privilege::Update as u8,
                    Action::Delete => Privilege::Delete as u8,
                    other => {
                        return Err(SqlError::new(
                            "0LP01",
                            format!(
                                "invalid privilege type {other} for relation (SELECT, INSERT, UPDATE, DELETE or ALL)"
                            ),
                        ));
                    }
                };
            }
            Ok(bits)
        }
    }
}

fn grantee_names(engine: &Engine, grantees: &[Grantee]) -> Result<Vec<String>> {
    grantees
        .iter()
        .map(|grantee| {
            let name = match (&grantee.grantee_type, &grantee.name) {
                (GranteesType::Public, _) => "public".to_string(),
                (_, Some(GranteeName::ObjectName(name))) => object_role_name(name)?,
                (_, other) => {
                    return Err(SqlError::not_supported(format!(
                        "grantee {}",
                        other.as_ref().map(|n| n.to_string()).unwrap_or_default()
                    )));
                }
            };
            if name != "public" && engine.catalog.access.role(&name).is_none() {
                return Err(undefined_role(&name));
            }
            Ok(name)
        })
        .collect()
}

fn relations(engine: &Engine, names: &[ObjectName]) -> Result<Vec<crate::stream::RelationId>> {
    names
        .iter()
        .map(|name| {
            engine
                .catalog
                .by_name(&super::ddl::object_name(engine, name))
                .map(|r| r.id)
                .ok_or_else(|| SqlError::undefined_table(name))
        })
        .collect()
}

/// Relations and schemas a GRANT / REVOKE is about.
enum Subject {
    Relations(Vec<crate::stream::RelationId>),
    Schemas(Vec<String>),
}

pub(super) fn subject_names(objects: &Option<GrantObjects>) -> Result<(bool, &[ObjectName])> {
    match objects {
        Some(GrantObjects::Tables(names) | GrantObjects::Views(names)) => Ok((true, names)),
        Some(GrantObjects::AllTablesInSchema { schemas }) => Ok((false, schemas)),
        Some(GrantObjects::Schemas(names)) => Ok((false, names)),
        Some(other) => Err(SqlError::not_supported(format!("GRANT / REVOKE on {other}"))),
        None => Err(SqlError::not_supported("GRANT / REVOKE of roles (role membership)")),
    }
}

fn subject(engine: &Engine, objects: &Option<GrantObjects>) -> Result<Subject> {
    if let Some(GrantObjects::AllTablesInSchema { schemas }) = objects {
        let schemas: Vec<String> = schemas.iter().map(|s| s.to_string().trim_matches('"').to_string()).collect();
        let ids = engine.catalog.list_all().iter().filter(|r| schemas.contains(&r.name.schema)).map(|r| r.id).collect();
        return Ok(Subject::Relations(ids));
    }
    let (relations_named, names) = subject_names(objects)?;
    if relations_named {
        return relations(engine, names).map(Subject::Relations);
    }
    names
        .iter()
        .map(|name| {
            let schema = name.to_string().trim_matches('"').to_string();
            let exists = engine.ctx.catalog(super::DATABASE).is_some_and(|c| c.schema(&schema).is_some());
            if !exists {
                return Err(SqlError::new(sqlstate::UNDEFINED_SCHEMA, format!("schema \"{schema}\" does not exist")));
            }
            Ok(schema)
        })
        .collect::<Result<Vec<_>>>()
        .map(Subject::Schemas)
}

fn schema_privilege(privileges: &Privileges) -> Result<bool> {
    match privileges {
        Privileges::All { .. } => Ok(true),
        Privileges::Actions(actions) => {
            let mut create = false;
            for action in actions {
                match action {
                    Action::Create { .. } => create = true,
                    // Every role may already look up names in a schema.
                    Action::Usage => {}
                    other => {
                        return Err(SqlError::new(
                            "0LP01",
                            format!("invalid privilege type {other} for schema (CREATE, USAGE or ALL)"),
                        ));
                    }
                }
            }
            Ok(create)
        }
    }
}

/// GRANT (`revoke = false`) or REVOKE of privileges on relations, or of
/// CREATE on schemas.
async fn change_grants(
    engine: &Engine,
    privileges: &Privileges,
    objects: &Option<GrantObjects>,
    grantees: &[Grantee],
    revoke: bool,
) -> Result<()> {
    let access = &engine.catalog.access;
    let grantees = grantee_names(engine, grantees)?;
    let mut batch = WriteBatch::default();
    match subject(engine, objects)? {
        Subject::Relations(ids) => {
            let bits = table_privileges(privileges)?;
            let mut changed = Vec::new();
            for id in ids {
                let mut acl = access.acl(id).unwrap_or_else(|| Acl { owner: access.owner(id), ..Acl::default() });
                for grantee in &grantees {
                    let held = acl.grants.get(grantee).copied().unwrap_or(0);
                    let now = if revoke { held & !bits } else { held | bits };
                    if now == 0 {
                        acl.grants.remove(grantee);
                    } else {
                        acl.grants.insert(grantee.clone(), now);
                    }
                }
                batch.put(acl_key(id).to_vec(), acl.encode());
                changed.push((id, acl));
            }
            write(engine, batch).await?;
            for (id, acl) in changed {
                access.set_acl(id, acl);
            }
        }
        Subject::Schemas(schemas) => {
            if !schema_privilege(privileges)? {
                return Ok(());
            }
            let mut changed = Vec::new();
            for grantee in &grantees {
                if grantee == "public" {
                    return Err(SqlError::not_supported("GRANT CREATE ON SCHEMA … TO PUBLIC"));
                }
                let Some(mut role) = access.role(grantee) else { return Err(undefined_role(grantee)) };
                for schema in &schemas {
                    if revoke {
                        role.create_in.remove(schema);
                    } else {
                        role.create_in.insert(schema.clone());
                    }
                }
                batch.put(role_key(&role.name), role.encode());
                changed.push(role);
            }
            write(engine, batch).await?;
            for role in changed {
                access.set_role(role);
            }
        }
    }
    Ok(())
}

pub async fn grant(engine: &Engine, grant: &Grant) -> Result<Outcome> {
    change_grants(engine, &grant.privileges, &grant.objects, &grant.grantees, false).await?;
    Ok(Outcome::Command { tag: "GRANT", rows: None })
}

pub async fn revoke(engine: &Engine, revoke: &Revoke) -> Result<Outcome> {
    change_grants(engine, &revoke.privileges, &revoke.objects, &revoke.grantees, true).await?;
    Ok(Outcome::Command { tag: "REVOKE", rows: None })
}

/// Makes `owner` the owner of a relation it just created (relations made
/// by the bootstrap role, or before roles existed, need no record).
pub async fn record_owner(engine: &Engine, relation: crate::stream::RelationId, owner: &str) -> Result<()> {
    if owner == crate::catalog::privileges::BOOTSTRAP_ROLE || engine.catalog.access.role(owner).is_none() {
        return Ok(());
    }
    let acl = Acl { owner: owner.to_string(), ..Acl::default() };
    let mut batch = WriteBatch::default();
    batch.put(acl_key(relation).to_vec(), acl.encode());
    write(engine, batch).await?;
    engine.catalog.access.set_acl(relation, acl);
    Ok(())
}
