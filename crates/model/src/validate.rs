//! Validation of a whole project's definitions. Every problem is collected, so a
//! user fixes them in one round rather than one per run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::ident::{check_identifier, check_project_name, closest};
use crate::{dag, DataTest, Diagnostic, Diagnostics, ProjectDefs, ValueType, IMPLICIT_SERVICE_PREFIX};

/// Checks `project` and returns every problem found.
pub fn validate(project: &ProjectDefs) -> Diagnostics {
    let mut v = Validator { project, out: Diagnostics::default() };
    v.project();
    v.names();
    v.dependencies();
    v.models();
    v.entities();
    v.feature_views();
    v.feature_services();
    v.out
}

struct Validator<'a> {
    project: &'a ProjectDefs,
    out: Diagnostics,
}

impl Validator<'_> {
    fn err(&mut self, file: &Path, object: String, message: String, fix: Option<String>) {
        let mut d = Diagnostic::new(object, message).in_file(file);
        d.fix = fix;
        self.out.push(d);
    }

    fn project(&mut self) {
        if let Err(e) = check_project_name(&self.project.name) {
            self.err(Path::new("amora.yaml"), "project".into(), e, Some("rename `project:` in amora.yaml".into()));
        }
    }

    fn names(&mut self) {
        let p = self.project;
        let mut tables: BTreeMap<&str, &Path> = BTreeMap::new();
        for (kind, name, file) in p
            .sources
            .iter()
            .map(|s| ("source", &s.name, s.file.as_path()))
            .chain(p.models.iter().map(|m| ("model", &m.name, m.yaml_file.as_path())))
        {
            if let Err(e) = check_identifier(name) {
                self.err(file, format!("{kind} {name}"), e, None);
            }
            if let Some(first) = tables.insert(name, file) {
                self.err(
                    file,
                    format!("{kind} {name}"),
                    format!("the name `{name}` is already used by a source or model in {}", first.display()),
                    Some("give each source and model its own name: SQL refers to them by name".into()),
                );
            }
        }
        let mut seen = BTreeMap::new();
        for e in &p.entities {
            for (what, n) in [("name", &e.name), ("join key", &e.join_key)] {
                if let Err(msg) = check_identifier(n) {
                    self.err(&e.file, format!("entity {}", e.name), format!("{what}: {msg}"), None);
                }
            }
            if let Some(first) = seen.insert(e.name.as_str(), &e.file) {
                self.err(
                    &e.file,
                    format!("entity {}", e.name),
                    format!("declared twice (first in {})", first.display()),
                    Some("remove or rename one of them".into()),
                );
            }
        }
        let mut views = BTreeMap::new();
        for v in p.feature_views() {
            if let Err(e) = check_identifier(&v.decl.name) {
                self.err(&v.model.yaml_file, format!("feature view {}", v.decl.name), e, None);
            }
            // A push source is a registry data source beside the models' tables,
            // and its batch source is this view's table: one name, one view.
            if let Some(push) = &v.decl.push_source {
                let obj = format!("feature view {}", v.decl.name);
                if let Err(e) = check_identifier(push) {
                    self.err(&v.model.yaml_file, obj.clone(), format!("push_source: {e}"), None);
                }
                if let Some(first) = tables.insert(push, &v.model.yaml_file) {
                    self.err(
                        &v.model.yaml_file,
                        obj,
                        format!(
                            "push_source `{push}`: the name is already used by a source, model or push source in {}",
                            first.display()
                        ),
                        Some(
                            "give each view's `push_source` its own name (it is a data source in the registry)".into(),
                        ),
                    );
                }
            }
            if let Some(first) = views.insert(v.decl.name.as_str(), &v.model.yaml_file) {
                self.err(
                    &v.model.yaml_file,
                    format!("feature view {}", v.decl.name),
                    format!("declared twice (first in {})", first.display()),
                    Some("give `feature_view.name` a unique value".into()),
                );
            }
        }
        let mut services = BTreeMap::new();
        for s in &p.feature_services {
            if let Err(e) = check_identifier(&s.name) {
                self.err(&s.file, format!("feature service {}", s.name), e, None);
            }
            if s.name.starts_with(IMPLICIT_SERVICE_PREFIX) {
                let view = &s.name[IMPLICIT_SERVICE_PREFIX.len()..];
                if p.feature_view(view).is_some() {
                    self.err(
                        &s.file,
                        format!("feature service {}", s.name),
                        format!("`{}` is amora's implicit service for view `{view}`", s.name),
                        Some(format!("rename it; the prefix `{IMPLICIT_SERVICE_PREFIX}` is reserved")),
                    );
                }
            }
            if let Some(first) = services.insert(s.name.as_str(), &s.file) {
                self.err(
                    &s.file,
                    format!("feature service {}", s.name),
                    format!("declared twice (first in {})", first.display()),
                    Some("remove or rename one of them".into()),
                );
            }
        }
    }

    fn dependencies(&mut self) {
        let p = self.project;
        let tables: Vec<&str> =
            p.sources.iter().map(|s| s.name.as_str()).chain(p.models.iter().map(|m| m.name.as_str())).collect();
        for m in &p.models {
            for d in &m.depends_on {
                if !tables.contains(&d.as_str()) {
                    let fix = match closest(d, tables.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => "declare it as a source or add a model with that name".into(),
                    };
                    self.err(&m.sql_file, format!("model {}", m.name), format!("reads unknown table `{d}`"), Some(fix));
                }
            }
        }
        let graph = p.models.iter().map(|m| (m.name.clone(), m.depends_on.clone())).collect();
        if let Err(cycle) = dag::generations(&graph) {
            let first = p.model(&cycle[0]).expect("cycle of models");
            self.err(
                &first.sql_file,
                format!("model {}", first.name),
                format!("dependency cycle: {}", cycle.join(" -> ")),
                Some("models must form a DAG; remove one of these references".into()),
            );
        }
    }

    fn models(&mut self) {
        let p = self.project;
        for m in &p.models {
            let obj = format!("model {}", m.name);
            let mut cols = BTreeSet::new();
            for c in &m.columns {
                if let Err(e) = check_identifier(&c.name) {
                    self.err(&m.yaml_file, obj.clone(), format!("column: {e}"), None);
                }
                if !cols.insert(c.name.as_str()) {
                    self.err(&m.yaml_file, obj.clone(), format!("column `{}` is declared twice", c.name), None);
                }
                for t in &c.tests {
                    self.data_test(m, t, Some(&c.name));
                }
            }
            for t in &m.tests {
                self.data_test(m, t, None);
            }
            if let Some(col) = &m.partition_by {
                self.timestamp_column(m, col, "partition_by");
            }
        }
    }

    fn data_test(&mut self, m: &crate::Model, t: &DataTest, column: Option<&str>) {
        let obj = match column {
            Some(c) => format!("model {} column {c}", m.name),
            None => format!("model {}", m.name),
        };
        let p = self.project;
        match t {
            DataTest::Relationships { to, field } => {
                let target_cols: Option<Vec<&str>> = p
                    .model(to)
                    .map(|t| t.columns.iter().map(|c| c.name.as_str()).collect())
                    .or_else(|| p.source(to).map(|s| s.columns.iter().map(|c| c.name.as_str()).collect()));
                match target_cols {
                    None => self.err(
                        &m.yaml_file,
                        obj,
                        format!("relationships test refers to unknown table `{to}`"),
                        Some("name a model or source in `to:`".into()),
                    ),
                    Some(cols) if !cols.contains(&field.as_str()) => self.err(
                        &m.yaml_file,
                        obj,
                        format!("relationships test refers to unknown column `{to}.{field}`"),
                        Some(format!("`{to}` has: {}", cols.join(", "))),
                    ),
                    Some(_) => {}
                }
                if column.is_none() {
                    self.err(
                        &m.yaml_file,
                        format!("model {}", m.name),
                        "a relationships test belongs under a column".into(),
                        Some("move it into the column's `tests:`".into()),
                    );
                }
            }
            DataTest::UniqueTogether { columns } => {
                for c in columns {
                    if m.column(c).is_none() {
                        self.err(
                            &m.yaml_file,
                            obj.clone(),
                            format!("unique_together names unknown column `{c}`"),
                            None,
                        );
                    }
                }
            }
            DataTest::AcceptedValues { values } if values.is_empty() => {
                self.err(&m.yaml_file, obj, "accepted_values has an empty `values` list".into(), None);
            }
            DataTest::RowCount { min: Some(lo), max: Some(hi) } if lo > hi => {
                self.err(&m.yaml_file, obj, format!("row_count has min {lo} > max {hi}"), None);
            }
            DataTest::NotNull | DataTest::Unique | DataTest::AcceptedValues { .. } if column.is_none() => {
                self.err(
                    &m.yaml_file,
                    obj,
                    "this test checks a column: declare it under the column's `tests:`".into(),
                    None,
                );
            }
            _ => {}
        }
    }

    fn timestamp_column(&mut self, m: &crate::Model, col: &str, what: &str) -> bool {
        let obj = format!("model {}", m.name);
        match m.column(col) {
            None => {
                let fix = closest(col, m.columns.iter().map(|c| c.name.as_str()))
                    .map(|c| format!("did you mean `{c}`?"))
                    .unwrap_or_else(|| "declare the column under `columns:` with type timestamp".into());
                self.err(&m.yaml_file, obj, format!("{what} column `{col}` is not a column of the model"), Some(fix));
                false
            }
            Some(c) if !c.ty.is_timestamp() => {
                self.err(
                    &m.yaml_file,
                    obj,
                    format!("{what} column `{col}` has type {}, not timestamp", c.ty),
                    Some(format!("declare `{col}` with `type: timestamp` or pick a timestamp column")),
                );
                false
            }
            Some(_) => true,
        }
    }

    fn entities(&mut self) {
        for e in &self.project.entities {
            if !e.value_type.is_join_key_type() {
                self.err(
                    &e.file,
                    format!("entity {}", e.name),
                    format!("join key type {} is not supported", e.value_type),
                    Some("use string, int64, int32 or bytes".into()),
                );
            }
        }
    }

    fn feature_views(&mut self) {
        let p = self.project;
        for v in p.feature_views() {
            let m = v.model;
            let obj = format!("feature view {}", v.decl.name);
            if m.materialization == crate::Materialization::Ephemeral {
                self.err(
                    &m.yaml_file,
                    obj.clone(),
                    "an ephemeral model has no table to serve features from".into(),
                    Some("use `materialization: table` (or view)".into()),
                );
            }
            if v.decl.entities.is_empty() {
                self.err(
                    &m.yaml_file,
                    obj.clone(),
                    "declares no entities".into(),
                    Some("list the entity names under `feature_view.entities`".into()),
                );
            }
            let mut keys = BTreeSet::new();
            for en in &v.decl.entities {
                let Some(e) = p.entity(en) else {
                    let fix = closest(en, p.entities.iter().map(|e| e.name.as_str()))
                        .map(|c| format!("did you mean `{c}`?"))
                        .unwrap_or_else(|| "declare it under `entities:` in a feature_store file".into());
                    self.err(&m.yaml_file, obj.clone(), format!("unknown entity `{en}`"), Some(fix));
                    continue;
                };
                keys.insert(e.join_key.as_str());
                match m.column(&e.join_key) {
                    None => self.err(
                        &m.yaml_file,
                        obj.clone(),
                        format!("entity `{en}` joins on `{}`, which is not a column of model `{}`", e.join_key, m.name),
                        Some(format!("add `{}` to the model's columns", e.join_key)),
                    ),
                    Some(c) if c.ty != e.value_type => self.err(
                        &m.yaml_file,
                        obj.clone(),
                        format!("join key `{}` has type {} but entity `{en}` is {}", e.join_key, c.ty, e.value_type),
                        Some("make the column and the entity agree".into()),
                    ),
                    Some(_) => {}
                }
            }
            self.timestamp_column(m, &v.decl.event_timestamp, "event timestamp");
            if let Some(c) = &v.decl.created_timestamp {
                self.timestamp_column(m, c, "created timestamp");
            }
            let mut seen = BTreeSet::new();
            if v.decl.features.is_empty() {
                self.err(
                    &m.yaml_file,
                    obj.clone(),
                    "has no features".into(),
                    Some("list feature columns under `feature_view.features`".into()),
                );
            }
            for f in &v.decl.features {
                if !seen.insert(f.as_str()) {
                    self.err(&m.yaml_file, obj.clone(), format!("feature `{f}` is listed twice"), None);
                }
                if m.column(f).is_none() {
                    let fix = closest(f, m.columns.iter().map(|c| c.name.as_str()))
                        .map(|c| format!("did you mean `{c}`?"))
                        .unwrap_or_else(|| format!("declare `{f}` under the model's `columns:`"));
                    self.err(
                        &m.yaml_file,
                        obj.clone(),
                        format!("feature `{f}` is not a column of model `{}`", m.name),
                        Some(fix),
                    );
                }
                if keys.contains(f.as_str())
                    || *f == v.decl.event_timestamp
                    || v.decl.created_timestamp.as_deref() == Some(f)
                {
                    self.err(
                        &m.yaml_file,
                        obj.clone(),
                        format!("`{f}` is a join key or timestamp and cannot also be a feature"),
                        Some("remove it from `features`".into()),
                    );
                }
            }
        }
    }

    fn feature_services(&mut self) {
        let p = self.project;
        for s in &p.feature_services {
            let obj = format!("feature service {}", s.name);
            if s.items.is_empty() {
                self.err(
                    &s.file,
                    obj.clone(),
                    "selects no features".into(),
                    Some("list views (or `view: [features]`) under `features`".into()),
                );
            }
            for item in &s.items {
                let Some(v) = p.feature_view(&item.view) else {
                    let fix = closest(&item.view, p.feature_views().map(|v| v.decl.name.as_str()))
                        .map(|c| format!("did you mean `{c}`?"))
                        .unwrap_or_else(|| "name a feature view declared in a model".into());
                    self.err(&s.file, obj.clone(), format!("unknown feature view `{}`", item.view), Some(fix));
                    continue;
                };
                for f in item.features.iter().flatten() {
                    if !v.decl.features.contains(f) {
                        self.err(
                            &s.file,
                            obj.clone(),
                            format!("feature view `{}` has no feature `{f}`", item.view),
                            Some(format!("its features are: {}", v.decl.features.join(", "))),
                        );
                    }
                }
            }
        }
    }
}

/// The join-key type of every entity, for checks elsewhere.
pub fn entity_types(project: &ProjectDefs) -> BTreeMap<&str, ValueType> {
    project.entities.iter().map(|e| (e.join_key.as_str(), e.value_type)).collect()
}
