//! The data pipeline through the CLI: materialize, skip, force, failures, the
//! schema contract, atomic tables, data tests, views and ephemeral models.

use std::collections::BTreeMap;
use std::path::Path;

use amora_offline::TableLocation;

use crate::support::*;

fn daily(dir: &Path) -> TableLocation {
    TableLocation::Daily { dir: dir.join("target/tables/step_count_by_source"), column: "event_timestamp".into() }
}

fn steps(dir: &Path) -> TableLocation {
    TableLocation::File(dir.join("target/tables/steps.parquet"))
}

/// Seconds since the epoch of `YYYY-MM-DD HH:MM:SS` (UTC).
fn epoch(ts: &str) -> i64 {
    let p = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (p(0..4), p(5..7), p(8..10));
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + p(11..13) * 3600 + p(14..16) * 60 + p(17..19)
}

#[test]
fn the_example_pipeline_matches_a_naive_computation() {
    let (_tmp, dir) = example("health");
    let out = amora(&dir, &["materialize"]).ok().stdout;
    assert!(out.contains("ran: [steps, step_count_by_source]"), "{out}");
    // The reference: group the CSV's step rows by (source, hour) by hand.
    let csv = std::fs::read_to_string(dir.join("data/health.csv")).unwrap();
    let mut expected: BTreeMap<(String, i64), (f64, i64, i64)> = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[0] != "HKQuantityTypeIdentifierStepCount" {
            continue;
        }
        let hour = epoch(f[5]).div_euclid(3600) * 3600;
        let e = expected.entry((f[1].to_string(), hour)).or_insert((0.0, 0, i64::MIN));
        e.0 += f[7].parse::<f64>().unwrap();
        e.1 += 1;
        e.2 = e.2.max(epoch(f[4]));
    }
    let rows = query(
        &[("t", daily(&dir))],
        "SELECT source_name, CAST(date_part('epoch', event_timestamp) AS BIGINT), value_sum, value_count, value_avg, \
         CAST(date_part('epoch', created_at) AS BIGINT) FROM t ORDER BY 1, 2",
    );
    assert_eq!(rows.len(), expected.len());
    for (row, ((source, hour), (sum, count, created))) in rows.iter().zip(&expected) {
        assert_eq!((&row[0], row[1].parse::<i64>().unwrap()), (source, *hour));
        assert_eq!(row[2].parse::<f64>().unwrap(), *sum);
        assert_eq!(row[3].parse::<i64>().unwrap(), *count);
        assert!((row[4].parse::<f64>().unwrap() - sum / *count as f64).abs() < 1e-9);
        assert_eq!(row[5].parse::<i64>().unwrap(), *created);
    }
    // Daily partitions: one folder per day of data.
    let days = std::fs::read_dir(dir.join("target/tables/step_count_by_source")).unwrap().count();
    assert!((25..=31).contains(&days), "{days} partitions");
    let tests = amora(&dir, &["test"]).ok().stdout;
    assert!(tests.contains("9 passed, 0 failed"), "{tests}");
    let models = json(amora(&dir, &["models", "list", "--json"]));
    assert_eq!(models[1]["name"], "steps");
    assert_eq!(models[1]["status"], "success");
    assert_eq!(models[1]["depends_on"], serde_json::json!(["health"]));
    assert!(models[1]["rows"].as_u64().unwrap() > 1000);
}

