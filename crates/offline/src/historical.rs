//! `get_historical_features` on the embedded engine: read each feature view's
//! table (only the needed columns and time range, pushed down into the Parquet
//! scan), then run the native as-of join ([`crate::pit`]) per view, in parallel.

use std::sync::Arc;

use datafusion::arrow::array::{make_array, new_null_array, Array, ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::{cast, concat, kernels::aggregate, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::{ident, lit, ParquetReadOptions};
use datafusion::scalar::ScalarValue;

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
) -> Result<RecordBatch, OfflineError> {
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

    let jobs = views.iter().map(|v| join_view(warehouse, entities, &entity_ts, bounds, v));
    let joined = futures::future::try_join_all(jobs).await?;

    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = entities.columns().to_vec();
    fields[ts_idx] = Field::new(timestamp_column, utc_micros(), true);
    columns[ts_idx] = Arc::new(entity_ts.clone());
    let mut name = names.into_iter();
    for cols in joined {
        for c in cols {
            fields.push(Field::new(name.next().expect("a name per feature"), c.data_type().clone(), true));
            columns.push(c);
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

async fn join_view(
    warehouse: &Warehouse,
    entities: &RecordBatch,
    entity_ts: &TimestampMicrosecondArray,
    bounds: (Option<i64>, Option<i64>),
    v: &ViewSpec,
) -> Result<Vec<ArrayRef>, OfflineError> {
    let t0 = std::time::Instant::now();
    let (schema, batches) = read_view(warehouse, v, bounds).await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let timings = std::env::var_os("AMORA_TIMINGS").is_some();
    if timings {
        eprintln!("timing: view {}: read {rows} rows in {:.3}s", v.name, t0.elapsed().as_secs_f64());
    }
    let t0 = std::time::Instant::now();
    // Only the key and timestamp columns are made contiguous.
    let column = |i: usize| -> Result<ArrayRef, OfflineError> {
        let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        match parts.as_slice() {
            [] => Err(user(format!("feature view `{}`: no rows in the requested time range", v.name))),
            [one] => Ok(Arc::new(make_array(one.to_data()))),
            _ => Ok(concat(&parts)?),
        }
    };
    let first_feature = schema.fields().len() - v.features.len();
    if rows == 0 {
        let n = entities.num_rows();
        return Ok(schema.fields()[first_feature..].iter().map(|f| new_null_array(f.data_type(), n)).collect());
    }
    let feature_keys: Vec<ArrayRef> = (0..v.join_keys.len()).map(column).collect::<Result<_, _>>()?;
    let mut entity_keys = Vec::new();
    for (k, fk) in v.join_keys.iter().zip(&feature_keys) {
        let col = entities.column_by_name(k).expect("checked");
        let compatible = col.data_type() == fk.data_type()
            || (col.data_type().is_integer() && fk.data_type().is_integer())
            || (is_string(col.data_type()) && is_string(fk.data_type()));
        if !compatible {
            return Err(user(format!(
                "entity column `{k}` has type {} but feature view `{}` joins on {}",
                col.data_type(),
                v.name,
                fk.data_type()
            )));
        }
        entity_keys.push(cast(col, fk.data_type())?);
    }
    let ts = to_utc_micros(&column(v.join_keys.len())?, &format!("`{}` of view `{}`", v.event_timestamp, v.name))?;
    let created = match &v.created_timestamp {
        Some(c) => Some(to_utc_micros(&column(v.join_keys.len() + 1)?, &format!("`{c}` of view `{}`", v.name))?),
        None => None,
    };
    let ttl = (v.ttl_seconds > 0)
        .then(|| i64::try_from(v.ttl_seconds).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000));
    let idx = crate::pit::asof_indices(&entity_keys, entity_ts, &feature_keys, &ts, created.as_ref(), ttl)?;
    if timings {
        eprintln!("timing: view {}: as-of match {:.3}s", v.name, t0.elapsed().as_secs_f64());
    }
    let t0 = std::time::Instant::now();
    // Each feature column is made contiguous and gathered by the indices, one column
    // at a time; its scan batches are dropped as it goes, so the view is never held
    // twice. (Concatenate-then-take took half the time of interleaving
    // from the batches.)
    let mut parts: Vec<Vec<ArrayRef>> =
        (first_feature..schema.fields().len()).map(|i| batches.iter().map(|b| b.column(i).clone()).collect()).collect();
    drop(batches);
    let mut out = Vec::with_capacity(parts.len());
    for column in &mut parts {
        let column = std::mem::take(column);
        let whole = match column.as_slice() {
            [one] => one.clone(),
            _ => concat(&column.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?,
        };
        drop(column);
        out.push(take(whole.as_ref(), &idx, None)?);
    }
    if timings {
        eprintln!("timing: view {}: take {:.3}s", v.name, t0.elapsed().as_secs_f64());
    }
    Ok(out)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The view's table: join keys, event timestamp, created timestamp (if any) and the
/// features, in that order, for rows in `[min(entity_ts) - ttl, max(entity_ts)]`, as
/// the scan's batches (not concatenated: feature columns are only ever gathered from
/// them). A local table is read page by page ([`crate::scan`]: a thread per core,
/// no column chunk held whole); anything else through DataFusion.
async fn read_view(
    warehouse: &Warehouse,
    v: &ViewSpec,
    bounds: (Option<i64>, Option<i64>),
) -> Result<(Arc<Schema>, Vec<RecordBatch>), OfflineError> {
    let mut cols: Vec<&String> = v.join_keys.iter().collect();
    cols.push(&v.event_timestamp);
    cols.extend(v.created_timestamp.iter());
    cols.extend(v.features.iter());
    let ttl_micros = i64::try_from(v.ttl_seconds).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000);
    let window = match bounds {
        (Some(lo), Some(hi)) => Some((if v.ttl_seconds > 0 { lo.saturating_sub(ttl_micros) } else { i64::MIN }, hi)),
        _ => None,
    };
    if let Some(files) = crate::scan::local_files(&v.location).filter(|f| !f.is_empty()) {
        return read_local(v, files, &cols, window).await;
    }
    let ctx = warehouse.context();
    let df = ctx
        .read_parquet(v.location.as_str(), ParquetReadOptions::default())
        .await
        .map_err(|e| user(format!("feature view `{}`: cannot read its table {}: {e}", v.name, v.location)))?;
    for c in &cols {
        if df.schema().field_with_unqualified_name(c).is_err() {
            return Err(user(format!("feature view `{}`: its table {} has no column `{c}`", v.name, v.location)));
        }
    }
    let ts_type = df.schema().field_with_unqualified_name(&v.event_timestamp).expect("checked").data_type().clone();
    let at = |micros: i64| -> Result<datafusion::prelude::Expr, OfflineError> {
        let s = ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())).cast_to(&ts_type)?;
        Ok(lit(s))
    };
    let mut df = df.select(cols.iter().map(|c| ident(c.as_str())).collect::<Vec<_>>())?;
    if let Some((lo, hi)) = window {
        df = df.filter(ident(&v.event_timestamp).lt_eq(at(hi)?))?;
        if lo > i64::MIN {
            df = df.filter(ident(&v.event_timestamp).gt_eq(at(lo)?))?;
        }
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await?))
}

/// [`read_view`] for local Parquet files: the scan's streams read at once, and each
/// batch's columns put in `cols`' order.
async fn read_local(
    v: &ViewSpec,
    files: Vec<std::path::PathBuf>,
    cols: &[&String],
    window: Option<(i64, i64)>,
) -> Result<(Arc<Schema>, Vec<RecordBatch>), OfflineError> {
    use futures::TryStreamExt;
    let file_schema = crate::scan::file_schema(&files[0])?;
    let mut fields = Vec::with_capacity(cols.len());
    for c in cols {
        let f = file_schema.field_with_name(c).map_err(|_| {
            user(format!("feature view `{}`: its table {} has no column `{c}`", v.name, v.location))
        })?;
        fields.push(f.clone());
    }
    let schema = Arc::new(Schema::new(fields));
    let spec = crate::ScanSpec {
        view: v.name.clone(),
        location: v.location.clone(),
        join_keys: v.join_keys.clone(),
        event_timestamp: v.event_timestamp.clone(),
        created_timestamp: v.created_timestamp.clone(),
        features: v.features.clone(),
    };
    let streams = crate::scan::scan_files(files, &spec, window.unwrap_or((i64::MIN, i64::MAX)))?;
    let parts = futures::future::try_join_all(streams.into_iter().map(|s| s.try_collect::<Vec<_>>())).await?;
    let mut batches = Vec::new();
    for b in parts.into_iter().flatten() {
        let columns = cols
            .iter()
            .map(|c| b.column_by_name(c).cloned().ok_or_else(|| user(format!("a file of {} has no `{c}`", v.location))))
            .collect::<Result<Vec<_>, _>>()?;
        let columns = columns
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
            .collect::<Result<Vec<_>, _>>()?;
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok((schema, batches))
}
