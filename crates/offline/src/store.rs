//! [`OfflineStore`]: what the pipeline, training-set retrieval and
//! materialization need of a warehouse, one trait for every backend (the
//! embedded DataFusion engine here, BigQuery in `amora-bigquery`). The
//! semantics are the embedded engine's; other backends must give the same
//! tables, training sets and latest rows (`amora-cli`'s differential test).

use std::path::{Path, PathBuf};

use amora_model::{Model, Source};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::historical::ViewSpec;
use crate::{OfflineError, TableLocation, TableStats, Warehouse};

/// A stream of record batches from a scan.
pub type BatchStream = BoxStream<'static, Result<RecordBatch, OfflineError>>;

/// The columns and window a materialization scans.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSpec {
    pub view: String,
    /// The view's table: a Parquet path for the embedded store, `project.dataset.table` for BigQuery.
    pub location: String,
    pub join_keys: Vec<String>,
    pub event_timestamp: String,
    pub created_timestamp: Option<String>,
    pub features: Vec<String>,
}

/// What [`OfflineStore::scan_window`] yields.
pub struct WindowScan {
    pub streams: Vec<BatchStream>,
    /// `Some(n)`: the store kept only the latest row per entity (Feast's order:
    /// event timestamp, then created timestamp, nulls last), and the streams hold
    /// `n` rows, one per entity. `None`: every row in the window, which the caller
    /// deduplicates.
    pub latest: Option<u64>,
}

/// How a backend's SQL spells things, for the data tests' queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// DataFusion: `"name"`, `VARCHAR`.
    Embedded,
    /// BigQuery: `` `name` ``, `STRING`.
    BigQuery,
}

impl Dialect {
    pub fn quote(self, name: &str) -> String {
        match self {
            Dialect::Embedded => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::BigQuery => format!("`{}`", name.replace('`', "")),
        }
    }
    pub fn string_type(self) -> &'static str {
        match self {
            Dialect::Embedded => "VARCHAR",
            Dialect::BigQuery => "STRING",
        }
    }
}

/// A warehouse amora runs models in and reads features from.
pub trait OfflineStore: Send + Sync {
    /// For messages: `embedded` or `bigquery (project.dataset)`.
    fn describe(&self) -> String;
    fn dialect(&self) -> Dialect;
    /// Makes a source readable by the models (the embedded engine registers the
    /// file; BigQuery loads a local file into a table of the dataset).
    fn prepare_source<'a>(&'a self, source: &'a Source, root: &'a Path) -> BoxFuture<'a, Result<(), OfflineError>>;
    /// Whether the model's table exists.
    fn has_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<bool, OfflineError>>;
    /// Makes an existing model table readable by later models.
    fn use_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<(), OfflineError>>;
    /// Runs the model's SELECT into its table, atomically, cast to the declared columns.
    fn build_table<'a>(&'a self, model: &'a Model, sql: &'a str) -> BoxFuture<'a, Result<TableStats, OfflineError>>;
    /// Checks a view model against its declaration and makes it readable (an
    /// ephemeral model: readable, for its data tests).
    fn build_view<'a>(&'a self, model: &'a Model, sql: &'a str) -> BoxFuture<'a, Result<(), OfflineError>>;
    /// Runs a query (in the store's dialect) and collects the result (meant for
    /// small results: data tests and their samples).
    fn query<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Vec<RecordBatch>, OfflineError>>;
    /// A model table's rows (for `amora show`), in no particular order.
    fn read_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<Vec<RecordBatch>, OfflineError>>;
    /// Point-in-time correct features for every entity row, in the rows' order
    /// (see [`crate::historical::get_historical_features`] for the semantics).
    fn historical<'a>(
        &'a self,
        entities: &'a RecordBatch,
        timestamp_column: &'a str,
        views: &'a [ViewSpec],
        full_feature_names: bool,
    ) -> BoxFuture<'a, Result<crate::frames::TrainingSet, OfflineError>>;
    /// The rows of a view's table with `start <= event_ts <= end` (microseconds),
    /// only the needed columns, as one or more streams: only the latest row per
    /// entity where the store can push that down (see [`WindowScan::latest`]).
    fn scan_window<'a>(
        &'a self,
        scan: &'a ScanSpec,
        window: (i64, i64),
    ) -> BoxFuture<'a, Result<WindowScan, OfflineError>>;
    /// Appends rows to a view's table at `location` (Feast's `offline_write_batch`:
    /// `/push` with `to: offline`), cast to the table's column types; columns the
    /// rows lack are null. A failed append writes nothing. `event_timestamp` is
    /// the rows' event timestamp column. Returns the rows written.
    fn append<'a>(
        &'a self,
        location: &'a str,
        event_timestamp: &'a str,
        rows: RecordBatch,
    ) -> BoxFuture<'a, Result<u64, OfflineError>>;
}

/// The embedded store: DataFusion over the project's Parquet tables.
#[derive(Clone)]
pub struct EmbeddedStore {
    pub warehouse: Warehouse,
    tables: PathBuf,
}

/// Where the embedded store keeps a model's table: `tables/<model>.parquet`, or a
/// folder of daily partitions `tables/<model>/` when the model is partitioned.
pub fn table_location(tables: &Path, model: &str, partition_by: Option<&str>) -> TableLocation {
    match partition_by {
        Some(column) => TableLocation::Daily { dir: tables.join(model), column: column.to_string() },
        None => TableLocation::File(tables.join(format!("{model}.parquet"))),
    }
}

impl EmbeddedStore {
    /// `tables`: the folder model tables are written to (`target/tables`).
    pub fn new(tables: PathBuf) -> EmbeddedStore {
        EmbeddedStore { warehouse: Warehouse::new(0), tables }
    }

