//! The registry workflow through the CLI, on the example project.

use amora_proto::{FeatureView, ObjectKind};
use prost::Message;

use crate::support::*;

#[test]
fn plan_apply_then_nothing_to_do() {
    let (_tmp, dir) = example("health");
    let plan = amora(&dir, &["feature-store", "plan"]).ok().stdout;
    for line in [
        "Created project health",
        "Created entity source_name",
        "Created feature view step_count_by_source",
        "+ features: value_avg (DOUBLE), value_sum (DOUBLE), value_count (INT64)",
        "Created feature service step_activity",
        "+ features: step_count_by_source:value_avg, step_count_by_source:value_sum",
        "Created feature service amora_fs__step_count_by_source",
        "5 to create, 0 to update, 0 to delete.",
    ] {
        assert!(plan.contains(line), "missing {line:?} in:\n{plan}");
    }
    assert!(!plan.contains("__dummy") && !plan.contains("data source"), "{plan}");
    assert!(!dir.join("data/registry.db").exists(), "plan must not write");

    let apply = amora(&dir, &["feature-store", "apply"]).ok().stdout;
    assert!(apply.contains("Registry version 1"), "{apply}");
    let reg = registry(&dir.join("data/registry.db"));
    let count = |k| reg.objects(k, "health").count();
    assert_eq!(count(ObjectKind::Project), 1);
    assert_eq!(count(ObjectKind::Entity), 2, "source_name and Feast's hidden __dummy");
    assert_eq!(count(ObjectKind::FeatureView), 1);
    assert_eq!(count(ObjectKind::FeatureService), 2);
    assert_eq!(count(ObjectKind::DataSource), 2, "the model's table and the view's push source");
    assert!(!reg.version_id().is_empty() && reg.last_updated().is_some());

    assert_eq!(amora(&dir, &["feature-store", "plan"]).ok().stdout, "No changes to registry\n");
    assert_eq!(amora(&dir, &["feature-store", "apply"]).ok().stdout, "No changes to registry\n");
    let before = std::fs::read(dir.join("data/registry.db")).unwrap();
    amora(&dir, &["feature-store", "apply"]).ok();
    assert_eq!(before, std::fs::read(dir.join("data/registry.db")).unwrap(), "a no-op apply writes nothing");
}

#[test]
fn edits_show_property_changes_and_history_diff_rollback_work() {
    let (_tmp, dir) = example("health");
    amora(&dir, &["feature-store", "apply"]).ok();
    let yml = dir.join("models/step_count_by_source.yml");
    edit(&yml, "ttl: 1h", "ttl: 2h");
    edit(&yml, "features: [value_avg, value_sum, value_count]", "features: [value_avg, value_sum]");
    edit(&yml, "tags: {team: activity}", "tags: {team: activity, tier: gold}");
    let plan = amora(&dir, &["feature-store", "plan"]).ok().stdout;
    for line in [
        "Updated feature view step_count_by_source",
        "\tttl: \"3600s\" -> \"7200s\"",
        "\ttags.tier: (none) -> \"gold\"",
        "\t- feature value_count",
        "Updated feature service amora_fs__step_count_by_source",
        "0 to create, 2 to update, 0 to delete.",
    ] {
        assert!(plan.contains(line), "missing {line:?} in:\n{plan}");
    }
    let v1 = registry(&dir.join("data/registry.db"));
    amora(&dir, &["feature-store", "apply"]).ok();
    let v2 = registry(&dir.join("data/registry.db"));
    let fv = |r: &amora_proto::RegistryFile| -> FeatureView {
        let (_, f) = r.objects(ObjectKind::FeatureView, "health").next().unwrap();
        FeatureView::decode(f.payload()).unwrap()
    };
    let (m1, m2) = (fv(&v1).meta.unwrap(), fv(&v2).meta.unwrap());
    assert_eq!(m1.created_timestamp, m2.created_timestamp, "created_timestamp survives an update");
    assert!(m2.last_updated_timestamp > m1.last_updated_timestamp);
    // Unchanged objects keep their bytes.
    let entity = |r: &amora_proto::RegistryFile| {
        r.objects(ObjectKind::Entity, "health").map(|(_, f)| f.bytes.clone()).collect::<Vec<_>>()
    };
    assert_eq!(entity(&v1), entity(&v2));

    let history = json(amora(&dir, &["feature-store", "history", "--json"]));
    let versions = history.as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["user"], "tester");
    assert_eq!(versions[1]["parent_version_id"], versions[0]["version_id"]);
    assert!(versions[1]["summary"].to_string().contains("Updated feature view step_count_by_source"));

    let diff = amora(&dir, &["feature-store", "diff", "1", "2"]).ok().stdout;
    assert!(diff.contains("ttl: \"3600s\" -> \"7200s\"") && diff.contains("- feature value_count"), "{diff}");

    let rollback = amora(&dir, &["feature-store", "rollback", "1"]).ok().stdout;
    assert!(rollback.contains("written as v3"), "{rollback}");
    let views = json(amora(&dir, &["feature-store", "list", "feature-views", "--json"]));
    assert_eq!(views[0]["ttl_seconds"], 3600);
    assert_eq!(views[0]["features"].as_array().unwrap().len(), 3);
    // The files still say 2h, so a plan now wants to re-apply the edit.
    assert!(amora(&dir, &["feature-store", "plan"]).ok().stdout.contains("Updated feature view step_count_by_source"));
    assert!(amora(&dir, &["feature-store", "diff", "1", "3"]).ok().stdout.starts_with("No changes"));
    let err = amora(&dir, &["feature-store", "rollback", "9"]).fails().stderr;
    assert!(err.contains("registry version 9"), "{err}");
}

