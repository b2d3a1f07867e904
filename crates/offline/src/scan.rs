//! The materialization scan of a local Parquet table, page by page: the
//! synchronous Parquet reader reads each column's pages from the file as it
//! decodes them, where DataFusion's scan first fetches a row group's whole column
//! chunks (a table written as one large row group would be held in memory
//! whole). Row groups outside the window are skipped by their statistics; rows
//! outside it are filtered out. The surviving row groups are dealt to one reader
//! thread per core, and their batches go through bounded channels, so memory stays
//! a few pages and batches per thread, however many files the table has.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::file::statistics::Statistics;
use futures::StreamExt;

use crate::store::{BatchStream, ScanSpec};
use crate::OfflineError;

/// The Parquet files of a table: the file itself, or every `.parquet` under the folder.
/// `None` when the location is not a local file or folder.
pub fn local_files(location: &str) -> Option<Vec<PathBuf>> {
    let p = Path::new(location);
    if p.is_file() {
        return Some(vec![p.to_path_buf()]);
    }
    if !p.is_dir() {
        return None;
    }
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.starts_with('_') {
                continue; // temporary and hidden files
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Some(out)
}

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// `micros` in the column's unit.
fn in_unit(micros: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => micros.div_euclid(1_000_000),
        TimeUnit::Millisecond => micros.div_euclid(1_000),
        TimeUnit::Microsecond => micros,
        TimeUnit::Nanosecond => micros.saturating_mul(1_000),
    }
}

/// What to read of one file: the projected root columns and the row groups whose
/// event-timestamp statistics meet the window.
pub(crate) struct FilePlan {
    pub path: PathBuf,
    /// The footer, read once and shared by every thread that reads the file.
    pub meta: ArrowReaderMetadata,
    pub roots: Vec<usize>,
    pub groups: Vec<usize>,
}

impl FilePlan {
    /// A reader of this file (its footer already read), projected to the root
    /// columns `roots`.
    pub(crate) fn open(
        &self,
        roots: impl IntoIterator<Item = usize>,
    ) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>, OfflineError> {
        let path = self.path.as_path();
        let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        Ok(builder.with_projection(mask))
    }
}

pub(crate) fn plan_file(path: &Path, scan: &ScanSpec, (start, end): (i64, i64)) -> Result<FilePlan, OfflineError> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let meta = ArrowReaderMetadata::load(&file, Default::default()).map_err(|e| io(path, e))?;
    let schema = meta.schema().clone();
    let mut wanted: Vec<&str> = scan.join_keys.iter().map(String::as_str).collect();
    wanted.push(&scan.event_timestamp);
    wanted.extend(scan.created_timestamp.as_deref());
    wanted.extend(scan.features.iter().map(String::as_str));
    let mut roots = Vec::new();
    for w in &wanted {
        let i = schema.index_of(w).map_err(|_| {
            OfflineError::Contract(format!(
                "feature view `{}`: its table {} has no column `{w}`",
                scan.view,
                path.display()
            ))
        })?;
        if !roots.contains(&i) {
            roots.push(i);
        }
    }
    let ts_field = schema.field_with_name(&scan.event_timestamp).expect("checked above");
    let unit = match ts_field.data_type() {
        DataType::Timestamp(u, _) => Some(*u),
        _ => None,
    };
    let ts_leaf = meta.parquet_schema().columns().iter().position(|c| c.name() == scan.event_timestamp);
    let footer = meta.metadata();
    let groups = (0..footer.num_row_groups())
        .filter(|&g| {
            let (Some(unit), Some(leaf)) = (unit, ts_leaf) else { return true };
            match footer.row_group(g).column(leaf).statistics() {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(lo), Some(hi)) => *hi >= in_unit(start, unit) && *lo <= in_unit(end, unit),
                    _ => true,
                },
                _ => true,
            }
        })
        .collect();
    Ok(FilePlan { path: path.to_path_buf(), meta, roots, groups })
}

/// Reads `groups` of a planned file, keeping the rows in the window and sending
/// them to `tx`. Returns false when the receiver is gone.
fn read_groups(
    plan: &FilePlan,
    groups: Vec<usize>,
    scan: &ScanSpec,
    (start, end): (i64, i64),
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, OfflineError>>,
) -> Result<bool, OfflineError> {
    let path = plan.path.as_path();
    let reader = plan
        .open(plan.roots.iter().copied())?
        .with_row_groups(groups)
        .with_batch_size(8192)
        .build()
        .map_err(|e| io(path, e))?;
    let plain = DataType::Timestamp(TimeUnit::Microsecond, None);
    for batch in reader {
        let batch = batch.map_err(|e| io(path, e))?;
        let ts = cast(batch.column(batch.schema().index_of(&scan.event_timestamp)?), &plain)?;
        let ts = cast(&ts, &DataType::Int64)?;
        let ts = ts.as_any().downcast_ref::<Int64Array>().expect("cast to int64");
        let keep: BooleanArray =
            (0..ts.len()).map(|i| Some(ts.is_valid(i) && (start..=end).contains(&ts.value(i)))).collect();
        let batch = if keep.true_count() == batch.num_rows() { batch } else { filter_record_batch(&batch, &keep)? };
        if batch.num_rows() > 0 && tx.blocking_send(Ok(batch)).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How many rows the files' row groups that overlap the window hold (from their
/// footers: the rows a scan reads before filtering by timestamp).
pub fn rows_in_window(files: &[PathBuf], scan: &ScanSpec, window: (i64, i64)) -> Result<usize, OfflineError> {
    let mut rows = 0usize;
    for f in files {
        let plan = plan_file(f, scan, window)?;
        let footer = plan.meta.metadata();
        rows += plan.groups.iter().map(|g| footer.row_group(*g).num_rows().max(0) as usize).sum::<usize>();
    }
    Ok(rows)
}

/// The Arrow schema of a Parquet file, from its footer.
pub fn file_schema(path: &Path) -> Result<datafusion::arrow::datatypes::SchemaRef, OfflineError> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io(path, e))?;
    Ok(builder.schema().clone())
}

/// The files' rows in the window as one stream per reader thread. The work is the
/// surviving row groups of every file, dealt round-robin to as many threads as
/// cores (at most one per row group); a thread reads its row groups file by file.
/// A file of eight row groups is thus read by every core, and a folder of a
/// thousand daily files costs a few threads and a few batches in flight, not a
/// thousand. Consumers poll every stream at once. The files' footers are read here,
/// so a missing column is an error before any stream starts.
pub fn scan_files(files: Vec<PathBuf>, scan: &ScanSpec, window: (i64, i64)) -> Result<Vec<BatchStream>, OfflineError> {
    let plans = files.iter().map(|f| plan_file(f, scan, window)).collect::<Result<Vec<_>, _>>()?;
    let units: Vec<(usize, usize)> =
        plans.iter().enumerate().flat_map(|(f, p)| p.groups.iter().map(move |g| (f, *g))).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(units.len());
    let plans = std::sync::Arc::new(plans);
    Ok((0..threads)
        .map(|t| {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let (scan, plans) = (scan.clone(), plans.clone());
            // This thread's row groups, file by file in order.
            let mut mine: Vec<(usize, Vec<usize>)> = Vec::new();
            for (f, g) in units.iter().skip(t).step_by(threads) {
                match mine.last_mut() {
                    Some((last, groups)) if last == f => groups.push(*g),
                    _ => mine.push((*f, vec![*g])),
                }
            }
            std::thread::spawn(move || {
                for (f, groups) in mine {
                    match read_groups(&plans[f], groups, &scan, window, &tx) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            });
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }).boxed()
        })
        .collect())
}
