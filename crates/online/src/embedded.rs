//! The embedded online store: redb databases in the project folder. Reads take
//! microseconds; writes are ACID transactions, safe against a crash.
//!
//! The entities are dealt to [`SHARDS`] databases by murmur3_32 of the entity key
//! (seed 0): the configured path is shard 0, shard `i` is `<path>.<i>`. redb
//! takes one write transaction at a time per database, so a batch is written to
//! the shards at once, one transaction each, on as many threads: an entity's rows
//! of every view of a batch land together or not at all.
//!
//! Layout: one table per shard, `online.v3`; key = `u32le len(project) | project |
//! u32le len(view) | view | entity key`, value = `i64le event_ts | (u32le field id |
//! varint len(value) | value)*`, where a feature's field id is murmur3_32 of its
//! name (seed 0). A view whose features' ids collide is refused at write time.
//! Earlier layouts, all in the one file at the configured path (`online`, names
//! spelled out in every value; `online.v2`, this layout unsharded), are rewritten
//! into this one when the store is opened.

use std::path::Path;

use amora_proto::online::murmur3_32;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::{Cells, OnlineError, OnlineStore, ViewRead, WriteRow};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online.v3");
/// The current layout in one database (shard 0 only).
const TABLE_V2: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online.v2");
/// The first layout: `i64le event_ts | (u32le len(name) | name | u32le len(value) | value)*`.
const TABLE_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online");

/// How many databases the entities are dealt to. Part of the layout: another
/// count needs a new table name and a rewrite at open.
const SHARDS: usize = 4;

type Table = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

pub struct EmbeddedStore {
    /// Shard `i` holds the entity keys `k` with `shard_of(k) == i`.
    shards: Vec<Database>,
    path: String,
}

/// The shard of an entity key.
fn shard_of(entity_key: &[u8]) -> usize {
    murmur3_32(entity_key, 0) as usize % SHARDS
}

/// The file of shard `i` of the store at `path`.
fn shard_path(path: &Path, i: usize) -> std::path::PathBuf {
    if i == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    name.into()
}

/// The entity key of a stored key (after the project and the view).
fn entity_key_of(key: &[u8]) -> Option<&[u8]> {
    let len = |at: usize| -> Option<usize> { Some(u32::from_le_bytes(key.get(at..at + 4)?.try_into().ok()?) as usize) };
    let view_at = 4 + len(0)?;
    key.get(view_at + 4 + len(view_at)?..)
}

fn prefix(project: &str, view: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + project.len() + view.len());
    k.extend_from_slice(&(project.len() as u32).to_le_bytes());
    k.extend_from_slice(project.as_bytes());
    k.extend_from_slice(&(view.len() as u32).to_le_bytes());
    k.extend_from_slice(view.as_bytes());
    k
}

fn field_id(feature: &str) -> u32 {
    murmur3_32(feature.as_bytes(), 0)
}

fn encode<'a>(out: &mut Vec<u8>, ts: i64, ids: &[u32], values: impl IntoIterator<Item = &'a [u8]>) {
    out.clear();
    out.extend_from_slice(&ts.to_le_bytes());
    for (id, v) in ids.iter().zip(values) {
        out.extend_from_slice(&id.to_le_bytes());
        let mut n = v.len() as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(v);
    }
}

