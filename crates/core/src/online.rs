//! Materialization (offline -> online) and online reads, over any [`OnlineStore`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use amora_offline::OfflineStore;
use amora_online::{OnlineStore, ViewRead, ViewRows, WriteRow};
use amora_proto::online::{serialize_entity_key, KeyValue, Value};
use amora_proto::RegistryFile;
use futures::StreamExt;

use crate::latest::{LatestRows, RowEncoder};
use crate::CoreError;

/// Where online values go: the store, the project, the entity-key serialization version.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub store: &'a dyn OnlineStore,
    pub project: &'a str,
    pub version: u32,
}

/// Where one view's materialization stands: rows scanned in the window, and online
/// rows (one per entity) written out of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub scanned: u64,
    pub written: u64,
    pub total: u64,
}

/// A feature view as materialization and online reads need it.
#[derive(Debug, Clone)]
pub struct OnlineView {
    pub name: String,
    pub join_keys: Vec<(String, i32)>,
    pub features: Vec<(String, i32)>,
    pub event_timestamp: String,
    pub created_timestamp: Option<String>,
    pub ttl_seconds: u64,
    pub location: String,
    pub online: bool,
    /// `max(end_time)` of the recorded materialization intervals (microseconds).
    pub materialized_until: Option<i64>,
    /// The active definition's version number (`meta.current_version_number`).
    pub version: i32,
}

/// The project's feature views, from the registry.
pub fn online_views(file: &RegistryFile, project: &str, root: &Path) -> Result<Vec<OnlineView>, CoreError> {
    let objects = amora_registry::current_objects(file, project)?;
    let mut out = Vec::new();
    for v in objects.feature_views.values() {
        let (Some(spec), meta) = (v.spec.as_ref(), v.meta.as_ref()) else { continue };
        let Some(source) = &spec.batch_source else { continue };
        let location = crate::source_location(source, root).unwrap_or_default();
        let until = meta
            .into_iter()
            .flat_map(|m| m.materialization_intervals.iter())
            .filter_map(|i| i.end_time)
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
            .max();
        out.push(OnlineView {
            name: spec.name.clone(),
            join_keys: spec.entity_columns.iter().map(|c| (c.name.clone(), c.value_type)).collect(),
            features: spec.features.iter().map(|f| (f.name.clone(), f.value_type)).collect(),
            event_timestamp: source.timestamp_field.clone(),
            created_timestamp: Some(source.created_timestamp_column.clone()).filter(|c| !c.is_empty()),
            ttl_seconds: spec.ttl.map_or(0, |d| u64::try_from(d.seconds).unwrap_or(0)),
            location,
            online: spec.online && !spec.disabled,
            materialized_until: until,
            version: meta.map_or(0, |m| m.current_version_number),
        });
    }
    Ok(out)
}

fn invalid(m: String) -> CoreError {
    CoreError::Invalid(m)
}

