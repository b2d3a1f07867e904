//! [`BigQueryStore`]: the `OfflineStore` on BigQuery.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use amora_gauth::Credentials;
use amora_model::{Materialization, Model, Source};
use amora_offline::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Array, Int64Array, RecordBatch,
    StringBuilder, TimestampMicrosecondArray,
};
use amora_offline::arrow::compute::{cast, concat_batches, sort_to_indices, take};
use amora_offline::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use amora_offline::historical::ViewSpec;
use amora_offline::store::{BatchStream, Dialect, OfflineStore, ScanSpec, WindowScan};
use amora_offline::{OfflineError, TableStats, Warehouse};
use base64::Engine as _;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::Value;

use crate::rest::{BqError, Rest};
use crate::sql::{self, Param, PitView, TableRef, ROW_ID};
use crate::storage::StorageRead;

/// How results are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadApi {
    /// The Storage Read API, falling back to REST paging when it is unreachable.
    #[default]
    Storage,
    /// REST paging only (slow: JSON rows).
    Rest,
}

/// Where and how to reach BigQuery.
#[derive(Debug, Clone, Default)]
pub struct BigQueryConfig {
    pub project_id: String,
    pub dataset: String,
    pub location: Option<String>,
    /// REST endpoint; `None`: `https://bigquery.googleapis.com`.
    pub endpoint: Option<String>,
    /// Storage Read endpoint; `None`: `https://bigquerystorage.googleapis.com`,
    /// or none at all (REST paging) when only the REST endpoint is overridden.
    pub storage_endpoint: Option<String>,
    /// A key file; `None`: the environment (see `amora-gauth`).
    pub credentials: Option<PathBuf>,
    pub read_api: ReadApi,
}

fn url(hostport: &str) -> String {
    if hostport.contains("://") {
        hostport.trim_end_matches('/').to_string()
    } else {
        format!("http://{}", hostport.trim_end_matches('/'))
    }
}

pub struct BigQueryStore {
    rest: Arc<Rest>,
    storage: Option<StorageRead>,
    pub dataset: String,
    read_api: ReadApi,
    dataset_ready: AtomicBool,
    /// A source file is loaded in chunks of about this much Arrow data.
    pub load_chunk_bytes: usize,
}

fn backend(e: BqError) -> OfflineError {
    match e {
        BqError::Query { message } => OfflineError::Sql(format!("BigQuery: {message}")),
        other => OfflineError::Backend(other.to_string()),
    }
}

fn contract(m: impl Into<String>) -> OfflineError {
    OfflineError::Contract(m.into())
}

fn sql_err(e: sql::SqlError) -> OfflineError {
    OfflineError::Contract(e.0)
}

impl BigQueryStore {
    pub fn new(config: &BigQueryConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<BigQueryStore, OfflineError> {
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| env("BIGQUERY_EMULATOR_HOST").filter(|h| !h.is_empty()))
            .map(|h| url(&h));
        let storage = config
            .storage_endpoint
            .clone()
            .or_else(|| env("BIGQUERY_STORAGE_EMULATOR_HOST").filter(|h| !h.is_empty()))
            .map(|h| url(&h));
        let emulator = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        let credentials = Arc::new(if emulator {
            Credentials::anonymous()
        } else {
            Credentials::discover(config.credentials.as_deref(), env)
                .map_err(|e| OfflineError::Backend(e.to_string()))?
        });
        let storage = match (storage, &endpoint) {
            (Some(s), _) => Some(s),
            (None, None) => Some("https://bigquerystorage.googleapis.com".to_string()),
            (None, Some(_)) => None,
        };
        sql::TableRef::new(&config.project_id, &config.dataset, "t").map_err(sql_err)?;
        let rest = Rest::new(
            endpoint.as_deref().unwrap_or("https://bigquery.googleapis.com"),
            &config.project_id,
            config.location.clone(),
            credentials.clone(),
        );
        Ok(BigQueryStore {
            rest: Arc::new(rest),
            storage: storage.map(|s| StorageRead::new(&s, credentials)),
            dataset: config.dataset.clone(),
            read_api: config.read_api,
            dataset_ready: AtomicBool::new(false),
            load_chunk_bytes: LOAD_CHUNK_BYTES,
        })
    }

    fn table(&self, name: &str) -> Result<TableRef, OfflineError> {
        TableRef::new(&self.rest.project, &self.dataset, name).map_err(sql_err)
    }

