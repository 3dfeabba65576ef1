//! A simple-protocol message's text read once into the [`Command`] the
//! server acts on: the statements that do not go through DataFusion's
//! query path (they stream, speak COPY, or end a transaction block) are
//! told apart here, in one place, from everything else
//! ([`Command::Statements`], for the statement router).
//!
//! - `SUBSCRIBE …`, `COPY (SUBSCRIBE …) TO STDOUT`, and `DECLARE c CURSOR
//!   FOR SUBSCRIBE …` / `FETCH` / `CLOSE` (see `server::subscribe`);
//! - `COPY … TO STDOUT` (`server::copy_out`) and other COPY statements
//!   (`COPY … FROM STDIN`, `server::copy`);
//! - `COMMIT` / `END` of a transaction block (`server::transaction`);
//! - `FLUSH`.
//!
//! Recognizing costs one look at the first word for anything else, so the
//! common statement pays nothing.

use std::collections::HashMap;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::catalog::QualifiedName;
use crate::error::{Result, SqlError, sqlstate};

/// What the server does with a simple-protocol message.
#[derive(Debug)]
pub enum Command {
    /// A subscription statement (streamed, or on a cursor).
    Subscription(SubscribeCommand),
    /// `COPY table | (query) TO STDOUT`.
    CopyOut(Box<Statement>, CopyOut),
    /// Any other COPY (`COPY t FROM STDIN`).
    Copy(Box<Statement>),
    /// `COMMIT`, `END` [`WORK` | `TRANSACTION`].
    Commit,
    /// `FLUSH`: every write returns once committed, so there is nothing to
    /// wait for.
    Flush,
    /// Anything else: statements for the statement router.
    Statements,
}

/// Reads `sql` (one simple Query message). A malformed statement of the
/// kinds above is an error here; anything unrecognized is
/// [`Command::Statements`].
pub fn parse(sql: &str) -> Result<Command> {
    let first = first_word(sql);
    if first.eq_ignore_ascii_case("copy") {
        if let Some(parsed) = subscription(sql) {
            return parsed.map(Command::Subscription);
        }
        // COPY (query with Freshet's own syntax) TO STDOUT: as rewritten.
        let rewritten = super::syntax::rewrite(sql).ok().flatten();
        if let Some(parsed) = copy_out(rewritten.as_deref().unwrap_or(sql)) {
            return parsed.map(|(statement, copy)| Command::CopyOut(Box::new(statement), copy));
        }
        let dialect = PostgreSqlDialect {};
        return Ok(match datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql) {
            Ok(mut statements) if statements.len() == 1 => Command::Copy(Box::new(statements.remove(0))),
            _ => Command::Statements,
        });
    }
    if ["subscribe", "declare", "fetch", "close"].iter().any(|w| first.eq_ignore_ascii_case(w)) {
        return Ok(subscription(sql).transpose()?.map_or(Command::Statements, Command::Subscription));
    }
    if ["commit", "end"].iter().any(|w| first.eq_ignore_ascii_case(w)) {
        let bare = sql.trim().trim_end_matches(';').trim().to_ascii_lowercase();
        let words: Vec<&str> = bare.split_whitespace().collect();
        if matches!(words.as_slice(), ["commit"] | ["end"] | ["commit" | "end", "work" | "transaction"]) {
            return Ok(Command::Commit);
        }
    }
    if first.eq_ignore_ascii_case("flush") && sql.trim().trim_end_matches(';').trim().eq_ignore_ascii_case("flush") {
        return Ok(Command::Flush);
    }
    Ok(Command::Statements)
}

/// The first word of `sql` (letters only), or "".
fn first_word(sql: &str) -> &str {
    let trimmed = sql.trim_start();
    let end = trimmed.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(trimmed.len());
    trimmed.get(..end).unwrap_or("")
}

/// What to subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub relation: QualifiedName,
    pub snapshot: bool,
}

/// A SUBSCRIBE statement, or a statement on a subscription cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeCommand {
    Subscribe(Target),
    Copy {
        target: Target,
        csv: bool,
    },
    Declare {
        cursor: String,
        target: Target,
    },
    /// `count` None: ALL.
    Fetch {
        cursor: String,
        count: Option<usize>,
        timeout: Option<Duration>,
    },
    /// `None`: CLOSE ALL.
    Close(Option<String>),
}

/// Significant tokens as lowercase words (quoted identifiers keep case),
/// numbers, strings and punctuation.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Number(String),
    Text(String),
    Punct(Token),
}

