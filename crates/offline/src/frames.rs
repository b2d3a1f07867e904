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

/// Writes one batch as a single Parquet or CSV file (by extension).
pub async fn write_frame(warehouse: &Warehouse, batch: RecordBatch, path: &Path) -> Result<(), OfflineError> {
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    let df = warehouse.context().read_table(Arc::new(table))?;
    let options = DataFrameWriteOptions::new().with_single_file_output(true);
    let p = path.display().to_string();
    if is_csv(path) {
        df.write_csv(&p, options, None).await?;
    } else {
        df.write_parquet(&p, options, Some(fast_parquet())).await?;
    }
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
}
