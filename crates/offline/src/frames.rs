//! Reading and writing whole frames (entity rows in, training sets out) as Parquet or CSV.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::MemTable;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions};

use crate::{OfflineError, Warehouse};

fn is_csv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Parquet options for what amora writes: snappy, fast to write and read, and
/// readable everywhere (DataFusion's default is zstd(3), slower to write).
pub fn fast_parquet() -> datafusion::config::TableParquetOptions {
    let mut o = datafusion::config::TableParquetOptions::default();
    o.global.compression = Some("snappy".into());
    o
}

/// Reads a Parquet or CSV file (by extension) into one batch, rows in the file's
/// order. The scan has one partition: a partitioned scan is merged as partitions
/// finish (and may be repartitioned round-robin), which reorders a large file, and
/// training sets promise the entity rows' order.
pub async fn read_frame(path: &Path) -> Result<RecordBatch, OfflineError> {
    if !path.exists() {
        return Err(OfflineError::Io { path: path.display().to_string(), message: "file not found".into() });
    }
    let ctx = &datafusion::prelude::SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(1),
    );
    let p = path.display().to_string();
    let df = if is_csv(path) {
        ctx.read_csv(p, CsvReadOptions::new().has_header(true)).await?
    } else {
        ctx.read_parquet(p, ParquetReadOptions::default()).await?
    };
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Rows per row group in the Parquet files amora writes for frames: the writer holds
/// one row group's encoded pages, so this bounds its memory (DataFusion's default,
/// a million rows, held a whole training set's pages).
const FRAME_ROW_GROUP: usize = 128 * 1024;

/// Writes one batch as a single Parquet or CSV file (by extension). Parquet is
/// written row group by row group, snappy-compressed.
pub async fn write_frame(warehouse: &Warehouse, batch: RecordBatch, path: &Path) -> Result<(), OfflineError> {
    if is_csv(path) {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        let df = warehouse.context().read_table(Arc::new(table))?;
        let options = DataFrameWriteOptions::new().with_single_file_output(true);
        df.write_csv(&path.display().to_string(), options, None).await?;
        return Ok(());
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_parquet(&batch, &path))
        .await
        .map_err(|e| OfflineError::Backend(format!("the writer failed: {e}")))?
}

