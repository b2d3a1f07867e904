//! Building the next registry file from the current one and the desired objects.
//! Pure: takes values, returns values.

use amora_proto::convert::FeastObjects;
use amora_proto::{
    DataSource, FeatureViewMeta, ObjectKind, ObjectMeta, ProtoError, RawField, RegistryFile, SourceMeta, Timestamp,
};

use crate::plan::{compare, foreign_views, Action, Plan};
use crate::snapshot::current_objects;

/// The plan for turning `project` in `current` into `desired`.
pub fn plan(current: &RegistryFile, desired: &FeastObjects, project: &str) -> Result<Plan, ProtoError> {
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
                p.meta = Some(meta(old.project.as_ref().and_then(|o| o.meta.as_ref()?.created_timestamp)));
                RawField::message(tag, &p)
            }
            ObjectKind::Entity => {
                let mut e = desired.entities[&c.name].clone();
                e.meta = Some(meta(old.entities.get(&c.name).and_then(|o| o.meta.as_ref()?.created_timestamp)));
                RawField::message(tag, &e)
            }
            ObjectKind::DataSource => {
                let mut d: DataSource = desired.data_sources[&c.name].clone();
                let created = old.data_sources.get(&c.name).and_then(|o| o.meta.as_ref()?.created_timestamp);
                d.meta = Some(SourceMeta {
                    created_timestamp: Some(created.unwrap_or(now)),
                    last_updated_timestamp: Some(now),
                    ..Default::default()
                });
                RawField::message(tag, &d)
            }
            ObjectKind::FeatureView => {
                let mut v = desired.feature_views[&c.name].clone();
                let before = old.feature_views.get(&c.name).and_then(|o| o.meta.clone()).unwrap_or_default();
                v.meta = Some(FeatureViewMeta {
                    created_timestamp: Some(before.created_timestamp.unwrap_or(now)),
                    last_updated_timestamp: Some(now),
                    ..before
                });
                RawField::message(tag, &v)
            }
            ObjectKind::FeatureService => {
                let mut s = desired.feature_services[&c.name].clone();
                s.meta = Some(meta(old.feature_services.get(&c.name).and_then(|o| o.meta.as_ref()?.created_timestamp)));
                RawField::message(tag, &s)
            }
            // amora never creates these; the plan only deletes them.
            ObjectKind::OnDemandFeatureView | ObjectKind::StreamFeatureView | ObjectKind::LabelView => continue,
        };
        fields.push(field);
    }
    Ok((RegistryFile { fields }, plan))
}

/// `current` with `project`'s objects replaced by those in `old` (their exact bytes):
/// what `rollback` writes.
pub fn splice(current: &RegistryFile, old: &RegistryFile, project: &str) -> RegistryFile {
    let ours = |f: &RawField| f.key().is_some_and(|(_, p, _)| p == project);
    let mut fields: Vec<RawField> = current.fields.iter().filter(|f| !ours(f)).cloned().collect();
    fields.extend(old.fields.iter().filter(|f| ours(f)).cloned());
    RegistryFile { fields }
}

/// The changes from `old` to `new` for one project (for `diff` and `rollback`).
pub fn diff(old: &RegistryFile, new: &RegistryFile, project: &str) -> Result<Plan, ProtoError> {
    let (a, b) = (current_objects(old, project)?, current_objects(new, project)?);
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
            plan.changes.push(crate::plan::Change { kind, name, action: Action::Create, details: vec![] });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amora_proto::{
        Entity, EntitySpecV2, FeatureView, FeatureViewSpec, MaterializationInterval, Project, ProjectSpec,
    };

    fn ts(s: i64) -> Timestamp {
        Timestamp { seconds: s, nanos: 0 }
    }

    fn objects(project: &str, ttl: i64) -> FeastObjects {
        let mut o = FeastObjects {
            project: Some(Project {
                spec: Some(ProjectSpec { name: project.into(), ..Default::default() }),
                meta: None,
            }),
            ..Default::default()
        };
        o.entities.insert(
            "e".into(),
            Entity {
                spec: Some(EntitySpecV2 {
                    name: "e".into(),
                    join_key: "e".into(),
                    value_type: 2,
                    project: project.into(),
                    ..Default::default()
                }),
                meta: None,
            },
        );
        o.feature_views.insert(
            "v".into(),
            FeatureView {
                spec: Some(FeatureViewSpec {
                    name: "v".into(),
                    project: project.into(),
                    entities: vec!["e".into()],
                    ttl: Some(amora_proto::Duration { seconds: ttl, nanos: 0 }),
                    ..Default::default()
                }),
                meta: None,
            },
        );
        o
    }

    #[test]
    fn update_keeps_created_time_and_materialization_intervals() {
        let (first, plan) = build(&RegistryFile::default(), &objects("p", 10), "p", ts(100)).unwrap();
        assert_eq!(plan.counts(), (3, 0, 0));
        // Record a materialization as `materialize` would.
        let mut file = first.clone();
        for f in file.fields.iter_mut().filter(|f| f.tag == ObjectKind::FeatureView.tag()) {
            let mut v: FeatureView = f.decode().unwrap();
            v.meta
                .as_mut()
                .unwrap()
                .materialization_intervals
                .push(MaterializationInterval { start_time: Some(ts(1)), end_time: Some(ts(2)) });
            *f = RawField::message(ObjectKind::FeatureView.tag(), &v);
        }
        // Materialization bookkeeping alone is not a change.
        assert!(plan_of(&file, &objects("p", 10)).is_empty());
        let (next, plan) = build(&file, &objects("p", 20), "p", ts(200)).unwrap();
        assert_eq!(plan.counts(), (0, 1, 0));
        assert_eq!(plan.changes[0].details, vec!["ttl: \"10s\" -> \"20s\""]);
        let v: FeatureView = next.objects(ObjectKind::FeatureView, "p").next().unwrap().1.decode().unwrap();
        let meta = v.meta.unwrap();
        assert_eq!(meta.created_timestamp, Some(ts(100)));
        assert_eq!(meta.last_updated_timestamp, Some(ts(200)));
        assert_eq!(meta.materialization_intervals.len(), 1);
        // The entity did not change: same bytes.
        let bytes = |f: &RegistryFile| f.objects(ObjectKind::Entity, "p").next().unwrap().1.bytes.clone();
        assert_eq!(bytes(&file), bytes(&next));
    }

    fn plan_of(file: &RegistryFile, desired: &FeastObjects) -> Plan {
        plan(file, desired, "p").unwrap()
    }

    #[test]
    fn other_projects_are_never_touched_and_rollback_splices() {
        let (a, _) = build(&RegistryFile::default(), &objects("other", 5), "other", ts(1)).unwrap();
        let (b, _) = build(&a, &objects("p", 10), "p", ts(2)).unwrap();
        let (c, plan) = build(&b, &FeastObjects::default(), "p", ts(3)).unwrap();
        assert_eq!(plan.counts(), (0, 0, 3), "apply is total: everything of p goes");
        assert_eq!(c.objects(ObjectKind::FeatureView, "p").count(), 0);
        let other = |f: &RegistryFile| {
            f.fields
                .iter()
                .filter(|f| f.key().is_some_and(|k| k.1 == "other"))
                .map(|f| f.bytes.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(other(&a), other(&c));
        let restored = splice(&c, &b, "p");
        assert!(diff(&b, &restored, "p").unwrap().is_empty());
        assert_eq!(other(&restored), other(&a));
    }
}
