//! Freshet's own clauses, rewritten into standard SQL before parsing.
//!
//! Streaming SQL has a few clauses no Postgres parser knows:
//! - `WATERMARK FOR col AS expr` among the columns of CREATE TABLE / SOURCE;
//! - `CREATE SOURCE name [(columns)] WITH (…)` (a relation fed by a
//!   connector whose rows are not stored);
//! - `… AS query EMIT ON WINDOW CLOSE` after CREATE MATERIALIZED VIEW;
//! - `DROP SOURCE name` (a DROP TABLE, which also drops sources);
//! - `CREATE SINK name FROM relation | AS query WITH (…)` (a materialized
//!   view whose changes go out instead of being stored) and `DROP SINK`;
//! - `CREATE TABLE name (…) FROM source TABLE 'schema.table'` (a table fed
//!   by a CDC source);
//! - `COMMENT ON SOURCE | SINK name` (as on the table or materialized
//!   view each is built as);
//! - `CREATE USER` / `ALTER USER` / `DROP USER` (the ROLE statements;
//!   CREATE USER implies LOGIN) and `GRANT … ON SOURCE s` (ON TABLE);
//! - dotted option names (`nexmark.table.type = 'bid'`) and
//!   `FORMAT x ENCODE y` after the WITH options.
//!
//! Each becomes a `WITH (key = 'value')` option of a standard CREATE TABLE
//! or CREATE MATERIALIZED VIEW, which sqlparser parses and prints back
//! unchanged. So the rest of the server (both wire protocols, the catalog
//! entries replayed at startup) deals with standard statements only, and a
//! user may also write the option form directly. The rewrite works on
//! sqlparser's tokens, so quoting and comments are respected; text without
//! any of these clauses is returned untouched.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace, Word};

use crate::error::{Result, SqlError, sqlstate};

/// Option naming a table's watermark column.
pub const WATERMARK_COLUMN: &str = "watermark_column";
/// Option holding a table's watermark expression (SQL text).
pub const WATERMARK_EXPRESSION: &str = "watermark_expression";
/// Option of a table or source with a watermark: after how long without
/// a row it stops holding back watermarks combined with others'.
pub const WATERMARK_IDLE_TIMEOUT: &str = "watermark_idle_timeout";
/// Option marking a CREATE TABLE that was written as CREATE SOURCE.
pub const RELATION_KIND: &str = "freshet_kind";
/// Options of `CREATE TABLE t (…) FROM source TABLE 'schema.table'`.
pub const CDC_SOURCE: &str = "cdc.source";
pub const CDC_TABLE: &str = "cdc.table";
/// Option of a materialized view: `emit = 'on_window_close'`.
pub const EMIT: &str = "emit";
pub const EMIT_ON_WINDOW_CLOSE: &str = "on_window_close";

/// A token, and for one taken from the input its exact text there (so
/// that what is not rewritten comes out exactly as it went in).
#[derive(Clone, Debug)]
struct Tok {
    token: Token,
    original: Option<String>,
}

impl Tok {
    fn new(token: Token) -> Self {
        Self { token, original: None }
    }

    fn render(&self) -> String {
        match (&self.original, &self.token) {
            (Some(text), _) => text.clone(),
            (None, Token::SingleQuotedString(value)) => format!("'{}'", value.replace('\'', "''")),
            (None, token) => token.to_string(),
        }
    }
}

impl std::ops::Deref for Tok {
    type Target = Token;
    fn deref(&self) -> &Token {
        &self.token
    }
}

impl PartialEq<Token> for Tok {
    fn eq(&self, other: &Token) -> bool {
        self.token == *other
    }
}

/// The byte offset of a (1-based line, 1-based character column) location.
fn byte_offset(sql: &str, line_starts: &[usize], location: Location) -> usize {
    let line = (location.line as usize).saturating_sub(1);
    let Some(&start) = line_starts.get(line) else { return sql.len() };
    let column = (location.column as usize).saturating_sub(1);
    let line_text = sql.get(start..).unwrap_or_default();
    line_text.char_indices().nth(column).map_or(sql.len(), |(i, _)| start + i)
}

/// The input's tokens, each with its exact text.
fn tokenize(sql: &str) -> Option<Vec<Tok>> {
    let dialect = PostgreSqlDialect {};
    let spanned = Tokenizer::new(&dialect, sql).tokenize_with_location().ok()?;
    let mut line_starts = vec![0usize];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let starts: Vec<usize> = spanned.iter().map(|t| byte_offset(sql, &line_starts, t.span.start)).collect();
    let mut tokens = Vec::with_capacity(spanned.len());
    let ends = starts.iter().skip(1).copied().chain(std::iter::once(sql.len()));
    for ((spanned, start), end) in spanned.into_iter().zip(starts.iter().copied()).zip(ends) {
        let text = sql.get(start..end)?.to_string();
        tokens.push(Tok { token: spanned.token, original: Some(text) });
    }
    Some(tokens)
}