fn tokens(sql: &str) -> Option<Vec<Tok>> {
    let dialect = PostgreSqlDialect {};
    let raw = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    Some(
        raw.into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .filter(|t| *t != Token::SemiColon)
            .map(|t| match t {
                Token::Word(w) if w.quote_style.is_some() => Tok::Quoted(w.value),
                Token::Word(w) => Tok::Word(w.value.to_lowercase()),
                Token::Number(n, _) => Tok::Number(n),
                Token::SingleQuotedString(s) => Tok::Text(s),
                other => Tok::Punct(other),
            })
            .collect(),
    )
}

fn word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x == w)
}

fn syntax(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::SYNTAX_ERROR, message)
}

/// `WITH (key = value, …)` at `at`, if there: the options and where they end.
fn options(t: &[Tok], at: usize) -> Result<(HashMap<String, String>, usize)> {
    let mut found = HashMap::new();
    if !word(t.get(at), "with") {
        return Ok((found, at));
    }
    if t.get(at + 1) != Some(&Tok::Punct(Token::LParen)) {
        return Err(syntax("WITH needs (option = value, …)"));
    }
    let mut i = at + 2;
    loop {
        let key = match t.get(i) {
            Some(Tok::Word(k)) | Some(Tok::Quoted(k)) => k.to_lowercase(),
            Some(Tok::Punct(Token::RParen)) => return Ok((found, i + 1)),
            _ => return Err(syntax("expected an option name in WITH (…)")),
        };
        i += 1;
        if t.get(i) == Some(&Tok::Punct(Token::Eq)) {
            i += 1;
        }
        let value = match t.get(i) {
            Some(Tok::Word(v)) | Some(Tok::Quoted(v)) | Some(Tok::Number(v)) | Some(Tok::Text(v)) => v.clone(),
            _ => return Err(syntax(format!("option {key} needs a value"))),
        };
        found.insert(key, value);
        i += 1;
        match t.get(i) {
            Some(Tok::Punct(Token::Comma)) => i += 1,
            Some(Tok::Punct(Token::RParen)) => return Ok((found, i + 1)),
            _ => return Err(syntax("expected , or ) in WITH (…)")),
        }
    }
}

/// `SUBSCRIBE [TO] name [WITH (…)]` starting at `at`; where it ends.
fn target(t: &[Tok], at: usize) -> Result<(Target, usize)> {
    let mut i = at + 1;
    if word(t.get(i), "to") {
        i += 1;
    }
    let mut parts = Vec::new();
    loop {
        match t.get(i) {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => parts.push(w.clone()),
            _ => return Err(syntax("SUBSCRIBE needs a table or materialized view name")),
        }
        i += 1;
        if t.get(i) == Some(&Tok::Punct(Token::Period)) {
            i += 1;
        } else {
            break;
        }
    }
    let relation = match parts.as_slice() {
        [name] => QualifiedName { schema: "public".to_string(), name: name.clone() },
        [schema, name] => QualifiedName { schema: schema.clone(), name: name.clone() },
        _ => return Err(syntax("SUBSCRIBE takes [schema.]name")),
    };
    let (options, end) = options(t, i)?;
    let mut snapshot = true;
    for (key, value) in options {
        match key.as_str() {
            "snapshot" => {
                snapshot = match value.to_lowercase().as_str() {
                    "true" | "on" | "t" | "1" => true,
                    "false" | "off" | "f" | "0" => false,
                    other => {
                        return Err(SqlError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("snapshot = '{other}' (true or false)"),
                        ));
                    }
                }
            }
            other => {
                return Err(SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("unrecognized SUBSCRIBE option \"{other}\" (options: snapshot)"),
                ));
            }
        }
    }
    Ok((Target { relation, snapshot }, end))
}

