//! The embedded online store: a redb database in the project folder. Reads take
//! microseconds; every write batch is one ACID transaction, safe against a crash.
//!
//! Layout: one table; key = `u32le len(project) | project | u32le len(view) | view |
//! entity key`, value = `i64le event_ts | (u32le len(name) | name | u32le len(value) | value)*`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Cell, OnlineError, OnlineStore, ViewRead, WriteRow};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online");

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

fn encode(out: &mut Vec<u8>, ts: i64, features: &[String], values: &[Vec<u8>]) {
    out.clear();
    out.extend_from_slice(&ts.to_le_bytes());
    for (f, v) in features.iter().zip(values) {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
}

fn event_ts(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The value of `feature` in an encoded row.
fn field<'a>(bytes: &'a [u8], feature: &str) -> Option<&'a [u8]> {
    let mut pos = 8;
    let read_u32 =
        |p: usize| -> Option<usize> { Some(u32::from_le_bytes(bytes.get(p..p + 4)?.try_into().ok()?) as usize) };
    while pos < bytes.len() {
        let n = read_u32(pos)?;
        let name = bytes.get(pos + 4..pos + 4 + n)?;
        pos += 4 + n;
        let m = read_u32(pos)?;
        let value = bytes.get(pos + 4..pos + 4 + m)?;
        pos += 4 + m;
        if name == feature.as_bytes() {
            return Some(value);
        }
    }
    None
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
        Ok(EmbeddedStore { db, path: name })
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
        let p = prefix(project, view);
        // In key order, so the B-tree is filled page by page.
        let mut order: Vec<&WriteRow> = rows.iter().collect();
        order.sort_unstable_by(|a, b| a.entity_key.cmp(&b.entity_key));
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            let mut key = p.clone();
            let mut value = Vec::new();
            for r in order {
                key.truncate(p.len());
                key.extend_from_slice(&r.entity_key);
                let newer = match t.get(key.as_slice()).map_err(|e| self.err(e))? {
                    Some(old) => event_ts(old.value()).is_none_or(|old_ts| r.event_ts > old_ts),
                    None => true,
                };
                if newer {
                    encode(&mut value, r.event_ts, features, &r.values);
                    t.insert(key.as_slice(), value.as_slice()).map_err(|e| self.err(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn read(
        &self,
        project: &str,
        entity_keys: &[Vec<u8>],
        views: &[ViewRead],
    ) -> Result<Vec<Vec<Vec<Cell>>>, OnlineError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::with_capacity(entity_keys.len());
        for ek in entity_keys {
            let mut per_view = Vec::with_capacity(views.len());
            for v in views {
                let mut key = prefix(project, &v.view);
                key.extend_from_slice(ek);
                let row = match &table {
                    Some(t) => t.get(key.as_slice()).map_err(|e| self.err(e))?,
                    None => None,
                };
                let cells = match row {
                    None => v.features.iter().map(|_| Cell { value: vec![], event_ts: None, found: false }).collect(),
                    Some(guard) => {
                        let bytes = guard.value();
                        let ts = event_ts(bytes);
                        v.features
                            .iter()
                            .map(|f| match field(bytes, f) {
                                Some(val) => Cell { value: val.to_vec(), event_ts: ts, found: true },
                                None => Cell { value: vec![], event_ts: ts, found: false },
                            })
                            .collect()
                    }
                };
                per_view.push(cells);
            }
            out.push(per_view);
        }
        Ok(out)
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