    fn scratch(&self, what: &str) -> Result<TableRef, OfflineError> {
        self.table(&format!("amora_tmp_{what}_{}", uuid::Uuid::new_v4().simple()))
    }

    /// Runs a blocking REST call off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Rest) -> Result<T, BqError> + Send + 'static,
    ) -> Result<T, OfflineError> {
        let rest = self.rest.clone();
        tokio::task::spawn_blocking(move || f(&rest))
            .await
            .map_err(|e| OfflineError::Backend(format!("a BigQuery call failed: {e}")))?
            .map_err(backend)
    }

    async fn ensure_dataset(&self) -> Result<(), OfflineError> {
        if !self.dataset_ready.load(Ordering::Relaxed) {
            let d = self.dataset.clone();
            self.blocking(move |r| r.ensure_dataset(&d)).await?;
            self.dataset_ready.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn run(&self, statement: String, params: Vec<Param>) -> Result<crate::rest::Done, OfflineError> {
        self.ensure_dataset().await?;
        let d = self.dataset.clone();
        self.blocking(move |r| r.run(&statement, &params, Some(&d))).await
    }

    async fn drop_table(&self, t: &TableRef) {
        let t = t.clone();
        if let Err(e) = self.blocking(move |r| r.delete_table(&t)).await {
            tracing::warn!("could not delete a scratch table: {e}");
        }
    }

    /// A table's rows: the Storage Read API, or REST paging (also when the former is unreachable).
    async fn read(&self, t: &TableRef) -> Result<Vec<RecordBatch>, OfflineError> {
        if let (ReadApi::Storage, Some(s)) = (self.read_api, &self.storage) {
            match s.read_table(t, &[]).await {
                Ok(b) => return Ok(b),
                Err(BqError::Unreachable { endpoint, message, .. }) => tracing::warn!(
                    "the Storage Read API at {endpoint} is unreachable ({message}); reading {t} through REST paging"
                ),
                Err(e) => return Err(backend(e)),
            }
        }
        let t2 = t.clone();
        let (fields, rows) = self.blocking(move |r| r.list_rows(&t2)).await?;
        Ok(vec![rows_to_batch(&fields, &rows)?])
    }

    /// Runs `statement` (which creates `result`), reads `result` and drops it.
    async fn run_and_read(
        &self,
        statement: String,
        params: Vec<Param>,
        result: &TableRef,
    ) -> Result<Vec<RecordBatch>, OfflineError> {
        let out = async {
            self.run(statement, params).await?;
            self.read(result).await
        }
        .await;
        self.drop_table(result).await;
        out
    }

    /// Uploads a batch as a table (replacing it, or appended with `append`) with a Parquet load job.
    async fn upload(&self, t: &TableRef, batch: RecordBatch, append: bool) -> Result<(), OfflineError> {
        self.ensure_dataset().await?;
        let schema: Vec<(String, String)> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| {
                Ok((
                    f.name().clone(),
                    load_type(f.data_type())
                        .ok_or_else(|| {
                            contract(format!(
                                "column `{}` has type {}, which amora cannot load into BigQuery",
                                f.name(),
                                f.data_type()
                            ))
                        })?
                        .to_string(),
                ))
            })
            .collect::<Result<_, OfflineError>>()?;
        let bytes = parquet_bytes(batch)?;
        let t = t.clone();
        self.blocking(move |r| r.load_parquet(&t, &schema, bytes, append)).await?;
        Ok(())
    }

    fn view_table(&self, view: &str, location: &str) -> Result<TableRef, OfflineError> {
        TableRef::parse(location).map_err(|_| {
            contract(format!(
                "feature view `{view}` reads `{location}`, not a BigQuery table; run `amora feature-store apply` with the bigquery offline store so its source points at the model's table"
            ))
        })
    }
}

/// The default of [`BigQueryStore::load_chunk_bytes`].
const LOAD_CHUNK_BYTES: usize = 64 << 20;

/// The BigQuery type a column is loaded as.
fn load_type(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING",
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "INT64",
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => "INT64",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "FLOAT64",
        DataType::Boolean => "BOOL",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES",
        _ => return None,
    })
}