fn event_ts(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The fields of an encoded row: `(field id, value)`.
fn fields(bytes: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let mut pos = 8;
    std::iter::from_fn(move || {
        let id = u32::from_le_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let b = *bytes.get(pos)?;
            pos += 1;
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        let value = bytes.get(pos..pos + n)?;
        pos += n;
        Some((id, value))
    })
}

/// The fields of a row in the first layout: `(name, value)`.
fn fields_v1(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut pos = 8;
    let read_u32 =
        move |p: usize| -> Option<usize> { Some(u32::from_le_bytes(bytes.get(p..p + 4)?.try_into().ok()?) as usize) };
    std::iter::from_fn(move || {
        let n = read_u32(pos)?;
        let name = bytes.get(pos + 4..pos + 4 + n)?;
        pos += 4 + n;
        let m = read_u32(pos)?;
        let value = bytes.get(pos + 4..pos + 4 + m)?;
        pos += 4 + m;
        Some((name, value))
    })
}

/// The field ids of a view's features, refused when two collide (their values
/// could not be told apart).
fn field_ids(view: &str, features: &[String]) -> Result<Vec<u32>, String> {
    let ids: Vec<u32> = features.iter().map(|f| field_id(f)).collect();
    for (i, a) in ids.iter().enumerate() {
        if let Some(j) = ids[..i].iter().position(|b| b == a) {
            if features[i] != features[j] {
                return Err(format!(
                    "features `{}` and `{}` of view `{view}` have the same field id (murmur3_32) in the embedded store; rename one",
                    features[j], features[i]
                ));
            }
        }
    }
    Ok(ids)
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<EmbeddedStore, OnlineError> {
        let name = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| OnlineError::Backend { store: name.clone(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let shards = (0..SHARDS)
            .map(|i| {
                Database::create(shard_path(path, i)).map_err(|e| match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => err(&"in use by another process (a running `amora feature-store serve`?): the embedded store has one owner at a time; stop it, or go through its HTTP API"),
                    other => err(&other),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let store = EmbeddedStore { shards, path: name };
        store.migrate_v1()?;
        store.migrate_v2()?;
        Ok(store)
    }

    fn has_table(&self, shard: usize, table: TableDefinition<&[u8], &[u8]>) -> Result<bool, OnlineError> {
        let read = self.shards[shard].begin_read().map_err(|e| self.err(e))?;
        let found = read.list_tables().map_err(|e| self.err(e))?.any(|t| t.name() == table.name());
        Ok(found)
    }

    /// Deals the rows of the unsharded layout (in shard 0) to the shards: the
    /// other shards' transactions commit first, then shard 0's, which also drops
    /// the old table. A crash before that leaves the old table whole, to be dealt
    /// again at the next open (nothing writes before the open is done).
    fn migrate_v2(&self) -> Result<(), OnlineError> {
        if !self.has_table(0, TABLE_V2)? {
            return Ok(());
        }
        // One pass over the old table, each row into its shard's transaction.
        let txns =
            self.shards.iter().map(|db| db.begin_write().map_err(|e| self.err(e))).collect::<Result<Vec<_>, _>>()?;
        {
            let old = txns[0].open_table(TABLE_V2).map_err(|e| self.err(e))?;
            let mut tables =
                txns.iter().map(|t| t.open_table(TABLE).map_err(|e| self.err(e))).collect::<Result<Vec<_>, _>>()?;
            for item in old.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                // A key too short to hold an entity key is no one's: it goes with the old table.
                if let Some(shard) = entity_key_of(k.value()).map(shard_of) {
                    tables[shard].insert(k.value(), v.value()).map_err(|e| self.err(e))?;
                }
            }
        }
        let mut txns = txns.into_iter();
        let first = txns.next().expect("shard 0");
        for txn in txns {
            txn.commit().map_err(|e| self.err(e))?;
        }
        first.delete_table(TABLE_V2).map_err(|e| self.err(e))?;
        first.commit().map_err(|e| self.err(e))
    }

    /// Rewrites rows of the first layout into the unsharded one, in one transaction
    /// (a crash leaves the first layout whole, to be rewritten at the next open).
    fn migrate_v1(&self) -> Result<(), OnlineError> {
        if !self.has_table(0, TABLE_V1)? {
            return Ok(());
        }
        let txn = self.shards[0].begin_write().map_err(|e| self.err(e))?;
        {
            let v1 = txn.open_table(TABLE_V1).map_err(|e| self.err(e))?;
            let mut t = txn.open_table(TABLE_V2).map_err(|e| self.err(e))?;
            let mut value = Vec::new();
            for item in v1.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                let bytes = v.value();
                let Some(ts) = event_ts(bytes) else { continue };
                let (ids, values): (Vec<u32>, Vec<&[u8]>) =
                    fields_v1(bytes).map(|(n, v)| (murmur3_32(n, 0), v)).unzip();
                encode(&mut value, ts, &ids, values);
                t.insert(k.value(), value.as_slice()).map_err(|e| self.err(e))?;
            }
        }
        txn.delete_table(TABLE_V1).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Writes a view's rows where they are newer than the stored ones.
    fn insert_newer(
        &self,
        t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        project: &str,
        (view, ids): (&str, &[u32]),
        mut order: Vec<&WriteRow>,
    ) -> Result<(), OnlineError> {
        let p = prefix(project, view);
        // In key order, so the B-tree is filled page by page.
        order.sort_unstable_by(|a, b| a.entity_key.cmp(&b.entity_key));
        let mut key = p.clone();
        let mut value = Vec::new();
        for r in order {
            key.truncate(p.len());
            key.extend_from_slice(&r.entity_key);
            encode(&mut value, r.event_ts, ids, &r.values);
            // One descent of the tree: write, and put the old row back in the
            // rare case it was as new or newer.
            let kept = match t.insert(key.as_slice(), value.as_slice()).map_err(|e| self.err(e))? {
                Some(old) => {
                    let old = old.value();
                    event_ts(old).is_some_and(|old_ts| old_ts >= r.event_ts).then(|| old.to_vec())
                }
                None => None,
            };
            if let Some(old) = kept {
                t.insert(key.as_slice(), old.as_slice()).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Every stored key (`project | view | entity key`, as the layout spells it),
    /// of every shard, in no particular order: for checks that nothing is left.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, OnlineError> {
        let mut out = Vec::new();
        for db in &self.shards {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let t = match txn.open_table(TABLE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(self.err(e)),
            };
            for item in t.iter().map_err(|e| self.err(e))? {
                out.push(item.map_err(|e| self.err(e))?.0.value().to_vec());
            }
        }
        Ok(out)
    }

    fn err(&self, e: impl std::fmt::Display) -> OnlineError {
        OnlineError::Backend { store: self.path.clone(), message: e.to_string() }
    }
}

impl OnlineStore for EmbeddedStore {
    fn name(&self) -> String {
        format!("embedded ({})", self.path)
    }

    /// A database takes one write transaction at a time and each commit syncs to
    /// disk: few, large batches from one writer (each batch is written to the
    /// shards at once).
    fn write_batching(&self) -> (usize, usize) {
        (100_000, 1)
    }

    fn write(&self, project: &str, view: &str, features: &[String], rows: &[WriteRow]) -> Result<(), OnlineError> {
        self.write_views(project, &[crate::ViewRows { view, features, rows }])
    }

    /// Each shard's share of all the views' rows in one transaction, the shards
    /// at once: one commit (and one sync) per shard and chunk, and an entity's
    /// rows of every view land together or not at all.
    fn write_views(&self, project: &str, views: &[crate::ViewRows<'_>]) -> Result<(), OnlineError> {
        let ids: Vec<Vec<u32>> =
            views.iter().map(|v| field_ids(v.view, v.features).map_err(|m| self.err(m))).collect::<Result<_, _>>()?;
        // `dealt[shard][view]`: the rows of that view for that shard's entities.
        let mut dealt: Vec<Vec<Vec<&WriteRow>>> = (0..SHARDS).map(|_| vec![Vec::new(); views.len()]).collect();
        for (i, v) in views.iter().enumerate() {
            for r in v.rows {
                dealt[shard_of(&r.entity_key)][i].push(r);
            }
        }
        let write = |shard: usize, rows: Vec<Vec<&WriteRow>>| -> Result<(), OnlineError> {
            let txn = self.shards[shard].begin_write().map_err(|e| self.err(e))?;
            {
                let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
                for ((v, ids), rows) in views.iter().zip(&ids).zip(rows) {
                    if !rows.is_empty() {
                        self.insert_newer(&mut t, project, (v.view, ids), rows)?;
                    }
                }
            }
            txn.commit().map_err(|e| self.err(e))
        };
        let mut jobs: Vec<(usize, Vec<Vec<&WriteRow>>)> =
            dealt.into_iter().enumerate().filter(|(_, rows)| rows.iter().any(|r| !r.is_empty())).collect();
        let Some((last, rows)) = jobs.pop() else { return Ok(()) };
        std::thread::scope(|s| {
            let others: Vec<_> = jobs.into_iter().map(|(shard, rows)| s.spawn(move || write(shard, rows))).collect();
            let mut result = write(last, rows);
            for o in others {
                let r = o.join().unwrap_or_else(|_| Err(self.err("a shard's writer panicked")));
                result = result.and(r);
            }
            result
        })
    }

    fn read(&self, project: &str, entity_keys: &[Vec<u8>], views: &[ViewRead]) -> Result<Cells, OnlineError> {
        // Each shard's table, opened when a key first needs it (`None` inside: no table yet).
        let mut tables: Vec<Option<Option<Table>>> = (0..SHARDS).map(|_| None).collect();
        let ids: Vec<Vec<_>> = views.iter().map(|v| v.features.iter().map(|f| field_id(f)).collect()).collect();
        let prefixes: Vec<Vec<u8>> = views.iter().map(|v| prefix(project, &v.view)).collect();
        let mut out = Cells::builder(views);
        let mut key = Vec::new();
        for ek in entity_keys {
            let shard = shard_of(ek);
            if tables[shard].is_none() {
                let txn = self.shards[shard].begin_read().map_err(|e| self.err(e))?;
                tables[shard] = Some(match txn.open_table(TABLE) {
                    Ok(t) => Some(t),
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(self.err(e)),
                });
            }
            let table = tables[shard].as_ref().and_then(Option::as_ref);
            for (p, ids) in prefixes.iter().zip(&ids) {
                key.clear();
                key.extend_from_slice(p);
                key.extend_from_slice(ek);
                let row = match table {
                    Some(t) => t.get(key.as_slice()).map_err(|e| self.err(e))?,
                    None => None,
                };
                match row {
                    None => {
                        out.push_stamp(None);
                        ids.iter().for_each(|_| out.push(None));
                    }
                    Some(guard) => {
                        let bytes = guard.value();
                        out.push_stamp(event_ts(bytes));
                        for id in ids {
                            out.push(fields(bytes).find(|(f, _)| f == id).map(|(_, v)| v));
                        }
                    }
                }
            }
        }
        Ok(out.finish())
    }

    fn delete_view(
        &self,
        project: &str,
        view: &str,
        _join_keys: &[String],
        _version: u32,
        _features: &[String],
    ) -> Result<(), OnlineError> {
        let p = prefix(project, view);
        for db in &self.shards {
            let txn = db.begin_write().map_err(|e| self.err(e))?;
            {
                let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
                let keys: Vec<Vec<u8>> = t
                    .range(p.as_slice()..)
                    .map_err(|e| self.err(e))?
                    .map_while(|item| item.ok().map(|(k, _)| k.value().to_vec()).filter(|k| k.starts_with(&p)))
                    .collect();
                for k in keys {
                    t.remove(k.as_slice()).map_err(|e| self.err(e))?;
                }
            }
            txn.commit().map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cell;

    #[test]
    fn rows_of_the_first_layout_are_rewritten_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let (a, b) = (b"\x09\x00\x00\x00\x00\x00\x00\xf8\x3f".to_vec(), Vec::new()); // 1.5, null
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(TABLE_V1).unwrap();
                let mut v = 42i64.to_le_bytes().to_vec();
                for (name, value) in [(&b"a"[..], &a), (&b"b"[..], &b)] {
                    v.extend_from_slice(&(name.len() as u32).to_le_bytes());
                    v.extend_from_slice(name);
                    v.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    v.extend_from_slice(value);
                }
                let mut k = prefix("p", "v");
                k.extend_from_slice(b"entity");
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let read = |store: &EmbeddedStore| {
            let views = [ViewRead { view: "v".into(), features: vec!["b".into(), "a".into(), "c".into()] }];
            store.read("p", &[b"entity".to_vec()], &views).unwrap().nested().remove(0).remove(0)
        };
        let cells = read(&store);
        assert_eq!(cells[0], Cell { value: vec![], event_ts: Some(42), found: true });
        assert_eq!(cells[1], Cell { value: a.clone(), event_ts: Some(42), found: true });
        assert_eq!(cells[2], Cell { value: vec![], event_ts: Some(42), found: false });
        drop(store);
        // The old tables are gone; opening again changes nothing.
        let store = EmbeddedStore::open(&path).unwrap();
        assert!(!store.has_table(0, TABLE_V1).unwrap() && !store.has_table(0, TABLE_V2).unwrap());
        assert_eq!(read(&store)[1].value, a);
    }

    #[test]
    fn rows_of_the_unsharded_layout_are_dealt_to_the_shards_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let ids = [field_id("x")];
        let entities: Vec<Vec<u8>> = (0u32..64).map(|i| i.to_le_bytes().to_vec()).collect();
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(TABLE_V2).unwrap();
                let mut value = Vec::new();
                for (i, ek) in entities.iter().enumerate() {
                    let mut k = prefix("p", "v");
                    k.extend_from_slice(ek);
                    encode(&mut value, i as i64, &ids, [&ek[..]]);
                    t.insert(k.as_slice(), value.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert!(!store.has_table(0, TABLE_V2).unwrap());
        // Every shard got some entities, each entity is in its own shard only, and all read back.
        let per_shard: Vec<usize> = (0..SHARDS)
            .map(|i| {
                let txn = store.shards[i].begin_read().unwrap();
                let t = txn.open_table(TABLE).unwrap();
                t.iter()
                    .unwrap()
                    .map(|r| shard_of(entity_key_of(r.unwrap().0.value()).unwrap()))
                    .filter(|s| *s == i)
                    .count()
            })
            .collect();
        assert!(per_shard.iter().all(|n| *n > 0), "{per_shard:?}");
        assert_eq!(per_shard.iter().sum::<usize>(), entities.len());
        assert_eq!(store.keys().unwrap().len(), entities.len());
        let views = [ViewRead { view: "v".into(), features: vec!["x".into()] }];
        let cells = store.read("p", &entities, &views).unwrap().nested();
        for (i, (ek, cells)) in entities.iter().zip(cells).enumerate() {
            assert_eq!(cells[0][0], Cell { value: ek.clone(), event_ts: Some(i as i64), found: true });
        }
    }

    #[test]
    fn a_batch_is_dealt_to_the_shards_and_reads_find_every_entity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let store = EmbeddedStore::open(&path).unwrap();
        let features = vec!["x".to_string()];
        let rows: Vec<WriteRow> = (0u32..100)
            .map(|i| WriteRow { entity_key: i.to_be_bytes().to_vec(), event_ts: 7, values: vec![vec![i as u8]].into() })
            .collect();
        store.write("p", "v", &features, &rows).unwrap();
        assert!((1..SHARDS).all(|i| shard_path(&path, i).exists()));
        let keys: Vec<Vec<u8>> = rows.iter().map(|r| r.entity_key.clone()).collect();
        let views = [ViewRead { view: "v".into(), features }];
        let cells = store.read("p", &keys, &views).unwrap().nested();
        assert!(cells.iter().zip(&rows).all(|(c, r)| c[0][0].value == r.values.iter().next().unwrap()));
        store.delete_view("p", "v", &[], 3, &[]).unwrap();
        assert!(store.keys().unwrap().is_empty());
    }

    #[test]
    fn colliding_field_ids_are_refused_with_both_names() {
        let mut seen = std::collections::HashMap::new();
        let (x, y) = (0u32..)
            .find_map(|i| {
                let name = format!("f{i}");
                seen.insert(field_id(&name), name.clone()).map(|other| (other, name))
            })
            .unwrap();
        let err = field_ids("v", &["ok".into(), x.clone(), y.clone()]).unwrap_err();
        assert!(err.contains(&format!("`{x}`")) && err.contains(&format!("`{y}`")), "{err}");
        assert_eq!(field_ids("v", &["a".into(), "b".into()]).unwrap(), vec![field_id("a"), field_id("b")]);
    }
}
