//! Loading an amora project from its folder.
//!
//! `amora.yaml` gives the project name, the folders and the feature-store settings
//! (see [`config`]); the models folder holds `NAME.sql` with `NAME.yml` beside it;
//! `sources/` and `feature_store/` hold YAML files that declare sources, entities
//! and feature services. [`load_project`] reads everything, infers model
//! dependencies from the SQL, and validates the result: every problem found is
//! reported at once, each naming its file.

pub mod config;
mod load;
pub mod sql;

pub use config::{Config, OfflineStoreConfig, OnlineStoreConfig, RegistryLocation};
pub use load::{load_definitions, load_project, Project};

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{0}")]
    Invalid(#[from] amora_model::Diagnostics),
    #[error("no amora.yaml in {0}; run `amora init` or pass --project-dir")]
    NotAProject(std::path::PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}
