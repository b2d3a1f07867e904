//! `amora materialize`: run the DAG in the warehouse.
//!
//! Models run generation by generation, the models of one generation concurrently
//! (at most `threads` at once). A model whose compiled SQL, declaration and inputs
//! are unchanged since its last success is skipped unless forced. A failed model
//! blocks its dependents, not its independent siblings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Instant, SystemTime};

use amora_model::hash::Fnv64;
use amora_model::{Materialization, ProjectDefs};
use amora_offline::OfflineStore;
use amora_project::Project;
use futures::StreamExt;

use crate::compile::{compile, Compiled};
use crate::manifest::{Manifest, ModelRun, Status};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only these models (all when empty).
    pub select: Vec<String>,
    /// With `select`: also run everything the selected models depend on.
    pub depends: bool,
    /// Run even unchanged models.
    pub force: bool,
    /// Models run at once within a generation (0: one per core).
    pub threads: usize,
}

/// Progress, for the front end to show.
#[derive(Debug, Clone)]
pub enum Event {
    Started { model: String },
    Finished { outcome: ModelOutcome, done: usize, total: usize, rows_so_far: u64 },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelOutcome {
    pub model: String,
    pub status: Status,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub outcomes: Vec<ModelOutcome>,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Time spent running models' SQL and writing their tables.
    pub model_seconds: f64,
}

impl RunSummary {
    pub fn with_status(&self, s: Status) -> Vec<&str> {
        self.outcomes.iter().filter(|o| o.status == s).map(|o| o.model.as_str()).collect()
    }
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|o| matches!(o.status, Status::Failed | Status::Blocked))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown model `{name}`{hint}")]
    UnknownModel { name: String, hint: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// Writes `target/compiled/<model>.sql` and the compile part of the manifest.
pub fn write_compiled(project: &Project, compiled: &Compiled) -> Result<(), PipelineError> {
    let dir = project.target_dir().join("compiled");
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    for m in compiled.models.values() {
        let p = dir.join(format!("{}.sql", m.name));
        std::fs::write(&p, format!("{}\n", m.sql)).map_err(|e| io(&p, e))?;
    }
    let path = manifest_path(project);
    let mut manifest = Manifest::load(&path);
    manifest.project = project.defs.name.clone();
    manifest.compiled = serde_json::to_value(compiled).expect("serializable");
    manifest.runs.retain(|name, _| compiled.models.contains_key(name));
    manifest.save(&path).map_err(|e| io(&path, e))
}

pub fn manifest_path(project: &Project) -> std::path::PathBuf {
    project.target_dir().join("manifest.json")
}

/// Size and modification time of a local file or folder (recursively), for change detection.
fn file_fingerprint(path: &Path, h: &mut Fnv64) {
    let Ok(meta) = std::fs::metadata(path) else {
        h.write(b"missing");
        return;
    };
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            file_fingerprint(&e, h);
        }
    } else {
        let mtime =
            meta.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).unwrap_or_default();
        h.write(path.display().to_string().as_bytes());
        h.write(&meta.len().to_le_bytes());
        h.write(&mtime.as_nanos().to_le_bytes());
    }
}

/// Which models to run: the selection, plus their upstream models with `depends`.
fn selection(defs: &ProjectDefs, compiled: &Compiled, opts: &RunOptions) -> Result<BTreeSet<String>, PipelineError> {
    if opts.select.is_empty() {
        return Ok(compiled.models.keys().cloned().collect());
    }
    let mut out = BTreeSet::new();
    for name in &opts.select {
        if !compiled.models.contains_key(name) {
            let hint = amora_model::ident::closest(name, defs.models.iter().map(|m| m.name.as_str()))
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(PipelineError::UnknownModel { name: name.clone(), hint });
        }
        let mut stack = vec![name.clone()];
        while let Some(n) = stack.pop() {
            if out.insert(n.clone()) && opts.depends {
                stack.extend(
                    defs.model(&n)
                        .into_iter()
                        .flat_map(|m| m.depends_on.iter())
                        .filter(|d| compiled.models.contains_key(*d))
                        .cloned(),
                );
            }
        }
    }
    Ok(out)
}

