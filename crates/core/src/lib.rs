//! The facade every front end (CLI, server, Python) calls. It resolves feature
//! references against the registry and dispatches to the configured stores.
//!
//! Today: [`get_historical_features`] on the embedded offline engine.

pub mod catalog;
pub mod latest;
pub mod online;
pub mod online_json;

use std::path::Path;

use amora_offline::arrow::datatypes::DataType;
use amora_offline::arrow::record_batch::RecordBatch;
use amora_offline::historical::ViewSpec;
use amora_offline::OfflineStore;
use amora_proto::value_type_names::value_type_name;
use amora_proto::{data_source, FeatureView, RegistryFile};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The caller's mistake: unknown names, wrong columns or types.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Offline(#[from] amora_offline::OfflineError),
    #[error(transparent)]
    Proto(#[from] amora_proto::ProtoError),
    #[error(transparent)]
    Online(amora_online::OnlineError),
    /// A named object that does not exist; `class` is Feast's exception for it.
    #[error("{message}")]
    NotFound { class: &'static str, message: String },
    #[error(transparent)]
    Registry(#[from] amora_registry::RegistryError),
}

/// Which features to fetch: `view:feature` references, or a feature service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureSelection {
    Refs(Vec<String>),
    Service(String),
}

/// A view to join, and its join keys with their Feast value types.
pub type ResolvedView = (ViewSpec, Vec<(String, i32)>);

/// A selection as `(view, feature)` pairs, in order: references split at `:`, or
/// a feature service's projections. An unknown service is `NotFound`.
pub fn selection_refs(
    file: &RegistryFile,
    project: &str,
    selection: &FeatureSelection,
) -> Result<Vec<(String, String)>, CoreError> {
    match selection {
        FeatureSelection::Refs(refs) => refs
            .iter()
            .map(|r| {
                r.split_once(':')
                    .map(|(v, f)| (v.to_string(), f.to_string()))
                    .ok_or_else(|| CoreError::Invalid(format!("feature reference `{r}` is not `view:feature`")))
            })
            .collect(),
        FeatureSelection::Service(name) => {
            let objects = amora_registry::current_objects(file, project)?;
            let s = objects.feature_services.get(name).and_then(|s| s.spec.as_ref()).ok_or_else(|| {
                CoreError::NotFound {
                    class: "FeatureServiceNotFoundException",
                    message: format!(
                        "project {project} has no feature service `{name}`; see `amora feature-store list feature-services`"
                    ),
                }
            })?;
            Ok(s.features
                .iter()
                .flat_map(|p| p.feature_columns.iter().map(|c| (p.feature_view_name.clone(), c.name.clone())))
                .collect())
        }
    }
}

/// Resolves a selection into per-view join specs, in order of first mention.
pub fn resolve_views(
    file: &RegistryFile,
    project: &str,
    selection: &FeatureSelection,
    root: &Path,
) -> Result<Vec<ResolvedView>, CoreError> {
    let objects = amora_registry::current_objects(file, project)?;
    let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
    for (view, feature) in selection_refs(file, project, selection)? {
        match wanted.iter_mut().find(|(v, _)| *v == view) {
            Some((_, fs)) if !fs.contains(&feature) => fs.push(feature),
            Some(_) => {}
            None => wanted.push((view, vec![feature])),
        }
    }
    if wanted.is_empty() {
        return Err(CoreError::Invalid("no features requested".into()));
    }
    let mut out = Vec::new();
    for (view, features) in wanted {
        let spec = objects.feature_views.get(&view).and_then(|v: &FeatureView| v.spec.as_ref()).ok_or_else(|| {
            CoreError::Invalid(format!(
                "project {project} has no feature view `{view}`; see `amora feature-store list feature-views`"
            ))
        })?;
        for f in &features {
            if !spec.features.iter().any(|x| x.name == *f) {
                return Err(CoreError::Invalid(format!(
                    "feature view `{view}` has no feature `{f}`; it has: {}",
                    spec.features.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let source = spec
            .batch_source
            .as_ref()
            .ok_or_else(|| CoreError::Invalid(format!("feature view `{view}` has no batch source")))?;
        let location = match source_location(source, root) {
            Some(l) => l,
            None => {
                return Err(CoreError::Invalid(format!(
                    "feature view `{view}`: its batch source is neither a file nor a BigQuery table"
                )))
            }
        };
        let keys: Vec<(String, i32)> = spec.entity_columns.iter().map(|c| (c.name.clone(), c.value_type)).collect();
        let ttl = spec.ttl.map_or(0, |d| u64::try_from(d.seconds).unwrap_or(0));
        let feature_types = features
            .iter()
            .filter_map(|f| spec.features.iter().find(|x| x.name == *f))
            .filter_map(|x| amora_model::ValueType::from_feast_enum(x.value_type))
            .collect::<Vec<_>>();
        let feature_types = if feature_types.len() == features.len() { feature_types } else { vec![] };
        out.push((
            ViewSpec {
                name: view.clone(),
                join_keys: keys.iter().map(|k| k.0.clone()).collect(),
                event_timestamp: source.timestamp_field.clone(),
                created_timestamp: Some(source.created_timestamp_column.clone()).filter(|c| !c.is_empty()),
                ttl_seconds: ttl,
                features,
                feature_types,
                location,
            },
            keys,
        ));
    }
    Ok(out)
}

/// Where a file source's data is: its URI, resolved against the project root when
/// relative (Feast writes paths relative to its repo). None for other sources.
/// Where a batch source's data is: a file path (relative ones resolved against
/// `root`), or a BigQuery table `project.dataset.table`.
pub fn source_location(source: &amora_proto::DataSource, root: &Path) -> Option<String> {
    if let Some(data_source::Options::BigqueryOptions(b)) = &source.options {
        return Some(b.table.clone()).filter(|t| !t.is_empty());
    }
    file_location(source, root)
}

pub fn file_location(source: &amora_proto::DataSource, root: &Path) -> Option<String> {
    let Some(data_source::Options::FileOptions(f)) = &source.options else { return None };
    let uri = f.uri.strip_prefix("file://").unwrap_or(&f.uri);
    Some(if Path::new(uri).is_absolute() || uri.contains("://") {
        uri.to_string()
    } else {
        root.join(uri).display().to_string()
    })
}

/// The timestamp column of an entity frame: `event_timestamp`, or its only timestamp column.
pub fn entity_timestamp_column(entities: &RecordBatch) -> Result<String, CoreError> {
    let schema = entities.schema();
    if schema.index_of("event_timestamp").is_ok() {
        return Ok("event_timestamp".into());
    }
    let ts: Vec<&String> = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
        .map(|f| f.name())
        .collect();
    match ts.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(CoreError::Invalid(format!(
            "the entity rows need an `event_timestamp` column (or exactly one timestamp column); found {}",
            if ts.is_empty() {
                "none".to_string()
            } else {
                ts.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        ))),
    }
}

fn type_fits(value_type: i32, t: &DataType) -> bool {
    match value_type {
        3 | 4 => t.is_integer(),
        2 => matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
        1 => matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView),
        _ => true,
    }
}

/// Point-in-time correct training data: every entity row, in order, with the
/// requested features as of its timestamp. Checks the entity columns (presence and
/// type) before any work.
pub async fn get_historical_features(
    store: &dyn OfflineStore,
    file: &RegistryFile,
    project: &str,
    root: &Path,
    entities: &RecordBatch,
    selection: &FeatureSelection,
    full_feature_names: bool,
) -> Result<amora_offline::frames::TrainingSet, CoreError> {
    let resolved = resolve_views(file, project, selection, root)?;
    let ts = entity_timestamp_column(entities)?;
    let schema = entities.schema();
    for (view, keys) in &resolved {
        for (k, vt) in keys {
            let field = schema.field_with_name(k).map_err(|_| {
                CoreError::Invalid(format!(
                    "the entity rows have no `{k}` column, the join key of feature view `{}`",
                    view.name
                ))
            })?;
            if !type_fits(*vt, field.data_type()) {
                return Err(CoreError::Invalid(format!(
                    "entity column `{k}` has type {} but the join key of feature view `{}` is {}",
                    field.data_type(),
                    view.name,
                    value_type_name(*vt)
                )));
            }
        }
    }
    let views: Vec<ViewSpec> = resolved.into_iter().map(|(v, _)| v).collect();
    amora_offline::historical::output_names(&schema, &views, full_feature_names)?;
    Ok(store.historical(entities, &ts, &views, full_feature_names).await?)
}