/// Rewrites every statement of `sql` that uses Freshet's clauses; `None`
/// when there is nothing to rewrite (the text goes to the parser as it is).
pub fn rewrite(sql: &str) -> Result<Option<String>> {
    // (COMMENT ON SOURCE | SINK contains one of the last two.)
    // (… USER and GRANT ON SOURCE contain one of the last two.)
    if !contains_ignore_case(sql, "create")
        && !contains_ignore_case(sql, "source")
        && !contains_ignore_case(sql, "sink")
        && !contains_ignore_case(sql, "user")
    {
        return Ok(None);
    }
    // Text the tokenizer refuses is left for the parser to report.
    let Some(tokens) = tokenize(sql) else { return Ok(None) };
    let mut out: Vec<Tok> = Vec::with_capacity(tokens.len() + 16);
    let mut changed = false;
    let mut first = true;
    for statement in tokens.split(|t| t.token == Token::SemiColon) {
        if !first {
            out.push(Tok::new(Token::SemiColon));
        }
        first = false;
        match rewrite_statement(statement)? {
            Some(rewritten) => {
                changed = true;
                out.extend(rewritten);
            }
            None => out.extend_from_slice(statement),
        }
    }
    Ok(changed.then(|| out.iter().map(Tok::render).collect()))
}

fn contains_ignore_case(text: &str, needle: &str) -> bool {
    text.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn syntax_error(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::SYNTAX_ERROR, message)
}

fn is_blank(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_))
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn keyword(token: &Token) -> Keyword {
    match token {
        Token::Word(w) if w.quote_style.is_none() => w.keyword,
        _ => Keyword::NoKeyword,
    }
}

fn text(tokens: &[Tok]) -> String {
    tokens.iter().map(Tok::render).collect::<String>().trim().to_string()
}

fn quoted_word(value: &str) -> Tok {
    Tok::new(Token::Word(Word { value: value.to_string(), quote_style: Some('"'), keyword: Keyword::NoKeyword }))
}

fn space() -> Tok {
    Tok::new(Token::Whitespace(Whitespace::Space))
}

fn new(token: Token) -> Tok {
    Tok::new(token)
}

/// `key = 'value'` as tokens.
fn option_tokens(key: &str, value: &str) -> Vec<Tok> {
    vec![
        // Dotted keys are quoted, as the user's are.
        new(Token::make_word(key, key.contains('.').then_some('"'))),
        space(),
        new(Token::Eq),
        space(),
        new(Token::SingleQuotedString(value.to_string())),
    ]
}

// The rewriter reads tokens at positions it computed from the same list
// (`significant`, `closing_paren`, a scan's index). `tok` and `span` keep
// a wrong position from panicking on a user's statement: past the end, a
// token reads as the end of input and a range as empty, so a mistake
// shows as a statement left to the parser to judge, not a dead session.

/// The end of input, read past the last token.
static END: Tok = Tok { token: Token::EOF, original: None };

/// The token at `i`, or the end of input past the last one.
fn tok(tokens: &[Tok], i: usize) -> &Tok {
    tokens.get(i).unwrap_or(&END)
}

/// The tokens in `range`, or none if it is out of bounds.
fn span<R: std::slice::SliceIndex<[Tok], Output = [Tok]>>(tokens: &[Tok], range: R) -> &[Tok] {
    tokens.get(range).unwrap_or_default()
}

/// `tokens` with the one at `at` replaced by `with`; `None` if there is
/// no token there.
fn replaced(tokens: &[Tok], at: Option<&usize>, with: Tok) -> Option<Vec<Tok>> {
    let mut out = tokens.to_vec();
    *out.get_mut(*at?)? = with;
    Some(out)
}

/// Positions of the non-blank tokens (comments count as blank).
fn significant(tokens: &[Tok]) -> Vec<usize> {
    (0..tokens.len()).filter(|&i| !is_blank(tok(tokens, i))).collect()
}

