//! What would change: objects to create, update and delete, with their property
//! changes (old -> new) and the features added or removed per view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use amora_proto::convert::{FeastObjects, DUMMY_ENTITY};
use amora_proto::json::to_json;
use amora_proto::{ObjectKind, RegistryFile};
use serde_json::Value;

use crate::snapshot::normalized;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One object that changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    #[serde(serialize_with = "kind_label")]
    pub kind: ObjectKind,
    pub name: String,
    pub action: Action,
    /// Human-readable lines: `ttl: "3600s" -> "7200s"`, `+ feature x (DOUBLE)`.
    pub details: Vec<String>,
}

fn kind_label<S: serde::Serializer>(k: &ObjectKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.label())
}

impl Change {
    /// Feast never prints data sources or the hidden `__dummy` entity; neither do we.
    pub fn is_shown(&self) -> bool {
        self.kind != ObjectKind::DataSource && !(self.kind == ObjectKind::Entity && self.name == DUMMY_ENTITY)
    }
}

/// The changes between two states of one project, in Feast's order of kinds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn change(&self, kind: ObjectKind, name: &str) -> Option<&Change> {
        self.changes.iter().find(|c| c.kind == kind && c.name == name)
    }

    /// `(created, updated, deleted)` among the objects shown.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |a: Action| self.changes.iter().filter(|c| c.is_shown() && c.action == a).count();
        (count(Action::Create), count(Action::Update), count(Action::Delete))
    }

    /// One line per changed object, like Feast's and Amora's plan output.
    pub fn summary_lines(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| c.is_shown())
            .map(|c| {
                let verb = match c.action {
                    Action::Create => "Created",
                    Action::Update => "Updated",
                    Action::Delete => "Deleted",
                };
                format!("{verb} {} {}", c.kind.label(), c.name)
            })
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&Change> = self.changes.iter().filter(|c| c.is_shown()).collect();
        if shown.is_empty() {
            return writeln!(f, "No changes to registry");
        }
        for (c, line) in shown.iter().zip(self.summary_lines()) {
            writeln!(f, "{line}")?;
            for d in &c.details {
                writeln!(f, "\t{d}")?;
            }
        }
        let (c, u, d) = self.counts();
        writeln!(f, "\n{c} to create, {u} to update, {d} to delete.")
    }
}

/// The changes that turn `old` into `new` (both the objects of one project).
/// `extra_old` lists objects of kinds amora does not write (on-demand, stream and
/// label views) that exist in `old`: apply is total, so they are deleted.
pub fn compare(old: &FeastObjects, new: &FeastObjects, extra_old: &[(ObjectKind, String)]) -> Plan {
    let (old, new) = (normalized(old), normalized(new));
    let mut changes = Vec::new();
    let one = |o: &Option<amora_proto::Project>| -> BTreeMap<String, Value> {
        o.iter().map(|p| (p.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(), to_json(p))).collect()
    };
    compare_kind(ObjectKind::Project, &one(&old.project), &one(&new.project), &mut changes);
    compare_kind(ObjectKind::DataSource, &jsons(&old.data_sources), &jsons(&new.data_sources), &mut changes);
    compare_kind(ObjectKind::Entity, &jsons(&old.entities), &jsons(&new.entities), &mut changes);
    compare_kind(ObjectKind::FeatureView, &jsons(&old.feature_views), &jsons(&new.feature_views), &mut changes);
    for kind in [ObjectKind::OnDemandFeatureView, ObjectKind::StreamFeatureView, ObjectKind::LabelView] {
        for (k, name) in extra_old {
            if *k == kind {
                changes.push(Change { kind, name: name.clone(), action: Action::Delete, details: vec![] });
            }
        }
    }
    compare_kind(
        ObjectKind::FeatureService,
        &jsons(&old.feature_services),
        &jsons(&new.feature_services),
        &mut changes,
    );
    Plan { changes }
}