    pub fn location(&self, model: &Model) -> TableLocation {
        table_location(&self.tables, &model.name, model.partition_by.as_deref())
    }
}

fn stream(s: SendableRecordBatchStream) -> BatchStream {
    s.map(|b| b.map_err(OfflineError::from)).boxed()
}

impl OfflineStore for EmbeddedStore {
    fn describe(&self) -> String {
        "embedded".into()
    }
    fn dialect(&self) -> Dialect {
        Dialect::Embedded
    }
    fn prepare_source<'a>(&'a self, source: &'a Source, root: &'a Path) -> BoxFuture<'a, Result<(), OfflineError>> {
        Box::pin(self.warehouse.register_source(source, root))
    }
    fn has_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<bool, OfflineError>> {
        Box::pin(async move { Ok(self.location(model).exists()) })
    }
    fn use_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<(), OfflineError>> {
        Box::pin(async move { self.warehouse.register_table(&model.name, &self.location(model)).await })
    }
    fn build_table<'a>(&'a self, model: &'a Model, sql: &'a str) -> BoxFuture<'a, Result<TableStats, OfflineError>> {
        Box::pin(async move {
            let loc = self.location(model);
            let stats = self.warehouse.build_table(&model.name, sql, &model.columns, &loc).await?;
            self.warehouse.register_table(&model.name, &loc).await?;
            Ok(stats)
        })
    }
    fn build_view<'a>(&'a self, model: &'a Model, sql: &'a str) -> BoxFuture<'a, Result<(), OfflineError>> {
        Box::pin(async move {
            // An ephemeral model is only made readable for its data tests; it has no contract of its own.
            if model.materialization != amora_model::Materialization::Ephemeral {
                self.warehouse.plan_model(&model.name, sql, &model.columns).await?;
            }
            self.warehouse.register_view(&model.name, sql).await
        })
    }
    fn query<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Vec<RecordBatch>, OfflineError>> {
        Box::pin(self.warehouse.query(sql))
    }
    fn read_table<'a>(&'a self, model: &'a Model) -> BoxFuture<'a, Result<Vec<RecordBatch>, OfflineError>> {
        Box::pin(async move {
            self.warehouse.register_table(&model.name, &self.location(model)).await?;
            self.warehouse.query(&format!("SELECT * FROM {}", Dialect::Embedded.quote(&model.name))).await
        })
    }
    fn historical<'a>(
        &'a self,
        entities: &'a RecordBatch,
        timestamp_column: &'a str,
        views: &'a [ViewSpec],
        full_feature_names: bool,
    ) -> BoxFuture<'a, Result<crate::frames::TrainingSet, OfflineError>> {
        Box::pin(crate::historical::get_historical_features(
            &self.warehouse,
            entities,
            timestamp_column,
            views,
            full_feature_names,
        ))
    }
    fn append<'a>(
        &'a self,
        location: &'a str,
        event_timestamp: &'a str,
        rows: RecordBatch,
    ) -> BoxFuture<'a, Result<u64, OfflineError>> {
        Box::pin(async move {
            let (location, ts) = (location.to_string(), event_timestamp.to_string());
            tokio::task::spawn_blocking(move || crate::append::append_local(&location, &ts, &rows))
                .await
                .map_err(|e| OfflineError::Backend(format!("the append failed: {e}")))?
        })
    }
    fn scan_window<'a>(
        &'a self,
        scan: &'a ScanSpec,
        (start, end): (i64, i64),
    ) -> BoxFuture<'a, Result<WindowScan, OfflineError>> {
        Box::pin(async move {
            // A local table: the latest rows in two passes, bounded memory (see `latest`).
            if let Some(files) = crate::scan::local_files(&scan.location) {
                let (spec, memory) = (scan.clone(), self.warehouse.join_memory());
                let found = tokio::task::spawn_blocking(move || {
                    crate::latest::latest_in_files(files, &spec, (start, end), memory)
                })
                .await
                .map_err(|e| OfflineError::Backend(format!("the scan failed: {e}")))??;
                return Ok(WindowScan { streams: found.streams, latest: Some(found.entities) });
            }
            use datafusion::prelude::{ident, lit, ParquetReadOptions};
            use datafusion::scalar::ScalarValue;
            let contract = |m: String| OfflineError::Contract(format!("feature view `{}`: {m}", scan.view));
            let ctx = self.warehouse.context();
            let df = ctx
                .read_parquet(scan.location.as_str(), ParquetReadOptions::default())
                .await
                .map_err(|e| contract(format!("cannot read its table {}: {e}", scan.location)))?;
            let ts_type = df
                .schema()
                .field_with_unqualified_name(&scan.event_timestamp)
                .map_err(|_| contract(format!("its table has no column `{}`", scan.event_timestamp)))?
                .data_type()
                .clone();
            let at = |micros: i64| -> Result<_, OfflineError> {
                Ok(lit(ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())).cast_to(&ts_type)?))
            };
            let mut cols: Vec<&str> = scan.join_keys.iter().map(String::as_str).collect();
            cols.push(&scan.event_timestamp);
            cols.extend(scan.created_timestamp.as_deref());
            cols.extend(scan.features.iter().map(String::as_str));
            // The window is pushed into the Parquet reader (row groups and pages outside it are skipped).
            let df = df
                .select(cols.iter().map(|c| ident(*c)).collect::<Vec<_>>())?
                .filter(ident(&scan.event_timestamp).gt_eq(at(start)?))?
                .filter(ident(&scan.event_timestamp).lt_eq(at(end)?))?;
            let streams = df.execute_stream_partitioned().await?.into_iter().map(stream).collect();
            Ok(WindowScan { streams, latest: None })
        })
    }
}
