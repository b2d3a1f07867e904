//! The BigQuery client against the bqemulator that `scripts/test.sh` starts
//! (`AMORA_BQ_EMULATOR` = REST host:port, `AMORA_BQ_EMULATOR_GRPC` = Storage Read host:port).

use std::sync::Arc;

use amora_bigquery::rest::Rest;
use amora_bigquery::sql::{Param, TableRef};
use amora_bigquery::storage::StorageRead;
use amora_gauth::Credentials;

/// The tests take turns: once, with both running at once, `tabledata.list` paging
/// stopped at 1,400 of 2,000 rows. The emulator answers a page with a LIMIT/OFFSET
/// query and a separate COUNT(*), and has not shown it with one test at a time (not
/// proven to be the cause). The turns keep this file about amora, not the emulator.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn emulator() -> Option<(String, String)> {
    match (std::env::var("AMORA_BQ_EMULATOR"), std::env::var("AMORA_BQ_EMULATOR_GRPC")) {
        (Ok(r), Ok(g)) if !r.is_empty() => Some((format!("http://{r}"), format!("http://{g}"))),
        _ => {
            assert!(
                std::env::var("TEST_INTEGRATION").is_err(),
                "TEST_INTEGRATION=1 but AMORA_BQ_EMULATOR is not set (run scripts/test.sh)"
            );
            None
        }
    }
}

#[test]
fn queries_parameters_errors_and_both_read_paths_agree() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let Some((rest_url, grpc_url)) = emulator() else { return eprintln!("skipping: no BigQuery emulator") };
    let creds = Arc::new(Credentials::anonymous());
    let mut rest = Rest::new(&rest_url, "test-project", None, creds.clone());
    rest.page_rows = 700; // several pages for 2,000 rows
    let dataset = format!("amora_client_{}", uuid::Uuid::new_v4().simple());
    rest.ensure_dataset(&dataset).unwrap();
    rest.ensure_dataset(&dataset).unwrap(); // idempotent
    let t = TableRef::new("test-project", &dataset, "numbers").unwrap();
    let done = rest
        .run(
            &format!(
                "CREATE OR REPLACE TABLE {} AS SELECT n, CAST(n AS FLOAT64) / 2 AS half, CONCAT('k', CAST(n AS STRING)) AS k, TIMESTAMP_ADD(@t0, INTERVAL n SECOND) AS ts FROM UNNEST(GENERATE_ARRAY(1, 2500)) AS n WHERE n <= @max",
                t.sql()
            ),
            &[Param::timestamp("t0", 1_704_067_200_000_000), Param::int64("max", 2000)],
            Some(&dataset),
        )
        .unwrap();
    assert!(!done.job_id.is_empty());
    let storage = StorageRead::new(&grpc_url, creds);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let batches = rt.block_on(storage.read_table(&t, &[])).unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2000);
    let (fields, json_rows) = rest.list_rows(&t).unwrap();
    assert_eq!(json_rows.len(), 2000, "REST paging returns every row");
    assert_eq!(fields.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["n", "half", "k", "ts"]);
    let mut ns: Vec<i64> = json_rows.iter().map(|r| r[0].as_str().unwrap().parse().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, (1..=2000).collect::<Vec<_>>(), "every row once across the pages");
    // jobs.query + getQueryResults paging, with a parameter.
    let (qf, qrows) = rest
        .query_rows(&format!("SELECT n, ts FROM {} WHERE n > @min", t.sql()), &[Param::int64("min", 500)], None)
        .unwrap();
    assert_eq!(qf.len(), 2);
    assert_eq!(qrows.len(), 1500);
    let (_, one) = rest.query_rows("SELECT COUNT(*) AS c FROM numbers", &[], Some(&dataset)).unwrap();
    assert_eq!(one[0][0].as_str(), Some("2000"));
    // A bad query names the problem; an unknown table reads as a clean error.
    let err = rest.run("SELECT nope FROM missing_table", &[], Some(&dataset)).unwrap_err().to_string();
    assert!(err.contains("BigQuery rejected the query"), "{err}");
    let missing = TableRef::new("test-project", &dataset, "missing").unwrap();
    assert!(rt.block_on(storage.read_table(&missing, &[])).is_err());
    assert!(rest.table(&missing).unwrap().is_none());
    rest.delete_table(&t).unwrap();
    assert!(rest.table(&t).unwrap().is_none());
}

