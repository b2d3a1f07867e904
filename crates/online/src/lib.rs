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
mod resp;

/// FxHash (rustc's hasher) with a finalizer: entity keys are short byte strings from our own data,
/// so a fast non-cryptographic hash is the right trade.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }
    /// Murmur3's finalizer: the table indexes by the low bits, which a multiply
    /// alone leaves unmixed.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

pub type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

/// One entity's values for one feature view, as materialization writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRow {
    /// Serialized entity key (without the project).
    pub entity_key: Vec<u8>,
    /// Event timestamp, microseconds since the epoch (UTC).
    pub event_ts: i64,
    /// Serialized `feast.types.Value` per feature, in the order of the view's features.
    pub values: Values,
}

/// A row's serialized values in one buffer, `(u32le length | bytes)*`: one
/// allocation per row, however many features (an empty value is null).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Values(Vec<u8>);

impl Values {
    pub fn with_capacity(bytes: usize) -> Values {
        Values(Vec::with_capacity(bytes))
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Appends the value that `write` writes into the buffer (nothing for null).
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        write(&mut self.0);
        let n = (self.0.len() - at - 4) as u32;
        self.0[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }

    pub fn push(&mut self, value: &[u8]) {
        self.push_with(|b| b.extend_from_slice(value));
    }

    pub fn iter(&self) -> ValuesIter<'_> {
        ValuesIter(&self.0)
    }
}

impl From<Vec<Vec<u8>>> for Values {
    fn from(values: Vec<Vec<u8>>) -> Values {
        let mut out = Values::with_capacity(values.iter().map(|v| v.len() + 4).sum());
        values.iter().for_each(|v| out.push(v));
        out
    }
}

/// The values of a [`Values`], in order.
pub struct ValuesIter<'a>(&'a [u8]);

impl<'a> Iterator for ValuesIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let (value, rest) = self.0.get(4..)?.split_at_checked(n)?;
        self.0 = rest;
        Some(value)
    }
}

impl<'a> IntoIterator for &'a Values {
    type Item = &'a [u8];
    type IntoIter = ValuesIter<'a>;
    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

/// One view's rows in an [`OnlineStore::write_views`] call.
#[derive(Debug, Clone, Copy)]
pub struct ViewRows<'a> {
    pub view: &'a str,
    /// The values' order.
    pub features: &'a [String],
    pub rows: &'a [WriteRow],
}

/// What a read returns for one feature of one entity ([`Cells::nested`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Serialized `feast.types.Value`; empty for null or missing.
    pub value: Vec<u8>,
    /// The view's event timestamp for this entity (microseconds), if the entity has the view.
    pub event_ts: Option<i64>,
    pub found: bool,
}

/// What [`OnlineStore::read`] returns, flat: for each entity and each requested
/// feature (views in request order, each view's features in order) a slice of
/// one shared buffer, and each view's event timestamp per entity. A server
/// reads a hundred entities with a handful of allocations, not thousands.
#[derive(Debug, Clone, Default)]
pub struct Cells {
    data: bytes::Bytes,
    /// `entities x width`: `(start, end)` in `data`; `start == MISSING`: not found.
    spans: Vec<(u32, u32)>,
    /// `entities x views`: the view's event timestamp for the entity.
    stamps: Vec<Option<i64>>,
    /// Features per view.
    shape: Vec<usize>,
    width: usize,
}

const MISSING: u32 = u32::MAX;

impl Cells {
    /// A result for `views` to fill value by value, over a buffer of its own.
    pub fn builder(views: &[ViewRead]) -> CellsBuilder {
        CellsBuilder { data: Vec::new(), cells: Cells::shaped(views, bytes::Bytes::new()) }
    }

    fn shaped(views: &[ViewRead], data: bytes::Bytes) -> Cells {
        let shape: Vec<usize> = views.iter().map(|v| v.features.len()).collect();
        Cells { data, spans: Vec::new(), stamps: Vec::new(), width: shape.iter().sum(), shape }
    }

    /// A result whose values are slices of `data` already in place (a store's raw
    /// reply): `spans` and `stamps` as [`Cells`] keeps them, `None` = not found.
    pub fn from_parts(
        views: &[ViewRead],
        data: bytes::Bytes,
        spans: impl IntoIterator<Item = Option<(usize, usize)>>,
        stamps: Vec<Option<i64>>,
    ) -> Cells {
        let mut c = Cells::shaped(views, data);
        c.spans = spans.into_iter().map(|s| s.map_or((MISSING, 0), |(a, b)| (a as u32, b as u32))).collect();
        c.stamps = stamps;
        debug_assert_eq!(c.spans.len(), c.stamps.len() / c.shape.len().max(1) * c.width);
        c
    }

