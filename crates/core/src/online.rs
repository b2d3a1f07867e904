//! Materialization (offline -> online) and online reads, over any [`OnlineStore`].

use std::path::Path;

use amora_offline::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use amora_offline::arrow::compute::cast;
use amora_offline::arrow::datatypes::{DataType, TimeUnit};
use amora_offline::Warehouse;
use amora_online::{OnlineStore, ViewRead, WriteRow};
use amora_proto::online::{serialize_entity_key, value::Val, KeyValue, Value};
use amora_proto::RegistryFile;
use futures::StreamExt;

use crate::CoreError;

/// Where online values go: the store, the project, the entity-key serialization version.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub store: &'a dyn OnlineStore,
    pub project: &'a str,
    pub version: u32,
}

/// How many rows go to the online store per pipelined batch.
pub const WRITE_BATCH: usize = 10_000;

/// A feature view as materialization and online reads need it.
#[derive(Debug, Clone)]
pub struct OnlineView {
    pub name: String,
    pub join_keys: Vec<(String, i32)>,
    pub features: Vec<(String, i32)>,
    pub event_timestamp: String,
    pub created_timestamp: Option<String>,
    pub ttl_seconds: u64,
    pub location: String,
    pub online: bool,
    /// `max(end_time)` of the recorded materialization intervals (microseconds).
    pub materialized_until: Option<i64>,
}

/// The project's feature views, from the registry.
pub fn online_views(file: &RegistryFile, project: &str, root: &Path) -> Result<Vec<OnlineView>, CoreError> {
    let objects = amora_registry::current_objects(file, project)?;
    let mut out = Vec::new();
    for v in objects.feature_views.values() {
        let (Some(spec), meta) = (v.spec.as_ref(), v.meta.as_ref()) else { continue };
        let Some(source) = &spec.batch_source else { continue };
        let location = crate::file_location(source, root).unwrap_or_default();
        let until = meta
            .into_iter()
            .flat_map(|m| m.materialization_intervals.iter())
            .filter_map(|i| i.end_time)
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
            .max();
        out.push(OnlineView {
            name: spec.name.clone(),
            join_keys: spec.entity_columns.iter().map(|c| (c.name.clone(), c.value_type)).collect(),
            features: spec.features.iter().map(|f| (f.name.clone(), f.value_type)).collect(),
            event_timestamp: source.timestamp_field.clone(),
            created_timestamp: Some(source.created_timestamp_column.clone()).filter(|c| !c.is_empty()),
            ttl_seconds: spec.ttl.map_or(0, |d| u64::try_from(d.seconds).unwrap_or(0)),
            location,
            online: spec.online && !spec.disabled,
            materialized_until: until,
        });
    }
    Ok(out)
}

fn invalid(m: String) -> CoreError {
    CoreError::Invalid(m)
}

/// Arrow column -> serialized `feast.types.Value` per row, by Feast value type.
fn encode_values(col: &ArrayRef, value_type: i32) -> Result<Vec<Vec<u8>>, CoreError> {
    let n = col.len();
    let enc = |v: Option<Val>| prost::Message::encode_to_vec(&Value { val: v });
    let c = |t: DataType| cast(col, &t).map_err(|e| invalid(e.to_string()));
    macro_rules! each {
        ($arr:ty, $t:expr, $f:expr) => {{
            let a = c($t)?;
            let a = a.as_any().downcast_ref::<$arr>().expect("cast");
            (0..n).map(|i| enc(a.is_valid(i).then(|| $f(a.value(i))))).collect()
        }};
    }
    Ok(match value_type {
        1 => each!(BinaryArray, DataType::Binary, |v: &[u8]| Val::BytesVal(v.to_vec())),
        2 => each!(StringArray, DataType::Utf8, |v: &str| Val::StringVal(v.to_string())),
        3 => each!(Int32Array, DataType::Int32, Val::Int32Val),
        4 => each!(Int64Array, DataType::Int64, Val::Int64Val),
        5 => each!(Float64Array, DataType::Float64, Val::DoubleVal),
        6 => each!(Float32Array, DataType::Float32, Val::FloatVal),
        7 => each!(BooleanArray, DataType::Boolean, Val::BoolVal),
        8 => each!(
            TimestampMicrosecondArray,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            |v: i64| Val::UnixTimestampVal(v.div_euclid(1_000_000))
        ),
        other => {
            return Err(invalid(format!(
                "feature type {} cannot be materialized yet",
                amora_proto::value_type_names::value_type_name(other)
            )))
        }
    })
}

