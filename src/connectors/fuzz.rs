//! A seeded fuzzer over the connectors' decoders (in `cargo test`): JSON,
//! CSV and Avro payloads and Debezium / UPSERT envelopes, mutated byte by
//! byte from valid seeds. Every case must come back as rows or as bad
//! records with a message: never a panic, never a row lost or counted twice
//! (each payload is either a row or a bad record, in order).
//!
//! Seeded (xorshift64*), so a failure replays; the cases per second and the
//! total are printed (`cargo test connectors::fuzz -- --nocapture`).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::ConnectorOptions;
use super::avro::{AvroDecoder, INLINE_SCHEMA};
use super::changelog::{Change, Envelope, split};
use super::decode::{Encoding, PayloadDecoder, Payloads};

/// xorshift64*: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes worth putting anywhere: structure of the formats, edges of numbers,
/// broken UTF-8, varints that promise more than there is.
const SPLICES: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"1e999",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"NaN",
    b"\n",
    b"\r\n",
    b"\"\"",
    b"\xff\xfe",
    b"\xc3",
    b"\xe2\x82",
    b"\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x80\x80\x80\x80\x10",
    b"\xfe\xff\xff\xff\x0f",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            2 => bytes.truncate(at),
            3 => {
                let splice = SPLICES[rng.below(SPLICES.len())];
                bytes.splice(at..at, splice.iter().copied());
            }
            4 if at < bytes.len() => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                let copy: Vec<u8> = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => bytes.insert(at, rng.next() as u8),
        }
    }
    bytes
}

/// Decodes batches of 1-6 payloads (seeds or mutants) and checks that each
/// payload is exactly one row or one bad record. Returns the cases run.
fn run(name: &str, cases: usize, seed: u64, seeds: &[Vec<u8>], decode: &dyn Fn(&Payloads) -> (usize, Vec<usize>)) {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut bad_total = 0usize;
    for case in 0..cases {
        let mut payloads = Payloads::default();
        let count = 1 + rng.below(6);
        for _ in 0..count {
            let seed = &seeds[rng.below(seeds.len())];
            let seed = seed.as_slice();
            if rng.below(4) == 0 {
                payloads.push(seed);
            } else {
                payloads.push(&mutate(&mut rng, seed));
            }
        }
        let (rows, bad) = decode(&payloads);
        bad_total += bad.len();
        assert_eq!(
            rows + bad.len(),
            count,
            "{name} case {case}: {rows} rows and {} bad of {count} payloads",
            bad.len()
        );
        assert!(bad.windows(2).all(|w| w[0] < w[1]), "{name} case {case}: bad records {bad:?} out of order");
        assert!(bad.iter().all(|&i| i < count), "{name} case {case}: bad record index past the payloads");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "decoder fuzz {name}: {cases} cases in {elapsed:.2} s ({:.0} cases/s), {bad_total} bad records, 0 crashes",
        cases as f64 / elapsed.max(1e-9)
    );
}

fn wide_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("small", DataType::Int16, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), true),
        Field::new("day", DataType::Date32, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
    ]))
}

fn decode_with(decoder: &PayloadDecoder, payloads: &Payloads) -> (usize, Vec<usize>) {
    match decoder.decode(payloads) {
        Ok(decoded) => (decoded.rows.num_rows(), decoded.bad.iter().map(|(i, _)| *i).collect()),
        // A whole batch refused with an error is fine too: nothing was
        // taken as a row, every payload is accounted as bad.
        Err(_) => (0, (0..payloads.len()).collect()),
    }
}

