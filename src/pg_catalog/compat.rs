//! Postgres expressions DataFusion does not plan, rewritten into ones it
//! does before a query reaches it. Clients' catalog queries use them
//! (psql's `\du` lists a role's memberships with `ARRAY(SELECT …)`).
//!
//! - a few whole expressions of psql's and pgjdbc's (see `REPLACED`) and
//!   pgAdmin's (`TOKENS_REPLACED`, matched whatever the spacing);
//! - `ARRAY(subquery)` becomes `(SELECT array_agg(c) FROM (subquery) AS
//!   _array(c))`: the same array, as a scalar subquery;
//! - `generate_subscripts(a, d)` becomes `unnest(generate_series(1,
//!   array_length(a, d)))` (SQLAlchemy orders a key's columns by it).
//!
//! Text without such an expression is returned untouched (`None`). The
//! front end rewrites only after DataFusion refused a query for lacking
//! such a function ([`lacks_function`]).
//!
//! The `regclass` rewrites run on every query instead ([`regclass`]): a
//! system catalog's name cast to `regclass` becomes its fixed OID, before
//! datafusion-postgres turns the cast into a lookup in `pg_class` (which
//! lists Freshet's relations, not the catalogs); a computed name cast to
//! `regclass` becomes a call of the catalog function that looks it up.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{BinaryOperator, DataType, Expr, FunctionArguments, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The catalog function a `CAST(text AS regclass)` of a computed name
/// becomes ([`computed_regclass`]); `pg_functions` registers it.
pub const REGCLASS_FUNCTION: &str = "freshet_regclass";

/// Whether an error is DataFusion refusing a function rewritten here.
pub fn lacks_function(error: &str) -> bool {
    error.contains("Invalid function 'array'")
        || error.contains("Invalid function 'generate_subscripts'")
        || error.contains("Invalid function '_pg_expandarray'")
}

/// Whole expressions of clients' catalog queries, replaced as written
/// (there are no TOAST tables, so no TOAST options to add to a table's).
const REPLACED: &[(&str, &str)] = &[
    ("c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x)", "c.reloptions"),
    // pgjdbc's getPrimaryKeys pairs each key column with its position in
    // the index through `information_schema._pg_expandarray` (a set-
    // returning function of records); the same, with array functions.
    ("(information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ", "array_position(i.indkey, a.attnum) AS KEY_SEQ"),
    ("information_schema._pg_expandarray(i.indkey) AS KEYS", "i.indkey AS KEYS"),
    ("result.A_ATTNUM = (result.KEYS).x", "array_has(result.KEYS, result.A_ATTNUM)"),
];

/// Postgres's fixed OIDs of the system catalogs clients name as
/// `'pg_class'::regclass` (to match `classoid` in pg_description).
const SYSTEM_CATALOGS: &[(&str, u32)] = &[
    ("pg_class", 1259),
    ("pg_namespace", 2615),
    ("pg_database", 1262),
    ("pg_type", 1247),
    ("pg_proc", 1255),
    ("pg_attribute", 1249),
    ("pg_constraint", 2606),
    ("pg_authid", 1260),
    ("pg_description", 2609),
    ("pg_index", 2610),
    ("pg_trigger", 2620),
    ("pg_am", 2601),
];

/// The fixed OID of a system catalog, by name.
pub fn system_catalog_oid(name: &str) -> Option<u32> {
    SYSTEM_CATALOGS.iter().find(|(n, _)| *n == name).map(|(_, oid)| *oid)
}

/// `regclass` casts DataFusion cannot plan, before any other rewrite:
/// [`system_regclass`], then [`computed_regclass`].
pub fn regclass(sql: &str) -> Option<String> {
    let literal = system_regclass(sql);
    let sql_now = literal.as_deref().unwrap_or(sql);
    computed_regclass(sql_now).or(literal)
}

