//! The registry on `gs://`, against fake-gcs-server (started by scripts/test.sh;
//! `STORAGE_EMULATOR_HOST` points at it). Skipped without it unless `TEST_INTEGRATION=1`.

use crate::support::*;

fn emulator() -> Option<String> {
    match std::env::var("STORAGE_EMULATOR_HOST") {
        Ok(h) if !h.is_empty() => Some(h),
        _ if std::env::var("TEST_INTEGRATION").as_deref() == Ok("1") => {
            panic!("TEST_INTEGRATION=1 but STORAGE_EMULATOR_HOST is not set (run scripts/test.sh)")
        }
        _ => {
            eprintln!("skipping GCS registry test: STORAGE_EMULATOR_HOST is not set");
            None
        }
    }
}

fn create_bucket(host: &str, bucket: &str) {
    let base = if host.starts_with("http") { host.to_string() } else { format!("http://{host}") };
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "POST", "-H", "Content-Type: application/json", "-d"])
        .arg(format!("{{\"name\": \"{bucket}\"}}"))
        .arg(format!("{base}/storage/v1/b"))
        .output()
        .unwrap();
    assert!(out.status.success(), "creating bucket {bucket}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn twenty_concurrent_applies_on_gcs_lose_nothing_and_history_works() {
    let Some(host) = emulator() else { return };
    let bucket = format!("amora-test-{}", std::process::id());
    create_bucket(&host, &bucket);
    let registry = format!("gs://{bucket}/amora/registry.db");
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..20)
        .map(|i| {
            let dir = tmp.path().join(format!("p{i}"));
            let run: Run = std::process::Command::new(env!("CARGO_BIN_EXE_amora"))
                .args(["init", dir.to_str().unwrap(), "--name", &format!("gcs{i}"), "--rows", "10"])
                .output()
                .unwrap()
                .into();
            run.ok();
            dir
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            amora_cmd(d, &["feature-store", "apply", "--json"])
                .env("AMORA_FEATURE_STORE_REGISTRY", &registry)
                .env("STORAGE_EMULATOR_HOST", &host)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut landed = 0;
    for c in children {
        let run: Run = c.wait_with_output().unwrap().into();
        // Each apply either lands (possibly after re-planning on a newer version) or fails cleanly.
        if run.code == 0 {
            assert_eq!(json(run)["changed"], true);
            landed += 1;
        } else {
            assert!(run.stderr.contains("re-run the command"), "{}", run.stderr);
        }
    }
    let with = |d: &std::path::Path, args: &[&str]| -> Run {
        amora_cmd(d, args)
            .env("AMORA_FEATURE_STORE_REGISTRY", &registry)
            .env("STORAGE_EMULATOR_HOST", &host)
            .output()
            .unwrap()
            .into()
    };
    // No update was lost: every project that landed is in the registry.
    let mut present = 0;
    for d in &dirs {
        let run = with(d, &["feature-store", "list", "feature-views", "--json"]);
        if run.code == 0 && json(run).as_array().is_some_and(|a| a.len() == 1) {
            present += 1;
        }
    }
    assert_eq!(present, landed, "{landed} applies landed but {present} projects are in the registry");
    eprintln!("{landed} of 20 concurrent applies landed; the others failed cleanly");
    assert!(landed >= 10, "only {landed} of 20 applies landed");
    let history = json(with(&dirs[0], &["feature-store", "history", "--json"]));
    assert_eq!(history.as_array().unwrap().iter().filter(|v| v["kind"] == "apply").count(), landed);

    // History, diff and rollback on GCS.
    let d = &dirs[0];
    edit(&d.join("models/step_count_by_source.yml"), "ttl: 1h", "ttl: 3h");
    with(d, &["feature-store", "apply"]).ok();
    let versions = json(with(d, &["feature-store", "history", "--json"]));
    let last = versions.as_array().unwrap().last().unwrap()["number"].as_u64().unwrap();
    let first_of_p0 =
        versions.as_array().unwrap().iter().find(|v| v["project"] == "gcs0").unwrap()["number"].as_u64().unwrap();
    let diff = with(d, &["feature-store", "diff", &first_of_p0.to_string(), &last.to_string()]).ok().stdout;
    assert!(diff.contains("ttl: \"3600s\" -> \"10800s\""), "{diff}");
    with(d, &["feature-store", "rollback", &first_of_p0.to_string()]).ok();
    let views = json(with(d, &["feature-store", "list", "feature-views", "--json"]));
    assert_eq!(views[0]["ttl_seconds"], 3600);
}
