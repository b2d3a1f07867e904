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

/// The fixture's feature view, as `make_golden.py` declares it to Feast.
fn stats_view() -> ViewSpec {
    ViewSpec {
        name: "stats".into(),
        join_keys: vec!["user_id".into()],
        event_timestamp: "event_timestamp".into(),
        created_timestamp: Some("created".into()),
        ttl_seconds: 7200,
        features: vec!["f_float".into(), "f_int".into(), "f_str".into()],
        feature_types: vec![],
        location: dir().join("features.parquet").display().to_string(),
    }
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
        let view = stats_view();
        let got = get_historical_features(&w, &entities, "event_timestamp", &[view], false)
            .await
            .unwrap()
            .into_batch()
            .unwrap();
        // The same join in parts: a key-pass budget of a quarter of the table's.
        let rows = read_frame(Path::new(&stats_view().location)).await.unwrap().num_rows();
        let small = Warehouse::new(2).with_join_memory(rows * 64 / 4);
        let parted = get_historical_features(&small, &entities, "event_timestamp", &[stats_view()], false)
            .await
            .unwrap()
            .into_batch()
            .unwrap();
        assert_eq!(parted, got, "joined in parts by key");
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

/// Entity rows that match nothing keep their rows with null features (no feature
/// column is read); an empty frame gives an empty training set with every column;
/// a join key of the wrong type is an error, even when the frame is empty.
#[test]
fn no_matches_and_empty_frames_still_check_the_keys() {
    use amora_offline::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let w = Warehouse::new(2);
        let entities = read_frame(&dir().join("entities.parquet")).await.unwrap();
        let views = [stats_view()];
        let key = entities.schema().index_of("user_id").unwrap();
        let mut columns = entities.columns().to_vec();
        columns[key] = Arc::new(Int64Array::from_iter_values((0..entities.num_rows() as i64).map(|i| 1_000_000 + i)));
        let unknown = RecordBatch::try_new(entities.schema(), columns).unwrap();
        let got = get_historical_features(&w, &unknown, "event_timestamp", &views, false)
            .await
            .unwrap()
            .into_batch()
            .unwrap();
        assert_eq!(got.num_rows(), entities.num_rows());
        for f in ["f_float", "f_int", "f_str"] {
            assert_eq!(got.column_by_name(f).unwrap().null_count(), entities.num_rows(), "{f}");
        }

        let empty = entities.slice(0, 0);
        let got =
            get_historical_features(&w, &empty, "event_timestamp", &views, false).await.unwrap().into_batch().unwrap();
        assert_eq!(got.num_rows(), 0);
        assert!(got.column_by_name("f_str").is_some());

        let fields: Vec<Field> =
            entities
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    if f.name() == "user_id" {
                        Field::new("user_id", DataType::Utf8, true)
                    } else {
                        f.as_ref().clone()
                    }
                })
                .collect();
        let wrong = RecordBatch::new_empty(Arc::new(Schema::new(fields)));
        let err = get_historical_features(&w, &wrong, "event_timestamp", &views, false).await.unwrap_err().to_string();
        assert!(err.contains("entity column `user_id` has type Utf8 but feature view `stats` joins on Int64"), "{err}");
    });
}
