//! The embedded online store: a redb database in the project folder. Reads take
//! microseconds; every write batch is one ACID transaction, safe against a crash.
//!
//! Layout: one table, `online.v2`; key = `u32le len(project) | project | u32le
//! len(view) | view | entity key`, value = `i64le event_ts | (u32le field id |
//! varint len(value) | value)*`, where a feature's field id is murmur3_32 of its
//! name (seed 0). A view whose features' ids collide is refused at write time.
//! The first layout (table `online`, names spelled out in every value) is
//! rewritten into this one when a database is opened.

use std::path::Path;

use amora_proto::online::murmur3_32;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::{Cells, OnlineError, OnlineStore, ViewRead, WriteRow};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online.v2");
/// The first layout: `i64le event_ts | (u32le len(name) | name | u32le len(value) | value)*`.
const TABLE_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online");

pub struct EmbeddedStore {
    db: Database,
    path: String,
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
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => err(&"in use by another process (a running `amora feature-store serve`?): the embedded store has one owner at a time; stop it, or go through its HTTP API"),
            other => err(&other),
        })?;
        let store = EmbeddedStore { db, path: name };
        store.migrate_v1()?;
        Ok(store)
    }

    /// Rewrites rows of the first layout into the current one, in one transaction
    /// (a crash leaves the first layout whole, to be rewritten at the next open).
    fn migrate_v1(&self) -> Result<(), OnlineError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let old = read.list_tables().map_err(|e| self.err(e))?.any(|t| t.name() == TABLE_V1.name());
        drop(read);
        if !old {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let v1 = txn.open_table(TABLE_V1).map_err(|e| self.err(e))?;
            let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
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
        v: &crate::ViewRows<'_>,
    ) -> Result<(), OnlineError> {
        let ids = field_ids(v.view, v.features).map_err(|m| self.err(m))?;
        let p = prefix(project, v.view);
        // In key order, so the B-tree is filled page by page.
        let mut order: Vec<&WriteRow> = v.rows.iter().collect();
        order.sort_unstable_by(|a, b| a.entity_key.cmp(&b.entity_key));
        let mut key = p.clone();
        let mut value = Vec::new();
        for r in order {
            key.truncate(p.len());
            key.extend_from_slice(&r.entity_key);
            encode(&mut value, r.event_ts, &ids, &r.values);
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

    fn err(&self, e: impl std::fmt::Display) -> OnlineError {
        OnlineError::Backend { store: self.path.clone(), message: e.to_string() }
    }
}

impl OnlineStore for EmbeddedStore {
    fn name(&self) -> String {
        format!("embedded ({})", self.path)
    }

    /// Write transactions are serialized and each commit syncs to disk: few,
    /// large batches from one writer.
    fn write_batching(&self) -> (usize, usize) {
        (50_000, 1)
    }

    fn write(&self, project: &str, view: &str, features: &[String], rows: &[WriteRow]) -> Result<(), OnlineError> {
        self.write_views(project, &[crate::ViewRows { view, features, rows }])
    }

    /// All the views' rows in one transaction: one commit (and one sync) per chunk,
    /// and a chunk's views land together or not at all.
    fn write_views(&self, project: &str, views: &[crate::ViewRows<'_>]) -> Result<(), OnlineError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            for v in views {
                self.insert_newer(&mut t, project, v)?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn read(&self, project: &str, entity_keys: &[Vec<u8>], views: &[ViewRead]) -> Result<Cells, OnlineError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.err(e)),
        };
        let ids: Vec<Vec<_>> = views.iter().map(|v| v.features.iter().map(|f| field_id(f)).collect()).collect();
        let prefixes: Vec<Vec<u8>> = views.iter().map(|v| prefix(project, &v.view)).collect();
        let mut out = Cells::builder(views);
        let mut key = Vec::new();
        for ek in entity_keys {
            for (p, ids) in prefixes.iter().zip(&ids) {
                key.clear();
                key.extend_from_slice(p);
                key.extend_from_slice(ek);
                let row = match &table {
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
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
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
        txn.commit().map_err(|e| self.err(e))
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
        // The old table is gone; opening again changes nothing.
        let store = EmbeddedStore::open(&path).unwrap();
        let txn = store.db.begin_read().unwrap();
        assert!(!txn.list_tables().unwrap().any(|t| t.name() == TABLE_V1.name()));
        drop(txn);
        assert_eq!(read(&store)[1].value, a);
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