    /// Entities read.
    pub fn entities(&self) -> usize {
        self.stamps.len().checked_div(self.shape.len()).unwrap_or(0)
    }

    /// Features per view, in request order.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The serialized value of feature `feature` (over all views, in order) for
    /// entity `entity`; `None` when the entity or the field is missing.
    pub fn value(&self, entity: usize, feature: usize) -> Option<&[u8]> {
        let (a, b) = self.spans[entity * self.width + feature];
        (a != MISSING).then(|| &self.data[a as usize..b as usize])
    }

    /// View `view`'s event timestamp (microseconds) for entity `entity`.
    pub fn stamp(&self, entity: usize, view: usize) -> Option<i64> {
        self.stamps[entity * self.shape.len() + view]
    }

    /// `out[entity][view][feature]`, each value copied: for tests and callers
    /// that are not on a hot path.
    pub fn nested(&self) -> Vec<Vec<Vec<Cell>>> {
        (0..self.entities())
            .map(|e| {
                let mut f = 0;
                self.shape
                    .iter()
                    .enumerate()
                    .map(|(v, n)| {
                        let ts = self.stamp(e, v);
                        let cells = (f..f + n)
                            .map(|i| match self.value(e, i) {
                                Some(value) => Cell { value: value.to_vec(), event_ts: ts, found: true },
                                None => Cell { value: vec![], event_ts: ts, found: false },
                            })
                            .collect();
                        f += n;
                        cells
                    })
                    .collect()
            })
            .collect()
    }
}

/// Builds [`Cells`] entity by entity, view by view: a stamp, then the view's values.
pub struct CellsBuilder {
    data: Vec<u8>,
    cells: Cells,
}

impl CellsBuilder {
    /// The next view's event timestamp for the current entity.
    pub fn push_stamp(&mut self, ts: Option<i64>) {
        self.cells.stamps.push(ts);
    }

    /// The next value (`None`: not found), copied into the shared buffer.
    pub fn push(&mut self, value: Option<&[u8]>) {
        let span = match value {
            Some(v) => {
                let a = self.data.len() as u32;
                self.data.extend_from_slice(v);
                (a, self.data.len() as u32)
            }
            None => (MISSING, 0),
        };
        self.cells.spans.push(span);
    }

    pub fn finish(self) -> Cells {
        Cells { data: self.data.into(), ..self.cells }
    }
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
pub type ReadFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Cells, OnlineError>> + Send + 'a>>;

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

    /// Whether [`OnlineStore::write_views`] is cheaper than a `write` per view
    /// for rows of the same entities (Redis: one hash per entity for all views).
    fn writes_views_together(&self) -> bool {
        false
    }

    /// Writes rows of several views that share join keys, each view as
    /// [`OnlineStore::write`] would.
    fn write_views(&self, project: &str, views: &[ViewRows<'_>]) -> Result<(), OnlineError> {
        views.iter().try_for_each(|v| self.write(project, v.view, v.features, v.rows))
    }

    /// Reads, for each entity key, each view's features (see [`Cells`]).
    fn read(&self, project: &str, entity_keys: &[Vec<u8>], views: &[ViewRead]) -> Result<Cells, OnlineError>;

    /// [`OnlineStore::read`] for async servers. Stores whose reads block on the
    /// network override it (Redis multiplexes concurrent requests on one
    /// connection); the default answers with the blocking read.
    fn read_async<'a>(&'a self, project: &'a str, entity_keys: &'a [Vec<u8>], views: &'a [ViewRead]) -> ReadFuture<'a> {
        Box::pin(std::future::ready(self.read(project, entity_keys, views)))
    }

    /// [`OnlineStore::read_async`] for a read of every feature stored for these
    /// keys in this project (the registry says so): a store may fetch each
    /// entity's whole record instead of naming each field (Redis: `HGETALL`,
    /// cheaper for the server than an `HMGET` of every field). The answer is
    /// the same whatever else the record holds.
    fn read_whole_async<'a>(
        &'a self,
        project: &'a str,
        entity_keys: &'a [Vec<u8>],
        views: &'a [ViewRead],
    ) -> ReadFuture<'a> {
        self.read_async(project, entity_keys, views)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_each_value_and_their_order() {
        let parts: Vec<Vec<u8>> = vec![vec![1, 2], vec![], vec![7; 300], vec![0]];
        let v = Values::from(parts.clone());
        assert_eq!(v.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), parts);
        let mut w = Values::default();
        w.push_with(|b| b.extend_from_slice(&[1, 2]));
        w.push(&[]);
        w.push(&[7; 300]);
        w.push_with(|b| b.push(0));
        assert_eq!(w, v);
        assert_eq!(Values::default().iter().count(), 0);
    }
}
