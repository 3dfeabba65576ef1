//! The running database: the one home of everything that happens over time.
//!
//! `catalog` says what exists (relations, their schemas, keys, roles and
//! grants) and `stream` how a view's changes are computed (operators over
//! change batches); this module makes it happen and keeps it durable:
//!
//! - [`coordinator`]: the single writer. Epochs (every write, from a
//!   statement, a transaction's COMMIT or a connector, is one epoch run
//!   through the dependent views' dataflows and written in one batch),
//!   checkpoints, recovery, view creation and rebuild, the clock;
//! - [`epoch_log`]: the table changes of the epochs since the last
//!   checkpoint, replayed after a crash;
//! - [`store_health`]: the read-only mode after a failed write, and the
//!   healer that ends it;
//! - [`storage`]: how a relation's rows are laid out in the store;
//! - [`writes`]: INSERT / UPDATE / DELETE / COPY as table changes;
//! - [`transaction`] and [`snapshot`]: which epoch a statement or a
//!   transaction block reads, and a block's writes until COMMIT;
//! - [`provider`]: relations as DataFusion table providers for ad-hoc
//!   queries, reading the statement's snapshot;
//! - [`feed`] and [`sinks`]: the background tasks that feed tables from
//!   connectors and deliver sinks' outboxes to their writers;
//! - [`subscribe`]: SUBSCRIBE's per-client queues of committed changes;
//! - [`system`]: the `freshet_catalog` tables that show all of the above.
//!
//! Dependencies point down: `sql` and `server` call into `db`; `db` uses
//! `catalog`, `stream`, `connectors` and `state`, never the reverse.

pub mod background;
pub mod coordinator;
pub mod epoch_log;
pub mod feed;
pub mod provider;
pub mod run_state;
pub mod sinks;
pub mod snapshot;
pub mod storage;
pub mod store_health;
pub mod subscribe;
pub mod transaction;
pub mod writes;