/// One Parquet file in memory; timestamps as UTC microseconds, strings plain.
fn parquet_bytes(batch: RecordBatch) -> Result<Vec<u8>, OfflineError> {
    use datafusion::parquet::arrow::ArrowWriter;
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                DataType::UInt32 => DataType::Int64,
                DataType::Float16 => DataType::Float32,
                DataType::Date64 => DataType::Date32,
                t => t.clone(),
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns: Result<Vec<ArrayRef>, _> =
        batch.columns().iter().zip(schema.fields()).map(|(c, f)| cast(c, f.data_type())).collect();
    let batch = RecordBatch::try_new(schema.clone(), columns?)?;
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, None).map_err(|e| OfflineError::Backend(e.to_string()))?;
    w.write(&batch).map_err(|e| OfflineError::Backend(e.to_string()))?;
    w.close().map_err(|e| OfflineError::Backend(e.to_string()))?;
    Ok(out)
}

fn bad_cell(field: &str, v: &Value) -> OfflineError {
    OfflineError::Backend(format!("BigQuery returned {v} for column `{field}`"))
}

/// A column of numbers sent as JSON strings (BigQuery's REST rows), nulls kept.
fn parse_all<'v, T: std::str::FromStr>(
    cells: impl Iterator<Item = &'v Value>,
    field: &str,
) -> Result<Vec<Option<T>>, OfflineError> {
    cells
        .map(|v| match v.as_str() {
            Some(s) => s.parse().map(Some).map_err(|_| bad_cell(field, v)),
            None => Ok(None),
        })
        .collect()
}

/// REST rows (`tabledata.list`, with int64 timestamps) as one Arrow batch.
fn rows_to_batch(fields: &[(String, String)], rows: &[Vec<Value>]) -> Result<RecordBatch, OfflineError> {
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut out_fields = Vec::new();
    for (i, (name, ty)) in fields.iter().enumerate() {
        let cells = rows.iter().map(|r| r.get(i).unwrap_or(&Value::Null));
        let text = |v: &Value| v.as_str().map(String::from);
        let (array, dt): (ArrayRef, DataType) = match ty.as_str() {
            "INTEGER" | "INT64" => (Arc::new(Int64Array::from(parse_all::<i64>(cells, name)?)), DataType::Int64),
            "FLOAT" | "FLOAT64" | "NUMERIC" | "BIGNUMERIC" => {
                (Arc::new(Float64Array::from(parse_all::<f64>(cells, name)?)), DataType::Float64)
            }
            "BOOLEAN" | "BOOL" => {
                let mut b = BooleanBuilder::new();
                for v in cells {
                    b.append_option(text(v).map(|s| s.eq_ignore_ascii_case("true")));
                }
                (Arc::new(b.finish()), DataType::Boolean)
            }
            "TIMESTAMP" => (
                Arc::new(TimestampMicrosecondArray::from(parse_all::<i64>(cells, name)?).with_timezone("UTC")),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            "DATE" => {
                let mut b = Date32Builder::new();
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                for v in cells {
                    b.append_option(match text(v) {
                        Some(s) => {
                            let d = chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| bad_cell(name, v))?;
                            Some((d - epoch).num_days() as i32)
                        }
                        None => None,
                    });
                }
                (Arc::new(b.finish()), DataType::Date32)
            }
            "BYTES" => {
                let mut b = BinaryBuilder::new();
                for v in cells {
                    match text(v) {
                        Some(s) => b.append_value(
                            base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| bad_cell(name, v))?,
                        ),
                        None => b.append_null(),
                    }
                }
                (Arc::new(b.finish()), DataType::Binary)
            }
            _ => {
                let mut b = StringBuilder::new();
                for v in cells {
                    b.append_option(match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    });
                }
                (Arc::new(b.finish()), DataType::Utf8)
            }
        };
        arrays.push(array);
        out_fields.push(Field::new(name, dt, true));
    }
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(out_fields)),
        arrays,
        &amora_offline::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )?)
}

impl OfflineStore for BigQueryStore {
    fn describe(&self) -> String {
        format!("bigquery ({}.{})", self.rest.project, self.dataset)
    }

    fn dialect(&self) -> Dialect {
        Dialect::BigQuery
    }

