//! Postgres-exact text output for the values whose text encoding in pgwire
//! differs from what Postgres prints.
//!
//! Clients (psql, sqllogictest suites, drivers that read text) compare text,
//! so `2024-01-01 00:00:01.5` must not come out as `…01.500000`, nor `1e+20`
//! as `1e20`. pgwire formats fractional seconds with a fixed six digits and
//! floats in Rust's notation; rather than fork it, we correct the encoded
//! DataRows of text-format columns of the affected types on their way out.
//! Columns of other types and binary-format columns pass through untouched.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::messages::data::DataRow;

/// How one column's text must be corrected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fixup {
    None,
    /// Drop trailing zeros of fractional seconds (and the dot if none remain).
    FractionalSeconds,
    /// Postgres' shortest-exact float notation (float4 when `single`).
    Float {
        single: bool,
    },
}

fn fixup_for(field: &FieldInfo) -> Fixup {
    if field.format() != FieldFormat::Text {
        return Fixup::None;
    }
    let ty = field.datatype();
    if [
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::TIME,
        Type::TIMETZ,
        Type::INTERVAL,
        Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::TIME_ARRAY,
        Type::TIMETZ_ARRAY,
        Type::INTERVAL_ARRAY,
    ]
    .contains(ty)
    {
        return Fixup::FractionalSeconds;
    }
    // With extra_float_digits <= 0 Postgres rounds to fewer digits, which
    // pgwire already does; only the shortest-exact mode needs correcting.
    if field.format_options().extra_float_digits > 0 {
        if *ty == Type::FLOAT8 {
            return Fixup::Float { single: false };
        }
        if *ty == Type::FLOAT4 {
            return Fixup::Float { single: true };
        }
    }
    Fixup::None
}

/// Wraps every query response so its rows leave with Postgres-exact text.
pub fn postgres_text(response: Response) -> Response {
    match response {
        Response::Query(query) => Response::Query(fix_query(query)),
        other => other,
    }
}

fn fix_query(mut query: QueryResponse) -> QueryResponse {
    let fixups: Arc<Vec<Fixup>> = Arc::new(query.row_schema.iter().map(fixup_for).collect());
    if fixups.iter().all(|f| *f == Fixup::None) {
        return query;
    }
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    // One scratch buffer for the whole result, not one per row.
    let mut scratch = String::new();
    query.data_rows = Box::pin(rows.map(move |row| row.map(|row| fix_row(row, &fixups, &mut scratch))));
    query
}

/// Rewrites the fields of one DataRow that need it. The DataRow body is a
/// sequence of (i32 length, bytes) with length -1 for NULL.
fn fix_row(mut row: DataRow, fixups: &[Fixup], scratch: &mut String) -> DataRow {
    let mut out = BytesMut::with_capacity(row.data.len());
    let data = &row.data[..];
    let mut at = 0usize;
    for fixup in fixups.iter().take(row.field_count.max(0) as usize) {
        let Some(len) = data.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(i32::from_be_bytes) else {
            return row;
        };
        at += 4;
        if len < 0 {
            out.put_i32(-1);
            continue;
        }
        let Some(value) = data.get(at..at + len as usize) else {
            return row;
        };
        at += len as usize;
        scratch.clear();
        let fixed = match (fixup, std::str::from_utf8(value)) {
            (Fixup::FractionalSeconds, Ok(text)) => {
                trim_fractional_seconds(text, scratch);
                true
            }
            (Fixup::Float { single }, Ok(text)) => format_float(text, *single, scratch),
            _ => false,
        };
        if fixed {
            out.put_i32(scratch.len() as i32);
            out.put_slice(scratch.as_bytes());
        } else {
            out.put_i32(len);
            out.put_slice(value);
        }
    }
    row.data = out;
    row
}

