//! Unqualified names resolved along the session's `search_path`, as in
//! Postgres: `SET search_path = analytics, public` makes `SELECT * FROM t`
//! read `analytics.t` if it exists (else `public.t`), and `CREATE TABLE t`
//! create it in `analytics`.
//!
//! DataFusion resolves unqualified names in one default schema for the
//! whole (shared) context, so a session whose path is not the default has
//! its statements rewritten before planning: each unqualified relation name
//! gets the first schema on the path that holds it; names of CTEs are left
//! alone. Sessions on the default path (`"$user", public`) are untouched.
//!
//! Some clients compute the path themselves in SQL that DataFusion does not
//! plan as Postgres does (Grafana splits `current_setting('search_path')`
//! with `generate_series … AS i` and `string_to_array(…) s` in FROM, inside
//! an `IN (subquery)` in the select list): [`expand_path_subqueries`]
//! replaces that subquery by the list of the session's schemas.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Query, Statement, Visit, Visitor, visit_relations_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Postgres's default `search_path`.
pub const DEFAULT: &str = "\"$user\", public";

/// The schemas a `search_path` value names, in order; `$user` stands for
/// the session role's own schema.
pub fn schemas(search_path: &str, user: &str) -> Vec<String> {
    search_path
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            let unquoted = s.trim_matches('"');
            match unquoted {
                "$user" => user.to_string(),
                _ if s.starts_with('"') => unquoted.to_string(),
                _ => unquoted.to_lowercase(),
            }
        })
        .collect()
}

/// What the rewrite asks of the catalog.
pub trait Names {
    fn schema_exists(&self, schema: &str) -> bool;
    fn relation_exists(&self, schema: &str, name: &str) -> bool;
}

/// The names DataFusion's catalog holds (our relations and the system
/// schemas' tables).
pub struct CatalogNames<'a>(pub &'a datafusion::prelude::SessionContext);

impl Names for CatalogNames<'_> {
    fn schema_exists(&self, schema: &str) -> bool {
        self.0.catalog(super::DATABASE).is_some_and(|c| c.schema(schema).is_some())
    }
    fn relation_exists(&self, schema: &str, name: &str) -> bool {
        self.0.catalog(super::DATABASE).and_then(|c| c.schema(schema)).is_some_and(|s| s.table_exist(name))
    }
}

/// `sql` with its unqualified relation names qualified along `path`;
/// `None` when nothing changes (the default path, unparsable text, or no
/// unqualified name found outside `public`).
pub fn qualify(sql: &str, path: &[String], names: &dyn Names) -> Option<String> {
    let path: Vec<&String> = path.iter().filter(|s| s.as_str() != "pg_catalog" && names.schema_exists(s)).collect();
    // Resolving in public only is what DataFusion does already.
    if path.iter().all(|s| s.as_str() == "public") {
        return None;
    }
    // (Not all public, so not empty.)
    let first = path.first()?.as_str();
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    for statement in &mut statements {
        let mut ctes = CteNames::default();
        let _ = statement.visit(&mut ctes);
        // Where new relations go: the first schema on the path.
        match statement {
            Statement::CreateTable(create) if create.name.0.len() == 1 && first != "public" => {
                changed |= prefix(&mut create.name, first);
            }
            Statement::CreateView(create) if create.name.0.len() == 1 && first != "public" => {
                changed |= prefix(&mut create.name, first);
            }
            Statement::Drop { names: dropped, .. } => {
                for name in dropped {
                    changed |= resolve(name, &path, names, &ctes.0);
                }
            }
            _ => {}
        }
        let _ = visit_relations_mut(statement, |name| {
            changed |= resolve(name, &path, names, &ctes.0);
            ControlFlow::<()>::Continue(())
        });
    }
    changed.then(|| statements.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; "))
}

fn bare(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Some(folded(ident)),
        _ => None,
    }
}

fn folded(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

fn prefix(name: &mut ObjectName, schema: &str) -> bool {
    name.0.insert(0, ObjectNamePart::Identifier(Ident::with_quote('"', schema)));
    true
}

/// Qualifies an unqualified name with the first schema on `path` holding
/// it (nothing for CTE names, or names found nowhere).
fn resolve(name: &mut ObjectName, path: &[&String], names: &dyn Names, ctes: &HashSet<String>) -> bool {
    let Some(bare) = bare(name) else { return false };
    if ctes.contains(&bare) {
        return false;
    }
    match path.iter().find(|schema| names.relation_exists(schema, &bare)) {
        Some(schema) if schema.as_str() != "public" => prefix(name, schema),
        _ => false,
    }
}

/// Grafana's subquery listing the search path's schemas (its table and
/// column pickers), matched token by token whatever the spacing.
const PATH_SUBQUERY: &str = "(SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM \
    generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), \
    array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
    string_to_array(current_setting('search_path'),',') s)";