fn key_values(col: &ArrayRef, value_type: i32) -> Result<Vec<Option<KeyValue>>, CoreError> {
    let n = col.len();
    let c = |t: DataType| cast(col, &t).map_err(|e| invalid(e.to_string()));
    Ok(match value_type {
        2 => {
            let a = c(DataType::Utf8)?;
            let a = a.as_any().downcast_ref::<StringArray>().expect("cast");
            (0..n).map(|i| a.is_valid(i).then(|| KeyValue::String(a.value(i).to_string()))).collect()
        }
        3 => {
            let a = c(DataType::Int32)?;
            let a = a.as_any().downcast_ref::<Int32Array>().expect("cast");
            (0..n).map(|i| a.is_valid(i).then(|| KeyValue::Int32(a.value(i)))).collect()
        }
        1 => {
            let a = c(DataType::Binary)?;
            let a = a.as_any().downcast_ref::<BinaryArray>().expect("cast");
            (0..n).map(|i| a.is_valid(i).then(|| KeyValue::Bytes(a.value(i).to_vec()))).collect()
        }
        _ => {
            let a = c(DataType::Int64)?;
            let a = a.as_any().downcast_ref::<Int64Array>().expect("cast");
            (0..n).map(|i| a.is_valid(i).then(|| KeyValue::Int64(a.value(i)))).collect()
        }
    })
}

/// Converts a batch of deduplicated rows into online rows.
fn to_rows(batch: &RecordBatch, view: &OnlineView, version: u32) -> Result<Vec<WriteRow>, CoreError> {
    let keys: Vec<Vec<Option<KeyValue>>> = view
        .join_keys
        .iter()
        .map(|(k, t)| key_values(batch.column_by_name(k).expect("selected"), *t))
        .collect::<Result<_, _>>()?;
    let ts = cast(
        batch.column_by_name(&view.event_timestamp).expect("selected"),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
    .map_err(|e| invalid(e.to_string()))?;
    let ts = ts.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("cast");
    let values: Vec<Vec<Vec<u8>>> = view
        .features
        .iter()
        .map(|(f, t)| encode_values(batch.column_by_name(f).expect("selected"), *t))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    'rows: for i in 0..batch.num_rows() {
        let mut pairs = Vec::with_capacity(keys.len());
        for (k, col) in view.join_keys.iter().zip(&keys) {
            match &col[i] {
                Some(v) => pairs.push((k.0.as_str(), v.clone())),
                None => continue 'rows, // a null key is never served
            }
        }
        out.push(WriteRow {
            entity_key: serialize_entity_key(&pairs, version),
            event_ts: ts.value(i),
            values: values.iter().map(|v| v[i].clone()).collect(),
        });
    }
    Ok(out)
}

