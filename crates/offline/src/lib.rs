//! The embedded warehouse: Apache DataFusion in the process, over CSV and Parquet
//! files. It registers sources and model tables, runs a model's SELECT, checks the
//! result against the model's declared columns, and writes it as Parquet so that a
//! failed or interrupted run never leaves a half-written table that reads as valid.
//!
//! Architecture invariant: this crate knows DataFusion and Arrow; it knows nothing
//! of the DAG, manifests or registries (see `amora-pipeline`).

mod append;
pub mod frames;
pub mod historical;
pub mod latest;
pub mod pit;
mod scan;
pub mod store;
mod types;
mod warehouse;

pub use datafusion::arrow;
pub use datafusion::dataframe::DataFrameWriteOptions;

/// What front ends need of DataFusion to build queries.
pub mod datafusion_prelude {
    pub use datafusion::prelude::{ident, lit, ParquetReadOptions};
    pub use datafusion::scalar::ScalarValue;
}
pub use store::{Dialect, EmbeddedStore, OfflineStore, ScanSpec, WindowScan};
pub use types::{arrow_type, check_type, storage_type};
pub use warehouse::{TableLocation, TableStats, Warehouse};

/// Why a warehouse operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The model's SQL did not plan or run; the engine's message, with its position when it gives one.
    #[error("{0}")]
    Sql(String),
    /// The model produced columns that differ from its declaration.
    #[error("{0}")]
    Contract(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// A remote warehouse failed or could not be reached (its message says which).
    #[error("{0}")]
    Backend(String),
}

impl From<datafusion::arrow::error::ArrowError> for OfflineError {
    fn from(e: datafusion::arrow::error::ArrowError) -> OfflineError {
        OfflineError::Sql(e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for OfflineError {
    fn from(e: datafusion::error::DataFusionError) -> OfflineError {
        OfflineError::Sql(e.strip_backtrace().to_string())
    }
}
