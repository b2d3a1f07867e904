//! `feast.serving.ServingService` messages (package `feast.serving`), written from
//! the field numbers in Feast's `ServingService.proto`, for the gRPC feature server.

use std::collections::BTreeMap;

use crate::messages::Timestamp;
use crate::online::Value;

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetFeastServingInfoRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetFeastServingInfoResponse {
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `feast.serving.FeatureList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureList {
    #[prost(string, repeated, tag = "1")]
    pub val: Vec<String>,
}

/// `feast.types.RepeatedValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedValue {
    #[prost(message, repeated, tag = "1")]
    pub val: Vec<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(string, tag = "1")]
    FeatureService(String),
    #[prost(message, tag = "2")]
    Features(FeatureList),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOnlineFeaturesRequest {
    #[prost(oneof = "Kind", tags = "1, 2")]
    pub kind: Option<Kind>,
    #[prost(btree_map = "string, message", tag = "3")]
    pub entities: BTreeMap<String, RepeatedValue>,
    #[prost(bool, tag = "4")]
    pub full_feature_names: bool,
    #[prost(btree_map = "string, message", tag = "5")]
    pub request_context: BTreeMap<String, RepeatedValue>,
    #[prost(bool, tag = "6")]
    pub include_feature_view_version_metadata: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureViewMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub version: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOnlineFeaturesResponseMetadata {
    #[prost(message, optional, tag = "1")]
    pub feature_names: Option<FeatureList>,
    #[prost(message, repeated, tag = "2")]
    pub feature_view_metadata: Vec<FeatureViewMetadata>,
}

/// `FieldStatus`: INVALID 0, PRESENT 1, NULL_VALUE 2, NOT_FOUND 3, OUTSIDE_MAX_AGE 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureVector {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
    #[prost(int32, repeated, tag = "2")]
    pub statuses: Vec<i32>,
    #[prost(message, repeated, tag = "3")]
    pub event_timestamps: Vec<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOnlineFeaturesResponse {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<GetOnlineFeaturesResponseMetadata>,
    #[prost(message, repeated, tag = "2")]
    pub results: Vec<FeatureVector>,
    #[prost(bool, tag = "3")]
    pub status: bool,
}
