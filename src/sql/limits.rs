//! How deep a statement may nest, checked on its text before any parser,
//! planner or operator sees it.
//!
//! Parsers, planners, `Display`, `Drop` and expression evaluation all walk
//! trees recursively, one stack frame (or several) per level. sqlparser bounds
//! parenthesized nesting itself (its recursion limit), but a chain of infix
//! operators — `1+1+1+…`, `a AND b AND …`, `x || y || …`, `SELECT … UNION
//! SELECT …` — is parsed in a loop into a left-deep tree that no parser limit
//! sees; 20,000 terms of it used to overflow a thread's stack, which aborts
//! the whole process. PostgreSQL refuses such a statement with 54001 ("stack
//! depth limit exceeded") and keeps serving; so do we, before any tree is
//! built, with a scan of the text that is itself iterative and linear.
//!
//! The scan over-approximates the depth of the tree any parser would build:
//! within each parenthesized frame it counts infix operators and operator
//! keywords between commas (a comma ends a list element, and with it an
//! expression), plus set operations, joins and SELECTs, which commas do not
//! end; nested frames add up. Statements real applications send stay far
//! below [`MAX_STATEMENT_DEPTH`]; the threads that handle statements have a
//! stack sized for it (see `server::STATEMENT_STACK_BYTES`).

use crate::error::{Result, SqlError, sqlstate};

/// The deepest operator nesting a statement may have. Each level costs a
/// few frames in every tree walk; the statement threads' stacks are sized
/// so that this depth passes every walk, in debug builds too.
pub const MAX_STATEMENT_DEPTH: usize = 2_000;

/// Keywords that combine two expressions (each one more level in the tree).
const OPERATOR_KEYWORDS: &[&str] =
    &["and", "or", "not", "is", "like", "ilike", "similar", "in", "between", "collate", "at", "overlaps", "operator"];

/// Keywords that combine queries or relations; a comma does not end them.
const QUERY_KEYWORDS: &[&str] = &["union", "intersect", "except", "join", "select"];

/// One open parenthesis or bracket: operators since the last comma, and
/// query-level operators since the frame opened.
#[derive(Default, Clone, Copy)]
struct Frame {
    expression: usize,
    query: usize,
}

/// Refuses `sql` with 54001 when its operators nest deeper than
/// [`MAX_STATEMENT_DEPTH`].
pub fn check_statement_depth(sql: &str) -> Result<()> {
    let depth = statement_depth(sql);
    if depth > MAX_STATEMENT_DEPTH {
        return Err(SqlError::new(
            sqlstate::STATEMENT_TOO_COMPLEX,
            format!(
                "stack depth limit exceeded: the statement nests about {depth} operators deep (at most {MAX_STATEMENT_DEPTH}); \
                 split it, or use IN (…) lists and arrays instead of long chains of OR and +"
            ),
        ));
    }
    Ok(())
}

/// An upper bound on the operator nesting of the statements in `sql` (the
/// deepest over all of them).
pub fn statement_depth(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut frames: Vec<Frame> = vec![Frame::default()];
    // Sum of all open frames' counts: the depth at the current token.
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut i = 0usize;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = skip_line_comment(bytes, i);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(bytes, i);
                continue;
            }
            b'\'' => {
                let escapes =
                    i > 0 && matches!(bytes.get(i - 1), Some(b'e' | b'E')) && !ident_char_before(bytes, i - 1);
                i = skip_quoted(bytes, i, b'\'', escapes);
                continue;
            }
            b'"' => {
                i = skip_quoted(bytes, i, b'"', false);
                continue;
            }
            b'$' => {
                i = skip_dollar(bytes, i);
                continue;
            }
            b'(' | b'[' => {
                if byte == b'[' {
                    // A subscript applies to what precedes it: `a[1][1]…`.
                    bump(&mut frames, &mut depth, false);
                }
                frames.push(Frame::default());
            }
            b')' | b']' => {
                if frames.len() > 1
                    && let Some(frame) = frames.pop()
                {
                    depth -= frame.expression + frame.query;
                }
            }
            b',' | b';' => {
                if let Some(frame) = frames.last_mut() {
                    depth -= frame.expression;
                    frame.expression = 0;
                    if byte == b';' {
                        depth -= frame.query;
                        frame.query = 0;
                    }
                }
            }
            b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                // Field access (`(x).a.b…`) or a qualified name.
                bump(&mut frames, &mut depth, false);
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' | b'~' | b'&' | b'|' | b'#' | b'@'
            | b'?' | b':' => {
                // A run of operator characters is one operator (`<=`, `||`, `::`).
                while bytes.get(i + 1).is_some_and(|b| is_operator_char(*b))
                    && !(bytes.get(i + 1) == Some(&b'-') && bytes.get(i + 2) == Some(&b'-'))
                    && !(bytes.get(i + 1) == Some(&b'/') && bytes.get(i + 2) == Some(&b'*'))
                {
                    i += 1;
                }
                bump(&mut frames, &mut depth, false);
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$') {
                    i += 1;
                }
                let word = bytes.get(start..=i).unwrap_or_default();
                if QUERY_KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes())) {
                    bump(&mut frames, &mut depth, true);
                } else if OPERATOR_KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes())) {
                    bump(&mut frames, &mut depth, false);
                }
            }
            b if b.is_ascii_digit() => {
                // A number, with its decimal point and exponent.
                while bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'_') {
                    i += 1;
                }
            }
            _ => {}
        }
        deepest = deepest.max(depth);
        i += 1;
    }
    deepest
}

