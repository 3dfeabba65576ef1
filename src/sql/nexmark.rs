//! `nexmark(stream, events [, first_event [, events_per_second]])`: the Nexmark benchmark's
//! person, auction or bid stream as a table, from the reference generator
//! (the `nexmark` crate: the same ids, prices, hot keys and timestamps as
//! the Java generator of the Nexmark suite).
//!
//! `events` counts events of all three streams, as Nexmark's event count
//! does (1 person : 3 auctions : 46 bids); the rows of `stream` among them
//! are returned, starting at event number `first_event` (default 0; so a
//! stream can be loaded in parts). Event times start at 2015-07-15 00:00:00
//! UTC (fixed, so that results are reproducible) and advance at
//! `events_per_second` (default 10,000, the reference generator's rate). Use it to load tables (`INSERT INTO bid SELECT * FROM
//! nexmark('bid', 100000)`) or in a batch query; a streaming connector that
//! emits events at a rate is still to come.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::{Auction, Bid, Event, EventType, Person};

use crate::error::{SqlError, sqlstate};

type DfResult<T> = datafusion::common::Result<T>;

/// 2015-07-15 00:00:00 UTC, in milliseconds.
const BASE_TIME_MS: u64 = 1_436_918_400_000;
/// The reference generator's rate, and the highest one accepted.
const DEFAULT_RATE: u64 = 10_000;
const MAX_RATE: i64 = 1_000_000_000;
/// Events one call may generate (held in memory as one table).
const MAX_EVENTS: i64 = 50_000_000;
/// Highest first event number (far beyond any run, well within the
/// generator's arithmetic).
const MAX_FIRST_EVENT: i64 = 1_000_000_000_000_000;
/// Rows per generated batch.
const BATCH_ROWS: usize = 8192;

#[derive(Debug, Default)]
pub struct NexmarkFunction;

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// The schema of each stream, with Nexmark's column names.
pub fn schema(stream: EventType) -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    let time = |name: &str| Field::new(name, timestamp(), false);
    Arc::new(Schema::new(match stream {
        EventType::Person => vec![
            int("id"),
            text("name"),
            text("email_address"),
            text("credit_card"),
            text("city"),
            text("state"),
            time("date_time"),
            text("extra"),
        ],
        EventType::Auction => vec![
            int("id"),
            text("item_name"),
            text("description"),
            int("initial_bid"),
            int("reserve"),
            time("date_time"),
            time("expires"),
            int("seller"),
            int("category"),
            text("extra"),
        ],
        EventType::Bid => {
            vec![
                int("auction"),
                int("bidder"),
                int("price"),
                text("channel"),
                text("url"),
                time("date_time"),
                text("extra"),
            ]
        }
    }))
}

fn invalid(message: impl Into<String>) -> datafusion::common::DataFusionError {
    SqlError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!(
            "nexmark: {}; usage: nexmark('person' | 'auction' | 'bid', events [, first_event [, events_per_second]])",
            message.into()
        ),
    )
    .into_datafusion()
}

fn integer(arg: &Expr, what: &str) -> DfResult<i64> {
    match arg {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Ok(*v),
        Expr::Literal(ScalarValue::Int32(Some(v)), _) => Ok(*v as i64),
        other => Err(invalid(format!("{what} must be an integer literal, not {other}"))),
    }
}

/// How many of the events numbered below `end` belong to `stream`: events
/// come in blocks of person, auction and bid proportions, in that order.
fn events_of(config: &NexmarkConfig, stream: EventType, end: usize) -> usize {
    let (person, auction, bid) = (config.person_proportion, config.auction_proportion, config.bid_proportion);
    let (start, share) = match stream {
        EventType::Person => (0, person),
        EventType::Auction => (person, auction),
        EventType::Bid => (person + auction, bid),
    };
    let block = person + auction + bid;
    end / block * share + (end % block).saturating_sub(start).min(share)
}

