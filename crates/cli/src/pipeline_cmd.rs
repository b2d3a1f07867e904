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
    let offline = crate::open_offline(&p.root, &p.config)?;
    let summary = runtime()?.block_on(materialize(p, offline.as_ref(), &opts, &on_event))?;
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
    let offline = crate::open_offline(&p.root, &p.config)?;
    let results = runtime()?.block_on(amora_pipeline::tests::run_tests(p, offline.as_ref(), select));
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

/// `amora show MODEL`: the model's table from the offline store, sorted by every column.
pub fn show_cmd(p: &Project, model: &str, output: Option<&std::path::Path>, limit: usize) -> anyhow::Result<()> {
    let m = p.defs.model(model).ok_or_else(|| {
        let hint = amora_model::ident::closest(model, p.defs.models.iter().map(|m| m.name.as_str()))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        anyhow::anyhow!("unknown model `{model}`{hint}")
    })?;
    if m.materialization != amora_model::Materialization::Table {
        bail!("model `{model}` is a {:?}, not a table; only tables can be shown", m.materialization);
    }
    let offline = crate::open_offline(&p.root, &p.config)?;
    runtime()?.block_on(async {
        let batches = offline.read_table(m).await?;
        let w = amora_offline::Warehouse::new(0);
        let Some(first) = batches.first() else {
            println!("(no rows)");
            return Ok(());
        };
        let schema = first.schema();
        let df = w.context().read_batches(batches.clone())?;
        let order: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| amora_offline::datafusion_prelude::ident(f.name()).sort(true, true))
            .collect();
        let sorted = df.sort(order)?.collect().await?;
        match output {
            Some(path) => {
                let all = amora_offline::arrow::compute::concat_batches(&schema, &sorted)?;
                let rows = all.num_rows();
                amora_offline::frames::write_frame(&w, all, path).await?;
                eprintln!("{rows} rows of {model} ({}) written to {}", offline.describe(), path.display());
            }
            None => {
                let mut shown = Vec::new();
                let mut left = limit;
                for b in sorted {
                    if left == 0 {
                        break;
                    }
                    let n = b.num_rows().min(left);
                    shown.push(b.slice(0, n));
                    left -= n;
                }
                println!("{}", amora_offline::arrow::util::pretty::pretty_format_batches(&shown)?);
            }
        }
        anyhow::Ok(())
    })
}
