//! Reading the project's files into [`ProjectDefs`], collecting every problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amora_model::{
    parse_duration, validate::validate, Column, DataTest, Diagnostic, Diagnostics, Entity, FeatureService,
    FeatureViewDecl, FileFormat, Materialization, Model, ProjectDefs, ServiceItem, Source, Tags, ValueType,
};
use serde::Deserialize;

use crate::config::{yaml_diag, Config};
use crate::ProjectError;

/// A loaded, validated project.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub config: Config,
    pub defs: ProjectDefs,
}

impl Project {
    pub fn target_dir(&self) -> PathBuf {
        self.root.join(&self.config.target_path)
    }
}

/// Loads and validates the project in `root`.
pub fn load_project(root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Project, ProjectError> {
    let root = std::path::absolute(root).map_err(|source| ProjectError::Io { path: root.into(), source })?;
    let config = Config::load(&root, env)?;
    let (defs, mut problems, complete) = read_definitions(&root, &config);
    // Validate what was read, unless a whole file was unreadable: then references to
    // its objects would be reported as unknown, which is noise.
    if complete {
        problems.extend(validate(&defs));
    }
    problems.0.sort_by(|a, b| a.file.cmp(&b.file));
    problems.into_result()?;
    Ok(Project { root, config, defs })
}

/// Reads every definition file. Returns all problems found while reading and parsing
/// (validation of the whole comes after).
pub fn load_definitions(root: &Path, config: &Config) -> Result<ProjectDefs, Diagnostics> {
    let (defs, problems, _) = read_definitions(root, config);
    problems.into_result().map(|()| defs)
}

/// Reads what can be read: the definitions, the problems, and whether every file
/// could be parsed at all.
fn read_definitions(root: &Path, config: &Config) -> (ProjectDefs, Diagnostics, bool) {
    let mut out = Diagnostics::default();
    let mut defs = ProjectDefs {
        name: config.project.clone(),
        description: config.description.clone(),
        owner: config.owner.clone(),
        tags: config.tags.clone(),
        sources: vec![],
        models: vec![],
        entities: vec![],
        feature_services: vec![],
    };
    for dir in [&config.sources_path, &config.feature_store_path] {
        for file in yaml_files(root, dir, &mut out) {
            read_definitions_file(root, &file, &mut defs, &mut out);
        }
    }
    read_models(root, &config.models_path, &mut defs, &mut out);
    let complete =
        !out.0.iter().any(|d| d.object == "YAML" || d.object == "file" || d.message.starts_with("empty declaration"));
    (defs, out, complete)
}

fn rel(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf())
}