/// `sql` with every subquery that lists the search path's schemas (see
/// [`PATH_SUBQUERY`]) replaced by the literal list of `schemas`; `None`
/// if there is none.
pub fn expand_path_subqueries(sql: &str, schemas: &[String]) -> Option<String> {
    if !sql.contains("current_setting('search_path')") {
        return None;
    }
    let quoted: Vec<String> = schemas.iter().map(|s| format!("'{}'", s.replace('\'', "''"))).collect();
    crate::pg_catalog::compat::replace_tokens(sql, PATH_SUBQUERY, &format!("({})", quoted.join(", ")))
}

/// Every CTE name a statement defines (at any depth).
#[derive(Default)]
struct CteNames(HashSet<String>);

impl Visitor for CteNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.0.insert(folded(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture;

    impl Names for Fixture {
        fn schema_exists(&self, schema: &str) -> bool {
            matches!(schema, "public" | "analytics" | "alice")
        }
        fn relation_exists(&self, schema: &str, name: &str) -> bool {
            matches!(
                (schema, name),
                ("analytics", "t")
                    | ("analytics", "facts")
                    | ("public", "t")
                    | ("public", "only_public")
                    | ("alice", "mine")
            )
        }
    }

    fn path(value: &str) -> Vec<String> {
        schemas(value, "alice")
    }

    #[test]
    fn names_resolve_along_the_path_and_ctes_stay_unqualified() {
        let got = qualify("SELECT * FROM t JOIN only_public USING (x)", &path("analytics, public"), &Fixture);
        assert_eq!(got.as_deref(), Some("SELECT * FROM \"analytics\".t JOIN only_public USING(x)"));
        let got = qualify("WITH t AS (SELECT 1) SELECT * FROM t", &path("analytics, public"), &Fixture);
        assert_eq!(got, None);
        let got = qualify("INSERT INTO t VALUES (1)", &path("analytics"), &Fixture);
        assert_eq!(got.as_deref(), Some("INSERT INTO \"analytics\".t VALUES (1)"));
        let got = qualify("CREATE TABLE fresh (x INT)", &path("analytics, public"), &Fixture);
        assert_eq!(got.as_deref(), Some("CREATE TABLE \"analytics\".fresh (x INT)"));
        let got = qualify("SELECT * FROM mine", &path("\"$user\", public"), &Fixture);
        assert_eq!(got.as_deref(), Some("SELECT * FROM \"alice\".mine"));
        let got = qualify("DROP TABLE t", &path("analytics, public"), &Fixture);
        assert_eq!(got.as_deref(), Some("DROP TABLE \"analytics\".t"));
    }

    #[test]
    fn grafanas_path_subquery_becomes_the_list_of_schemas() {
        let sql = "SELECT t FROM x WHERE s IN (\n  SELECT\n    CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END\n  FROM\n    generate_series(\n      array_lower(string_to_array(current_setting('search_path'),','),1),\n      array_upper(string_to_array(current_setting('search_path'),','),1)\n    ) as i,\n    string_to_array(current_setting('search_path'),',') s\n) ORDER BY t";
        let got = expand_path_subqueries(sql, &path("\"$user\", public"));
        assert_eq!(got.as_deref(), Some("SELECT t FROM x WHERE s IN ('alice', 'public') ORDER BY t"));
        assert_eq!(expand_path_subqueries("SELECT current_setting('search_path')", &path("public")), None);
    }

    #[test]
    fn the_default_path_and_missing_schemas_rewrite_nothing() {
        assert_eq!(qualify("SELECT * FROM t", &path("\"$user\", public"), &Fixture), None);
        assert_eq!(schemas("\"$user\", public", "bob"), vec!["bob".to_string(), "public".to_string()]);
        assert_eq!(qualify("SELECT * FROM t", &path("nowhere, public"), &Fixture), None);
        assert_eq!(qualify("SELECT * FROM t", &path("public, analytics"), &Fixture), None);
        let got = qualify("SELECT * FROM facts", &path("public, analytics"), &Fixture);
        assert_eq!(got.as_deref(), Some("SELECT * FROM \"analytics\".facts"));
    }
}