fn jsons<T: serde::Serialize>(m: &BTreeMap<String, T>) -> BTreeMap<String, Value> {
    m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

/// Objects of kinds amora does not write, present for `project` in `file`.
pub fn foreign_views(file: &RegistryFile, project: &str) -> Vec<(ObjectKind, String)> {
    [ObjectKind::OnDemandFeatureView, ObjectKind::StreamFeatureView, ObjectKind::LabelView]
        .into_iter()
        .flat_map(|k| file.objects(k, project).map(move |(name, _)| (k, name)))
        .collect()
}

fn compare_kind(kind: ObjectKind, old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>, out: &mut Vec<Change>) {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let change = match (old.get(name), new.get(name)) {
            (None, Some(n)) => Change { kind, name: name.clone(), action: Action::Create, details: created_details(n) },
            (Some(_), None) => Change { kind, name: name.clone(), action: Action::Delete, details: vec![] },
            (Some(o), Some(n)) if o != n => {
                let mut details = Vec::new();
                diff_json("", o.get("spec").unwrap_or(o), n.get("spec").unwrap_or(n), &mut details);
                Change { kind, name: name.clone(), action: Action::Update, details }
            }
            _ => continue,
        };
        out.push(change);
    }
}

fn feature_label(f: &Value) -> String {
    let name = f.get("name").and_then(Value::as_str).unwrap_or("?");
    match f.get("valueType").and_then(Value::as_str) {
        Some(t) => format!("{name} ({t})"),
        None => name.to_string(),
    }
}

fn created_details(v: &Value) -> Vec<String> {
    let spec = v.get("spec").unwrap_or(v);
    let Some(Value::Array(items)) = spec.get("features") else {
        return vec![];
    };
    let labels: Vec<String> = items
        .iter()
        .flat_map(|i| {
            match (i.get("featureViewName").and_then(Value::as_str), i.get("featureColumns")) {
                // A feature service's projection: `view:feature` for each selected column.
                (Some(view), Some(Value::Array(cols))) => cols
                    .iter()
                    .map(|c| format!("{view}:{}", c.get("name").and_then(Value::as_str).unwrap_or("?")))
                    .collect(),
                (Some(view), _) => vec![view.to_string()],
                _ => vec![feature_label(i)],
            }
        })
        .collect();
    vec![format!("+ features: {}", labels.join(", "))]
}

fn compact(v: Option<&Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Appends `path: old -> new` lines for every difference, recursing into objects.
/// Lists of named items (features, projections) are compared by name.
fn diff_json(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            for k in keys {
                match (o.get(k), n.get(k)) {
                    (Some(a), Some(b)) if a == b => {}
                    (Some(a), Some(b)) => diff_json(&join(k), a, b, out),
                    (a, b) => {
                        if let Some(lines) =
                            named_list_diff(&join(k), a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null))
                        {
                            out.extend(lines);
                        } else {
                            out.push(format!("{}: {} -> {}", join(k), compact(a), compact(b)));
                        }
                    }
                }
            }
        }
        (a, b) => match named_list_diff(path, a, b) {
            Some(lines) => out.extend(lines),
            None => out.push(format!("{path}: {} -> {}", compact(Some(a)), compact(Some(b)))),
        },
    }
}

fn named_list_diff(path: &str, old: &Value, new: &Value) -> Option<Vec<String>> {
    let named = |v: &Value| -> Option<Vec<(String, Value)>> {
        match v {
            Value::Null => Some(vec![]),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    let name = i.get("name").or_else(|| i.get("featureViewName"))?.as_str()?;
                    Some((name.to_string(), i.clone()))
                })
                .collect(),
            _ => None,
        }
    };
    let (o, n) = (named(old)?, named(new)?);
    if o.is_empty() && n.is_empty() {
        return None;
    }
    let what = path.rsplit('.').next().unwrap_or(path).trim_end_matches('s');
    let mut out = Vec::new();
    for (name, item) in &n {
        match o.iter().find(|(x, _)| x == name) {
            None => out.push(format!("+ {what} {}", feature_label(item))),
            Some((_, before)) if before != item => {
                let mut inner = Vec::new();
                diff_json("", before, item, &mut inner);
                out.push(format!("~ {what} {name}: {}", inner.join("; ")));
            }
            Some(_) => {}
        }
    }
    for (name, _) in &o {
        if !n.iter().any(|(x, _)| x == name) {
            out.push(format!("- {what} {name}"));
        }
    }
    let order_changed = out.is_empty() && o.iter().map(|x| &x.0).ne(n.iter().map(|x| &x.0));
    if order_changed {
        out.push(format!(
            "{path}: order {} -> {}",
            o.iter().map(|x| x.0.as_str()).collect::<Vec<_>>().join(","),
            n.iter().map(|x| x.0.as_str()).collect::<Vec<_>>().join(",")
        ));
    }
    Some(out)
}
