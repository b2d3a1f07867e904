//! The latest row per entity in a time window, pushed down into the scan of a
//! local Parquet table (materialization's dedup), in two passes:
//!
//! 1. The join keys and timestamps only: each reader thread keeps, per entity,
//!    the best `(event_ts, created_ts)` so far and where that row is (file, row
//!    group, row); the threads' tables are merged.
//! 2. Only the winning rows: each row group that holds winners is read with a
//!    row selection, so the feature columns are decoded for the winners alone and
//!    row groups without one are not read at all.
//!
//! Memory is one small record per entity (the output's size), never the table.
//! Order is Feast's: the greatest `(event_ts, created_ts)` wins, a null created
//! timestamp below any other; exact ties go to the row stored first (file, row
//! group, row), so the choice does not depend on thread timing. Rows with a null
//! join key or event timestamp are never served, so they are skipped.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use futures::StreamExt;

use crate::pit::{canonical_keys, FxHasher};
use crate::scan::{io, plan_file, FilePlan};
use crate::store::{BatchStream, ScanSpec};
use crate::OfflineError;

/// Where a row is stored: file, row group, row within the group. Ordered as stored.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    file: u32,
    group: u32,
    row: u32,
}

#[derive(Clone, Copy)]
struct Best {
    ts: i64,
    created: Option<i64>,
    at: Pos,
}

impl Best {
    /// Whether `self` beats `other`: newer, or as new and stored first.
    fn beats(&self, other: &Best) -> bool {
        match (self.ts, self.created).cmp(&(other.ts, other.created)) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self.at < other.at,
        }
    }
}

type FxMap<K> = HashMap<K, Best, BuildHasherDefault<FxHasher>>;

/// The best row per key seen by one thread. A single integer key is hashed as
/// itself, or, when the files' statistics put the keys in a range not much
/// larger than the rows, indexed in an array (`dense`; keys outside it, should
/// the statistics be wrong, go to the map); other keys are hashed as Arrow rows
/// of their canonical types (so files whose integer widths or string layouts
/// differ still agree).
enum Winners {
    Int64(FxMap<i64>, Dense),
    Rows(FxMap<Box<[u8]>>, RowConverter),
}

/// The best rows of keys `min..min + slots.len()`, by key; `EMPTY` where none.
struct Dense {
    min: i64,
    slots: Vec<Best>,
}

const EMPTY: Best = Best { ts: i64::MIN, created: None, at: Pos { file: u32::MAX, group: 0, row: 0 } };

impl Dense {
    fn slot(&mut self, key: i64) -> Option<&mut Best> {
        let i = usize::try_from(key.checked_sub(self.min)?).ok()?;
        self.slots.get_mut(i)
    }
}

/// The range of a single integer join key over the row groups to read, from
/// the files' statistics, when it is small enough to index by: at most twice
/// the rows, and at most 2^21 keys. `None` otherwise, or when a statistic is missing.
fn dense_range(plans: &[FilePlan], scan: &ScanSpec) -> Option<(i64, usize)> {
    use datafusion::parquet::file::statistics::Statistics;
    let [key] = scan.join_keys.as_slice() else { return None };
    let (mut lo, mut hi, mut rows) = (i64::MAX, i64::MIN, 0usize);
    for p in plans {
        let field = p.meta.schema().field_with_name(key).ok()?;
        if !matches!(field.data_type(), DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8) {
            return None;
        }
        let leaf = p.meta.parquet_schema().columns().iter().position(|c| c.name() == key.as_str())?;
        for g in &p.groups {
            let group = p.meta.metadata().row_group(*g);
            rows += group.num_rows().max(0) as usize;
            let (min, max) = match group.column(leaf).statistics()? {
                Statistics::Int64(s) => (*s.min_opt()?, *s.max_opt()?),
                Statistics::Int32(s) => (i64::from(*s.min_opt()?), i64::from(*s.max_opt()?)),
                _ => return None,
            };
            (lo, hi) = (lo.min(min), hi.max(max));
        }
    }
    let span = usize::try_from(hi.checked_sub(lo)?).ok()?.checked_add(1)?;
    (rows > 0 && span <= (2 * rows).min(1 << 21)).then_some((lo, span))
}

