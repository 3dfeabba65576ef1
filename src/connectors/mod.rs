//! Connectors: where a source's rows come from.
//!
//! A [`SourceReader`] turns a source's `WITH (connector = …)` options into
//! batches of rows. Readers hold no position of their own: the reading
//! operator keeps a [`SourcePosition`] in its state, checkpointed with the
//! rest of the view, and a reader reads the same rows again from the same
//! position at the same epoch time. That is what makes a replay after a
//! crash feed the view exactly what the lost epochs fed it (exactly-once
//! from source to view). The generators here (`nexmark`, `datagen`) are
//! deterministic by construction. `kafka` is not (a read takes what has
//! been fetched so far), so its readers say so and the views reading them
//! checkpoint every epoch: their positions and rows commit together.
//!
//! A record a reader cannot turn into a row (a payload that does not parse
//! or does not fit the columns) is handed back as a [`BadRecord`]: the
//! reading operator keeps it, with its offset and the error, where
//! `freshet_catalog.source_errors` shows it, and the stream goes on.
//!
//! This module may call `stream` types (schemas, errors); the stream layer
//! reaches connectors only through [`SourceReader`].

pub mod avro;
pub mod changelog;
pub mod datagen;
pub mod decode;
pub mod file;
#[cfg(test)]
mod fuzz;
pub mod kafka;
pub mod nexmark;
mod nexmark_columns;
pub mod payload;
pub mod postgres_cdc;
pub mod sink;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{Result, SqlError, sqlstate};
pub use crate::stream::connector::{
    BadRecord, Connector, ConnectorOptions, KeyedChanges, KeyedReader, Reader, Retry, SourcePosition, SourceReader,
};

/// The option through which a table hands its primary-key column names
/// (comma-separated) to a keyed connector.
pub const PRIMARY_KEY_OPTION: &str = "primary_key";

/// The reader of a source; `declared` is the column list of CREATE SOURCE
/// (`None` when left to the connector). Postgres CDC and Kafka's UPSERT and
/// DEBEZIUM formats read keyed changes, the rest append rows.
pub fn reader(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Reader> {
    let appends = |reader: Arc<dyn SourceReader>| Ok(Reader::Appends(reader));
    match options.connector() {
        Some("nexmark") => appends(Arc::new(nexmark::NexmarkReader::new(options, declared)?)),
        Some("datagen") => appends(Arc::new(datagen::DatagenReader::new(options, declared)?)),
        Some("kafka") => {
            let reader = Arc::new(kafka::KafkaReader::new(options, declared)?);
            if reader.keyed() { Ok(Reader::Keyed(reader)) } else { appends(reader) }
        }
        Some("file") => appends(Arc::new(file::FileReader::new(options, declared)?)),
        Some(postgres_cdc::CONNECTOR) => {
            Ok(Reader::Keyed(Arc::new(postgres_cdc::PostgresCdcReader::new(options, declared)?)))
        }
        Some(other) => Err(SqlError::not_supported(format!(
            "connector '{other}' (connectors: kafka, postgres-cdc, file, nexmark, datagen)"
        ))),
        None => Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "a source needs WITH (connector = 'kafka' | 'postgres-cdc' | 'file' | 'nexmark' | 'datagen', …)",
        )),
    }
}

/// Checks that declared columns are those the connector produces.
pub fn check_declared(connector: &str, produced: &SchemaRef, declared: Option<&SchemaRef>) -> Result<()> {
    let Some(declared) = declared.filter(|d| !d.fields().is_empty()) else { return Ok(()) };
    if declared.fields().len() != produced.fields().len() {
        return Err(SqlError::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "connector '{connector}' produces {} columns ({}), the source declares {}",
                produced.fields().len(),
                produced.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                declared.fields().len()
            ),
        ));
    }
    for (want, have) in produced.fields().iter().zip(declared.fields()) {
        let compatible = want.data_type() == have.data_type()
            || datafusion::arrow::compute::can_cast_types(want.data_type(), have.data_type());
        if want.name() != have.name() || !compatible {
            return Err(SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "connector '{connector}' produces column \"{}\" {}, the source declares \"{}\" {}",
                    want.name(),
                    want.data_type(),
                    have.name(),
                    have.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// Records due at `now_nanos` for a paced reader: `gap_nanos` apart from
/// the start (a gap of 0 is unpaced: everything is due).
pub fn due(position: &SourcePosition, now_nanos: i64, gap_nanos: u64) -> u64 {
    if gap_nanos == 0 {
        return u64::MAX;
    }
    let started = if position.started_nanos == 0 { now_nanos } else { position.started_nanos };
    let elapsed = now_nanos.saturating_sub(started).max(0) as u64;
    // The first record is due at the start.
    elapsed / gap_nanos + 1
}
