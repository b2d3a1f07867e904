//! `amora compile`, `materialize`, `test`, `models list`: the data pipeline's front end.

use std::io::{IsTerminal, Write};

use amora_pipeline::manifest::Status;
use amora_pipeline::run::{manifest_path, write_compiled};
use amora_pipeline::{compile, materialize, Event, Manifest, RunOptions};
use amora_project::Project;
use anyhow::bail;

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn compile_cmd(p: &Project) -> anyhow::Result<()> {
    let compiled = compile(&p.defs);
    write_compiled(p, &compiled)?;
    for (i, g) in compiled.generations.iter().enumerate() {
        for name in g {
            let m = &compiled.models[name];
            println!("generation {i}: {name} ({:?}) reads {}", m.materialization, m.reads.join(", "));
        }
    }
    println!("Compiled {} models into {}", compiled.models.len(), p.target_dir().join("compiled").display());
    Ok(())
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Success => "OK",
        Status::Skipped => "SKIPPED (unchanged)",
        Status::Failed => "FAILED",
        Status::Blocked => "BLOCKED",
        Status::Pending => "PENDING",
    }
}

pub fn materialize_cmd(p: &Project, opts: RunOptions, json: bool) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal() && !json;
    let on_event = move |e: Event| match e {
        Event::Started { model } if !tty => eprintln!("running {model}"),
        Event::Started { .. } => {}
        Event::Finished { outcome, done, total, rows_so_far } => {
            if tty {
                eprint!(
                    "\r\x1b[2K[{done}/{total}] {} {} ({} rows) | {rows_so_far} rows written",
                    outcome.model,
                    status_word(outcome.status),
                    outcome.rows
                );
                if done == total {
                    eprintln!();
                }
            } else {
                eprintln!(
                    "[{done}/{total}] {} {} rows={} seconds={:.3}",
                    outcome.model,
                    status_word(outcome.status),
                    outcome.rows,
                    outcome.seconds
                );
            }
            let _ = std::io::stderr().flush();
        }
    };
    let summary = runtime()?.block_on(materialize(p, &opts, &on_event))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for o in &summary.outcomes {
            println!(
                "{:<32} {:<20} {:>12} rows {:>12} bytes {:>8.3}s",
                o.model,
                status_word(o.status),
                o.rows,
                o.bytes,
                o.seconds
            );
            if let Some(e) = &o.error {
                println!("    {}", e.replace('\n', "\n    "));
            }
        }
        let list = |s: Status| summary.with_status(s).join(", ");
        println!(
            "\nDone in {:.3}s (models {:.3}s). ran: [{}] skipped: [{}] failed: [{}] blocked: [{}]",
            summary.seconds,
            summary.model_seconds,
            list(Status::Success),
            list(Status::Skipped),
            list(Status::Failed),
            list(Status::Blocked)
        );
    }
    if summary.failed() {
        bail!(
            "{} model(s) failed or were blocked",
            summary.with_status(Status::Failed).len() + summary.with_status(Status::Blocked).len()
        );
    }
    Ok(())
}

pub fn test_cmd(p: &Project, select: &[String], json: bool) -> anyhow::Result<()> {
    let results = runtime()?.block_on(amora_pipeline::tests::run_tests(p, select));
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            let target = match &r.column {
                Some(c) => format!("{}.{c}", r.model),
                None => r.model.clone(),
            };
            match (&r.error, r.passed) {
                (Some(e), _) => println!("ERROR {target} {}: {e}", r.test),
                (None, true) => println!("PASS  {target} {}", r.test),
                (None, false) => {
                    println!("FAIL  {target} {} ({} failing rows)", r.test, r.failing_rows);
                    for line in r.sample.lines() {
                        println!("      {line}");
                    }
                }
            }
        }
        let passed = results.iter().filter(|r| r.passed).count();
        println!("\n{passed} passed, {} failed", results.len() - passed);
    }
    if results.iter().any(|r| !r.passed) {
        bail!("data tests failed");
    }
    Ok(())
}

pub fn models_list(p: &Project, json: bool) -> anyhow::Result<()> {
    let manifest = Manifest::load(&manifest_path(p));
    let rows: Vec<serde_json::Value> = p
        .defs
        .models
        .iter()
        .map(|m| {
            let run = manifest.runs.get(&m.name);
            serde_json::json!({
                "name": m.name,
                "depends_on": m.depends_on,
                "materialization": m.materialization,
                "rows": run.map(|r| r.rows),
                "bytes": run.map(|r| r.bytes),
                "last_run": run.and_then(|r| r.last_success.clone()),
                "status": run.map(|r| r.status).unwrap_or(Status::Pending),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<10} {:>12} {:>12}  {:<10} {:<32} DEPENDS ON",
        "MODEL", "TYPE", "ROWS", "BYTES", "STATUS", "LAST RUN"
    );
    for r in rows {
        let s = |k: &str| match &r[k] {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let deps: Vec<String> =
            r["depends_on"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
        println!(
            "{:<28} {:<10} {:>12} {:>12}  {:<10} {:<32} {}",
            s("name"),
            s("materialization"),
            s("rows"),
            s("bytes"),
            s("status"),
            s("last_run"),
            deps.join(", ")
        );
    }
    Ok(())
}
