//! Online storage: the latest feature values per entity, for low-latency reads.
//!
//! One trait, [`OnlineStore`], and one conformance suite ([`conformance`]) that
//! every backend runs: the embedded store ([`embedded::EmbeddedStore`], redb, in the
//! project folder) and Redis ([`redis_store::RedisStore`], in Feast's exact layout so
//! Feast clients and amora can share one Redis).
//!
//! Values are serialized `feast.types.Value`s (empty = null) and entity keys are
//! Feast-serialized (see `amora_proto::online`), whatever the backend.

pub mod conformance;
pub mod embedded;
pub mod redis_store;

/// One entity's values for one feature view, as materialization writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRow {
    /// Serialized entity key (without the project).
    pub entity_key: Vec<u8>,
    /// Event timestamp, microseconds since the epoch (UTC).
    pub event_ts: i64,
    /// Serialized `feast.types.Value` per feature, in the order of the view's features.
    pub values: Vec<Vec<u8>>,
}

/// What a read returns for one feature of one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Serialized `feast.types.Value`; empty for null or missing.
    pub value: Vec<u8>,
    /// The view's event timestamp for this entity (microseconds), if the entity has the view.
    pub event_ts: Option<i64>,
    pub found: bool,
}

/// The features of one view to read.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRead {
    pub view: String,
    pub features: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The store could not be reached or answered with an error.
    #[error("online store {store}: {message}")]
    Backend { store: String, message: String },
}

/// What [`OnlineStore::read_async`] returns.
pub type ReadFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Vec<Vec<Cell>>>, OnlineError>> + Send + 'a>>;

/// An online store. Writes replace a view's values for an entity only when the
/// event timestamp is strictly newer, and never touch other views' values.
pub trait OnlineStore: Send + Sync {
    fn name(&self) -> String;

    /// How bulk writers (materialization) should feed this store: rows per
    /// `write` call and calls in flight at once.
    fn write_batching(&self) -> (usize, usize) {
        (5_000, 4)
    }

    /// Whether the store answers now (a server's `/health`).
    fn health(&self) -> Result<(), OnlineError> {
        Ok(())
    }

    /// Writes rows of one view (`features` names the values' order).
    fn write(&self, project: &str, view: &str, features: &[String], rows: &[WriteRow]) -> Result<(), OnlineError>;

    /// Reads, for each entity key, each view's features: `out[entity][view][feature]`.
    fn read(
        &self,
        project: &str,
        entity_keys: &[Vec<u8>],
        views: &[ViewRead],
    ) -> Result<Vec<Vec<Vec<Cell>>>, OnlineError>;

    /// [`OnlineStore::read`] for async servers. Stores whose reads block on the
    /// network override it (Redis multiplexes concurrent requests on one
    /// connection); the default answers with the blocking read.
    fn read_async<'a>(&'a self, project: &'a str, entity_keys: &'a [Vec<u8>], views: &'a [ViewRead]) -> ReadFuture<'a> {
        Box::pin(std::future::ready(self.read(project, entity_keys, views)))
    }

    /// Removes a view's values for every entity of the project; other projects and
    /// other views keep theirs. `join_keys` and the serialization `version` identify
    /// the keys where the layout is shared (Redis).
    fn delete_view(
        &self,
        project: &str,
        view: &str,
        join_keys: &[String],
        version: u32,
        features: &[String],
    ) -> Result<(), OnlineError>;
}
