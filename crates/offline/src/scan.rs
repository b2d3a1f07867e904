//! The materialization scan of a local Parquet table, page by page: the
//! synchronous Parquet reader reads each column's pages from the file as it
//! decodes them, where DataFusion's scan first fetches a row group's whole column
//! chunks (a table written as one large row group would be held in memory
//! whole). Row groups outside the window are skipped by their statistics; rows
//! outside it are filtered out. Each file is read on its own thread, and its batches
//! go through a bounded channel, so memory stays a few pages and batches per file.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
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

fn io(path: &Path, e: impl std::fmt::Display) -> OfflineError {
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

/// Reads one file's rows in the window, sending batches to `tx`; stops early when
/// the receiver is gone.
fn scan_file(
    path: &Path,
    scan: &ScanSpec,
    (start, end): (i64, i64),
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, OfflineError>>,
) -> Result<(), OfflineError> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io(path, e))?;
    let schema = builder.schema().clone();
    let mut wanted: Vec<&str> = scan.join_keys.iter().map(String::as_str).collect();
    wanted.push(&scan.event_timestamp);
    wanted.extend(scan.created_timestamp.as_deref());
    wanted.extend(scan.features.iter().map(String::as_str));
    let mut roots = Vec::new();
    for w in &wanted {
        let i = schema.index_of(w).map_err(|_| {
            OfflineError::Contract(format!("feature view `{}`: its table has no column `{w}`", scan.view))
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
    // Row groups whose event-timestamp range misses the window are not read at all.
    let ts_leaf = builder.parquet_schema().columns().iter().position(|c| c.name() == scan.event_timestamp);
    let meta = builder.metadata().clone();
    let groups: Vec<usize> = (0..meta.num_row_groups())
        .filter(|&g| {
            let (Some(unit), Some(leaf)) = (unit, ts_leaf) else { return true };
            match meta.row_group(g).column(leaf).statistics() {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(lo), Some(hi)) => *hi >= in_unit(start, unit) && *lo <= in_unit(end, unit),
                    _ => true,
                },
                _ => true,
            }
        })
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader =
        builder.with_projection(mask).with_row_groups(groups).with_batch_size(8192).build().map_err(|e| io(path, e))?;
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
            return Ok(());
        }
    }
    Ok(())
}

/// One stream per file, each read on its own thread.
pub fn scan_files(files: Vec<PathBuf>, scan: &ScanSpec, window: (i64, i64)) -> Vec<BatchStream> {
    files
        .into_iter()
        .map(|path| {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let scan = scan.clone();
            std::thread::spawn(move || {
                if let Err(e) = scan_file(&path, &scan, window, &tx) {
                    let _ = tx.blocking_send(Err(e));
                }
            });
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }).boxed()
        })
        .collect()
}