/// `*.yml` / `*.yaml` files under `root/dir`, recursively and sorted. A missing folder is empty.
fn yaml_files(root: &Path, dir: &Path, out: &mut Diagnostics) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.push(Diagnostic::new("folder", format!("cannot read: {e}")).in_file(rel(root, &d)));
                continue;
            }
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn read_yaml<T: for<'de> Deserialize<'de>>(root: &Path, file: &Path, out: &mut Diagnostics) -> Option<T> {
    let r = rel(root, file);
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            out.push(Diagnostic::new("file", format!("cannot read: {e}")).in_file(r));
            return None;
        }
    };
    match serde_yaml::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            out.push(yaml_diag("YAML", &e).in_file(r));
            None
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefinitionsFile {
    #[serde(default)]
    sources: Vec<SourceYaml>,
    #[serde(default)]
    entities: Vec<EntityYaml>,
    #[serde(default)]
    feature_services: Vec<ServiceYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceYaml {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: Tags,
    path: String,
    #[serde(default)]
    format: Option<FileFormatYaml>,
    #[serde(default)]
    columns: Vec<ColumnYaml>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum FileFormatYaml {
    Csv,
    Parquet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnYaml {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default, alias = "description")]
    doc: String,
    #[serde(default)]
    tests: Vec<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityYaml {
    name: String,
    #[serde(default)]
    join_key: Option<String>,
    #[serde(rename = "type", alias = "value_type")]
    ty: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceYaml {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: Tags,
    features: Vec<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelYaml {
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    labels: Tags,
    #[serde(default)]
    materialization: Option<MaterializationYaml>,
    #[serde(default)]
    partition_by: Option<String>,
    #[serde(default)]
    columns: Vec<ColumnYaml>,
    #[serde(default)]
    tests: Vec<serde_yaml::Value>,
    #[serde(default)]
    feature_view: Option<FeatureViewYaml>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum MaterializationYaml {
    Table,
    View,
    Ephemeral,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureViewYaml {
    #[serde(default)]
    name: Option<String>,
    entities: Vec<String>,
    #[serde(default)]
    features: Vec<String>,
    #[serde(alias = "timestamp_field")]
    event_timestamp: String,
    #[serde(default, alias = "created_timestamp_column")]
    created_timestamp: Option<String>,
    #[serde(default)]
    ttl: Option<serde_yaml::Value>,
    #[serde(default = "yes")]
    online: bool,
    #[serde(default)]
    push_source: Option<String>,
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    owner: Option<String>,
}

fn yes() -> bool {
    true
}

fn columns(cols: Vec<ColumnYaml>, file: &Path, object: &str, out: &mut Diagnostics) -> Vec<Column> {
    cols.into_iter()
        .filter_map(|c| {
            let ty = match ValueType::parse(&c.ty) {
                Ok(t) => t,
                Err(e) => {
                    out.push(Diagnostic::new(format!("{object} column {}", c.name), e).in_file(file));
                    return None;
                }
            };
            let tests = c
                .tests
                .iter()
                .filter_map(|t| {
                    parse_test(t)
                        .map_err(|e| out.push(Diagnostic::new(format!("{object} column {}", c.name), e).in_file(file)))
                        .ok()
                })
                .collect();
            Some(Column { name: c.name, ty, doc: c.doc, tests })
        })
        .collect()
}

fn read_definitions_file(root: &Path, file: &Path, defs: &mut ProjectDefs, out: &mut Diagnostics) {
    let Some(f) = read_yaml::<Option<DefinitionsFile>>(root, file, out) else {
        return;
    };
    let f = f.unwrap_or_default();
    let r = rel(root, file);
    for s in f.sources {
        let obj = format!("source {}", s.name);
        let format = match s.format {
            Some(FileFormatYaml::Csv) => FileFormat::Csv,
            Some(FileFormatYaml::Parquet) => FileFormat::Parquet,
            None if s.path.ends_with(".csv") || s.path.ends_with(".csv.gz") => FileFormat::Csv,
            None if s.path.ends_with(".parquet") || s.path.ends_with('/') => FileFormat::Parquet,
            None => {
                out.push(
                    Diagnostic::new(&obj, format!("cannot tell the format of `{}`", s.path))
                        .in_file(&r)
                        .fix("add `format: csv` or `format: parquet`"),
                );
                FileFormat::Parquet
            }
        };
        let columns = columns(s.columns, &r, &obj, out);
        defs.sources.push(Source {
            name: s.name,
            description: s.description,
            owner: s.owner,
            tags: s.tags,
            location: s.path,
            format,
            columns,
            file: r.clone(),
        });
    }
    for e in f.entities {
        let value_type = match ValueType::parse(&e.ty) {
            Ok(t) => t,
            Err(msg) => {
                out.push(Diagnostic::new(format!("entity {}", e.name), msg).in_file(&r));
                continue;
            }
        };
        defs.entities.push(Entity {
            join_key: e.join_key.unwrap_or_else(|| e.name.clone()),
            name: e.name,
            value_type,
            description: e.description,
            owner: e.owner,
            tags: e.tags,
            file: r.clone(),
        });
    }
    for s in f.feature_services {
        let mut items = Vec::new();
        for item in &s.features {
            match parse_service_item(item) {
                Ok(i) => items.push(i),
                Err(e) => out.push(Diagnostic::new(format!("feature service {}", s.name), e).in_file(&r)),
            }
        }
        defs.feature_services.push(FeatureService {
            name: s.name,
            description: s.description,
            owner: s.owner,
            tags: s.tags,
            items,
            file: r.clone(),
            implicit: false,
        });
    }
}

/// `view`, `view:feature`, or `{view: [features]}`.
fn parse_service_item(v: &serde_yaml::Value) -> Result<ServiceItem, String> {
    use serde_yaml::Value;
    let bad = || {
        format!(
            "cannot read feature service item `{}`; write `view`, `view:feature` or `view: [feature, ...]`",
            serde_yaml::to_string(v).unwrap_or_default().trim()
        )
    };
    match v {
        Value::String(s) => Ok(match s.split_once(':') {
            Some((view, feats)) => ServiceItem {
                view: view.trim().into(),
                features: Some(
                    feats
                        .trim()
                        .trim_matches(|c| c == '[' || c == ']')
                        .split(',')
                        .map(|f| f.trim().to_string())
                        .filter(|f| !f.is_empty())
                        .collect(),
                ),
            },
            None => ServiceItem { view: s.trim().into(), features: None },
        }),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("one entry");
            let view = k.as_str().ok_or_else(bad)?.to_string();
            let features = match v {
                Value::Sequence(seq) => {
                    seq.iter().map(|f| f.as_str().map(String::from).ok_or_else(bad)).collect::<Result<Vec<_>, _>>()?
                }
                Value::String(f) => vec![f.clone()],
                _ => return Err(bad()),
            };
            Ok(ServiceItem { view, features: Some(features) })
        }
        _ => Err(bad()),
    }
}

/// A data test: `not_null`, `unique`, or a one-key mapping such as
/// `{accepted_values: [a, b]}`, `{relationships: {to: m, field: c}}`,
/// `{expression_is_true: "x > 0"}`, `{unique_together: [a, b]}`, `{row_count: {min: 1}}`.
fn parse_test(v: &serde_yaml::Value) -> Result<DataTest, String> {
    use serde_yaml::Value;
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_sequence().map(|s| {
            s.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                })
                .collect()
        })
    };
    let known = "not_null, unique, accepted_values, relationships, expression_is_true, unique_together, row_count";
    match v {
        Value::String(s) if s == "not_null" => Ok(DataTest::NotNull),
        Value::String(s) if s == "unique" => Ok(DataTest::Unique),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next().expect("one entry");
            let field = |name: &str| arg.get(name);
            match k.as_str().unwrap_or_default() {
                "accepted_values" => strings(arg)
                    .or_else(|| field("values").and_then(strings))
                    .map(|values| DataTest::AcceptedValues { values })
                    .ok_or_else(|| "accepted_values needs a list of values".into()),
                "relationships" => {
                    match (field("to").and_then(Value::as_str), field("field").and_then(Value::as_str)) {
                        (Some(to), Some(f)) => Ok(DataTest::Relationships { to: to.into(), field: f.into() }),
                        _ => Err("relationships needs `to:` (a model or source) and `field:` (its column)".into()),
                    }
                }
                "expression_is_true" => arg
                    .as_str()
                    .or_else(|| field("expression").and_then(Value::as_str))
                    .map(|e| DataTest::ExpressionIsTrue { expression: e.into() })
                    .ok_or_else(|| "expression_is_true needs a SQL expression".into()),
                "unique_together" => strings(arg)
                    .or_else(|| field("columns").and_then(strings))
                    .map(|columns| DataTest::UniqueTogether { columns })
                    .ok_or_else(|| "unique_together needs a list of columns".into()),
                "row_count" => {
                    let n = |k: &str| field(k).and_then(Value::as_u64);
                    if n("min").is_none() && n("max").is_none() {
                        return Err("row_count needs `min:` and/or `max:`".into());
                    }
                    Ok(DataTest::RowCount { min: n("min"), max: n("max") })
                }
                other => Err(format!("unknown data test `{other}`; use one of {known}")),
            }
        }
        other => Err(format!(
            "unknown data test `{}`; use one of {known}",
            serde_yaml::to_string(other).unwrap_or_default().trim()
        )),
    }
}

fn read_models(root: &Path, dir: &Path, defs: &mut ProjectDefs, out: &mut Diagnostics) {
    let yamls = yaml_files(root, dir, out);
    let mut sqls: BTreeMap<PathBuf, PathBuf> = BTreeMap::new(); // stem path -> sql file
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|e| e.to_str()) == Some("sql") {
                sqls.insert(p.with_extension(""), p);
            }
        }
    }
    let mut declared = std::collections::BTreeSet::new();
    for yml in yamls {
        let stem = yml.with_extension("");
        let r = rel(root, &yml);
        let name = stem.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let Some(sql_file) = sqls.get(&stem).cloned() else {
            out.push(
                Diagnostic::new(format!("model {name}"), "declaration without SQL")
                    .in_file(&r)
                    .fix(format!("add {} beside it", rel(root, &stem.with_extension("sql")).display())),
            );
            continue;
        };
        declared.insert(stem);
        let Some(m) = read_yaml::<Option<ModelYaml>>(root, &yml, out) else {
            continue;
        };
        let Some(m) = m else {
            out.push(
                Diagnostic::new(format!("model {name}"), "empty declaration")
                    .in_file(&r)
                    .fix("declare at least the model's columns"),
            );
            continue;
        };
        let obj = format!("model {name}");
        let sql_rel = rel(root, &sql_file);
        let sql = match std::fs::read_to_string(&sql_file) {
            Ok(s) => s,
            Err(e) => {
                out.push(Diagnostic::new(&obj, format!("cannot read: {e}")).in_file(&sql_rel));
                continue;
            }
        };
        let info = match crate::sql::analyze(&sql) {
            Ok(i) => i,
            Err(e) => {
                out.push(Diagnostic::new(&obj, format!("SQL does not parse: {e}")).in_file(&sql_rel));
                Default::default()
            }
        };
        let columns = columns(m.columns, &r, &obj, out);
        let tests = m
            .tests
            .iter()
            .filter_map(|t| parse_test(t).map_err(|e| out.push(Diagnostic::new(&obj, e).in_file(&r))).ok())
            .collect();
        let feature_view = m.feature_view.map(|fv| {
            let view_name = fv.name.unwrap_or_else(|| name.clone());
            let ttl_seconds = match &fv.ttl {
                None => 0,
                Some(serde_yaml::Value::Number(n)) => n.as_u64().unwrap_or_else(|| {
                    out.push(
                        Diagnostic::new(format!("feature view {view_name}"), format!("bad ttl `{n}`"))
                            .in_file(&r)
                            .fix("write seconds (>= 0) or e.g. `7d`"),
                    );
                    0
                }),
                Some(serde_yaml::Value::String(s)) => parse_duration(s).unwrap_or_else(|e| {
                    out.push(Diagnostic::new(format!("feature view {view_name}"), format!("bad ttl: {e}")).in_file(&r));
                    0
                }),
                Some(other) => {
                    out.push(
                        Diagnostic::new(
                            format!("feature view {view_name}"),
                            format!("bad ttl `{}`", serde_yaml::to_string(other).unwrap_or_default().trim()),
                        )
                        .in_file(&r)
                        .fix("write seconds or e.g. `7d`"),
                    );
                    0
                }
            };
            let mut features = fv.features;
            if features.is_empty() {
                let keys: Vec<String> =
                    fv.entities.iter().filter_map(|e| defs.entity(e)).map(|e| e.join_key.clone()).collect();
                features = columns
                    .iter()
                    .map(|c| c.name.clone())
                    .filter(|c| {
                        !keys.contains(c) && *c != fv.event_timestamp && Some(c) != fv.created_timestamp.as_ref()
                    })
                    .collect();
            }
            FeatureViewDecl {
                name: view_name,
                entities: fv.entities,
                features,
                event_timestamp: fv.event_timestamp,
                created_timestamp: fv.created_timestamp,
                ttl_seconds,
                online: fv.online,
                push_source: fv.push_source,
                tags: fv.tags,
                description: fv.description.unwrap_or_else(|| m.description.clone()),
                owner: fv.owner.unwrap_or_else(|| m.owner.clone()),
            }
        });
        defs.models.push(Model {
            name,
            sql,
            description: m.description,
            owner: m.owner,
            labels: m.labels,
            materialization: match m.materialization {
                None | Some(MaterializationYaml::Table) => Materialization::Table,
                Some(MaterializationYaml::View) => Materialization::View,
                Some(MaterializationYaml::Ephemeral) => Materialization::Ephemeral,
            },
            partition_by: m.partition_by,
            columns,
            tests,
            depends_on: info.tables,
            column_lineage: info.column_lineage,
            feature_view,
            sql_file: sql_rel,
            yaml_file: r,
        });
    }
    for (stem, sql) in sqls {
        if !declared.contains(&stem) {
            let name = stem.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            out.push(
                Diagnostic::new(format!("model {name}"), "SQL without a declaration").in_file(rel(root, &sql)).fix(
                    format!(
                        "add {} with the model's description and columns",
                        rel(root, &stem.with_extension("yml")).display()
                    ),
                ),
            );
        }
    }
    defs.models.sort_by(|a, b| a.name.cmp(&b.name));
}
