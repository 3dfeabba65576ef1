//! Freshet: a streaming SQL database. Postgres wire protocol in front,
//! incrementally maintained materialized views over Arrow change batches
//! inside. See docs/ARCHITECTURE.md for the map.
//!
//! Dependencies point one way: `server` → `sql` → `plan` → `stream` →
//! `state`; `catalog` holds relation metadata and storage layout, used by
//! `sql`, `plan` and the epoch coordinator.

pub mod catalog;
pub mod connectors;
pub mod error;
pub mod plan;
pub mod server;
pub mod sql;
pub mod state;
pub mod stream;
