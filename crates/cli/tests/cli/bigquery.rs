//! The BigQuery offline store against the bqemulator that scripts/test.sh starts
//! (`AMORA_BQ_EMULATOR`, `AMORA_BQ_EMULATOR_GRPC`), with the registry on
//! fake-gcs-server: the production topology on one machine. The differential
//! test runs one project on the embedded engine and on BigQuery and compares
//! model tables, data tests, training sets and online values byte for byte.

use std::path::Path;

use crate::support::*;

struct Emulators {
    rest: String,
    grpc: String,
    gcs: String,
}

fn emulators() -> Option<Emulators> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("AMORA_BQ_EMULATOR"), var("AMORA_BQ_EMULATOR_GRPC"), var("STORAGE_EMULATOR_HOST")) {
        (Some(rest), Some(grpc), Some(gcs)) => Some(Emulators { rest, grpc, gcs }),
        _ if std::env::var("TEST_INTEGRATION").as_deref() == Ok("1") => {
            panic!("TEST_INTEGRATION=1 but the BigQuery or GCS emulator is not set (run scripts/test.sh)")
        }
        _ => {
            eprintln!("skipping: AMORA_BQ_EMULATOR / STORAGE_EMULATOR_HOST are not set");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), chrono::Utc::now().timestamp_micros() % 1_000_000_000)
}

