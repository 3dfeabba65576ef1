//! `ENCODE AVRO`: Avro-encoded message payloads to rows, with Arrow's own
//! Avro decoder (`arrow-avro`, vectorized into Arrow builders).
//!
//! Where the writer's schema comes from:
//! - `schema.registry = 'http://host:8081'`: messages are in the Confluent
//!   wire format (byte 0, a 4-byte big-endian schema id, the Avro body).
//!   Each id is fetched from the registry (`GET /schemas/ids/{id}`) the
//!   first time a read meets it and kept for the reader's life, so a
//!   producer moving to a new schema version is followed without a
//!   restart. At CREATE the subject's latest version (`<topic>-value`, or
//!   `schema.registry.subject`) is fetched and checked against the columns.
//!   `schema.registry.username` / `.password` send basic authentication.
//! - `schema = '{"type": "record", …}'`: an inline schema; each message is
//!   one Avro binary datum written with it (no framing).
//!
//! Columns take the writer schema's top-level fields of the same name
//! (exactly, else ignoring case), cast to the column's type (an Avro `int`
//! into a BIGINT column, an enum into TEXT, …). A column the writer schema
//! lacks is NULL: a producer on an older schema version still makes rows.
//! A message that does not decode, or whose schema id the registry does
//! not know, is a bad record. A registry that cannot be reached is not the
//! records' fault: [`AvroDecoder::resolve`] fails and the reader retries.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::{CastOptions, can_cast_types, cast_with_options, concat_batches};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use parking_lot::Mutex;

use super::ConnectorOptions;
use super::payload::{Decoded, Payloads};
use crate::error::{Result, SqlError, sqlstate};

/// Option names.
pub const REGISTRY: &str = "schema.registry";
pub const SUBJECT: &str = "schema.registry.subject";
pub const USERNAME: &str = "schema.registry.username";
pub const PASSWORD: &str = "schema.registry.password";
pub const INLINE_SCHEMA: &str = "schema";

/// Whether `key` is an `ENCODE AVRO` option.
pub fn is_option(key: &str) -> bool {
    matches!(key, REGISTRY | SUBJECT | USERNAME | PASSWORD | INLINE_SCHEMA)
}

/// How long one registry request may take.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(3);
/// Rows per decoded batch before the decoder hands them over.
const BATCH_ROWS: usize = 8192;

/// Where the writer schemas come from.
enum WriterSchemas {
    Registry(Registry),
    /// The inline schema and the single-object header that tells the
    /// decoder to use it (raw datums carry no header of their own).
    Inline {
        header: [u8; 10],
    },
}

/// Decodes Avro payloads into rows of `target`.
pub struct AvroDecoder {
    target: SchemaRef,
    schemas: WriterSchemas,
    state: Mutex<State>,
}

struct State {
    store: SchemaStore,
    /// Registry schema ids the registry does not have, with why.
    missing: HashMap<u32, String>,
    /// Built from `store`; rebuilt when it grows and after a failed decode
    /// (a decoder that failed mid-record is not reusable).
    decoder: Option<Decoder>,
}

fn bad_option(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, message)
}

