//! Message payloads to rows: `ENCODE JSON` (one object per message),
//! `ENCODE CSV` (one record per message) and `ENCODE AVRO` (one datum per
//! message, see `avro`), with Arrow's vectorized decoders.
//!
//! All payloads of a read are decoded in one pass. Only when that pass
//! fails, or yields other than one row per payload, are the payloads
//! decoded one by one to find which do not make a row: a bad record costs
//! its read a second pass, a good read costs nothing extra.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

use super::avro::AvroDecoder;
pub use super::payload::{Decoded, Payloads};
use crate::error::{Result, SqlError, sqlstate};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Csv {
        delimiter: u8,
    },
    /// Its settings (where the writer schema comes from) live in the
    /// decoder: see [`PayloadDecoder::for_source`].
    Avro,
}

impl Encoding {
    /// From the source's `encode` option and its encode options.
    pub fn from_options(options: &super::ConnectorOptions) -> Result<Self> {
        let encode = options.get("encode").map(str::to_ascii_lowercase);
        match encode.as_deref() {
            None | Some("json") => Ok(Encoding::Json),
            Some("csv") => {
                let delimiter = match options.get("delimiter").map(|d| (d, d.as_bytes())) {
                    None => b',',
                    Some((_, &[byte])) => byte,
                    Some(("\\t", _)) => b'\t',
                    Some((other, _)) => {
                        return Err(SqlError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("delimiter = '{other}' must be one character"),
                        ));
                    }
                };
                Ok(Encoding::Csv { delimiter })
            }
            Some("avro") => Ok(Encoding::Avro),
            Some(other) => {
                Err(SqlError::not_supported(format!("ENCODE {} (encodings: JSON, CSV, AVRO)", other.to_uppercase())))
            }
        }
    }
}

pub struct PayloadDecoder {
    schema: SchemaRef,
    encoding: Encoding,
    avro: Option<AvroDecoder>,
}

/// Arrow's error text without its "Json error: " style prefix.
fn message(error: ArrowError) -> String {
    match error {
        ArrowError::JsonError(text) | ArrowError::CsvError(text) | ArrowError::ParseError(text) => text,
        ArrowError::CastError(text) | ArrowError::InvalidArgumentError(text) => text,
        other => other.to_string(),
    }
}

impl PayloadDecoder {
    /// A JSON or CSV decoder.
    pub fn new(schema: SchemaRef, encoding: Encoding) -> Self {
        Self { schema, encoding, avro: None }
    }

    /// The decoder a source's options ask for; `topic` names the default
    /// schema registry subject for `ENCODE AVRO`.
    pub fn for_source(schema: SchemaRef, options: &super::ConnectorOptions, topic: Option<&str>) -> Result<Self> {
        let encoding = Encoding::from_options(options)?;
        let avro = match encoding {
            Encoding::Avro => Some(AvroDecoder::new(schema.clone(), options, topic)?),
            _ => None,
        };
        Ok(Self { schema, encoding, avro })
    }

    /// At CREATE: what the decoder depends on (a schema registry) answers
    /// and fits the columns.
    pub fn check(&self) -> Result<()> {
        self.avro.as_ref().map_or(Ok(()), AvroDecoder::check)
    }

