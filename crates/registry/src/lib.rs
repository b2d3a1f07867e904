//! The registry: what `plan`, `apply`, `history`, `diff` and `rollback` do.
//!
//! The pure part ([`plan`], [`build`], [`lineage`]) takes registry files and
//! definitions and returns values. The I/O part is the [`store::RegistryStore`]
//! trait (one implementation per location: a local file, GCS, S3) and [`ops`], which
//! runs a read-plan-write cycle against a store with compare-and-swap and records
//! every version in the history.

pub mod build;
pub mod gcs;
pub mod history;
mod http;
pub mod lineage;
pub mod ops;
pub mod plan;
pub mod s3;
pub mod snapshot;
pub mod store;

pub use ops::{ApplyOutcome, RegistryError};
pub use plan::{Change, Plan};
pub use snapshot::current_objects;
