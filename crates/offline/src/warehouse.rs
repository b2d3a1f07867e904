//! [`Warehouse`]: a DataFusion session with the project's sources and tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use amora_model::{Column, FileFormat, Source};
use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::{cast, ident, CsvReadOptions, DataFrame, ParquetReadOptions, SessionConfig, SessionContext};

use crate::types::{arrow_type, check_type, storage_type};
use crate::OfflineError;

/// The hidden column a daily-partitioned table is split on (hive style: `amora_date=YYYY-MM-DD/`; no leading underscore, which pyarrow would skip).
pub const PARTITION_COLUMN: &str = "amora_date";

/// Where a model's table lives on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableLocation {
    /// One Parquet file.
    File(PathBuf),
    /// A folder of daily partitions, split on the given timestamp column.
    Daily { dir: PathBuf, column: String },
}

impl TableLocation {
    pub fn path(&self) -> &Path {
        match self {
            TableLocation::File(p) => p,
            TableLocation::Daily { dir, .. } => dir,
        }
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }
}

/// What a table build produced.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TableStats {
    pub rows: u64,
    pub bytes: u64,
}

/// An embedded DataFusion session. Cheap to share: clones share the session.
#[derive(Clone)]
pub struct Warehouse {
    ctx: SessionContext,
    join_memory: usize,
}

/// The default memory budget of a point-in-time join's key pass, per view.
const JOIN_MEMORY_MB: usize = 2048;

fn io(path: &Path, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Io { path: path.display().to_string(), message: e.to_string() }
}

fn quote(name: &str) -> String {
    crate::Dialect::Embedded.quote(name)
}

fn disk_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| disk_size(&e.path())).sum()
        }
        _ => 0,
    }
}