impl AvroDecoder {
    /// From the source's options; `topic` names the default registry subject.
    pub fn new(target: SchemaRef, options: &ConnectorOptions, topic: Option<&str>) -> Result<Self> {
        match (options.get(REGISTRY), options.get(INLINE_SCHEMA)) {
            (Some(_), Some(_)) => Err(bad_option("ENCODE AVRO takes schema.registry = '…' or schema = '…', not both")),
            (None, None) => Err(bad_option(
                "ENCODE AVRO needs schema.registry = 'http://host:port' or an inline schema = '{\"type\": \"record\", …}'",
            )),
            (Some(url), None) => {
                let registry = Registry::new(url, options, topic)?;
                let state = State {
                    store: SchemaStore::new_with_type(FingerprintAlgorithm::Id),
                    missing: HashMap::new(),
                    decoder: None,
                };
                Ok(Self { target, schemas: WriterSchemas::Registry(registry), state: Mutex::new(state) })
            }
            (None, Some(json)) => {
                let schema = AvroSchema::new(json.to_string());
                let fingerprint = schema
                    .fingerprint(FingerprintAlgorithm::Rabin)
                    .map_err(|e| bad_option(format!("schema = '…' is not an Avro schema: {}", message(e))))?;
                let Fingerprint::Rabin(rabin) = fingerprint else {
                    return Err(SqlError::internal("a Rabin fingerprint was asked for"));
                };
                let mut header = [0u8; 10];
                header[..2].copy_from_slice(&arrow_avro::schema::SINGLE_OBJECT_MAGIC);
                header[2..].copy_from_slice(&rabin.to_le_bytes());
                let mut store = SchemaStore::new();
                store.set(fingerprint, schema.clone()).map_err(|e| bad_option(message(e)))?;
                let writer = writer_arrow_schema(&schema, fingerprint)
                    .map_err(|e| bad_option(format!("schema = '…' cannot be read: {e}")))?;
                check_columns(&target, &writer, "the inline schema")?;
                let state = State { store, missing: HashMap::new(), decoder: None };
                Ok(Self { target, schemas: WriterSchemas::Inline { header }, state: Mutex::new(state) })
            }
        }
    }

