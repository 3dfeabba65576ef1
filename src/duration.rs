//! The one way Freshet reads a duration a user wrote: connector options
//! (`'500ms'`, `'1 day'`), SUBSCRIBE's and FETCH's timeouts, session settings
//! (`SET idle_in_transaction_session_timeout = '2s'`), watermark idle
//! timeouts.
//!
//! It accepts what PostgreSQL's interval input and its duration settings
//! accept, in any mix:
//! - a number and a unit, with or without a space: `500ms`, `1.5 s`,
//!   `10 seconds`, `2h`, `1 day`; units `us`, `ms`, `s`, `min` (`m`), `h`,
//!   `d` and `w`, in short, long and plural forms;
//! - several of them: `1 day 2 hours`, `1h30min`;
//! - a clock: `00:01:30` (and `1:30`, minutes and seconds);
//! - quotes and the interval keyword around it: `'1 hour'`,
//!   `INTERVAL '1' HOUR`, `interval '90 seconds'`.
//!
//! A number without a unit is in the caller's default unit: milliseconds
//! for Postgres's timeout settings, seconds elsewhere.
//!
//! ```
//! use std::time::Duration;
//! use freshet::duration::{parse, Unit};
//!
//! assert_eq!(parse("500ms", Unit::Seconds), Some(Duration::from_millis(500)));
//! assert_eq!(parse("INTERVAL '1' HOUR", Unit::Seconds), Some(Duration::from_secs(3600)));
//! assert_eq!(parse("1 day 2 hours", Unit::Seconds), Some(Duration::from_secs(93_600)));
//! assert_eq!(parse("1500", Unit::Milliseconds), Some(Duration::from_millis(1500)));
//! assert_eq!(parse("soon", Unit::Seconds), None);
//! ```

use std::time::Duration;

/// What a number without a unit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Seconds,
}

impl Unit {
    fn seconds(self) -> f64 {
        match self {
            Unit::Milliseconds => 0.001,
            Unit::Seconds => 1.0,
        }
    }
}

/// The duration `text` spells, or `None` if it spells none (or a negative
/// or unrepresentable one).
pub fn parse(text: &str, bare: Unit) -> Option<Duration> {
    let seconds = total_seconds(text, bare)?;
    (seconds.is_finite() && seconds >= 0.0).then_some(())?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// [`parse`], as nanoseconds in an `i64` (the unit of Freshet's clocks).
pub fn parse_nanos(text: &str, bare: Unit) -> Option<i64> {
    i64::try_from(parse(text, bare)?.as_nanos()).ok()
}

fn total_seconds(text: &str, bare: Unit) -> Option<f64> {
    let text = strip_interval(text);
    if text.contains(':') {
        return clock(text);
    }
    let mut rest = text.as_str();
    let mut total = 0.0;
    let mut parts = 0;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let number: f64 = number.parse().ok()?;
        let after = after.trim_start();
        let unit_end = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = if unit.is_empty() {
            // A bare number is allowed only alone.
            if parts > 0 || !after.trim().is_empty() {
                return None;
            }
            bare.seconds()
        } else {
            unit_seconds(unit)?
        };
        total += number * scale;
        parts += 1;
        rest = after;
    }
    (parts > 0).then_some(total)
}

/// `text` without surrounding quotes and an `INTERVAL` keyword; the unit
/// after the quotes (`INTERVAL '1' HOUR`) is kept, after the number.
fn strip_interval(text: &str) -> String {
    let text = text.trim();
    let text = match text.get(..8) {
        Some(head) if head.eq_ignore_ascii_case("interval") => text.get(8..).unwrap_or_default(),
        _ => text,
    };
    text.replace('\'', " ").trim().to_string()
}

/// `hh:mm:ss[.fff]` or `mm:ss`.
fn clock(text: String) -> Option<f64> {
    let fields: Vec<&str> = text.trim().split(':').collect();
    let numbers: Vec<f64> = fields.iter().map(|f| f.trim().parse::<f64>().ok()).collect::<Option<_>>()?;
    match numbers.as_slice() {
        [h, m, s] => Some(h * 3600.0 + m * 60.0 + s),
        [m, s] => Some(m * 60.0 + s),
        _ => None,
    }
}

fn unit_seconds(unit: &str) -> Option<f64> {
    let unit = unit.to_ascii_lowercase();
    Some(match unit.as_str() {
        "us" | "usec" | "usecs" | "microsecond" | "microseconds" => 1e-6,
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1e-3,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Option<f64> {
        parse(text, Unit::Seconds).map(|d| d.as_secs_f64())
    }

    #[test]
    fn every_spelling_the_places_that_read_durations_used_to_accept() {
        // Connector options and watermark idle timeouts.
        assert_eq!(secs("10 seconds"), Some(10.0));
        assert_eq!(secs("2h"), Some(7200.0));
        assert_eq!(secs("1 day"), Some(86_400.0));
        assert_eq!(secs("2 hours"), Some(7200.0));
        // SUBSCRIBE / FETCH timeouts.
        assert_eq!(secs("1.5"), Some(1.5));
        assert_eq!(secs("500ms"), Some(0.5));
        assert_eq!(secs("1min"), Some(60.0));
        // Session settings: a bare number is milliseconds.
        assert_eq!(parse("1500", Unit::Milliseconds), Some(Duration::from_millis(1500)));
        assert_eq!(parse("'2s'", Unit::Milliseconds), Some(Duration::from_secs(2)));
        assert_eq!(parse("0", Unit::Milliseconds), Some(Duration::ZERO));
    }

    #[test]
    fn interval_literals_clocks_and_sums() {
        assert_eq!(secs("INTERVAL '1' HOUR"), Some(3600.0));
        assert_eq!(secs("interval '90 seconds'"), Some(90.0));
        assert_eq!(secs("'1 day 2 hours'"), Some(93_600.0));
        assert_eq!(secs("1h30min"), Some(5400.0));
        assert_eq!(secs("00:01:30"), Some(90.0));
        assert_eq!(secs("1:30"), Some(90.0));
        assert_eq!(secs("250 us"), Some(0.00025));
        assert_eq!(secs("1 WEEK"), Some(604_800.0));
        assert_eq!(parse_nanos("1s", Unit::Seconds), Some(1_000_000_000));
    }

    #[test]
    fn what_is_not_a_duration() {
        for text in ["", "soon", "5 parsecs", "-1s", "1 2", "s", "1 day 5", "1e400 s", "::", "1:2:3:4", "'"] {
            assert_eq!(secs(text), None, "{text:?}");
        }
        assert_eq!(parse_nanos("1000000 weeks", Unit::Seconds), None, "past i64 nanoseconds");
    }
}