/// The statement in `sql`, if it is one this module serves. FETCH and
/// CLOSE are recognized in any form; whether they name a subscription
/// cursor is for the caller to check.
pub fn subscription(sql: &str) -> Option<Result<SubscribeCommand>> {
    let lower: String = sql.trim_start().chars().take(10).collect::<String>().to_ascii_lowercase();
    if !["subscribe", "copy", "declare", "fetch", "close"].iter().any(|w| lower.starts_with(w)) {
        return None;
    }
    let t = tokens(sql)?;
    let done = |end: usize, command: SubscribeCommand| -> Result<SubscribeCommand> {
        if end == t.len() { Ok(command) } else { Err(syntax("unexpected text after SUBSCRIBE")) }
    };
    match t.first() {
        Some(Tok::Word(w)) if w == "subscribe" => {
            Some(target(&t, 0).and_then(|(target, end)| done(end, SubscribeCommand::Subscribe(target))))
        }
        Some(Tok::Word(w)) if w == "copy" => {
            if t.get(1) != Some(&Tok::Punct(Token::LParen)) || !word(t.get(2), "subscribe") {
                return None;
            }
            Some((|| {
                let (target, end) = target(&t, 2)?;
                if t.get(end) != Some(&Tok::Punct(Token::RParen))
                    || !word(t.get(end + 1), "to")
                    || !word(t.get(end + 2), "stdout")
                {
                    return Err(syntax("COPY (SUBSCRIBE …) TO STDOUT"));
                }
                // COPY's options: WITH (FORMAT csv) or WITH CSV.
                let mut csv = false;
                let mut end = end + 3;
                if word(t.get(end), "with") && word(t.get(end + 1), "csv") {
                    csv = true;
                    end += 2;
                } else if word(t.get(end), "csv") {
                    csv = true;
                    end += 1;
                } else {
                    let (options, after) = options(&t, end)?;
                    if let Some(format) = options.get("format") {
                        csv = match format.to_lowercase().as_str() {
                            "csv" => true,
                            "text" => false,
                            other => {
                                return Err(SqlError::not_supported(format!("COPY (SUBSCRIBE …) in FORMAT {other}")));
                            }
                        };
                    }
                    end = after;
                }
                done(end, SubscribeCommand::Copy { target, csv })
            })())
        }
        Some(Tok::Word(w)) if w == "declare" => {
            let cursor = match t.get(1) {
                Some(Tok::Word(c)) | Some(Tok::Quoted(c)) => c.clone(),
                _ => return None,
            };
            let at = t.iter().position(|x| word(Some(x), "for"))?;
            if !word(t.get(at + 1), "subscribe") {
                return None;
            }
            Some(target(&t, at + 1).and_then(|(target, end)| done(end, SubscribeCommand::Declare { cursor, target })))
        }
        Some(Tok::Word(w)) if w == "fetch" => {
            let mut i = 1;
            let mut count = Some(1);
            if word(t.get(i), "forward") || word(t.get(i), "next") {
                i += 1;
            }
            match t.get(i) {
                Some(Tok::Word(a)) if a == "all" => {
                    count = None;
                    i += 1;
                }
                Some(Tok::Number(n)) => {
                    count = Some(n.parse().ok()?);
                    i += 1;
                }
                _ => {}
            }
            if word(t.get(i), "from") || word(t.get(i), "in") {
                i += 1;
            }
            let cursor = match t.get(i) {
                Some(Tok::Word(c)) | Some(Tok::Quoted(c)) => c.clone(),
                _ => return None,
            };
            let (options, end) = match options(&t, i + 1) {
                Ok(found) => found,
                Err(error) => return Some(Err(error)),
            };
            let timeout = match options.get("timeout") {
                None => None,
                Some(text) => match crate::duration::parse(text, crate::duration::Unit::Seconds) {
                    Some(d) => Some(d),
                    None => {
                        return Some(Err(SqlError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("timeout = '{text}' is not a duration (e.g. '1s', '500ms')"),
                        )));
                    }
                },
            };
            Some(done(end, SubscribeCommand::Fetch { cursor, count, timeout }))
        }
        Some(Tok::Word(w)) if w == "close" => match t.get(1) {
            Some(Tok::Word(a)) if a == "all" => Some(done(2, SubscribeCommand::Close(None))),
            Some(Tok::Word(c)) | Some(Tok::Quoted(c)) => Some(done(2, SubscribeCommand::Close(Some(c.clone())))),
            _ => None,
        },
        _ => None,
    }
}

/// What a COPY … TO STDOUT asks for.
#[derive(Debug)]
pub struct CopyOut {
    /// The query whose rows are copied (a table's: `SELECT * FROM t`).
    pub query: String,
    pub csv: bool,
    pub header: bool,
}