fn bump(frames: &mut [Frame], depth: &mut usize, query: bool) {
    if let Some(frame) = frames.last_mut() {
        if query {
            frame.query += 1;
        } else {
            frame.expression += 1;
        }
        *depth += 1;
    }
}

fn is_operator_char(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'^'
            | b'<'
            | b'>'
            | b'='
            | b'!'
            | b'~'
            | b'&'
            | b'|'
            | b'#'
            | b'@'
            | b'?'
            | b':'
    )
}

fn ident_char_before(bytes: &[u8], at: usize) -> bool {
    at > 0 && bytes.get(at - 1).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// The index just past a `--` comment's line.
fn skip_line_comment(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while bytes.get(i).is_some_and(|b| *b != b'\n') {
        i += 1;
    }
    i
}

/// The index just past a `/* … */` comment (they nest in PostgreSQL).
fn skip_block_comment(bytes: &[u8], start: usize) -> usize {
    let mut nesting = 0usize;
    let mut i = start;
    while i < bytes.len() {
        if bytes.get(i) == Some(&b'/') && bytes.get(i + 1) == Some(&b'*') {
            nesting += 1;
            i += 2;
        } else if bytes.get(i) == Some(&b'*') && bytes.get(i + 1) == Some(&b'/') {
            nesting -= 1;
            i += 2;
            if nesting == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// The index just past a literal or identifier quoted with `quote` (a doubled
/// quote stands for itself; with `escapes`, so does a backslashed one).
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, escapes: bool) -> usize {
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        if escapes && b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    i
}

/// The index just past a `$tag$ … $tag$` string, or past a `$1` parameter.
fn skip_dollar(bytes: &[u8], start: usize) -> usize {
    let mut end = start + 1;
    while bytes.get(end).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
        end += 1;
    }
    let is_tag = bytes.get(end) == Some(&b'$') && !bytes.get(start + 1).is_some_and(u8::is_ascii_digit);
    if !is_tag {
        return end;
    }
    let tag = bytes.get(start..=end).unwrap_or_default();
    let mut i = end + 1;
    while i < bytes.len() {
        if bytes.get(i..i + tag.len()) == Some(tag) {
            return i + tag.len();
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn long_chains_are_deep() {
        assert!(statement_depth(&format!("SELECT {}", chain("1", "+", 20_000))) >= 19_999);
        assert!(statement_depth(&format!("SELECT 1 WHERE {}", chain("true", " AND ", 20_000))) >= 19_999);
        assert!(statement_depth(&chain("SELECT 1, 2", " UNION ALL ", 5_000)) >= 5_000);
        assert!(statement_depth(&format!("SELECT a{}", "[1]".repeat(5_000))) >= 5_000);
        let error = check_statement_depth(&format!("SELECT {}", chain("1", "+", 20_000))).unwrap_err();
        assert_eq!(error.code, "54001");
    }

    #[test]
    fn nesting_adds_up_and_commas_end_expressions() {
        // Two 1,500-term sums side by side are 1,500 deep; one inside the other 3,000.
        let sum = chain("x", "+", 1_500);
        assert!(statement_depth(&format!("SELECT {sum}, {sum} FROM t")) < 1_600);
        assert!(statement_depth(&format!("SELECT {sum} + ({sum}) FROM t")) >= 3_000);
        // A long VALUES list or IN list is flat.
        let values = vec!["(1, 'a', 2.5)"; 50_000].join(", ");
        assert!(statement_depth(&format!("INSERT INTO t VALUES {values}")) < 10);
        let list = (0..50_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        assert!(statement_depth(&format!("SELECT * FROM t WHERE id IN ({list})")) < 10);
    }

    #[test]
    fn quoted_text_and_comments_do_not_count() {
        let pluses = "+".repeat(10_000);
        for sql in [
            format!("SELECT '{pluses}'"),
            format!("SELECT E'\\'{pluses}'"),
            format!("SELECT \"{pluses}\" FROM t"),
            format!("SELECT $x${pluses}$x$"),
            format!("SELECT 1 -- {pluses}\n"),
            format!("SELECT 1 /* /* {pluses} */ {pluses} */"),
        ] {
            assert!(statement_depth(&sql) < 10, "{}", &sql[..20]);
        }
        assert!(statement_depth(&format!("SELECT $1 {}", chain("+ $2", " ", 3))) < 10);
    }

    #[test]
    fn ordinary_statements_pass() {
        for sql in [
            "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM orders o JOIN customers c ON o.customer = c.name GROUP BY c.region",
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','v','m','f') AND n.nspname <> 'pg_catalog' AND pg_catalog.pg_table_is_visible(c.oid)",
            "",
            "))) ((( ]]",
            "SELECT 'unterminated",
            "/* unterminated",
            "SELECT é, ü FROM t WHERE x = 'ß'",
        ] {
            assert!(check_statement_depth(sql).is_ok(), "{sql}");
        }
    }
}