/// Writes, for each of `views` (one view, or views with the same join keys that
/// the store writes together), the latest row per entity with `start <= event_ts
/// <= end` of its window, and returns each view's rows written. The offline store
/// scans only the needed columns and the window (pushed into the Parquet reader,
/// or into BigQuery) and, where it can, keeps only the latest row per entity
/// itself: those rows are encoded and written as they arrive, an entity's rows
/// of all the views in one [`OnlineStore::write_views`] call (held until every
/// view's row has arrived, or the scans end). Otherwise [`LatestRows`] keeps one
/// row per entity, written view by view when its scan ends. Either way memory
/// follows the number of entities, not the table.
pub async fn materialize_views(
    offline: &dyn OfflineStore,
    target: Target<'_>,
    views: &[&PlannedView],
    on_progress: &(dyn Fn(&str, Progress) + Sync),
) -> Result<Vec<u64>, CoreError> {
    let Target { store, project, version } = target;
    let specs: Vec<amora_offline::ScanSpec> = views.iter().map(|(v, _)| scan_spec(v)).collect();
    let scans =
        futures::future::try_join_all(specs.iter().zip(views).map(|(s, (_, w))| offline.scan_window(s, *w))).await?;
    let n = views.len();
    let names: Vec<Vec<String>> = views.iter().map(|(v, _)| v.features.iter().map(|f| f.0.clone()).collect()).collect();
    let (batch, writers) = store.write_batching();
    let batch = batch.max(1);
    let written: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    // Each view's rows scanned and entities to write, for progress.
    let sizes: Vec<[AtomicU64; 2]> = (0..n).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect();
    let size = |i: usize, scanned: u64, total: u64| {
        sizes[i][0].store(scanned, Relaxed);
        sizes[i][1].store(total, Relaxed);
        on_progress(&views[i].0.name, Progress { scanned, written: 0, total });
    };
    // A chunk holds each view's rows (index-aligned with `views`).
    let write = |chunk: Vec<Vec<WriteRow>>| -> Result<(), CoreError> {
        let rows: Vec<ViewRows<'_>> = (0..n)
            .filter(|i| !chunk[*i].is_empty())
            .map(|i| ViewRows { view: &views[i].0.name, features: &names[i], rows: &chunk[i] })
            .collect();
        store.write_views(project, &rows).map_err(CoreError::Online)?;
        for (i, rows) in chunk.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let done = written[i].fetch_add(rows.len() as u64, Relaxed) + rows.len() as u64;
            let (scanned, total) = (sizes[i][0].load(Relaxed), sizes[i][1].load(Relaxed));
            on_progress(&views[i].0.name, Progress { scanned, written: done, total });
        }
        Ok(())
    };
    let Some(totals) = scans.iter().map(|s| s.latest).collect::<Option<Vec<u64>>>() else {
        // Every row in the window: keep the latest per entity, then write, view by view.
        for (i, scan) in scans.into_iter().enumerate() {
            let mut latest = LatestRows::new(&views[i].0, version);
            let mut batches = futures::stream::select_all(scan.streams);
            while let Some(b) = batches.next().await {
                latest.offer(&b?)?;
            }
            let (scanned, entities) = latest.counts();
            size(i, scanned, entities as u64);
            let mut chunks = latest.into_chunks(batch).map(|rows| {
                let mut chunk: Vec<Vec<WriteRow>> = (0..n).map(|_| Vec::new()).collect();
                chunk[i] = rows;
                Ok(chunk)
            });
            pipelined(writers.clamp(1, entities.div_ceil(batch).max(1)), || chunks.next(), &write)?;
        }
        return Ok(written.into_iter().map(AtomicU64::into_inner).collect());
    };
    // One row per entity already: encode and write as the scans yield them.
    for (i, t) in totals.iter().enumerate() {
        size(i, *t, *t);
    }
    let encoders: Vec<RowEncoder> = views.iter().map(|(v, _)| RowEncoder::new(v, version)).collect();
    let mut batches = futures::stream::select_all(
        scans.into_iter().enumerate().flat_map(|(i, s)| s.streams.into_iter().map(move |st| st.map(move |b| (i, b)))),
    );
    let entities = totals.iter().copied().max().unwrap_or(0) as usize;
    // The current batch's rows (of view `.0`); entities still waiting for another
    // view's row; then, when the scans end, those entities as they are.
    let mut pending: (usize, std::vec::IntoIter<WriteRow>) = (0, Vec::new().into_iter());
    let mut waiting: HashMap<Vec<u8>, Vec<Option<WriteRow>>, crate::latest::FxBuild> =
        HashMap::with_capacity_and_hasher(if n > 1 { entities.min(1 << 22) } else { 0 }, Default::default());
    let mut leftover: Option<std::collections::hash_map::IntoValues<Vec<u8>, Vec<Option<WriteRow>>>> = None;
    // Entities ready to write, `count` of them.
    let mut ready: Vec<Vec<WriteRow>> = (0..n).map(|_| Vec::new()).collect();
    let mut count = 0usize;
    let next = || loop {
        if count >= batch {
            count = 0;
            return Some(Ok(ready.iter_mut().map(std::mem::take).collect()));
        }
        if let Some(r) = pending.1.next() {
            let i = pending.0;
            if n == 1 {
                ready[0].push(r);
                count += 1;
                continue;
            }
            use std::collections::hash_map::Entry;
            match waiting.entry(r.entity_key.clone()) {
                Entry::Occupied(mut slot) => {
                    slot.get_mut()[i] = Some(r);
                    if slot.get().iter().all(Option::is_some) {
                        slot.remove().into_iter().zip(&mut ready).for_each(|(r, to)| to.extend(r));
                        count += 1;
                    }
                }
                Entry::Vacant(slot) => {
                    let mut rows = vec![None; n];
                    rows[i] = Some(r);
                    slot.insert(rows);
                }
            }
            continue;
        }
        if let Some(rest) = &mut leftover {
            match rest.next() {
                Some(rows) => {
                    rows.into_iter().zip(&mut ready).for_each(|(r, to)| to.extend(r));
                    count += 1;
                    continue;
                }
                None if count > 0 => {
                    count = 0;
                    return Some(Ok(ready.iter_mut().map(std::mem::take).collect()));
                }
                None => return None,
            }
        }
        match futures::executor::block_on(batches.next()) {
            Some((i, Ok(b))) => match encoders[i].write_rows(&b) {
                Ok(rows) => pending = (i, rows.into_iter()),
                Err(e) => return Some(Err(e)),
            },
            Some((_, Err(e))) => return Some(Err(e.into())),
            None => leftover = Some(std::mem::take(&mut waiting).into_values()),
        }
    };
    pipelined(writers.clamp(1, entities.div_ceil(batch).max(1)), next, &write)?;
    Ok(written.into_iter().map(AtomicU64::into_inner).collect())
}

