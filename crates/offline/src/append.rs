//! Rows appended to a local Parquet table (Feast's `offline_write_batch`, for
//! `/push` with `to: offline`). Readers never see part of a file: new files are
//! written under a hidden name (which scans skip), all of them, before any is
//! renamed into place (a push over several days appears day by day, within a
//! few renames); a single-file table is rewritten beside itself and swapped in.
//! A failed write renames nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amora_model::calendar::civil_from_days;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

use crate::scan::{io, local_files};
use crate::warehouse::PARTITION_COLUMN;
use crate::OfflineError;

/// Appends `rows` to the table at `location` (a Parquet file or a folder of
/// them) and returns how many were written. `event_timestamp` names the column
/// that picks a row's daily partition in amora's partitioned tables. The rows
/// are cast to the table's column types; table columns the rows lack are null;
/// a column the table lacks is an error that names it.
pub fn append_local(location: &str, event_timestamp: &str, rows: &RecordBatch) -> Result<u64, OfflineError> {
    let path = Path::new(location);
    let missing =
        || OfflineError::Contract(format!("{location}: the table does not exist; build it first (`amora run`)"));
    // Checked before locking, so a missing table leaves no lock file behind.
    if !path.exists() {
        return Err(missing());
    }
    // Under the table's lock from here: its files, as listed below, are the ones
    // the push adds to (no rebuild swaps them meanwhile).
    let _lock = lock_table(path)?;
    let files = local_files(location).ok_or_else(missing)?;
    let Some(first) = files.first() else {
        return Err(OfflineError::Contract(format!("{location}: the table has no Parquet file to append to")));
    };
    let schema = file_schema(first)?;
    let batch = conform(rows, &schema, location)?;
    if batch.num_rows() == 0 {
        return Ok(0);
    }
    if path.is_file() {
        rewrite_with(path, &schema, &batch)?;
        return Ok(batch.num_rows() as u64);
    }
    // A folder: new files beside the old ones, in the day's partition folder
    // when the table is partitioned (`amora_date=YYYY-MM-DD/`), else at the top.
    let partitioned = first
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{PARTITION_COLUMN}=")));
    let mut parts: Vec<(PathBuf, RecordBatch)> = Vec::new();
    if partitioned {
        for (day, b) in by_day(&batch, event_timestamp)? {
            let (y, m, d) = civil_from_days(day);
            parts.push((path.join(format!("{PARTITION_COLUMN}={y:04}-{m:02}-{d:02}")), b));
        }
    } else {
        parts.push((path.to_path_buf(), batch.clone()));
    }
    let name = format!("pushed-{}.parquet", uuid::Uuid::new_v4().simple());
    let mut written = Vec::new();
    for (dir, b) in &parts {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let tmp = dir.join(format!(".tmp-{name}"));
        if let Err(e) = write_file(&tmp, &schema, std::iter::once(Ok(b.clone()))) {
            for p in written.iter().chain(std::iter::once(&tmp)) {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        written.push(tmp);
    }
    // All files complete: rename them in (each rename is atomic).
    for tmp in &written {
        let fin = tmp.with_file_name(&name);
        std::fs::rename(tmp, &fin).map_err(|e| io(&fin, e))?;
    }
    Ok(batch.num_rows() as u64)
}

fn file_schema(file: &Path) -> Result<SchemaRef, OfflineError> {
    let f = File::open(file).map_err(|e| io(file, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| io(file, e))?;
    Ok(b.schema().clone())
}

/// `rows` with the table's columns, in its order and types.
fn conform(rows: &RecordBatch, schema: &SchemaRef, location: &str) -> Result<RecordBatch, OfflineError> {
    let extra: Vec<&str> =
        rows.schema_ref().fields().iter().map(|f| f.name().as_str()).filter(|n| schema.index_of(n).is_err()).collect();
    if !extra.is_empty() {
        return Err(OfflineError::Contract(format!(
            "{location}: the table has no column {}; its columns are {}",
            extra.join(", "),
            schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match rows.column_by_name(f.name()) {
            None => Ok(new_null_array(f.data_type(), rows.num_rows())),
            Some(c) => cast(c, f.data_type()).map_err(|e| {
                OfflineError::Contract(format!(
                    "{location}: column `{}` is {} in the table; the pushed values do not convert: {e}",
                    f.name(),
                    f.data_type()
                ))
            }),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    for (f, c) in schema.fields().iter().zip(&columns) {
        if !f.is_nullable() && c.null_count() > 0 {
            return Err(OfflineError::Contract(format!("{location}: column `{}` cannot be null", f.name())));
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The rows of each day (UTC) of the timestamp column.
fn by_day(batch: &RecordBatch, column: &str) -> Result<BTreeMap<i64, RecordBatch>, OfflineError> {
    let ts = batch
        .column_by_name(column)
        .ok_or_else(|| OfflineError::Contract(format!("the rows have no timestamp column `{column}`")))?;
    let micros = cast(ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = cast(&micros, &DataType::Int64)?;
    let micros = micros
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .ok_or_else(|| OfflineError::Contract(format!("`{column}` is not a timestamp")))?;
    if micros.null_count() > 0 {
        return Err(OfflineError::Contract(format!("`{column}` cannot be null in pushed rows")));
    }
    let days: Vec<i64> = micros.values().iter().map(|m| m.div_euclid(86_400_000_000)).collect();
    let mut out = BTreeMap::new();
    let distinct: std::collections::BTreeSet<i64> = days.iter().copied().collect();
    for day in distinct {
        let mask = BooleanArray::from(days.iter().map(|d| *d == day).collect::<Vec<bool>>());
        out.insert(day, filter_record_batch(batch, &mask)?);
    }
    Ok(out)
}

fn write_file(
    path: &Path,
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, OfflineError>>,
) -> Result<(), OfflineError> {
    let f = File::create(path).map_err(|e| io(path, e))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut w = ArrowWriter::try_new(f, Arc::clone(schema), Some(props)).map_err(|e| io(path, e))?;
    for b in batches {
        w.write(&b?).map_err(|e| io(path, e))?;
    }
    let f = w.into_inner().map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Takes the exclusive lock of the local table at `path` (a file or a folder),
/// held while the table is written: pushes and model rebuilds of one table take
/// turns, across threads and processes (a rewrite reads the old file, and a
/// rebuild moves the old folder aside: either at once with a push would lose
/// rows or leave a table of the push alone). The lock is the OS's (`flock`) on
/// `.<name>.amora-lock` beside the table, so a crashed writer releases it; it is
/// released when the returned file is dropped.
pub(crate) fn lock_table(path: &Path) -> Result<File, OfflineError> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let lock_path = path.with_file_name(format!(".{name}.amora-lock"));
    let lock =
        File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| io(&lock_path, e))?;
    lock.lock().map_err(|e| io(&lock_path, e))?;
    Ok(lock)
}

/// Rewrites a single-file table with `batch` appended, then swaps it in (the
/// caller holds the table's lock, [`lock_table`]).
fn rewrite_with(path: &Path, schema: &SchemaRef, batch: &RecordBatch) -> Result<(), OfflineError> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", uuid::Uuid::new_v4().simple()));
    let old = File::open(path).map_err(|e| io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(old).and_then(|b| b.build()).map_err(|e| io(path, e))?;
    let old_rows = reader.map(|b| {
        let b = b.map_err(|e| io(path, e))?;
        // Same columns; the stored schema's metadata may differ from the one read.
        RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(OfflineError::from)
    });
    let result = write_file(&tmp, schema, old_rows.chain(std::iter::once(Ok(batch.clone()))));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TableLocation, Warehouse};
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    const DAY: i64 = 86_400_000_000;

    /// A table's own layout: id, ts (UTC), value (float), note (string).
    fn table(ids: &[i64], days: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("value", DataType::Float64, true),
            Field::new("note", DataType::Utf8, true),
        ]);
        let n = ids.len();
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(
                    TimestampMicrosecondArray::from(days.iter().map(|d| d * DAY).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![1.0; n])),
                Arc::new(StringArray::from(vec!["old"; n])),
            ],
        )
        .unwrap()
    }

    /// Pushed rows as the server builds them: other types, no `note` column.
    fn pushed(ids: &[i64], days: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("value", DataType::Int64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(datafusion::arrow::array::Int32Array::from(ids.iter().map(|i| *i as i32).collect::<Vec<_>>())),
                Arc::new(
                    TimestampMicrosecondArray::from(days.iter().map(|d| d * DAY + 3_600_000_000).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(vec![5; ids.len()])),
            ],
        )
        .unwrap()
    }

    /// `dir/t.parquet` holding ids 1 and 2.
    fn single_file_table(dir: &Path) -> PathBuf {
        let file = dir.join("t.parquet");
        let old = table(&[1, 2], &[0, 1]);
        write_file(&file, &old.schema(), std::iter::once(Ok(old.clone()))).unwrap();
        file
    }

    async fn rows(location: &TableLocation) -> Vec<(i64, i64, f64, Option<String>)> {
        let w = Warehouse::new(0);
        w.register_table("t", location).await.unwrap();
        let out = w.query("SELECT id, CAST(ts AS BIGINT), value, note FROM t ORDER BY id").await.unwrap();
        let mut v = Vec::new();
        for b in out {
            let col = |i: usize| b.column(i).clone();
            let (id, ts, value, note) = (col(0), col(1), col(2), col(3));
            let id = id.as_any().downcast_ref::<Int64Array>().unwrap();
            let ts = ts.as_any().downcast_ref::<Int64Array>().unwrap();
            let value = value.as_any().downcast_ref::<Float64Array>().unwrap();
            let note = cast(&note, &DataType::Utf8).unwrap();
            let note = note.as_any().downcast_ref::<StringArray>().unwrap();
            for r in 0..b.num_rows() {
                v.push((id.value(r), ts.value(r), value.value(r), note.is_valid(r).then(|| note.value(r).to_string())));
            }
        }
        v
    }

    #[tokio::test]
    async fn a_single_file_table_is_rewritten_with_the_rows_cast_to_its_types() {
        let tmp = tempfile::tempdir().unwrap();
        let file = single_file_table(tmp.path());
        assert_eq!(append_local(file.to_str().unwrap(), "ts", &pushed(&[3], &[2])).unwrap(), 1);
        let got = rows(&TableLocation::File(file.clone())).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (3, 2 * DAY + 3_600_000_000, 5.0, None), "cast, and null where the push has no column");
        assert_eq!(got[0].3.as_deref(), Some("old"));
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "nothing left beside the table but its lock file: {names:?}");
        assert!(names.iter().any(|n| n == ".t.parquet.amora-lock"), "{names:?}");
    }

    #[tokio::test]
    async fn concurrent_pushes_to_a_single_file_table_lose_no_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let file = single_file_table(tmp.path());
        let location = file.to_str().unwrap().to_string();
        // Each thread opens the lock file itself, as another process would.
        std::thread::scope(|s| {
            for i in 0..8i64 {
                let location = &location;
                s.spawn(move || append_local(location, "ts", &pushed(&[10 + i], &[2])).unwrap());
            }
        });
        let got = rows(&TableLocation::File(file.clone())).await;
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 10, 11, 12, 13, 14, 15, 16, 17]);
    }

    #[tokio::test]
    async fn a_partitioned_table_gets_one_new_file_per_day_and_bad_rows_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        for day in [0i64, 1] {
            let part = dir.join(format!("{PARTITION_COLUMN}=1970-01-0{}", day + 1));
            std::fs::create_dir_all(&part).unwrap();
            let b = table(&[day + 1], &[day]);
            write_file(&part.join("part-0.parquet"), &b.schema(), std::iter::once(Ok(b.clone()))).unwrap();
        }
        let location = TableLocation::Daily { dir: dir.clone(), column: "ts".into() };
        assert_eq!(append_local(dir.to_str().unwrap(), "ts", &pushed(&[10, 11, 12], &[1, 2, 2])).unwrap(), 3);
        let got = rows(&location).await;
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 10, 11, 12]);
        let files = local_files(dir.to_str().unwrap()).unwrap();
        assert_eq!(files.len(), 4, "{files:?}");
        assert!(files.iter().any(|f| f.to_string_lossy().contains("amora_date=1970-01-03/pushed-")), "{files:?}");
        // A column the table lacks: an error naming it, and nothing written.
        let mut extra = pushed(&[13], &[3]).columns().to_vec();
        extra.push(Arc::new(StringArray::from(vec!["x"])));
        let mut fields: Vec<Field> = pushed(&[13], &[3]).schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("surprise", DataType::Utf8, true));
        let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), extra).unwrap();
        let err = append_local(dir.to_str().unwrap(), "ts", &bad).unwrap_err().to_string();
        assert!(err.contains("no column surprise"), "{err}");
        assert_eq!(local_files(dir.to_str().unwrap()).unwrap().len(), 4);
        assert_eq!(rows(&location).await.len(), 5);
    }

    /// Holds the lock of the table at `table` (as a writer in another process
    /// would) and checks that `f`, started meanwhile, waits for its release.
    fn waits_for_the_lock<T: Send>(table: &Path, f: impl FnOnce() -> T + Send) -> T {
        use std::sync::atomic::{AtomicBool, Ordering};
        let lock = lock_table(table).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let r = f();
                done.store(true, Ordering::SeqCst);
                r
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(!done.load(Ordering::SeqCst), "finished while the table's lock was held");
            drop(lock);
            h.join().unwrap()
        })
    }

    #[test]
    fn a_rebuild_and_a_push_of_one_table_take_turns_under_its_lock() {
        use amora_model::{Column, Scalar, ValueType};
        let tmp = tempfile::tempdir().unwrap();
        let source = single_file_table(tmp.path());
        let dir = tmp.path().join("model");
        let location = TableLocation::Daily { dir: dir.clone(), column: "ts".into() };
        let column = |name: &str, ty: Scalar| Column {
            name: name.into(),
            ty: ValueType::Scalar(ty),
            doc: String::new(),
            tests: vec![],
        };
        let columns = vec![
            column("id", Scalar::Int64),
            column("ts", Scalar::UnixTimestamp),
            column("value", Scalar::Float64),
            column("note", Scalar::String),
        ];
        let build = || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let w = Warehouse::new(1);
                w.register_table("src", &TableLocation::File(source.clone())).await.unwrap();
                w.build_table("model", "SELECT id, ts, value, note FROM src", &columns, &location).await.unwrap()
            })
        };
        assert_eq!(build().rows, 2);
        // A rebuild waits for a push in progress (here: the held lock) to finish.
        assert_eq!(waits_for_the_lock(&dir, build).rows, 2);
        // A push waits for a rebuild's swap, then adds to the new table.
        let pushed_rows = pushed(&[7], &[1]);
        let n = waits_for_the_lock(&dir, || append_local(dir.to_str().unwrap(), "ts", &pushed_rows).unwrap());
        assert_eq!(n, 1);
        let got = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(rows(&location));
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 7]);
        let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(beside.iter().any(|n| n == ".model.amora-lock"), "the lock lives beside the table: {beside:?}");
    }
}