/// One batch of a stream's rows.
fn batch(stream: EventType, events: &[Event]) -> DfResult<RecordBatch> {
    fn ints<'a, T: 'a>(rows: &'a [&T], value: impl Fn(&T) -> usize) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| value(r) as i64)))
    }
    fn texts<'a, T: 'a>(rows: &'a [&T], value: impl Fn(&T) -> &str) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| value(r))))
    }
    fn times<'a, T: 'a>(rows: &'a [&T], value: impl Fn(&T) -> u64) -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| value(r) as i64)))
    }
    let columns: Vec<ArrayRef> = match stream {
        EventType::Person => {
            let rows: Vec<&Person> =
                events.iter().filter_map(|e| if let Event::Person(p) = e { Some(p) } else { None }).collect();
            vec![
                ints(&rows, |p| p.id),
                texts(&rows, |p| &p.name),
                texts(&rows, |p| &p.email_address),
                texts(&rows, |p| &p.credit_card),
                texts(&rows, |p| &p.city),
                texts(&rows, |p| &p.state),
                times(&rows, |p| p.date_time),
                texts(&rows, |p| &p.extra),
            ]
        }
        EventType::Auction => {
            let rows: Vec<&Auction> =
                events.iter().filter_map(|e| if let Event::Auction(a) = e { Some(a) } else { None }).collect();
            vec![
                ints(&rows, |a| a.id),
                texts(&rows, |a| &a.item_name),
                texts(&rows, |a| &a.description),
                ints(&rows, |a| a.initial_bid),
                ints(&rows, |a| a.reserve),
                times(&rows, |a| a.date_time),
                times(&rows, |a| a.expires),
                ints(&rows, |a| a.seller),
                ints(&rows, |a| a.category),
                texts(&rows, |a| &a.extra),
            ]
        }
        EventType::Bid => {
            let rows: Vec<&Bid> =
                events.iter().filter_map(|e| if let Event::Bid(b) = e { Some(b) } else { None }).collect();
            vec![
                ints(&rows, |b| b.auction),
                ints(&rows, |b| b.bidder),
                ints(&rows, |b| b.price),
                texts(&rows, |b| &b.channel),
                texts(&rows, |b| &b.url),
                times(&rows, |b| b.date_time),
                texts(&rows, |b| &b.extra),
            ]
        }
    };
    Ok(RecordBatch::try_new(schema(stream), columns)?)
}

impl TableFunctionImpl for NexmarkFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let (stream, events, first, rate) = match args.exprs() {
            [stream, events] => (stream, events, None, None),
            [stream, events, first] => (stream, events, Some(first), None),
            [stream, events, first, rate] => (stream, events, Some(first), Some(rate)),
            other => return Err(invalid(format!("{} arguments given", other.len()))),
        };
        let events = integer(events, "the event count")?;
        let first = first.map(|f| integer(f, "the first event")).transpose()?.unwrap_or(0);
        let rate = rate.map(|r| integer(r, "the events per second")).transpose()?.unwrap_or(DEFAULT_RATE as i64);
        let stream = match stream {
            Expr::Literal(ScalarValue::Utf8(Some(name)), _) => match name.to_ascii_lowercase().as_str() {
                "person" => EventType::Person,
                "auction" => EventType::Auction,
                "bid" => EventType::Bid,
                _ => return Err(invalid(format!("unknown stream '{name}'"))),
            },
            other => return Err(invalid(format!("the stream must be a string literal, not {other}"))),
        };
        if !(0..=MAX_EVENTS).contains(&events) {
            return Err(invalid(format!("the event count must be between 0 and {MAX_EVENTS}")));
        }
        if first < 0 || !(1..=MAX_RATE).contains(&rate) {
            return Err(invalid(format!(
                "the first event must not be negative and the rate must be between 1 and {MAX_RATE} events per second"
            )));
        }
        if first > MAX_FIRST_EVENT {
            return Err(invalid(format!("the first event must be at most {MAX_FIRST_EVENT}")));
        }
        let config = NexmarkConfig {
            base_time: BASE_TIME_MS,
            first_rate: rate as usize,
            next_rate: rate as usize,
            ..Default::default()
        };
        // Generate only this stream's events (the generator skips to their
        // event numbers), not all events filtered afterwards.
        let (first, end) = (first as usize, (first + events) as usize);
        let skipped = events_of(&config, stream, first);
        let mut left = events_of(&config, stream, end) - skipped;
        let mut generator = EventGenerator::new(config).with_type_filter(stream).with_offset(skipped as u64);
        let mut batches = Vec::new();
        while left > 0 {
            let chunk: Vec<Event> = generator.by_ref().take(left.min(BATCH_ROWS)).collect();
            left -= chunk.len();
            batches.push(batch(stream, &chunk)?);
        }
        Ok(Arc::new(MemTable::try_new(schema(stream), vec![batches])?))
    }
}

#[cfg(test)]
mod tests {
    use nexmark::EventGenerator;
    use nexmark::config::NexmarkConfig;
    use nexmark::event::{Event, EventType};

    use super::events_of;

    /// Generating one stream from its own offset gives exactly that
    /// stream's events among all events of the same range.
    #[test]
    fn one_stream_equals_all_events_filtered() {
        let config = || NexmarkConfig { base_time: super::BASE_TIME_MS, ..Default::default() };
        for stream in [EventType::Person, EventType::Auction, EventType::Bid] {
            for (first, events) in [(0usize, 0usize), (0, 1), (0, 50), (3, 97), (49, 2), (1000, 333), (77, 1)] {
                let all: Vec<Event> = EventGenerator::new(config())
                    .with_offset(first as u64)
                    .take(events)
                    .filter(|e| e.event_type() == stream)
                    .collect();
                let skipped = events_of(&config(), stream, first);
                let count = events_of(&config(), stream, first + events) - skipped;
                let own: Vec<Event> = EventGenerator::new(config())
                    .with_type_filter(stream)
                    .with_offset(skipped as u64)
                    .take(count)
                    .collect();
                assert_eq!(own, all, "{stream:?} events {first}..{}", first + events);
            }
        }
    }
}
