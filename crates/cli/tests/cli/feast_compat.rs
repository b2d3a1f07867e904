//! Compatibility with Feast 0.67, both ways, on real registry files:
//! - Feast reads what `amora feature-store apply` wrote and sees the same objects;
//! - amora reads what `feast apply` wrote for Feast's own demo and sees the same
//!   objects, and an amora apply into that registry leaves Feast's project
//!   byte-for-byte intact (`feast plan` still says nothing changed).
//!
//! Needs `AMORA_FEAST_PYTHON` (a Python with `feast==0.67.0`); skipped without it
//! unless `TEST_INTEGRATION=1`, which makes it required.

use std::path::{Path, PathBuf};
use std::process::Command;

use amora_proto::ObjectKind;

use crate::support::*;

const KINDS: [&str; 4] = ["entities", "feature-views", "feature-services", "data-sources"];

fn feast_python() -> Option<PathBuf> {
    match std::env::var_os("AMORA_FEAST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("TEST_INTEGRATION").as_deref() == Ok("1") => {
            panic!("TEST_INTEGRATION=1 but AMORA_FEAST_PYTHON is not set (run scripts/test.sh)")
        }
        None => {
            eprintln!("skipping Feast compatibility test: AMORA_FEAST_PYTHON is not set");
            None
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/feast_catalog.py")
}

/// What Feast's SDK lists in the repo `repo`.
fn feast_catalog(python: &Path, repo: &Path) -> serde_json::Value {
    let out = Command::new(python).arg(script()).arg(repo).output().unwrap();
    assert!(out.status.success(), "feast_catalog.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn amora_catalog(dir: &Path) -> serde_json::Value {
    let mut all = serde_json::Map::new();
    for k in KINDS {
        all.insert(k.into(), json(amora(dir, &["feature-store", "list", k, "--json"])));
    }
    serde_json::Value::Object(all)
}

#[track_caller]
fn assert_same(amora: &serde_json::Value, feast: &serde_json::Value) {
    for k in KINDS {
        assert_eq!(amora[k], feast[k], "amora and Feast disagree on {k}");
        assert!(!amora[k].as_array().unwrap().is_empty(), "no {k} listed");
    }
}

fn feast_bin(python: &Path) -> PathBuf {
    python.with_file_name("feast")
}

#[test]
fn feast_reads_the_registry_amora_writes() {
    let Some(python) = feast_python() else { return };
    let (tmp, dir) = example("amora_compat");
    amora(&dir, &["feature-store", "apply"]).ok();
    let repo = tmp.path().join("feast_repo");
    feast_repo_on(
        &dir,
        &repo,
        "amora_compat",
        &format!("  type: sqlite\n  path: {}\n", repo.join("online.db").display()),
    );
    let feast = feast_catalog(&python, &repo);
    let ours = amora_catalog(&dir);
    assert_same(&ours, &feast);
    // Spot-check the facts the issue names, as Feast sees them.
    let fv = &feast["feature-views"][0];
    assert_eq!(fv["ttl_seconds"], 3600);
    assert_eq!(fv["owner"], "ml-team@example.com");
    assert_eq!(fv["tags"]["team"], "activity");
    assert_eq!(fv["features"][0]["value_type"], "DOUBLE");
    assert_eq!(feast["entities"][0]["value_type"], "STRING");
    assert_eq!(feast["data-sources"][0]["class"], "feast.infra.offline_stores.file_source.FileSource");
}

#[test]
fn amora_reads_feasts_demo_and_keeps_it_intact() {
    let Some(python) = feast_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], cwd: &Path| {
        let out = Command::new(feast_bin(&python)).args(args).current_dir(cwd).output().unwrap();
        assert!(
            out.status.success(),
            "feast {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["init", "feastdemo"], tmp.path());
    let repo = tmp.path().join("feastdemo/feature_repo");
    run(&["apply"], &repo);
    let registry_path = repo.join("data/registry.db");

    // amora, configured on Feast's registry, lists what Feast lists.
    let reader = tmp.path().join("reader");
    std::fs::create_dir_all(&reader).unwrap();
    std::fs::write(
        reader.join("amora.yaml"),
        format!("project: feastdemo\nfeature_store:\n  registry: {}\n", registry_path.display()),
    )
    .unwrap();
    let feast_before = feast_catalog(&python, &repo);
    assert_same(&amora_catalog(&reader), &feast_before);

    // amora applies its own project into the same registry...
    let before = registry(&registry_path);
    let (_t, dir) = example("amora_side");
    let r: Run = amora_cmd(&dir, &["feature-store", "apply"])
        .env("AMORA_FEATURE_STORE_REGISTRY", &registry_path)
        .output()
        .unwrap()
        .into();
    r.ok();
    let after = registry(&registry_path);
    assert_eq!(after.objects(ObjectKind::FeatureView, "amora_side").count(), 1);
    // ...and every one of Feast's top-level objects keeps its exact bytes.
    let feast_fields = |r: &amora_proto::RegistryFile| -> Vec<Vec<u8>> {
        r.fields
            .iter()
            .filter(|f| f.key().is_some_and(|(_, p, _)| p == "feastdemo") || f.tag == 18)
            .map(|f| f.bytes.clone())
            .collect()
    };
    assert_eq!(feast_fields(&before), feast_fields(&after));
    // The registry Feast wrote was recorded in the history before amora replaced it.
    let history = json(
        amora_cmd(&dir, &["feature-store", "history", "--json"])
            .env("AMORA_FEATURE_STORE_REGISTRY", &registry_path)
            .output()
            .unwrap()
            .into(),
    );
    assert_eq!(history[0]["kind"], "external");
    assert_eq!(history[0]["version_id"], before.version_id());

    // Feast still sees its project unchanged.
    assert_eq!(feast_catalog(&python, &repo), feast_before);
    let plan = run(&["plan"], &repo);
    assert!(plan.contains("No changes to registry"), "feast plan after amora apply:\n{plan}");
}

fn feast_online(python: &Path, repo: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/feast_online.py");
    let out = Command::new(python).arg(script).arg(repo).args(args).output().unwrap();
    assert!(out.status.success(), "feast_online.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(serde_json::Value::Null)
}

#[test]
fn feast_and_amora_share_one_redis_both_ways() {
    let Some(python) = feast_python() else { return };
    let redis = std::env::var("AMORA_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    share_one_redis(&python, &redis, "redis");
}

#[test]
fn feast_and_amora_share_one_redis_cluster_both_ways() {
    let Some(python) = feast_python() else { return };
    let Some(nodes) = std::env::var("AMORA_REDIS_CLUSTER").ok().filter(|n| !n.is_empty()) else {
        assert_ne!(
            std::env::var("TEST_INTEGRATION").as_deref(),
            Ok("1"),
            "TEST_INTEGRATION=1 but AMORA_REDIS_CLUSTER is not set"
        );
        return;
    };
    share_one_redis(&python, &nodes, "redis_cluster");
}

fn share_one_redis(python: &Path, redis: &str, redis_type: &str) {
    let python = python.to_path_buf();
    let project = format!("amora_{redis_type}_{}", std::process::id());
    let (tmp, dir) = example(&project);
    let with_redis = |args: &[&str]| -> Run {
        amora_cmd(&dir, args)
            .env("AMORA_FEATURE_STORE_ONLINE_STORE_TYPE", "redis")
            .env(
                "AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG",
                format!("{{\"connection_string\": \"{redis}\", \"redis_type\": \"{redis_type}\"}}"),
            )
            .output()
            .unwrap()
            .into()
    };
    amora(&dir, &["materialize"]).ok();
    amora(&dir, &["feature-store", "apply"]).ok();
    with_redis(&["feature-store", "materialize", "2024-01-01T00:00:00", "2024-03-01T00:00:00"]).ok();
    let repo = tmp.path().join("feast_repo");
    feast_repo_on(
        &dir,
        &repo,
        &project,
        &format!("  type: redis\n  redis_type: {redis_type}\n  connection_string: \"{redis}\"\n"),
    );
    let features = "step_count_by_source:value_avg,step_count_by_source:value_sum,step_count_by_source:value_count";
    let sources = ["Mi Fit", "iPhone", "Apple Watch", "Garmin Connect", "Fitbit", "Strava"];
    let rows = serde_json::json!(sources.iter().map(|s| serde_json::json!({"source_name": s})).collect::<Vec<_>>());
    // amora wrote; Feast reads exactly amora's values.
    let feast = feast_online(&python, &repo, &["read", features, &rows.to_string()]);
    let mut args = vec!["feature-store", "get-online-features", "--features", features, "--json"];
    let entity_args: Vec<String> = sources.iter().map(|s| format!("source_name={s}")).collect();
    for e in &entity_args {
        args.extend(["--entity", e.as_str()]);
    }
    let ours = json(with_redis(&args));
    for (i, name) in ["value_avg", "value_sum", "value_count"].iter().enumerate() {
        let amora_values = &ours["results"][i]["values"];
        assert_eq!(&feast[name], amora_values, "{name}: Feast read {} but amora {}", feast[name], amora_values);
        assert!(
            amora_values.as_array().unwrap().iter().all(|v| !v.is_null()),
            "every source has a value: {amora_values}"
        );
    }
    // Feast writes (newer event time for one entity, a new entity); amora reads exactly that.
    let write = serde_json::json!([
        {"source_name": "Mi Fit", "event_timestamp": "2030-01-01T00:00:00Z", "created_at": "2030-01-01T00:00:00Z", "value_avg": 12.5, "value_sum": 25.0, "value_count": 2},
        {"source_name": "Zeta", "event_timestamp": "2030-01-01T00:00:00Z", "created_at": "2030-01-01T00:00:00Z", "value_avg": 1.25, "value_sum": 2.5, "value_count": 2},
    ]);
    feast_online(&python, &repo, &["write", "step_count_by_source", &write.to_string()]);
    let ours = json(with_redis(&[
        "feature-store",
        "get-online-features",
        "--features",
        features,
        "--entity",
        "source_name=Mi Fit",
        "--entity",
        "source_name=Zeta",
        "--json",
    ]));
    assert_eq!(ours["results"][0]["values"], serde_json::json!([12.5, 1.25]));
    assert_eq!(ours["results"][2]["values"], serde_json::json!([2, 2]));
    assert_eq!(
        ours["results"][0]["event_timestamps"],
        serde_json::json!(["2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"])
    );
    // An older amora write does not replace Feast's newer values.
    with_redis(&["feature-store", "materialize", "2024-01-01T00:00:00", "2024-03-01T00:00:00"]).ok();
    let again = json(with_redis(&[
        "feature-store",
        "get-online-features",
        "--features",
        features,
        "--entity",
        "source_name=Mi Fit",
        "--json",
    ]));
    assert_eq!(again["results"][0]["values"], serde_json::json!([12.5]));
}