/// `CAST(expr AS regclass)` of a computed name (Metabase's
/// `CAST(format('%I.%I', schema, table) AS REGCLASS)`) as a call of the
/// catalog function that looks the name up; a quoted name is left to
/// datafusion-postgres, which looks it up in pg_class itself.
pub fn computed_regclass(sql: &str) -> Option<String> {
    if !sql.to_ascii_lowercase().contains("regclass") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut rewriter = ComputedRegclass { changed: false };
    for statement in &mut statements {
        let _ = statement.visit(&mut rewriter);
    }
    rewriter.changed.then(|| statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

struct ComputedRegclass {
    changed: bool,
}

impl VisitorMut for ComputedRegclass {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Cast { expr: inner, data_type, .. } = expr else { return ControlFlow::Continue(()) };
        let is_regclass = match data_type {
            DataType::Regclass => true,
            DataType::Custom(name, _) => name.to_string().to_ascii_lowercase().ends_with("regclass"),
            _ => false,
        };
        // Only names computed as text: an OID column cast to regclass
        // (psql's `c.oid::pg_catalog.regclass`) stays as it is.
        let computed_text = match inner.as_ref() {
            Expr::Function(_) => true,
            Expr::BinaryOp { op: BinaryOperator::StringConcat, .. } => true,
            Expr::Cast { data_type: DataType::Text | DataType::Varchar(_), .. } => true,
            _ => false,
        };
        if !is_regclass || !computed_text {
            return ControlFlow::Continue(());
        }
        let text = format!("{REGCLASS_FUNCTION}({inner})");
        if let Ok(replacement) = Parser::new(&PostgreSqlDialect {}).try_with_sql(&text).and_then(|mut p| p.parse_expr())
        {
            *expr = replacement;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

/// `'pg_class'::regclass` (also `'pg_catalog.pg_class'`, and the
/// `::pg_catalog.regclass` spelling) as the literal OID.
pub fn system_regclass(sql: &str) -> Option<String> {
    if !sql.contains("::regclass") && !sql.contains("::pg_catalog.regclass") {
        return None;
    }
    let mut out = sql.to_string();
    for (name, oid) in SYSTEM_CATALOGS {
        for quoted in [format!("'{name}'"), format!("'pg_catalog.{name}'")] {
            for cast in ["::regclass", "::pg_catalog.regclass"] {
                out = out.replace(&format!("{quoted}{cast}"), &oid.to_string());
            }
        }
    }
    (out != sql).then_some(out)
}

/// Clients' subqueries DataFusion cannot plan, matched token by token
/// (whatever the spacing), and what they come to in Freshet's catalog.
const TOKENS_REPLACED: &[(&str, &str)] = &[
    // pgAdmin's "can signal backends" check at connect: the roles a role
    // belongs to, through pg_auth_members recursively, in a correlated
    // ARRAY(WITH RECURSIVE …). Freshet has no role membership (the table
    // is empty), so the answer is the role alone. Remove with membership.
    (
        "ARRAY(WITH RECURSIVE cte AS (SELECT pg_roles.oid,pg_roles.rolname FROM pg_roles \
         WHERE pg_roles.oid = roles.oid UNION ALL SELECT m.roleid,pgr.rolname FROM cte cte_1 \
         JOIN pg_auth_members m ON m.member = cte_1.oid JOIN pg_roles pgr ON pgr.oid = m.roleid) \
         SELECT rolname FROM cte)",
        "ARRAY[roles.rolname]",
    ),
];

/// `sql` with every run of tokens equal to `pattern`'s (whitespace and the
/// case of words aside) replaced by `replacement`; `None` if there is none.
pub fn replace_tokens(sql: &str, pattern: &str, replacement: &str) -> Option<String> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let pattern: Vec<Token> = Tokenizer::new(&dialect, pattern)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let same = |a: &Token, b: &Token| a.to_string().eq_ignore_ascii_case(&b.to_string());
    let mut out = String::with_capacity(sql.len());
    let mut next = 0;
    let mut changed = false;
    while let Some((token, rest)) = tokens.get(next..).and_then(<[Token]>::split_first) {
        let matched = if matches!(token, Token::Whitespace(_)) {
            None
        } else {
            let mut candidates =
                std::iter::once(token).chain(rest).enumerate().filter(|(_, t)| !matches!(t, Token::Whitespace(_)));
            pattern.iter().try_fold(0, |_, expected| match candidates.next() {
                Some((offset, token)) if same(token, expected) => Some(next + offset + 1),
                _ => None,
            })
        };
        match matched {
            Some(end) => {
                out.push_str(replacement);
                next = end;
                changed = true;
            }
            None => {
                out.push_str(&token.to_string());
                next += 1;
            }
        }
    }
    changed.then_some(out)
}

pub fn rewrite(sql: &str) -> Option<String> {
    let mut replaced = None;
    for (from, to) in REPLACED {
        if sql.contains(from) {
            replaced = Some(replaced.as_deref().unwrap_or(sql).replace(from, to));
        }
    }
    for (pattern, to) in TOKENS_REPLACED {
        if let Some(done) = replace_tokens(replaced.as_deref().unwrap_or(sql), pattern, to) {
            replaced = Some(done);
        }
    }
    let sql = replaced.as_deref().unwrap_or(sql);
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("array(") && !lower.contains("array (") && !lower.contains("generate_subscripts(") {
        return replaced;
    }
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::parse_sql(&dialect, sql).ok()?;
    let mut rewriter = PostgresExprs { changed: false };
    for statement in &mut statements {
        let _ = statement.visit(&mut rewriter);
    }
    if !rewriter.changed {
        return replaced;
    }
    Some(statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

struct PostgresExprs {
    changed: bool,
}

impl VisitorMut for PostgresExprs {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(function) = expr else { return ControlFlow::Continue(()) };
        let name = function.name.to_string().to_ascii_lowercase();
        let text = match (name.as_str(), &function.args) {
            ("array", FunctionArguments::Subquery(query)) => {
                format!("(SELECT array_agg(_array.c) FROM ({query}) AS _array(c))")
            }
            ("generate_subscripts" | "pg_catalog.generate_subscripts", FunctionArguments::List(list)) => {
                let [array, dimension] = list.args.as_slice() else { return ControlFlow::Continue(()) };
                format!("unnest(generate_series(1, array_length({array}, {dimension})))")
            }
            _ => return ControlFlow::Continue(()),
        };
        let dialect = PostgreSqlDialect {};
        if let Ok(replacement) = Parser::new(&dialect).try_with_sql(&text).and_then(|mut p| p.parse_expr()) {
            *expr = replacement;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod regclass_tests {
    #[test]
    fn computed_names_cast_to_regclass_become_lookups() {
        let got = super::computed_regclass(
            "SELECT col_description(CAST(CAST(format('%I.%I', s, t) AS REGCLASS) AS OID), 1), c.oid::regclass FROM x",
        );
        assert_eq!(
            got.as_deref(),
            Some(
                "SELECT col_description(CAST(freshet_regclass(format('%I.%I', s, t)) AS OID), 1), c.oid::REGCLASS FROM x"
            )
        );
        assert_eq!(super::computed_regclass("SELECT c.oid::regclass FROM pg_class c"), None);
    }

    #[test]
    fn system_catalog_names_become_their_oids() {
        assert_eq!(
            super::system_regclass("SELECT 1 FROM d WHERE d.classoid = 'pg_class'::regclass AND x = 'pg_catalog.pg_namespace'::pg_catalog.regclass").as_deref(),
            Some("SELECT 1 FROM d WHERE d.classoid = 1259 AND x = 2615")
        );
        assert_eq!(super::system_regclass("SELECT 'orders'::regclass"), None);
        assert_eq!(super::system_regclass("SELECT 1"), None);
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

    #[test]
    fn generate_subscripts_becomes_unnest_of_a_series() {
        let sql = "SELECT unnest(i.indkey) AS attnum, generate_subscripts(i.indkey, 1) AS ord FROM pg_index i";
        assert_eq!(
            super::rewrite(sql).as_deref(),
            Some(
                "SELECT unnest(i.indkey) AS attnum, unnest(generate_series(1, array_length(i.indkey, 1))) AS ord FROM pg_index i"
            )
        );
    }
}
