//! `get_historical_features` on the embedded engine. Per view, in parallel: read the
//! join keys and timestamps of the rows in the needed time range (row groups outside
//! it skipped by their statistics), run the native as-of join ([`crate::pit`]) on
//! them, then stream the feature columns and keep only the winning rows. Memory holds
//! the views' keys and the training set, not the views' feature columns.

use std::sync::Arc;

use datafusion::arrow::array::{
    make_array, new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat, filter_record_batch, kernels::aggregate, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, UInt32Type};
use datafusion::prelude::{ident, lit, ParquetReadOptions};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use crate::frames::TrainingSet;
use crate::store::BatchStream;
use crate::{OfflineError, Warehouse};

/// One feature view, as the join needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSpec {
    pub name: String,
    /// Join-key columns, in the table and in the entity frame.
    pub join_keys: Vec<String>,
    pub event_timestamp: String,
    pub created_timestamp: Option<String>,
    /// 0: unbounded lookback.
    pub ttl_seconds: u64,
    pub features: Vec<String>,
    /// The declared type of each feature, when known: a store whose engine has
    /// fewer types (BigQuery: INT64 for int32) casts its results back to them.
    pub feature_types: Vec<amora_model::ValueType>,
    /// A Parquet file or a folder of Parquet files (embedded), or `project.dataset.table` (BigQuery).
    pub location: String,
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn user(msg: String) -> OfflineError {
    OfflineError::Contract(msg)
}

/// Casts a timestamp column (any unit; naive = UTC) to UTC microseconds.
fn to_utc_micros(a: &ArrayRef, what: &str) -> Result<TimestampMicrosecondArray, OfflineError> {
    match a.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {}
        other => return Err(user(format!("{what} must be a timestamp, not {other}"))),
    }
    let c = cast(a, &utc_micros()).map_err(|e| user(format!("{what}: {e}")))?;
    Ok(c.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("cast to timestamp").clone())
}

/// The output column names, checked for collisions before any work.
pub fn output_names(
    entities: &Schema,
    views: &[ViewSpec],
    full_feature_names: bool,
) -> Result<Vec<String>, OfflineError> {
    let mut names: Vec<String> = entities.fields().iter().map(|f| f.name().clone()).collect();
    let mut out = Vec::new();
    for v in views {
        for f in &v.features {
            let n = if full_feature_names { format!("{}__{f}", v.name) } else { f.clone() };
            if names.contains(&n) {
                return Err(user(format!(
                    "feature name collision: `{n}` appears twice in the output (as an entity column or in two views); use --full-feature-names to name features `view__feature`"
                )));
            }
            names.push(n.clone());
            out.push(n);
        }
    }
    Ok(out)
}

/// Point-in-time correct features for every row of `entities` (one batch), in
/// the entity rows' order. The output has every entity column (the timestamp made
/// UTC-aware) and the features of each view.
pub async fn get_historical_features(
    warehouse: &Warehouse,
    entities: &RecordBatch,
    timestamp_column: &str,
    views: &[ViewSpec],
    full_feature_names: bool,
) -> Result<TrainingSet, OfflineError> {
    let schema = entities.schema();
    let names = output_names(&schema, views, full_feature_names)?;
    let ts_idx = schema
        .index_of(timestamp_column)
        .map_err(|_| user(format!("the entity rows have no `{timestamp_column}` column")))?;
    for v in views {
        for k in &v.join_keys {
            if schema.index_of(k).is_err() {
                return Err(user(format!(
                    "the entity rows have no `{k}` column (join key of feature view `{}`)",
                    v.name
                )));
            }
        }
    }
    let entity_ts = to_utc_micros(entities.column(ts_idx), &format!("entity column `{timestamp_column}`"))?;
    let bounds = (aggregate::min(&entity_ts), aggregate::max(&entity_ts));

    // Each view on its own task, so that one view's as-of match never stalls
    // another's scan.
    let jobs = views.iter().map(|v| {
        let (w, e, ts, v) = (warehouse.clone(), entities.clone(), entity_ts.clone(), v.clone());
        tokio::spawn(async move { join_view(&w, &e, &ts, bounds, &v).await })
    });
    let mut joined = Vec::with_capacity(views.len());
    for job in futures::future::join_all(jobs).await {
        joined.push(job.map_err(|e| OfflineError::Backend(format!("a join task failed: {e}")))??);
    }

    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = entities.columns().to_vec();
    fields[ts_idx] = Field::new(timestamp_column, utc_micros(), true);
    columns[ts_idx] = Arc::new(entity_ts.clone());
    let mut name = names.into_iter();
    let mut features = Vec::new();
    for view in joined {
        for (values, t) in view.values.into_iter().zip(view.types) {
            fields.push(Field::new(name.next().expect("a name per feature"), t, true));
            features.push(values.map(|v| (v, view.slot.clone())));
        }
    }
    TrainingSet::new(Arc::new(Schema::new(fields)), columns, features, entities.num_rows())
}

