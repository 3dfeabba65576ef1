//! Roles and privileges: who may log in (and with which password), who is a
//! superuser, who owns each relation, and what each role was granted.
//!
//! This module owns the records and their storage; deciding what a
//! statement needs is `sql::authorize`, running CREATE ROLE / GRANT is
//! `sql::roles`, and checking passwords at login is `server::auth`.
//!
//! Stored in the state store, each record under a key of its own so a
//! change writes one small value in an epoch like any other:
//! - `a` + role name: the role (flags, password verifiers, schemas it may
//!   create in), as JSON;
//! - `g` + relation id: the relation's owner and grants, as JSON (deleted
//!   with the relation, so a later relation never inherits them).
//!
//! Passwords are never stored: a role keeps a SCRAM-SHA-256 salted password
//! (random salt, 4096 iterations, what pgwire's SCRAM exchange needs) and
//! Postgres's md5 verifier (`md5(password || user)`), as Postgres does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::error::{Result, SqlError, sqlstate};
use crate::stream::RelationId;

/// The role created with every data directory, a superuser.
pub const BOOTSTRAP_ROLE: &str = "freshet";

pub use crate::state::{ACL_PREFIX, ROLE_PREFIX, acl_key, role_key};

/// Table privileges, as bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    Select = 1,
    Insert = 2,
    Update = 4,
    Delete = 8,
}

impl Privilege {
    pub const ALL: [Privilege; 4] = [Privilege::Select, Privilege::Insert, Privilege::Update, Privilege::Delete];

    pub fn keyword(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }

    /// The letter Postgres's ACL strings (`relacl`) use.
    pub fn acl_letter(self) -> char {
        match self {
            Privilege::Select => 'r',
            Privilege::Insert => 'a',
            Privilege::Update => 'w',
            Privilege::Delete => 'd',
        }
    }

    pub fn all_bits() -> u8 {
        Self::ALL.iter().fold(0, |bits, p| bits | *p as u8)
    }
}

/// What a login proves it knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordVerifier {
    pub scram_salt: Vec<u8>,
    pub scram_salted_password: Vec<u8>,
    /// `md5(password || user)` in hex, as in Postgres's md5 method.
    pub md5: String,
}

/// SCRAM iterations (Postgres's default `scram_iterations`).
pub const SCRAM_ITERATIONS: usize = 4096;

