//! The definitions of a project, as loaded from its files and before validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ValueType;

pub type Tags = BTreeMap<String, String>;

/// A whole project: what `apply` turns into registry objects.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectDefs {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub tags: Tags,
    pub sources: Vec<Source>,
    pub models: Vec<Model>,
    pub entities: Vec<Entity>,
    pub feature_services: Vec<FeatureService>,
}

/// A column of a source or a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ValueType,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub doc: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<DataTest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Parquet,
}

/// A raw table the models read.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub tags: Tags,
    /// Where the data is: a path relative to the project root, or a URL.
    pub location: String,
    pub format: FileFormat,
    pub columns: Vec<Column>,
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialization {
    Table,
    View,
    Ephemeral,
}

/// A data test, declared on a column or on a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataTest {
    NotNull,
    Unique,
    AcceptedValues {
        values: Vec<String>,
    },
    /// Every value appears in `to.field`.
    Relationships {
        to: String,
        field: String,
    },
    ExpressionIsTrue {
        expression: String,
    },
    UniqueTogether {
        columns: Vec<String>,
    },
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
}

/// A SQL model: a SELECT over sources and other models.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub sql: String,
    pub description: String,
    pub owner: String,
    pub labels: Tags,
    pub materialization: Materialization,
    /// A timestamp column to partition the table by (daily).
    pub partition_by: Option<String>,
    pub columns: Vec<Column>,
    /// Model-level tests (column tests live on the columns).
    pub tests: Vec<DataTest>,
    /// Tables the SQL reads (sources and models), inferred from the SQL.
    pub depends_on: Vec<String>,
    /// For each output column, the upstream `table.column`s its expression reads,
    /// where the SQL says so unambiguously.
    pub column_lineage: BTreeMap<String, Vec<String>>,
    pub feature_view: Option<FeatureViewDecl>,
    pub sql_file: PathBuf,
    pub yaml_file: PathBuf,
}

impl Model {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The `feature_view:` block of a model declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureViewDecl {
    pub name: String,
    /// Entity names.
    pub entities: Vec<String>,
    /// Feature columns; when empty in the file, every column that is not a join key or timestamp.
    pub features: Vec<String>,
    pub event_timestamp: String,
    pub created_timestamp: Option<String>,
    pub ttl_seconds: u64,
    pub online: bool,
    /// A Feast `PushSource` of this name, whose batch source is the model's table:
    /// rows pushed to it (`POST /push`, Feast's `store.push`) land in this view.
    pub push_source: Option<String>,
    pub tags: Tags,
    pub description: String,
    pub owner: String,
}

/// Something a feature view is keyed by.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub name: String,
    pub join_key: String,
    pub value_type: ValueType,
    pub description: String,
    pub owner: String,
    pub tags: Tags,
    pub file: PathBuf,
}

/// A named group of features for a model to consume.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureService {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub tags: Tags,
    pub items: Vec<ServiceItem>,
    pub file: PathBuf,
    /// Amora's implicit `amora_fs__<view>` services are generated, not declared.
    pub implicit: bool,
}

/// `view` (all its features) or `view: [features]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceItem {
    pub view: String,
    pub features: Option<Vec<String>>,
}

/// The prefix of the feature service amora adds for every feature view.
pub const IMPLICIT_SERVICE_PREFIX: &str = "amora_fs__";

/// A feature view resolved against its model: the columns with their types.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView<'a> {
    pub model: &'a Model,
    pub decl: &'a FeatureViewDecl,
}

impl ProjectDefs {
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == name)
    }
    pub fn feature_views(&self) -> impl Iterator<Item = FeatureView<'_>> {
        self.models.iter().filter_map(|m| m.feature_view.as_ref().map(|decl| FeatureView { model: m, decl }))
    }
    pub fn feature_view(&self, name: &str) -> Option<FeatureView<'_>> {
        self.feature_views().find(|v| v.decl.name == name)
    }

    /// Declared services followed by the implicit `amora_fs__<view>` one per view
    /// (unless the user declared one with that name).
    pub fn all_feature_services(&self) -> Vec<FeatureService> {
        let mut out = self.feature_services.clone();
        for v in self.feature_views() {
            let name = format!("{IMPLICIT_SERVICE_PREFIX}{}", v.decl.name);
            if out.iter().any(|s| s.name == name) {
                continue;
            }
            out.push(FeatureService {
                name,
                description: format!("All features of {}", v.decl.name),
                owner: v.decl.owner.clone(),
                tags: Tags::new(),
                items: vec![ServiceItem { view: v.decl.name.clone(), features: None }],
                file: v.model.yaml_file.clone(),
                implicit: true,
            });
        }
        out
    }
}

impl FeatureView<'_> {
    /// The join-key columns, in the order of the view's entities.
    pub fn join_keys<'p>(&self, project: &'p ProjectDefs) -> Vec<&'p Entity> {
        self.decl.entities.iter().filter_map(|e| project.entity(e)).collect()
    }
    pub fn feature_columns(&self) -> Vec<&Column> {
        self.decl.features.iter().filter_map(|f| self.model.column(f)).collect()
    }
}
