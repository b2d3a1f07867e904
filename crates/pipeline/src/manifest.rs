//! `target/manifest.json`: the compiled project and the last run of every model
//! (hashes that decide whether a model must run again, and what it produced).

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ran and wrote its table (or registered its view).
    Success,
    /// Unchanged since its last successful run; not run.
    Skipped,
    /// Its SQL, contract or write failed.
    Failed,
    /// Not run because a model it depends on failed.
    Blocked,
    /// Never run.
    Pending,
}

/// What the manifest remembers of one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelRun {
    pub status: Status,
    pub sql_hash: String,
    pub decl_hash: String,
    /// Hash of the model's inputs (source files' size and time, upstream runs) at its last success.
    pub input_hash: String,
    /// A hash that changes whenever this model's output changes: downstream models
    /// fold it into their input hash.
    pub output_hash: String,
    /// RFC 3339 time of the last successful run.
    pub last_success: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub error: Option<String>,
}

impl ModelRun {
    /// A model that has never run.
    pub fn never() -> ModelRun {
        ModelRun {
            status: Status::Pending,
            sql_hash: String::new(),
            decl_hash: String::new(),
            input_hash: String::new(),
            output_hash: String::new(),
            last_success: None,
            rows: 0,
            bytes: 0,
            seconds: 0.0,
            error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub project: String,
    /// The last `compile`: every model's compiled SQL, reads and hashes, and the generations.
    pub compiled: serde_json::Value,
    /// The last run of every model.
    pub runs: BTreeMap<String, ModelRun>,
}

impl Manifest {
    /// Reads the manifest; a missing or unreadable one is empty (everything runs).
    pub fn load(path: &Path) -> Manifest {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes the manifest atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".manifest.json.tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serializable"))?;
        std::fs::rename(&tmp, path)
    }
}
