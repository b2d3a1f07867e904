//! Protobuf-JSON-like rendering of registry messages (what `registry-dump` and
//! `describe` print): camelCase keys, enum names, RFC 3339 timestamps, `"3600s"`
//! durations, and default values left out.

use serde::Serializer;

use crate::messages::{Duration, Timestamp};
use crate::value_type_names::{source_type_name, state_name, value_type_name};

pub(crate) fn opt_ts<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_timestamp(t)),
        None => s.serialize_none(),
    }
}

pub(crate) fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) if d.nanos == 0 => s.serialize_str(&format!("{}s", d.seconds)),
        Some(d) => s.serialize_str(&format!("{}.{:09}s", d.seconds, d.nanos)),
        None => s.serialize_none(),
    }
}

pub(crate) fn value_type<S: Serializer>(n: &i32, s: S) -> Result<S::Ok, S::Error> {
    if *n == 0 {
        return s.serialize_none();
    }
    s.serialize_str(&value_type_name(*n))
}

pub(crate) fn source_type<S: Serializer>(n: &i32, s: S) -> Result<S::Ok, S::Error> {
    if *n == 0 {
        return s.serialize_none();
    }
    s.serialize_str(&source_type_name(*n))
}

pub(crate) fn state<S: Serializer>(n: &i32, s: S) -> Result<S::Ok, S::Error> {
    if *n == 0 {
        return s.serialize_none();
    }
    s.serialize_str(&state_name(*n))
}

/// RFC 3339 in UTC, as protobuf JSON writes a Timestamp.
pub fn format_timestamp(t: &Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{}s", t.seconds))
}

/// Serializes `msg` and drops default values (`""`, `0`, `false`, `[]`, `{}`, null),
/// as protobuf JSON does.
pub fn to_json<T: serde::Serialize>(msg: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(msg).expect("registry messages serialize");
    prune_defaults(&mut v);
    v
}

/// Removes default-valued entries from objects, recursively. Empty messages such as
/// `parquetFormat: {}` are kept when they are a oneof's choice: callers rely on
/// presence there, so only nulls and scalar defaults are removed from leaves.
pub fn prune_defaults(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for child in map.values_mut() {
                prune_defaults(child);
            }
            map.retain(|k, child| match child {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty() || k.ends_with("Format"),
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune_defaults),
        _ => {}
    }
}