/// One view's part of a training set: each feature's winning values (each winning
/// row once, in table order; `None`: no entity row matched) and, per entity row,
/// its position in them.
struct Joined {
    values: Vec<Option<ArrayRef>>,
    types: Vec<DataType>,
    slot: Arc<UInt32Array>,
}

impl Joined {
    /// The parts of a join run part by part: `rows`, the entity rows each part
    /// answered (indices into all `n` of them).
    fn combine(pieces: Vec<(UInt32Array, Joined)>, n: usize, types: &[DataType]) -> Result<Joined, OfflineError> {
        let mut slot: Vec<Option<u32>> = vec![None; n];
        let mut values: Vec<Vec<ArrayRef>> = vec![Vec::new(); types.len()];
        let mut offset = 0u32;
        for (rows, joined) in pieces {
            let Some(Some(first)) = joined.values.first() else { continue };
            let len = first.len() as u32;
            for (all, v) in values.iter_mut().zip(joined.values) {
                all.push(v.ok_or_else(|| OfflineError::Backend("a joined part lacks a feature".into()))?);
            }
            for (e, s) in rows.values().iter().zip(joined.slot.iter()) {
                slot[*e as usize] = s.map(|s| offset + s);
            }
            offset += len;
        }
        if offset == 0 {
            return Ok(Joined::unmatched(types, n));
        }
        let values = values
            .iter()
            .map(|parts| Ok(Some(concat(&parts.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?)))
            .collect::<Result<_, OfflineError>>()?;
        Ok(Joined { values, types: types.to_vec(), slot: Arc::new(UInt32Array::from(slot)) })
    }

    fn unmatched(types: &[DataType], rows: usize) -> Joined {
        Joined { values: vec![None; types.len()], types: types.to_vec(), slot: Arc::new(UInt32Array::new_null(rows)) }
    }
}

async fn join_view(
    warehouse: &Warehouse,
    entities: &RecordBatch,
    entity_ts: &TimestampMicrosecondArray,
    bounds: (Option<i64>, Option<i64>),
    v: &ViewSpec,
) -> Result<Joined, OfflineError> {
    let timings = std::env::var_os("AMORA_TIMINGS").is_some();
    let ttl_micros = i64::try_from(v.ttl_seconds).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000);
    // TTL 0: unbounded lookback.
    let ttl = (v.ttl_seconds > 0).then_some(ttl_micros);
    let window = match bounds {
        (Some(lo), Some(hi)) => (ttl.map_or(i64::MIN, |t| lo.saturating_sub(t)), hi),
        _ => (i64::MIN, i64::MAX),
    };
    let source = ViewRows::open(warehouse, v, window).await?;
    for (k, t) in v.join_keys.iter().zip(&source.key_types) {
        let col = entities.column_by_name(k).expect("checked");
        let compatible = col.data_type() == t
            || (col.data_type().is_integer() && t.is_integer())
            || (is_string(col.data_type()) && is_string(t));
        if !compatible {
            return Err(user(format!(
                "entity column `{k}` has type {} but feature view `{}` joins on {t}",
                col.data_type(),
                v.name,
            )));
        }
    }
    if entities.num_rows() == 0 {
        return Ok(Joined::unmatched(&source.feature_types, 0));
    }
    let entity_keys: Vec<ArrayRef> = v
        .join_keys
        .iter()
        .zip(&source.key_types)
        .map(|(k, t)| cast(entities.column_by_name(k).expect("checked"), t))
        .collect::<Result<_, _>>()?;
    let parts = source.parts(v, window, warehouse.join_memory())?;
    if parts == 1 {
        return join_part(&source, v, window, ttl, &entity_keys, entity_ts, None).await;
    }
    // More keys than the memory budget holds: the join runs part by part, each
    // part the entity rows and feature rows whose keys hash to it.
    if timings {
        eprintln!("timing: view {}: joined in {parts} parts by key", v.name);
    }
    // Entity rows grouped by part (the match's counting sort), in row order within each.
    let entity_part = crate::pit::part_of(&entity_keys, parts)?;
    let (starts, order) = crate::pit::group_by_key(parts as u32, entity_part.iter().map(|p| Some(*p)));
    drop(entity_part);
    let mut pieces = Vec::with_capacity(parts);
    for p in 0..parts {
        let rows = UInt32Array::from(order[starts[p] as usize..starts[p + 1] as usize].to_vec());
        let keys: Vec<ArrayRef> = entity_keys.iter().map(|k| take(k, &rows, None)).collect::<Result<_, _>>()?;
        let ts = take(entity_ts, &rows, None)?;
        let ts = ts.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("taken from timestamps");
        let joined = join_part(&source, v, window, ttl, &keys, ts, Some((p, parts))).await?;
        pieces.push((rows, joined));
    }
    Joined::combine(pieces, entities.num_rows(), &source.feature_types)
}