/// Points the example project at BigQuery (a dataset of its own) and at a registry on GCS.
fn on_bigquery(dir: &Path, e: &Emulators, dataset: &str, bucket: &str) {
    edit(
        &dir.join("amora.yaml"),
        "  offline_store:\n    type: embedded\n",
        &format!(
            "  offline_store:\n    type: bigquery\n    project_id: test-project\n    dataset: {dataset}\n    endpoint: http://{}\n    storage_endpoint: http://{}\n",
            e.rest, e.grpc
        ),
    );
    edit(&dir.join("amora.yaml"), "registry: data/registry.db", &format!("registry: gs://{bucket}/amora/registry.db"));
    crate::object_stores::create_bucket(&e.gcs, bucket);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Entity rows that probe the point-in-time rules: every `step` feature row's own
/// timestamp, exactly one TTL (1 h) later (inside: both ends inclusive), one
/// second past it (outside), one second before (an earlier row or nothing), an
/// unknown source, and duplicates.
fn probing_entities(table_csv: &str, out: &Path, step: usize) -> usize {
    let mut lines = vec!["source_name,event_timestamp,label".to_string()];
    for (i, row) in table_csv.lines().skip(1).enumerate().filter(|(i, _)| i % step == 0) {
        let mut cols = row.splitn(3, ',');
        let (name, ts) = (cols.next().unwrap(), cols.next().unwrap());
        let t = chrono::DateTime::parse_from_rfc3339(ts).unwrap().with_timezone(&chrono::Utc);
        for (k, offset) in [0i64, 3600, 3601, -1, 0].into_iter().enumerate() {
            let at = t + chrono::Duration::seconds(offset);
            lines.push(format!("{name},{},{}", at.format("%Y-%m-%dT%H:%M:%S"), i * 10 + k));
        }
        lines.push(format!("nobody,{},{}", t.format("%Y-%m-%dT%H:%M:%S"), i * 10 + 9));
    }
    std::fs::write(out, lines.join("\n") + "\n").unwrap();
    lines.len() - 1
}

#[test]
fn embedded_and_bigquery_give_identical_tables_tests_training_sets_and_online_values() {
    let Some(e) = emulators() else { return };
    let (_t1, emb) = example("diff");
    let (_t2, bq) = example("diff");
    let dataset = unique("amora_diff");
    on_bigquery(&bq, &e, &dataset, &unique("amora-diff").replace('_', "-"));
    let out = tempfile::tempdir().unwrap();
    let o = |n: &str| out.path().join(n);

    // The pipeline: the same models, run in each engine.
    amora(&emb, &["materialize"]).ok();
    let run = amora(&bq, &["materialize"]).ok();
    assert!(run.stdout.contains("ran: [steps, step_count_by_source]"), "{}", run.stdout);
    for model in ["steps", "step_count_by_source"] {
        amora(&emb, &["show", model, "--output", o(&format!("emb_{model}.csv")).to_str().unwrap()]).ok();
        amora(&bq, &["show", model, "--output", o(&format!("bq_{model}.csv")).to_str().unwrap()]).ok();
        let (a, b) = (read(&o(&format!("emb_{model}.csv"))), read(&o(&format!("bq_{model}.csv"))));
        assert!(a.lines().count() > 1000, "{model} has rows");
        assert_eq!(a, b, "model table {model} differs between the embedded engine and BigQuery");
    }
    // A source that is already a BigQuery table (here: the table the first run loaded).
    let (_t3, from_bq) = example("diff");
    on_bigquery(&from_bq, &e, &unique("amora_src"), &unique("amora-src").replace('_', "-"));
    edit(
        &from_bq.join("sources/health.yml"),
        "path: data/health.csv",
        &format!("path: bigquery://test-project.{dataset}.health"),
    );
    amora(&from_bq, &["materialize"]).ok();
    amora(&from_bq, &["show", "steps", "--output", o("src_steps.csv").to_str().unwrap()]).ok();
    assert_eq!(read(&o("emb_steps.csv")), read(&o("src_steps.csv")), "a bigquery:// source gives the same model");
    // Unchanged models are skipped on BigQuery too.
    let again = amora(&bq, &["materialize"]).ok();
    assert!(again.stdout.contains("skipped: [steps, step_count_by_source]"), "{}", again.stdout);
    let (te, tb) = (amora(&emb, &["test"]).ok(), amora(&bq, &["test"]).ok());
    assert_eq!(te.stdout, tb.stdout);
    assert!(tb.stdout.contains("9 passed, 0 failed"), "{}", tb.stdout);

    // Training sets: the same entity rows, answered by each engine.
    amora(&emb, &["feature-store", "apply"]).ok();
    let applied = amora(&bq, &["feature-store", "apply"]).ok();
    assert!(applied.stdout.contains("gs://"), "{}", applied.stdout);
    let n = probing_entities(&read(&o("emb_step_count_by_source.csv")), &o("entities.csv"), 7);
    let entities = o("entities.csv");
    let entities = entities.to_str().unwrap();
    let features = "step_count_by_source:value_avg,step_count_by_source:value_sum,step_count_by_source:value_count";
    for (args, name) in [
        (vec!["--features", features], "refs"),
        (vec!["--feature-service", "step_activity", "--full-feature-names"], "service"),
    ] {
        let mut a = vec!["feature-store", "get-historical-features", "--entities", entities];
        a.extend(args.iter().copied());
        let (fe, fb) = (o(&format!("emb_{name}.csv")), o(&format!("bq_{name}.csv")));
        let mut ae = a.clone();
        ae.extend(["--output", fe.to_str().unwrap()]);
        let mut ab = a.clone();
        ab.extend(["--output", fb.to_str().unwrap()]);
        amora(&emb, &ae).ok();
        amora(&bq, &ab).ok();
        let (x, y) = (read(&fe), read(&fb));
        assert_eq!(x.lines().count(), n + 1);
        // Not vacuous: some rows found a value, some (past the TTL, unknown sources) did not.
        let found = x.lines().skip(1).filter(|l| !l.ends_with(",,") && !l.ends_with(',')).count();
        assert!(found > n / 3 && found < n, "{found} of {n} rows have values");
        assert_eq!(x, y, "training set ({name}) differs between the embedded engine and BigQuery");
    }
    // No entity rows: an empty training set with its columns, as on the embedded engine.
    use amora_offline::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let empty = amora_offline::arrow::record_batch::RecordBatch::new_empty(std::sync::Arc::new(Schema::new(vec![
        Field::new("source_name", DataType::Utf8, true),
        Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("label", DataType::Int64, true),
    ])));
    rt.block_on(amora_offline::frames::write_frame(&amora_offline::Warehouse::new(1), empty, &o("none.parquet")))
        .unwrap();
    for (d, f) in [(&emb, "emb_none.parquet"), (&bq, "bq_none.parquet")] {
        let none = o("none.parquet");
        let out = o(f);
        amora(
            d,
            &[
                "feature-store",
                "get-historical-features",
                "--entities",
                none.to_str().unwrap(),
                "--features",
                features,
                "--output",
                out.to_str().unwrap(),
            ],
        )
        .ok();
    }
    let (a, b) = rt.block_on(async {
        (
            amora_offline::frames::read_frame(&o("emb_none.parquet")).await.unwrap(),
            amora_offline::frames::read_frame(&o("bq_none.parquet")).await.unwrap(),
        )
    });
    assert_eq!((a.num_rows(), b.num_rows()), (0, 0));
    assert_eq!(a.schema(), b.schema(), "the empty training sets' columns differ");
    // The REST fallback reads the same rows as the Storage Read API.
    edit(&bq.join("amora.yaml"), "    dataset:", "    read_api: rest\n    dataset:");
    amora(
        &bq,
        &[
            "feature-store",
            "get-historical-features",
            "--entities",
            o("entities.csv").to_str().unwrap(),
            "--features",
            features,
            "--output",
            o("bq_rest.csv").to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(read(&o("emb_refs.csv")), read(&o("bq_rest.csv")), "REST paging differs from Storage Read");

    // Materialization: the latest row per entity, pushed down, into each project's online store.
    let window = ["feature-store", "materialize", "2024-01-01T00:00:00", "2024-01-20T00:00:00"];
    amora(&emb, &window).ok();
    let m = amora(&bq, &window).ok();
    assert!(m.stderr.contains("rows written"), "{}", m.stderr);
    let read_online = |dir: &Path| {
        json(amora(
            dir,
            &[
                "feature-store",
                "get-online-features",
                "--features",
                features,
                "--entity",
                "source_name=Mi Fit",
                "--entity",
                "source_name=iPhone",
                "--entity",
                "source_name=Apple Watch",
                "--entity",
                "source_name=nobody",
                "--json",
            ],
        ))
    };
    let (oe, ob) = (read_online(&emb), read_online(&bq));
    assert_eq!(oe, ob, "online values differ");
    let statuses = oe["results"][0]["statuses"].to_string();
    assert_eq!(statuses.matches("NOT_FOUND").count(), 1, "only the unknown source is missing: {statuses}");
}

#[test]
fn bigquery_errors_name_the_file_and_failing_tests_fail() {
    let Some(e) = emulators() else { return };
    let (_t, bq) = example("bqerr");
    on_bigquery(&bq, &e, &unique("amora_err"), &unique("amora-err").replace('_', "-"));
    amora(&bq, &["materialize"]).ok();
    // A data test that fails on BigQuery is reported, with its rows counted there.
    edit(&bq.join("models/steps.yml"), "accepted_values: [count]", "accepted_values: [steps]");
    let t = amora(&bq, &["test"]).fails();
    assert!(t.stdout.contains("FAIL") && t.stdout.contains("accepted_values"), "{}", t.stdout);
    // A model whose SQL BigQuery rejects: its SQL file and BigQuery's message; dependents are blocked.
    edit(&bq.join("models/steps.sql"), "CAST(value AS DOUBLE) AS value", "CAST(no_such_column AS DOUBLE) AS value");
    let r = amora(&bq, &["materialize"]).fails();
    assert!(r.stdout.contains("steps.sql") && r.stdout.contains("BigQuery"), "{}", r.stdout);
    assert!(r.stdout.contains("blocked: [step_count_by_source]"), "{}", r.stdout);
    // The table of the last good run is still there and complete (CREATE OR REPLACE is atomic).
    let out = tempfile::tempdir().unwrap();
    let f = out.path().join("steps.csv");
    amora(&bq, &["show", "steps", "--output", f.to_str().unwrap()]).ok();
    assert!(read(&f).lines().count() > 1000);
    // An unreachable BigQuery is a clean error, not a panic.
    let (_t2, down) = example("bqdown");
    edit(
        &down.join("amora.yaml"),
        "  offline_store:\n    type: embedded\n",
        "  offline_store:\n    type: bigquery\n    project_id: test-project\n    endpoint: http://127.0.0.1:9\n",
    );
    let r = amora(&down, &["materialize"]).fails();
    assert!(r.stdout.contains("unreachable"), "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}
