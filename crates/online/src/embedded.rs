//! The embedded online store: redb databases in the project folder. Reads take
//! microseconds; writes are ACID transactions, safe against a crash.
//!
//! The entities are dealt to [`SHARDS`] databases by murmur3_32 of the entity key
//! (seed 0): the configured path is shard 0, shard `i` is `<path>.<i>`. redb
//! takes one write transaction at a time per database, so a batch is written to
//! the shards at once, one transaction each, on as many threads: an entity's rows
//! of every view of a batch land together or not at all.
//!
//! Layout: one table per shard, `online.v4`, one record per entity of a project
//! with every view's values in it (a read of several views is one lookup):
//! key = `u32le len(project) | project | entity key`, value = `(u32le len(view) |
//! view | u32le len(segment) | segment)*`, a segment = `i64le event_ts | (u32le
//! field id | varint len(value) | value)*`, where a feature's field id is
//! murmur3_32 of its name (seed 0). A view whose features' ids collide is refused
//! at write time. Earlier layouts are rewritten into this one when the store is
//! opened: `online` and `online.v2` (in the one file at the configured path: a
//! record per entity and view, names spelled out in every value, then field ids),
//! and `online.v3` (`online.v2` sharded).

use std::path::Path;

use amora_proto::online::murmur3_32;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::{Cells, OnlineError, OnlineStore, ViewRead, WriteRow};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online.v4");
/// A record per entity and view: key = `u32le len(project) | project | u32le
/// len(view) | view | entity key`, value = a segment.
const TABLE_V3: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online.v3");
/// `online.v3` in one database (shard 0 only).
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

/// A length-prefixed part at `at`: `(part, where the next one starts)`.
fn part(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let n = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    Some((bytes.get(at + 4..at + 4 + n)?, at + 4 + n))
}

/// `(project, view, entity key)` of a key of the earlier layouts.
fn split_v3_key(key: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (project, at) = part(key, 0)?;
    let (view, at) = part(key, at)?;
    Some((project, view, &key[at..]))
}

/// The entity key of a stored key (after the project).
#[cfg(test)]
fn entity_key_of(key: &[u8]) -> Option<&[u8]> {
    key.get(part(key, 0)?.1..)
}

/// The key prefix of a project's records.
fn project_prefix(project: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + project.len());
    push_part(&mut k, project.as_bytes());
    k
}

/// The key of an entity's record in the earlier layouts' spelling (tests write them).
#[cfg(test)]
fn prefix(project: &str, view: &str) -> Vec<u8> {
    let mut k = project_prefix(project);
    push_part(&mut k, view.as_bytes());
    k
}

fn push_part(out: &mut Vec<u8>, bytes: &[u8]) {
    push_part_with(out, |out| out.extend_from_slice(bytes));
}

/// Appends a length-prefixed part that `write` writes.
fn push_part_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let n = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Appends a view's segment to a record.
fn push_segment(out: &mut Vec<u8>, view: &[u8], segment: &[u8]) {
    push_part(out, view);
    push_part(out, segment);
}

/// The views' segments of a record: `(view, segment)`.
fn segments(record: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (view, next) = part(record, at)?;
        let (segment, next) = part(record, next)?;
        at = next;
        Some((view, segment))
    })
}

/// A record written over the stored one, `old`: where the stored segment of a
/// written view is as new or newer (and differs), it stays; other views'
/// segments stay as they are. `None` when the written record stands as it is.
fn merged(new: &[u8], old: &[u8]) -> Option<Vec<u8>> {
    let (mut older_wins, mut others) = (Vec::new(), Vec::new());
    for (view, segment) in segments(old) {
        match segments(new).find(|(v, _)| *v == view) {
            None => others.push((view, segment)),
            Some((_, written)) => {
                if written != segment && event_ts(segment).is_some_and(|ts| event_ts(written).is_none_or(|w| ts >= w)) {
                    older_wins.push((view, segment));
                }
            }
        }
    }
    if older_wins.is_empty() && others.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(new.len() + old.len());
    for (view, segment) in segments(new) {
        let segment = older_wins.iter().find(|(v, _)| *v == view).map_or(segment, |(_, s)| s);
        push_segment(&mut out, view, segment);
    }
    for (view, segment) in others {
        push_segment(&mut out, view, segment);
    }
    Some(out)
}

fn field_id(feature: &str) -> u32 {
    murmur3_32(feature.as_bytes(), 0)
}