/// The join of one view for the given entity rows (keys already of the table's
/// types), over the feature rows of key part `part` (`(p, parts)`), or all of them.
/// `ttl`: microseconds of lookback, `None` for unbounded.
async fn join_part(
    source: &ViewRows,
    v: &ViewSpec,
    window: (i64, i64),
    ttl: Option<i64>,
    entity_keys: &[ArrayRef],
    entity_ts: &TimestampMicrosecondArray,
    part: Option<(usize, usize)>,
) -> Result<Joined, OfflineError> {
    let timings = std::env::var_os("AMORA_TIMINGS").is_some();
    let t0 = std::time::Instant::now();
    // Pass 1: join keys and timestamps only.
    let key_parts = source.keys(v, window, part).await?;
    let counts: Vec<usize> = key_parts.iter().map(|p| p.iter().map(RecordBatch::num_rows).sum()).collect();
    let rows: usize = counts.iter().sum();
    if timings {
        eprintln!("timing: view {}: read {rows} key rows in {:.3}s", v.name, t0.elapsed().as_secs_f64());
    }
    let t0 = std::time::Instant::now();
    if rows == 0 || entity_ts.is_empty() {
        return Ok(Joined::unmatched(&source.feature_types, entity_ts.len()));
    }
    let batches: Vec<&RecordBatch> = key_parts.iter().flatten().collect();
    let column = |name: &str| -> Result<ArrayRef, OfflineError> {
        let parts: Vec<&dyn Array> = batches
            .iter()
            .map(|b| b.column_by_name(name).map(|c| c.as_ref()))
            .collect::<Option<_>>()
            .ok_or_else(|| user(format!("feature view `{}`: a batch of its table has no `{name}`", v.name)))?;
        Ok(match parts.as_slice() {
            [one] => make_array(one.to_data()),
            _ => concat(&parts)?,
        })
    };
    let feature_keys: Vec<ArrayRef> = v.join_keys.iter().map(|k| column(k)).collect::<Result<_, _>>()?;
    let mut entity_keys = entity_keys.to_vec();
    for (ek, fk) in entity_keys.iter_mut().zip(&feature_keys) {
        if ek.data_type() != fk.data_type() {
            *ek = cast(ek, fk.data_type())?;
        }
    }
    let ts = to_utc_micros(&column(&v.event_timestamp)?, &format!("`{}` of view `{}`", v.event_timestamp, v.name))?;
    let created = match &v.created_timestamp {
        Some(c) => Some(to_utc_micros(&column(c)?, &format!("`{c}` of view `{}`", v.name))?),
        None => None,
    };
    drop(batches);
    drop(key_parts);
    let entity_ts = entity_ts.clone();
    let idx = tokio::task::spawn_blocking(move || {
        crate::pit::asof_indices(&entity_keys, &entity_ts, &feature_keys, &ts, created.as_ref(), ttl)
    })
    .await
    .map_err(|e| OfflineError::Backend(format!("the as-of match failed: {e}")))??;
    if timings {
        eprintln!("timing: view {}: as-of match {:.3}s", v.name, t0.elapsed().as_secs_f64());
    }
    // Pass 2: the feature columns, streamed; only the winning rows are kept.
    let t0 = std::time::Instant::now();
    let out = source.gather(v, window, &idx, &counts, part).await?;
    if timings {
        eprintln!("timing: view {}: read and gather features {:.3}s", v.name, t0.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// A stream's batches cut to the rows whose join keys fall in part `(p, parts)`.
fn only_part(stream: BatchStream, v: &ViewSpec, part: Option<(usize, usize)>) -> BatchStream {
    let Some((p, parts)) = part else { return stream };
    let keys = v.join_keys.clone();
    let name = v.name.clone();
    stream
        .map(move |batch| {
            let batch = batch?;
            let columns: Vec<ArrayRef> =
                keys.iter()
                    .map(|k| batch.column_by_name(k).cloned())
                    .collect::<Option<_>>()
                    .ok_or_else(|| user(format!("feature view `{name}`: a batch of its table has no join key")))?;
            let keep: BooleanArray =
                crate::pit::part_of(&columns, parts)?.iter().map(|q| Some(*q as usize == p)).collect();
            Ok(filter_record_batch(&batch, &keep)?)
        })
        .boxed()
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// A view's table as the join reads it. A local table is scanned twice, page by
/// page ([`crate::scan`]: a reader thread per core, no column chunk held whole):
/// first its join keys and timestamps, then its features, streamed, keeping only
/// the rows that win. So memory holds the keys and the training set, never the
/// view's feature columns. Anything else is read once through DataFusion.
struct ViewRows {
    kind: RowsKind,
    /// The types of the join keys and the features, from the table's schema.
    key_types: Vec<DataType>,
    feature_types: Vec<DataType>,
}

enum RowsKind {
    Local(Vec<std::path::PathBuf>),
    /// Every needed column, in the table's batches (taken by the second pass).
    Loaded(std::sync::Mutex<Vec<RecordBatch>>),
}

impl ViewRows {
    async fn open(warehouse: &Warehouse, v: &ViewSpec, window: (i64, i64)) -> Result<ViewRows, OfflineError> {
        let mut cols: Vec<&String> = v.join_keys.iter().collect();
        cols.push(&v.event_timestamp);
        cols.extend(v.created_timestamp.iter());
        cols.extend(v.features.iter());
        let check = |schema: &Schema| -> Result<(), OfflineError> {
            match cols.iter().find(|c| schema.field_with_name(c).is_err()) {
                Some(c) => {
                    Err(user(format!("feature view `{}`: its table {} has no column `{c}`", v.name, v.location)))
                }
                None => Ok(()),
            }
        };
        let (kind, schema) = match crate::scan::local_files(&v.location).filter(|f| !f.is_empty()) {
            Some(files) => {
                let schema = crate::scan::file_schema(&files[0])?;
                check(&schema)?;
                (RowsKind::Local(files), schema)
            }
            None => {
                let df = warehouse
                    .context()
                    .read_parquet(v.location.as_str(), ParquetReadOptions::default())
                    .await
                    .map_err(|e| {
                        user(format!("feature view `{}`: cannot read its table {}: {e}", v.name, v.location))
                    })?;
                check(df.schema().as_arrow())?;
                let ts_type = df.schema().as_arrow().field_with_name(&v.event_timestamp)?.data_type().clone();
                let at = |micros: i64| -> Result<datafusion::prelude::Expr, OfflineError> {
                    Ok(lit(ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())).cast_to(&ts_type)?))
                };
                let mut df = df.select(cols.iter().map(|c| ident(c.as_str())).collect::<Vec<_>>())?;
                if window.1 < i64::MAX {
                    df = df.filter(ident(&v.event_timestamp).lt_eq(at(window.1)?))?;
                }
                if window.0 > i64::MIN {
                    df = df.filter(ident(&v.event_timestamp).gt_eq(at(window.0)?))?;
                }
                let schema = Arc::new(df.schema().as_arrow().clone());
                (RowsKind::Loaded(std::sync::Mutex::new(df.collect().await?)), schema)
            }
        };
        let types = |names: &[String]| -> Vec<DataType> {
            names.iter().map(|f| schema.field_with_name(f).expect("checked").data_type().clone()).collect()
        };
        Ok(ViewRows { kind, key_types: types(&v.join_keys), feature_types: types(&v.features) })
    }

    /// What pass 1 (`keys`) or pass 2 reads; pass 2 reads the join keys too when
    /// the join runs in parts (`partitioned`), to keep only its part's rows.
    fn spec(v: &ViewSpec, keys: bool, partitioned: bool) -> crate::ScanSpec {
        crate::ScanSpec {
            view: v.name.clone(),
            location: v.location.clone(),
            join_keys: if keys || partitioned { v.join_keys.clone() } else { Vec::new() },
            event_timestamp: v.event_timestamp.clone(),
            created_timestamp: if keys { v.created_timestamp.clone() } else { None },
            features: if keys { Vec::new() } else { v.features.clone() },
        }
    }

    /// In how many parts the join must run for one part's keys and timestamps to
    /// fit in `budget` bytes (a table already in memory: one).
    fn parts(&self, v: &ViewSpec, window: (i64, i64), budget: usize) -> Result<usize, OfflineError> {
        match &self.kind {
            RowsKind::Local(files) => {
                let rows = crate::scan::rows_in_window(files, &Self::spec(v, true, false), window)?;
                // A row's key, timestamps and the match's bookkeeping.
                let per_row = 48 + 16 * v.join_keys.len();
                Ok(rows.saturating_mul(per_row).div_ceil(budget.max(1)).max(1))
            }
            RowsKind::Loaded(_) => Ok(1),
        }
    }

    /// Pass 1: the rows' keys and timestamps (of key part `part` only, when given),
    /// as the batches of each scan stream.
    async fn keys(
        &self,
        v: &ViewSpec,
        window: (i64, i64),
        part: Option<(usize, usize)>,
    ) -> Result<Vec<Vec<RecordBatch>>, OfflineError> {
        use futures::TryStreamExt;
        match &self.kind {
            RowsKind::Local(files) => {
                let streams = crate::scan::scan_files(files.clone(), &Self::spec(v, true, false), window)?;
                futures::future::try_join_all(
                    streams.into_iter().map(|s| only_part(s, v, part).try_collect::<Vec<_>>()),
                )
                .await
            }
            RowsKind::Loaded(batches) => Ok(vec![batches.lock().expect("not poisoned").clone()]),
        }
    }

    /// Pass 2: the feature values of the rows `idx` names (indices into the rows in
    /// pass 1's order; null: no match). `counts`: pass 1's rows per stream, which the
    /// second scan must reproduce.
    async fn gather(
        &self,
        v: &ViewSpec,
        window: (i64, i64),
        idx: &UInt32Array,
        counts: &[usize],
        part: Option<(usize, usize)>,
    ) -> Result<Joined, OfflineError> {
        // The distinct rows taken, ascending (`sources`), and each entity row's
        // position among them (`slot`): O(E + F), no sort.
        let total: usize = counts.iter().sum();
        const UNUSED: u32 = u32::MAX;
        let mut rank = vec![UNUSED; total];
        for g in idx.iter().flatten() {
            *rank.get_mut(g as usize).ok_or_else(|| changed(v))? = 0;
        }
        let mut sources = Vec::new();
        for (g, r) in rank.iter_mut().enumerate() {
            if *r != UNUSED {
                *r = sources.len() as u32;
                sources.push(g as u32);
            }
        }
        if sources.is_empty() {
            // No entity row matched: no feature needs reading.
            return Ok(Joined::unmatched(&self.feature_types, idx.len()));
        }
        let slot = Arc::new(idx.unary::<_, UInt32Type>(|g| rank.get(g as usize).copied().unwrap_or(0)));
        drop(rank);
        let sources = Arc::new(sources);
        let streams: Vec<BatchStream> = match &self.kind {
            RowsKind::Local(files) => {
                crate::scan::scan_files(files.clone(), &Self::spec(v, false, part.is_some()), window)?
                    .into_iter()
                    .map(|s| only_part(s, v, part))
                    .collect()
            }
            RowsKind::Loaded(batches) => {
                let batches = std::mem::take(&mut *batches.lock().expect("not poisoned"));
                vec![futures::stream::iter(batches.into_iter().map(Ok)).boxed()]
            }
        };
        if streams.len() != counts.len() {
            return Err(changed(v));
        }
        // Each stream's winners, on the runtime's threads, as pieces per feature.
        let features: Arc<Vec<String>> = Arc::new(v.features.clone());
        let types: Arc<Vec<DataType>> = Arc::new(self.feature_types.clone());
        let mut base = 0usize;
        let mut jobs = Vec::new();
        for (stream, &count) in streams.into_iter().zip(counts) {
            let (sources, features, types) = (sources.clone(), features.clone(), types.clone());
            let start = base;
            jobs.push(tokio::spawn(
                async move { gather_stream(stream, start, count, &sources, &features, &types).await },
            ));
            base += count;
        }
        let mut pieces: Vec<Vec<ArrayRef>> = vec![Vec::new(); v.features.len()];
        for job in jobs {
            let part = job.await.map_err(|e| OfflineError::Backend(format!("a gather task failed: {e}")))?;
            for (all, mine) in pieces.iter_mut().zip(part?.ok_or_else(|| changed(v))?) {
                all.extend(mine);
            }
        }
        // Each feature's winners, in table order.
        let mut values = Vec::with_capacity(pieces.len());
        for (column, t) in pieces.iter_mut().zip(self.feature_types.iter()) {
            let column = std::mem::take(column);
            let sorted = match column.as_slice() {
                [] => new_null_array(t, 0),
                [one] => one.clone(),
                _ => concat(&column.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?,
            };
            if sorted.len() != sources.len() {
                return Err(changed(v));
            }
            values.push(Some(sorted));
        }
        Ok(Joined { values, types: self.feature_types.clone(), slot })
    }
}

fn changed(v: &ViewSpec) -> OfflineError {
    OfflineError::Backend(format!(
        "feature view `{}`: its table {} changed while it was read; run the command again",
        v.name, v.location
    ))
}

/// One stream of pass 2: rows `start..start + count` of pass 1's order. Returns,
/// per feature, the values of the rows in `sources` (ascending) that fall in it;
/// `None` when the stream is not the one pass 1 read (the table changed).
async fn gather_stream(
    mut stream: BatchStream,
    start: usize,
    count: usize,
    sources: &[u32],
    features: &[String],
    types: &[DataType],
) -> Result<Option<Vec<Vec<ArrayRef>>>, OfflineError> {
    let mut out: Vec<Vec<ArrayRef>> = vec![Vec::new(); features.len()];
    let mut at = start;
    let mut next = sources.partition_point(|g| (*g as usize) < start);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let end = at + batch.num_rows();
        if end > start + count {
            return Ok(None);
        }
        let stop = next + sources[next..].partition_point(|g| (*g as usize) < end);
        if stop > next {
            let local = UInt32Array::from_iter_values(sources[next..stop].iter().map(|g| *g - at as u32));
            for ((pieces, name), t) in out.iter_mut().zip(features).zip(types) {
                let Some(col) = batch.column_by_name(name) else { return Ok(None) };
                let piece = take(col.as_ref(), &local, None)?;
                pieces.push(if piece.data_type() == t { piece } else { cast(&piece, t)? });
            }
        }
        next = stop;
        at = end;
    }
    Ok((at == start + count).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let names = StringArray::from_iter_values(values.clone().map(|v| format!("v{v}")));
        RecordBatch::try_from_iter([
            ("x", Arc::new(Int64Array::from_iter_values(values)) as ArrayRef),
            ("name", Arc::new(names) as ArrayRef),
        ])
        .unwrap()
    }

    fn stream(batches: Vec<RecordBatch>) -> BatchStream {
        futures::stream::iter(batches.into_iter().map(Ok)).boxed()
    }

    /// Pass 2 keeps exactly the rows the match chose, across batch boundaries and
    /// from a stream that starts after others; a stream that is not the one pass 1
    /// read (more or fewer rows) is reported, never mixed in.
    #[tokio::test]
    async fn the_second_pass_keeps_the_chosen_rows_and_notices_a_changed_table() {
        let features = vec!["x".to_string(), "name".to_string()];
        let types = vec![DataType::Int64, DataType::Utf8];
        // This stream holds rows 100..110 of pass 1's order, in two batches.
        let sources = [3u32, 100, 100, 104, 105, 109, 200];
        let got = gather_stream(stream(vec![batch(0..5), batch(5..10)]), 100, 10, &sources, &features, &types)
            .await
            .unwrap()
            .expect("the same rows");
        let x = concat(&got[0].iter().map(|a| a.as_ref()).collect::<Vec<_>>()).unwrap();
        assert_eq!(x.as_ref(), &Int64Array::from(vec![0, 0, 4, 5, 9]) as &dyn Array);
        let names = concat(&got[1].iter().map(|a| a.as_ref()).collect::<Vec<_>>()).unwrap();
        assert_eq!(names.as_ref(), &StringArray::from(vec!["v0", "v0", "v4", "v5", "v9"]) as &dyn Array);

        let longer = gather_stream(stream(vec![batch(0..11)]), 100, 10, &sources, &features, &types).await.unwrap();
        assert!(longer.is_none(), "a stream with more rows than pass 1 saw");
        let shorter = gather_stream(stream(vec![batch(0..9)]), 100, 10, &sources, &features, &types).await.unwrap();
        assert!(shorter.is_none(), "a stream with fewer rows than pass 1 saw");
    }
}
