//! Names of Feast's `ValueType.Enum` numbers, as Feast's JSON and CLI print them.

/// The name of a `ValueType.Enum` number (`INVALID` for 0; the number itself if unknown).
pub fn value_type_name(n: i32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (0, "INVALID"),
        (1, "BYTES"),
        (2, "STRING"),
        (3, "INT32"),
        (4, "INT64"),
        (5, "DOUBLE"),
        (6, "FLOAT"),
        (7, "BOOL"),
        (8, "UNIX_TIMESTAMP"),
        (11, "BYTES_LIST"),
        (12, "STRING_LIST"),
        (13, "INT32_LIST"),
        (14, "INT64_LIST"),
        (15, "DOUBLE_LIST"),
        (16, "FLOAT_LIST"),
        (17, "BOOL_LIST"),
        (18, "UNIX_TIMESTAMP_LIST"),
        (19, "NULL"),
        (20, "MAP"),
        (21, "MAP_LIST"),
        (22, "BYTES_SET"),
        (23, "STRING_SET"),
        (24, "INT32_SET"),
        (25, "INT64_SET"),
        (26, "DOUBLE_SET"),
        (27, "FLOAT_SET"),
        (28, "BOOL_SET"),
        (29, "UNIX_TIMESTAMP_SET"),
        (30, "PDF_BYTES"),
        (31, "IMAGE_BYTES"),
        (32, "JSON"),
        (33, "JSON_LIST"),
        (34, "STRUCT"),
        (35, "STRUCT_LIST"),
        (36, "UUID"),
        (37, "TIME_UUID"),
        (38, "UUID_LIST"),
        (39, "TIME_UUID_LIST"),
        (40, "UUID_SET"),
        (41, "TIME_UUID_SET"),
        (42, "VALUE_LIST"),
        (43, "VALUE_SET"),
        (44, "DECIMAL"),
        (45, "DECIMAL_LIST"),
        (46, "DECIMAL_SET"),
        (47, "SCALAR_MAP"),
        (48, "ZONED_TIMESTAMP"),
    ];
    NAMES.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()).unwrap_or_else(|| n.to_string())
}

/// The name of a `DataSource.SourceType` number.
pub fn source_type_name(n: i32) -> String {
    const NAMES: [&str; 14] = [
        "INVALID",
        "BATCH_FILE",
        "BATCH_BIGQUERY",
        "STREAM_KAFKA",
        "STREAM_KINESIS",
        "BATCH_REDSHIFT",
        "CUSTOM_SOURCE",
        "REQUEST_SOURCE",
        "BATCH_SNOWFLAKE",
        "PUSH_SOURCE",
        "BATCH_TRINO",
        "BATCH_SPARK",
        "BATCH_ATHENA",
        "BATCH_ICEBERG",
    ];
    usize::try_from(n).ok().and_then(|i| NAMES.get(i)).map(|s| s.to_string()).unwrap_or_else(|| n.to_string())
}

/// The name of a `FeatureViewState` number.
pub fn state_name(n: i32) -> String {
    const NAMES: [&str; 5] = ["STATE_UNSPECIFIED", "CREATED", "GENERATED", "MATERIALIZING", "AVAILABLE_ONLINE"];
    usize::try_from(n).ok().and_then(|i| NAMES.get(i)).map(|s| s.to_string()).unwrap_or_else(|| n.to_string())
}
