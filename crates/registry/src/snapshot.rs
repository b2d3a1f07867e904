//! A project's objects as decoded from a registry file, normalized for comparison.

use amora_proto::convert::FeastObjects;
use amora_proto::{DataSource, Entity, FeatureService, FeatureView, ObjectKind, Project, ProtoError, RegistryFile};

/// Decodes the objects of `project` that amora manages.
pub fn current_objects(file: &RegistryFile, project: &str) -> Result<FeastObjects, ProtoError> {
    let mut out = FeastObjects {
        project: file.decode_all::<Project>(ObjectKind::Project, project)?.into_iter().next(),
        ..Default::default()
    };
    for e in file.decode_all::<Entity>(ObjectKind::Entity, project)? {
        out.entities.insert(e.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(), e);
    }
    for d in file.decode_all::<DataSource>(ObjectKind::DataSource, project)? {
        out.data_sources.insert(d.name.clone(), d);
    }
    for v in file.decode_all::<FeatureView>(ObjectKind::FeatureView, project)? {
        out.feature_views.insert(v.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(), v);
    }
    for s in file.decode_all::<FeatureService>(ObjectKind::FeatureService, project)? {
        out.feature_services.insert(s.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(), s);
    }
    Ok(out)
}

/// Drops what changes without the user changing anything: meta timestamps,
/// materialization bookkeeping, and the meta of embedded data sources.
pub fn normalized(objects: &FeastObjects) -> FeastObjects {
    let mut o = objects.clone();
    if let Some(p) = &mut o.project {
        p.meta = None;
    }
    for e in o.entities.values_mut() {
        e.meta = None;
    }
    for d in o.data_sources.values_mut() {
        strip_source(d);
    }
    for v in o.feature_views.values_mut() {
        v.meta = None;
        if let Some(spec) = &mut v.spec {
            spec.batch_source.iter_mut().chain(spec.stream_source.iter_mut()).for_each(strip_source);
        }
    }
    for s in o.feature_services.values_mut() {
        s.meta = None;
        for p in s.spec.iter_mut().flat_map(|s| s.features.iter_mut()) {
            p.batch_source.iter_mut().chain(p.stream_source.iter_mut()).for_each(strip_source);
        }
    }
    o
}

fn strip_source(d: &mut DataSource) {
    d.meta = None;
    if let Some(b) = &mut d.batch_source {
        strip_source(b);
    }
}
