//! Reading and writing whole frames (entity rows in, training sets out) as Parquet or CSV.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::MemTable;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions};

use crate::{OfflineError, Warehouse};

/// A training set: the entity rows and the features, each feature column kept as
/// the distinct winning values (in table order) and each entity row's position in
/// them. Row ranges are put in entity order only when asked for, so a writer holds
/// one row group's values at a time, never the whole set twice.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    schema: SchemaRef,
    columns: Vec<Column>,
    rows: usize,
}

#[derive(Debug, Clone)]
enum Column {
    /// Already in row order.
    Plain(ArrayRef),
    /// Row `r` is `values[slot[r]]`; a null slot is a null value.
    Taken { values: ArrayRef, slot: Arc<UInt32Array> },
    /// Nothing matched: every row is null.
    Nulls(DataType),
}

impl TrainingSet {
    /// `plain`: the columns already in row order (the entity columns), then one
    /// `(values, slot)` per feature, `None` when no row has a value; `schema` names
    /// them all, in that order.
    pub fn new(
        schema: SchemaRef,
        plain: Vec<ArrayRef>,
        taken: Vec<Option<(ArrayRef, Arc<UInt32Array>)>>,
        rows: usize,
    ) -> Result<TrainingSet, OfflineError> {
        let mut columns: Vec<Column> = plain.into_iter().map(Column::Plain).collect();
        for (i, t) in taken.into_iter().enumerate() {
            let field = schema
                .fields()
                .get(columns.len())
                .ok_or_else(|| OfflineError::Backend(format!("training set: no field for feature column {i}")))?;
            columns.push(match t {
                Some((values, slot)) => Column::Taken { values, slot },
                None => Column::Nulls(field.data_type().clone()),
            });
        }
        let set = TrainingSet { schema, columns, rows };
        let lengths_agree = set.columns.iter().all(|c| match c {
            Column::Plain(a) => a.len() == rows,
            Column::Taken { slot, .. } => slot.len() == rows,
            Column::Nulls(_) => true,
        });
        if set.columns.len() != set.schema.fields().len() || !lengths_agree {
            return Err(OfflineError::Backend("training set: columns and rows disagree".into()));
        }
        Ok(set)
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// Rows `offset..offset + len` of column `i`.
    pub fn column(&self, i: usize, offset: usize, len: usize) -> Result<ArrayRef, OfflineError> {
        Ok(match &self.columns[i] {
            Column::Plain(a) => a.slice(offset, len),
            Column::Taken { values, slot } => take(values.as_ref(), &slot.slice(offset, len), None)?,
            Column::Nulls(t) => new_null_array(t, len),
        })
    }

    /// Rows `offset..offset + len`, every column.
    pub fn slice(&self, offset: usize, len: usize) -> Result<RecordBatch, OfflineError> {
        let columns = (0..self.columns.len()).map(|i| self.column(i, offset, len)).collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(len));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }

    /// The whole set as one batch.
    pub fn into_batch(self) -> Result<RecordBatch, OfflineError> {
        self.slice(0, self.rows)
    }
}

impl From<RecordBatch> for TrainingSet {
    fn from(batch: RecordBatch) -> TrainingSet {
        let rows = batch.num_rows();
        TrainingSet {
            schema: batch.schema(),
            columns: batch.columns().iter().cloned().map(Column::Plain).collect(),
            rows,
        }
    }
}

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