fn scan_spec(view: &OnlineView) -> amora_offline::ScanSpec {
    amora_offline::ScanSpec {
        view: view.name.clone(),
        location: view.location.clone(),
        join_keys: view.join_keys.iter().map(|k| k.0.clone()).collect(),
        event_timestamp: view.event_timestamp.clone(),
        created_timestamp: view.created_timestamp.clone(),
        features: view.features.iter().map(|f| f.0.clone()).collect(),
    }
}

/// Runs `write` on the chunks `next` yields, from `writers` threads at once
/// (pipelined batches, as the store prefers), while the calling thread makes the
/// next chunks. The first failure, of a write or of `next`, stops the rest.
fn pipelined<T: Send>(
    writers: usize,
    mut next: impl FnMut() -> Option<Result<T, CoreError>>,
    write: &(impl Fn(T) -> Result<(), CoreError> + Sync),
) -> Result<(), CoreError> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel::<T>(writers);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..writers)
            .map(|_| {
                std::thread::Builder::new().name("online-writer".into()).spawn_scoped(s, || -> Result<(), CoreError> {
                    // After a failure (this writer's or another's), chunks are
                    // drained unwritten, so the maker never waits on a full channel.
                    let mut failed = None;
                    while let Ok(chunk) = rx.lock().map_err(|_| ()).and_then(|rx| rx.recv().map_err(|_| ())) {
                        if failed.is_some() || stop.load(Relaxed) {
                            continue;
                        }
                        if let Err(e) = write(chunk) {
                            stop.store(true, Relaxed);
                            failed = Some(e);
                        }
                    }
                    failed.map_or(Ok(()), Err)
                })
            })
            .collect();
        if workers.iter().any(|w| w.is_err()) {
            stop.store(true, Relaxed); // nothing would take the chunks
        }
        let mut result = Ok(());
        while !stop.load(Relaxed) {
            match next() {
                Some(Ok(chunk)) => {
                    if tx.send(chunk).is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    stop.store(true, Relaxed);
                    result = Err(e);
                }
                None => break,
            }
        }
        drop(tx);
        for w in workers {
            let r = match w {
                Ok(w) => w.join().unwrap_or_else(|_| Err(invalid("a writer thread panicked".into()))),
                Err(e) => Err(invalid(format!("cannot start a writer thread: {e}"))),
            };
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// One view's outcome in a [`materialize`] run.
#[derive(Debug)]
pub struct ViewOutcome {
    pub view: String,
    /// `(start, end)`, microseconds.
    pub window: (i64, i64),
    /// Rows written, or why the view failed (nothing is recorded for it).
    pub result: Result<u64, CoreError>,
    pub seconds: f64,
}

/// What `materialize` and `materialize-incremental` are asked to do. `start: None`
/// is incremental: from each view's last recorded end, or `now - ttl` when there
/// is none (`now - 52 weeks` for a ttl of 0), as Feast does.
#[derive(Debug, Clone)]
pub struct MaterializeRequest {
    pub start: Option<i64>,
    pub end: i64,
    /// Views by name; empty means every online view.
    pub views: Vec<String>,
    pub now: i64,
    /// Who is recorded in the registry history.
    pub user: String,
}

/// A view to materialize and its window `(start, end)`, microseconds.
pub type PlannedView = (OnlineView, (i64, i64));

/// The views a request selects and the window of each, without doing anything.
pub fn materialize_plan(
    file: &RegistryFile,
    project: &str,
    root: &Path,
    req: &MaterializeRequest,
) -> Result<Vec<PlannedView>, CoreError> {
    if req.start.is_some_and(|s| s > req.end) {
        return Err(invalid("START is after END: the interval is empty".into()));
    }
    let all = online_views(file, project, root)?;
    for v in &req.views {
        if !all.iter().any(|x| x.name == *v) {
            return Err(CoreError::NotFound {
                class: "FeatureViewNotFoundException",
                message: format!("Feature view {v} does not exist in project {project}"),
            });
        }
    }
    Ok(all
        .into_iter()
        .filter(|v| if req.views.is_empty() { v.online } else { req.views.contains(&v.name) })
        .map(|v| {
            let from = req.start.unwrap_or_else(|| match (v.materialized_until, v.ttl_seconds) {
                (Some(until), _) => until,
                (None, 0) => req.now - 52 * 7 * 86_400 * 1_000_000,
                (None, ttl) => req.now - ttl as i64 * 1_000_000,
            });
            (v, (from, req.end))
        })
        .collect())
}

/// Materializes the planned views, each on its own thread (their scans share the
/// runtime's workers), then records the interval of every view whose rows were
/// all written, with compare-and-swap. A failed view records nothing; running the
/// same request again converges.
pub fn materialize(
    runtime: &tokio::runtime::Handle,
    offline: &dyn OfflineStore,
    registry: &dyn amora_registry::store::RegistryStore,
    target: Target<'_>,
    plan: &[PlannedView],
    user: &str,
    on_progress: &(dyn Fn(&str, Progress) + Sync),
) -> Result<Vec<ViewOutcome>, CoreError> {
    // Views with the same join keys go together when the store writes them together more cheaply.
    fn keys(p: &PlannedView) -> Vec<&str> {
        let mut k: Vec<&str> = p.0.join_keys.iter().map(|k| k.0.as_str()).collect();
        k.sort_unstable();
        k
    }
    let mut groups: Vec<Vec<&PlannedView>> = Vec::new();
    for p in plan {
        match groups.iter_mut().find(|g| target.store.writes_views_together() && keys(g[0]) == keys(p)) {
            Some(g) => g.push(p),
            None => groups.push(vec![p]),
        }
    }
    let outcomes: Vec<ViewOutcome> = std::thread::scope(|s| {
        let jobs: Vec<_> = groups
            .iter()
            .map(|g| {
                s.spawn(move || -> Vec<ViewOutcome> {
                    let t0 = std::time::Instant::now();
                    let result = runtime.block_on(materialize_views(offline, target, g, on_progress));
                    let seconds = t0.elapsed().as_secs_f64();
                    let outcome = |(v, w): &PlannedView, result| ViewOutcome {
                        view: v.name.clone(),
                        window: *w,
                        result,
                        seconds,
                    };
                    match result {
                        Ok(rows) => g.iter().zip(rows).map(|(p, n)| outcome(p, Ok(n))).collect(),
                        // Views written together fail together; the first keeps the error itself.
                        Err(e) => {
                            let others: Vec<ViewOutcome> =
                                g[1..].iter().map(|p| outcome(p, Err(shared_failure(&e)))).collect();
                            std::iter::once(outcome(g[0], Err(e))).chain(others).collect()
                        }
                    }
                })
            })
            .collect();
        jobs.into_iter().flat_map(|j| j.join().expect("a materialization thread panicked")).collect()
    });
    // Only now, with every row of these views written, are their intervals recorded.
    let done: Vec<(String, i64, i64)> =
        outcomes.iter().filter(|o| o.result.is_ok()).map(|o| (o.view.clone(), o.window.0, o.window.1)).collect();
    if !done.is_empty() {
        amora_registry::ops::record_materialization(registry, target.project, &done, user)?;
    }
    Ok(outcomes)
}

/// A failure of views written together, as each of them reports it.
fn shared_failure(e: &CoreError) -> CoreError {
    match e {
        CoreError::Online(amora_online::OnlineError::Backend { store, message }) => {
            CoreError::Online(amora_online::OnlineError::Backend { store: store.clone(), message: message.clone() })
        }
        CoreError::Invalid(m) => CoreError::Invalid(m.clone()),
        other => CoreError::Offline(amora_offline::OfflineError::Backend(other.to_string())),
    }
}

/// Online read status, as Feast names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Status {
    #[serde(rename = "PRESENT")]
    Present,
    #[serde(rename = "NOT_FOUND")]
    NotFound,
    #[serde(rename = "NULL_VALUE")]
    NullValue,
    #[serde(rename = "OUTSIDE_MAX_AGE")]
    OutsideMaxAge,
}

