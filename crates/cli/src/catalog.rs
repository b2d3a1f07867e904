//! Reading the registry for people and tools: `list`, `describe`, `registry-dump`.
//! Works on any Feast 0.67 registry, including one `feast apply` wrote.

use amora_proto::convert::DUMMY_ENTITY;
use amora_proto::json::to_json;
use amora_proto::value_type_names::value_type_name;
use amora_proto::{data_source, DataSource, ObjectKind, OtherView, RegistryFile};
use amora_registry::current_objects;
use anyhow::bail;
use clap::ValueEnum;
use serde_json::{json, Value};

#[derive(Clone, Copy, ValueEnum)]
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
        None => String::new(),
    }
}

/// The stable JSON records `list --json` prints (and the compatibility tests compare).
pub fn records(file: &RegistryFile, project: &str, kind: Kind) -> anyhow::Result<Vec<Value>> {
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
                    let _: OtherView = f.decode()?;
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

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::Object(o) => o.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                other => cell(other),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub fn list(file: &RegistryFile, project: &str, kind: Kind, as_json: bool) -> anyhow::Result<()> {
    let recs = records(file, project, kind)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
        return Ok(());
    }
    let columns: &[&str] = match kind {
        Kind::Entities => &["name", "join_key", "value_type", "description"],
        Kind::FeatureViews => &["name", "type", "entities", "features", "ttl_seconds", "online", "owner"],
        Kind::FeatureServices => &["name", "features", "owner"],
        Kind::DataSources => &["name", "class", "location"],
    };
    let rows: Vec<Vec<String>> = recs.iter().map(|r| columns.iter().map(|c| cell(&r[*c])).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| rows.iter().map(|r| r[i].len()).chain([c.len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(columns.iter().map(|c| c.to_uppercase()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
    Ok(())
}

pub fn describe(file: &RegistryFile, project: &str, name: &str) -> anyhow::Result<()> {
    let o = current_objects(file, project)?;
    let found: Vec<(&str, Value)> = [
        o.feature_views.get(name).map(|v| ("feature view", to_json(v))),
        o.entities.get(name).map(|v| ("entity", to_json(v))),
        o.feature_services.get(name).map(|v| ("feature service", to_json(v))),
        o.data_sources.get(name).map(|v| ("data source", to_json(v))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if found.is_empty() {
        let names: Vec<&String> = o
            .feature_views
            .keys()
            .chain(o.entities.keys())
            .chain(o.feature_services.keys())
            .chain(o.data_sources.keys())
            .collect();
        let hint = amora_model::ident::closest(name, names.iter().map(|s| s.as_str()))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        bail!("project {project} has no feature view, entity, feature service or data source named `{name}`{hint}");
    }
    for (kind, v) in found {
        println!("{kind} {name}:");
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

/// Like `feast registry-dump`: the project's objects, sorted by name, camelCase keys.
pub fn dump(file: &RegistryFile, project: &str) -> anyhow::Result<()> {
    let o = current_objects(file, project)?;
    let mut root = serde_json::Map::new();
    root.insert("project".into(), json!(project));
    let mut put = |key: &str, items: Vec<Value>| {
        if !items.is_empty() {
            root.insert(key.into(), Value::Array(items));
        }
    };
    put("dataSources", o.data_sources.values().map(to_json).collect());
    put("entities", o.entities.values().map(to_json).collect());
    put("featureViews", o.feature_views.values().map(to_json).collect());
    put("featureServices", o.feature_services.values().map(to_json).collect());
    if let Some(p) = &o.project {
        root.insert("projectObject".into(), to_json(p));
    }
    root.insert("registryVersionId".into(), json!(file.version_id()));
    println!("{}", serde_json::to_string_pretty(&Value::Object(root))?);
    Ok(())
}
