//! Read-plan-write cycles against a [`RegistryStore`]: `apply` and `rollback` with
//! compare-and-swap (a concurrent writer makes us re-read and re-plan; nothing is
//! lost), and the history kept beside the registry.

use amora_proto::convert::FeastObjects;
use amora_proto::{ProtoError, RegistryFile, Timestamp};

use crate::build::{build, diff, splice};
use crate::history::{self, VersionInfo, VersionKind};
use crate::plan::Plan;
use crate::store::{RegistryStore, StoreError, Stored};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{location}: {source}")]
    Proto { location: String, source: ProtoError },
    #[error("the registry kept changing during apply ({attempts} attempts); re-run the command")]
    Contended { attempts: usize },
    #[error("registry version {version} has no project `{project}`")]
    ProjectNotInVersion { version: u64, project: String },
}

/// How many times a write re-reads and re-plans after losing a compare-and-swap.
const ATTEMPTS: usize = 16;

#[derive(Debug)]
pub enum ApplyOutcome {
    NoChanges,
    Applied { plan: Plan, version: u64, version_id: String, attempts: usize },
}

pub fn now() -> Timestamp {
    let t = chrono::Utc::now();
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// Reads and parses the registry (an absent registry reads as empty).
pub fn read(store: &dyn RegistryStore) -> Result<(Option<Stored>, RegistryFile), RegistryError> {
    let stored = store.read()?;
    let file = match &stored {
        Some(s) => RegistryFile::parse(&s.bytes)
            .map_err(|source| RegistryError::Proto { location: store.location(), source })?,
        None => RegistryFile::default(),
    };
    Ok((stored, file))
}

/// What `apply` would change, without writing anything.
pub fn plan(store: &dyn RegistryStore, desired: &FeastObjects, project: &str) -> Result<Plan, RegistryError> {
    let (_, file) = read(store)?;
    crate::build::plan(&file, desired, project)
        .map_err(|source| RegistryError::Proto { location: store.location(), source })
}

/// Applies `desired` as the whole of `project`.
pub fn apply(
    store: &dyn RegistryStore,
    desired: &FeastObjects,
    project: &str,
    user: &str,
) -> Result<ApplyOutcome, RegistryError> {
    commit(store, project, user, VersionKind::Apply, &|file, now| {
        build(file, desired, project, now).map_err(|source| RegistryError::Proto { location: store.location(), source })
    })
}

/// Re-applies `project` as it was in history version `number`, as a new version.
pub fn rollback(
    store: &dyn RegistryStore,
    project: &str,
    number: u64,
    user: &str,
) -> Result<ApplyOutcome, RegistryError> {
    let (_, bytes) = history::read(store, number)?;
    let old = RegistryFile::parse(&bytes)
        .map_err(|source| RegistryError::Proto { location: format!("history version {number}"), source })?;
    if !old.project_names().contains(project) {
        return Err(RegistryError::ProjectNotInVersion { version: number, project: project.into() });
    }
    commit(store, project, user, VersionKind::Rollback, &|file, _| {
        let next = splice(file, &old, project);
        let plan =
            diff(file, &next, project).map_err(|source| RegistryError::Proto { location: store.location(), source })?;
        Ok((next, plan))
    })
}

/// Records that `views` of `project` were materialized over `[start, end]`
/// (microseconds): appends Feast's `materialization_intervals`, sets
/// `last_updated_timestamp` and state AVAILABLE_ONLINE, with compare-and-swap.
pub fn record_materialization(
    store: &dyn RegistryStore,
    project: &str,
    views: &[(String, i64, i64)],
    user: &str,
) -> Result<ApplyOutcome, RegistryError> {
    use amora_proto::{FeatureView, MaterializationInterval, ObjectKind, RawField};
    let ts = |micros: i64| Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    };
    commit(store, project, user, VersionKind::Materialize, &|file, now| {
        let mut next = file.clone();
        let mut plan = Plan::default();
        for f in next.fields.iter_mut() {
            let Some((ObjectKind::FeatureView, p, name)) = f.key() else { continue };
            let Some((_, start, end)) = views.iter().find(|(v, _, _)| *v == name).filter(|_| p == project) else {
                continue;
            };
            let mut v: FeatureView = f.decode().map_err(|e| RegistryError::Proto {
                location: store.location(),
                source: amora_proto::ProtoError::Object { kind: "feature view", offset: 0, source: e },
            })?;
            let meta = v.meta.get_or_insert_with(Default::default);
            meta.materialization_intervals
                .push(MaterializationInterval { start_time: Some(ts(*start)), end_time: Some(ts(*end)) });
            meta.last_updated_timestamp = Some(now);
            meta.state = 4; // AVAILABLE_ONLINE
            *f = RawField::message(ObjectKind::FeatureView.tag(), &v);
            plan.changes.push(crate::plan::Change {
                kind: ObjectKind::FeatureView,
                name: name.clone(),
                action: crate::plan::Action::Update,
                details: vec![format!(
                    "materialized {} .. {}",
                    amora_proto::json::format_timestamp(&ts(*start)),
                    amora_proto::json::format_timestamp(&ts(*end))
                )],
            });
        }
        Ok((next, plan))
    })
}