/// A source file loaded in several chunks arrives whole, and no scratch table is left.
#[test]
fn a_source_file_is_loaded_in_chunks_then_swapped_in() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    use amora_model::{Column, FileFormat, Scalar, Source, ValueType};
    use amora_offline::OfflineStore;
    let Some((rest_url, grpc_url)) = emulator() else { return eprintln!("skipping: no BigQuery emulator") };
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("k,v,ts\n");
    for i in 0..30_000 {
        csv.push_str(&format!("key{},{i},2024-01-01T00:00:{:02}\n", i % 37, i % 60));
    }
    std::fs::write(dir.path().join("raw.csv"), csv).unwrap();
    let col =
        |n: &str, s: Scalar| Column { name: n.into(), ty: ValueType::Scalar(s), doc: String::new(), tests: vec![] };
    let source = Source {
        name: "raw".into(),
        description: String::new(),
        owner: String::new(),
        tags: Default::default(),
        location: "raw.csv".into(),
        format: FileFormat::Csv,
        columns: vec![col("k", Scalar::String), col("v", Scalar::Int64), col("ts", Scalar::UnixTimestamp)],
        file: dir.path().join("sources.yml"),
    };
    let dataset = format!("amora_load_{}", uuid::Uuid::new_v4().simple());
    let config = amora_bigquery::BigQueryConfig {
        project_id: "test-project".into(),
        dataset: dataset.clone(),
        endpoint: Some(rest_url.clone()),
        storage_endpoint: Some(grpc_url),
        ..Default::default()
    };
    let mut store = amora_bigquery::BigQueryStore::new(&config, &|_| None).unwrap();
    store.load_chunk_bytes = 4096; // one load job per scanned batch (8,192 rows): four
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(store.prepare_source(&source, dir.path())).unwrap();
    let batches = rt.block_on(store.query("SELECT COUNT(*) AS n, SUM(v) AS s FROM raw")).unwrap();
    let row = amora_offline::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(row.contains("30000") && row.contains(&(0..30_000i64).sum::<i64>().to_string()), "{row}");
    // Pushed rows (`/push` with `to: offline`) are appended by one load job.
    {
        use amora_offline::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
        let pushed = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(vec!["pushed", "pushed"])) as ArrayRef),
            ("v", Arc::new(Int64Array::from(vec![1_000_000, 2_000_000])) as ArrayRef),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_704_153_600_000_000, 1_704_153_601_000_000])
                        .with_timezone("UTC"),
                ) as ArrayRef,
            ),
        ])
        .unwrap();
        let table = format!("test-project.{dataset}.raw");
        assert_eq!(rt.block_on(store.append(&table, "ts", pushed)).unwrap(), 2);
        let batches =
            rt.block_on(store.query("SELECT COUNT(*) AS n, SUM(v) AS s, MAX(ts) AS latest FROM raw")).unwrap();
        let row = amora_offline::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        let sum = (0..30_000i64).sum::<i64>() + 3_000_000;
        assert!(row.contains("30002") && row.contains(&sum.to_string()), "{row}");
        assert!(row.contains("2024-01-02T00:00:01"), "the pushed timestamps, in UTC: {row}");
        let err = rt.block_on(store.append(
            "not a table",
            "ts",
            RecordBatch::new_empty(Arc::new(amora_offline::arrow::datatypes::Schema::empty())),
        ));
        assert!(err.unwrap_err().to_string().contains("not a BigQuery table"));
    }
    let rest = Rest::new(&rest_url, "test-project", None, Arc::new(Credentials::anonymous()));
    let (_, tables) = rest
        .query_rows(&format!("SELECT table_name FROM `test-project.{dataset}.INFORMATION_SCHEMA.TABLES`"), &[], None)
        .unwrap();
    let names: Vec<String> = tables.iter().map(|r| r[0].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(names, ["raw"], "only the source's table is left");
}
