//! COPY … FROM STDIN: bulk loads in Postgres's text and CSV formats.
//!
//! Fields are parsed to strings (NULL kept apart from the empty string in
//! the text format), then cast column by column to the table's types with
//! Arrow's cast kernels, and written as one epoch like a multi-row INSERT.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::sql::sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};

use super::Engine;
use crate::catalog::Relation;
use crate::db::writes::{self, OnConflict};
use crate::error::{Result, SqlError, sqlstate};

/// A COPY FROM STDIN waiting for its data.
pub struct CopyIn {
    relation: Arc<Relation>,
    /// Table column index of each field in a data line.
    columns: Vec<usize>,
    csv: bool,
    header: bool,
    delimiter: u8,
    null: String,
}

impl CopyIn {
    pub fn columns(&self) -> usize {
        self.columns.len()
    }
}

/// Checks a COPY statement and returns what it will load.
pub fn prepare(engine: &Engine, statement: &Statement) -> Result<CopyIn> {
    let Statement::Copy { source, to, target, options, legacy_options, .. } = statement else {
        return Err(SqlError::internal("not a COPY statement"));
    };
    if *to || !matches!(target, CopyTarget::Stdin) {
        return Err(SqlError::not_supported("COPY other than COPY … FROM STDIN"));
    }
    let CopySource::Table { table_name, columns } = source else {
        return Err(SqlError::not_supported("COPY from a query"));
    };
    let relation = engine
        .catalog
        .by_name(&super::ddl::object_name(engine, table_name))
        .ok_or_else(|| SqlError::undefined_table(table_name))?;
    let columns = if columns.is_empty() {
        (0..relation.schema.fields().len()).collect()
    } else {
        columns
            .iter()
            .map(|c| {
                let name = if c.quote_style.is_some() { c.value.clone() } else { c.value.to_lowercase() };
                relation.schema.index_of(&name).map_err(|_| {
                    SqlError::new(
                        sqlstate::UNDEFINED_COLUMN,
                        format!("column \"{name}\" of relation \"{}\" does not exist", relation.name),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    let mut copy = CopyIn { relation, columns, csv: false, header: false, delimiter: b'\t', null: "\\N".into() };
    let mut delimiter = None;
    let mut null = None;
    for option in options {
        match option {
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => copy.csv = true,
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => copy.csv = false,
            CopyOption::Format(f) => {
                return Err(SqlError::not_supported(format!("COPY format {}", f.value)));
            }
            CopyOption::Header(h) => copy.header = *h,
            CopyOption::Delimiter(d) => delimiter = Some(*d),
            CopyOption::Null(n) => null = Some(n.clone()),
            other => return Err(SqlError::not_supported(format!("COPY option {other}"))),
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Csv(_) => copy.csv = true,
            CopyLegacyOption::Delimiter(d) => delimiter = Some(*d),
            CopyLegacyOption::Null(n) => null = Some(n.clone()),
            CopyLegacyOption::Header => copy.header = true,
            other => return Err(SqlError::not_supported(format!("COPY option {other}"))),
        }
    }
    if copy.csv {
        copy.delimiter = b',';
        copy.null = String::new();
    }
    if let Some(d) = delimiter {
        copy.delimiter = u8::try_from(u32::from(d))
            .map_err(|_| SqlError::new("22023", "COPY delimiter must be a single one-byte character"))?;
    }
    if let Some(n) = null {
        copy.null = n;
    }
    Ok(copy)
}

/// Parses the data of a COPY and inserts it; returns the number of rows.
pub async fn load(engine: &Engine, copy: &CopyIn, data: &[u8]) -> Result<usize> {
    let records = if copy.csv { parse_csv(copy, data)? } else { parse_text(copy, data)? };
    let schema = copy.relation.schema.clone();
    let rows = records.len();
    let mut columns: Vec<ArrayRef> = schema.fields().iter().map(|f| new_null_array(f.data_type(), rows)).collect();
    let safe = CastOptions { safe: false, ..Default::default() };
    for (field_index, &column) in copy.columns.iter().enumerate() {
        let strings = StringArray::from_iter(records.iter().map(|r| r.get(field_index).and_then(Option::as_deref)));
        let target = schema.field(column);
        let converted = if super::bytea::is_binary(target.data_type()) {
            super::bytea::text_to_bytea(&strings, target.data_type()).map_err(|e| e.to_string())
        } else {
            cast_with_options(&strings, target.data_type(), &safe).map_err(|e| e.to_string())
        };
        let converted = converted.map_err(|e| {
            SqlError::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("COPY {}, column {}: {e}", copy.relation.name, target.name()),
            )
        })?;
        if let Some(slot) = columns.get_mut(column) {
            *slot = converted;
        }
    }
    // Built nullable: the insert's checks name a NOT NULL column left empty.
    let fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let batch = RecordBatch::try_new_with_options(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    writes::write(&engine.coordinator, |w| writes::insert(w, &copy.relation, &[batch], &OnConflict::Error)).await
}

type Record = Vec<Option<String>>;

fn check_width(copy: &CopyIn, line: usize, fields: usize) -> Result<()> {
    if fields != copy.columns.len() {
        return Err(SqlError::new(
            "22P04",
            format!(
                "COPY {}, line {line}: expected {} columns, found {fields}",
                copy.relation.name,
                copy.columns.len()
            ),
        ));
    }
    Ok(())
}

fn parse_csv(copy: &CopyIn, data: &[u8]) -> Result<Vec<Record>> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(copy.header).delimiter(copy.delimiter).flexible(true).from_reader(data);
    let mut records = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| SqlError::new("22P04", format!("COPY {}: malformed CSV: {e}", copy.relation.name)))?;
        if record.len() == 1 && record.get(0) == Some("\\.") {
            break;
        }
        check_width(copy, i + 1, record.len())?;
        records.push(record.iter().map(|f| (f != copy.null).then(|| f.to_string())).collect());
    }
    Ok(records)
}

fn parse_text(copy: &CopyIn, data: &[u8]) -> Result<Vec<Record>> {
    let text = std::str::from_utf8(data).map_err(|_| SqlError::new("22021", "COPY data is not valid UTF-8"))?;
    let mut records = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        if line.is_empty() || (copy.header && i == 0) {
            continue;
        }
        let fields: Vec<Option<String>> =
            line.split(copy.delimiter as char).map(|f| if f == copy.null { None } else { Some(unescape(f)) }).collect();
        check_width(copy, i + 1, fields.len())?;
        records.push(fields);
    }
    Ok(records)
}

/// Backslash escapes of the text format.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
