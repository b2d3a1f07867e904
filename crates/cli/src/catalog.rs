//! Reading the registry for people and tools: `list`, `describe`, `registry-dump`.
//! Works on any Feast 0.67 registry, including one `feast apply` wrote.

use amora_core::catalog::Kind as CoreKind;
use amora_proto::json::to_json;
use amora_proto::RegistryFile;
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

/// The stable JSON records `list --json` prints (and the compatibility tests compare).
pub fn records(file: &RegistryFile, project: &str, kind: Kind) -> anyhow::Result<Vec<Value>> {
    let kind = match kind {
        Kind::Entities => CoreKind::Entities,
        Kind::FeatureViews => CoreKind::FeatureViews,
        Kind::FeatureServices => CoreKind::FeatureServices,
        Kind::DataSources => CoreKind::DataSources,
    };
    Ok(amora_core::catalog::records(file, project, kind)?)
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
