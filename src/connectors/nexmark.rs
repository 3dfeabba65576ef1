//! The Nexmark generator: the benchmark's person, auction and bid streams
//! from the reference generator (the `nexmark` crate: the same ids, prices,
//! hot keys and timestamps as the Java generator of the Nexmark suite).
//!
//! Used two ways: the `nexmark()` table function (`sql/nexmark.rs`) for
//! loading tables and batch queries, and the `nexmark` source connector:
//!
//! ```sql
//! CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'bid',
//!   nexmark.event.num = 1000000, nexmark.min.event.gap.in.ns = 0);
//! ```
//!
//! Options (RisingWave's names): `nexmark.table.type` (person, auction or
//! bid), `nexmark.event.num` (events of all three streams, 1 : 3 : 46;
//! default unbounded), `nexmark.min.event.gap.in.ns` (wall-clock pacing,
//! default 100,000 = 10,000 events/s; 0 = as fast as the views take them),
//! `nexmark.max.chunk.size` (events per epoch, default 10,000: the bound
//! that keeps memory flat when views fall behind), and
//! `nexmark.event.rate` (events per second of *event* time, default 10,000
//! as in the reference generator). Event times start at 2015-07-15 00:00:00
//! UTC, so runs are reproducible.
//!
//! A reader that is catching up (each read a full chunk, the next one
//! already due) generates the next chunk on a thread of its own while the
//! view computes the current one ([`ReadAhead`]): the view's epoch driver
//! then finds its rows made instead of making them between epochs. Every
//! read is a function of its range, so a chunk made ahead is the chunk the
//! read would have made; a read asking for another range (after recovery,
//! or a paced source not yet due) makes its own and drops the guess.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::{Auction, Bid, Event, EventType, Person};

use super::nexmark_columns::{self as columns, Read};
use super::{BadRecord, Connector, ConnectorOptions, SourcePosition, SourceReader, check_declared, due};
use crate::error::{Result, SqlError, sqlstate};

/// 2015-07-15 00:00:00 UTC, in milliseconds.
pub const BASE_TIME_MS: u64 = 1_436_918_400_000;
/// The reference generator's rate, and the highest one accepted.
pub const DEFAULT_RATE: u64 = 10_000;
pub const MAX_RATE: i64 = 1_000_000_000;
/// Events one call may generate (held in memory as one table).
pub const MAX_EVENTS: i64 = 50_000_000;
/// Highest first event number (far beyond any run, well within the
/// generator's arithmetic).
pub const MAX_FIRST_EVENT: i64 = 1_000_000_000_000_000;
/// Rows per generated batch.
const BATCH_ROWS: usize = 8192;

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

/// How many of the events numbered below `end` belong to `stream`: events
/// come in blocks of person, auction and bid proportions, in that order.
pub fn events_of(config: &NexmarkConfig, stream: EventType, end: usize) -> usize {
    let (start, share) = columns::place_in_block(config, stream);
    let block = config.person_proportion + config.auction_proportion + config.bid_proportion;
    end / block * share + (end % block).saturating_sub(start).min(share)
}