/// Runs the models. Problems with single models are reported in the summary, not as errors.
pub async fn materialize(
    project: &Project,
    warehouse: &dyn OfflineStore,
    opts: &RunOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let defs = &project.defs;
    let compiled = compile(defs);
    write_compiled(project, &compiled)?;
    let selected = selection(defs, &compiled, opts)?;
    let path = manifest_path(project);
    let mut manifest = Manifest::load(&path);

    // Sources: register each; an unreadable source fails the models that read it.
    let mut broken: BTreeMap<String, String> = BTreeMap::new();
    let mut source_hash: BTreeMap<String, String> = BTreeMap::new();
    // Lists remote sources' objects for their fingerprints (whatever the offline store).
    let lister = amora_offline::Warehouse::new(1);
    for s in &defs.sources {
        let mut h = Fnv64::default();
        if s.location.contains("://") {
            h.write(s.location.as_bytes());
            // A remote source's objects: sizes and ETags, so that new data re-runs its models.
            if let Ok(f) = lister.remote_fingerprint(&s.location).await {
                h.write(f.as_bytes());
            }
        } else {
            file_fingerprint(&project.root.join(&s.location), &mut h);
        }
        source_hash.insert(s.name.clone(), h.hex());
        if let Err(e) = warehouse.prepare_source(s, &project.root).await {
            broken.insert(s.name.clone(), format!("{} ({}): {e}", s.name, s.file.display()));
        }
    }

    let total = selected.iter().filter(|n| compiled.models[*n].materialization != Materialization::Ephemeral).count();
    let mut outcomes = Vec::new();
    let mut status: BTreeMap<String, Status> = BTreeMap::new();
    let mut done = 0;
    let mut rows_so_far = 0;
    let mut model_seconds = 0.0;
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { opts.threads };

    for generation in &compiled.generations {
        // Models not selected are still made readable for the selected ones.
        for name in generation.iter().filter(|n| !selected.contains(*n)) {
            let m = defs.model(name).expect("compiled model");
            match m.materialization {
                Materialization::Table => match warehouse.has_table(m).await {
                    Ok(true) => {
                        if let Err(e) = warehouse.use_table(m).await {
                            broken.insert(name.clone(), format!("table of model {name}: {e}"));
                        }
                    }
                    Ok(false) => {
                        broken.insert(
                            name.clone(),
                            format!("model `{name}` has no table yet; run it first or add --depends"),
                        );
                    }
                    Err(e) => {
                        broken.insert(name.clone(), format!("table of model {name}: {e}"));
                    }
                },
                Materialization::View => {
                    if let Err(e) = warehouse.build_view(m, &compiled.models[name].sql).await {
                        broken.insert(name.clone(), format!("view {name}: {e}"));
                    }
                }
                Materialization::Ephemeral => {}
            }
        }
        let runnable: Vec<&String> = generation.iter().filter(|n| selected.contains(*n)).collect();
        let jobs = runnable.into_iter().map(|name| {
            let m = defs.model(name).expect("compiled model");
            let c = &compiled.models[name];
            // Blocked by a failed upstream model, or an unreadable table it reads?
            let blocker = c.reads.iter().find_map(|r| {
                if matches!(status.get(r), Some(Status::Failed | Status::Blocked)) {
                    Some(format!("upstream model `{r}` failed"))
                } else {
                    broken.get(r).cloned()
                }
            });
            let mut h = Fnv64::default();
            for r in &c.reads {
                h.write(r.as_bytes());
                match source_hash.get(r) {
                    Some(s) => h.write(s.as_bytes()),
                    None => h.write(manifest.runs.get(r).map(|x| x.output_hash.as_str()).unwrap_or("none").as_bytes()),
                };
            }
            let input_hash = h.hex();
            let previous = manifest.runs.get(name).cloned();
            let same_inputs = previous.as_ref().is_some_and(|p| {
                matches!(p.status, Status::Success | Status::Skipped)
                    && p.sql_hash == c.sql_hash
                    && p.decl_hash == c.decl_hash
                    && p.input_hash == input_hash
            });
            async move {
                let t0 = Instant::now();
                if let Some(reason) = blocker {
                    return (
                        name.clone(),
                        input_hash,
                        previous,
                        Status::Blocked,
                        Default::default(),
                        0.0,
                        Some(reason),
                    );
                }
                if m.materialization == Materialization::Ephemeral {
                    return (name.clone(), input_hash, previous, Status::Success, Default::default(), 0.0, None);
                }
                on_event(Event::Started { model: name.clone() });
                // Unchanged, and (for a table) the table is still there.
                let unchanged = same_inputs
                    && !opts.force
                    && (m.materialization != Materialization::Table || warehouse.has_table(m).await.unwrap_or(false));
                let result =
                    match (m.materialization, unchanged) {
                        (Materialization::Table, true) => warehouse.use_table(m).await.map(|()| None),
                        (Materialization::Table, false) => warehouse.build_table(m, &c.sql).await.map(Some),
                        // A view is checked against its declaration, then made readable.
                        (_, skip) => warehouse.build_view(m, &c.sql).await.map(|()| {
                            if skip {
                                None
                            } else {
                                Some(Default::default())
                            }
                        }),
                    };
                let secs = t0.elapsed().as_secs_f64();
                match result {
                    Ok(None) => (name.clone(), input_hash, previous, Status::Skipped, Default::default(), secs, None),
                    Ok(Some(stats)) => (name.clone(), input_hash, previous, Status::Success, stats, secs, None),
                    Err(e) => {
                        let file =
                            if matches!(e, amora_offline::OfflineError::Sql(_)) { &m.sql_file } else { &m.yaml_file };
                        (
                            name.clone(),
                            input_hash,
                            previous,
                            Status::Failed,
                            Default::default(),
                            secs,
                            Some(format!("{}: {e}", file.display())),
                        )
                    }
                }
            }
        });
        let results: Vec<_> = futures::stream::iter(jobs).buffer_unordered(threads.max(1)).collect().await;
        for (name, input_hash, previous, st, stats, secs, error) in results {
            let c = &compiled.models[&name];
            status.insert(name.clone(), st);
            let is_ephemeral = c.materialization == Materialization::Ephemeral;
            let mut run = previous.unwrap_or_else(ModelRun::never);
            run.status = st;
            run.error = error.clone();
            if st == Status::Success {
                let now = chrono::Utc::now().to_rfc3339();
                run.output_hash =
                    amora_model::hash::hash_hex([c.sql_hash.as_bytes(), input_hash.as_bytes(), now.as_bytes()]);
                run.sql_hash = c.sql_hash.clone();
                run.decl_hash = c.decl_hash.clone();
                run.input_hash = input_hash;
                run.last_success = Some(now);
                (run.rows, run.bytes, run.seconds) = (stats.rows, stats.bytes, secs);
            }
            manifest.runs.insert(name.clone(), run);
            if st == Status::Success && !is_ephemeral {
                model_seconds += secs;
            }
            if is_ephemeral && st == Status::Success {
                continue;
            }
            done += 1;
            rows_so_far += stats.rows;
            let outcome =
                ModelOutcome { model: name, status: st, rows: stats.rows, bytes: stats.bytes, seconds: secs, error };
            on_event(Event::Finished { outcome: outcome.clone(), done, total, rows_so_far });
            outcomes.push(outcome);
        }
    }
    manifest.project = defs.name.clone();
    manifest.save(&path).map_err(|e| io(&path, e))?;
    Ok(RunSummary { outcomes, seconds: started.elapsed().as_secs_f64(), model_seconds })
}