/// Appends a segment to `out`.
fn encode<'a>(out: &mut Vec<u8>, ts: i64, ids: &[u32], values: impl IntoIterator<Item = &'a [u8]>) {
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

/// The fields of a segment: `(field id, value)`.
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
        store.migrate_v3()?;
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
                txns.iter().map(|t| t.open_table(TABLE_V3).map_err(|e| self.err(e))).collect::<Result<Vec<_>, _>>()?;
            for item in old.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                // A key too short to hold an entity key is no one's: it goes with the old table.
                if let Some(shard) = split_v3_key(k.value()).map(|(_, _, ek)| shard_of(ek)) {
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
                value.clear();
                encode(&mut value, ts, &ids, values);
                t.insert(k.value(), value.as_slice()).map_err(|e| self.err(e))?;
            }
        }
        txn.delete_table(TABLE_V1).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Gathers each shard's records of one entity and view (`online.v3`) into
    /// records per entity, in one transaction per shard (a crash leaves that
    /// shard's old table whole, to be gathered again at the next open).
    fn migrate_v3(&self) -> Result<(), OnlineError> {
        for shard in 0..SHARDS {
            if !self.has_table(shard, TABLE_V3)? {
                continue;
            }
            let txn = self.shards[shard].begin_write().map_err(|e| self.err(e))?;
            {
                let old = txn.open_table(TABLE_V3).map_err(|e| self.err(e))?;
                let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
                let (mut key, mut record) = (Vec::new(), Vec::new());
                for item in old.iter().map_err(|e| self.err(e))? {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    // A key too short to hold an entity key is no one's: it goes with the old table.
                    let Some((project, view, ek)) = split_v3_key(k.value()) else { continue };
                    key.clear();
                    record.clear();
                    push_part(&mut key, project);
                    key.extend_from_slice(ek);
                    push_segment(&mut record, view, v.value());
                    self.insert_record(&mut t, &key, &record)?;
                }
            }
            txn.delete_table(TABLE_V3).map_err(|e| self.err(e))?;
            txn.commit().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Writes an entity's record over the stored one, keeping what [`merged`] keeps.
    fn insert_record(
        &self,
        t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        key: &[u8],
        record: &[u8],
    ) -> Result<(), OnlineError> {
        // One descent of the tree: write, and write again in the rare case
        // something of the old record stays (rewriting a window already written
        // writes once).
        let fix = match t.insert(key, record).map_err(|e| self.err(e))? {
            Some(old) => merged(record, old.value()),
            None => None,
        };
        if let Some(record) = fix {
            t.insert(key, record.as_slice()).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Writes the views' rows (`rows[view]`) where they are newer than the
    /// stored ones: one record per entity, whatever the number of views.
    fn insert_rows(
        &self,
        t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        project: &str,
        views: &[(&str, &[u32])],
        rows: &[Vec<&WriteRow>],
    ) -> Result<(), OnlineError> {
        // Every row as (entity key, view, position), in key order, so the B-tree is
        // filled page by page and an entity's rows come together.
        let mut order: Vec<(&[u8], usize, usize)> = rows
            .iter()
            .enumerate()
            .flat_map(|(v, rows)| rows.iter().enumerate().map(move |(i, r)| (r.entity_key.as_slice(), v, i)))
            .collect();
        order.sort_unstable();
        let p = project_prefix(project);
        let (mut key, mut record) = (p.clone(), Vec::new());
        let mut rest = order.as_slice();
        while let Some(&(ek, ..)) = rest.first() {
            let n = rest.iter().position(|e| e.0 != ek).unwrap_or(rest.len());
            let (mut entity, next) = rest.split_at(n);
            rest = next;
            record.clear();
            while let Some(&(_, v, _)) = entity.first() {
                let m = entity.iter().position(|e| e.1 != v).unwrap_or(entity.len());
                // The view's newest row of the batch (the first of equals).
                let r = entity[..m]
                    .iter()
                    .map(|e| rows[v][e.2])
                    .reduce(|a, b| if b.event_ts > a.event_ts { b } else { a })
                    .expect("a row");
                entity = &entity[m..];
                push_part(&mut record, views[v].0.as_bytes());
                push_part_with(&mut record, |out| encode(out, r.event_ts, views[v].1, &r.values));
            }
            key.truncate(p.len());
            key.extend_from_slice(ek);
            self.insert_record(t, &key, &record)?;
        }
        Ok(())
    }

    /// Every stored key (`project | entity key`, as the layout spells it),
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
        let named: Vec<(&str, &[u32])> = views.iter().zip(&ids).map(|(v, ids)| (v.view, ids.as_slice())).collect();
        let write = |shard: usize, rows: Vec<Vec<&WriteRow>>| -> Result<(), OnlineError> {
            let txn = self.shards[shard].begin_write().map_err(|e| self.err(e))?;
            {
                let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
                self.insert_rows(&mut t, project, &named, &rows)?;
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
        let p = project_prefix(project);
        let mut out = Cells::builder(views);
        let mut key = p.clone();
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
            key.truncate(p.len());
            key.extend_from_slice(ek);
            let record = match table {
                Some(t) => t.get(key.as_slice()).map_err(|e| self.err(e))?,
                None => None,
            };
            let record = record.as_ref().map_or(&[][..], |guard| guard.value());
            for (view, ids) in views.iter().zip(&ids) {
                match segments(record).find(|(v, _)| *v == view.view.as_bytes()) {
                    None => {
                        out.push_stamp(None);
                        ids.iter().for_each(|_| out.push(None));
                    }
                    Some((_, segment)) => {
                        out.push_stamp(event_ts(segment));
                        for id in ids {
                            out.push(fields(segment).find(|(f, _)| f == id).map(|(_, v)| v));
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
        let p = project_prefix(project);
        for db in &self.shards {
            let txn = db.begin_write().map_err(|e| self.err(e))?;
            {
                let mut t = txn.open_table(TABLE).map_err(|e| self.err(e))?;
                // The project's records that hold the view: what is left of each (none: removed).
                let mut changes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                for item in t.range(p.as_slice()..).map_err(|e| self.err(e))? {
                    let (k, record) = item.map_err(|e| self.err(e))?;
                    if !k.value().starts_with(&p) {
                        break;
                    }
                    let record = record.value();
                    if segments(record).any(|(v, _)| v == view.as_bytes()) {
                        let mut rest = Vec::new();
                        for (v, segment) in segments(record).filter(|(v, _)| *v != view.as_bytes()) {
                            push_segment(&mut rest, v, segment);
                        }
                        changes.push((k.value().to_vec(), rest));
                    }
                }
                for (k, rest) in changes {
                    if rest.is_empty() {
                        t.remove(k.as_slice()).map_err(|e| self.err(e))?;
                    } else {
                        t.insert(k.as_slice(), rest.as_slice()).map_err(|e| self.err(e))?;
                    }
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
                    value.clear();
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
    fn records_per_entity_and_view_are_gathered_per_entity_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let ids = [field_id("x")];
        let entities: Vec<Vec<u8>> = (0u32..32).map(|i| i.to_le_bytes().to_vec()).collect();
        {
            let dbs: Vec<Database> = (0..SHARDS).map(|i| Database::create(shard_path(&path, i)).unwrap()).collect();
            for (i, ek) in entities.iter().enumerate() {
                let txn = dbs[shard_of(ek)].begin_write().unwrap();
                {
                    let mut t = txn.open_table(TABLE_V3).unwrap();
                    for (project, view, ts) in [("p", "v1", i as i64), ("p", "v2", 100 + i as i64), ("q", "v1", 7)] {
                        let mut k = prefix(project, view);
                        k.extend_from_slice(ek);
                        let mut value = Vec::new();
                        encode(&mut value, ts, &ids, [format!("{project}{view}{i}").as_bytes()]);
                        t.insert(k.as_slice(), value.as_slice()).unwrap();
                    }
                }
                txn.commit().unwrap();
            }
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert!((0..SHARDS).all(|i| !store.has_table(i, TABLE_V3).unwrap()));
        // One record per project and entity, each view's values and timestamp in it.
        assert_eq!(store.keys().unwrap().len(), 2 * entities.len());
        let views = ["v1", "v2"].map(|v| ViewRead { view: v.into(), features: vec!["x".into()] });
        let cells = store.read("p", &entities, &views).unwrap().nested();
        for (i, cells) in cells.iter().enumerate() {
            assert_eq!(
                cells[0][0],
                Cell { value: format!("pv1{i}").into_bytes(), event_ts: Some(i as i64), found: true }
            );
            assert_eq!(cells[1][0].value, format!("pv2{i}").into_bytes());
            assert_eq!(cells[1][0].event_ts, Some(100 + i as i64));
        }
        let other = store.read("q", &entities[..1], &views).unwrap().nested();
        assert_eq!((other[0][0][0].value.as_slice(), other[0][1][0].found), (&b"qv10"[..], false));
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
