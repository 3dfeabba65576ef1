//! Every task a running server keeps in the background, started in one
//! place, so what runs besides the statements is read here:
//!
//! | task | what it does | when |
//! |---|---|---|
//! | checkpointer (`coordinator`) | a checkpoint once writes pause | every checkpoint interval |
//! | store healer (`store_health`) | makes the store take writes again after a failed one | while read-only, backing off |
//! | clock (`coordinator`) | an epoch for views that follow the time (temporal filters, idle timeouts of watermarks) and for views reading sources that cannot say nothing came (generators, files) | every `clock_tick` |
//! | source pump (`coordinator`) | epochs for views reading sources | while rows come; a view whose readers are told when records come (Kafka) only once some came, woken by the arrival; others polled, backing off to 50 ms |
//! | feed (`feed`) | rows of connector-fed tables | while rows come, backing off to 10 ms |
//! | sink delivery (`sinks`) | committed epochs to each sink's external system | while epochs come, backing off to 10 ms |
//!
//! Each runs until the coordinator is dropped; a failed round is logged and
//! retried (connectors and sinks back off with `stream::connector::Retry`).

use std::sync::Arc;
use std::time::Duration;

use super::coordinator::Coordinator;
use crate::catalog::Catalog;

/// How long the source pump waits at most between rounds while no source
/// has rows.
const SOURCE_PUMP_IDLE: Duration = Duration::from_millis(50);
/// The same for the feed of connector-fed tables and for sink delivery.
const FEED_IDLE: Duration = Duration::from_millis(10);

/// Starts every background task (after recovery: they act on the
/// recovered catalog). `clock_tick`: the period of the clock.
pub fn start(coordinator: &Arc<Coordinator>, catalog: &Arc<Catalog>, clock_tick: Duration) {
    coordinator.spawn_checkpointer();
    coordinator.spawn_store_healer();
    coordinator.spawn_clock(clock_tick);
    coordinator.spawn_source_pump(SOURCE_PUMP_IDLE);
    super::feed::spawn(coordinator, catalog, FEED_IDLE);
    super::sinks::spawn(coordinator, catalog, FEED_IDLE);
}