/// Writes the latest row per entity with `start <= event_ts <= end` of `view` to
/// the online store, streamed from the offline engine in batches. Returns the rows written.
pub async fn materialize_view(
    warehouse: &Warehouse,
    target: Target<'_>,
    view: &OnlineView,
    (start, end): (i64, i64),
    on_progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<u64, CoreError> {
    let Target { store, project, version } = target;
    use amora_offline::datafusion_prelude::{ident, lit, ParquetReadOptions, ScalarValue};
    let ctx = warehouse.context();
    let df = ctx
        .read_parquet(view.location.as_str(), ParquetReadOptions::default())
        .await
        .map_err(|e| invalid(format!("feature view `{}`: cannot read its table {}: {e}", view.name, view.location)))?;
    let ts_type = df
        .schema()
        .field_with_unqualified_name(&view.event_timestamp)
        .map_err(|_| {
            invalid(format!("feature view `{}`: its table has no column `{}`", view.name, view.event_timestamp))
        })?
        .data_type()
        .clone();
    let at = |micros: i64| -> Result<_, CoreError> {
        let s = ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()))
            .cast_to(&ts_type)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(lit(s))
    };
    let mut cols: Vec<&str> = view.join_keys.iter().map(|k| k.0.as_str()).collect();
    cols.push(&view.event_timestamp);
    cols.extend(view.created_timestamp.as_deref());
    cols.extend(view.features.iter().map(|f| f.0.as_str()));
    let (lo, hi) = (at(start)?, at(end)?);
    let df = df
        .select(cols.iter().map(|c| ident(*c)).collect::<Vec<_>>())
        .and_then(|d| d.filter(ident(&view.event_timestamp).gt_eq(lo)))
        .and_then(|d| d.filter(ident(&view.event_timestamp).lt_eq(hi)))
        .map_err(|e| invalid(e.to_string()))?;
    // The latest row per entity, computed in the engine.
    let table = format!("__amora_materialize_{}", view.name);
    let _ = ctx.deregister_table(table.as_str());
    ctx.register_table(table.as_str(), df.into_view()).map_err(|e| invalid(e.to_string()))?;
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut order = vec![format!("{} DESC", q(&view.event_timestamp))];
    if let Some(c) = &view.created_timestamp {
        order.push(format!("{} DESC NULLS LAST", q(c)));
    }
    let sql = format!(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {}) AS __amora_rn FROM {}) WHERE __amora_rn = 1",
        view.join_keys.iter().map(|k| q(&k.0)).collect::<Vec<_>>().join(", "),
        order.join(", "),
        q(&table)
    );
    let mut stream = ctx
        .sql(&sql)
        .await
        .map_err(|e| invalid(e.to_string()))?
        .execute_stream()
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let names: Vec<String> = view.features.iter().map(|f| f.0.clone()).collect();
    let mut written = 0u64;
    let mut pending: Vec<WriteRow> = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| invalid(e.to_string()))?;
        pending.extend(to_rows(&batch, view, version)?);
        while pending.len() >= WRITE_BATCH {
            let rest = pending.split_off(WRITE_BATCH);
            store.write(project, &view.name, &names, &pending).map_err(CoreError::Online)?;
            written += pending.len() as u64;
            on_progress(&view.name, written);
            pending = rest;
        }
    }
    if !pending.is_empty() {
        store.write(project, &view.name, &names, &pending).map_err(CoreError::Online)?;
        written += pending.len() as u64;
        on_progress(&view.name, written);
    }
    let _ = ctx.deregister_table(table.as_str());
    Ok(written)
}

/// Online read status, as Feast names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Status {
    #[serde(rename = "PRESENT")]
    Present,
    #[serde(rename = "NOT_FOUND")]
    NotFound,
    #[serde(rename = "NULL_VALUE")]
    NullValue,
    #[serde(rename = "OUTSIDE_MAX_AGE")]
    OutsideMaxAge,
}

/// One requested feature for one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineValue {
    pub value: Option<Value>,
    pub status: Status,
    pub event_ts: Option<i64>,
}

/// A resolved online read: which views and features, keyed how. Resolve once,
/// read many times (a server caches these).
#[derive(Debug, Clone)]
pub struct OnlineRequest {
    pub names: Vec<String>,
    reads: Vec<ViewRead>,
    ttls: Vec<u64>,
    join_keys: Vec<(String, i32)>,
}

/// Resolves `features` (`view:feature`) against the registry.
pub fn resolve_online(
    file: &RegistryFile,
    project: &str,
    root: &Path,
    features: &[String],
) -> Result<OnlineRequest, CoreError> {
    let views = online_views(file, project, root)?;
    let mut reads: Vec<(ViewRead, &OnlineView)> = Vec::new();
    let mut names = Vec::new();
    for r in features {
        let (v, f) =
            r.split_once(':').ok_or_else(|| invalid(format!("feature reference `{r}` is not `view:feature`")))?;
        let view = views
            .iter()
            .find(|x| x.name == v)
            .ok_or_else(|| invalid(format!("project {project} has no feature view `{v}`")))?;
        if !view.features.iter().any(|x| x.0 == f) {
            return Err(invalid(format!("feature view `{v}` has no feature `{f}`")));
        }
        match reads.iter_mut().find(|(rd, _)| rd.view == v) {
            Some((rd, _)) => rd.features.push(f.to_string()),
            None => reads.push((ViewRead { view: v.to_string(), features: vec![f.to_string()] }, view)),
        }
        names.push(f.to_string());
    }
    let first = reads.first().ok_or_else(|| invalid("no features requested".into()))?;
    let join_keys = first.1.join_keys.clone();
    for (_, v) in &reads {
        let mut a: Vec<&String> = v.join_keys.iter().map(|k| &k.0).collect();
        let mut b: Vec<&String> = join_keys.iter().map(|k| &k.0).collect();
        a.sort();
        b.sort();
        if a != b {
            return Err(invalid(format!(
                "feature views `{}` and `{}` have different join keys; read them separately",
                first.0.view, v.name
            )));
        }
    }
    Ok(OnlineRequest {
        names,
        ttls: reads.iter().map(|(_, v)| v.ttl_seconds).collect(),
        reads: reads.into_iter().map(|(r, _)| r).collect(),
        join_keys,
    })
}

