//! Freshet's integration tests: one test binary (compiles once), one module
//! per area. Every test starts the real `freshet` binary and talks to it over
//! the Postgres wire protocol with real clients.

mod avro;
mod bad_input;
mod bi_tools;
mod cdc;
mod clients;
mod concurrency;
mod copy_out;
mod crash;
mod disk_faults;
mod drivers;
mod event_time;
mod explain;
mod kafka;
mod nexmark;
mod oracle;
mod postgres;
mod psql_catalog;
mod robustness;
mod schema_registry;
mod security;
mod server;
mod sessions;
mod sinks;
mod slt;
mod sources;
mod state_budget;
mod subscribe;
mod transactions;
mod windows;