/// One requested feature for one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineValue {
    pub value: Option<Value>,
    pub status: Status,
    pub event_ts: Option<i64>,
}

/// A resolved online read: which views and features, keyed how. Resolve once,
/// read many times (a server caches these).
#[derive(Debug, Clone)]
pub struct OnlineRequest {
    /// Output names, one per requested feature: `feature`, or `view__feature`
    /// with full feature names.
    pub names: Vec<String>,
    reads: Vec<ViewRead>,
    ttls: Vec<u64>,
    /// Each read view's version number, as `reads`.
    versions: Vec<i32>,
    /// The join keys every requested view shares, with their Feast value types.
    pub join_keys: Vec<(String, i32)>,
    /// Whether the request reads every feature of every view of the project with
    /// these join keys, so a store may fetch whole records ([`OnlineStore::read_whole_async`]).
    whole: bool,
}

impl OnlineRequest {
    /// A request with output names only (for tests of response shapes).
    #[doc(hidden)]
    pub fn for_tests(names: Vec<String>) -> OnlineRequest {
        OnlineRequest {
            names,
            reads: Vec::new(),
            ttls: Vec::new(),
            versions: Vec::new(),
            join_keys: Vec::new(),
            whole: false,
        }
    }

    /// [`OnlineRequest::for_tests`] reading `reads` with these TTLs.
    #[cfg(test)]
    pub(crate) fn for_tests_with(names: Vec<String>, reads: Vec<ViewRead>, ttls: Vec<u64>) -> OnlineRequest {
        OnlineRequest { names, versions: vec![0; reads.len()], reads, ttls, join_keys: Vec::new(), whole: false }
    }

