//! The BigQuery offline store. Models run as `CREATE OR REPLACE TABLE … AS
//! SELECT` in the project's dataset; training sets and materialization are one
//! SQL statement each, run in BigQuery, their results written to a scratch table
//! and read back through the Storage Read API (Arrow over gRPC), or REST paging
//! when that is unreachable.
//!
//! Layers: `sql` (pure: names, translation, statements), `rest` (jobs, load
//! jobs, tables), `storage` (Storage Read), `store` (the `OfflineStore`).
//! Credentials come from `amora-gauth`.

pub mod rest;
pub mod sql;
pub mod storage;
mod store;

pub use rest::BqError;
pub use store::{BigQueryConfig, BigQueryStore, ReadApi};