/// The COPY … TO STDOUT in `sql`, if that is what it is.
fn copy_out(sql: &str) -> Option<Result<(Statement, CopyOut)>> {
    let trimmed = sql.trim_start();
    // `get`, not `[..4]`: the fourth byte may fall inside a character.
    if !trimmed.get(..4).is_some_and(|word| word.eq_ignore_ascii_case("copy")) {
        return None;
    }
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let statement = statements.remove(0);
    let Statement::Copy { source, to: true, target: CopyTarget::Stdout, options, legacy_options, .. } = &statement
    else {
        return None;
    };
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table { table_name, columns } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table { table_name, columns } => {
            let list: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
            format!("SELECT {} FROM {table_name}", list.join(", "))
        }
    };
    let mut copy = CopyOut { query, csv: false, header: false };
    for option in options {
        match option {
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => copy.csv = true,
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => copy.csv = false,
            CopyOption::Header(header) => copy.header = *header,
            other => return Some(Err(SqlError::not_supported(format!("COPY TO option {other}")))),
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Csv(csv_options) => {
                copy.csv = true;
                for csv_option in csv_options {
                    match csv_option {
                        CopyLegacyCsvOption::Header => copy.header = true,
                        other => return Some(Err(SqlError::not_supported(format!("COPY TO option {other}")))),
                    }
                }
            }
            CopyLegacyOption::Header => copy.header = true,
            other => return Some(Err(SqlError::not_supported(format!("COPY TO option {other}")))),
        }
    }
    Some(Ok((statement, copy)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, snapshot: bool) -> Target {
        Target { relation: QualifiedName { schema: "public".into(), name: name.into() }, snapshot }
    }

    #[test]
    fn subscription_statements_are_recognized() {
        let parsed = |sql: &str| subscription(sql).expect("ours").expect("valid");
        assert_eq!(parsed("SUBSCRIBE TO totals"), SubscribeCommand::Subscribe(target("totals", true)));
        assert_eq!(
            parsed("subscribe Totals WITH (snapshot = false);"),
            SubscribeCommand::Subscribe(target("totals", false))
        );
        assert_eq!(
            parsed("COPY (SUBSCRIBE totals) TO STDOUT WITH (FORMAT csv)"),
            SubscribeCommand::Copy { target: target("totals", true), csv: true }
        );
        assert_eq!(
            parsed("DECLARE c CURSOR FOR SUBSCRIBE TO totals"),
            SubscribeCommand::Declare { cursor: "c".into(), target: target("totals", true) }
        );
        assert_eq!(
            parsed("FETCH ALL FROM c WITH (timeout = '250ms')"),
            SubscribeCommand::Fetch { cursor: "c".into(), count: None, timeout: Some(Duration::from_millis(250)) }
        );
        assert_eq!(parsed("FETCH 5 c"), SubscribeCommand::Fetch { cursor: "c".into(), count: Some(5), timeout: None });
        assert_eq!(parsed("CLOSE ALL"), SubscribeCommand::Close(None));
        assert_eq!(parsed("close c"), SubscribeCommand::Close(Some("c".into())));
        assert!(subscription("SELECT 1").is_none());
        assert!(subscription("COPY t FROM STDIN").is_none());
        assert!(subscription("DECLARE c CURSOR FOR SELECT 1").is_none());
        assert_eq!(
            subscription("SUBSCRIBE TO v WITH (snapshot = maybe)").expect("ours").expect_err("bad").code,
            "22023"
        );
        assert_eq!(subscription("SUBSCRIBE").expect("ours").expect_err("no name").code, "42601");
    }

    #[test]
    fn each_message_is_read_into_one_command() {
        let kind = |sql: &str| match parse(sql).expect("valid") {
            Command::Subscription(_) => "subscription",
            Command::CopyOut(..) => "copy out",
            Command::Copy(_) => "copy",
            Command::Commit => "commit",
            Command::Flush => "flush",
            Command::Statements => "statements",
        };
        assert_eq!(kind("SUBSCRIBE TO totals"), "subscription");
        assert_eq!(kind("copy (subscribe totals) to stdout"), "subscription");
        assert_eq!(kind("FETCH 5 c"), "subscription");
        assert_eq!(kind("COPY t TO STDOUT WITH (FORMAT csv, HEADER)"), "copy out");
        assert_eq!(kind("COPY (SELECT 1) TO STDOUT"), "copy out");
        assert_eq!(kind("COPY t FROM STDIN"), "copy");
        assert_eq!(kind("commit;"), "commit");
        assert_eq!(kind("END TRANSACTION"), "commit");
        assert_eq!(kind(" FLUSH ;"), "flush");
        assert_eq!(kind("SELECT 1"), "statements");
        assert_eq!(kind("COMMITTED"), "statements");
        assert_eq!(kind("DECLARE c CURSOR FOR SELECT 1"), "statements");
        assert_eq!(kind("commit and chain"), "statements");
        assert_eq!(kind("é"), "statements");
        assert_eq!(parse("SUBSCRIBE").expect_err("no name").code, "42601");
        assert_eq!(parse("COPY t TO STDOUT WITH (DELIMITER ',')").expect_err("unsupported").code, "0A000");
    }
}