impl PasswordVerifier {
    pub fn new(user: &str, password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        let scram_salted_password =
            pgwire::api::auth::sasl::scram::gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        let md5 = format!("{:x}", md5::compute(format!("{password}{user}")));
        Self { scram_salt: salt.to_vec(), scram_salted_password, md5 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    pub login: bool,
    pub password: Option<PasswordVerifier>,
    /// Schemas this role was granted CREATE on.
    pub create_in: BTreeSet<String>,
}

impl Role {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), superuser: false, login: false, password: None, create_in: BTreeSet::new() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let password = self.password.as_ref().map(|p| {
            json!({"scram_salt": b64(&p.scram_salt), "scram_salted_password": b64(&p.scram_salted_password), "md5": p.md5})
        });
        json!({
            "superuser": self.superuser,
            "login": self.login,
            "password": password,
            "create_in": self.create_in.iter().collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    pub fn decode(name: &str, bytes: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok();
        let password = match value.get("password") {
            None | Some(Value::Null) => None,
            Some(p) => Some(PasswordVerifier {
                scram_salt: b64(p.get("scram_salt")?)?,
                scram_salted_password: b64(p.get("scram_salted_password")?)?,
                md5: p.get("md5")?.as_str()?.to_string(),
            }),
        };
        let create_in = value
            .get("create_in")?
            .as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<BTreeSet<_>>>()?;
        Some(Self {
            name: name.to_string(),
            superuser: value.get("superuser")?.as_bool()?,
            login: value.get("login")?.as_bool()?,
            password,
            create_in,
        })
    }
}

/// A relation's owner and what others were granted on it. The grantee
/// `public` stands for every role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    pub owner: String,
    pub grants: BTreeMap<String, u8>,
}

impl Acl {
    pub fn encode(&self) -> Vec<u8> {
        json!({"owner": self.owner, "grants": self.grants}).to_string().into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let grants = value
            .get("grants")?
            .as_object()?
            .iter()
            .map(|(role, bits)| Some((role.clone(), u8::try_from(bits.as_u64()?).ok()?)))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Self { owner: value.get("owner")?.as_str()?.to_string(), grants })
    }

    /// Postgres's `relacl` text: `{grantee=letters/owner,…}` (NULL-like
    /// empty when nothing was granted, as for a fresh Postgres table).
    pub fn to_acl_items(&self) -> Vec<String> {
        let letters = |bits: u8| -> String {
            Privilege::ALL.iter().filter(|p| bits & **p as u8 != 0).map(|p| p.acl_letter()).collect()
        };
        let mut items = vec![format!("{}={}/{}", self.owner, letters(Privilege::all_bits()), self.owner)];
        for (grantee, bits) in &self.grants {
            let grantee = if grantee == "public" { "" } else { grantee.as_str() };
            items.push(format!("{grantee}={}/{}", letters(*bits), self.owner));
        }
        items
    }
}

#[derive(Default)]
struct State {
    roles: BTreeMap<String, Role>,
    acls: BTreeMap<RelationId, Acl>,
}

/// The roles and relation privileges of one server.
pub struct AccessControl {
    state: RwLock<State>,
    /// Trust authentication: a user name that is no role logs in as the
    /// bootstrap superuser would (local development, as before roles).
    unknown_users_are_superusers: AtomicBool,
}

impl Default for AccessControl {
    fn default() -> Self {
        let mut bootstrap = Role::new(BOOTSTRAP_ROLE);
        bootstrap.superuser = true;
        bootstrap.login = true;
        let mut state = State::default();
        state.roles.insert(BOOTSTRAP_ROLE.to_string(), bootstrap);
        Self { state: RwLock::new(state), unknown_users_are_superusers: AtomicBool::new(true) }
    }
}

impl AccessControl {
    pub fn set_unknown_users_are_superusers(&self, yes: bool) {
        self.unknown_users_are_superusers.store(yes, Ordering::Release);
    }

    pub fn role(&self, name: &str) -> Option<Role> {
        self.state.read().roles.get(name).cloned()
    }

    /// Every role, by name.
    pub fn roles(&self) -> Vec<Role> {
        self.state.read().roles.values().cloned().collect()
    }

    pub fn is_superuser(&self, user: &str) -> bool {
        match self.state.read().roles.get(user) {
            Some(role) => role.superuser,
            None => self.unknown_users_are_superusers.load(Ordering::Acquire),
        }
    }

    /// The relation's owner (the bootstrap role for relations created
    /// before roles, or by a superuser that is not a stored role).
    pub fn owner(&self, relation: RelationId) -> String {
        self.state.read().acls.get(&relation).map(|a| a.owner.clone()).unwrap_or_else(|| BOOTSTRAP_ROLE.to_string())
    }

    pub fn acl(&self, relation: RelationId) -> Option<Acl> {
        self.state.read().acls.get(&relation).cloned()
    }

    pub fn owns(&self, user: &str, relation: RelationId) -> bool {
        self.is_superuser(user) || self.owner(relation) == user
    }

    /// Whether `user` holds `privilege` on the relation: as superuser, as
    /// owner, by a grant to it or to `public`.
    pub fn may(&self, user: &str, relation: RelationId, privilege: Privilege) -> bool {
        if self.owns(user, relation) {
            return true;
        }
        let state = self.state.read();
        let Some(acl) = state.acls.get(&relation) else { return false };
        [user, "public"].iter().any(|who| acl.grants.get(*who).is_some_and(|bits| bits & privilege as u8 != 0))
    }

    pub fn may_create_in(&self, user: &str, schema: &str) -> bool {
        self.is_superuser(user) || self.state.read().roles.get(user).is_some_and(|r| r.create_in.contains(schema))
    }

    /// Puts a role in place (after its record was written).
    pub fn set_role(&self, role: Role) {
        self.state.write().roles.insert(role.name.clone(), role);
    }

    pub fn remove_role(&self, name: &str) {
        self.state.write().roles.remove(name);
    }

