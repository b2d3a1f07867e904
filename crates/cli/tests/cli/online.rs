//! Materialization into the embedded online store and online reads, through the CLI.

use amora_proto::{FeatureView, ObjectKind};
use prost::Message;

use crate::support::*;

fn intervals(dir: &std::path::Path) -> Vec<(i64, i64)> {
    let reg = registry(&dir.join("data/registry.db"));
    let (_, f) = reg.objects(ObjectKind::FeatureView, "health").next().unwrap();
    let v = FeatureView::decode(f.payload()).unwrap();
    let meta = v.meta.unwrap();
    assert_eq!(meta.state, 4, "AVAILABLE_ONLINE");
    meta.materialization_intervals
        .iter()
        .map(|i| (i.start_time.unwrap().seconds, i.end_time.unwrap().seconds))
        .collect()
}

#[test]
fn materialize_records_intervals_and_reads_answer_with_statuses() {
    let (_tmp, dir) = example("health");
    amora(&dir, &["materialize"]).ok();
    let err = amora(&dir, &["feature-store", "materialize", "2024-01-01", "2024-02-01"]).fails().stderr;
    assert!(err.contains("run `amora feature-store apply` first"), "{err}");
    amora(&dir, &["feature-store", "apply"]).ok();
    let err = amora(&dir, &["feature-store", "materialize", "2024-02-01", "2024-01-01"]).fails().stderr;
    assert!(err.contains("START is after END"), "{err}");
    amora(&dir, &["feature-store", "materialize", "2024-01-01T00:00:00", "2024-01-15T00:00:00"]).ok();
    assert_eq!(intervals(&dir), vec![(1_704_067_200, 1_705_276_800)]);
    let read = |entities: &[&str]| {
        let mut a = vec![
            "feature-store",
            "get-online-features",
            "--features",
            "step_count_by_source:value_sum,step_count_by_source:value_count",
            "--json",
        ];
        for e in entities {
            a.extend(["--entity", e]);
        }
        json(amora(&dir, &a))
    };
    let first = read(&["source_name=Fitbit", "source_name=nobody"]);
    assert_eq!(first["metadata"]["feature_names"], serde_json::json!(["value_sum", "value_count"]));
    // Values from 2024: far older than the 1h TTL at read time.
    assert_eq!(first["results"][0]["statuses"], serde_json::json!(["OUTSIDE_MAX_AGE", "NOT_FOUND"]));
    assert!(first["results"][0]["event_timestamps"][0].as_str().unwrap() < "2024-01-15T00:00:01Z");
    // Incremental: from the recorded end to the given end; the values move forward in time.
    amora(&dir, &["feature-store", "materialize-incremental", "2024-02-01T00:00:00"]).ok();
    assert_eq!(intervals(&dir), vec![(1_704_067_200, 1_705_276_800), (1_705_276_800, 1_706_745_600)]);
    let second = read(&["source_name=Fitbit"]);
    assert!(second["results"][0]["event_timestamps"][0].as_str().unwrap() > "2024-01-15T00:00:00Z", "{second}");
    // The same interval again changes nothing online.
    amora(&dir, &["feature-store", "materialize", "2024-01-01T00:00:00", "2024-02-01T00:00:00"]).ok();
    assert_eq!(read(&["source_name=Fitbit"])["results"], second["results"]);
    let err = amora(
        &dir,
        &[
            "feature-store",
            "get-online-features",
            "--features",
            "step_count_by_source:nope",
            "--entity",
            "source_name=x",
        ],
    )
    .fails()
    .stderr;
    assert!(err.contains("has no feature nope") && err.contains("it has: value_avg"), "{err}");
    let err =
        amora(&dir, &["feature-store", "materialize", "2024-01-01", "2024-02-01", "--view", "nope"]).fails().stderr;
    assert!(err.contains("Feature view nope does not exist in project health"), "{err}");
}

#[test]
fn redis_unreachable_is_a_clear_error_and_records_nothing() {
    let (_tmp, dir) = example("health");
    amora(&dir, &["materialize"]).ok();
    amora(&dir, &["feature-store", "apply"]).ok();
    let t0 = std::time::Instant::now();
    let run: Run = amora_cmd(&dir, &["feature-store", "materialize", "2024-01-01", "2024-02-01"])
        .env("AMORA_FEATURE_STORE_ONLINE_STORE_TYPE", "redis")
        .env("AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG", r#"{"connection_string": "127.0.0.1:1"}"#)
        .output()
        .unwrap()
        .into();
    let err = run.fails().stderr;
    assert!(err.contains("redis 127.0.0.1:1") && err.contains("nothing recorded"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(15));
    let reg = registry(&dir.join("data/registry.db"));
    let (_, f) = reg.objects(ObjectKind::FeatureView, "health").next().unwrap();
    assert!(FeatureView::decode(f.payload()).unwrap().meta.unwrap().materialization_intervals.is_empty());
}

#[test]
fn removing_a_view_removes_its_online_values_and_teardown_clears_the_project() {
    let (_tmp, dir) = example("health");
    amora(&dir, &["materialize"]).ok();
    amora(&dir, &["feature-store", "apply"]).ok();
    amora(&dir, &["feature-store", "materialize", "2024-01-01", "2024-03-01"]).ok();
    let status = |dir: &std::path::Path| {
        json(amora(
            dir,
            &[
                "feature-store",
                "get-online-features",
                "--features",
                "step_count_by_source:value_sum",
                "--entity",
                "source_name=Fitbit",
                "--json",
            ],
        ))["results"][0]["statuses"][0]
            .clone()
    };
    assert_ne!(status(&dir), "NOT_FOUND");
    amora(&dir, &["feature-store", "teardown"]).ok();
    assert_eq!(status(&dir), "NOT_FOUND");
    amora(&dir, &["feature-store", "materialize", "2024-01-01", "2024-03-01"]).ok();
    assert_ne!(status(&dir), "NOT_FOUND");
    assert!(!amora_online_read(&dir).is_empty());
    // Dropping the feature view from the project deletes its values online on apply.
    let yml = dir.join("models/step_count_by_source.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(&yml, &text[..text.find("feature_view:").unwrap()]).unwrap();
    std::fs::remove_file(dir.join("feature_store/feature_services.yml")).unwrap();
    let out = amora(&dir, &["feature-store", "apply"]).ok();
    assert!(out.stdout.contains("Deleted feature view step_count_by_source"), "{}", out.stdout);
    let store = amora_online_read(&dir);
    assert!(store.is_empty(), "values left online: {store:?}");
}

/// Every key left in the example's embedded online store.
fn amora_online_read(dir: &std::path::Path) -> Vec<Vec<u8>> {
    amora_online::embedded::EmbeddedStore::open(&dir.join("data/online.redb")).unwrap().keys().unwrap()
}
