//! Freshet: a streaming SQL database. Postgres wire protocol in front,
//! incrementally maintained materialized views over Arrow change batches
//! inside. See docs/ARCHITECTURE.md for the map.
//!
//! Dependencies point one way: `server` → `sql` → `plan` → `db` →
//! `catalog` / `stream` → `state`, and `connectors` → `stream`. `catalog`
//! says what exists, `stream` computes a view's changes, and `db` runs it
//! all over time: epochs, writes, transactions, feeds, sinks.
//!
//! No input may take the server down, and statements, protocol messages,
//! connector records and stored bytes are all input: nowhere in the crate
//! may an `unwrap`, `expect`, index or string slice panic on a value.
//! `make test` runs clippy, which refuses them; code that cannot fail
//! says so with `get`, a pattern or an `Option`, not with a comment.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::string_slice)]

pub mod catalog;
pub mod connectors;
pub mod db;
pub mod duration;
pub mod error;
pub mod hash;
pub mod pg_catalog;
pub mod plan;
pub mod server;
pub mod sql;
pub mod state;
pub mod stream;
