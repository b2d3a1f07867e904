//! The registry's version history: every registry amora writes is kept as a
//! numbered, create-only file beside the registry, with who, when and what changed.
//!
//! File format: the line `amora-registry-version 1`, one line of JSON
//! ([`VersionInfo`]), then the registry bytes exactly as written.

use crate::store::{RegistryStore, StoreError};

const MAGIC: &str = "amora-registry-version 1\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionKind {
    /// Written by `amora feature-store apply`.
    Apply,
    /// Written by `amora feature-store rollback`.
    Rollback,
    /// Written by `amora feature-store materialize*`: intervals recorded on feature views.
    Materialize,
    /// Found in the registry but written by someone else (e.g. `feast apply`);
    /// recorded before amora overwrote it, so it stays retrievable.
    External,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionInfo {
    pub number: u64,
    pub kind: VersionKind,
    /// The registry's `version_id` (a uuid4, new on every write).
    pub version_id: String,
    /// The `version_id` of the registry this one replaced ("" for the first).
    pub parent_version_id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub user: String,
    pub project: String,
    /// One line per changed object, e.g. `Updated feature view x`.
    pub summary: Vec<String>,
}

fn file_name(number: u64) -> String {
    format!("v{number:06}.version")
}

fn number_of(name: &str) -> Option<u64> {
    name.strip_prefix('v')?.strip_suffix(".version")?.parse().ok()
}

fn parse(name: &str, bytes: &[u8]) -> Result<(VersionInfo, Vec<u8>), StoreError> {
    let bad = || StoreError::Backend { location: name.into(), message: "not an amora registry version file".into() };
    let rest = bytes.strip_prefix(MAGIC.as_bytes()).ok_or_else(bad)?;
    let nl = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
    let info: VersionInfo = serde_json::from_slice(&rest[..nl]).map_err(|_| bad())?;
    Ok((info, rest[nl + 1..].to_vec()))
}

/// All versions, oldest first.
pub fn list(store: &dyn RegistryStore) -> Result<Vec<VersionInfo>, StoreError> {
    let mut numbers: Vec<u64> = store.list_history_files()?.iter().filter_map(|n| number_of(n)).collect();
    numbers.sort_unstable();
    numbers.into_iter().map(|n| read(store, n).map(|(info, _)| info)).collect()
}

/// The newest version's description, reading only that one file.
pub fn latest(store: &dyn RegistryStore) -> Result<Option<VersionInfo>, StoreError> {
    match store.list_history_files()?.iter().filter_map(|n| number_of(n)).max() {
        Some(n) => read(store, n).map(|(info, _)| Some(info)),
        None => Ok(None),
    }
}

/// One version: its description and the registry bytes.
pub fn read(store: &dyn RegistryStore, number: u64) -> Result<(VersionInfo, Vec<u8>), StoreError> {
    let name = file_name(number);
    let bytes = store.read_history_file(&name).map_err(|e| match e {
        StoreError::NotFound(_) => {
            StoreError::NotFound(format!("registry version {number} (see `amora feature-store history`)"))
        }
        other => other,
    })?;
    parse(&name, &bytes)
}

/// Records `registry` as the next version; returns its number.
pub fn record(store: &dyn RegistryStore, mut info: VersionInfo, registry: &[u8]) -> Result<u64, StoreError> {
    let mut next = store.list_history_files()?.iter().filter_map(|n| number_of(n)).max().unwrap_or(0) + 1;
    for _ in 0..1000 {
        info.number = next;
        let mut bytes = MAGIC.as_bytes().to_vec();
        bytes.extend(serde_json::to_vec(&info).expect("serializable"));
        bytes.push(b'\n');
        bytes.extend_from_slice(registry);
        match store.create_history_file(&file_name(next), &bytes) {
            Ok(()) => return Ok(next),
            Err(StoreError::AlreadyExists(_)) => next += 1,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Backend {
        location: store.location(),
        message: "could not allocate a history version number".into(),
    })
}
