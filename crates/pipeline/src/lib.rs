//! The data pipeline: SQL models compiled into a DAG and run in the embedded
//! warehouse, generation by generation, with unchanged models skipped; and the data
//! tests declared on the models.
//!
//! Architecture invariant: `compile` is pure; `run` and `tests` do their I/O through
//! `amora-offline`'s [`Warehouse`](amora_offline::Warehouse) and the manifest file.

pub mod compile;
pub mod manifest;
pub mod run;
pub mod tests;

pub use compile::{compile, Compiled, CompiledModel};
pub use manifest::{Manifest, ModelRun, Status};
pub use run::{materialize, Event, RunOptions, RunSummary};
