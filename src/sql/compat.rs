//! Postgres expressions DataFusion does not plan, rewritten into ones it
//! does before a query reaches it. Clients' catalog queries use them
//! (psql's `\du` lists a role's memberships with `ARRAY(SELECT …)`).
//!
//! - a few whole expressions of psql's (see `REPLACED`);
//! - `ARRAY(subquery)` becomes `(SELECT array_agg(c) FROM (subquery) AS
//!   _array(c))`: the same array, as a scalar subquery.
//!
//! Text without such an expression is returned untouched (`None`). The
//! front end rewrites only after DataFusion refused a query for lacking
//! such a function ([`lacks_function`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Whether an error is DataFusion refusing a function rewritten here.
pub fn lacks_function(error: &str) -> bool {
    error.contains("Invalid function 'array'")
}

/// Whole expressions of clients' catalog queries, replaced as written
/// (there are no TOAST tables, so no TOAST options to add to a table's).
const REPLACED: &[(&str, &str)] =
    &[("c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x)", "c.reloptions")];

pub fn rewrite(sql: &str) -> Option<String> {
    let mut replaced = None;
    for (from, to) in REPLACED {
        if sql.contains(from) {
            replaced = Some(replaced.as_deref().unwrap_or(sql).replace(from, to));
        }
    }
    let sql = replaced.as_deref().unwrap_or(sql);
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("array(") && !lower.contains("array (") {
        return replaced;
    }
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::parse_sql(&dialect, sql).ok()?;
    let mut rewriter = ArraySubqueries { changed: false };
    for statement in &mut statements {
        let _ = statement.visit(&mut rewriter);
    }
    if !rewriter.changed {
        return replaced;
    }
    Some(statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

struct ArraySubqueries {
    changed: bool,
}

impl VisitorMut for ArraySubqueries {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(function) = expr else { return ControlFlow::Continue(()) };
        if !function.name.to_string().eq_ignore_ascii_case("array") {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::Subquery(query) = &function.args else { return ControlFlow::Continue(()) };
        let text = format!("(SELECT array_agg(_array.c) FROM ({query}) AS _array(c))");
        let dialect = PostgreSqlDialect {};
        if let Ok(replacement) = Parser::new(&dialect).try_with_sql(&text).and_then(|mut p| p.parse_expr()) {
            *expr = replacement;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn array_subqueries_become_array_agg() {
        let sql =
            "SELECT r.rolname, ARRAY(SELECT b.rolname FROM pg_roles b WHERE b.oid = r.oid) AS memberof FROM pg_roles r";
        let rewritten = super::rewrite(sql).expect("rewritten");
        assert!(
            rewritten.contains(
                "(SELECT array_agg(_array.c) FROM (SELECT b.rolname FROM pg_roles b WHERE b.oid = r.oid) AS _array (c))"
            ),
            "{rewritten}"
        );
        assert_eq!(super::rewrite("SELECT array_length(ARRAY[1, 2], 1)"), None);
        assert_eq!(super::rewrite("SELECT 1"), None);
        let toast = "SELECT pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ') FROM pg_catalog.pg_class c";
        assert_eq!(
            super::rewrite(toast).as_deref(),
            Some("SELECT pg_catalog.array_to_string(c.reloptions, ', ') FROM pg_catalog.pg_class c")
        );
    }
}
