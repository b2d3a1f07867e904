//! `amora feature-store materialize`, `materialize-incremental`, `get-online-features`.

use std::io::IsTerminal;
use std::path::Path;

use amora_core::online::{
    get_online_features as read_online, materialize_plan, online_views, value_json, MaterializeRequest, Progress,
    Target,
};
use amora_project::Config;
use amora_proto::RegistryFile;
use amora_registry::ops;
use amora_registry::store::RegistryStore;
use anyhow::{bail, Context};

/// Parses a time: RFC 3339, or a naive `YYYY-MM-DD[THH:MM:SS[.f]]` taken as UTC.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros());
    }
    bail!("cannot read the time `{s}`; write e.g. 2024-01-01T00:00:00 (UTC) or 2024-01-01T00:00:00+02:00")
}

fn fmt(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

pub fn materialize(
    root: &Path,
    config: &Config,
    registry: &dyn RegistryStore,
    start: Option<&str>,
    end: Option<&str>,
    only: &[String],
    quiet: bool,
) -> anyhow::Result<()> {
    let project = &config.project;
    let (stored, file) = ops::read(registry)?;
    if stored.is_none() {
        bail!("no registry at {}; run `amora feature-store apply` first", registry.location());
    }
    let now = chrono::Utc::now().timestamp_micros();
    let request = MaterializeRequest {
        start: start.map(parse_time).transpose()?,
        end: end.map(parse_time).transpose()?.unwrap_or(now),
        views: only.to_vec(),
        now,
        user: std::env::var("AMORA_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into()),
    };
    let plan = materialize_plan(&file, project, root, &request)?;
    let store = crate::open_online(root, config)?;
    let version = config.feature_store.entity_key_serialization_version;
    let tty = std::io::stderr().is_terminal() && !quiet;
    let rt = crate::pipeline_cmd::runtime()?;
    let bar = ProgressBar::new(tty, plan.iter().map(|(v, _)| v.name.clone()).collect());
    let progress = |view: &str, p: Progress| bar.update(view, p);
    if !quiet {
        for (v, (from, to)) in &plan {
            eprintln!("{}: from {} to {}", v.name, fmt(*from), fmt(*to));
        }
    }
    let target = Target { store: store.as_ref(), project, version };
    let offline = crate::open_offline(root, config)?;
    let outcomes = amora_core::online::materialize(
        rt.handle(),
        offline.as_ref(),
        registry,
        target,
        &plan,
        &request.user,
        &progress,
    )?;
    if tty {
        eprintln!();
    }
    let mut failures = Vec::new();
    for o in &outcomes {
        match &o.result {
            Ok(rows) if !quiet => eprintln!("{}: {rows} rows written in {:.3}s", o.view, o.seconds),
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: {e}", o.view)),
        }
    }
    if !failures.is_empty() {
        bail!(
            "materializing failed (nothing recorded for these views; re-running converges):\n  {}",
            failures.join("\n  ")
        );
    }
    if !quiet {
        println!("Materialized {} feature view(s) into {}", outcomes.len(), store.name());
    }
    Ok(())
}

pub fn get_online_features(
    root: &Path,
    config: &Config,
    file: &RegistryFile,
    features: &[String],
    entities: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let rows: Vec<Vec<(String, String)>> = entities
        .iter()
        .map(|e| {
            e.split(',')
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                        .context(format!("--entity `{kv}` is not key=value"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .collect::<anyhow::Result<_>>()?;
    let store = crate::open_online(root, config)?;
    let now = chrono::Utc::now().timestamp_micros();
    let target = Target {
        store: store.as_ref(),
        project: &config.project,
        version: config.feature_store.entity_key_serialization_version,
    };
    let (names, values) = read_online(file, root, target, features, &rows, now)?;
    if json {
        let results: Vec<serde_json::Value> = (0..names.len())
            .map(|i| {
                serde_json::json!({
                    "values": values.iter().map(|r| value_json(&r[i].value)).collect::<Vec<_>>(),
                    "statuses": values.iter().map(|r| r[i].status).collect::<Vec<_>>(),
                    "event_timestamps": values.iter().map(|r| r[i].event_ts.map(fmt).unwrap_or_else(|| "1970-01-01T00:00:00Z".into())).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"metadata": {"feature_names": names}, "results": results})
            )?
        );
        return Ok(());
    }
    for (e, r) in entities.iter().zip(&values) {
        println!("{e}");
        for (n, v) in names.iter().zip(r) {
            println!(
                "  {n:<24} {:<24} {:?} {}",
                value_json(&v.value).to_string(),
                v.status,
                v.event_ts.map(fmt).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Deletes the online values of `names` (views as `file` describes them) for the project.
pub fn remove_views(root: &Path, config: &Config, file: &RegistryFile, names: &[String]) -> anyhow::Result<()> {
    let views = online_views(file, &config.project, root)?;
    let store = crate::open_online(root, config)?;
    for name in names {
        let v = views
            .iter()
            .find(|v| v.name == *name)
            .with_context(|| format!("project {} has no feature view `{name}`", config.project))?;
        let keys: Vec<String> = v.join_keys.iter().map(|k| k.0.clone()).collect();
        let features: Vec<String> = v.features.iter().map(|f| f.0.clone()).collect();
        store.delete_view(
            &config.project,
            name,
            &keys,
            config.feature_store.entity_key_serialization_version,
            &features,
        )?;
    }
    Ok(())
}

/// Online read latency through the library: p50 / p99 / p99.9 of `iterations` reads
/// of `batch` entities each (ids from the first column of a Parquet or CSV file).
#[allow(clippy::too_many_arguments)]
pub fn read_latency(
    root: &Path,
    config: &Config,
    file: &RegistryFile,
    features: &[String],
    join_key: &str,
    ids: &Path,
    batch: usize,
    iterations: usize,
) -> anyhow::Result<()> {
    use amora_offline::arrow::array::Array;
    let rt = crate::pipeline_cmd::runtime()?;
    let frame = rt.block_on(amora_offline::frames::read_frame(ids))?;
    let col = amora_offline::arrow::compute::cast(frame.column(0), &amora_offline::arrow::datatypes::DataType::Utf8)?;
    let col = col.as_any().downcast_ref::<amora_offline::arrow::array::StringArray>().context("ids")?;
    let ids: Vec<String> = (0..col.len()).map(|i| col.value(i).to_string()).collect();
    anyhow::ensure!(!ids.is_empty(), "no ids");
    let store = crate::open_online(root, config)?;
    let target = Target {
        store: store.as_ref(),
        project: &config.project,
        version: config.feature_store.entity_key_serialization_version,
    };
    let now = chrono::Utc::now().timestamp_micros();
    let request = amora_core::online::resolve_online(file, &config.project, root, features)?;
    let mut samples = Vec::with_capacity(iterations);
    let mut present = 0usize;
    for i in 0..iterations + iterations / 10 {
        let rows: Vec<Vec<(String, String)>> =
            (0..batch).map(|j| vec![(join_key.to_string(), ids[(i * batch + j * 7919) % ids.len()].clone())]).collect();
        let t0 = std::time::Instant::now();
        let values = amora_core::online::read_online(target, &request, &rows, now)?;
        let dt = t0.elapsed().as_secs_f64() * 1e6;
        if i >= iterations / 10 {
            samples.push(dt);
            present += values.iter().flatten().filter(|v| v.value.is_some()).count();
        }
    }
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{{\"store\": \"{}\", \"batch\": {batch}, \"iterations\": {iterations}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"values_found\": {present}}}",
        store.name(),
        q(0.5),
        q(0.99),
        q(0.999)
    );
    Ok(())
}

/// One status line for all views on a terminal: rows written of the total, rows/s, ETA.
struct ProgressBar {
    tty: bool,
    started: std::time::Instant,
    state: std::sync::Mutex<Vec<(String, Option<Progress>)>>,
}

impl ProgressBar {
    fn new(tty: bool, views: Vec<String>) -> ProgressBar {
        let state = std::sync::Mutex::new(views.into_iter().map(|v| (v, None)).collect());
        ProgressBar { tty, started: std::time::Instant::now(), state }
    }

    fn update(&self, view: &str, p: Progress) {
        if !self.tty {
            return;
        }
        let Ok(mut state) = self.state.lock() else { return };
        if let Some(slot) = state.iter_mut().find(|(v, _)| v == view) {
            slot.1 = Some(p);
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let line: Vec<String> = state
            .iter()
            .map(|(v, p)| match p {
                None => format!("{v}: scanning"),
                Some(p) => {
                    let rate = p.written as f64 / secs;
                    let eta = if p.written == 0 || rate <= 0.0 {
                        "?".to_string()
                    } else {
                        format!("{:.1}s", (p.total - p.written) as f64 / rate)
                    };
                    format!("{v}: {}/{} rows, {rate:.0} rows/s, ETA {eta}", p.written, p.total)
                }
            })
            .collect();
        eprint!("\r\x1b[2K{}", line.join(" | "));
    }
}