/// One batch of a stream's rows.
pub fn batch(stream: EventType, events: &[Event]) -> Result<RecordBatch> {
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

/// The generator's configuration at `rate` events per second of event time.
pub fn config(rate: u64) -> NexmarkConfig {
    NexmarkConfig { base_time: BASE_TIME_MS, first_rate: rate as usize, next_rate: rate as usize, ..Default::default() }
}

/// The rows of `stream` among the events numbered `first..end`, in batches.
pub fn generate(stream: EventType, first: u64, end: u64, rate: u64) -> Result<Vec<RecordBatch>> {
    generate_columns(stream, first, end, rate, Read::ALL)
}

/// [`generate`] with only the columns in `read` filled (the others zeros
/// or empty strings, when the stream is generated column by column).
fn generate_columns(stream: EventType, first: u64, end: u64, rate: u64, read: Read) -> Result<Vec<RecordBatch>> {
    let config = config(rate);
    // Generate only this stream's events (the generator skips to their
    // event numbers), not all events filtered afterwards.
    let skipped = events_of(&config, stream, first as usize);
    let mut left = events_of(&config, stream, end as usize) - skipped;
    let mut batches = Vec::new();
    if stream != EventType::Bid && columns::supported(&config) {
        let mut at = skipped as u64;
        while left > 0 {
            let rows = left.min(BATCH_ROWS);
            let columns = match stream {
                EventType::Person => columns::persons(&config, at, rows, read)?,
                _ => columns::auctions(&config, at, rows, read)?,
            };
            batches.push(RecordBatch::try_new(schema(stream), columns)?);
            at += rows as u64;
            left -= rows;
        }
        return Ok(batches);
    }
    let mut generator = EventGenerator::new(config).with_type_filter(stream).with_offset(skipped as u64);
    while left > 0 {
        let chunk: Vec<Event> = generator.by_ref().take(left.min(BATCH_ROWS)).collect();
        if chunk.is_empty() {
            break;
        }
        left -= chunk.len();
        batches.push(batch(stream, &chunk)?);
    }
    Ok(batches)
}

/// A stream's name as the options and the table function write it.
pub fn stream_named(name: &str) -> Option<EventType> {
    match name.to_ascii_lowercase().as_str() {
        "person" => Some(EventType::Person),
        "auction" => Some(EventType::Auction),
        "bid" => Some(EventType::Bid),
        _ => None,
    }
}

/// The `nexmark` source connector.
#[derive(Clone)]
pub struct NexmarkReader {
    /// The chunk being made ahead of the reads. `with_columns` gives each
    /// view a reader of its own; views sharing one reader at different
    /// positions only drop each other's guesses.
    ahead: Arc<ReadAhead>,
    stream: EventType,
    /// Events of all streams to generate in all.
    total: u64,
    gap_nanos: u64,
    chunk: u64,
    rate: u64,
    /// The columns the reading view uses: persons and auctions generate
    /// only those (`nexmark_columns`); bids whose strings nobody reads are
    /// generated column by column, the strings left empty.
    read: Read,
    numbers_only: bool,
}

/// The next chunk of a reader, being generated on a thread of its own.
struct Pending {
    first: u64,
    end: u64,
    rows: std::sync::mpsc::Receiver<Result<RecordBatch>>,
}

/// At most one chunk generated ahead of a reader's reads.
#[derive(Default)]
struct ReadAhead(parking_lot::Mutex<Option<Pending>>);

impl ReadAhead {
    /// The events `first..end` if they were made ahead, waiting for them if
    /// they are still being made; `None` if another range was guessed (it
    /// is dropped) or the thread making them failed.
    fn take(&self, first: u64, end: u64) -> Option<Result<RecordBatch>> {
        let pending = self.0.lock().take()?;
        if (pending.first, pending.end) != (first, end) {
            return None;
        }
        pending.rows.recv().ok()
    }

    /// Starts making `first..end` with `reader` on a thread of its own. If
    /// no thread can be started, nothing is made ahead.
    fn start(&self, reader: &NexmarkReader, first: u64, end: u64) {
        let (sender, rows) = std::sync::mpsc::sync_channel(1);
        let reader = reader.clone();
        let made = std::thread::Builder::new().name("nexmark-ahead".into()).spawn(move || {
            // The receiver may be gone (the reader dropped, another range
            // asked for): then the rows are simply dropped.
            let _ = sender.send(reader.generate(first, end));
        });
        if made.is_ok() {
            *self.0.lock() = Some(Pending { first, end, rows });
        }
    }
}

/// The bid columns `nexmark_columns` generates: auction, bidder, price, date_time.
const BID_NUMBERS: [usize; 4] = [0, 1, 2, 5];

/// Bids with only their numeric columns filled (the strings empty).
fn bid_numbers(first: u64, end: u64, rate: u64) -> Result<RecordBatch> {
    let config = config(rate);
    let first_bid = events_of(&config, EventType::Bid, first as usize);
    let count = events_of(&config, EventType::Bid, end as usize) - first_bid;
    let bids = columns::bids(&config, first_bid as u64, count);
    let empty: ArrayRef = Arc::new(StringArray::new(
        datafusion::arrow::buffer::OffsetBuffer::new_zeroed(count),
        datafusion::arrow::buffer::Buffer::from(Vec::<u8>::new()),
        None,
    ));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(bids.auction),
        Arc::new(bids.bidder),
        Arc::new(bids.price),
        empty.clone(),
        empty.clone(),
        Arc::new(bids.date_time),
        empty,
    ];
    Ok(RecordBatch::try_new(schema(EventType::Bid), columns)?)
}