impl Winners {
    fn for_keys(keys: &[ArrayRef], dense: Option<(i64, usize)>) -> Result<Winners, OfflineError> {
        Ok(match keys {
            [k] if k.data_type() == &DataType::Int64 => {
                let (min, len) = dense.unwrap_or((0, 0));
                Winners::Int64(FxMap::default(), Dense { min, slots: vec![EMPTY; len] })
            }
            _ => Winners::Rows(
                FxMap::default(),
                RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())?,
            ),
        })
    }

    fn len(&self) -> usize {
        match self {
            Winners::Int64(m, d) => m.len() + d.slots.iter().filter(|b| b.at.file != u32::MAX).count(),
            Winners::Rows(m, _) => m.len(),
        }
    }

    fn offer<K: std::hash::Hash + Eq>(map: &mut FxMap<K>, key: K, b: Best) {
        match map.get_mut(&key) {
            Some(old) if b.beats(old) => *old = b,
            Some(_) => {}
            None => {
                map.insert(key, b);
            }
        }
    }

    /// Offers the rows of one batch: `ts` in microseconds, rows outside `window`
    /// and rows with a null key or timestamp left out; `first` is the batch's
    /// first row within its row group.
    fn offer_batch(
        &mut self,
        keys: &[ArrayRef],
        ts: &Int64Array,
        created: Option<&Int64Array>,
        (start, end): (i64, i64),
        at: Pos,
    ) -> Result<(), OfflineError> {
        let created_at = |i: usize| created.and_then(|c| c.is_valid(i).then(|| c.value(i)));
        let live = |i: usize| ts.is_valid(i) && (start..=end).contains(&ts.value(i));
        let pos = |i: usize| Pos { row: at.row + i as u32, ..at };
        match self {
            Winners::Int64(map, dense) => {
                let k = keys[0].as_any().downcast_ref::<Int64Array>().ok_or_else(mixed)?;
                for i in 0..ts.len() {
                    if live(i) && k.is_valid(i) {
                        let b = Best { ts: ts.value(i), created: created_at(i), at: pos(i) };
                        match dense.slot(k.value(i)) {
                            Some(old) if b.beats(old) => *old = b,
                            Some(_) => {}
                            None => Self::offer(map, k.value(i), b),
                        }
                    }
                }
            }
            Winners::Rows(map, conv) => {
                let rows = conv.convert_columns(keys).map_err(|_| mixed())?;
                for i in 0..ts.len() {
                    if live(i) && keys.iter().all(|k| k.is_valid(i)) {
                        let b = Best { ts: ts.value(i), created: created_at(i), at: pos(i) };
                        let row = rows.row(i);
                        match map.get_mut(row.as_ref()) {
                            Some(old) if b.beats(old) => *old = b,
                            Some(_) => {}
                            None => {
                                map.insert(row.as_ref().into(), b);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Folds in another thread's table.
    fn merge(&mut self, other: Winners) -> Result<(), OfflineError> {
        match (self, other) {
            (Winners::Int64(a, da), Winners::Int64(b, db)) => {
                if da.min != db.min || da.slots.len() != db.slots.len() {
                    return Err(mixed());
                }
                for (mine, theirs) in da.slots.iter_mut().zip(db.slots) {
                    if theirs.beats(mine) {
                        *mine = theirs;
                    }
                }
                b.into_iter().for_each(|(k, v)| Self::offer(a, k, v));
            }
            (Winners::Rows(a, _), Winners::Rows(b, _)) => b.into_iter().for_each(|(k, v)| Self::offer(a, k, v)),
            _ => return Err(mixed()),
        }
        Ok(())
    }

    fn into_bests(self) -> Vec<Best> {
        match self {
            Winners::Int64(m, d) => {
                d.slots.into_iter().filter(|b| b.at.file != u32::MAX).chain(m.into_values()).collect()
            }
            Winners::Rows(m, _) => m.into_values().collect(),
        }
    }
}

fn mixed() -> OfflineError {
    OfflineError::Contract("the table's files disagree on the join keys' types".into())
}

fn changed(scan: &ScanSpec) -> OfflineError {
    OfflineError::Backend(format!(
        "feature view `{}`: its table {} changed while it was read; run again",
        scan.view, scan.location
    ))
}

/// A column in microseconds as Int64 (any timestamp unit).
fn micros(col: &ArrayRef) -> Result<Int64Array, OfflineError> {
    let plain = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let int = cast(&plain, &DataType::Int64)?;
    Ok(int.as_any().downcast_ref::<Int64Array>().expect("cast to int64").clone())
}

fn threads_for(units: usize) -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(units).max(1)
}

/// Pass 1: the winning row of every entity, read from the keys and timestamps.
fn winners(plans: &[FilePlan], scan: &ScanSpec, window: (i64, i64), memory: usize) -> Result<Vec<Best>, OfflineError> {
    let mut names: Vec<&str> = scan.join_keys.iter().map(String::as_str).collect();
    names.push(&scan.event_timestamp);
    names.extend(scan.created_timestamp.as_deref());
    let units: Vec<(usize, usize)> =
        plans.iter().enumerate().flat_map(|(f, p)| p.groups.iter().map(move |g| (f, *g))).collect();
    let next = AtomicUsize::new(0);
    let dense = dense_range(plans, scan);
    // Each thread's table may come to every entity: as many threads as `memory`
    // holds tables of (an array of the key range, or at most one entry per row).
    let rows: usize = plans
        .iter()
        .flat_map(|p| p.groups.iter().map(|g| p.meta.metadata().row_group(*g).num_rows().max(0) as usize))
        .sum();
    let table = dense.map_or(rows.saturating_mul(64), |(_, span)| span * std::mem::size_of::<Best>());
    let threads = threads_for(units.len()).min((memory / table.max(1)).max(1));
    let tables = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::Builder::new().name("latest-keys".into()).spawn_scoped(
                    s,
                    || -> Result<Option<Winners>, OfflineError> {
                        let mut mine: Option<Winners> = None;
                        while let Some(&(f, g)) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let plan = &plans[f];
                            let path = plan.path.as_path();
                            let schema = plan.meta.schema();
                            let roots = names.iter().map(|n| schema.index_of(n)).collect::<Result<Vec<_>, _>>()?;
                            let reader = plan
                                .open(roots)?
                                .with_row_groups(vec![g])
                                .with_batch_size(16 * 1024)
                                .build()
                                .map_err(|e| io(path, e))?;
                            let mut row = 0u32;
                            for batch in reader {
                                let batch = batch.map_err(|e| io(path, e))?;
                                let col = |n: &str| batch.column_by_name(n).expect("projected").clone();
                                let keys = canonical_keys(&scan.join_keys.iter().map(|k| col(k)).collect::<Vec<_>>())?;
                                let ts = micros(&col(&scan.event_timestamp))?;
                                let created = scan.created_timestamp.as_deref().map(|c| micros(&col(c))).transpose()?;
                                let table = match &mut mine {
                                    Some(t) => t,
                                    None => mine.insert(Winners::for_keys(&keys, dense)?),
                                };
                                let at = Pos { file: f as u32, group: g as u32, row };
                                table.offer_batch(&keys, &ts, created.as_ref(), window, at)?;
                                row += batch.num_rows() as u32;
                            }
                        }
                        Ok(mine)
                    },
                )
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                let j = j.map_err(|e| OfflineError::Backend(format!("cannot start a reader thread: {e}")))?;
                j.join().unwrap_or_else(|_| Err(OfflineError::Backend("a reader thread panicked".into())))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut tables = tables.into_iter().flatten();
    let Some(mut all) = tables.next() else { return Ok(Vec::new()) };
    for t in tables {
        all.merge(t)?;
    }
    let mut bests = Vec::with_capacity(all.len());
    bests.extend(all.into_bests());
    Ok(bests)
}

/// A piece of pass 2: winning rows of one row group (in row order) and their
/// event timestamps, to check that the second read sees the rows of the first.
struct Piece {
    file: usize,
    group: usize,
    rows: Vec<u32>,
    ts: Vec<i64>,
}

/// Winners per row group, cut into pieces of at most `size` rows so that a row
/// group holding most of them (time-ordered data) is still read by every core.
fn pieces(mut bests: Vec<Best>, size: usize) -> Vec<Piece> {
    bests.sort_unstable_by_key(|b| b.at);
    let mut out: Vec<Piece> = Vec::new();
    for b in bests {
        let (file, group) = (b.at.file as usize, b.at.group as usize);
        match out.last_mut() {
            Some(p) if p.file == file && p.group == group && p.rows.len() < size => {
                p.rows.push(b.at.row);
                p.ts.push(b.ts);
            }
            _ => out.push(Piece { file, group, rows: vec![b.at.row], ts: vec![b.ts] }),
        }
    }
    out
}

/// The row selection of `rows` (ascending) within a row group.
fn selection(rows: &[u32]) -> RowSelection {
    let mut sel = Vec::new();
    let mut next = 0u32;
    let mut i = 0;
    while i < rows.len() {
        let first = rows[i];
        let mut last = first;
        while i + 1 < rows.len() && rows[i + 1] == last + 1 {
            i += 1;
            last += 1;
        }
        if first > next {
            sel.push(RowSelector::skip((first - next) as usize));
        }
        sel.push(RowSelector::select((last - first + 1) as usize));
        next = last + 1;
        i += 1;
    }
    sel.into()
}

/// Pass 2 of one piece: its rows, all the scan's columns, checked against pass 1.
fn read_piece(
    plan: &FilePlan,
    piece: &Piece,
    scan: &ScanSpec,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, OfflineError>>,
) -> Result<bool, OfflineError> {
    let path = plan.path.as_path();
    let reader = plan
        .open(plan.roots.iter().copied())?
        .with_row_groups(vec![piece.group])
        .with_row_selection(selection(&piece.rows))
        .with_batch_size(8192)
        .build()
        .map_err(|e| io(path, e))?;
    let mut seen = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| io(path, e))?;
        let ts = micros(batch.column_by_name(&scan.event_timestamp).expect("projected"))?;
        let expected = piece.ts.get(seen..seen + ts.len()).ok_or_else(|| changed(scan))?;
        if ts.null_count() > 0 || ts.values().as_ref() != expected {
            return Err(changed(scan));
        }
        seen += ts.len();
        if tx.blocking_send(Ok(batch)).is_err() {
            return Ok(false);
        }
    }
    if seen != piece.rows.len() {
        return Err(changed(scan));
    }
    Ok(true)
}

/// What [`latest_in_files`] found in pass 1.
pub struct LatestScan {
    /// Distinct entities with a row in the window: the rows the streams will yield.
    pub entities: u64,
    /// Rows of each entity's winning row, one per entity, as streams (one per
    /// reader thread); the columns are the scan's, as stored.
    pub streams: Vec<BatchStream>,
}

/// The latest row per entity of the files in the window (blocking: pass 1 runs
/// before this returns; pass 2 runs behind the streams). `memory` bounds pass 1's
/// reader threads: each keeps a table that may come to every entity.
pub fn latest_in_files(
    files: Vec<PathBuf>,
    scan: &ScanSpec,
    window: (i64, i64),
    memory: usize,
) -> Result<LatestScan, OfflineError> {
    let t0 = std::time::Instant::now();
    let plans = files.iter().map(|f| plan_file(f, scan, window)).collect::<Result<Vec<_>, _>>()?;
    let bests = winners(&plans, scan, window, memory)?;
    let entities = bests.len() as u64;
    if std::env::var_os("AMORA_TIMINGS").is_some() {
        eprintln!(
            "[timings] {}: latest rows' pass 1 (keys and timestamps) {:.3}s",
            scan.view,
            t0.elapsed().as_secs_f64()
        );
    }
    let threads = threads_for(bests.len().div_ceil(8192));
    let pieces = Arc::new(pieces(bests, (entities as usize).div_ceil(threads * 4).clamp(8192, 65_536)));
    let (plans, next) = (Arc::new(plans), Arc::new(AtomicUsize::new(0)));
    let streams = (0..threads)
        .map(|_| -> Result<BatchStream, OfflineError> {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let (scan, plans, pieces, next) = (scan.clone(), plans.clone(), pieces.clone(), next.clone());
            std::thread::Builder::new()
                .name("latest-rows".into())
                .spawn(move || {
                    while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
                        match read_piece(&plans[piece.file], piece, &scan, &tx) {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => {
                                let _ = tx.blocking_send(Err(e));
                                return;
                            }
                        }
                    }
                })
                .map_err(|e| OfflineError::Backend(format!("cannot start a reader thread: {e}")))?;
            Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }).boxed())
        })
        .collect::<Result<_, _>>()?;
    Ok(LatestScan { entities, streams })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int32Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
        fn opt(&mut self, n: u64, null_one_in: u64) -> Option<i64> {
            (self.next(null_one_in) != 0).then(|| self.next(n) as i64)
        }
    }

    /// One stored row: keys (user, id), ts, created, value (its position, to tell rows apart).
    type Row = (Option<String>, Option<i32>, Option<i64>, Option<i64>, i64);

    fn write(path: &std::path::Path, rows: &[Row], group: usize) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("id", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("created", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("x", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(
                    TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()).with_timezone("UTC"),
                ),
                Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(group)).build();
        let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn spec(keys: &[&str]) -> ScanSpec {
        ScanSpec {
            view: "v".into(),
            location: String::new(),
            join_keys: keys.iter().map(|k| k.to_string()).collect(),
            event_timestamp: "ts".into(),
            created_timestamp: Some("created".into()),
            features: vec!["x".into()],
        }
    }

    /// The winning `x` per key, from the pushed-down scan.
    fn run(files: Vec<PathBuf>, scan: &ScanSpec, window: (i64, i64), memory: usize) -> (u64, Vec<(Vec<String>, i64)>) {
        let found = latest_in_files(files, scan, window, memory).unwrap();
        let batches: Vec<RecordBatch> = futures::executor::block_on(
            futures::stream::select_all(found.streams).map(|b| b.unwrap()).collect::<Vec<_>>(),
        );
        let mut out = Vec::new();
        for b in batches {
            let keys: Vec<ArrayRef> =
                scan.join_keys.iter().map(|k| cast(b.column_by_name(k).unwrap(), &DataType::Utf8).unwrap()).collect();
            let x = b.column_by_name("x").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
            for i in 0..b.num_rows() {
                let key = keys.iter().map(|k| k.as_any().downcast_ref::<StringArray>().unwrap().value(i).to_string());
                out.push((key.collect(), x.value(i)));
            }
        }
        out.sort();
        (found.entities, out)
    }

    /// The same, by a scan over the rows in stored order (files, then rows).
    fn naive(rows: &[Row], keys: &[&str], (start, end): (i64, i64)) -> Vec<(Vec<String>, i64)> {
        let mut best: BTreeMap<Vec<String>, (i64, Option<i64>, i64)> = BTreeMap::new();
        for r in rows {
            let (Some(ts), true) = (r.2, (start..=end).contains(&r.2.unwrap_or(i64::MIN))) else { continue };
            let key: Option<Vec<String>> =
                keys.iter().map(|k| if *k == "user" { r.0.clone() } else { r.1.map(|v| v.to_string()) }).collect();
            let Some(key) = key else { continue };
            match best.get(&key) {
                Some((t, c, _)) if (ts, r.3) <= (*t, *c) => {}
                _ => {
                    best.insert(key, (ts, r.3, r.4));
                }
            }
        }
        best.into_iter().map(|(k, (_, _, x))| (k, x)).collect()
    }

    #[test]
    fn matches_a_naive_scan_on_random_tables() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(7);
        for case in 0..12 {
            let n = 1 + rng.next(3_000) as usize;
            let users = 1 + rng.next(40);
            let scale = if case % 2 == 0 { 1 } else { 1_000_003 };
            let rows: Vec<Row> = (0..n)
                .map(|i| {
                    let user = (rng.next(30) != 0).then(|| format!("u{}", rng.next(users)));
                    // Ids close together (indexed by key) or spread out (hashed).
                    let id = (rng.next(30) != 0).then(|| rng.next(5) as i32 * scale);
                    // Few distinct timestamps, so ties (and ties on created too) are common.
                    (user, id, rng.opt(50, 20), rng.opt(3, 4), (case * 10_000 + i) as i64)
                })
                .collect();
            let split = rng.next(n as u64 + 1) as usize;
            let files =
                vec![dir.path().join(format!("{case}-a.parquet")), dir.path().join(format!("{case}-b.parquet"))];
            write(&files[0], &rows[..split], 1 + rng.next(400) as usize);
            write(&files[1], &rows[split..], 1 + rng.next(400) as usize);
            let window = match case % 3 {
                0 => (i64::MIN, i64::MAX),
                1 => (10, 40),
                _ => (25, 25),
            };
            for keys in [&["id"][..], &["user", "id"][..]] {
                // Memory for one reader thread's table only, or for as many as there are cores.
                let memory = if case % 4 == 1 { 1 } else { usize::MAX };
                let (entities, got) = run(files.clone(), &spec(keys), window, memory);
                let expected = naive(&rows, keys, window);
                assert_eq!(got, expected, "case {case}, keys {keys:?}");
                assert_eq!(entities, expected.len() as u64);
            }
        }
    }

    #[test]
    fn close_integer_keys_are_indexed_and_spread_ones_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let plan_of = |ids: &[i32]| {
            let rows: Vec<Row> = ids.iter().map(|i| (None, Some(*i), Some(1), None, 0)).collect();
            write(&path, &rows, 2);
            vec![plan_file(&path, &spec(&["id"]), (0, 10)).unwrap()]
        };
        assert_eq!(dense_range(&plan_of(&[7, 3, 5, 4]), &spec(&["id"])), Some((3, 5)));
        assert_eq!(dense_range(&plan_of(&[7, 3, 5, 1000]), &spec(&["id"])), None, "a span over twice the rows");
        assert_eq!(dense_range(&plan_of(&[7, 3]), &spec(&["user", "id"])), None, "two keys");
    }

    #[test]
    fn a_table_replaced_between_the_passes_is_an_error_not_a_mix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let rows: Vec<Row> = (0..100).map(|i| (Some("u".into()), Some((i % 10) as i32), Some(i), None, i)).collect();
        write(&path, &rows, 30);
        let plans = vec![plan_file(&path, &spec(&["id"]), (0, 1000)).unwrap()];
        let bests = winners(&plans, &spec(&["id"]), (0, 1000), 1).unwrap();
        assert_eq!(bests.len(), 10);
        // Rewritten with other timestamps: the second pass must notice.
        let shifted: Vec<Row> = rows.iter().map(|r| (r.0.clone(), r.1, r.2.map(|t| t + 1), r.3, r.4)).collect();
        write(&path, &shifted, 30);
        let (tx, _rx) = tokio::sync::mpsc::channel(100);
        let err = pieces(bests, 1000)
            .iter()
            .map(|p| read_piece(&plans[0], p, &spec(&["id"]), &tx))
            .find_map(Result::err)
            .expect("a changed table is an error");
        assert!(err.to_string().contains("changed while it was read"), "{err}");
    }

    #[test]
    fn selections_cover_exactly_the_rows() {
        let sel: Vec<RowSelector> = selection(&[0, 1, 2, 5, 9, 10]).into();
        assert_eq!(
            sel,
            vec![
                RowSelector::select(3),
                RowSelector::skip(2),
                RowSelector::select(1),
                RowSelector::skip(3),
                RowSelector::select(2)
            ]
        );
        let sel: Vec<RowSelector> = selection(&[4]).into();
        assert_eq!(sel, vec![RowSelector::skip(4), RowSelector::select(1)]);
    }

    #[test]
    fn ties_go_to_the_row_stored_first() {
        let at = |row| Pos { file: 0, group: 1, row };
        let a = Best { ts: 5, created: None, at: at(3) };
        let b = Best { ts: 5, created: None, at: at(7) };
        assert!(a.beats(&b) && !b.beats(&a));
        let c = Best { ts: 5, created: Some(0), at: at(9) };
        assert!(c.beats(&a), "a created timestamp ranks above none");
        let d = Best { ts: 6, created: None, at: at(9) };
        assert!(d.beats(&c));
    }
}