/// Reads a resolved request for entity rows given as join key -> value strings,
/// typed by the registry. One row of values per entity, in `request.names` order.
pub fn read_online(
    target: Target<'_>,
    request: &OnlineRequest,
    entities: &[Vec<(String, String)>],
    now_micros: i64,
) -> Result<Vec<Vec<OnlineValue>>, CoreError> {
    let Target { store, project, version } = target;
    let mut keys = Vec::with_capacity(entities.len());
    for e in entities {
        let mut pairs = Vec::new();
        for (k, t) in &request.join_keys {
            let raw = e
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| invalid(format!("missing entity value for join key `{k}`")))?;
            let v = match t {
                3 => KeyValue::Int32(raw.parse().map_err(|_| invalid(format!("`{k}` must be an int32, got `{raw}`")))?),
                4 => KeyValue::Int64(raw.parse().map_err(|_| invalid(format!("`{k}` must be an int64, got `{raw}`")))?),
                1 => KeyValue::Bytes(raw.as_bytes().to_vec()),
                _ => KeyValue::String(raw.to_string()),
            };
            pairs.push((k.as_str(), v));
        }
        keys.push(serialize_entity_key(&pairs, version));
    }
    let cells = store.read(project, &keys, &request.reads).map_err(CoreError::Online)?;
    Ok(cells
        .into_iter()
        .map(|per_view| {
            per_view
                .into_iter()
                .zip(&request.ttls)
                .flat_map(|(cells, ttl)| {
                    cells.into_iter().map(move |c| {
                        let value: Option<Value> =
                            c.found.then(|| prost::Message::decode(c.value.as_slice()).ok()).flatten();
                        let status = match (&value, c.event_ts) {
                            (None, _) => Status::NotFound,
                            (Some(Value { val: None }), _) => Status::NullValue,
                            (Some(_), Some(ts)) if *ttl > 0 && ts < now_micros - *ttl as i64 * 1_000_000 => {
                                Status::OutsideMaxAge
                            }
                            _ => Status::Present,
                        };
                        OnlineValue { value, status, event_ts: c.event_ts }
                    })
                })
                .collect()
        })
        .collect())
}

/// Resolves and reads in one call: feature names and one row of values per entity.
pub fn get_online_features(
    file: &RegistryFile,
    root: &Path,
    target: Target<'_>,
    features: &[String],
    entities: &[Vec<(String, String)>],
    now_micros: i64,
) -> Result<(Vec<String>, Vec<Vec<OnlineValue>>), CoreError> {
    let request = resolve_online(file, target.project, root, features)?;
    let rows = read_online(target, &request, entities, now_micros)?;
    Ok((request.names, rows))
}

/// A `feast.types.Value` as JSON.
pub fn value_json(v: &Option<Value>) -> serde_json::Value {
    use serde_json::json;
    match v.as_ref().and_then(|v| v.val.as_ref()) {
        None => serde_json::Value::Null,
        Some(Val::StringVal(s)) => json!(s),
        Some(Val::Int64Val(i)) | Some(Val::UnixTimestampVal(i)) => json!(i),
        Some(Val::Int32Val(i)) => json!(i),
        Some(Val::DoubleVal(f)) => json!(f),
        Some(Val::FloatVal(f)) => json!(f),
        Some(Val::BoolVal(b)) => json!(b),
        Some(Val::BytesVal(b)) => json!(b),
        Some(Val::NullVal(_)) => serde_json::Value::Null,
    }
}
