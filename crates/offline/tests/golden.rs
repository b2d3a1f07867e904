//! The native as-of join against golden output of Feast 0.67's DuckDB offline
//! store (`tests/golden/make_golden.py` regenerates it), compared value by value.

use std::path::Path;

use amora_offline::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use amora_offline::arrow::compute::{cast, sort_to_indices, take_record_batch};
use amora_offline::arrow::datatypes::DataType;
use amora_offline::frames::read_frame;
use amora_offline::historical::{get_historical_features, ViewSpec};
use amora_offline::Warehouse;

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

fn sorted_by_row_id(b: &RecordBatch) -> RecordBatch {
    let idx = sort_to_indices(b.column_by_name("row_id").unwrap(), None, None).unwrap();
    take_record_batch(b, &idx).unwrap()
}

fn floats(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = cast(b.column_by_name(name).unwrap(), &DataType::Float64).unwrap();
    c.as_any().downcast_ref::<Float64Array>().unwrap().iter().collect()
}

#[test]
fn matches_feast_duckdb_store_value_by_value() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let w = Warehouse::new(2);
        let entities = read_frame(&dir().join("entities.parquet")).await.unwrap();
        let expected = sorted_by_row_id(&read_frame(&dir().join("expected.parquet")).await.unwrap());
        let view = ViewSpec {
            name: "stats".into(),
            join_keys: vec!["user_id".into()],
            event_timestamp: "event_timestamp".into(),
            created_timestamp: Some("created".into()),
            ttl_seconds: 7200,
            features: vec!["f_float".into(), "f_int".into(), "f_str".into()],
            feature_types: vec![],
            location: dir().join("features.parquet").display().to_string(),
        };
        let got = get_historical_features(&w, &entities, "event_timestamp", &[view], false).await.unwrap();
        // Our output keeps the entity order; Feast's does not, so compare by row_id.
        let ids: Vec<i64> =
            got.column_by_name("row_id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec();
        assert_eq!(ids, (0..ids.len() as i64).collect::<Vec<_>>(), "input order kept");
        assert_eq!(got.num_rows(), expected.num_rows());
        for col in ["row_id", "user_id", "label", "f_float", "f_int"] {
            assert_eq!(floats(&got, col), floats(&expected, col), "column {col}");
        }
        let strs = |b: &RecordBatch| -> Vec<Option<String>> {
            let c = cast(b.column_by_name("f_str").unwrap(), &DataType::Utf8).unwrap();
            c.as_any().downcast_ref::<StringArray>().unwrap().iter().map(|s| s.map(String::from)).collect()
        };
        assert_eq!(strs(&got), strs(&expected));
        let ts = |b: &RecordBatch| cast(b.column_by_name("event_timestamp").unwrap(), &DataType::Int64).unwrap();
        assert_eq!(
            got.schema().field_with_name("event_timestamp").unwrap().data_type(),
            expected.schema().field_with_name("event_timestamp").unwrap().data_type(),
            "UTC-aware output"
        );
        assert_eq!(ts(&got).as_ref(), ts(&expected).as_ref());
        let matched = floats(&got, "f_int").iter().filter(|v| v.is_some()).count();
        assert!(matched > 500 && matched < got.num_rows(), "{matched} rows matched: the fixture must have both");
    });
}
