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
    // A second view on the same entity: amora writes the two views of an entity
    // together (one hash, one HSET), and Feast must read both.
    add_peak_view(&dir);
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
    let peak = "step_peak_by_source:value_max";
    let feast_peak = feast_online(&python, &repo, &["read", peak, &rows.to_string()]);
    let mut args = vec!["feature-store", "get-online-features", "--features", peak, "--json"];
    for e in &entity_args {
        args.extend(["--entity", e.as_str()]);
    }
    let ours_peak = json(with_redis(&args));
    assert_eq!(feast_peak["value_max"], ours_peak["results"][0]["values"], "value_max");
    assert!(ours_peak["results"][0]["values"].as_array().unwrap().iter().all(|v| v.as_f64().is_some_and(|x| x > 0.0)));
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

/// `feast materialize` (Feast's own offline read and Redis write) into a project's
/// keys, then amora's materialization of the same interval after a teardown: amora
/// reads identical values and timestamps both times, and Feast reads amora's.
#[test]
fn amora_reads_what_feast_materialize_wrote() {
    let Some(python) = feast_python() else { return };
    let redis = std::env::var("AMORA_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let project = format!("amora_feastmat_{}", std::process::id());
    let (tmp, dir) = example(&project);
    let with_redis = |args: &[&str]| -> Run {
        amora_cmd(&dir, args)
            .env("AMORA_FEATURE_STORE_ONLINE_STORE_TYPE", "redis")
            .env("AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG", format!("{{\"connection_string\": \"{redis}\"}}"))
            .output()
            .unwrap()
            .into()
    };
    amora(&dir, &["materialize"]).ok();
    amora(&dir, &["feature-store", "apply"]).ok();
    let repo = tmp.path().join("feast_repo");
    feast_repo_on(&dir, &repo, &project, &format!("  type: redis\n  connection_string: \"{redis}\"\n"));
    let (start, end) = ("2024-01-01T00:00:00", "2024-03-01T00:00:00");
    feast_online(&python, &repo, &["materialize", start, end, "step_count_by_source"]);
    let features = "step_count_by_source:value_avg,step_count_by_source:value_sum,step_count_by_source:value_count";
    let sources = ["Mi Fit", "iPhone", "Apple Watch", "Garmin Connect", "Fitbit", "Strava"];
    let mut args = vec!["feature-store", "get-online-features", "--features", features, "--json"];
    let entity_args: Vec<String> = sources.iter().map(|s| format!("source_name={s}")).collect();
    for e in &entity_args {
        args.extend(["--entity", e.as_str()]);
    }
    let after_feast = json(with_redis(&args));
    // Every source has a value (old data: OUTSIDE_MAX_AGE under the view's 1h TTL).
    for r in after_feast["results"].as_array().unwrap() {
        assert!(r["statuses"].as_array().unwrap().iter().all(|s| s != "NOT_FOUND"), "{after_feast}");
        assert!(r["values"].as_array().unwrap().iter().all(|v| !v.is_null()), "{after_feast}");
    }
    with_redis(&["feature-store", "teardown"]).ok();
    let gone = json(with_redis(&args));
    assert!(gone["results"][0]["statuses"].as_array().unwrap().iter().all(|s| s == "NOT_FOUND"), "{gone}");
    with_redis(&["feature-store", "materialize", start, end, "--view", "step_count_by_source"]).ok();
    let after_amora = json(with_redis(&args));
    assert_eq!(after_feast["results"], after_amora["results"], "Feast's and amora's materialization differ");
    let rows = serde_json::json!(sources.iter().map(|s| serde_json::json!({"source_name": s})).collect::<Vec<_>>());
    let feast = feast_online(&python, &repo, &["read", features, &rows.to_string()]);
    for (i, name) in ["value_avg", "value_sum", "value_count"].iter().enumerate() {
        assert_eq!(feast[name], after_amora["results"][i]["values"], "{name}");
    }
    with_redis(&["feature-store", "teardown"]).ok();
}

/// Feast 0.67's SDK with `online_store: {type: remote}` pointed at `amora feature-store
/// serve`: it reads amora's values (features and a feature service, short and full
/// names), its writes land in amora's store, and its `materialize` runs amora's.
#[test]
fn feasts_remote_online_store_is_served_by_amora() {
    use crate::serve::{served_example, Server, SOURCES};
    let Some(python) = feast_python() else { return };
    let project = format!("amora_remote_{}", std::process::id());
    let (tmp, dir) = served_example(&project);
    let features = "step_count_by_source:value_avg,step_count_by_source:value_sum,step_count_by_source:value_count";
    let mut args = vec!["feature-store", "get-online-features", "--features", features, "--json"];
    let entity_args: Vec<String> = SOURCES.iter().map(|s| format!("source_name={s}")).collect();
    for e in &entity_args {
        args.extend(["--entity", e.as_str()]);
    }
    // amora's own read first: the server then owns the embedded store.
    let ours = json(amora(&dir, &args));
    let server = Server::start(&dir, &["--registry-ttl", "1s"], &[]);
    let repo = tmp.path().join("feast_repo");
    feast_repo_on(&dir, &repo, &project, &format!("  type: remote\n  path: http://127.0.0.1:{}\n", server.port));
    let rows = serde_json::json!(SOURCES.iter().map(|s| serde_json::json!({"source_name": s})).collect::<Vec<_>>());
    let feast = feast_online(&python, &repo, &["read", features, &rows.to_string()]);
    for (i, name) in ["value_avg", "value_sum", "value_count"].iter().enumerate() {
        assert_eq!(feast[name], ours["results"][i]["values"], "{name}: Feast read {feast}");
    }
    assert_eq!(feast["source_name"], serde_json::json!(SOURCES));
    assert!(feast["value_avg"][0].is_number() && feast["value_avg"][2].is_null(), "{feast}");
    let svc = feast_online(&python, &repo, &["read-service", "step_activity", &rows.to_string()]);
    assert_eq!(svc["step_count_by_source__value_avg"], ours["results"][0]["values"], "{svc}");
    assert_eq!(svc["step_count_by_source__value_sum"], ours["results"][1]["values"], "{svc}");
    // Feast's write_to_online_store through the remote store lands in amora's store.
    let write = serde_json::json!([
        {"source_name": "Zeta", "event_timestamp": "2030-01-01T00:00:00Z", "created_at": "2030-01-01T00:00:00Z", "value_avg": 1.25, "value_sum": 2.5, "value_count": 2},
    ]);
    feast_online(&python, &repo, &["write", "step_count_by_source", &write.to_string()]);
    let (status, z) = server.post(
        "/get-online-features",
        &serde_json::json!({"features": features.split(',').collect::<Vec<_>>(), "entities": {"source_name": ["Zeta"]}}),
    );
    assert_eq!(status, 200, "{z}");
    assert_eq!(z["results"][1]["values"], serde_json::json!([1.25]));
    assert_eq!(z["results"][3]["values"], serde_json::json!([2]));
    assert_eq!(z["results"][1]["event_timestamps"], serde_json::json!(["2030-01-01T00:00:00Z"]));
    // Feast's push to the view's push source, through the remote store, too.
    let pushed = serde_json::json!([
        {"source_name": "Eta", "event_timestamp": "2030-01-02T00:00:00Z", "created_at": "2030-01-02T00:00:00Z", "value_avg": 0.5, "value_sum": 4.0, "value_count": 8},
    ]);
    feast_online(&python, &repo, &["push", "step_count_push", &pushed.to_string()]);
    let (status, e) = server.post(
        "/get-online-features",
        &serde_json::json!({"features": features.split(',').collect::<Vec<_>>(), "entities": {"source_name": ["Eta"]}}),
    );
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["results"][1]["values"], serde_json::json!([0.5]));
    assert_eq!(e["results"][3]["values"], serde_json::json!([8]));
    // Feast's materialize through the remote store runs amora's materialization.
    let before = registry(&dir.join("data/registry.db"));
    let count = |f: &amora_proto::RegistryFile| -> usize {
        use prost::Message;
        f.objects(amora_proto::ObjectKind::FeatureView, &project)
            .map(|(_, raw)| {
                amora_proto::FeatureView::decode(raw.payload())
                    .unwrap()
                    .meta
                    .unwrap_or_default()
                    .materialization_intervals
                    .len()
            })
            .sum()
    };
    feast_online(
        &python,
        &repo,
        &["materialize", "2024-01-01T00:00:00", "2024-03-02T00:00:00", "step_count_by_source"],
    );
    let after = registry(&dir.join("data/registry.db"));
    assert_eq!(count(&after), count(&before) + 1, "amora recorded the interval Feast asked for");
    let (code, log) = server.stop();
    assert_eq!(code, 0);
    assert!(log.contains("materialized step_count_by_source"), "{log}");
}