#[test]
fn unchanged_models_are_skipped_until_something_changes() {
    let (_tmp, dir) = example("health");
    amora(&dir, &["materialize"]).ok();
    let again = amora(&dir, &["materialize"]).ok().stdout;
    assert!(again.contains("ran: [] skipped: [steps, step_count_by_source]"), "{again}");
    let forced = amora(&dir, &["materialize", "--force"]).ok().stdout;
    assert!(forced.contains("ran: [steps, step_count_by_source]"), "{forced}");
    // Only the changed model and what depends on it run again.
    edit(&dir.join("models/step_count_by_source.sql"), "count(value) AS value_count", "count(*) AS value_count");
    let out = amora(&dir, &["materialize"]).ok().stdout;
    assert!(out.contains("ran: [step_count_by_source] skipped: [steps]"), "{out}");
    // A changed source file re-runs everything downstream of it.
    let csv = dir.join("data/health.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.lines().take(500).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let out = amora(&dir, &["materialize"]).ok().stdout;
    assert!(out.contains("ran: [steps, step_count_by_source]"), "{out}");
    // One model, with or without what it depends on.
    let out = amora(&dir, &["materialize", "--model", "steps", "--force"]).ok().stdout;
    assert!(out.contains("ran: [steps] skipped: []"), "{out}");
    let out = amora(&dir, &["materialize", "--model", "step_count_by_source", "--depends", "--force"]).ok().stdout;
    assert!(out.contains("ran: [steps, step_count_by_source]"), "{out}");
    let err = amora(&dir, &["materialize", "--model", "stepz"]).fails().stderr;
    assert!(err.contains("unknown model `stepz`; did you mean `steps`?"), "{err}");
}

#[test]
fn a_failed_model_blocks_its_dependents_not_its_siblings_and_keeps_the_old_table() {
    let (_tmp, dir) = example("health");
    std::fs::write(dir.join("models/sources_seen.sql"), "SELECT DISTINCT source_name FROM health\n").unwrap();
    std::fs::write(dir.join("models/sources_seen.yml"), "columns:\n  - {name: source_name, type: string}\n").unwrap();
    amora(&dir, &["materialize"]).ok();
    let before = query(&[("s", steps(&dir))], "SELECT COUNT(*) FROM s");
    edit(
        &dir.join("models/steps.sql"),
        "CAST(value AS DOUBLE) AS value",
        "CAST(value AS DOUBLE) / nosuchcolumn AS value",
    );
    let run = amora(&dir, &["materialize"]).fails();
    assert!(run.stdout.contains("failed: [steps] blocked: [step_count_by_source]"), "{}", run.stdout);
    assert!(
        run.stdout.contains("ran: [sources_seen]") || run.stdout.contains("skipped: [sources_seen]"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("models/steps.sql:") && run.stdout.contains("nosuchcolumn"), "{}", run.stdout);
    assert!(run.stdout.contains("upstream model `steps` failed"), "{}", run.stdout);
    // The table from the last good run is still there, whole; no temporary files are
    // left (each table's lock file stays: removing one would race its next waiter).
    assert_eq!(query(&[("s", steps(&dir))], "SELECT COUNT(*) FROM s"), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("target/tables"))
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with('.') && !name.ends_with(".amora-lock")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let models = json(amora(&dir, &["models", "list", "--json"]));
    let status: BTreeMap<String, String> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().into(), m["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(status["steps"], "failed");
    assert_eq!(status["step_count_by_source"], "blocked");
    // Fixed: it runs again (a failure is never skipped).
    edit(&dir.join("models/steps.sql"), " / nosuchcolumn", "");
    let out = amora(&dir, &["materialize"]).ok().stdout;
    assert!(out.contains("ran: [steps, step_count_by_source]"), "{out}");
}

#[test]
fn the_schema_contract_names_model_column_and_types() {
    let (_tmp, dir) = example("health");
    edit(
        &dir.join("models/step_count_by_source.yml"),
        "{name: value_count, type: int64",
        "{name: value_count, type: int32",
    );
    edit(
        &dir.join("models/step_count_by_source.yml"),
        "  - {name: created_at, type: timestamp, doc: Latest creation_date in the hour}\n",
        "",
    );
    edit(&dir.join("models/step_count_by_source.yml"), "  created_timestamp: created_at\n", "");
    edit(
        &dir.join("models/step_count_by_source.yml"),
        "  - {name: value_avg, type: float64, doc: Mean steps per measurement}\n",
        "  - {name: value_avg, type: float64, doc: Mean steps per measurement}\n  - {name: value_max, type: float64}\n",
    );
    let out = amora(&dir, &["materialize"]).fails().stdout;
    for needle in [
        "models/step_count_by_source.yml: model step_count_by_source:",
        "column `value_count` is declared int32 but the SQL produces Int64",
        "declared column `value_max` is not produced by the SQL",
        "column `created_at` (Timestamp(",
        "is produced by the SQL but not declared",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!dir.join("target/tables/step_count_by_source").exists());
}

#[test]
fn failing_data_tests_show_rows_and_exit_non_zero() {
    let (_tmp, dir) = example("health");
    let err = amora(&dir, &["test"]).fails().stdout;
    assert!(err.contains("no table yet; run `amora materialize` first"), "{err}");
    amora(&dir, &["materialize"]).ok();
    edit(&dir.join("models/steps.yml"), "- accepted_values: [count]", "- accepted_values: [steps]");
    edit(&dir.join("models/steps.yml"), "row_count: {min: 1}", "row_count: {max: 10}");
    let run = amora(&dir, &["test"]).fails();
    assert!(run.stdout.contains("FAIL  steps.unit accepted_values ("), "{}", run.stdout);
    assert!(run.stdout.contains("FAIL  steps row_count (1 failing rows)"), "{}", run.stdout);
    assert!(run.stdout.contains("| count |") || run.stdout.contains("count"), "{}", run.stdout);
    assert!(run.stdout.contains("7 passed, 2 failed"), "{}", run.stdout);
}

#[test]
fn views_and_ephemeral_models_are_inlined() {
    let (_tmp, dir) = example("health");
    edit(&dir.join("models/steps.yml"), "materialization: table", "materialization: ephemeral");
    amora(&dir, &["compile"]).ok();
    let compiled = std::fs::read_to_string(dir.join("target/compiled/step_count_by_source.sql")).unwrap();
    assert!(compiled.starts_with("WITH \"steps\" AS ("), "{compiled}");
    let out = amora(&dir, &["materialize"]).ok().stdout;
    assert!(out.contains("ran: [step_count_by_source]"), "{out}");
    assert!(!dir.join("target/tables/steps.parquet").exists());
    edit(&dir.join("models/steps.yml"), "materialization: ephemeral", "materialization: view");
    let out = amora(&dir, &["materialize"]).ok().stdout;
    assert!(out.contains("ran: [steps, step_count_by_source]"), "{out}");
    assert!(!dir.join("target/tables/steps.parquet").exists());
    assert!(amora(&dir, &["test"]).ok().stdout.contains("9 passed, 0 failed"));
}

#[test]
fn sql_errors_point_at_the_model_file() {
    let (_tmp, dir) = example("health");
    edit(&dir.join("models/steps.sql"), "WHERE type =", "WHERE type = = ");
    let err = amora(&dir, &["materialize"]).fails().stderr;
    assert!(err.contains("models/steps.sql: model steps: SQL does not parse:"), "{err}");
    assert!(err.contains("Line: 10"), "{err}");
}

#[test]
fn sources_on_object_storage_s3() {
    let endpoint = match std::env::var("AMORA_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ if std::env::var("TEST_INTEGRATION").as_deref() == Ok("1") => {
            panic!("TEST_INTEGRATION=1 but AMORA_S3_ENDPOINT is not set")
        }
        _ => return eprintln!("skipping: AMORA_S3_ENDPOINT is not set"),
    };
    let (_tmp, dir) = example("health");
    let bucket = format!("amora-src-{}", std::process::id());
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-sf",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "testing:testing",
                "-H",
                "Content-Type: application/octet-stream",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    curl(&["-X", "PUT", &format!("{endpoint}/{bucket}")]);
    let csv = dir.join("data/health.csv");
    curl(&["-T", &csv.display().to_string(), &format!("{endpoint}/{bucket}/raw/health.csv")]);
    edit(&dir.join("sources/health.yml"), "path: data/health.csv", &format!("path: s3://{bucket}/raw/health.csv"));
    let run = |args: &[&str]| -> Run {
        amora_cmd(&dir, args)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap()
            .into()
    };
    let out = run(&["materialize"]).ok().stdout;
    assert!(out.contains("ran: [steps, step_count_by_source]"), "{out}");
    let local = query(&[("s", steps(&dir))], "SELECT COUNT(*), SUM(value) FROM s");
    // Same rows as from the local file.
    let (_tmp2, local_dir) = example("health");
    amora(&local_dir, &["materialize"]).ok();
    assert_eq!(local, query(&[("s", steps(&local_dir))], "SELECT COUNT(*), SUM(value) FROM s"));
    // Unchanged remote data: skipped; new data under the same name: runs again.
    assert!(run(&["materialize"]).ok().stdout.contains("skipped: [steps, step_count_by_source]"));
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.lines().take(300).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    curl(&["-T", &csv.display().to_string(), &format!("{endpoint}/{bucket}/raw/health.csv")]);
    assert!(run(&["materialize"]).ok().stdout.contains("ran: [steps, step_count_by_source]"));
}