    fn prepare_source<'a>(&'a self, source: &'a Source, root: &'a Path) -> BoxFuture<'a, Result<(), OfflineError>> {
        Box::pin(async move {
            let target = self.table(&source.name)?;
            if let Some(table) = source.location.strip_prefix("bigquery://") {
                // A table already in BigQuery: a view under the source's name.
                let from = TableRef::parse(table).map_err(sql_err)?;
                let cols: Result<Vec<String>, _> = source.columns.iter().map(|c| sql::ident(&c.name)).collect();
                let cols = cols.map_err(sql_err)?;
                let select = if cols.is_empty() { "*".to_string() } else { cols.join(", ") };
                let stmt = format!("CREATE OR REPLACE VIEW {} AS SELECT {select} FROM {}", target.sql(), from.sql());
                self.run(stmt, vec![]).await?;
                return Ok(());
            }
            // A file: read with the declared types and loaded in chunks (memory stays one
            // chunk) into a scratch table, which then replaces the source's table in one
            // statement: a failed load never leaves a partial source that reads as valid.
            let local = Warehouse::new(1);
            local.register_source(source, root).await?;
            let df = local.context().table(source.name.as_str()).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df.execute_stream().await?;
            let scratch = self.scratch("load")?;
            let loaded = async {
                let (mut pending, mut bytes, mut first) = (Vec::new(), 0usize, true);
                while let Some(b) = stream.next().await {
                    let b = b?;
                    bytes += b.get_array_memory_size();
                    pending.push(b);
                    if bytes >= self.load_chunk_bytes {
                        self.upload(&scratch, concat_batches(&schema, &pending)?, !first).await?;
                        (pending, bytes, first) = (Vec::new(), 0, false);
                    }
                }
                if first || !pending.is_empty() {
                    self.upload(&scratch, concat_batches(&schema, &pending)?, !first).await?;
                }
                let swap = format!("CREATE OR REPLACE TABLE {} AS SELECT * FROM {}", target.sql(), scratch.sql());
                self.run(swap, vec![]).await.map(|_| ())
            }
            .await;
            self.drop_table(&scratch).await;
            loaded
        })
    }

    fn has_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<bool, OfflineError>> {
        Box::pin(async move {
            let t = self.table(&model.name)?;
            Ok(self.blocking(move |r| r.table(&t)).await?.is_some())
        })
    }

    fn use_table<'a>(&'a self, _model: &'a Model) -> BoxFuture<'a, Result<(), OfflineError>> {
        // Model tables live in the dataset: later models read them by name.
        Box::pin(async { Ok(()) })
    }

    fn build_table<'a>(&'a self, model: &'a Model, select: &'a str) -> BoxFuture<'a, Result<TableStats, OfflineError>> {
        Box::pin(async move {
            let t = self.table(&model.name)?;
            let columns: Vec<(String, amora_model::ValueType)> =
                model.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
            // Feature tables are clustered by their entities' columns: lookups by key read less.
            let cluster: Vec<String> = model
                .feature_view
                .iter()
                .flat_map(|f| f.entities.iter())
                .filter(|e| model.column(e).is_some())
                .cloned()
                .collect();
            let stmt = sql::create_table(&t, select, &columns, model.partition_by.as_deref(), &cluster)
                .map_err(|e| OfflineError::Sql(e.0))?;
            // CREATE OR REPLACE is atomic: readers see the old table or the new one.
            self.run(stmt, vec![]).await?;
            let t2 = t.clone();
            let meta = self.blocking(move |r| r.table(&t2)).await?.unwrap_or_default();
            let num = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64()).unwrap_or(0);
            Ok(TableStats { rows: num(&meta["numRows"]), bytes: num(&meta["numBytes"]) })
        })
    }

    fn build_view<'a>(&'a self, model: &'a Model, select: &'a str) -> BoxFuture<'a, Result<(), OfflineError>> {
        Box::pin(async move {
            let t = self.table(&model.name)?;
            let stmt = if model.materialization == Materialization::Ephemeral || model.columns.is_empty() {
                format!(
                    "CREATE OR REPLACE VIEW {} AS {}",
                    t.sql(),
                    sql::translate(select).map_err(|e| OfflineError::Sql(e.0))?
                )
            } else {
                let columns: Vec<(String, amora_model::ValueType)> =
                    model.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
                sql::create_view(&t, select, &columns).map_err(|e| OfflineError::Sql(e.0))?
            };
            self.run(stmt, vec![]).await?;
            Ok(())
        })
    }

    fn query<'a>(&'a self, select: &'a str) -> BoxFuture<'a, Result<Vec<RecordBatch>, OfflineError>> {
        Box::pin(async move {
            // Small results (data tests, samples): jobs.query and getQueryResults paging.
            self.ensure_dataset().await?;
            let (d, q) = (self.dataset.clone(), select.to_string());
            let (fields, rows) = self.blocking(move |r| r.query_rows(&q, &[], Some(&d))).await?;
            Ok(vec![rows_to_batch(&fields, &rows)?])
        })
    }

    fn read_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<Vec<RecordBatch>, OfflineError>> {
        Box::pin(async move {
            let t = self.table(&model.name)?;
            self.read(&t).await
        })
    }

    fn historical<'a>(
        &'a self,
        entities: &'a RecordBatch,
        timestamp_column: &'a str,
        views: &'a [ViewSpec],
        full_feature_names: bool,
    ) -> BoxFuture<'a, Result<amora_offline::frames::TrainingSet, OfflineError>> {
        Box::pin(async move {
            let schema = entities.schema();
            let names = amora_offline::historical::output_names(&schema, views, full_feature_names)?;
            let ts_idx = schema
                .index_of(timestamp_column)
                .map_err(|_| contract(format!("the entity rows have no `{timestamp_column}` column")))?;
            let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            // Each feature as the embedded engine's table stores it (BigQuery has no INT32 or FLOAT32).
            let types: Vec<Option<DataType>> = views
                .iter()
                .flat_map(|v| {
                    (0..v.features.len()).map(|j| v.feature_types.get(j).map(|t| amora_offline::storage_type(*t)))
                })
                .collect();
            // The entity columns, the timestamp made UTC-aware: the start of the output.
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields[ts_idx] = Field::new(timestamp_column, utc.clone(), true);
            if entities.num_rows() == 0 {
                // Nothing to ask BigQuery: the empty training set, with its columns.
                let types = types.into_iter().map(|t| t.unwrap_or(DataType::Utf8));
                fields.extend(names.iter().zip(types).map(|(n, t)| Field::new(n, t, true)));
                return Ok(RecordBatch::new_empty(Arc::new(Schema::new(fields))).into());
            }
            let entity_ts = cast(entities.column(ts_idx), &utc)
                .map_err(|e| contract(format!("entity column `{timestamp_column}`: {e}")))?;
            // Upload only what the join needs: the row number, the join keys and the timestamp.
            let mut cols: Vec<String> = Vec::new();
            for v in views {
                for k in &v.join_keys {
                    if !cols.contains(k) {
                        cols.push(k.clone());
                    }
                }
            }
            let mut up_fields = vec![Field::new(ROW_ID, DataType::Int64, false)];
            let mut up_arrays: Vec<ArrayRef> =
                vec![Arc::new(Int64Array::from_iter_values(0..entities.num_rows() as i64))];
            for c in &cols {
                let i = schema.index_of(c).map_err(|_| contract(format!("the entity rows have no `{c}` column")))?;
                sql::ident(c).map_err(sql_err)?;
                up_fields.push(Field::new(c, schema.field(i).data_type().clone(), true));
                up_arrays.push(entities.column(i).clone());
            }
            let ts_name =
                if cols.contains(&timestamp_column.to_string()) { "amora_entity_ts" } else { timestamp_column };
            sql::ident(ts_name).map_err(sql_err)?;
            up_fields.push(Field::new(ts_name, utc.clone(), true));
            up_arrays.push(entity_ts.clone());
            let upload = RecordBatch::try_new(Arc::new(Schema::new(up_fields)), up_arrays)?;

            let mut pit = Vec::new();
            let mut out_names = names.iter();
            for v in views {
                pit.push(PitView {
                    table: self.view_table(&v.name, &v.location)?,
                    join_keys: v.join_keys.clone(),
                    event_timestamp: v.event_timestamp.clone(),
                    created_timestamp: v.created_timestamp.clone(),
                    ttl_seconds: v.ttl_seconds,
                    features: v
                        .features
                        .iter()
                        .map(|f| (f.clone(), out_names.next().cloned().unwrap_or_default()))
                        .collect(),
                });
            }
            let ts_arr = entity_ts.as_any().downcast_ref::<amora_offline::arrow::array::TimestampMicrosecondArray>();
            let (min, max) = ts_arr
                .map(|a| {
                    (
                        amora_offline::arrow::compute::min(a).unwrap_or(0),
                        amora_offline::arrow::compute::max(a).unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0));
            let entities_table = self.scratch("entities")?;
            let result = self.scratch("training")?;
            let stmt = sql::point_in_time(&result, &entities_table, ts_name, &pit).map_err(sql_err)?;
            let out = async {
                self.upload(&entities_table, upload, false).await?;
                self.run_and_read(stmt, vec![Param::timestamp("min_ts", min), Param::timestamp("max_ts", max)], &result)
                    .await
            }
            .await;
            self.drop_table(&entities_table).await;
            let batches = out?;
            let Some(first) = batches.first() else {
                return Err(OfflineError::Backend("BigQuery returned no rows for the training set".into()));
            };
            let joined = concat_batches(&first.schema(), &batches)?;
            // Back in the entity rows' order.
            let row = cast(
                joined.column(joined.schema().index_of(ROW_ID).map_err(|e| OfflineError::Backend(e.to_string()))?),
                &DataType::Int64,
            )?;
            let order = sort_to_indices(&row, None, None)?;
            if order.len() != entities.num_rows() {
                return Err(OfflineError::Backend(format!(
                    "BigQuery returned {} rows for {} entity rows",
                    order.len(),
                    entities.num_rows()
                )));
            }
            let mut columns: Vec<ArrayRef> = entities.columns().to_vec();
            columns[ts_idx] = entity_ts;
            for (n, want) in names.iter().zip(types) {
                let c = joined.column(joined.schema().index_of(n).map_err(|e| OfflineError::Backend(e.to_string()))?);
                let c = take(c.as_ref(), &order, None)?;
                let c = match (want, c.data_type()) {
                    (Some(t), have) if *have != t => cast(&c, &t)?,
                    (None, DataType::Utf8View | DataType::LargeUtf8) => cast(&c, &DataType::Utf8)?,
                    _ => c,
                };
                fields.push(Field::new(n, c.data_type().clone(), true));
                columns.push(c);
            }
            Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?.into())
        })
    }

    /// One load job appending to the view's table (atomic in BigQuery).
    fn append<'a>(
        &'a self,
        location: &'a str,
        _event_timestamp: &'a str,
        rows: RecordBatch,
    ) -> BoxFuture<'a, Result<u64, OfflineError>> {
        Box::pin(async move {
            let table = TableRef::parse(location)
                .map_err(|_| contract(format!("`{location}` is not a BigQuery table (project.dataset.table)")))?;
            let n = rows.num_rows() as u64;
            if n > 0 {
                self.upload(&table, rows, true).await?;
            }
            Ok(n)
        })
    }

    fn scan_window<'a>(
        &'a self,
        scan: &'a ScanSpec,
        (start, end): (i64, i64),
    ) -> BoxFuture<'a, Result<WindowScan, OfflineError>> {
        Box::pin(async move {
            let table = self.view_table(&scan.view, &scan.location)?;
            let result = self.scratch("latest")?;
            // Pushed down: BigQuery keeps only the latest row per entity in the window.
            let stmt = sql::latest_rows(
                &result,
                &table,
                &scan.join_keys,
                &scan.event_timestamp,
                scan.created_timestamp.as_deref(),
                &scan.features,
            )
            .map_err(sql_err)?;
            let batches = self
                .run_and_read(stmt, vec![Param::timestamp("start", start), Param::timestamp("end", end)], &result)
                .await?;
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            let stream: BatchStream = futures::stream::iter(batches.into_iter().map(Ok)).boxed();
            Ok(WindowScan { streams: vec![stream], latest: Some(rows) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_rows_become_typed_arrow_columns() {
        let fields = vec![
            ("k".to_string(), "STRING".to_string()),
            ("n".to_string(), "INTEGER".to_string()),
            ("x".to_string(), "FLOAT".to_string()),
            ("t".to_string(), "TIMESTAMP".to_string()),
            ("b".to_string(), "BOOLEAN".to_string()),
        ];
        let rows = vec![
            vec![
                Value::from("a"),
                Value::from("3"),
                Value::from("1.5"),
                Value::from("1704067200000000"),
                Value::from("true"),
            ],
            vec![Value::Null, Value::Null, Value::Null, Value::Null, Value::Null],
        ];
        let b = rows_to_batch(&fields, &rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(1).as_any().downcast_ref::<Int64Array>().unwrap().value(0), 3);
        assert!(b.column(2).is_null(1));
        assert_eq!(b.schema().field(3).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
        assert!(rows_to_batch(&fields[1..2], &[vec![Value::from("x")]]).is_err());
    }

    #[test]
    fn emulator_endpoints_need_no_credentials_and_read_through_rest_without_a_storage_host() {
        let env = |k: &str| (k == "BIGQUERY_EMULATOR_HOST").then(|| "127.0.0.1:9050".to_string());
        let config =
            BigQueryConfig { project_id: "test-project".into(), dataset: "amora".into(), ..Default::default() };
        let s = BigQueryStore::new(&config, &env).unwrap();
        assert!(s.storage.is_none());
        assert_eq!(s.rest.endpoint(), "http://127.0.0.1:9050");
        let bad = BigQueryConfig { project_id: "Bad Project".into(), dataset: "amora".into(), ..Default::default() };
        assert!(BigQueryStore::new(&bad, &env).is_err());
    }
}
