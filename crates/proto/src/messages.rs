//! Feast 0.67's registry messages (`feast.core.*`), the fields amora reads and writes.
//!
//! Field numbers come from Feast's registry reference; fields amora does not model
//! are dropped when one of these is decoded, which is why untouched registry objects
//! are kept as raw bytes (see [`crate::file`]). Enums are open `i32`s, as prost
//! decodes them, so unknown values survive. `Serialize` gives protobuf-JSON-like
//! output (camelCase); [`crate::json::prune_defaults`] then drops default values.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::json as j;

type Map = BTreeMap<String, String>;

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Project {
    #[prost(message, optional, tag = "1")]
    pub spec: Option<ProjectSpec>,
    #[prost(message, optional, tag = "2")]
    pub meta: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct ProjectSpec {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub tags: Map,
    #[prost(string, tag = "4")]
    pub owner: String,
}

/// The `{created_timestamp = 1, last_updated_timestamp = 2}` meta shared by
/// Project, Entity, FeatureService.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[prost(message, optional, tag = "1")]
    #[serde(serialize_with = "j::opt_ts")]
    pub created_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    #[serde(serialize_with = "j::opt_ts")]
    pub last_updated_timestamp: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Entity {
    #[prost(message, optional, tag = "1")]
    pub spec: Option<EntitySpecV2>,
    #[prost(message, optional, tag = "2")]
    pub meta: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitySpecV2 {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    #[serde(serialize_with = "j::value_type")]
    pub value_type: i32,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub join_key: String,
    #[prost(btree_map = "string, string", tag = "8")]
    pub tags: Map,
    #[prost(string, tag = "9")]
    pub project: String,
    #[prost(string, tag = "10")]
    pub owner: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSpecV2 {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    #[serde(serialize_with = "j::value_type")]
    pub value_type: i32,
    #[prost(btree_map = "string, string", tag = "3")]
    pub tags: Map,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(bool, tag = "5")]
    pub vector_index: bool,
    #[prost(string, tag = "6")]
    pub vector_search_metric: String,
    #[prost(int32, tag = "7")]
    pub vector_length: i32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct FeatureView {
    #[prost(message, optional, tag = "1")]
    pub spec: Option<FeatureViewSpec>,
    #[prost(message, optional, tag = "2")]
    pub meta: Option<FeatureViewMeta>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureViewSpec {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub project: String,
    #[prost(string, repeated, tag = "3")]
    pub entities: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    pub features: Vec<FeatureSpecV2>,
    #[prost(btree_map = "string, string", tag = "5")]
    pub tags: Map,
    #[prost(message, optional, tag = "6")]
    #[serde(serialize_with = "j::opt_duration")]
    pub ttl: Option<Duration>,
    #[prost(message, optional, tag = "7")]
    pub batch_source: Option<DataSource>,
    #[prost(bool, tag = "8")]
    pub online: bool,
    #[prost(message, optional, tag = "9")]
    pub stream_source: Option<DataSource>,
    #[prost(string, tag = "10")]
    pub description: String,
    #[prost(string, tag = "11")]
    pub owner: String,
    #[prost(message, repeated, tag = "12")]
    pub entity_columns: Vec<FeatureSpecV2>,
    #[prost(bool, tag = "13")]
    pub offline: bool,
    #[prost(string, tag = "18")]
    pub version: String,
    #[prost(bool, tag = "20")]
    pub disabled: bool,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureViewMeta {
    #[prost(message, optional, tag = "1")]
    #[serde(serialize_with = "j::opt_ts")]
    pub created_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    #[serde(serialize_with = "j::opt_ts")]
    pub last_updated_timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "3")]
    pub materialization_intervals: Vec<MaterializationInterval>,
    #[prost(int32, tag = "4")]
    pub current_version_number: i32,
    #[prost(string, tag = "5")]
    pub version_id: String,
    #[prost(int32, tag = "6")]
    #[serde(serialize_with = "j::state")]
    pub state: i32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaterializationInterval {
    #[prost(message, optional, tag = "1")]
    #[serde(serialize_with = "j::opt_ts")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    #[serde(serialize_with = "j::opt_ts")]
    pub end_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureViewProjection {
    #[prost(string, tag = "1")]
    pub feature_view_name: String,
    #[prost(message, repeated, tag = "2")]
    pub feature_columns: Vec<FeatureSpecV2>,
    #[prost(string, tag = "3")]
    pub feature_view_name_alias: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub join_key_map: Map,
    #[prost(string, tag = "5")]
    pub timestamp_field: String,
    #[prost(string, tag = "6")]
    pub date_partition_column: String,
    #[prost(string, tag = "7")]
    pub created_timestamp_column: String,
    #[prost(message, optional, tag = "8")]
    pub batch_source: Option<DataSource>,
    #[prost(message, optional, tag = "9")]
    pub stream_source: Option<DataSource>,
    #[prost(int32, optional, tag = "10")]
    pub version_tag: Option<i32>,
    #[prost(string, tag = "11")]
    pub view_type: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct FeatureService {
    #[prost(message, optional, tag = "1")]
    pub spec: Option<FeatureServiceSpec>,
    #[prost(message, optional, tag = "2")]
    pub meta: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct FeatureServiceSpec {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub project: String,
    #[prost(message, repeated, tag = "3")]
    pub features: Vec<FeatureViewProjection>,
    #[prost(btree_map = "string, string", tag = "4")]
    pub tags: Map,
    #[prost(string, tag = "5")]
    pub description: String,
    #[prost(string, tag = "6")]
    pub owner: String,
}

/// `DataSource.SourceType` values amora writes.
pub mod source_type {
    pub const BATCH_FILE: i32 = 1;
    pub const BATCH_BIGQUERY: i32 = 2;
    pub const PUSH_SOURCE: i32 = 9;
}

/// The Python class Feast instantiates for a file source.
pub const FILE_SOURCE_CLASS: &str = "feast.infra.offline_stores.file_source.FileSource";
/// The Python class Feast instantiates for a BigQuery source.
pub const BIGQUERY_SOURCE_CLASS: &str = "feast.infra.offline_stores.bigquery_source.BigQuerySource";
/// The Python class Feast instantiates for a push source.
pub const PUSH_SOURCE_CLASS: &str = "feast.data_source.PushSource";

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    #[prost(int32, tag = "1")]
    #[serde(rename = "type", serialize_with = "j::source_type")]
    pub r#type: i32,
    #[prost(btree_map = "string, string", tag = "2")]
    pub field_mapping: Map,
    #[prost(string, tag = "3")]
    pub timestamp_field: String,
    #[prost(string, tag = "4")]
    pub date_partition_column: String,
    #[prost(string, tag = "5")]
    pub created_timestamp_column: String,
    #[prost(oneof = "data_source::Options", tags = "11, 12, 22")]
    #[serde(flatten)]
    pub options: Option<data_source::Options>,
    #[prost(string, tag = "17")]
    pub data_source_class_type: String,
    #[prost(string, tag = "20")]
    pub name: String,
    #[prost(string, tag = "21")]
    pub project: String,
    #[prost(string, tag = "23")]
    pub description: String,
    #[prost(btree_map = "string, string", tag = "24")]
    pub tags: Map,
    #[prost(string, tag = "25")]
    pub owner: String,
    #[prost(message, optional, boxed, tag = "26")]
    pub batch_source: Option<Box<DataSource>>,
    #[prost(string, tag = "28")]
    pub timestamp_field_type: String,
    #[prost(message, optional, tag = "50")]
    pub meta: Option<SourceMeta>,
}

pub mod data_source {
    use serde::Serialize;

    #[derive(Clone, PartialEq, prost::Oneof, Serialize)]
    #[serde(rename_all = "camelCase")]
    pub enum Options {
        #[prost(message, tag = "11")]
        FileOptions(super::FileOptions),
        #[prost(message, tag = "12")]
        BigqueryOptions(super::BigQueryOptions),
        /// A push source: no options of its own, its table is `batch_source`.
        #[prost(message, tag = "22")]
        PushOptions(super::PushOptions),
    }
}

#[derive(Clone, Copy, PartialEq, prost::Message, Serialize)]
pub struct PushOptions {}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileOptions {
    #[prost(message, optional, tag = "1")]
    pub file_format: Option<FileFormat>,
    #[prost(string, tag = "2")]
    pub uri: String,
    #[prost(string, tag = "3")]
    pub s3_endpoint_override: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileFormat {
    #[prost(message, optional, tag = "1")]
    pub parquet_format: Option<ParquetFormat>,
}

#[derive(Clone, Copy, PartialEq, prost::Message, Serialize)]
pub struct ParquetFormat {}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct BigQueryOptions {
    #[prost(string, tag = "1")]
    pub table: String,
    #[prost(string, tag = "2")]
    pub query: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct SourceMeta {
    #[prost(message, optional, tag = "1")]
    #[serde(rename = "earliestEventTimestamp", serialize_with = "j::opt_ts")]
    pub earliest_event_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    #[serde(rename = "latestEventTimestamp", serialize_with = "j::opt_ts")]
    pub latest_event_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    #[serde(rename = "createdTimestamp", serialize_with = "j::opt_ts")]
    pub created_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "4")]
    #[serde(rename = "lastUpdatedTimestamp", serialize_with = "j::opt_ts")]
    pub last_updated_timestamp: Option<Timestamp>,
}

/// The parts of Feast's on-demand, stream and label views that amora lists.
/// (amora does not create them; other fields stay in the raw bytes.)
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct OtherView {
    #[prost(message, optional, tag = "1")]
    pub spec: Option<OtherViewSpec>,
}

/// The fields at the same numbers in `OnDemandFeatureViewSpec` (1 name, 2 project,
/// 3 features) that amora reads; the rest is kept raw.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct OtherViewSpec {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub project: String,
}

/// The name and project of any top-level registry object, for indexing raw fields
/// without decoding them whole: `spec.name`/`spec.project` (fields 1.1 and 1.2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedObject {
    #[prost(message, optional, tag = "1")]
    pub spec: Option<OtherViewSpec>,
}

/// The `name` (20) and `project` (21) of a top-level DataSource.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSource {
    #[prost(string, tag = "20")]
    pub name: String,
    #[prost(string, tag = "21")]
    pub project: String,
}