impl NexmarkReader {
    pub fn new(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Self> {
        const KNOWN: [&str; 6] = [
            "connector",
            "nexmark.table.type",
            "nexmark.event.num",
            "nexmark.min.event.gap.in.ns",
            "nexmark.max.chunk.size",
            "nexmark.event.rate",
        ];
        options.reject_unknown(&|k| KNOWN.contains(&k))?;
        let stream = match options.get("nexmark.table.type") {
            Some(name) => stream_named(name).ok_or_else(|| {
                SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("nexmark.table.type = '{name}': it is one of 'person', 'auction', 'bid'"),
                )
            })?,
            None => {
                return Err(SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "connector 'nexmark' needs nexmark.table.type = 'person' | 'auction' | 'bid'",
                ));
            }
        };
        let rate = options.integer("nexmark.event.rate", DEFAULT_RATE)?;
        if rate == 0 || rate > MAX_RATE as u64 {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("nexmark.event.rate must be between 1 and {MAX_RATE}"),
            ));
        }
        let chunk = options.integer("nexmark.max.chunk.size", 10_000)?.max(1);
        let reader = Self {
            ahead: Arc::default(),
            stream,
            total: options.integer("nexmark.event.num", MAX_FIRST_EVENT as u64)?.min(MAX_FIRST_EVENT as u64),
            gap_nanos: options.integer("nexmark.min.event.gap.in.ns", 100_000)?,
            chunk,
            rate,
            read: Read::ALL,
            numbers_only: false,
        };
        check_declared("nexmark", &reader.schema(), declared.as_ref())?;
        Ok(reader)
    }

    /// The events `first..end` of this reader's stream, as one batch.
    fn generate(&self, first: u64, end: u64) -> Result<RecordBatch> {
        if self.numbers_only {
            return bid_numbers(first, end, self.rate);
        }
        let batches = generate_columns(self.stream, first, end, self.rate, self.read)?;
        Ok(datafusion::arrow::compute::concat_batches(&self.schema(), &batches)?)
    }
}

impl Connector for NexmarkReader {
    fn schema(&self) -> SchemaRef {
        schema(self.stream)
    }
}

impl SourceReader for NexmarkReader {
    fn read(
        &self,
        position: &mut SourcePosition,
        now_nanos: i64,
        max_records: usize,
        _bad: &mut Vec<BadRecord>,
    ) -> Result<RecordBatch> {
        let due = due(position, now_nanos, self.gap_nanos);
        if position.started_nanos == 0 {
            position.started_nanos = now_nanos.max(1);
        }
        let chunk = self.chunk.min(max_records as u64);
        let first = position.next;
        let end = self.total.min(due).min(first.saturating_add(chunk));
        if end <= first {
            return Ok(RecordBatch::new_empty(self.schema()));
        }
        let rows = match self.ahead.take(first, end) {
            Some(rows) => rows?,
            None => self.generate(first, end)?,
        };
        position.next = end;
        // A full chunk, and the next full one already due (or the rest of
        // the stream): the reader is catching up, and its next read will
        // most likely ask for exactly that chunk (a later read only has
        // more records due). A partial next chunk would grow by then.
        let next_end = self.total.min(due).min(end.saturating_add(chunk));
        if end - first == chunk && next_end > end && (next_end - end == chunk || next_end == self.total) {
            self.ahead.start(self, end, next_end);
        }
        Ok(rows)
    }

    fn with_columns(&self, read: &[usize]) -> Option<Arc<dyn SourceReader>> {
        let numbers_only = self.stream == EventType::Bid
            && read.iter().all(|c| BID_NUMBERS.contains(c))
            && columns::supported(&config(self.rate));
        Some(Arc::new(Self { ahead: Arc::default(), read: Read::of(read), numbers_only, ..self.clone() }))
    }

    fn exhausted(&self, position: &SourcePosition) -> bool {
        position.next >= self.total
    }
}