/// Feast's own generated gRPC stubs (`feast.serving.ServingService`) against
/// `serve --grpc-port`: the same values and statuses as the HTTP API, and
/// NOT_FOUND for an unknown view.
#[test]
fn feasts_grpc_stubs_read_amoras_serving_service() {
    use crate::serve::{served_example, Server, SOURCES};
    let Some(python) = feast_python() else { return };
    let (_tmp, dir) = served_example("served_grpc");
    let grpc_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server::start(&dir, &["--grpc-port", &grpc_port.to_string()], &[]);
    let features = "step_count_by_source:value_avg,step_count_by_source:value_count";
    let (status, http) = server.post(
        "/get-online-features",
        &serde_json::json!({"features": features.split(',').collect::<Vec<_>>(), "entities": {"source_name": SOURCES}}),
    );
    assert_eq!(status, 200);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/feast_grpc.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(grpc_port.to_string())
        .arg(features)
        .arg(serde_json::json!(SOURCES).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "feast_grpc.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let grpc: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert!(grpc["version"].as_str().unwrap().starts_with("amora"), "{grpc}");
    assert_eq!(grpc["names"], http["metadata"]["feature_names"]);
    let code = |s: &serde_json::Value| match s.as_str().unwrap() {
        "PRESENT" => 1,
        "NULL_VALUE" => 2,
        "NOT_FOUND" => 3,
        "OUTSIDE_MAX_AGE" => 4,
        other => panic!("{other}"),
    };
    for i in 0..3 {
        assert_eq!(grpc["values"][i], http["results"][i]["values"], "column {i}");
        let statuses: Vec<i64> = http["results"][i]["statuses"].as_array().unwrap().iter().map(code).collect();
        assert_eq!(grpc["statuses"][i], serde_json::json!(statuses), "column {i}");
    }
    // Version metadata only when asked for: each requested view once, with its registry version.
    let mut views: Vec<&str> = features.split(',').map(|f| f.split(':').next().unwrap()).collect();
    views.dedup();
    let expected: Vec<serde_json::Value> = views.iter().map(|v| serde_json::json!([v, 0])).collect();
    assert_eq!(grpc["view_metadata"], serde_json::json!(expected), "{grpc}");
    assert_eq!(grpc["view_metadata_unasked"], 0, "{grpc}");
    assert_eq!(grpc["missing_view_code"], "NOT_FOUND", "{grpc}");
    assert!(grpc["missing_view_message"].as_str().unwrap().contains("nope"), "{grpc}");
}