    pub fn set_acl(&self, relation: RelationId, acl: Acl) {
        self.state.write().acls.insert(relation, acl);
    }

    pub fn forget_relation(&self, relation: RelationId) {
        self.state.write().acls.remove(&relation);
    }

    /// Relations a role owns or holds grants on (DROP ROLE refuses while
    /// any remain, as Postgres does).
    pub fn relations_of(&self, role: &str) -> Vec<RelationId> {
        let state = self.state.read();
        state
            .acls
            .iter()
            .filter(|(_, acl)| acl.owner == role || acl.grants.contains_key(role))
            .map(|(id, _)| *id)
            .collect()
    }

    /// At startup: the stored roles and relation privileges.
    pub fn restore(&self, snapshot: &dyn crate::state::Snapshot) -> Result<()> {
        let mut corrupt = None;
        let mut roles = Vec::new();
        snapshot.scan_prefix(ROLE_PREFIX, &mut |key, value| match key
            .get(1..)
            .and_then(|name| std::str::from_utf8(name).ok())
            .and_then(|name| Role::decode(name, value))
        {
            Some(role) => roles.push(role),
            None => corrupt = Some(key.to_vec()),
        });
        let mut acls = Vec::new();
        snapshot.scan_prefix(ACL_PREFIX, &mut |key, value| {
            let id = key.get(1..5).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
            match (id, Acl::decode(value)) {
                (Some(id), Some(acl)) => acls.push((id, acl)),
                _ => corrupt = Some(key.to_vec()),
            }
        });
        if let Some(key) = corrupt {
            return Err(SqlError::new(sqlstate::IO_ERROR, format!("corrupt access entry {key:?} in the data dir")));
        }
        let mut state = self.state.write();
        for role in roles {
            state.roles.insert(role.name.clone(), role);
        }
        state.acls.extend(acls);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let mut role = Role::new("alice");
        role.login = true;
        role.password = Some(PasswordVerifier::new("alice", "s3cret"));
        role.create_in.insert("public".into());
        assert_eq!(Role::decode("alice", &role.encode()), Some(role.clone()));
        let verifier = role.password.unwrap_or_else(|| PasswordVerifier::new("x", "y"));
        // Postgres's md5 verifier of password "s3cret" for user "alice".
        assert_eq!(verifier.md5, format!("{:x}", md5::compute("s3cretalice")));
        assert_eq!(verifier.scram_salted_password.len(), 32);

        let mut acl = Acl { owner: "alice".into(), grants: BTreeMap::new() };
        acl.grants.insert("bob".into(), Privilege::Select as u8 | Privilege::Insert as u8);
        acl.grants.insert("public".into(), Privilege::Select as u8);
        assert_eq!(Acl::decode(&acl.encode()), Some(acl.clone()));
        assert_eq!(acl.to_acl_items(), vec!["alice=rawd/alice", "bob=ra/alice", "=r/alice"]);
    }

    #[test]
    fn privileges_come_from_ownership_grants_and_public() {
        let access = AccessControl::default();
        access.set_unknown_users_are_superusers(false);
        for name in ["alice", "bob", "carol"] {
            access.set_role(Role::new(name));
        }
        let mut acl = Acl { owner: "alice".into(), grants: BTreeMap::new() };
        acl.grants.insert("bob".into(), Privilege::Insert as u8);
        acl.grants.insert("public".into(), Privilege::Select as u8);
        access.set_acl(7, acl);
        assert!(access.may("alice", 7, Privilege::Delete));
        assert!(access.may("bob", 7, Privilege::Insert));
        assert!(access.may("bob", 7, Privilege::Select));
        assert!(!access.may("bob", 7, Privilege::Update));
        assert!(access.may("carol", 7, Privilege::Select));
        assert!(!access.may("carol", 7, Privilege::Insert));
        assert!(access.may(BOOTSTRAP_ROLE, 7, Privilege::Delete));
        assert!(!access.may("mallory", 7, Privilege::Insert));
        assert!(!access.may("carol", 8, Privilege::Select));
        access.set_unknown_users_are_superusers(true);
        assert!(access.may("mallory", 7, Privilege::Insert));
    }
}
