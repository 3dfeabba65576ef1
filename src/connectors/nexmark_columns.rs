//! The Nexmark streams column by column: each person, auction and bid
//! written straight into Arrow arrays, without building the reference
//! generator's `Event` values (a heap string per text column, collected
//! char by char) and without drawing the columns nobody reads.
//!
//! The values are exactly the reference generator's (`nexmark` 0.2,
//! `Person::new`, `Auction::new`, `Bid::new`): the same random number
//! generator seeded by the event id, the same draws in the same order, the
//! same id arithmetic and the same single-precision timestamps. What a
//! column nobody reads saves depends on where its draws are:
//! - a text column in the middle of a row (a person's email, an auction's
//!   description) still draws its letters, to keep the draws after it
//!   right, but builds nothing;
//! - the draws after the last column read are not made at all: a row's
//!   `extra` (about 130 letters of a person's ~150 draws, 330 of an
//!   auction's ~450), and a bid's channel, url and extra.
//!
//! Tests in `connectors/nexmark.rs` compare every column with the
//! reference generator over many ranges and rates, so a new version of the
//! crate that changed its draws would be caught.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use nexmark::config::NexmarkConfig;
use nexmark::event::EventType;
use rand_08::rngs::SmallRng;
use rand_08::seq::SliceRandom;
use rand_08::{Rng, SeedableRng};

use crate::error::{Result, SqlError};

/// The reference generator's constants (`nexmark::event`), not its config.
const HOT_AUCTION_RATIO: usize = 100;
const HOT_BIDDER_RATIO: usize = 100;
const HOT_SELLER_RATIO: usize = 100;
/// Where `stream`'s events sit in each block of events: the events come in
/// blocks of the person, auction and bid proportions, in that order.
/// Returns (the events before the stream's in a block, its events per block).
pub fn place_in_block(config: &NexmarkConfig, stream: EventType) -> (usize, usize) {
    let (person, auction, bid) = (config.person_proportion, config.auction_proportion, config.bid_proportion);
    match stream {
        EventType::Person => (0, person),
        EventType::Auction => (person, auction),
        EventType::Bid => (person + auction, bid),
    }
}

/// The event number (among the events of all streams) of `stream`'s row
/// numbered `offset` (as the reference generator's `global_offset`).
fn event_number(config: &NexmarkConfig, stream: EventType, offset: usize) -> usize {
    let denominator = config.person_proportion + config.auction_proportion + config.bid_proportion;
    let (before, share) = place_in_block(config, stream);
    config.first_event_number + offset / share * denominator + before + offset % share
}

/// The four numeric columns of a run of bids.
pub struct BidColumns {
    pub auction: Int64Array,
    pub bidder: Int64Array,
    pub price: Int64Array,
    pub date_time: TimestampMillisecondArray,
}

/// Whether [`bids`] can generate `config`'s bids: at one constant rate (its
/// timestamps follow one inter-event delay).
/// The same holds for persons and auctions.
pub fn supported(config: &NexmarkConfig) -> bool {
    config.first_rate == config.next_rate
        && config.first_rate > 0
        && config.person_proportion > 0
        && config.auction_proportion > 0
        && config.bid_proportion > 0
        && config.out_of_order_group_size == 1
}