/// The index of the parenthesis closing the one opened at `open`.
fn closing_paren(tokens: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match &token.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

enum Created {
    Table,
    Source,
    MaterializedView,
    Sink,
}

fn rewrite_statement(tokens: &[Tok]) -> Result<Option<Vec<Tok>>> {
    let sig = significant(tokens);
    let word_at = |n: usize| sig.get(n).map(|&i| tok(tokens, i));
    // EXPLAIN CREATE …: the CREATE is rewritten as it would be alone.
    if word_at(0).is_some_and(|t| keyword(t) == Keyword::EXPLAIN)
        && word_at(1).is_some_and(|t| keyword(t) == Keyword::CREATE)
    {
        let Some(&create_at) = sig.get(1) else { return Ok(None) };
        let Some(rest) = rewrite_statement(span(tokens, create_at..))? else { return Ok(None) };
        let mut out = span(tokens, ..create_at).to_vec();
        out.extend(rest);
        return Ok(Some(out));
    }
    // DROP SOURCE s: sources are dropped as tables are; DROP SINK s as
    // the materialized view it is built as.
    if word_at(0).is_some_and(|t| keyword(t) == Keyword::DROP) && word_at(1).is_some_and(|t| is_word(t, "source")) {
        return Ok(replaced(tokens, sig.get(1), new(Token::make_keyword("TABLE"))));
    }
    if word_at(0).is_some_and(|t| keyword(t) == Keyword::DROP) && word_at(1).is_some_and(|t| is_word(t, "sink")) {
        return Ok(replaced(tokens, sig.get(1), new(Token::make_word("MATERIALIZED VIEW", None))));
    }
    // COMMENT ON SOURCE s / SINK s: as the table / materialized view each is.
    if word_at(0).is_some_and(|t| keyword(t) == Keyword::COMMENT)
        && word_at(1).is_some_and(|t| keyword(t) == Keyword::ON)
    {
        let replacement = match word_at(2) {
            Some(t) if is_word(t, "source") => "TABLE",
            Some(t) if is_word(t, "sink") => "MATERIALIZED VIEW",
            _ => return Ok(None),
        };
        return Ok(replaced(tokens, sig.get(2), new(Token::make_word(replacement, None))));
    }
    // CREATE / ALTER / DROP USER: the ROLE statements; a user logs in.
    if word_at(0).is_some_and(|t| matches!(keyword(t), Keyword::CREATE | Keyword::ALTER | Keyword::DROP))
        && word_at(1).is_some_and(|t| keyword(t) == Keyword::USER)
    {
        let Some(mut out) = replaced(tokens, sig.get(1), new(Token::make_keyword("ROLE"))) else { return Ok(None) };
        let says_login = sig.iter().any(|&i| is_word(tok(tokens, i), "login") || is_word(tok(tokens, i), "nologin"));
        if word_at(0).is_some_and(|t| keyword(t) == Keyword::CREATE) && !says_login {
            out.push(space());
            out.push(new(Token::make_keyword("LOGIN")));
        }
        return Ok(Some(out));
    }
    // GRANT / REVOKE … ON SOURCE s: a source is granted on as a table.
    if word_at(0).is_some_and(|t| matches!(keyword(t), Keyword::GRANT | Keyword::REVOKE)) {
        let Some(on) = sig.iter().position(|&i| keyword(tok(tokens, i)) == Keyword::ON) else { return Ok(None) };
        if !word_at(on + 1).is_some_and(|t| is_word(t, "source")) {
            return Ok(None);
        }
        return Ok(replaced(tokens, sig.get(on + 1), new(Token::make_keyword("TABLE"))));
    }
    if word_at(0).is_none_or(|t| keyword(t) != Keyword::CREATE) {
        return Ok(None);
    }
    let mut n = 1;
    if word_at(n).is_some_and(|t| keyword(t) == Keyword::OR) && word_at(n + 1).is_some_and(|t| is_word(t, "replace")) {
        n += 2;
    }
    let created = match word_at(n) {
        Some(t) if keyword(t) == Keyword::TABLE => Created::Table,
        Some(t) if is_word(t, "source") => Created::Source,
        Some(t) if is_word(t, "sink") => Created::Sink,
        Some(t)
            if keyword(t) == Keyword::MATERIALIZED && word_at(n + 1).is_some_and(|t| keyword(t) == Keyword::VIEW) =>
        {
            n += 1;
            Created::MaterializedView
        }
        _ => return Ok(None),
    };
    let Some(&head_end) = sig.get(n) else { return Ok(None) };
    match created {
        Created::MaterializedView => Ok(rewrite_view(tokens, head_end)),
        Created::Table => rewrite_table(tokens, head_end, false),
        Created::Source => rewrite_table(tokens, head_end, true),
        Created::Sink => rewrite_sink(tokens, head_end).map(Some),
    }
}

/// `CREATE SINK [IF NOT EXISTS] name FROM relation | AS query [WITH (…)]
/// [FORMAT f ENCODE e [(…)]]` as `CREATE MATERIALIZED VIEW name WITH (…,
/// freshet_kind = 'sink', format = …, encode = …) AS SELECT * FROM
/// relation | query`.
fn rewrite_sink(tokens: &[Tok], head_end: usize) -> Result<Vec<Tok>> {
    let usage = "CREATE SINK name FROM relation WITH (connector = …) [FORMAT … ENCODE …]";
    let sig = significant(tokens);
    let at = |k: usize| sig.get(k).map(|&i| tok(tokens, i));
    let mut k = sig.iter().position(|&i| i == head_end).ok_or_else(|| syntax_error(usage))? + 1;
    let mut if_not_exists = false;
    if at(k).is_some_and(|t| keyword(t) == Keyword::IF) {
        if !(at(k + 1).is_some_and(|t| keyword(t) == Keyword::NOT)
            && at(k + 2).is_some_and(|t| keyword(t) == Keyword::EXISTS))
        {
            return Err(syntax_error(usage));
        }
        if_not_exists = true;
        k += 3;
    }
    // The name: words and dots up to FROM or AS.
    let name_start = sig.get(k).copied().ok_or_else(|| syntax_error(format!("CREATE SINK needs a name: {usage}")))?;
    let mut name_end = name_start;
    while name_end < tokens.len()
        && keyword(tok(tokens, name_end)) != Keyword::FROM
        && keyword(tok(tokens, name_end)) != Keyword::AS
    {
        name_end += 1;
    }
    if name_end >= tokens.len() {
        return Err(syntax_error(format!("CREATE SINK needs FROM relation or AS query: {usage}")));
    }
    let name = text(span(tokens, name_start..name_end));
    // The body ends where the options start: the last WITH (…) at depth 0
    // followed only by FORMAT … or the end.
    let mut depth = 0i32;
    let mut options_at = None;
    let mut i = name_end + 1;
    while i < tokens.len() {
        match &tok(tokens, i).token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && (keyword(t) == Keyword::WITH || is_word(t, "format")) => {
                let tail_ok = if keyword(t) == Keyword::WITH {
                    let open = (i + 1..tokens.len()).find(|&j| !is_blank(tok(tokens, j)));
                    open.filter(|&o| tok(tokens, o).token == Token::LParen)
                        .and_then(|o| closing_paren(tokens, o))
                        .map(|close| {
                            let next = (close + 1..tokens.len()).find(|&j| !is_blank(tok(tokens, j)));
                            next.is_none_or(|n| is_word(tok(tokens, n), "format"))
                        })
                        .unwrap_or(false)
                } else {
                    true
                };
                if tail_ok {
                    options_at = Some(i);
                    break;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let body_end = options_at.unwrap_or(tokens.len());
    let query: Vec<Tok> = if keyword(tok(tokens, name_end)) == Keyword::FROM {
        let relation = text(span(tokens, name_end + 1..body_end));
        if relation.is_empty() {
            return Err(syntax_error(format!("CREATE SINK … FROM needs a relation: {usage}")));
        }
        tokenize(&format!("SELECT * FROM {relation}")).ok_or_else(|| syntax_error(usage))?
    } else {
        span(tokens, name_end + 1..body_end).to_vec()
    };
    // The options and FORMAT clause, read as a CREATE TABLE's are.
    let mut head = tokenize(&format!("CREATE TABLE {name} () ")).ok_or_else(|| syntax_error(usage))?;
    head.extend_from_slice(span(tokens, body_end..));
    let head_sig = significant(&head);
    let &table_at = head_sig.get(1).ok_or_else(|| syntax_error(usage))?;
    let table = rewrite_table(&head, table_at, false)?.unwrap_or(head);
    let mut options: Vec<Tok> = Vec::new();
    // The WITH list of the rewritten head, if any.
    let table_sig = significant(&table);
    let with_at = table_sig.iter().copied().find(|&i| keyword(tok(&table, i)) == Keyword::WITH);
    if let Some(with_at) = with_at {
        let open =
            (with_at + 1..table.len()).find(|&j| !is_blank(tok(&table, j))).ok_or_else(|| syntax_error(usage))?;
        let close = closing_paren(&table, open).ok_or_else(|| syntax_error("unbalanced parentheses in WITH"))?;
        options.extend_from_slice(span(&table, open + 1..close));
    }
    if !options.iter().all(|t| is_blank(t)) {
        options.extend([new(Token::Comma), space()]);
    }
    options.extend(option_tokens(RELATION_KIND, "sink"));
    let mut out = tokenize(&format!(
        "CREATE MATERIALIZED VIEW {}{name} WITH (",
        if if_not_exists { "IF NOT EXISTS " } else { "" }
    ))
    .ok_or_else(|| syntax_error(usage))?;
    out.extend(options);
    out.extend([new(Token::RParen), space(), new(Token::make_keyword("AS")), space()]);
    out.extend(query);
    Ok(out)
}

/// `CREATE MATERIALIZED VIEW … AS query EMIT ON WINDOW CLOSE`.
fn rewrite_view(tokens: &[Tok], head_end: usize) -> Option<Vec<Tok>> {
    let sig = significant(tokens);
    let &[.., emit_start, on, window, close] = sig.as_slice() else { return None };
    let emits = is_word(tok(tokens, emit_start), "emit")
        && keyword(tok(tokens, on)) == Keyword::ON
        && is_word(tok(tokens, window), "window")
        && is_word(tok(tokens, close), "close");
    if !emits {
        return None;
    }
    let body = span(tokens, ..emit_start);
    // The AS that starts the query: the first at depth 0 after the name.
    let mut depth = 0i32;
    let mut as_at = None;
    let mut with_close = None;
    let mut i = head_end + 1;
    while i < body.len() {
        match &tok(body, i).token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && keyword(t) == Keyword::WITH => {
                let open = (i + 1..body.len()).find(|&j| !is_blank(tok(body, j)))?;
                if tok(body, open).token == Token::LParen {
                    with_close = Some(closing_paren(body, open)?);
                    i = with_close.unwrap_or(i);
                }
            }
            t if depth == 0 && keyword(t) == Keyword::AS => {
                as_at = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let as_at = as_at?;
    let mut out = Vec::with_capacity(tokens.len() + 8);
    match with_close {
        Some(close) => {
            out.extend_from_slice(span(body, ..close));
            out.extend([new(Token::Comma), space()]);
            out.extend(option_tokens(EMIT, EMIT_ON_WINDOW_CLOSE));
            out.extend_from_slice(span(body, close..));
        }
        None => {
            out.extend_from_slice(span(body, ..as_at));
            out.extend([new(Token::make_keyword("WITH")), space(), new(Token::LParen)]);
            out.extend(option_tokens(EMIT, EMIT_ON_WINDOW_CLOSE));
            out.extend([new(Token::RParen), space()]);
            out.extend_from_slice(span(body, as_at..));
        }
    }
    Some(out)
}

/// `CREATE TABLE|SOURCE name [(columns…, WATERMARK FOR c AS e)] [WITH (…)]
/// [FORMAT f ENCODE e [(…)]] [AS query]`.
fn rewrite_table(tokens: &[Tok], head_end: usize, source: bool) -> Result<Option<Vec<Tok>>> {
    let mut added: Vec<(String, String)> = Vec::new();
    if source {
        added.push((RELATION_KIND.to_string(), "source".to_string()));
    }
    let mut out: Vec<Tok> = Vec::with_capacity(tokens.len() + 16);
    out.extend_from_slice(span(tokens, ..head_end));
    out.push(if source { new(Token::make_keyword("TABLE")) } else { tok(tokens, head_end).clone() });
    let mut changed = source;

    // The name, then the column list if there is one.
    let mut i = head_end + 1;
    while i < tokens.len() && tok(tokens, i).token != Token::LParen && keyword(tok(tokens, i)) != Keyword::WITH {
        if keyword(tok(tokens, i)) == Keyword::AS {
            break;
        }
        out.push(tok(tokens, i).clone());
        i += 1;
    }
    if i < tokens.len() && tok(tokens, i).token == Token::LParen {
        let close = closing_paren(tokens, i).ok_or_else(|| syntax_error("unbalanced parentheses in CREATE TABLE"))?;
        let (columns, watermark) = strip_watermark(span(tokens, i + 1..close))?;
        if let Some((column, expression)) = watermark {
            added.push((WATERMARK_COLUMN.to_string(), column));
            added.push((WATERMARK_EXPRESSION.to_string(), expression));
            changed = true;
        }
        out.push(tok(tokens, i).clone());
        out.extend(columns);
        out.push(tok(tokens, close).clone());
        i = close + 1;
    } else if source {
        // Columns may be left to the connector: `CREATE TABLE t ()`.
        out.extend([new(Token::LParen), new(Token::RParen), space()]);
    }

    // INCLUDE partition | offset | key | timestamp [AS name], after the
    // columns of a source: options `include.partition = 'name'`.
    loop {
        let sig: Vec<usize> = (i..tokens.len()).filter(|&k| !is_blank(tok(tokens, k))).take(4).collect();
        if !sig.first().is_some_and(|&k| is_word(tok(tokens, k), "include")) {
            break;
        }
        let what = match sig.get(1).map(|&k| &tok(tokens, k).token) {
            Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
            _ => return Err(syntax_error("INCLUDE needs what to include: key, partition, offset or timestamp")),
        };
        let named = sig.get(2).is_some_and(|&k| keyword(tok(tokens, k)) == Keyword::AS);
        let after = |n: usize| sig.get(n).map_or(tokens.len(), |k| k + 1);
        let (name, end) = if named {
            match sig.get(3).map(|&k| &tok(tokens, k).token) {
                Some(Token::Word(w)) if w.quote_style.is_some() => (w.value.clone(), after(3)),
                Some(Token::Word(w)) => (w.value.to_ascii_lowercase(), after(3)),
                _ => return Err(syntax_error(format!("INCLUDE {what} AS needs a column name"))),
            }
        } else {
            (format!("_kafka_{what}"), after(1))
        };
        added.push((format!("include.{what}"), name));
        changed = true;
        i = end;
    }

    // FROM source TABLE 'schema.table' (a table fed by a CDC source).
    if !source {
        let sig: Vec<usize> = (i..tokens.len()).filter(|&k| !is_blank(tok(tokens, k))).take(4).collect();
        if sig.first().is_some_and(|&k| keyword(tok(tokens, k)) == Keyword::FROM) {
            let usage = "FROM source TABLE 'schema.table'";
            let source_name = match sig.get(1).map(|&k| &tok(tokens, k).token) {
                Some(Token::Word(w)) if w.quote_style.is_some() => w.value.clone(),
                Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
                _ => return Err(syntax_error(format!("CREATE TABLE … FROM needs a source name: {usage}"))),
            };
            if sig.get(2).is_none_or(|&k| keyword(tok(tokens, k)) != Keyword::TABLE) {
                return Err(syntax_error(format!("CREATE TABLE … FROM {source_name} needs TABLE: {usage}")));
            }
            let upstream = match sig.get(3).map(|&k| &tok(tokens, k).token) {
                Some(Token::SingleQuotedString(name)) => name.clone(),
                _ => {
                    return Err(syntax_error(format!(
                        "CREATE TABLE … FROM {source_name} TABLE needs a quoted table name: {usage}"
                    )));
                }
            };
            added.push((CDC_SOURCE.to_string(), source_name));
            added.push((CDC_TABLE.to_string(), upstream));
            changed = true;
            i = sig.get(3).map_or(tokens.len(), |k| k + 1);
        }
    }

    // WITH (options): dotted option names become quoted identifiers.
    let rest_start = i;
    let mut with_range: Option<(usize, usize)> = None;
    let mut j = rest_start;
    while j < tokens.len() && is_blank(tok(tokens, j)) {
        j += 1;
    }
    if j < tokens.len() && keyword(tok(tokens, j)) == Keyword::WITH {
        let open = (j + 1..tokens.len()).find(|&k| !is_blank(tok(tokens, k)));
        if let Some(open) = open.filter(|&o| tok(tokens, o).token == Token::LParen) {
            let close = closing_paren(tokens, open).ok_or_else(|| syntax_error("unbalanced parentheses in WITH"))?;
            with_range = Some((open, close));
        }
    }
    let mut options: Vec<Tok> = Vec::new();
    let after_options = match with_range {
        Some((open, close)) => {
            out.extend_from_slice(span(tokens, rest_start..open));
            let (quoted, dotted) = quote_dotted_keys(span(tokens, open + 1..close));
            changed |= dotted;
            options.extend(quoted);
            close + 1
        }
        None => rest_start,
    };

    // FORMAT f ENCODE e [(options)]: options `format` and `encode` (and
    // the encode options as they are).
    let sig: Vec<usize> = (after_options..tokens.len()).filter(|&k| !is_blank(tok(tokens, k))).collect();
    let mut tail_start = after_options;
    if let Some(&f) = sig.first().filter(|&&f| is_word(tok(tokens, f), "format")) {
        let name = |k: Option<&usize>| match k.map(|&k| &tok(tokens, k).token) {
            Some(Token::Word(w)) => Ok(w.value.to_ascii_lowercase()),
            _ => Err(syntax_error("FORMAT needs a format name, e.g. FORMAT PLAIN ENCODE JSON")),
        };
        added.push(("format".to_string(), name(sig.get(1))?));
        tail_start = sig.get(1).map_or(f + 1, |k| k + 1);
        if sig.get(2).is_some_and(|&e| is_word(tok(tokens, e), "encode")) {
            added.push(("encode".to_string(), name(sig.get(3))?));
            tail_start = sig.get(3).map_or(tokens.len(), |k| k + 1);
            if let Some(&open) = sig.get(4).filter(|&&o| tok(tokens, o).token == Token::LParen) {
                let close =
                    closing_paren(tokens, open).ok_or_else(|| syntax_error("unbalanced parentheses after ENCODE"))?;
                let (quoted, _) = quote_dotted_keys(span(tokens, open + 1..close));
                if !options.is_empty() || !quoted.iter().all(|t| is_blank(t)) {
                    if !options.iter().all(|t| is_blank(t)) {
                        options.push(new(Token::Comma));
                    }
                    options.extend(quoted);
                }
                tail_start = close + 1;
            }
        }
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    for (key, value) in &added {
        if !options.iter().all(|t| is_blank(t)) {
            options.extend([new(Token::Comma), space()]);
        }
        options.extend(option_tokens(key, value));
    }
    if with_range.is_none() && !options.is_empty() {
        out.extend([space(), new(Token::make_keyword("WITH")), space()]);
    }
    if !options.is_empty() || with_range.is_some() {
        out.push(new(Token::LParen));
        out.extend(options);
        out.push(new(Token::RParen));
    }
    out.extend_from_slice(span(tokens, tail_start..));
    Ok(Some(out))
}

/// Removes a `WATERMARK FOR column AS expression` element from a column
/// list; returns the remaining elements and (column, expression text).
fn strip_watermark(list: &[Tok]) -> Result<(Vec<Tok>, Option<(String, String)>)> {
    // Elements are separated by commas at depth 0 of the list.
    let mut elements: Vec<&[Tok]> = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, token) in list.iter().enumerate() {
        match &token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                elements.push(span(list, start..i));
                start = i + 1;
            }
            _ => {}
        }
    }
    elements.push(span(list, start..));
    let mut kept: Vec<&[Tok]> = Vec::new();
    let mut watermark = None;
    for element in elements {
        let sig = significant(element);
        let first = sig.first().map(|&i| tok(element, i));
        if !first.is_some_and(|t| is_word(t, "watermark"))
            || sig.get(1).is_none_or(|&i| keyword(tok(element, i)) != Keyword::FOR)
        {
            kept.push(element);
            continue;
        }
        if watermark.is_some() {
            return Err(syntax_error("a table can have only one WATERMARK FOR clause"));
        }
        let usage = "WATERMARK FOR column AS expression, e.g. WATERMARK FOR ts AS ts - INTERVAL '5' SECOND";
        let column = match sig.get(2).map(|&i| &tok(element, i).token) {
            Some(Token::Word(w)) if w.quote_style.is_some() => w.value.clone(),
            Some(Token::Word(w)) => w.value.to_lowercase(),
            _ => return Err(syntax_error(format!("WATERMARK FOR needs a column name: {usage}"))),
        };
        let Some(&as_at) = sig.get(3).filter(|&&i| keyword(tok(element, i)) == Keyword::AS) else {
            return Err(syntax_error(format!("WATERMARK FOR {column} needs AS and an expression: {usage}")));
        };
        let expression = text(span(element, as_at + 1..));
        if expression.is_empty() {
            return Err(syntax_error(format!("WATERMARK FOR {column} AS needs an expression: {usage}")));
        }
        watermark = Some((column, expression));
    }
    let mut out = Vec::new();
    for (i, element) in kept.iter().enumerate() {
        if i > 0 {
            out.push(new(Token::Comma));
        }
        out.extend_from_slice(element);
    }
    Ok((out, watermark))
}

/// Option lists with `a.b.c = v` keys turned into `"a.b.c" = v`; reports
/// whether any key was dotted.
fn quote_dotted_keys(options: &[Tok]) -> (Vec<Tok>, bool) {
    let mut out = Vec::with_capacity(options.len());
    let mut dotted = false;
    let mut depth = 0i32;
    let mut at_key = true;
    let mut i = 0;
    while i < options.len() {
        let token = tok(options, i);
        match &token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => at_key = true,
            _ => {}
        }
        if at_key
            && depth == 0
            && let Token::Word(first) = &token.token
        {
            // word (. word)* directly followed (after blanks) by '='.
            let mut parts = vec![first.value.clone()];
            let mut j = i + 1;
            while j + 1 < options.len() && tok(options, j).token == Token::Period {
                match &tok(options, j + 1).token {
                    Token::Word(w) => parts.push(w.value.clone()),
                    Token::Number(n, _) => parts.push(n.clone()),
                    _ => break,
                }
                j += 2;
            }
            if parts.len() > 1 {
                out.push(quoted_word(&parts.join(".")));
                dotted = true;
                i = j;
                at_key = false;
                continue;
            }
            at_key = false;
        }
        out.push(token.clone());
        i += 1;
    }
    (out, dotted)
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    fn rewritten(sql: &str) -> String {
        rewrite(sql).expect("rewrite").unwrap_or_else(|| sql.to_string())
    }

    fn parses(sql: &str) {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    #[test]
    fn watermark_clauses_become_table_options() {
        let sql = "CREATE TABLE bid (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)";
        let out = rewritten(sql);
        assert_eq!(
            out,
            "CREATE TABLE bid (id BIGINT, ts TIMESTAMP) WITH (watermark_column = 'ts', \
             watermark_expression = 'ts - INTERVAL ''5'' SECOND')"
        );
        parses(&out);
        let with = rewritten(
            "create table t (watermark for \"Ts\" as \"Ts\", \"Ts\" timestamp, v int) with (x = 1); select 1",
        );
        assert!(with.contains("\"Ts\" timestamp, v int) with (x = 1, watermark_column = 'Ts'"), "{with}");
        assert!(with.ends_with("; select 1"), "{with}");
        parses(&with);
    }

    #[test]
    fn sources_views_and_dotted_options() {
        let out = rewritten(
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = 100)",
        );
        assert_eq!(
            out,
            "CREATE TABLE bid () WITH (connector = 'nexmark', \"nexmark.table.type\" = 'bid', \
             \"nexmark.event.num\" = 100, freshet_kind = 'source')"
        );
        parses(&out);
        let view = rewritten(
            "CREATE MATERIALIZED VIEW v AS SELECT window_start, count(*) FROM t GROUP BY 1 EMIT ON WINDOW CLOSE",
        );
        assert_eq!(
            view,
            "CREATE MATERIALIZED VIEW v WITH (emit = 'on_window_close') AS SELECT window_start, count(*) FROM t GROUP BY 1 "
        );
        parses(&view);
        let format = rewritten("CREATE SOURCE s (a INT) WITH (connector = 'kafka') FORMAT PLAIN ENCODE JSON");
        assert!(format.contains("format = 'plain', encode = 'json'"), "{format}");
        parses(&format);
        let include = rewritten(
            "CREATE SOURCE s (a INT) INCLUDE partition AS P INCLUDE offset INCLUDE key AS \"Key\" \
             WITH (connector = 'kafka') FORMAT PLAIN ENCODE CSV (delimiter = ';')",
        );
        assert!(include.contains("\"include.partition\" = 'p'"), "{include}");
        assert!(include.contains("\"include.offset\" = '_kafka_offset'"), "{include}");
        assert!(include.contains("\"include.key\" = 'Key'"), "{include}");
        assert!(include.contains("delimiter = ';'"), "{include}");
        parses(&include);
    }

    #[test]
    fn sinks_become_materialized_views_with_options() {
        let sql = "CREATE SINK s FROM v WITH (connector = 'kafka', properties.bootstrap.server = 'h:1', topic = 't') FORMAT UPSERT ENCODE JSON";
        let out = rewritten(sql);
        assert!(out.starts_with("CREATE MATERIALIZED VIEW s WITH ("), "{out}");
        assert!(out.contains("\"properties.bootstrap.server\" = 'h:1'"), "{out}");
        assert!(out.contains("format = 'upsert'") && out.contains("freshet_kind = 'sink'"), "{out}");
        assert!(out.ends_with("AS SELECT * FROM v"), "{out}");
        parses(&out);
        let query = rewritten(
            "CREATE SINK IF NOT EXISTS s AS SELECT a, count(*) FROM t GROUP BY a WITH (connector = 'postgres', table = 'x')",
        );
        assert!(query.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS s WITH (connector = 'postgres'"), "{query}");
        assert!(
            query.contains("freshet_kind = 'sink') AS ") && query.contains("SELECT a, count(*) FROM t GROUP BY a"),
            "{query}"
        );
        parses(&query);
        assert_eq!(rewritten("DROP SINK s"), "DROP MATERIALIZED VIEW s");
        let cdc = rewritten("CREATE TABLE o (id INT PRIMARY KEY) FROM pg TABLE 'public.orders'");
        assert!(cdc.contains("\"cdc.source\" = 'pg'") && cdc.contains("\"cdc.table\" = 'public.orders'"), "{cdc}");
        parses(&cdc);
    }

    #[test]
    fn plain_statements_are_left_alone() {
        for sql in [
            "SELECT 'watermark for x as y' FROM t",
            "CREATE TABLE t (a INT, b TEXT)",
            "CREATE MATERIALIZED VIEW v AS SELECT 1",
            "INSERT INTO t VALUES (1)",
        ] {
            assert_eq!(rewrite(sql).expect("rewrite"), None, "{sql}");
        }
        assert!(rewrite("CREATE TABLE t (a INT, WATERMARK FOR a)").is_err());
    }
}