/// The changes to `project` from version `a` to version `b`.
pub fn diff_versions(store: &dyn RegistryStore, project: &str, a: u64, b: u64) -> Result<Plan, RegistryError> {
    let load = |n| -> Result<RegistryFile, RegistryError> {
        let (_, bytes) = history::read(store, n)?;
        RegistryFile::parse(&bytes)
            .map_err(|source| RegistryError::Proto { location: format!("history version {n}"), source })
    };
    diff(&load(a)?, &load(b)?, project).map_err(|source| RegistryError::Proto { location: store.location(), source })
}

type Make<'a> = dyn Fn(&RegistryFile, Timestamp) -> Result<(RegistryFile, Plan), RegistryError> + 'a;

fn commit(
    store: &dyn RegistryStore,
    project: &str,
    user: &str,
    kind: VersionKind,
    make: &Make<'_>,
) -> Result<ApplyOutcome, RegistryError> {
    for attempt in 1..=ATTEMPTS {
        let (stored, file) = match read(store) {
            Ok(r) => r,
            // Replaced while we read it: read again.
            Err(RegistryError::Store(StoreError::Conflict)) => {
                backoff(attempt);
                continue;
            }
            Err(e) => return Err(e),
        };
        let now = now();
        let (mut next, plan) = make(&file, now)?;
        if plan.is_empty() && stored.is_some() {
            return Ok(ApplyOutcome::NoChanges);
        }
        let parent = file.version_id();
        // A registry someone else wrote (e.g. `feast apply`) goes into the history first,
        // so that it stays retrievable after we replace it.
        if let Some(s) = &stored {
            // Only the newest version is read: every apply passes here.
            let known = history::latest(store)?.map(|v| v.version_id);
            if known.as_deref() != Some(parent.as_str()) {
                let info = version_info(
                    VersionKind::External,
                    &parent,
                    "",
                    now,
                    "(unknown)",
                    project,
                    vec!["written outside amora".into()],
                );
                history::record(store, info, &s.bytes)?;
            }
        }
        let version_id = uuid::Uuid::new_v4().to_string();
        next.stamp(&version_id, now);
        let bytes = next.encode();
        match store.write(stored.as_ref().map(|s| &s.generation), &bytes) {
            Ok(_) => {
                let info = version_info(kind, &version_id, &parent, now, user, project, plan.summary_lines());
                let version = history::record(store, info, &bytes)?;
                return Ok(ApplyOutcome::Applied { plan, version, version_id, attempts: attempt });
            }
            Err(StoreError::Conflict) => {
                backoff(attempt);
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(RegistryError::Contended { attempts: ATTEMPTS })
}

/// Backs off a little, with jitter, so that contending writers spread out.
fn backoff(attempt: usize) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 50;
    std::thread::sleep(std::time::Duration::from_millis(10 * attempt as u64 + jitter));
}

fn version_info(
    kind: VersionKind,
    version_id: &str,
    parent: &str,
    now: Timestamp,
    user: &str,
    project: &str,
    summary: Vec<String>,
) -> VersionInfo {
    VersionInfo {
        number: 0,
        kind,
        version_id: version_id.into(),
        parent_version_id: parent.into(),
        time: amora_proto::json::format_timestamp(&now),
        user: user.into(),
        project: project.into(),
        summary,
    }
}
