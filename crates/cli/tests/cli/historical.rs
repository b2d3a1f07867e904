//! `amora feature-store get-historical-features` on the example project.

use crate::support::*;

#[test]
fn training_data_keeps_rows_and_order_and_checks_input_first() {
    let (_tmp, dir) = example("health");
    amora(&dir, &["materialize"]).ok();
    amora(&dir, &["feature-store", "apply"]).ok();
    // The hour buckets of 2024-01-10 00:00 exist for Fitbit in the seed data; the rest probe misses and TTL.
    std::fs::write(
        dir.join("events.csv"),
        "source_name,event_timestamp,label\nnope,2024-01-05 10:30:00,1\nFitbit,2024-01-10 00:00:00,0\nFitbit,2024-01-10 00:00:00,1\nMi Fit,2023-01-01 00:00:00,0\n",
    )
    .unwrap();
    // Paths are relative to the working directory, as usual for a CLI: run there.
    let fs = |args: &[&str]| -> Run {
        let mut a = vec!["feature-store", "get-historical-features", "--entities", "events.csv"];
        a.extend_from_slice(args);
        amora_cmd(&dir, &a).current_dir(&dir).output().unwrap().into()
    };
    fs(&["--features", "step_count_by_source:value_avg,step_count_by_source:value_count", "--output", "out.csv"]).ok();
    let out = std::fs::read_to_string(dir.join("out.csv")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "source_name,event_timestamp,label,value_avg,value_count");
    assert_eq!(lines.len(), 5, "every entity row, duplicates included:\n{out}");
    assert!(lines[1].starts_with("nope,2024-01-05T10:30:00Z,1,,"), "{out}");
    assert!(lines[2].starts_with("Fitbit,2024-01-10T00:00:00Z,0,") && !lines[2].ends_with(",,"), "{out}");
    assert_eq!(
        lines[2][lines[2].find(",0,").unwrap()..],
        lines[3][lines[3].find(",1,").unwrap()..].replacen(",1,", ",0,", 1)
    );
    assert!(lines[4].ends_with(",0,,"), "{out}");

    fs(&["--feature-service", "step_activity", "--full-feature-names", "--output", "out.csv"]).ok();
    let header = std::fs::read_to_string(dir.join("out.csv")).unwrap().lines().next().unwrap().to_string();
    assert_eq!(
        header,
        "source_name,event_timestamp,label,step_count_by_source__value_avg,step_count_by_source__value_sum"
    );

    for (args, needle) in [
        (vec!["--features", "step_count_by_source:nope"], "has no feature `nope`"),
        (vec!["--features", "no_view:x"], "has no feature view `no_view`"),
        (vec!["--features", "value_avg"], "is not `view:feature`"),
        (vec!["--feature-service", "missing"], "has no feature service `missing`"),
    ] {
        let mut a = args.clone();
        a.extend(["--output", "x.csv"]);
        let err = fs(&a).fails().stderr;
        assert!(err.contains(needle), "{needle}: {err}");
    }
    std::fs::write(dir.join("events.csv"), "source_name,event_timestamp,value_avg\nFitbit,2024-01-10 00:00:00,1\n")
        .unwrap();
    let err = fs(&["--features", "step_count_by_source:value_avg", "--output", "x.csv"]).fails().stderr;
    assert!(err.contains("feature name collision: `value_avg`") && err.contains("--full-feature-names"), "{err}");
    std::fs::write(dir.join("events.csv"), "source,event_timestamp\nFitbit,2024-01-10 00:00:00\n").unwrap();
    let err = fs(&["--features", "step_count_by_source:value_avg", "--output", "x.csv"]).fails().stderr;
    assert!(err.contains("no `source_name` column"), "{err}");
    std::fs::write(dir.join("events.csv"), "source_name,event_timestamp\n1,2024-01-10 00:00:00\n").unwrap();
    let err = fs(&["--features", "step_count_by_source:value_avg", "--output", "x.csv"]).fails().stderr;
    assert!(err.contains("entity column `source_name` has type Int64 but the join key of feature view `step_count_by_source` is STRING"), "{err}");
    assert!(!dir.join("x.csv").exists(), "nothing written on a bad request");
}