    /// Looks up what decoding `payloads` will need (new schema ids in a
    /// registry); fails when that cannot be reached, so the read can be
    /// retried rather than its records called bad.
    pub fn resolve(&self, payloads: &Payloads) -> Result<()> {
        self.avro.as_ref().map_or(Ok(()), |avro| avro.resolve(payloads))
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// [`Self::decode_pass`], with a panic inside Arrow's decoders turned
    /// into an error of the batch (then of the one payload that causes it):
    /// arrow-cast 59 overflows an `i16` on a decimal exponent of five digits
    /// or more (`"1e99999"`), a panic with overflow checks on (they are, in
    /// every profile, for arrow-cast: see Cargo.toml), a wrong value without.
    fn decode_all(
        &self,
        payloads: &Payloads,
        range: std::ops::Range<usize>,
    ) -> std::result::Result<RecordBatch, ArrowError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode_pass(payloads, range))).unwrap_or_else(
            |panic| {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                Err(ArrowError::ParseError(format!("the message cannot be decoded ({reason})")))
            },
        )
    }

    /// Decodes every payload of `range` in one pass.
    fn decode_pass(
        &self,
        payloads: &Payloads,
        range: std::ops::Range<usize>,
    ) -> std::result::Result<RecordBatch, ArrowError> {
        let rows = range.len() + 1;
        match self.encoding {
            Encoding::Json => {
                let mut decoder = datafusion::arrow::json::ReaderBuilder::new(self.schema.clone())
                    .with_batch_size(rows)
                    .build_decoder()?;
                for i in range {
                    let mut rest = payloads.get(i);
                    while !rest.is_empty() {
                        let used = decoder.decode(rest)?;
                        if used == 0 {
                            return Err(ArrowError::JsonError("more than one value in a message".into()));
                        }
                        rest = rest.get(used..).unwrap_or_default();
                    }
                    if decoder.has_partial_record() {
                        return Err(ArrowError::JsonError("the message ends inside a JSON value".into()));
                    }
                }
                Ok(decoder.flush()?.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
            }
            Encoding::Csv { delimiter } => {
                let mut decoder = datafusion::arrow::csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(false)
                    .with_delimiter(delimiter)
                    .with_batch_size(rows)
                    .build_decoder();
                for i in range {
                    for part in [payloads.get(i), b"\n".as_slice()] {
                        let mut rest = part;
                        while !rest.is_empty() {
                            let used = decoder.decode(rest)?;
                            if used == 0 {
                                return Err(ArrowError::CsvError("more than one record in a message".into()));
                            }
                            rest = rest.get(used..).unwrap_or_default();
                        }
                    }
                }
                Ok(decoder.flush()?.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
            }
            Encoding::Avro => Err(ArrowError::InvalidArgumentError("an Avro decoder without its settings".into())),
        }
    }

    pub fn decode(&self, payloads: &Payloads) -> Result<Decoded> {
        if let Some(avro) = &self.avro {
            return avro.decode(payloads);
        }
        if let Ok(rows) = self.decode_all(payloads, 0..payloads.len())
            && rows.num_rows() == payloads.len()
        {
            return Ok(Decoded { rows, bad: Vec::new() });
        }
        // Some payload is bad: find which, one at a time.
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for i in 0..payloads.len() {
            match self.decode_all(payloads, i..i + 1) {
                Ok(row) if row.num_rows() == 1 => good.push(row),
                Ok(row) if row.num_rows() == 0 => bad.push((i, "the message holds no record".to_string())),
                Ok(_) => bad.push((i, "the message holds more than one record".to_string())),
                Err(error) => bad.push((i, message(error))),
            }
        }
        let rows = concat_batches(&self.schema, &good)?;
        Ok(Decoded { rows, bad })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("name", DataType::Utf8, true)]))
    }

    fn payloads(items: &[&str]) -> Payloads {
        let mut p = Payloads::default();
        for item in items {
            p.push(item.as_bytes());
        }
        p
    }

    fn ids(rows: &RecordBatch) -> Vec<i64> {
        rows.column(0).as_any().downcast_ref::<Int64Array>().expect("ids").values().to_vec()
    }

    #[test]
    fn json_payloads_become_rows_and_bad_ones_are_singled_out() {
        let decoder = PayloadDecoder::new(schema(), Encoding::Json);
        let good =
            decoder.decode(&payloads(&[r#"{"id": 1, "name": "a"}"#, r#"{"id": 2, "extra": true}"#])).expect("ok");
        assert_eq!(ids(&good.rows), vec![1, 2]);
        assert!(good.bad.is_empty());
        let names = good.rows.column(1).as_any().downcast_ref::<StringArray>().expect("names");
        assert_eq!(names.value(0), "a");
        assert!(names.is_null(1));

        let mixed = decoder
            .decode(&payloads(&[
                r#"{"id": 1}"#,
                r#"{"id": "#,
                r#"{"id": "x"}"#,
                r#"{"id": 4}"#,
                "",
                r#"{"id": 6}{"id": 7}"#,
                r#"{"id": 8}"#,
            ]))
            .expect("decoded");
        assert_eq!(ids(&mixed.rows), vec![1, 4, 8]);
        let bad: Vec<usize> = mixed.bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 2, 4, 5]);
        assert!(mixed.bad[1].1.contains("id"), "{}", mixed.bad[1].1);
    }

    #[test]
    fn csv_payloads_become_rows_and_bad_ones_are_singled_out() {
        let decoder = PayloadDecoder::new(schema(), Encoding::Csv { delimiter: b',' });
        let mixed = decoder.decode(&payloads(&["1,a", "x,b", "3,\"c, d\"", "4", "5,e"])).expect("decoded");
        assert_eq!(ids(&mixed.rows), vec![1, 3, 5]);
        let names = mixed.rows.column(1).as_any().downcast_ref::<StringArray>().expect("names");
        assert_eq!(names.value(1), "c, d");
        let bad: Vec<usize> = mixed.bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 3]);
    }
}