impl Warehouse {
    /// A session running queries on `threads` partitions (0: one per core).
    pub fn new(threads: usize) -> Warehouse {
        let mut config = SessionConfig::new().with_information_schema(false);
        if threads > 0 {
            config = config.with_target_partitions(threads);
        }
        // Naive timestamps are UTC.
        config.options_mut().execution.time_zone = Some("UTC".into());
        let join_memory = match std::env::var("AMORA_JOIN_MEMORY_MB") {
            Err(_) => JOIN_MEMORY_MB,
            Ok(mb) => match mb.trim().parse::<usize>() {
                Ok(mb) if mb > 0 => mb,
                _ => {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        eprintln!(
                            "warning: AMORA_JOIN_MEMORY_MB={mb:?} is not a whole number of megabytes above 0; using {JOIN_MEMORY_MB}"
                        )
                    });
                    JOIN_MEMORY_MB
                }
            },
        }
        .saturating_mul(1 << 20);
        Warehouse { ctx: SessionContext::new_with_config(config), join_memory }
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// How much memory a point-in-time join may give one view's join keys and
    /// timestamps (default 2 GB, or `AMORA_JOIN_MEMORY_MB`): a view whose rows in the
    /// needed time range would need more is joined in parts, by a hash of its keys.
    pub fn join_memory(&self) -> usize {
        self.join_memory
    }

    pub fn with_join_memory(mut self, bytes: usize) -> Warehouse {
        self.join_memory = bytes;
        self
    }

    /// Registers a source's file (or folder) under its name. CSV columns are read
    /// as their declared types; Parquet files bring their own schema.
    pub async fn register_source(&self, source: &Source, root: &Path) -> Result<(), OfflineError> {
        let path = if source.location.contains("://") {
            self.register_object_store(&source.location)?;
            source.location.clone()
        } else {
            let p = root.join(&source.location);
            if !p.exists() {
                return Err(io(&p, format!("source `{}`: file not found", source.name)));
            }
            p.display().to_string()
        };
        let _ = self.ctx.deregister_table(source.name.as_str());
        match source.format {
            FileFormat::Csv => {
                let schema = Schema::new(
                    source.columns.iter().map(|c| Field::new(&c.name, arrow_type(c.ty), true)).collect::<Vec<_>>(),
                );
                let ext = if path.ends_with(".gz") { ".csv.gz" } else { ".csv" };
                let options = CsvReadOptions::new().has_header(true).schema(&schema).file_extension(ext);
                self.ctx.register_csv(source.name.as_str(), &path, options).await?;
            }
            FileFormat::Parquet => {
                self.ctx.register_parquet(source.name.as_str(), &path, ParquetReadOptions::default()).await?;
            }
        }
        Ok(())
    }

    /// Makes `s3://bucket/...` and `gs://bucket/...` locations readable. S3: the usual
    /// `AWS_*` variables, and `AWS_ENDPOINT_URL` / `FEAST_S3_ENDPOINT_URL` for an
    /// S3-compatible endpoint. GCS: `GOOGLE_SERVICE_ACCOUNT` / application credentials.
    pub fn register_object_store(&self, location: &str) -> Result<(), OfflineError> {
        let url = url::Url::parse(location).map_err(|e| io(Path::new(location), e))?;
        let bucket = url.host_str().unwrap_or_default().to_string();
        let bad = |e: object_store::Error| io(Path::new(location), e);
        let store: Arc<dyn object_store::ObjectStore> = match url.scheme() {
            "s3" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
                if let Some(endpoint) = std::env::var("FEAST_S3_ENDPOINT_URL")
                    .ok()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                    .filter(|e| !e.is_empty())
                {
                    b = b
                        .with_endpoint(&endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                Arc::new(b.build().map_err(bad)?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(bad)?,
            ),
            other => {
                return Err(io(
                    Path::new(location),
                    format!("unsupported scheme `{other}://`; use a local path, s3:// or gs://"),
                ))
            }
        };
        let base = url::Url::parse(&format!("{}://{bucket}", url.scheme())).map_err(|e| io(Path::new(location), e))?;
        self.ctx.register_object_store(&base, store);
        Ok(())
    }

    /// A fingerprint of a remote object (size and ETag or modification time), to
    /// tell whether a source changed.
    pub async fn remote_fingerprint(&self, location: &str) -> Result<String, OfflineError> {
        self.register_object_store(location)?;
        let url = url::Url::parse(location).map_err(|e| io(Path::new(location), e))?;
        let store = self.ctx.runtime_env().object_store(datafusion::execution::object_store::ObjectStoreUrl::parse(
            format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
        )?)?;
        let path = object_store::path::Path::from(url.path().trim_start_matches('/'));
        if let Ok(m) = object_store::ObjectStoreExt::head(&store, &path).await {
            return Ok(format!(
                "{}:{}:{}:{}",
                m.location,
                m.size,
                m.e_tag.unwrap_or_default(),
                m.last_modified.timestamp_micros()
            ));
        }
        // A folder (prefix) of files.
        let mut out = String::new();
        let mut list = store.list(Some(&path));
        while let Some(meta) = futures::StreamExt::next(&mut list).await {
            let m = meta.map_err(|e| io(Path::new(location), e))?;
            out.push_str(&format!(
                "{}:{}:{}:{};",
                m.location,
                m.size,
                m.e_tag.unwrap_or_default(),
                m.last_modified.timestamp_micros()
            ));
        }
        Ok(out)
    }

    /// Registers a model's table, as written by [`Warehouse::build_table`].
    pub async fn register_table(&self, name: &str, location: &TableLocation) -> Result<(), OfflineError> {
        let _ = self.ctx.deregister_table(name);
        match location {
            TableLocation::File(p) => {
                self.ctx.register_parquet(name, p.display().to_string(), ParquetReadOptions::default()).await?;
            }
            TableLocation::Daily { dir, .. } => {
                // Read the partitions, then hide the partition column behind a view.
                let raw = format!("__amora_raw_{name}");
                let _ = self.ctx.deregister_table(raw.as_str());
                let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet")
                    .with_table_partition_cols(vec![(PARTITION_COLUMN.to_string(), DataType::Utf8)]);
                let url = format!("{}/", dir.display());
                self.ctx.register_listing_table(raw.as_str(), &url, options, None, None).await?;
                let df = self.ctx.table(raw.as_str()).await?;
                let cols: Vec<String> = df
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|n| n != PARTITION_COLUMN)
                    .map(|n| quote(&n))
                    .collect();
                self.register_view(name, &format!("SELECT {} FROM {}", cols.join(", "), quote(&raw))).await?;
            }
        }
        Ok(())
    }

    /// Registers `sql` as a view named `name` (inlined into the queries that read it).
    pub async fn register_view(&self, name: &str, sql: &str) -> Result<(), OfflineError> {
        let _ = self.ctx.deregister_table(name);
        self.ctx.sql(&format!("CREATE VIEW {} AS {sql}", quote(name))).await?.collect().await?;
        Ok(())
    }

    /// Plans `sql` and checks its columns against `columns` (names and types).
    pub async fn plan_model(&self, model: &str, sql: &str, columns: &[Column]) -> Result<DataFrame, OfflineError> {
        let df = self.ctx.sql(sql).await?;
        let produced: Vec<(String, DataType)> =
            df.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        let mut problems = Vec::new();
        for c in columns {
            match produced.iter().find(|(n, _)| *n == c.name) {
                None => problems.push(format!("declared column `{}` is not produced by the SQL", c.name)),
                Some((_, t)) if !check_type(c.ty, t) => {
                    problems.push(format!("column `{}` is declared {} but the SQL produces {t}", c.name, c.ty))
                }
                Some(_) => {}
            }
        }
        for (n, t) in &produced {
            if !columns.iter().any(|c| c.name == *n) {
                problems.push(format!("column `{n}` ({t}) is produced by the SQL but not declared"));
            }
        }
        if !problems.is_empty() {
            return Err(OfflineError::Contract(format!("model {model}: {}", problems.join("; "))));
        }
        let exprs = columns.iter().map(|c| cast(ident(&c.name), storage_type(c.ty)).alias(&c.name)).collect::<Vec<_>>();
        Ok(df.select(exprs)?)
    }

    /// Runs a model's SELECT and writes the result to `location`, atomically: the
    /// data goes to a hidden temporary path that replaces the table only once complete.
    pub async fn build_table(
        &self,
        model: &str,
        sql: &str,
        columns: &[Column],
        location: &TableLocation,
    ) -> Result<TableStats, OfflineError> {
        let df = self.plan_model(model, sql, columns).await?;
        let final_path = location.path().to_path_buf();
        let dir = final_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let tmp = dir.join(format!(".tmp-{model}-{}", uuid::Uuid::new_v4().simple()));
        let written = self.write(df, location, &tmp).await;
        // Once written, the swap takes the table's lock, as a push does
        // (`append::lock_table`): a push in progress finishes first, and none starts
        // halfway through the swap (a folder moved aside would otherwise take a
        // push's files with it, or a push would recreate the folder and the swap
        // fail with the table gone). The wait is short (a push's write), so it
        // blocks this runtime thread.
        let (rows, lock) = match written.and_then(|rows| Ok((rows, crate::append::lock_table(&final_path)?))) {
            Ok(locked) => locked,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        swap_into_place(&tmp, &final_path)?;
        // A table that changed layout (file <-> folder) leaves no stale twin behind.
        let twin = match location {
            TableLocation::File(p) => p.with_extension(""),
            TableLocation::Daily { dir, .. } => dir.with_extension("parquet"),
        };
        if twin != final_path {
            let _ = std::fs::remove_file(&twin);
            let _ = std::fs::remove_dir_all(&twin);
        }
        drop(lock);
        Ok(TableStats { rows, bytes: disk_size(&final_path) })
    }

    async fn write(&self, df: DataFrame, location: &TableLocation, tmp: &Path) -> Result<u64, OfflineError> {
        let (df, options) = match location {
            TableLocation::File(_) => (df, DataFrameWriteOptions::new().with_single_file_output(true)),
            TableLocation::Daily { column, .. } => {
                let day = cast(cast(ident(column), DataType::Date32), DataType::Utf8).alias(PARTITION_COLUMN);
                let mut exprs: Vec<_> = df.schema().fields().iter().map(|f| ident(f.name())).collect();
                exprs.push(day);
                (df.select(exprs)?, DataFrameWriteOptions::new().with_partition_by(vec![PARTITION_COLUMN.to_string()]))
            }
        };
        let path = match location {
            TableLocation::File(_) => tmp.display().to_string(),
            TableLocation::Daily { .. } => format!("{}/", tmp.display()),
        };
        let schema = Arc::new(df.schema().as_arrow().clone());
        let out = df.write_parquet(&path, options, Some(crate::frames::fast_parquet())).await?;
        let rows = count_of(&out);
        if !tmp.exists() {
            // No rows: a partitioned write creates nothing. Leave an empty file with the
            // schema, so the table exists and reads as empty.
            std::fs::create_dir_all(tmp).map_err(|e| io(tmp, e))?;
            let empty = self.ctx.read_batch(RecordBatch::new_empty(schema))?;
            let file = tmp.join("empty.parquet").display().to_string();
            empty.write_parquet(&file, DataFrameWriteOptions::new().with_single_file_output(true), None).await?;
        }
        Ok(rows)
    }

    /// Runs a query and collects its batches.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, OfflineError> {
        Ok(self.ctx.sql(sql).await?.collect().await?)
    }
}

fn count_of(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| b.columns().first())
        .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>())
        .map(|a| if a.is_empty() { 0 } else { a.value(0) })
        .sum()
}

/// Moves `tmp` to `target`. A file is replaced by one atomic rename; a folder is
/// moved aside first, so a reader sees the old or the new table, never a mix.
fn swap_into_place(tmp: &Path, target: &Path) -> Result<(), OfflineError> {
    if tmp.is_dir() && target.exists() {
        let old = target.with_file_name(format!(".old-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(target, &old).map_err(|e| io(target, e))?;
        std::fs::rename(tmp, target).map_err(|e| io(target, e))?;
        let _ = std::fs::remove_dir_all(&old);
        let _ = std::fs::remove_file(&old);
    } else {
        if target.is_dir() {
            std::fs::remove_dir_all(target).map_err(|e| io(target, e))?;
        }
        std::fs::rename(tmp, target).map_err(|e| io(target, e))?;
    }
    Ok(())
}
