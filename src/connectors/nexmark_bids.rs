//! Nexmark bids, column by column: the `auction`, `bidder`, `price` and
//! `date_time` of each bid, written straight into Arrow arrays, without
//! building the `Bid` values (three heap strings each) of the reference
//! generator when a view reads none of the strings.
//!
//! The values are exactly the reference generator's (`nexmark` 0.2,
//! `Bid::new`): the same random number generator seeded by the event id,
//! the same draws in the same order up to the price, the same id arithmetic
//! and the same single-precision timestamps. Only the draws after the price
//! (channel, url, extra) are skipped. A test in `connectors/nexmark.rs`
//! compares the two over many ranges and rates, so a new version of the
//! crate that changed its draws would be caught.

use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
use nexmark::config::NexmarkConfig;
use rand_08::rngs::SmallRng;
use rand_08::{Rng, SeedableRng};

/// The reference generator's constants (`nexmark::event`), not its config.
const HOT_AUCTION_RATIO: usize = 100;
const HOT_BIDDER_RATIO: usize = 100;

/// The four numeric columns of a run of bids.
pub struct BidColumns {
    pub auction: Int64Array,
    pub bidder: Int64Array,
    pub price: Int64Array,
    pub date_time: TimestampMillisecondArray,
}

/// Whether [`bids`] can generate `config`'s bids: at one constant rate (its
/// timestamps follow one inter-event delay).
pub fn supported(config: &NexmarkConfig) -> bool {
    config.first_rate == config.next_rate && config.first_rate > 0 && config.bid_proportion > 0
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
        let event_number = offset / config.bid_proportion * denominator
            + config.person_proportion
            + config.auction_proportion
            + offset % config.bid_proportion;
        let event_id = config.first_event_id + config.first_event_number + event_number;
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