    /// Each read view's TTL in seconds (0: none), in request order.
    pub(crate) fn ttls(&self) -> &[u64] {
        &self.ttls
    }

    /// The requested views and their version numbers, in request order (Feast's
    /// `include_feature_view_version_metadata`).
    pub fn view_versions(&self) -> impl Iterator<Item = (&str, i32)> {
        self.reads.iter().zip(&self.versions).map(|(r, v)| (r.view.as_str(), *v))
    }
}

fn not_found_view(project: &str, v: &str) -> CoreError {
    CoreError::NotFound {
        class: "FeatureViewNotFoundException",
        message: format!("Feature view {v} does not exist in project {project}"),
    }
}

/// Resolves `features` (`view:feature`) against the registry, with short names.
pub fn resolve_online(
    file: &RegistryFile,
    project: &str,
    root: &Path,
    features: &[String],
) -> Result<OnlineRequest, CoreError> {
    resolve_selection(file, project, root, &crate::FeatureSelection::Refs(features.to_vec()), false)
}

/// Resolves features or a feature service against the registry. Without full
/// names, two features with the same name is an error that says so.
pub fn resolve_selection(
    file: &RegistryFile,
    project: &str,
    root: &Path,
    selection: &crate::FeatureSelection,
    full_names: bool,
) -> Result<OnlineRequest, CoreError> {
    let refs = crate::selection_refs(file, project, selection)?;
    let views = online_views(file, project, root)?;
    let mut reads: Vec<(ViewRead, &OnlineView)> = Vec::new();
    for (v, f) in &refs {
        let view = views.iter().find(|x| x.name == *v).ok_or_else(|| not_found_view(project, v))?;
        if !view.features.iter().any(|x| x.0 == *f) {
            return Err(CoreError::NotFound {
                class: "FeatureViewNotFoundException",
                message: format!(
                    "Feature view {v} has no feature {f} in project {project}; it has: {}",
                    view.features.iter().map(|x| x.0.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        match reads.iter_mut().find(|(rd, _)| rd.view == *v) {
            Some((rd, _)) if rd.features.contains(f) => continue,
            Some((rd, _)) => rd.features.push(f.clone()),
            None => reads.push((ViewRead { view: v.clone(), features: vec![f.clone()] }, view)),
        }
    }
    let first = reads.first().ok_or_else(|| invalid("no features requested".into()))?;
    let join_keys = first.1.join_keys.clone();
    for (_, v) in &reads {
        let mut a: Vec<&String> = v.join_keys.iter().map(|k| &k.0).collect();
        let mut b: Vec<&String> = join_keys.iter().map(|k| &k.0).collect();
        a.sort();
        b.sort();
        if a != b {
            return Err(invalid(format!(
                "feature views `{}` and `{}` have different join keys; read them separately",
                first.0.view, v.name
            )));
        }
    }
    // Output order is view by view (the order values come back in).
    let names: Vec<String> = reads
        .iter()
        .flat_map(|(r, _)| r.features.iter().map(|f| if full_names { format!("{}__{f}", r.view) } else { f.clone() }))
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(CoreError::Invalid(format!(
            "feature name collision: `{dup}` is requested from more than one feature view; set full_feature_names (--full-feature-names) to get `view__feature` names"
        )));
    }
    // Every view that shares these join keys (one record per entity), read whole?
    fn sorted(keys: &[(String, i32)]) -> Vec<&str> {
        let mut k: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        k.sort_unstable();
        k
    }
    let whole = views
        .iter()
        .filter(|v| sorted(&v.join_keys) == sorted(&join_keys))
        .all(|v| reads.iter().any(|(r, _)| r.view == v.name && v.features.iter().all(|f| r.features.contains(&f.0))));
    Ok(OnlineRequest {
        names,
        whole,
        ttls: reads.iter().map(|(_, v)| v.ttl_seconds).collect(),
        versions: reads.iter().map(|(_, v)| v.version).collect(),
        reads: reads.into_iter().map(|(r, _)| r).collect(),
        join_keys,
    })
}

/// Reads a resolved request for entity rows given as join key -> value strings,
/// typed by the registry. One row of values per entity, in `request.names` order.
pub fn read_online(
    target: Target<'_>,
    request: &OnlineRequest,
    entities: &[Vec<(String, String)>],
    now_micros: i64,
) -> Result<Vec<Vec<OnlineValue>>, CoreError> {
    let mut keys = Vec::with_capacity(entities.len());
    for e in entities {
        let mut pairs = Vec::new();
        for (k, t) in &request.join_keys {
            let raw = e
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| invalid(format!("missing entity value for join key `{k}`")))?;
            let v = match t {
                3 => KeyValue::Int32(raw.parse().map_err(|_| invalid(format!("`{k}` must be an int32, got `{raw}`")))?),
                4 => KeyValue::Int64(raw.parse().map_err(|_| invalid(format!("`{k}` must be an int64, got `{raw}`")))?),
                1 => KeyValue::Bytes(raw.as_bytes().to_vec()),
                _ => KeyValue::String(raw.to_string()),
            };
            pairs.push((k.as_str(), v));
        }
        keys.push(serialize_entity_key(&pairs, target.version));
    }
    read_keys(target, request, &keys, now_micros)
}

/// Reads a resolved request for serialized entity keys: one row of values per key.
pub fn read_keys(
    target: Target<'_>,
    request: &OnlineRequest,
    keys: &[Vec<u8>],
    now_micros: i64,
) -> Result<Vec<Vec<OnlineValue>>, CoreError> {
    let cells = target.store.read(target.project, keys, &request.reads).map_err(CoreError::Online)?;
    Ok(with_statuses(&cells, &request.ttls, now_micros))
}

/// [`read_keys`] through the store's async read (a server's request path).
pub async fn read_keys_async(
    target: Target<'_>,
    request: &OnlineRequest,
    keys: &[Vec<u8>],
    now_micros: i64,
) -> Result<Vec<Vec<OnlineValue>>, CoreError> {
    let cells = read_cells_async(target, request, keys).await?;
    Ok(with_statuses(&cells, &request.ttls, now_micros))
}

/// The store's cells for a resolved request, as they are (the server writes its
/// response from them in place: `online_json::response_from_cells`).
pub async fn read_cells_async(
    target: Target<'_>,
    request: &OnlineRequest,
    keys: &[Vec<u8>],
) -> Result<amora_online::Cells, CoreError> {
    let (store, project) = (target.store, target.project);
    let read = if request.whole {
        store.read_whole_async(project, keys, &request.reads)
    } else {
        store.read_async(project, keys, &request.reads)
    };
    read.await.map_err(CoreError::Online)
}

/// Store cells -> values with Feast's statuses (TTL checked at `now_micros`).
pub(crate) fn with_statuses(cells: &amora_online::Cells, ttls: &[u64], now_micros: i64) -> Vec<Vec<OnlineValue>> {
    (0..cells.entities())
        .map(|e| {
            let mut row = Vec::with_capacity(cells.shape().iter().sum());
            let mut f = 0;
            for (v, (n, ttl)) in cells.shape().iter().zip(ttls).enumerate() {
                let event_ts = cells.stamp(e, v);
                for i in f..f + n {
                    let value: Option<Value> = cells.value(e, i).and_then(|b| prost::Message::decode(b).ok());
                    let status = match (&value, event_ts) {
                        (None, _) => Status::NotFound,
                        (Some(Value { val: None }), _) => Status::NullValue,
                        (Some(_), Some(ts)) if *ttl > 0 && ts < now_micros - *ttl as i64 * 1_000_000 => {
                            Status::OutsideMaxAge
                        }
                        _ => Status::Present,
                    };
                    row.push(OnlineValue { value, status, event_ts });
                }
                f += n;
            }
            row
        })
        .collect()
}

/// Resolves and reads in one call: feature names and one row of values per entity.
pub fn get_online_features(
    file: &RegistryFile,
    root: &Path,
    target: Target<'_>,
    features: &[String],
    entities: &[Vec<(String, String)>],
    now_micros: i64,
) -> Result<(Vec<String>, Vec<Vec<OnlineValue>>), CoreError> {
    let request = resolve_online(file, target.project, root, features)?;
    let rows = read_online(target, &request, entities, now_micros)?;
    Ok((request.names, rows))
}

/// A `feast.types.Value` as Feast's feature server writes it: int64 unquoted, a
/// float widened to double, NaN and infinities as strings, bytes as base64.
pub fn value_json(v: &Option<Value>) -> serde_json::Value {
    use serde_json::json;
    let double = |f: f64| {
        if f.is_nan() {
            json!("NaN")
        } else if f.is_infinite() {
            json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            json!(f)
        }
    };
    use crate::online_json::Scalar;
    match crate::online_json::scalar_of(v) {
        Scalar::Null => serde_json::Value::Null,
        Scalar::Str(s) => json!(s),
        Scalar::Int(i) => json!(i),
        Scalar::Double(f) => double(f),
        Scalar::Bool(b) => json!(b),
        Scalar::Bytes(b) => json!(base64(b)),
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { A[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}
