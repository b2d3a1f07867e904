//! Where a registry lives. One small trait; the history and compare-and-swap
//! logic in [`crate::ops`] is written once on top of it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An opaque token for the version of the registry object a reader saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation(pub String);

/// The registry object and the generation it was read at.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bytes: Vec<u8>,
    pub generation: Generation,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote since we read: re-read and re-plan.
    #[error("the registry changed since it was read (a concurrent apply?)")]
    Conflict,
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("registry store {location}: {message}")]
    Backend { location: String, message: String },
}

/// A registry location: the registry object itself, plus create-only files beside
/// it for the version history.
pub trait RegistryStore: Send + Sync {
    /// A human-readable location, e.g. a path or `gs://bucket/key`.
    fn location(&self) -> String;
    /// The registry object, or `None` if there is none yet.
    fn read(&self) -> Result<Option<Stored>, StoreError>;
    /// Replaces the registry object if it is still at `expected` (`None`: only if
    /// absent). Readers never see a partly written object.
    fn write(&self, expected: Option<&Generation>, bytes: &[u8]) -> Result<Generation, StoreError>;
    /// Creates a history file; fails with [`StoreError::AlreadyExists`] if the name is taken.
    fn create_history_file(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// The names of the history files.
    fn list_history_files(&self) -> Result<Vec<String>, StoreError>;
    fn read_history_file(&self, name: &str) -> Result<Vec<u8>, StoreError>;
}

/// A registry in a local file. Writes go to a temporary file that is renamed over
/// the registry (atomic), under an exclusive lock on `<registry>.lock` so that a
/// compare-and-swap is one step; history files live in `<registry>.history/`.
pub struct LocalStore {
    path: PathBuf,
}

impl LocalStore {
    pub fn new(path: impl Into<PathBuf>) -> LocalStore {
        LocalStore { path: path.into() }
    }

    fn history_dir(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".history");
        self.path.with_file_name(name)
    }

    fn err(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::Backend { location: self.location(), message: message.to_string() }
    }

    fn generation_of(bytes: &[u8]) -> Generation {
        // FNV-1a over the bytes: stable across processes and Rust versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Generation(format!("{}-{h:016x}", bytes.len()))
    }

    fn read_unlocked(&self) -> Result<Option<Stored>, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(Stored { generation: Self::generation_of(&bytes), bytes })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    fn lock(&self) -> Result<std::fs::File, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.err(format!("cannot create {}: {e}", dir.display())))?;
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_file_name(name))
            .map_err(|e| self.err(e))?;
        lock.lock().map_err(|e| self.err(format!("cannot lock: {e}")))?;
        Ok(lock)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl RegistryStore for LocalStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self) -> Result<Option<Stored>, StoreError> {
        self.read_unlocked()
    }

    fn write(&self, expected: Option<&Generation>, bytes: &[u8]) -> Result<Generation, StoreError> {
        let _lock = self.lock()?;
        let current = self.read_unlocked()?.map(|s| s.generation);
        if current.as_ref() != expected {
            return Err(StoreError::Conflict);
        }
        write_atomic(&self.path, bytes).map_err(|e| self.err(e))?;
        Ok(Self::generation_of(bytes))
    }

    fn create_history_file(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.history_dir();
        std::fs::create_dir_all(&dir).map_err(|e| self.err(e))?;
        // Write aside, then hard-link into place: link fails if the name exists, and a
        // reader never sees a partial file.
        let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.err(e))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| self.err(e))?;
        let linked = std::fs::hard_link(&tmp, dir.join(name));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StoreError::AlreadyExists(name.into())),
            Err(e) => Err(self.err(e)),
        }
    }

    fn list_history_files(&self) -> Result<Vec<String>, StoreError> {
        match std::fs::read_dir(self.history_dir()) {
            Ok(entries) => Ok(entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(self.err(e)),
        }
    }

    fn read_history_file(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        std::fs::read(self.history_dir().join(name)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(format!("history file {name}")),
            _ => self.err(e),
        })
    }
}