#[test]
fn removing_objects_deletes_them() {
    let (_tmp, dir) = example("health");
    amora(&dir, &["feature-store", "apply"]).ok();
    std::fs::remove_file(dir.join("feature_store/feature_services.yml")).unwrap();
    let out = amora(&dir, &["feature-store", "apply"]).ok().stdout;
    assert!(
        out.contains("Deleted feature service step_activity") && out.contains("0 to create, 0 to update, 1 to delete."),
        "{out}"
    );
    let services = json(amora(&dir, &["feature-store", "list", "feature-services", "--json"]));
    assert_eq!(services.as_array().unwrap().len(), 1);
}

#[test]
fn many_errors_are_reported_together_and_nothing_is_written() {
    let (_tmp, dir) = example("health");
    let yml = dir.join("models/step_count_by_source.yml");
    edit(&yml, "entities: [source_name]", "entities: [source_nam]");
    edit(&yml, "event_timestamp: event_timestamp", "event_timestamp: event_ts");
    edit(&yml, "ttl: 1h", "ttl: 1y");
    edit(&yml, "features: [value_avg, value_sum, value_count]", "features: [value_avg, value_sum, value_cnt]");
    edit(&dir.join("models/steps.sql"), "FROM health", "FROM healht");
    edit(
        &dir.join("feature_store/feature_services.yml"),
        "step_count_by_source: [value_avg, value_sum]",
        "step_count_by_sauce: [value_avg]",
    );
    let err = amora(&dir, &["feature-store", "apply"]).fails().stderr;
    for needle in [
        "models/step_count_by_source.yml: feature view step_count_by_source: bad ttl",
        "unknown entity `source_nam`",
        "did you mean `source_name`?",
        "event timestamp column `event_ts` is not a column",
        "feature `value_cnt` is not a column",
        "models/steps.sql: model steps: reads unknown table `healht`",
        "did you mean `health`?",
        "unknown feature view `step_count_by_sauce`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!dir.join("data/registry.db").exists());
}

#[test]
fn yaml_errors_give_line_and_column_and_cycles_are_found() {
    let (_tmp, dir) = example("health");
    std::fs::write(dir.join("feature_store/entities.yml"), "entities:\n  - name: x\n    type: [string\n").unwrap();
    let err = amora(&dir, &["validate"]).fails().stderr;
    assert!(
        err.contains("feature_store/entities.yml:4:1: YAML:") || err.contains("feature_store/entities.yml:3:"),
        "{err}"
    );

    let (_tmp2, dir) = example("health");
    edit(&dir.join("models/steps.sql"), "FROM health", "FROM step_count_by_source");
    let err = amora(&dir, &["validate"]).fails().stderr;
    assert!(
        err.contains("dependency cycle: ") && err.contains("steps -> step_count_by_source")
            || err.contains("step_count_by_source -> steps"),
        "{err}"
    );

    let (_tmp3, dir) = example("health");
    edit(&dir.join("feature_store/entities.yml"), "type: string", "type: float64");
    let err = amora(&dir, &["validate"]).fails().stderr;
    assert!(err.contains("join key type float64 is not supported"), "{err}");
    assert!(err.contains("join key `source_name` has type string but entity `source_name` is float64"), "{err}");
}

#[test]
fn concurrent_applies_lose_no_update() {
    // Eight projects apply into one registry at the same time: every one must land.
    let tmp = tempfile::tempdir().unwrap();
    let registry_path = tmp.path().join("shared/registry.db");
    let dirs = example_projects(tmp.path(), "proj", 8);
    for run in concurrent_applies(&dirs, registry_path.to_str().unwrap(), &[]) {
        let out = json(run);
        assert_eq!(out["changed"], true);
    }
    let reg = registry(&registry_path);
    for i in 0..8 {
        assert_eq!(reg.objects(ObjectKind::FeatureView, &format!("proj{i}")).count(), 1, "proj{i} was lost");
    }
    let history = json(
        amora_cmd(&dirs[0], &["feature-store", "history", "--json"])
            .env("AMORA_FEATURE_STORE_REGISTRY", &registry_path)
            .output()
            .unwrap()
            .into(),
    );
    let applies = history.as_array().unwrap().iter().filter(|v| v["kind"] == "apply").count();
    assert_eq!(applies, 8);
}

#[test]
fn env_overrides_pick_the_registry() {
    let (tmp, dir) = example("health");
    let elsewhere = tmp.path().join("elsewhere.db");
    let run: Run = amora_cmd(&dir, &["feature-store", "apply"])
        .env("AMORA_FEATURE_STORE_REGISTRY", &elsewhere)
        .output()
        .unwrap()
        .into();
    run.ok();
    assert!(elsewhere.exists() && !dir.join("data/registry.db").exists());
    let run: Run = amora_cmd(&dir, &["feature-store", "apply"])
        .env("AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG", "{not json")
        .output()
        .unwrap()
        .into();
    assert!(run.fails().stderr.contains("AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG is not valid JSON"));
}

#[test]
fn lists_describe_and_dump() {
    let (_tmp, dir) = example("health");
    let err = amora(&dir, &["feature-store", "list", "entities"]).fails().stderr;
    assert!(err.contains("run `amora feature-store apply` first"), "{err}");
    amora(&dir, &["feature-store", "apply"]).ok();
    let fv = json(amora(&dir, &["feature-store", "list", "feature-views", "--json"]));
    assert_eq!(fv[0]["name"], "step_count_by_source");
    assert_eq!(
        fv[0]["features"][0],
        serde_json::json!({"name": "value_avg", "value_type": "DOUBLE"}),
        "float64 stays DOUBLE"
    );
    assert_eq!(fv[0]["entities"], serde_json::json!(["source_name"]));
    let ds = json(amora(&dir, &["feature-store", "list", "data-sources", "--json"]));
    // A daily-partitioned model: the data source is the folder of partitions.
    assert!(ds[0]["location"].as_str().unwrap().ends_with("target/tables/step_count_by_source"));
    assert_eq!(ds[1]["name"], "step_count_push");
    assert_eq!(ds[1]["class"], "feast.data_source.PushSource");
    let text = amora(&dir, &["feature-store", "list", "feature-views"]).ok().stdout;
    assert!(text.starts_with("NAME") && text.contains("step_count_by_source"), "{text}");
    let desc = amora(&dir, &["feature-store", "describe", "step_count_by_source"]).ok().stdout;
    assert!(desc.contains("feature view step_count_by_source:") && desc.contains("\"ttl\": \"3600s\""), "{desc}");
    let err = amora(&dir, &["feature-store", "describe", "step_count_by_sorce"]).fails().stderr;
    assert!(err.contains("did you mean `step_count_by_source`?"), "{err}");
    let dump = json(amora(&dir, &["feature-store", "registry-dump"]));
    assert_eq!(dump["project"], "health");
    assert_eq!(dump["featureViews"][0]["spec"]["batchSource"]["type"], "BATCH_FILE");
    assert_eq!(dump["featureViews"][0]["spec"]["streamSource"]["type"], "PUSH_SOURCE");
    assert_eq!(dump["featureViews"][0]["spec"]["streamSource"]["batchSource"]["name"], "step_count_by_source");
    assert_eq!(dump["entities"].as_array().unwrap().len(), 2);
}

#[test]
fn lineage_formats() {
    let (_tmp, dir) = example("health");
    let l = json(amora(&dir, &["lineage", "--format", "json"]));
    let edges = l["edges"].as_array().unwrap();
    for (from, to) in [
        ("source:health", "model:steps"),
        ("model:steps", "model:step_count_by_source"),
        ("model:step_count_by_source", "feature_view:step_count_by_source"),
        ("feature_view:step_count_by_source", "feature_service:step_activity"),
    ] {
        assert!(edges.contains(&serde_json::json!({"from": from, "to": to})), "missing {from} -> {to}");
    }
    assert_eq!(l["features"]["step_count_by_source:value_avg"], serde_json::json!(["health.value"]));
    let dot = amora(&dir, &["lineage", "--format", "dot"]).ok().stdout;
    assert!(dot.starts_with("digraph") && dot.contains("\"source:health\" -> \"model:steps\""));
    let mermaid = amora(&dir, &["lineage", "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.contains("source_health --> model_steps"));
    let text = amora(&dir, &["lineage"]).ok().stdout;
    assert!(text.contains("step_count_by_source:value_sum <- health.value"), "{text}");
}

#[test]
fn committed_seed_data_is_the_generators_output() {
    let (_tmp, dir) = example("health");
    let committed =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/health/data/health.csv")).unwrap();
    assert_eq!(std::fs::read(dir.join("data/health.csv")).unwrap(), committed);
}
