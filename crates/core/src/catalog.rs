//! The registry as tools read it: one stable JSON record per object (the CLI's
//! `list --json`, the server's catalog endpoints), and the lineage the registry
//! itself records (data source -> feature view -> feature service).

use amora_proto::convert::DUMMY_ENTITY;
use amora_proto::value_type_names::value_type_name;
use amora_proto::{data_source, DataSource, ObjectKind, OtherView, RegistryFile};
use amora_registry::current_objects;
use serde_json::{json, Value};

use crate::CoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Entities,
    FeatureViews,
    FeatureServices,
    DataSources,
}

fn source_location(d: &DataSource) -> String {
    match &d.options {
        Some(data_source::Options::FileOptions(f)) => f.uri.clone(),
        Some(data_source::Options::BigqueryOptions(b)) if !b.table.is_empty() => b.table.clone(),
        Some(data_source::Options::BigqueryOptions(b)) => b.query.clone(),
        // As Feast's SDK lists it: a push source has no location of its own.
        Some(data_source::Options::PushOptions(_)) | None => String::new(),
    }
}

/// The stable JSON records `list --json` prints (and the compatibility tests compare).
pub fn records(file: &RegistryFile, project: &str, kind: Kind) -> Result<Vec<Value>, CoreError> {
    let o = current_objects(file, project)?;
    let mut out: Vec<Value> = match kind {
        Kind::Entities => o
            .entities
            .values()
            .filter_map(|e| e.spec.as_ref())
            .filter(|s| s.name != DUMMY_ENTITY)
            .map(|s| json!({"name": s.name, "join_key": s.join_key, "value_type": value_type_name(s.value_type), "description": s.description, "owner": s.owner, "tags": s.tags}))
            .collect(),
        Kind::FeatureViews => {
            let mut v: Vec<Value> = o
                .feature_views
                .values()
                .filter_map(|v| v.spec.as_ref())
                .map(|s| {
                    json!({
                        "name": s.name,
                        "type": "feature_view",
                        "entities": s.entities,
                        "features": s.features.iter().map(|f| json!({"name": f.name, "value_type": value_type_name(f.value_type)})).collect::<Vec<_>>(),
                        "ttl_seconds": s.ttl.map(|t| t.seconds).unwrap_or(0),
                        "online": s.online,
                        "owner": s.owner,
                        "description": s.description,
                        "tags": s.tags,
                        "source": s.batch_source.as_ref().map(|b| b.name.clone()).unwrap_or_default(),
                    })
                })
                .collect();
            for (kind, label) in [
                (ObjectKind::OnDemandFeatureView, "on_demand_feature_view"),
                (ObjectKind::StreamFeatureView, "stream_feature_view"),
                (ObjectKind::LabelView, "label_view"),
            ] {
                for (name, f) in file.objects(kind, project) {
                    let _: OtherView = f.decode().map_err(|e| CoreError::Invalid(format!("{label} {name}: {e}")))?;
                    v.push(json!({"name": name, "type": label}));
                }
            }
            v
        }
        Kind::FeatureServices => o
            .feature_services
            .values()
            .filter_map(|s| s.spec.as_ref())
            .map(|s| {
                let feats: Vec<String> = s
                    .features
                    .iter()
                    .flat_map(|p| p.feature_columns.iter().map(move |c| format!("{}:{}", p.feature_view_name, c.name)))
                    .collect();
                json!({"name": s.name, "features": feats, "description": s.description, "owner": s.owner, "tags": s.tags})
            })
            .collect(),
        Kind::DataSources => o
            .data_sources
            .values()
            .map(|d| {
                json!({
                    "name": d.name,
                    "class": d.data_source_class_type,
                    "location": source_location(d),
                    "timestamp_field": d.timestamp_field,
                    "created_timestamp_column": d.created_timestamp_column,
                    "description": d.description,
                    "owner": d.owner,
                    "tags": d.tags,
                })
            })
            .collect(),
    };
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(out)
}

/// Lineage as the registry records it: nodes (`data_source:`, `feature_view:`,
/// `feature_service:` names) and edges from each object to what it feeds.
pub fn registry_lineage(file: &RegistryFile, project: &str) -> Result<Value, CoreError> {
    let o = current_objects(file, project)?;
    let mut nodes: Vec<String> = Vec::new();
    let mut edges: Vec<Value> = Vec::new();
    for d in o.data_sources.values() {
        nodes.push(format!("data_source:{}", d.name));
    }
    for v in o.feature_views.values().filter_map(|v| v.spec.as_ref()) {
        nodes.push(format!("feature_view:{}", v.name));
        for b in v.batch_source.iter().chain(&v.stream_source) {
            edges.push(json!({"from": format!("data_source:{}", b.name), "to": format!("feature_view:{}", v.name)}));
        }
    }
    for s in o.feature_services.values().filter_map(|s| s.spec.as_ref()) {
        nodes.push(format!("feature_service:{}", s.name));
        for p in &s.features {
            edges.push(
                json!({"from": format!("feature_view:{}", p.feature_view_name), "to": format!("feature_service:{}", s.name)}),
            );
        }
    }
    nodes.sort();
    Ok(json!({"project": project, "nodes": nodes, "edges": edges}))
}
