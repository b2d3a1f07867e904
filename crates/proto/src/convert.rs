//! amora definitions -> the Feast objects `apply` writes.
//!
//! Each feature view embeds its model's table as a Feast data source (a
//! `FileSource` on the model's Parquet file for the embedded engine, a
//! `BigQuerySource` for BigQuery), which is also registered top-level, as Feast does.
//! Every project also gets Feast's hidden `__dummy` entity.

use std::collections::BTreeMap;

use amora_model::{FeatureView as ViewDef, Model, ProjectDefs};

use crate::messages::*;

/// Where a model's table lives, as a Feast data source sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRef {
    /// A Parquet file (path or URL).
    File(String),
    /// A BigQuery table, `project.dataset.table`.
    BigQuery(String),
}

/// The Feast objects of one project, keyed by name, without meta timestamps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeastObjects {
    pub project: Option<Project>,
    pub entities: BTreeMap<String, Entity>,
    pub data_sources: BTreeMap<String, DataSource>,
    pub feature_views: BTreeMap<String, FeatureView>,
    pub feature_services: BTreeMap<String, FeatureService>,
}

/// Feast's hidden entity for entity-less views; `feast apply` always writes it.
pub const DUMMY_ENTITY: &str = "__dummy";
pub const DUMMY_ENTITY_ID: &str = "__dummy_id";

/// Builds the Feast objects for `defs`. `table` says where each model's table is.
pub fn feast_objects(defs: &ProjectDefs, table: &dyn Fn(&Model) -> TableRef) -> FeastObjects {
    let project = &defs.name;
    let mut out = FeastObjects {
        project: Some(Project {
            spec: Some(ProjectSpec {
                name: project.clone(),
                description: defs.description.clone(),
                tags: defs.tags.clone(),
                owner: defs.owner.clone(),
            }),
            meta: None,
        }),
        ..Default::default()
    };
    let dummy = EntitySpecV2 {
        name: DUMMY_ENTITY.into(),
        join_key: DUMMY_ENTITY_ID.into(),
        project: project.clone(),
        ..Default::default()
    };
    out.entities.insert(DUMMY_ENTITY.into(), Entity { spec: Some(dummy), meta: None });
    for e in &defs.entities {
        let spec = EntitySpecV2 {
            name: e.name.clone(),
            value_type: e.value_type.feast_enum(),
            description: e.description.clone(),
            join_key: e.join_key.clone(),
            tags: e.tags.clone(),
            project: project.clone(),
            owner: e.owner.clone(),
        };
        out.entities.insert(e.name.clone(), Entity { spec: Some(spec), meta: None });
    }
    for v in defs.feature_views() {
        let source = data_source(&v, table(v.model));
        let mut top = source.clone();
        top.project = project.clone();
        out.data_sources.insert(top.name.clone(), top);
        let stream_source = v.decl.push_source.as_ref().map(|name| push_source(name, &v, &source));
        if let Some(push) = &stream_source {
            let mut top = push.clone();
            top.project = project.clone();
            out.data_sources.insert(top.name.clone(), top);
        }
        let spec = FeatureViewSpec {
            name: v.decl.name.clone(),
            project: project.clone(),
            entities: v.decl.entities.clone(),
            features: features(&v, None),
            tags: v.decl.tags.clone(),
            ttl: Some(Duration { seconds: i64::try_from(v.decl.ttl_seconds).unwrap_or(i64::MAX), nanos: 0 }),
            batch_source: Some(source),
            stream_source,
            online: v.decl.online,
            description: v.decl.description.clone(),
            owner: v.decl.owner.clone(),
            entity_columns: v
                .join_keys(defs)
                .into_iter()
                .map(|e| FeatureSpecV2 {
                    name: e.join_key.clone(),
                    value_type: e.value_type.feast_enum(),
                    ..Default::default()
                })
                .collect(),
            offline: false,
            ..Default::default()
        };
        out.feature_views.insert(v.decl.name.clone(), FeatureView { spec: Some(spec), meta: None });
    }
    for s in defs.all_feature_services() {
        let projections = s
            .items
            .iter()
            .filter_map(|item| {
                let v = defs.feature_view(&item.view)?;
                let source = data_source(&v, table(v.model));
                Some(FeatureViewProjection {
                    feature_view_name: v.decl.name.clone(),
                    feature_columns: features(&v, item.features.as_deref()),
                    timestamp_field: v.decl.event_timestamp.clone(),
                    created_timestamp_column: v.decl.created_timestamp.clone().unwrap_or_default(),
                    batch_source: Some(source),
                    view_type: "featureView".into(),
                    ..Default::default()
                })
            })
            .collect();
        let spec = FeatureServiceSpec {
            name: s.name.clone(),
            project: project.clone(),
            features: projections,
            tags: s.tags.clone(),
            description: s.description.clone(),
            owner: s.owner.clone(),
        };
        out.feature_services.insert(s.name.clone(), FeatureService { spec: Some(spec), meta: None });
    }
    out
}

fn features(v: &ViewDef<'_>, only: Option<&[String]>) -> Vec<FeatureSpecV2> {
    v.feature_columns()
        .into_iter()
        .filter(|c| only.is_none_or(|o| o.contains(&c.name)))
        .map(|c| FeatureSpecV2 {
            name: c.name.clone(),
            value_type: c.ty.feast_enum(),
            description: c.doc.clone(),
            ..Default::default()
        })
        .collect()
}

/// A Feast `PushSource` named `name` over the view's table, as `feast apply`
/// writes one: no options of its own; the timestamps and the table are the
/// batch source's.
fn push_source(name: &str, v: &ViewDef<'_>, batch: &DataSource) -> DataSource {
    DataSource {
        r#type: source_type::PUSH_SOURCE,
        timestamp_field: batch.timestamp_field.clone(),
        created_timestamp_column: batch.created_timestamp_column.clone(),
        data_source_class_type: PUSH_SOURCE_CLASS.into(),
        name: name.to_string(),
        description: format!("rows pushed to feature view {}", v.decl.name),
        owner: v.decl.owner.clone(),
        batch_source: Some(Box::new(batch.clone())),
        ..Default::default()
    }
}

fn data_source(v: &ViewDef<'_>, table: TableRef) -> DataSource {
    let m = v.model;
    let (r#type, class, options) = match table {
        TableRef::File(uri) => (
            source_type::BATCH_FILE,
            FILE_SOURCE_CLASS,
            data_source::Options::FileOptions(FileOptions {
                file_format: Some(FileFormat { parquet_format: Some(ParquetFormat {}) }),
                uri,
                s3_endpoint_override: String::new(),
            }),
        ),
        TableRef::BigQuery(table) => (
            source_type::BATCH_BIGQUERY,
            BIGQUERY_SOURCE_CLASS,
            data_source::Options::BigqueryOptions(BigQueryOptions { table, query: String::new() }),
        ),
    };
    DataSource {
        r#type,
        timestamp_field: v.decl.event_timestamp.clone(),
        created_timestamp_column: v.decl.created_timestamp.clone().unwrap_or_default(),
        options: Some(options),
        data_source_class_type: class.into(),
        name: m.name.clone(),
        description: m.description.clone(),
        tags: m.labels.clone(),
        owner: m.owner.clone(),
        ..Default::default()
    }
}