    /// At CREATE: the registry answers, and its latest schema for the
    /// subject has every column.
    pub fn check(&self) -> Result<()> {
        let WriterSchemas::Registry(registry) = &self.schemas else { return Ok(()) };
        let (id, version, schema) = registry.latest()?;
        let writer = writer_arrow_schema(&schema, Fingerprint::Id(id)).map_err(|e| {
            SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "schema registry subject \"{}\" (id {id}) is not a readable Avro record: {e}",
                    registry.subject
                ),
            )
        })?;
        check_columns(
            &self.target,
            &writer,
            &format!("schema registry subject \"{}\" version {version}", registry.subject),
        )?;
        let mut state = self.state.lock();
        if state.store.lookup(&Fingerprint::Id(id)).is_none() {
            state.store.set(Fingerprint::Id(id), schema).map_err(|e| SqlError::internal(message(e)))?;
            state.decoder = None;
        }
        Ok(())
    }

    /// Fetches the schemas of ids the payloads name that are not known
    /// yet. Fails when the registry cannot be reached (the read should be
    /// retried); an id the registry does not have makes its records bad.
    pub fn resolve(&self, payloads: &Payloads) -> Result<()> {
        let WriterSchemas::Registry(registry) = &self.schemas else { return Ok(()) };
        let mut unknown = HashSet::new();
        {
            let state = self.state.lock();
            for i in 0..payloads.len() {
                if let Some(id) = schema_id(payloads.get(i))
                    && !state.missing.contains_key(&id)
                    && state.store.lookup(&Fingerprint::Id(id)).is_none()
                {
                    unknown.insert(id);
                }
            }
        }
        for id in unknown {
            let found = registry.schema_by_id(id)?;
            let mut state = self.state.lock();
            match found {
                Ok(schema) => match writer_arrow_schema(&schema, Fingerprint::Id(id)) {
                    Ok(_) => {
                        state.store.set(Fingerprint::Id(id), schema).map_err(|e| SqlError::internal(message(e)))?;
                        state.decoder = None;
                    }
                    Err(error) => {
                        state.missing.insert(id, format!("schema id {id} is not a readable Avro record: {error}"));
                    }
                },
                Err(why) => {
                    state.missing.insert(id, why);
                }
            }
        }
        Ok(())
    }

    /// Decodes every payload (after [`resolve`](Self::resolve)).
    pub fn decode(&self, payloads: &Payloads) -> Result<Decoded> {
        let mut state = self.state.lock();
        // Payloads that cannot be decoded at all, found without decoding.
        let mut bad = Vec::new();
        let mut candidates = Vec::with_capacity(payloads.len());
        for i in 0..payloads.len() {
            match self.precheck(&state, payloads.get(i)) {
                Ok(()) => candidates.push(i),
                Err(error) => bad.push((i, error)),
            }
        }
        if candidates.is_empty() {
            return Ok(Decoded { rows: RecordBatch::new_empty(self.target.clone()), bad });
        }
        // One pass over all; only if it fails, one payload at a time.
        if let Ok(rows) = self.decode_all(&mut state, payloads, &candidates)
            && rows.num_rows() == candidates.len()
        {
            return Ok(Decoded { rows, bad });
        }
        state.decoder = None;
        let mut good = Vec::new();
        for &i in &candidates {
            match self.decode_all(&mut state, payloads, &[i]) {
                Ok(row) if row.num_rows() == 1 => good.push(row),
                outcome => {
                    state.decoder = None;
                    bad.push((
                        i,
                        match outcome {
                            Ok(row) if row.num_rows() == 0 => "the message ends inside an Avro record".to_string(),
                            Ok(_) => "the message holds more than one Avro record".to_string(),
                            Err(error) => error,
                        },
                    ));
                }
            }
        }
        bad.sort_by_key(|(i, _)| *i);
        let rows = concat_batches(&self.target, &good)?;
        Ok(Decoded { rows, bad })
    }

    /// Why a payload cannot be decoded before trying, if it cannot.
    fn precheck(&self, state: &State, payload: &[u8]) -> std::result::Result<(), String> {
        match &self.schemas {
            WriterSchemas::Inline { .. } => Ok(()),
            WriterSchemas::Registry(_) => match schema_id(payload) {
                None => {
                    Err("the message is not in the schema registry's wire format (byte 0, then a 4-byte schema id)"
                        .to_string())
                }
                Some(id) => match state.missing.get(&id) {
                    Some(why) => Err(why.clone()),
                    None if state.store.lookup(&Fingerprint::Id(id)).is_none() => {
                        Err(format!("schema id {id} was not looked up in the schema registry"))
                    }
                    None => Ok(()),
                },
            },
        }
    }

    /// Decodes the payloads `which` in one pass, as rows of the target.
    fn decode_all(
        &self,
        state: &mut State,
        payloads: &Payloads,
        which: &[usize],
    ) -> std::result::Result<RecordBatch, String> {
        if state.decoder.is_none() {
            let decoder = ReaderBuilder::new()
                .with_batch_size(BATCH_ROWS)
                .with_writer_schema_store(state.store.clone())
                .build_decoder()
                .map_err(|e| e.to_string())?;
            state.decoder = Some(decoder);
        }
        let decoder = state.decoder.as_mut().ok_or("no Avro decoder")?;
        // Batches end where the writer schema changes.
        let mut batches = Vec::new();
        for &i in which {
            if let WriterSchemas::Inline { header } = &self.schemas {
                feed(decoder, header, &mut batches)?;
            }
            feed(decoder, payloads.get(i), &mut batches)?;
        }
        if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(batch);
        }
        let conformed = batches.iter().map(|b| conform(b, &self.target)).collect::<std::result::Result<Vec<_>, _>>();
        let conformed = conformed.map_err(message)?;
        concat_batches(&self.target, &conformed).map_err(message)
    }
}

/// Feeds one message's bytes to the decoder.
fn feed(decoder: &mut Decoder, mut data: &[u8], batches: &mut Vec<RecordBatch>) -> std::result::Result<(), String> {
    while !data.is_empty() {
        let used = decoder.decode(data).map_err(|e| e.to_string())?;
        data = data.get(used..).unwrap_or_default();
        if decoder.batch_is_full() {
            // A new writer schema begins: the rows so far go out first.
            if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
                batches.push(batch);
            }
        } else if used == 0 {
            return Err("the message ends inside an Avro record".to_string());
        }
    }
    Ok(())
}