/// The bids numbered `first..first + count` among the bids (0 = the first
/// bid of the stream), under `config` (which must be [`supported`]).
pub fn bids(config: &NexmarkConfig, first: u64, count: usize) -> BidColumns {
    let denominator = config.person_proportion + config.auction_proportion + config.bid_proportion;
    // As `GeneratorConfig` computes it, in single precision.
    let delay = config.us_per_unit as f32 / config.first_rate as f32 * config.num_event_generators as f32;
    let mut auction = Vec::with_capacity(count);
    let mut bidder = Vec::with_capacity(count);
    let mut price = Vec::with_capacity(count);
    let mut date_time = Vec::with_capacity(count);
    for offset in first as usize..first as usize + count {
        let event_number = event_number(config, EventType::Bid, offset);
        let event_id = config.first_event_id + event_number;
        let time = config.base_time + ((event_number as f32 * delay) / 1000.0).round() as u64;
        let rng = &mut SmallRng::seed_from_u64(event_id as u64);
        let hot_auction = 0 < rng.gen_range(0..config.hot_auction_ratio);
        let a = if hot_auction {
            (auction_last_id(event_id, config, denominator) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            auction_next_id(event_id, rng, config, denominator)
        };
        let hot_bidder = 0 < rng.gen_range(0..config.hot_bidder_ratio);
        let b = if hot_bidder {
            (person_last_id(event_id, config, denominator) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            person_next_id(event_id, rng, config, denominator)
        };
        let p = (10.0_f32.powf(rng.r#gen::<f32>() * 6.0) * 100.0).round() as usize;
        auction.push((a + config.first_auction_id) as i64);
        bidder.push((b + config.first_person_id) as i64);
        price.push(p as i64);
        date_time.push(time as i64);
    }
    BidColumns {
        auction: Int64Array::from(auction),
        bidder: Int64Array::from(bidder),
        price: Int64Array::from(price),
        date_time: TimestampMillisecondArray::from(date_time),
    }
}

/// Which columns of a stream are read (bit `i` = column `i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read(u32);

impl Read {
    pub const ALL: Read = Read(u32::MAX);

    /// The columns numbered in `columns` (numbers past 31 are ignored: no
    /// stream has that many).
    pub fn of(columns: &[usize]) -> Self {
        Read(columns.iter().filter(|&&c| c < 32).fold(0, |bits, &c| bits | 1 << c))
    }

    pub fn contains(self, column: usize) -> bool {
        column < 32 && self.0 & (1 << column) != 0
    }

    /// The last of `stages` (each a column, in the order the generator
    /// draws them) that is read, counted from 1; 0 when none is.
    fn last_stage(self, stages: &[usize]) -> usize {
        stages.iter().rposition(|&c| self.contains(c)).map_or(0, |i| i + 1)
    }
}

/// One text column being generated: its bytes and offsets when the column
/// is read, nothing when it is not (the letters are still drawn).
struct Texts {
    read: bool,
    offsets: Vec<i32>,
    values: Vec<u8>,
}

impl Texts {
    fn new(read: bool, rows: usize, width: usize) -> Self {
        let (offsets, values) = if read {
            (Vec::with_capacity(rows + 1), Vec::with_capacity(rows * width))
        } else {
            (Vec::new(), Vec::new())
        };
        let mut texts = Self { read, offsets, values };
        texts.offsets.push(0);
        texts
    }

    /// `gen_exact_string`: `length` letters a-z.
    fn letters(&mut self, rng: &mut SmallRng, length: usize) {
        for _ in 0..length {
            let letter = rng.gen_range(b'a'..=b'z');
            if self.read {
                self.values.push(letter);
            }
        }
    }

    fn text(&mut self, text: &str) {
        if self.read {
            self.values.extend_from_slice(text.as_bytes());
        }
    }

    /// A number written with at least four digits (`{:04}`).
    fn four_digits(&mut self, number: i32) {
        if self.read {
            self.values.extend_from_slice(format!("{number:04}").as_bytes());
        }
    }

    /// Ends the current row's value.
    fn end_row(&mut self) -> Result<()> {
        if self.read {
            let end = i32::try_from(self.values.len())
                .map_err(|_| SqlError::internal("a generated Nexmark text column exceeds 2 GiB; read fewer rows"))?;
            self.offsets.push(end);
        }
        Ok(())
    }

    /// The column of `rows` values: empty strings when it is not read.
    fn finish(self, rows: usize) -> Result<ArrayRef> {
        Ok(Arc::new(if self.read {
            StringArray::try_new(OffsetBuffer::new(self.offsets.into()), Buffer::from(self.values), None)?
        } else {
            StringArray::new(OffsetBuffer::new_zeroed(rows), Buffer::from(Vec::<u8>::new()), None)
        }))
    }
}

/// `GeneratorConfig::event_timestamp` at one constant rate, in single
/// precision as the reference computes it.
fn event_time(config: &NexmarkConfig, event_number: usize) -> u64 {
    let delay = config.us_per_unit as f32 / config.first_rate as f32 * config.num_event_generators as f32;
    config.base_time + ((event_number as f32 * delay) / 1000.0).round() as u64
}

/// `gen_next_extra`: letters making a row about `average` bytes long.
fn extra(rng: &mut SmallRng, texts: &mut Texts, current: usize, average: usize) {
    if current > average {
        return;
    }
    let wanted = average - current;
    let delta = (wanted + 2) / 5;
    let size = wanted - delta + if delta == 0 { 0 } else { rng.gen_range(0..2 * delta) };
    texts.letters(rng, size);
}

/// `gen_price`.
fn price(rng: &mut SmallRng) -> usize {
    (10.0_f32.powf(rng.r#gen::<f32>() * 6.0) * 100.0).round() as usize
}

/// The persons numbered `first..first + count` among the persons (0 = the
/// first person of the stream), in the stream's schema; the columns not in
/// `read` are zeros or empty strings.
pub fn persons(config: &NexmarkConfig, first: u64, count: usize, read: Read) -> Result<Vec<ArrayRef>> {
    let denominator = config.person_proportion + config.auction_proportion + config.bid_proportion;
    // The columns drawn, in draw order: name, email_address, credit_card,
    // city, state, extra.
    let last = read.last_stage(&[1, 2, 3, 4, 5, 7]);
    let mut id = Vec::with_capacity(count);
    let mut date_time = Vec::with_capacity(count);
    let mut name = Texts::new(read.contains(1), count, 16);
    let mut email = Texts::new(read.contains(2), count, 17);
    let mut card = Texts::new(read.contains(3), count, 19);
    let mut city = Texts::new(read.contains(4), count, 10);
    let mut state = Texts::new(read.contains(5), count, 2);
    let mut extras = Texts::new(read.contains(7), count, 140);
    for offset in first as usize..first as usize + count {
        let event_number = event_number(config, EventType::Person, offset);
        let event_id = config.first_event_id + event_number;
        id.push((person_last_id(event_id, config, denominator) + config.first_person_id) as i64);
        date_time.push(event_time(config, event_number) as i64);
        if last > 0 {
            let rng = &mut SmallRng::seed_from_u64(event_id as u64);
            let first_name = config.first_names.choose(rng).map_or("", String::as_str);
            let last_name = config.last_names.choose(rng).map_or("", String::as_str);
            name.text(first_name);
            name.text(" ");
            name.text(last_name);
            if last > 1 {
                email.letters(rng, 7);
                email.text("@");
                email.letters(rng, 5);
                email.text(".com");
            }
            if last > 2 {
                for i in 0..4 {
                    if i > 0 {
                        card.text(" ");
                    }
                    card.four_digits(rng.gen_range(0..10000));
                }
            }
            let city_name = if last > 3 { config.us_cities.choose(rng).map_or("", String::as_str) } else { "" };
            city.text(city_name);
            let state_name = if last > 4 { config.us_states.choose(rng).map_or("", String::as_str) } else { "" };
            state.text(state_name);
            if last > 5 {
                // id, name, "x@y.com", "nnnn nnnn nnnn nnnn", city, state.
                let current = 8 + first_name.len() + 1 + last_name.len() + 17 + 19 + city_name.len() + state_name.len();
                extra(rng, &mut extras, current, config.avg_person_byte_size);
            }
        }
        for texts in [&mut name, &mut email, &mut card, &mut city, &mut state, &mut extras] {
            texts.end_row()?;
        }
    }
    Ok(vec![
        Arc::new(Int64Array::from(id)),
        name.finish(count)?,
        email.finish(count)?,
        card.finish(count)?,
        city.finish(count)?,
        state.finish(count)?,
        Arc::new(TimestampMillisecondArray::from(date_time)),
        extras.finish(count)?,
    ])
}

/// The auctions numbered `first..first + count` among the auctions (0 = the
/// first auction of the stream), in the stream's schema; the columns not
/// in `read` are zeros or empty strings.
pub fn auctions(config: &NexmarkConfig, first: u64, count: usize, read: Read) -> Result<Vec<ArrayRef>> {
    let denominator = config.person_proportion + config.auction_proportion + config.bid_proportion;
    // The columns drawn, in draw order: item_name, description,
    // initial_bid, reserve, expires, seller, category, extra.
    let last = read.last_stage(&[1, 2, 3, 4, 6, 7, 8, 9]);
    // `Auction::next_length`: auctions end within twice the time until
    // the auction this many events ahead.
    let events_for_auctions = config.in_flight_auctions * denominator / config.auction_proportion;
    let ints = || Vec::with_capacity(count);
    let (mut id, mut initial_bid, mut reserve, mut seller, mut category) = (ints(), ints(), ints(), ints(), ints());
    let (mut date_time, mut expires) = (ints(), ints());
    let mut item_name = Texts::new(read.contains(1), count, 20);
    let mut description = Texts::new(read.contains(2), count, 100);
    let mut extras = Texts::new(read.contains(9), count, 340);
    for offset in first as usize..first as usize + count {
        let event_number = event_number(config, EventType::Auction, offset);
        let event_id = config.first_event_id + event_number;
        let time = event_time(config, event_number);
        id.push((auction_last_id(event_id, config, denominator) + config.first_auction_id) as i64);
        date_time.push(time as i64);
        let (mut initial, mut reserved, mut ends, mut sold_by, mut category_id) = (0, 0, time, 0, 0);
        if last > 0 {
            let rng = &mut SmallRng::seed_from_u64(event_id as u64);
            item_name.letters(rng, 20);
            if last > 1 {
                description.letters(rng, 100);
            }
            if last > 2 {
                initial = price(rng);
            }
            if last > 3 {
                reserved = initial + price(rng);
            }
            if last > 4 {
                let horizon = event_time(config, event_number + events_for_auctions) - time;
                ends = time + 1 + rng.gen_range(0..(horizon * 2).max(1));
            }
            if last > 5 {
                let person = if rng.gen_range(0..config.hot_seller_ratio) > 0 {
                    // The first person in the batch of the last HOT_SELLER_RATIO.
                    (person_last_id(event_id, config, denominator) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
                } else {
                    person_next_id(event_id, rng, config, denominator)
                };
                sold_by = person + config.first_person_id;
            }
            if last > 6 {
                category_id = config.first_category_id + rng.gen_range(0..config.num_categories);
            }
            if last > 7 {
                // id, item_name, description, five 8-byte numbers.
                extra(rng, &mut extras, 8 + 20 + 100 + 8 * 5, config.avg_auction_byte_size);
            }
        }
        initial_bid.push(initial as i64);
        reserve.push(reserved as i64);
        expires.push(ends as i64);
        seller.push(sold_by as i64);
        category.push(category_id as i64);
        for texts in [&mut item_name, &mut description, &mut extras] {
            texts.end_row()?;
        }
    }
    Ok(vec![
        Arc::new(Int64Array::from(id)),
        item_name.finish(count)?,
        description.finish(count)?,
        Arc::new(Int64Array::from(initial_bid)),
        Arc::new(Int64Array::from(reserve)),
        Arc::new(TimestampMillisecondArray::from(date_time)),
        Arc::new(TimestampMillisecondArray::from(expires)),
        Arc::new(Int64Array::from(seller)),
        Arc::new(Int64Array::from(category)),
        extras.finish(count)?,
    ])
}

/// `Auction::last_id`: the last auction id (base 0) at `event_id`.
fn auction_last_id(event_id: usize, config: &NexmarkConfig, denominator: usize) -> usize {
    let mut epoch = event_id / denominator;
    let mut offset = event_id % denominator;
    if offset < config.person_proportion {
        epoch = epoch.saturating_sub(1);
        offset = config.auction_proportion - 1;
    } else if config.person_proportion + config.auction_proportion <= offset {
        offset = config.auction_proportion - 1;
    } else {
        offset -= config.person_proportion;
    }
    epoch * config.auction_proportion + offset
}

/// `Auction::next_id`: a random auction among those in flight.
fn auction_next_id(event_id: usize, rng: &mut SmallRng, config: &NexmarkConfig, denominator: usize) -> usize {
    let max_auction = auction_last_id(event_id, config, denominator);
    let min_auction = max_auction.saturating_sub(config.in_flight_auctions);
    min_auction + rng.gen_range(0..max_auction - min_auction + 1 + config.auction_id_lead)
}

/// `Person::last_id`: the last person id (base 0) at `event_id`.
fn person_last_id(event_id: usize, config: &NexmarkConfig, denominator: usize) -> usize {
    let epoch = event_id / denominator;
    let offset = (event_id % denominator).min(config.person_proportion - 1);
    epoch * config.person_proportion + offset
}

/// `Person::next_id`: a random person among the active ones.
fn person_next_id(event_id: usize, rng: &mut SmallRng, config: &NexmarkConfig, denominator: usize) -> usize {
    let people = person_last_id(event_id, config, denominator) + 1;
    let active = people.min(config.active_people);
    people - active + rng.gen_range(0..active + config.person_id_lead)
}