/// Writes a frame as a single Parquet or CSV file (by extension). Parquet is
/// written row group by row group, snappy-compressed.
pub async fn write_frame(
    warehouse: &Warehouse,
    frame: impl Into<TrainingSet>,
    path: &Path,
) -> Result<(), OfflineError> {
    let batch = frame.into();
    if is_csv(path) {
        // (At least one batch, so that an empty frame still gets its header.)
        let chunks = (0..batch.num_rows().max(1))
            .step_by(FRAME_ROW_GROUP)
            .map(|at| batch.slice(at, FRAME_ROW_GROUP.min(batch.num_rows() - at)))
            .collect::<Result<Vec<_>, _>>()?;
        let table = MemTable::try_new(batch.schema(), vec![chunks])?;
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

fn write_parquet(batch: &TrainingSet, path: &Path) -> Result<(), OfflineError> {
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

/// Row groups being encoded at once: the next one is under way while one is
/// appended, and memory holds at most this many row groups' pages.
const GROUPS_IN_FLIGHT: usize = 2;

/// One column chunk to encode: row group, field, and the field's column writers
/// (one per Parquet leaf: one for a flat column).
type Task = (usize, usize, Vec<datafusion::parquet::arrow::arrow_writer::ArrowColumnWriter>);
type Encoded = (usize, usize, Vec<datafusion::parquet::arrow::arrow_writer::ArrowColumnChunk>);

/// Writes `batch` to `tmp` row group by row group. A worker per core takes column
/// chunks from a queue (the costliest columns first), puts them in row order and
/// encodes them, so no core waits at the end of a row group; this thread appends
/// each row group as soon as all its columns are done. Errors name `target`, the
/// file the user asked for.
fn write_row_groups(
    batch: &TrainingSet,
    tmp: &Path,
    target: &Path,
    props: datafusion::parquet::file::properties::WriterProperties,
) -> Result<(), OfflineError> {
    use datafusion::parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk};
    use datafusion::parquet::arrow::ArrowWriter;
    use std::sync::{mpsc, Mutex};
    let io =
        |e: &dyn std::fmt::Display| OfflineError::Io { path: target.display().to_string(), message: e.to_string() };
    let file = std::fs::File::create(tmp).map_err(|e| io(&e))?;
    let schema = &batch.schema();
    let writer =
        ArrowWriter::try_new(std::io::BufWriter::new(file), schema.clone(), Some(props)).map_err(|e| io(&e))?;
    let (mut writer, factory) = writer.into_serialized_writer().map_err(|e| io(&e))?;
    let rows = batch.num_rows();
    let groups = rows.div_ceil(FRAME_ROW_GROUP);
    let fields = schema.fields().len();
    // How many leaves each field has (an empty piece of the column tells).
    let leaves: Vec<usize> = (0..fields)
        .map(|i| Ok(compute_leaves(&schema.fields()[i], &batch.column(i, 0, 0)?).map_err(|e| io(&e))?.len()))
        .collect::<Result<_, OfflineError>>()?;
    // Strings and nested columns cost the most to gather and encode: queued first.
    let mut by_cost: Vec<usize> = (0..fields).collect();
    by_cost.sort_by_key(|i| schema.fields()[*i].data_type().is_primitive());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(fields * groups).max(1);

    let encode = |(group, i, writers): Task| -> Result<Encoded, OfflineError> {
        let offset = group * FRAME_ROW_GROUP;
        let array = batch.column(i, offset, FRAME_ROW_GROUP.min(rows - offset))?;
        let leaves = compute_leaves(&schema.fields()[i], &array).map_err(|e| io(&e))?;
        drop(array);
        let mut chunks = Vec::with_capacity(writers.len());
        for (leaf, mut w) in leaves.iter().zip(writers) {
            w.write(leaf).map_err(|e| io(&e))?;
            chunks.push(w.close().map_err(|e| io(&e))?);
        }
        Ok((group, i, chunks))
    };
    let (task_tx, task_rx) = mpsc::channel::<Task>();
    let task_rx = Mutex::new(task_rx);
    let (done_tx, done_rx) = mpsc::channel::<Result<Encoded, OfflineError>>();
    std::thread::scope(|s| -> Result<(), OfflineError> {
        for _ in 0..threads {
            let (task_rx, done_tx, encode) = (&task_rx, done_tx.clone(), &encode);
            let worker = move || loop {
                let task = task_rx.lock().expect("no worker panics holding it").recv();
                let Ok(task) = task else { return };
                if done_tx.send(encode(task)).is_err() {
                    return;
                }
            };
            std::thread::Builder::new()
                .name("frame-writer".into())
                .spawn_scoped(s, worker)
                .map_err(|e| OfflineError::Backend(format!("cannot start a column encoder: {e}")))?;
        }
        drop(done_tx);
        // Moved in, so that leaving (done or failed) drops it, which stops the workers.
        let task_tx = task_tx;
        let mut done: Vec<Vec<Option<Vec<ArrowColumnChunk>>>> = Vec::new();
        let (mut queued, mut written) = (0, 0);
        while written < groups {
            while queued < groups && queued < written + GROUPS_IN_FLIGHT {
                let mut writers: Vec<Option<_>> = Vec::new();
                let mut all = factory.create_column_writers(queued).map_err(|e| io(&e))?.into_iter();
                for n in &leaves {
                    writers.push(Some(all.by_ref().take(*n).collect::<Vec<_>>()));
                }
                for i in &by_cost {
                    let task = (queued, *i, writers[*i].take().expect("once"));
                    task_tx.send(task).map_err(|_| OfflineError::Backend("a column encoder stopped".into()))?;
                }
                done.push((0..fields).map(|_| None).collect());
                queued += 1;
            }
            let (group, i, chunks) =
                done_rx.recv().map_err(|_| OfflineError::Backend("a column encoder stopped".into()))??;
            done[group][i] = Some(chunks);
            while written < groups && done[written].iter().all(Option::is_some) {
                let mut row_group = writer.next_row_group().map_err(|e| io(&e))?;
                for chunk in std::mem::take(&mut done[written]).into_iter().flatten().flatten() {
                    chunk.append_to_row_group(&mut row_group).map_err(|e| io(&e))?;
                }
                row_group.close().map_err(|e| io(&e))?;
                written += 1;
            }
        }
        Ok(())
    })?;
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

    /// A training set's features are put in row order row group by row group: what
    /// is written (Parquet and CSV) and `into_batch` equal the values looked up one
    /// row at a time, nulls (no match, or nothing matched at all) included.
    #[tokio::test]
    async fn training_sets_come_out_in_row_order() {
        use datafusion::arrow::array::{Float64Array, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        let n = FRAME_ROW_GROUP * 2 + 5;
        let values = Float64Array::from_iter((0..1000).map(|v: i32| (v % 7 != 0).then_some(v as f64 / 2.0)));
        let names = StringArray::from_iter_values((0..1000).map(|v| format!("n{v}")));
        // Row r takes value (r * 7919) % 1000, except every 13th row (no match).
        let slot = |r: usize| (!r.is_multiple_of(13)).then_some(((r * 7919) % 1000) as u32);
        let slots = Arc::new(UInt32Array::from_iter((0..n).map(slot)));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("none", DataType::Int64, true),
        ]));
        let set = TrainingSet::new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n as i64))],
            vec![Some((Arc::new(values.clone()), slots.clone())), Some((Arc::new(names.clone()), slots)), None],
            n,
        )
        .unwrap();
        let want = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|r| slot(r).and_then(|s| values.is_valid(s as usize).then(|| values.value(s as usize)))),
                )),
                Arc::new(StringArray::from_iter((0..n).map(|r| slot(r).map(|s| names.value(s as usize))))),
                Arc::new(Int64Array::new_null(n)),
            ],
        )
        .unwrap();
        assert_eq!(set.clone().into_batch().unwrap(), want);

        let dir = tempfile::tempdir().unwrap();
        let w = Warehouse::new(1);
        for file in ["set.parquet", "set.csv"] {
            let path = dir.path().join(file);
            write_frame(&w, set.clone(), &path).await.unwrap();
            let back = read_frame(&path).await.unwrap();
            assert_eq!(back.num_rows(), n, "{file}");
            for (i, column) in want.columns().iter().enumerate().take(3) {
                let got = datafusion::arrow::compute::cast(back.column(i), column.data_type()).unwrap();
                assert_eq!(&got, column, "{file}: column {i}");
            }
            assert_eq!(back.column(3).logical_null_count(), n, "{file}: the column no row matched");
        }
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