/// The schema id of a message in the Confluent wire format.
fn schema_id(payload: &[u8]) -> Option<u32> {
    match payload {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The Arrow schema the decoder gives rows of one Avro schema.
fn writer_arrow_schema(schema: &AvroSchema, fingerprint: Fingerprint) -> std::result::Result<SchemaRef, String> {
    let mut store = SchemaStore::new_with_type(match fingerprint {
        Fingerprint::Rabin(_) => FingerprintAlgorithm::Rabin,
        _ => FingerprintAlgorithm::Id,
    });
    store.set(fingerprint, schema.clone()).map_err(|e| e.to_string())?;
    let decoder = ReaderBuilder::new().with_writer_schema_store(store).build_decoder().map_err(message)?;
    Ok(decoder.schema())
}

/// The field of `writer` that feeds column `name`: same name, else the
/// same but for case.
fn field_for(writer: &Schema, name: &str) -> Option<usize> {
    writer.index_of(name).ok().or_else(|| writer.fields().iter().position(|f| f.name().eq_ignore_ascii_case(name)))
}

/// Every column has a field in the writer schema, of a type it casts to.
fn check_columns(target: &SchemaRef, writer: &SchemaRef, what: &str) -> Result<()> {
    let fields = || writer.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    for column in target.fields() {
        let Some(index) = field_for(writer, column.name()) else {
            return Err(SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!("column \"{}\" is not a field of {what} (its fields: {})", column.name(), fields()),
            ));
        };
        let field = writer.field(index);
        if !fits(field.data_type(), column.data_type()) {
            return Err(SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "column \"{}\" ({}) cannot hold field \"{}\" of {what} ({})",
                    column.name(),
                    column.data_type(),
                    field.name(),
                    field.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether values of Avro type `from` (as Arrow decodes it) belong in a
/// column of type `to`: the same kind of value (numbers into numbers, times
/// into times), or anything into text. Text into numbers is castable but
/// not a fit: a schema saying "string" where the column says BIGINT is a
/// mistake to report, not a per-record failure to discover later.
fn fits(from: &DataType, to: &DataType) -> bool {
    let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let time = |t: &DataType| t.is_temporal();
    if from == to || text(to) {
        return true;
    }
    if let DataType::Dictionary(_, values) = from {
        return fits(values, to);
    }
    if text(from) || from.is_numeric() != to.is_numeric() || time(from) != time(to) {
        return false;
    }
    can_cast_types(from, to)
}

/// Rows decoded with a writer schema as rows of `target`.
fn conform(batch: &RecordBatch, target: &SchemaRef) -> std::result::Result<RecordBatch, ArrowError> {
    // Strict: a value that does not fit its column fails the record.
    let options = CastOptions { safe: false, ..Default::default() };
    let columns = target
        .fields()
        .iter()
        .map(|column| -> std::result::Result<ArrayRef, ArrowError> {
            match field_for(batch.schema_ref(), column.name()) {
                Some(index) => {
                    let array = batch.column(index);
                    if array.data_type() == column.data_type() {
                        Ok(array.clone())
                    } else {
                        cast_with_options(array, column.data_type(), &options)
                    }
                }
                None => Ok(new_null_array(column.data_type(), batch.num_rows())),
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target.clone(), columns)
}

/// Arrow's error text without its kind prefix.
fn message(error: ArrowError) -> String {
    match error {
        ArrowError::ParseError(text)
        | ArrowError::CastError(text)
        | ArrowError::InvalidArgumentError(text)
        | ArrowError::SchemaError(text)
        | ArrowError::AvroError(text) => text,
        other => other.to_string(),
    }
}

/// What a subject name must escape to be one URL path segment (RFC 3986's
/// unreserved characters pass).
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A Confluent-compatible schema registry (REST over HTTP).
struct Registry {
    /// Base URLs, tried in order.
    urls: Vec<String>,
    subject: String,
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl Registry {
    fn new(urls: &str, options: &ConnectorOptions, topic: Option<&str>) -> Result<Self> {
        let urls: Vec<String> =
            urls.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Err(bad_option("schema.registry = '' names no registry"));
        }
        for url in &urls {
            if url.starts_with("https://") {
                return Err(SqlError::not_supported(format!(
                    "schema.registry = '{url}': HTTPS registries (this build speaks HTTP to the registry)"
                )));
            }
            if !url.starts_with("http://") {
                return Err(bad_option(format!("schema.registry = '{url}' is not an http:// URL")));
            }
        }
        let subject = match (options.get(SUBJECT), topic) {
            (Some(subject), _) => subject.to_string(),
            (None, Some(topic)) => format!("{topic}-value"),
            (None, None) => return Err(bad_option("ENCODE AVRO with a schema registry needs schema.registry.subject")),
        };
        let authorization = match (options.get(USERNAME), options.get(PASSWORD)) {
            (Some(user), password) => {
                use base64::Engine;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.unwrap_or("")));
                Some(format!("Basic {token}"))
            }
            (None, Some(_)) => return Err(bad_option("schema.registry.password needs schema.registry.username")),
            (None, None) => None,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REGISTRY_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self { urls, subject, authorization, agent })
    }

    /// GET `path` from the first registry that answers: the status and
    /// the JSON body.
    fn get(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let mut last_error = String::new();
        for url in &self.urls {
            let mut request =
                self.agent.get(format!("{url}{path}")).header("Accept", "application/vnd.schemaregistry.v1+json");
            if let Some(authorization) = &self.authorization {
                request = request.header("Authorization", authorization);
            }
            match request.call() {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let body = response.body_mut().read_to_string().map_err(|e| unreachable_registry(url, e))?;
                    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                    return Ok((status, json));
                }
                Err(error) => last_error = unreachable_registry(url, error).message,
            }
        }
        Err(SqlError::new(sqlstate::UNABLE_TO_CONNECT, last_error))
    }

    /// The schema with registry id `id`: `Ok(Err(why))` when the registry
    /// answers that it has none (or not an Avro one); `Err` when it cannot
    /// be asked.
    fn schema_by_id(&self, id: u32) -> Result<std::result::Result<AvroSchema, String>> {
        let (status, body) = self.get(&format!("/schemas/ids/{id}"))?;
        match status {
            200 => Ok(avro_schema_of(&body).map_err(|why| format!("schema id {id}: {why}"))),
            401 | 403 => Err(refused(status, &body)),
            404 | 422 => Ok(Err(format!("schema id {id} is not in the schema registry ({})", error_text(&body)))),
            _ => Err(SqlError::new(
                sqlstate::UNABLE_TO_CONNECT,
                format!("schema registry answered {status} for schema id {id}: {}", error_text(&body)),
            )),
        }
    }

    /// The subject's latest version: id, version number and schema.
    fn latest(&self) -> Result<(u32, i64, AvroSchema)> {
        let subject = percent_encoding::utf8_percent_encode(&self.subject, PATH_SEGMENT);
        let path = format!("/subjects/{subject}/versions/latest");
        let (status, body) = self.get(&path)?;
        match status {
            200 => {
                let id = body.get("id").and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
                let version = body.get("version").and_then(|v| v.as_i64()).unwrap_or(0);
                let schema = avro_schema_of(&body);
                match (id, schema) {
                    (Some(id), Ok(schema)) => Ok((id, version, schema)),
                    (None, _) => Err(SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("schema registry subject \"{}\": the answer has no schema id", self.subject),
                    )),
                    (_, Err(why)) => Err(SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("schema registry subject \"{}\": {why}", self.subject),
                    )),
                }
            }
            401 | 403 => Err(refused(status, &body)),
            404 => Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!(
                    "schema registry has no subject \"{}\" ({}); name another with schema.registry.subject",
                    self.subject,
                    error_text(&body)
                ),
            )),
            _ => Err(SqlError::new(
                sqlstate::UNABLE_TO_CONNECT,
                format!("schema registry answered {status} for subject \"{}\": {}", self.subject, error_text(&body)),
            )),
        }
    }
}

