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
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("feature_store.yaml"),
        format!(
            "project: amora_compat\nregistry: {}\nprovider: local\nonline_store:\n  type: sqlite\n  path: {}\nentity_key_serialization_version: 3\n",
            dir.join("data/registry.db").display(),
            repo.join("online.db").display()
        ),
    )
    .unwrap();
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