fn write_parquet(batch: &RecordBatch, path: &Path) -> Result<(), OfflineError> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::parquet::schema::types::ColumnPath;
    let io = |e: &dyn std::fmt::Display| OfflineError::Io { path: path.display().to_string(), message: e.to_string() };
    // Dictionaries only for strings and bytes: for numbers (mostly distinct values in
    // a training set) building one cost a third of the write, for little size.
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(FRAME_ROW_GROUP))
        .set_dictionary_enabled(false);
    for f in batch.schema().fields() {
        if matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Binary | DataType::LargeBinary
        ) {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    // Written beside the target and renamed into place: a failed write leaves no file.
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = write_row_groups(batch, &tmp, path, props.build())
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io(&e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `batch` to `tmp` one row group at a time, each row group's columns encoded
/// on every core at once; errors name `target`, the file the user asked for.
fn write_row_groups(
    batch: &RecordBatch,
    tmp: &Path,
    target: &Path,
    props: datafusion::parquet::file::properties::WriterProperties,
) -> Result<(), OfflineError> {
    use datafusion::parquet::arrow::arrow_writer::{
        compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn,
    };
    use datafusion::parquet::arrow::ArrowWriter;
    let io =
        |e: &dyn std::fmt::Display| OfflineError::Io { path: target.display().to_string(), message: e.to_string() };
    let file = std::fs::File::create(tmp).map_err(|e| io(&e))?;
    let schema = batch.schema();
    let writer =
        ArrowWriter::try_new(std::io::BufWriter::new(file), schema.clone(), Some(props)).map_err(|e| io(&e))?;
    let (mut writer, factory) = writer.into_serialized_writer().map_err(|e| io(&e))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(schema.fields().len()).max(1);
    let mut offset = 0;
    let mut group = 0;
    while offset < batch.num_rows() {
        let rows = batch.slice(offset, FRAME_ROW_GROUP.min(batch.num_rows() - offset));
        // Each field's column writers (one per Parquet leaf: one for a flat column).
        let mut writers = factory.create_column_writers(group).map_err(|e| io(&e))?.into_iter();
        let mut fields: Vec<Option<(Vec<ArrowLeafColumn>, Vec<ArrowColumnWriter>)>> = Vec::new();
        for (f, array) in schema.fields().iter().zip(rows.columns()) {
            let leaves = compute_leaves(f, array).map_err(|e| io(&e))?;
            let mine: Vec<_> = writers.by_ref().take(leaves.len()).collect();
            fields.push(Some((leaves, mine)));
        }
        // Thread t encodes fields t, t + threads, …
        let chunks: Vec<Vec<(usize, Vec<ArrowColumnChunk>)>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let mine: Vec<_> =
                        (t..fields.len()).step_by(threads).map(|i| (i, fields[i].take().expect("once"))).collect();
                    s.spawn(move || {
                        mine.into_iter()
                            .map(|(i, (leaves, writers))| {
                                let mut chunks = Vec::with_capacity(writers.len());
                                for (leaf, mut w) in leaves.iter().zip(writers) {
                                    w.write(leaf)?;
                                    chunks.push(w.close()?);
                                }
                                Ok((i, chunks))
                            })
                            .collect::<Result<Vec<_>, datafusion::parquet::errors::ParquetError>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a column encoder panicked")).collect::<Result<_, _>>()
        })
        .map_err(|e| io(&e))?;
        let mut chunks: Vec<_> = chunks.into_iter().flatten().collect();
        chunks.sort_by_key(|(i, _)| *i);
        let mut row_group = writer.next_row_group().map_err(|e| io(&e))?;
        for chunk in chunks.into_iter().flat_map(|(_, c)| c) {
            chunk.append_to_row_group(&mut row_group).map_err(|e| io(&e))?;
        }
        row_group.close().map_err(|e| io(&e))?;
        offset += rows.num_rows();
        group += 1;
    }
    writer.close().map_err(|e| io(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array};

    /// A file large enough to be scanned as several partitions comes back in file order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_frames_keep_the_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entities.csv");
        let n = 400_000;
        let mut text = String::from("source_name,event_timestamp,label\n");
        for i in 0..n {
            text.push_str(&format!("Device number {},2024-01-{:02}T{:02}:00:00,{i}\n", i % 977, 1 + i % 28, i % 24));
        }
        assert!(text.len() > 16 << 20, "bigger than DataFusion's repartitioning threshold");
        std::fs::write(&path, text).unwrap();
        let frame = read_frame(&path).await.unwrap();
        let labels = frame.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(labels.len(), n);
        assert!(labels.values().iter().enumerate().all(|(i, v)| *v == i as i64), "rows out of order");
    }

    /// A frame larger than a row group (with a nested column) is written in several
    /// and reads back whole and in order; a write that cannot happen is an error
    /// naming the file, and leaves nothing.
    #[tokio::test]
    async fn frames_are_written_by_row_group_and_atomically() {
        use datafusion::arrow::array::StringArray;
        let dir = tempfile::tempdir().unwrap();
        let n = FRAME_ROW_GROUP * 2 + 17;
        let ids = Int64Array::from_iter_values((0..n as i64).rev());
        let names = StringArray::from_iter_values((0..n).map(|i| format!("e{i}")));
        let lists =
            datafusion::arrow::array::ListArray::from_iter_primitive::<datafusion::arrow::datatypes::Int64Type, _, _>(
                (0..n as i64).map(|i| (i % 5 != 0).then(|| (0..i % 3).map(Some).collect::<Vec<_>>())),
            );
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as Arc<dyn Array>),
            ("name", Arc::new(names) as Arc<dyn Array>),
            ("list", Arc::new(lists) as Arc<dyn Array>),
        ])
        .unwrap();
        let w = Warehouse::new(1);
        let path = dir.path().join("out.parquet");
        write_frame(&w, batch.clone(), &path).await.unwrap();
        let meta = datafusion::parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap())
            .map(|r| datafusion::parquet::file::reader::FileReader::metadata(&r).num_row_groups())
            .unwrap();
        assert_eq!(meta, 3);
        let back = read_frame(&path).await.unwrap();
        assert_eq!(back.column(0), batch.column(0));
        // (DataFusion reads strings as Utf8View.)
        let strings = datafusion::arrow::compute::cast(back.column(1), &datafusion::arrow::datatypes::DataType::Utf8);
        assert_eq!(&strings.unwrap(), batch.column(1));
        assert_eq!(back.column(2), batch.column(2));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");

        let missing = dir.path().join("no-such-folder/out.parquet");
        let err = write_frame(&w, batch, &missing).await.unwrap_err().to_string();
        assert!(err.contains("no-such-folder/out.parquet"), "{err}");
        assert!(!missing.exists());
    }
}