/// The Avro schema in a registry answer (`schema`, with `schemaType`
/// absent or AVRO).
fn avro_schema_of(body: &serde_json::Value) -> std::result::Result<AvroSchema, String> {
    if let Some(kind) = body.get("schemaType").and_then(|v| v.as_str())
        && !kind.eq_ignore_ascii_case("AVRO")
    {
        return Err(format!("the registry's schema is {kind}, not AVRO"));
    }
    match body.get("schema").and_then(|v| v.as_str()) {
        Some(text) => Ok(AvroSchema::new(text.to_string())),
        None => Err("the registry's answer has no schema".to_string()),
    }
}

fn error_text(body: &serde_json::Value) -> String {
    match body.get("message").and_then(|v| v.as_str()) {
        Some(message) => message.to_string(),
        None => body.to_string(),
    }
}

fn refused(status: u16, body: &serde_json::Value) -> SqlError {
    SqlError::new(
        "28000",
        format!(
            "schema registry refused the request ({status}): {}; check schema.registry.username and .password",
            error_text(body)
        ),
    )
}

fn unreachable_registry(url: &str, error: impl std::fmt::Display) -> SqlError {
    SqlError::new(sqlstate::UNABLE_TO_CONNECT, format!("cannot reach schema registry {url}: {error}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_avro::schema::SCHEMA_METADATA_KEY;
    use arrow_avro::writer::WriterBuilder;
    use arrow_avro::writer::format::AvroBinaryFormat;
    use datafusion::arrow::array::{Array, Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    use super::*;

    const SCHEMA: &str = r#"{"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "int"}, {"name": "Name", "type": ["null", "string"]}]}"#;

    /// Raw datums of (id, name) rows.
    fn datums(rows: &[(i32, Option<&str>)]) -> Vec<Vec<u8>> {
        let metadata = [(SCHEMA_METADATA_KEY.to_string(), SCHEMA.to_string())].into_iter().collect();
        let schema = Schema::new_with_metadata(
            vec![Field::new("id", DataType::Int32, false), Field::new("Name", DataType::Utf8, true)],
            metadata,
        );
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            ],
        )
        .expect("batch");
        let mut encoder = WriterBuilder::new(schema).build_encoder::<AvroBinaryFormat>().expect("encoder");
        encoder.encode(&batch).expect("encode");
        encoder.flush().iter().map(|row| row.to_vec()).collect()
    }

    fn decoder(columns: Vec<Field>) -> Result<AvroDecoder> {
        let options =
            ConnectorOptions { values: [(INLINE_SCHEMA.to_string(), SCHEMA.to_string())].into_iter().collect() };
        AvroDecoder::new(Arc::new(Schema::new(columns)), &options, None)
    }

    #[test]
    fn inline_schema_datums_become_rows_by_field_name_and_bad_ones_are_singled_out() {
        let decoder = decoder(vec![Field::new("name", DataType::Utf8, true), Field::new("id", DataType::Int64, true)])
            .expect("columns fit the schema");
        let good = datums(&[(1, Some("a")), (2, None), (3, Some("c"))]);
        let mut payloads = Payloads::default();
        payloads.push(&good[0]);
        payloads.push(&[0xff, 0xff]);
        payloads.push(&good[1]);
        payloads.push(&good[2][..good[2].len() - 1]);
        payloads.push(&good[2]);
        let decoded = decoder.decode(&payloads).expect("decoded");
        let ids = decoded.rows.column(1).as_any().downcast_ref::<Int64Array>().expect("ids as BIGINT");
        assert_eq!(ids.values().to_vec(), vec![1, 2, 3]);
        let names = decoded.rows.column(0).as_any().downcast_ref::<StringArray>().expect("names");
        assert_eq!((names.value(0), names.is_null(1), names.value(2)), ("a", true, "c"));
        assert_eq!(decoded.bad.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn columns_that_do_not_fit_the_schema_are_refused() {
        let missing = decoder(vec![Field::new("colour", DataType::Utf8, true)]).err().expect("no such field");
        assert_eq!(missing.code, sqlstate::DATATYPE_MISMATCH);
        assert!(missing.message.contains("colour") && missing.message.contains("id, Name"), "{}", missing.message);
        let text_as_number = decoder(vec![Field::new("name", DataType::Int64, true)]).err().expect("text into BIGINT");
        assert_eq!(text_as_number.code, sqlstate::DATATYPE_MISMATCH);
        assert!(fits(&DataType::Int32, &DataType::Float64) && fits(&DataType::Int64, &DataType::Utf8));
        assert!(!fits(&DataType::Utf8, &DataType::Int64) && !fits(&DataType::Int64, &DataType::Boolean));
    }
}
