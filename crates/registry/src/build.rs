//! Building the next registry file from the current one and the desired objects.
//! Pure: takes values, returns values.

use amora_proto::convert::FeastObjects;
use amora_proto::{
    DataSource, FeatureViewMeta, ObjectKind, ObjectMeta, ProtoError, RawField, RegistryFile,
    SourceMeta, Timestamp,
};

use crate::plan::{compare, foreign_views, Action, Plan};
use crate::snapshot::current_objects;

/// The plan for turning `project` in `current` into `desired`.
pub fn plan(
    current: &RegistryFile,
    desired: &FeastObjects,
    project: &str,
) -> Result<Plan, ProtoError> {
    let objects = current_objects(current, project)?;
    Ok(compare(&objects, desired, &foreign_views(current, project)))
}

/// The next registry file: objects that do not change keep their bytes (and any
/// fields amora does not know); created and updated objects are encoded anew with
/// `created_timestamp` kept from the old object, `last_updated_timestamp = now`,
/// and a feature view's materialization intervals, state and version kept.
/// Other projects are untouched. The header (version id, time) is not stamped.
pub fn build(
    current: &RegistryFile,
    desired: &FeastObjects,
    project: &str,
    now: Timestamp,
) -> Result<(RegistryFile, Plan), ProtoError> {
    let old = current_objects(current, project)?;
    let plan = compare(&old, desired, &foreign_views(current, project));
    let mut fields: Vec<RawField> = current
        .fields
        .iter()
        .filter(|f| match f.key() {
            Some((kind, p, name)) if p == project => plan.change(kind, &name).is_none(),
            _ => true,
        })
        .cloned()
        .collect();
    let meta = |created: Option<Timestamp>| ObjectMeta {
        created_timestamp: Some(created.unwrap_or(now)),
        last_updated_timestamp: Some(now),
    };
    for c in plan.changes.iter().filter(|c| c.action != Action::Delete) {
        let tag = c.kind.tag();
        let field = match c.kind {
            ObjectKind::Project => {
                let mut p = desired.project.clone().expect("a desired project");
                p.meta = Some(meta(
                    old.project
                        .as_ref()
                        .and_then(|o| o.meta.as_ref()?.created_timestamp),
                ));
                RawField::message(tag, &p)
            }
            ObjectKind::Entity => {
                let mut e = desired.entities[&c.name].clone();
                e.meta = Some(meta(
                    old.entities
                        .get(&c.name)
                        .and_then(|o| o.meta.as_ref()?.created_timestamp),
                ));
                RawField::message(tag, &e)
            }
            ObjectKind::DataSource => {
                let mut d: DataSource = desired.data_sources[&c.name].clone();
                let created = old
                    .data_sources
                    .get(&c.name)
                    .and_then(|o| o.meta.as_ref()?.created_timestamp);
                d.meta = Some(SourceMeta {
                    created_timestamp: Some(created.unwrap_or(now)),
                    last_updated_timestamp: Some(now),
                    ..Default::default()
                });
                RawField::message(tag, &d)
            }
            ObjectKind::FeatureView => {
                let mut v = desired.feature_views[&c.name].clone();
                let before = old
                    .feature_views
                    .get(&c.name)
                    .and_then(|o| o.meta.clone())
                    .unwrap_or_default();
                v.meta = Some(FeatureViewMeta {
                    created_timestamp: Some(before.created_timestamp.unwrap_or(now)),
                    last_updated_timestamp: Some(now),
                    ..before
                });
                RawField::message(tag, &v)
            }
            ObjectKind::FeatureService => {
                let mut s = desired.feature_services[&c.name].clone();
                s.meta = Some(meta(
                    old.feature_services
                        .get(&c.name)
                        .and_then(|o| o.meta.as_ref()?.created_timestamp),
                ));
                RawField::message(tag, &s)
            }
            // amora never creates these; the plan only deletes them.
            ObjectKind::OnDemandFeatureView
            | ObjectKind::StreamFeatureView
            | ObjectKind::LabelView => continue,
        };
        fields.push(field);
    }
    Ok((RegistryFile { fields }, plan))
}

/// `current` with `project`'s objects replaced by those in `old` (their exact bytes):
/// what `rollback` writes.
pub fn splice(current: &RegistryFile, old: &RegistryFile, project: &str) -> RegistryFile {
    let ours = |f: &RawField| f.key().is_some_and(|(_, p, _)| p == project);
    let mut fields: Vec<RawField> = current
        .fields
        .iter()
        .filter(|f| !ours(f))
        .cloned()
        .collect();
    fields.extend(old.fields.iter().filter(|f| ours(f)).cloned());
    RegistryFile { fields }
}

/// The changes from `old` to `new` for one project (for `diff` and `rollback`).
pub fn diff(old: &RegistryFile, new: &RegistryFile, project: &str) -> Result<Plan, ProtoError> {
    let (a, b) = (
        current_objects(old, project)?,
        current_objects(new, project)?,
    );
    let mut plan = compare(&a, &b, &[]);
    let before = foreign_views(old, project);
    let after = foreign_views(new, project);
    for (kind, name) in &before {
        if !after.contains(&(*kind, name.clone())) {
            plan.changes.push(crate::plan::Change {
                kind: *kind,
                name: name.clone(),
                action: Action::Delete,
                details: vec![],
            });
        }
    }
    for (kind, name) in after {
        if !before.contains(&(kind, name.clone())) {
            plan.changes.push(crate::plan::Change {
                kind,
                name,
                action: Action::Create,
                details: vec![],
            });
        }
    }
    Ok(plan)
}