#[cfg(test)]
mod tests {
    use nexmark::EventGenerator;
    use nexmark::config::NexmarkConfig;
    use nexmark::event::{Event, EventType};

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};

    use super::{batch, config, events_of, generate, generate_columns, schema};
    use crate::connectors::nexmark_columns::{Read, bids, supported};

    /// Persons and auctions column by column (`nexmark_columns`) equal the
    /// reference generator's rows, every column, at the start, across many
    /// proportion blocks and far into the stream, at several rates; and
    /// reading only some columns fills those with the same values.
    #[test]
    fn persons_and_auctions_column_by_column_equal_the_reference_generators() {
        for rate in [10_000u64, 1, 777, 1_000_000] {
            for stream in [EventType::Person, EventType::Auction] {
                for (first_event, events) in
                    [(0u64, 20_000u64), (123, 1), (0, 1), (49, 2), (20_000_000, 3_000), (999_999_950, 200)]
                {
                    let config = config(rate);
                    let skipped = events_of(&config, stream, first_event as usize);
                    let count = events_of(&config, stream, (first_event + events) as usize) - skipped;
                    let reference: Vec<Event> = EventGenerator::new(config)
                        .with_type_filter(stream)
                        .with_offset(skipped as u64)
                        .take(count)
                        .collect();
                    let want = batch(stream, &reference).expect("reference batch");
                    let what = format!("{stream:?}, rate {rate}, events {first_event}+{events}");
                    let whole = generate(stream, first_event, first_event + events, rate).expect("columns");
                    let whole = datafusion::arrow::compute::concat_batches(&schema(stream), &whole).expect("concat");
                    assert_eq!(whole, want, "every column, {what}");
                    // One column at a time, and pairs ending at each column.
                    for column in 0..want.num_columns() {
                        for read in [vec![column], vec![0, column], vec![6, column]] {
                            let got =
                                generate_columns(stream, first_event, first_event + events, rate, Read::of(&read))
                                    .expect("some columns");
                            let got =
                                datafusion::arrow::compute::concat_batches(&schema(stream), &got).expect("concat");
                            assert_eq!(got.num_rows(), want.num_rows(), "{what}");
                            for &c in &read {
                                assert_eq!(got.column(c), want.column(c), "column {c} of {read:?}, {what}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Bids column by column (`nexmark_columns`) equal the reference
    /// generator's, at the start, across many proportion blocks, and far
    /// into the stream (where the single-precision timestamps round), at
    /// several rates.
    #[test]
    fn bids_column_by_column_equal_the_reference_generators() {
        for rate in [10_000u64, 1, 777, 1_000_000] {
            let config = config(rate);
            assert!(supported(&config));
            for (first_event, events) in [(0u64, 5_000u64), (123, 1), (49, 2), (20_000_000, 3_000), (999_999_950, 200)]
            {
                let want = generate(EventType::Bid, first_event, first_event + events, rate).expect("reference");
                let first_bid = events_of(&config, EventType::Bid, first_event as usize) as u64;
                let count: usize = want.iter().map(|b| b.num_rows()).sum();
                let got = bids(&config, first_bid, count);
                let mut at = 0;
                for batch in &want {
                    let n = batch.num_rows();
                    let column = |i: usize| batch.column(i).as_primitive::<Int64Type>().values().to_vec();
                    let range = at..at + n;
                    let what = format!("rate {rate}, events {first_event}+{events}");
                    assert_eq!(got.auction.values().get(range.clone()), Some(&column(0)[..]), "auction, {what}");
                    assert_eq!(got.bidder.values().get(range.clone()), Some(&column(1)[..]), "bidder, {what}");
                    assert_eq!(got.price.values().get(range.clone()), Some(&column(2)[..]), "price, {what}");
                    let times = batch.column(5).as_primitive::<TimestampMillisecondType>().values().to_vec();
                    assert_eq!(got.date_time.values().get(range), Some(&times[..]), "date_time, {what}");
                    at += n;
                }
                assert_eq!(at, got.auction.len());
            }
        }
    }

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

    /// Reads that catch up get their next chunk made ahead, and what they
    /// get is what reading the whole range at once gives, for every kind
    /// of chunk (bids as numbers, persons and auctions column by column,
    /// bids with their strings); a read of another range than the one made
    /// ahead (a restart from a checkpointed position) gets its own range.
    #[test]
    fn chunks_made_ahead_equal_the_range_read_at_once() {
        use datafusion::arrow::compute::concat_batches;

        use crate::stream::connector::{ConnectorOptions, SourcePosition, SourceReader};

        let reader = |stream: &str, chunk: &str, columns: &[usize]| {
            let options = ConnectorOptions {
                values: [
                    ("connector", "nexmark"),
                    ("nexmark.table.type", stream),
                    ("nexmark.event.num", "50000"),
                    ("nexmark.min.event.gap.in.ns", "0"),
                    ("nexmark.max.chunk.size", chunk),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            };
            super::NexmarkReader::new(&options, None).expect("options").with_columns(columns).expect("narrowed")
        };
        let read = |reader: &dyn SourceReader, position: &mut SourcePosition| {
            reader.read(position, 1, usize::MAX, &mut Vec::new()).expect("read")
        };
        for (stream, columns) in
            [("bid", vec![0, 2, 5]), ("auction", vec![5, 7]), ("person", vec![0, 1]), ("bid", vec![0, 4])]
        {
            // One read of the whole stream: nothing to make ahead.
            let once = reader(stream, "50000", &columns);
            let whole = read(once.as_ref(), &mut SourcePosition::default());

            let stepped = reader(stream, "7000", &columns);
            let mut position = SourcePosition::default();
            let mut parts = Vec::new();
            for _ in 0..4 {
                parts.push(read(stepped.as_ref(), &mut position));
            }
            // 28,000..35,000 is being made ahead; a restart reads from
            // 21,000 instead and gets that range, not the guess.
            let mut restarted = SourcePosition { next: 21_000, ..position.clone() };
            assert_eq!(read(stepped.as_ref(), &mut restarted), parts[3], "{stream}: 21,000.. again");
            assert_eq!(restarted, position);
            while !stepped.exhausted(&position) {
                parts.push(read(stepped.as_ref(), &mut position));
            }
            assert_eq!(parts.len(), 8, "{stream}: 50,000 events in chunks of 7,000");
            let stepped = concat_batches(&stepped.schema(), &parts).expect("concat");
            assert_eq!(stepped, whole, "{stream} {columns:?}");
            assert!(whole.num_rows() > 0, "{stream}");
        }
    }
}