#[test]
fn json_payloads_never_panic_and_each_is_a_row_or_a_bad_record() {
    let decoder = PayloadDecoder::new(wide_schema(), Encoding::Json);
    let seeds: Vec<Vec<u8>> = [
        r#"{"id": 1, "name": "a", "price": 1.5, "ok": true, "small": 7, "at": "2024-01-02T03:04:05Z", "day": "2024-01-02", "amount": "12.50"}"#,
        r#"{"id": -9223372036854775808, "name": "é\u00e9", "price": -0.0, "ok": false}"#,
        r#"{"id": null, "name": null, "extra": {"nested": [1, 2, {"x": null}]}}"#,
        r#"{"small": 32767, "day": "1970-01-01", "amount": "-9999999999.99"}"#,
        r#"{}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("json", 20_000, 0x1d0c_0de5_eed0_0001, &seeds, &|p| decode_with(&decoder, p));
}

#[test]
fn csv_payloads_never_panic_and_each_is_a_row_or_a_bad_record() {
    let decoder = PayloadDecoder::new(wide_schema(), Encoding::Csv { delimiter: b',' });
    let seeds: Vec<Vec<u8>> = [
        "1,a,1.5,true,7,2024-01-02T03:04:05Z,2024-01-02,12.50",
        "2,\"b, with comma\",,false,,,,",
        "-9223372036854775808,\"quote \"\"inside\"\"\",1e10,true,32767,2024-01-02 03:04:05,1970-01-01,-1.00",
        ",,,,,,,",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("csv", 20_000, 0x1d0c_0de5_eed0_0002, &seeds, &|p| decode_with(&decoder, p));
}

#[test]
fn avro_datums_never_panic_and_each_is_a_row_or_a_bad_record() {
    let schema = r#"{"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": ["null", "string"]},
        {"name": "price", "type": "double"}, {"name": "tags", "type": {"type": "array", "items": "string"}}]}"#;
    let options = ConnectorOptions { values: [(INLINE_SCHEMA.to_string(), schema.to_string())].into_iter().collect() };
    let target = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
    ]));
    let decoder = AvroDecoder::new(target, &options, None).expect("an Avro decoder over the inline schema");
    // Raw datums: zigzag varints, a union branch, length-prefixed strings,
    // little-endian doubles, array blocks ending in a zero count.
    let datum = |id: u8, name: Option<&str>, tags: &[&str]| -> Vec<u8> {
        let mut out = vec![id];
        match name {
            None => out.push(0),
            Some(text) => {
                out.push(2);
                out.push((text.len() * 2) as u8);
                out.extend_from_slice(text.as_bytes());
            }
        }
        out.extend_from_slice(&1.5f64.to_le_bytes());
        if !tags.is_empty() {
            out.push((tags.len() * 2) as u8);
            for tag in tags {
                out.push((tag.len() * 2) as u8);
                out.extend_from_slice(tag.as_bytes());
            }
        }
        out.push(0);
        out
    };
    let seeds = vec![datum(2, Some("ab"), &["x"]), datum(4, None, &[]), datum(1, Some(""), &["p", "qq"])];
    let mut check = Payloads::default();
    for seed in &seeds {
        check.push(seed);
    }
    let decoded = decoder.decode(&check).expect("the seeds decode");
    assert_eq!((decoded.rows.num_rows(), decoded.bad.len()), (seeds.len(), 0), "the seeds are valid datums");
    run("avro", 20_000, 0x1d0c_0de5_eed0_0003, &seeds, &|p| match decoder.decode(p) {
        Ok(decoded) => (decoded.rows.num_rows(), decoded.bad.iter().map(|(i, _)| *i).collect()),
        Err(_) => (0, (0..p.len()).collect()),
    });
}

#[test]
fn debezium_and_upsert_envelopes_never_panic() {
    let key_columns = vec!["id".to_string()];
    let events: Vec<Vec<u8>> = [
        r#"{"op": "c", "after": {"id": 1, "name": "a"}}"#,
        r#"{"payload": {"op": "u", "before": {"id": 1}, "after": {"id": 1, "name": "b"}}}"#,
        r#"{"op": "d", "before": {"id": 1}}"#,
        r#"{"op": "r", "after": {"id": 2}, "source": {"lsn": 123}}"#,
        r#"{"op": "m"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let keys: Vec<Vec<u8>> = [r#"{"id": 1}"#, "1", r#""text""#, "[1]"].iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut rng = Rng(0x1d0c_0de5_eed0_0004);
    let cases = 40_000;
    let started = Instant::now();
    let (mut changes, mut refused) = (0usize, 0usize);
    for _ in 0..cases {
        let event = rng.below(events.len());
        let value = mutate(&mut rng, &events[event]);
        let key = rng.below(keys.len());
        let key = mutate(&mut rng, &keys[key]);
        let value = if rng.below(5) == 0 { Vec::new() } else { value };
        for envelope in [Envelope::Debezium, Envelope::Upsert] {
            match split(envelope, Some(&key), &value, &key_columns) {
                // What a change carries is handed to the JSON decoder next:
                // it must be an object there, checked by the decoder's fuzz.
                Ok(Change::Upsert(bytes) | Change::Delete(bytes)) => {
                    assert!(!bytes.is_empty() || envelope == Envelope::Upsert);
                    changes += 1;
                }
                Ok(Change::Skip) => changes += 1,
                Err(error) => {
                    assert!(!error.message.is_empty());
                    refused += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "decoder fuzz envelopes: {cases} cases in {elapsed:.2} s ({:.0} cases/s), {changes} changes, {refused} \
         refused, 0 crashes",
        cases as f64 / elapsed.max(1e-9)
    );
}

/// Found by this fuzzer: a decimal with a five-digit exponent overflowed
/// arrow-cast's exponent (a panic, or a wrong number in a build without
/// overflow checks). It is a bad record now; a sane exponent still works.
#[test]
fn a_decimal_with_a_huge_exponent_is_a_bad_record() {
    let schema = Arc::new(Schema::new(vec![Field::new("amount", DataType::Decimal128(12, 2), true)]));
    for encoding in [Encoding::Json, Encoding::Csv { delimiter: b',' }] {
        let decoder = PayloadDecoder::new(schema.clone(), encoding);
        let mut payloads = Payloads::default();
        let (good, huge) = match encoding {
            Encoding::Json => (r#"{"amount": "1.5e2"}"#, r#"{"amount": "1e99999"}"#),
            _ => ("1.5e2", "1e99999"),
        };
        payloads.push(good.as_bytes());
        payloads.push(huge.as_bytes());
        payloads.push(good.as_bytes());
        let decoded = decoder.decode(&payloads).expect("decoded");
        assert_eq!(decoded.bad.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1], "{encoding:?}");
        let amounts = decoded
            .rows
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Decimal128Array>()
            .expect("decimals")
            .values()
            .to_vec();
        assert_eq!(amounts, vec![15000, 15000], "{encoding:?}: 150.00 twice");
    }
}