/// `12:34:56.250000` → `12:34:56.25`, `…:01.000000` → `…:01`: every run of
/// digits after `HH:MM:SS.` (or `MM:SS.`) loses its trailing zeros.
pub fn trim_fractional_seconds(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(rest) = text.get(i..) {
        let after_seconds = i
            .checked_sub(3)
            .and_then(|s| bytes.get(s..i))
            .is_some_and(|p| matches!(p, [b':', a, b] if a.is_ascii_digit() && b.is_ascii_digit()));
        if let Some(fraction) = rest.strip_prefix('.').filter(|_| after_seconds) {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            let kept = fraction.get(..digits).unwrap_or_default().trim_end_matches('0');
            if !kept.is_empty() {
                out.push('.');
                out.push_str(kept);
            }
            i += 1 + digits;
            continue;
        }
        let Some(ch) = rest.chars().next() else { break };
        out.push(ch);
        i += ch.len_utf8();
    }
}

/// Postgres' float output (extra_float_digits > 0): the shortest digits that
/// round-trip, in fixed notation when the decimal exponent is in
/// [-4, DBL_DIG) (FLT_DIG for float4), else `d.ddde±XX`. Returns false when
/// the text is not a float, leaving the value as it was.
pub fn format_float(text: &str, single: bool, out: &mut String) -> bool {
    use std::fmt::Write;
    let (is_nan, is_inf, negative, sci, plain) = if single {
        let Ok(v) = text.parse::<f32>() else {
            return false;
        };
        (v.is_nan(), v.is_infinite(), v.is_sign_negative(), format!("{v:e}"), format!("{v}"))
    } else {
        let Ok(v) = text.parse::<f64>() else {
            return false;
        };
        (v.is_nan(), v.is_infinite(), v.is_sign_negative(), format!("{v:e}"), format!("{v}"))
    };
    if is_nan {
        out.push_str("NaN");
        return true;
    }
    if is_inf {
        out.push_str(if negative { "-Infinity" } else { "Infinity" });
        return true;
    }
    let Some((mantissa, exponent)) = sci.split_once('e') else {
        return false;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return false;
    };
    let digits = if single { 6 } else { 15 };
    if (-4..digits).contains(&exponent) {
        out.push_str(&plain);
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.abs());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trimmed(text: &str) -> String {
        let mut out = String::new();
        trim_fractional_seconds(text, &mut out);
        out
    }

    fn float(text: &str, single: bool) -> String {
        let mut out = String::new();
        assert!(format_float(text, single, &mut out), "{text}");
        out
    }

    #[test]
    fn fractional_seconds_as_postgres_prints_them() {
        assert_eq!(trimmed("2024-01-01 00:00:01.500000"), "2024-01-01 00:00:01.5");
        assert_eq!(trimmed("2024-01-01 00:00:01.000000"), "2024-01-01 00:00:01");
        assert_eq!(trimmed("2024-01-01 00:00:01.123456+00"), "2024-01-01 00:00:01.123456+00");
        assert_eq!(trimmed("12:34:56.250000"), "12:34:56.25");
        assert_eq!(trimmed("1 day 02:03:04.500000"), "1 day 02:03:04.5");
        assert_eq!(trimmed("{\"2024-01-01 00:00:01.500000\",NULL}"), "{\"2024-01-01 00:00:01.5\",NULL}");
        assert_eq!(trimmed("-3 days"), "-3 days");
    }

    #[test]
    fn floats_as_postgres_prints_them() {
        assert_eq!(float("1e20", false), "1e+20");
        assert_eq!(float("0.00001", false), "1e-05");
        assert_eq!(float("0.0001", false), "0.0001");
        assert_eq!(float("123456789012345", false), "123456789012345");
        assert_eq!(float("1234567890123456", false), "1.234567890123456e+15");
        assert_eq!(float("1.5", false), "1.5");
        assert_eq!(float("-0", false), "-0");
        assert_eq!(float("1e100", false), "1e+100");
        assert_eq!(float("NaN", false), "NaN");
        assert_eq!(float("-inf", false), "-Infinity");
        assert_eq!(float("1000000", true), "1e+06");
        assert_eq!(float("123456", true), "123456");
        assert_eq!(float("0.1", true), "0.1");
    }
}
