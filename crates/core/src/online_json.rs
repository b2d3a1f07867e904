//! Feast's JSON shapes for online reads and writes (the feature server's
//! `/get-online-features` and `/write-to-online-store`), as pure functions:
//! columnar entities in, columnar results out, typed by the registry.

use amora_online::WriteRow;
use amora_proto::online::{serialize_entity_key, value::Val, KeyValue, Value};
use serde_json::{json, Value as Json};

use crate::online::{value_json, OnlineRequest, OnlineValue, OnlineView, Status};
use crate::CoreError;

/// Columns in the order the request wrote them (a JSON object keeps no order once
/// parsed into a map; Feast answers entity columns in request order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns(pub Vec<(String, Vec<Json>)>);

impl<'de> serde::Deserialize<'de> for Columns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Columns, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of column name -> list of values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Columns, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Vec<Json>>()? {
                    out.push((k, v));
                }
                Ok(Columns(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Columns {
    /// The common length of every column; unequal lengths are the caller's mistake.
    pub fn rows(&self) -> Result<usize, CoreError> {
        let Some((first, col)) = self.0.first() else { return Ok(0) };
        for (name, c) in &self.0 {
            if c.len() != col.len() {
                return Err(CoreError::Invalid(format!(
                    "every column must have the same number of values: `{first}` has {}, `{name}` has {}",
                    col.len(),
                    c.len()
                )));
            }
        }
        Ok(col.len())
    }

    fn get(&self, name: &str) -> Option<&[Json]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

fn bad(column: &str, what: &str, v: &Json) -> CoreError {
    CoreError::Invalid(format!("column `{column}` holds {what} values; got {v}"))
}

/// A join-key value typed by the registry (a JSON number for an Int64 key is an int64).
fn key_value(column: &str, value_type: i32, v: &Json) -> Result<KeyValue, CoreError> {
    Ok(match value_type {
        4 => KeyValue::Int64(v.as_i64().ok_or_else(|| bad(column, "Int64", v))?),
        3 => KeyValue::Int32(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(|| bad(column, "Int32", v))?),
        1 => KeyValue::Bytes(v.as_str().ok_or_else(|| bad(column, "Bytes (string)", v))?.as_bytes().to_vec()),
        8 => KeyValue::UnixTimestamp(v.as_i64().ok_or_else(|| bad(column, "UnixTimestamp (seconds)", v))?),
        _ => KeyValue::String(v.as_str().ok_or_else(|| bad(column, "String", v))?.to_string()),
    })
}

/// Serialized entity keys for columnar `entities`: every join key of the request
/// must be there; a column that is no join key is an error naming the keys.
pub fn entity_keys(join_keys: &[(String, i32)], entities: &Columns, version: u32) -> Result<Vec<Vec<u8>>, CoreError> {
    let n = entities.rows()?;
    for (name, _) in &entities.0 {
        if !join_keys.iter().any(|(k, _)| k == name) {
            return Err(CoreError::Invalid(format!(
                "entity column `{name}` is not a join key of the requested feature views; their join keys are: {}",
                join_keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let cols: Vec<(&str, i32, &[Json])> = join_keys
        .iter()
        .map(|(k, t)| {
            entities
                .get(k)
                .map(|c| (k.as_str(), *t, c))
                .ok_or_else(|| CoreError::Invalid(format!("missing entity column `{k}` (a join key)")))
        })
        .collect::<Result<_, _>>()?;
    let mut keys = Vec::with_capacity(n);
    let mut pairs = Vec::with_capacity(cols.len());
    for i in 0..n {
        pairs.clear();
        for (k, t, c) in &cols {
            pairs.push((*k, key_value(k, *t, &c[i])?));
        }
        keys.push(serialize_entity_key(&pairs, version));
    }
    Ok(keys)
}

/// RFC 3339, UTC, `Z`, with as many fraction digits as needed (Feast's format).
pub fn format_ts(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// [`format_ts`] written straight into `out`, in a few nanoseconds: the server
/// writes two per entity. Years outside 1..=9999 go through chrono.
fn write_ts(out: &mut Vec<u8>, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = amora_model::calendar::civil_from_days(days);
    if !(1..=9999).contains(&year) {
        out.extend_from_slice(format_ts(micros).as_bytes());
        return;
    }
    fn digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
        let mut b = [0u8; 6];
        for i in (0..width).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&b[..width]);
    }
    digits(out, year as u32, 4);
    for (sep, v) in [(b'-', month), (b'-', day), (b'T', sod / 3600), (b':', sod / 60 % 60), (b':', sod % 60)] {
        out.extend_from_slice(&[sep, b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    }
    if frac != 0 {
        out.push(b'.');
        let (value, width) = if frac.is_multiple_of(1000) { (frac / 1000, 3) } else { (frac, 6) };
        digits(out, value, width);
    }
    out.push(b'Z');
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Feast's `/get-online-features` response: entity columns first (request order),
/// then one column per feature, each with values, statuses and event timestamps.
pub fn response(request: &OnlineRequest, entities: &Columns, rows: &[Vec<OnlineValue>]) -> Json {
    let mut names: Vec<&str> = Vec::new();
    let mut results: Vec<Json> = Vec::new();
    for (name, values) in &entities.0 {
        names.push(name);
        results.push(json!({
            "values": values,
            "statuses": vec!["PRESENT"; values.len()],
            "event_timestamps": vec![EPOCH; values.len()],
        }));
    }
    for (i, name) in request.names.iter().enumerate() {
        names.push(name);
        results.push(json!({
            "values": rows.iter().map(|r| value_json(&r[i].value)).collect::<Vec<_>>(),
            "statuses": rows.iter().map(|r| r[i].status).collect::<Vec<_>>(),
            "event_timestamps": rows.iter().map(|r| r[i].event_ts.map_or_else(|| EPOCH.to_string(), format_ts)).collect::<Vec<_>>(),
        }));
    }
    json!({"metadata": {"feature_names": names}, "results": results})
}

/// A value as the response writes it, borrowed (a float is widened to double).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
}

pub(crate) fn scalar_of(v: &Option<Value>) -> Scalar<'_> {
    match v.as_ref().and_then(|v| v.val.as_ref()) {
        None | Some(Val::NullVal(_)) => Scalar::Null,
        Some(Val::StringVal(s)) => Scalar::Str(s),
        Some(Val::Int64Val(i)) | Some(Val::UnixTimestampVal(i)) => Scalar::Int(*i),
        Some(Val::Int32Val(i)) => Scalar::Int(i64::from(*i)),
        Some(Val::DoubleVal(f)) => Scalar::Double(*f),
        Some(Val::FloatVal(f)) => Scalar::Double(f64::from(*f)),
        Some(Val::BoolVal(b)) => Scalar::Bool(*b),
        Some(Val::BytesVal(b)) => Scalar::Bytes(b),
    }
}

/// A serialized `feast.types.Value` read in place, as prost reads it into
/// [`Value`] (the last of the oneof's fields wins, unknown fields are skipped):
/// `None` when it does not parse, `Some(None)` when no value is set.
fn decode_scalar(mut b: &[u8]) -> Option<Option<Scalar<'_>>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    let mut val = None;
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        let (field, wire) = (tag >> 3, tag & 7);
        val = match (field, wire) {
            (1, 2) | (2, 2) => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let bytes = take(&mut b, n)?;
                Some(if field == 1 { Scalar::Bytes(bytes) } else { Scalar::Str(std::str::from_utf8(bytes).ok()?) })
            }
            (3, 0) => Some(Scalar::Int(i64::from(varint(&mut b)? as i32))),
            (4, 0) | (8, 0) => Some(Scalar::Int(varint(&mut b)? as i64)),
            (5, 1) => Some(Scalar::Double(f64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?))),
            (6, 5) => Some(Scalar::Double(f64::from(f32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?)))),
            (7, 0) => Some(Scalar::Bool(varint(&mut b)? != 0)),
            (19, 0) => {
                varint(&mut b)?;
                Some(Scalar::Null)
            }
            // A known field with another wire type is an error to prost.
            (1..=8 | 19, _) => return None,
            // Unknown fields (lists, among them) are skipped.
            (_, 0) => {
                varint(&mut b)?;
                val
            }
            (_, 1) => {
                take(&mut b, 8)?;
                val
            }
            (_, 2) => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                take(&mut b, n)?;
                val
            }
            (_, 5) => {
                take(&mut b, 4)?;
                val
            }
            _ => return None,
        };
    }
    Some(val)
}

/// What the response writer reads: per entity row and requested feature a
/// value, its status and its event timestamp.
trait Rows {
    fn len(&self) -> usize;
    fn get(&self, row: usize, feature: usize) -> (Scalar<'_>, Status, Option<i64>);
}

impl Rows for [Vec<OnlineValue>] {
    fn len(&self) -> usize {
        <[Vec<OnlineValue>]>::len(self)
    }
    fn get(&self, row: usize, feature: usize) -> (Scalar<'_>, Status, Option<i64>) {
        let v = &self[row][feature];
        (scalar_of(&v.value), v.status, v.event_ts)
    }
}

/// A store's cells read in place, with statuses as [`crate::online::read_keys`] gives them.
struct CellRows<'a> {
    cells: &'a amora_online::Cells,
    /// Per feature: its view and that view's TTL (seconds, 0 = none).
    views: Vec<(usize, u64)>,
    now_micros: i64,
}

impl Rows for CellRows<'_> {
    fn len(&self) -> usize {
        self.cells.entities()
    }
    fn get(&self, row: usize, feature: usize) -> (Scalar<'_>, Status, Option<i64>) {
        let (view, ttl) = self.views[feature];
        let ts = self.cells.stamp(row, view);
        match self.cells.value(row, feature).and_then(decode_scalar) {
            None => (Scalar::Null, Status::NotFound, ts),
            Some(None) => (Scalar::Null, Status::NullValue, ts),
            Some(Some(v)) => {
                let old = matches!(ts, Some(t) if ttl > 0 && t < self.now_micros - ttl as i64 * 1_000_000);
                (v, if old { Status::OutsideMaxAge } else { Status::Present }, ts)
            }
        }
    }
}

/// [`response`], serialized straight into bytes (no JSON tree, no string per
/// value or timestamp).
pub fn response_bytes(request: &OnlineRequest, entities: &Columns, rows: &[Vec<OnlineValue>]) -> Vec<u8> {
    write_response(request, entities, rows)
}

/// [`response_bytes`] for a store's cells as [`crate::online::read_cells_async`]
/// returns them, each value read in place: the server's hot path.
pub fn response_from_cells(
    request: &OnlineRequest,
    entities: &Columns,
    cells: &amora_online::Cells,
    now_micros: i64,
) -> Vec<u8> {
    let views = cells
        .shape()
        .iter()
        .zip(request.ttls())
        .enumerate()
        .flat_map(|(v, (n, ttl))| std::iter::repeat_n((v, *ttl), *n))
        .collect();
    write_response(request, entities, &CellRows { cells, views, now_micros })
}

fn write_response<R: Rows + ?Sized>(request: &OnlineRequest, entities: &Columns, rows: &R) -> Vec<u8> {
    let n = rows.len();
    let mut out: Vec<u8> = Vec::with_capacity(256 + n * request.names.len() * 64);
    out.extend_from_slice(b"{\"metadata\":{\"feature_names\":[");
    let names = entities.0.iter().map(|(n, _)| n).chain(&request.names);
    for (i, name) in names.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, name);
    }
    out.extend_from_slice(b"]},\"results\":[");
    let list = |out: &mut Vec<u8>, item: &str| {
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item.as_bytes());
        }
    };
    let mut first = true;
    for (_, values) in &entities.0 {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"values\":");
        let _ = serde_json::to_writer(&mut out, values);
        out.extend_from_slice(b",\"statuses\":[");
        list(&mut out, "\"PRESENT\"");
        out.extend_from_slice(b"],\"event_timestamps\":[");
        list(&mut out, "\"1970-01-01T00:00:00Z\"");
        out.extend_from_slice(b"]}");
    }
    // Each row's event timestamps (one per view), written once and copied after:
    // `(micros, length, text)`, length 0 for a free slot.
    const MEMO: usize = 4;
    let mut memo: Vec<(i64, u8, [u8; 32])> = vec![(0, 0, [0; 32]); n * MEMO];
    // The current feature's statuses and timestamps, from its values' pass.
    let mut column: Vec<(Status, Option<i64>)> = vec![(Status::NotFound, None); n];
    for f in 0..request.names.len() {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"values\":[");
        for (i, cell) in column.iter_mut().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let (value, status, ts) = rows.get(i, f);
            write_value(&mut out, value);
            *cell = (status, ts);
        }
        out.extend_from_slice(b"],\"statuses\":[");
        for (i, (status, _)) in column.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let s = match status {
                Status::Present => "\"PRESENT\"",
                Status::NotFound => "\"NOT_FOUND\"",
                Status::NullValue => "\"NULL_VALUE\"",
                Status::OutsideMaxAge => "\"OUTSIDE_MAX_AGE\"",
            };
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(b"],\"event_timestamps\":[");
        for (i, (_, stamp)) in column.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match *stamp {
                None => out.extend_from_slice(b"\"1970-01-01T00:00:00Z\""),
                Some(ts) => {
                    out.push(b'"');
                    let slots = &mut memo[i * MEMO..(i + 1) * MEMO];
                    match slots.iter().find(|s| s.1 > 0 && s.0 == ts) {
                        Some(s) => out.extend_from_slice(&s.2[..s.1 as usize]),
                        None => {
                            let at = out.len();
                            write_ts(&mut out, ts);
                            let text = &out[at..];
                            if let Some(free) = slots.iter_mut().find(|s| s.1 == 0).filter(|_| text.len() <= 32) {
                                free.0 = ts;
                                free.1 = text.len() as u8;
                                free.2[..text.len()].copy_from_slice(text);
                            }
                        }
                    }
                    out.push(b'"');
                }
            }
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    out
}

/// A decimal integer, without `fmt`.
fn write_int(out: &mut Vec<u8>, i: i64) {
    let mut b = [0u8; 20];
    let mut at = b.len();
    let mut n = i.unsigned_abs();
    loop {
        at -= 1;
        b[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&b[at..]);
}

/// One value as [`value_json`] renders it, written directly.
fn write_value(out: &mut Vec<u8>, v: Scalar<'_>) {
    match v {
        Scalar::Null => out.extend_from_slice(b"null"),
        Scalar::Str(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        Scalar::Int(i) => write_int(out, i),
        Scalar::Double(f) if f.is_nan() => out.extend_from_slice(b"\"NaN\""),
        Scalar::Double(f) if f.is_infinite() => {
            out.extend_from_slice(if f > 0.0 { b"\"Infinity\"" } else { b"\"-Infinity\"" })
        }
        Scalar::Double(f) => {
            let _ = serde_json::to_writer(&mut *out, &f);
        }
        Scalar::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Scalar::Bytes(b) => {
            out.push(b'"');
            out.extend_from_slice(crate::online::base64(b).as_bytes());
            out.push(b'"');
        }
    }
}

/// A timestamp as JSON carries it: RFC 3339, a naive ISO time taken as UTC, or a
/// number of seconds since the epoch.
pub fn parse_ts(v: &Json) -> Option<i64> {
    if let Some(f) = v.as_f64() {
        return Some((f * 1e6).round() as i64);
    }
    let s = v.as_str()?.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_micros());
        }
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    None
}

/// A feature value typed by the registry; null is Feast's null (an unset Value).
fn feature_value(column: &str, value_type: i32, v: &Json) -> Result<Value, CoreError> {
    if v.is_null() {
        return Ok(Value { val: None });
    }
    let val = match value_type {
        1 => Val::BytesVal(v.as_str().ok_or_else(|| bad(column, "Bytes", v))?.as_bytes().to_vec()),
        2 => Val::StringVal(match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }),
        3 => Val::Int32Val(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(|| bad(column, "Int32", v))?),
        4 => Val::Int64Val(v.as_i64().ok_or_else(|| bad(column, "Int64", v))?),
        5 => Val::DoubleVal(number(v).ok_or_else(|| bad(column, "Double", v))?),
        6 => Val::FloatVal(number(v).ok_or_else(|| bad(column, "Float", v))? as f32),
        7 => Val::BoolVal(v.as_bool().ok_or_else(|| bad(column, "Bool", v))?),
        8 => Val::UnixTimestampVal(parse_ts(v).ok_or_else(|| bad(column, "UnixTimestamp", v))?.div_euclid(1_000_000)),
        other => {
            return Err(CoreError::Invalid(format!(
                "feature `{column}` has type {}, which amora cannot write online yet",
                amora_proto::value_type_names::value_type_name(other)
            )))
        }
    };
    Ok(Value { val: Some(val) })
}

fn number(v: &Json) -> Option<f64> {
    match v {
        Json::String(s) if s == "NaN" => Some(f64::NAN),
        Json::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Json::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        other => other.as_f64(),
    }
}

/// Online rows for `view` from a columnar frame (`/write-to-online-store`, `/push`):
/// every join key, the event timestamp column and every feature must be there.
pub fn write_rows(view: &OnlineView, df: &Columns, version: u32) -> Result<Vec<WriteRow>, CoreError> {
    let n = df.rows()?;
    let ts_name = timestamp_column(view, df);
    require_columns(view, df, ts_name)?;
    let keys = entity_keys(
        &view.join_keys,
        &Columns(view.join_keys.iter().map(|(k, _)| (k.clone(), df.get(k).unwrap_or_default().to_vec())).collect()),
        version,
    )?;
    let ts_col = df.get(ts_name).unwrap_or_default();
    let features: Vec<(&str, i32, &[Json])> =
        view.features.iter().map(|(f, t)| (f.as_str(), *t, df.get(f).unwrap_or_default())).collect();
    let mut rows = Vec::with_capacity(n);
    for (i, entity_key) in keys.into_iter().enumerate() {
        let event_ts = parse_ts(&ts_col[i]).ok_or_else(|| bad(ts_name, "timestamp", &ts_col[i]))?;
        let values = features
            .iter()
            .map(|(f, t, c)| feature_value(f, *t, &c[i]).map(|v| prost::Message::encode_to_vec(&v)))
            .collect::<Result<Vec<Vec<u8>>, _>>()?;
        rows.push(WriteRow { entity_key, event_ts, values: values.into() });
    }
    Ok(rows)
}

/// The event timestamp column of a pushed frame: the view's, or `event_timestamp`
/// (Feast's remote online store always names it so).
fn timestamp_column<'a>(view: &'a OnlineView, df: &Columns) -> &'a str {
    if df.get(&view.event_timestamp).is_none() && df.get("event_timestamp").is_some() {
        "event_timestamp"
    } else {
        view.event_timestamp.as_str()
    }
}

/// Every join key, the event timestamp column `ts_name` and every feature of `view`
/// must be in the frame; an error names the missing ones.
fn require_columns(view: &OnlineView, df: &Columns, ts_name: &str) -> Result<(), CoreError> {
    let mut needed: Vec<&str> = view.join_keys.iter().map(|k| k.0.as_str()).collect();
    needed.push(ts_name);
    needed.extend(view.features.iter().map(|f| f.0.as_str()));
    let missing: Vec<&str> = needed.iter().copied().filter(|c| df.get(c).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CoreError::Invalid(format!(
        "feature view `{}` needs the columns {}; missing: {}",
        view.name,
        needed.join(", "),
        missing.join(", ")
    )))
}

/// Rows for `view`'s offline table from a columnar frame (`/push` with `to:
/// offline`): its join keys, event timestamp (and created timestamp, when the
/// frame has it) and features, typed by the registry, timestamps in UTC
/// microseconds. The offline store casts them to the table's types.
pub fn offline_rows(view: &OnlineView, df: &Columns) -> Result<amora_offline::arrow::array::RecordBatch, CoreError> {
    use amora_offline::arrow::array::{
        Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
        StringArray, TimestampMicrosecondArray,
    };
    use amora_offline::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;
    df.rows()?;
    let ts_name = timestamp_column(view, df);
    let timestamps = |name: &str, out: &str| -> Result<(Field, ArrayRef), CoreError> {
        let col = df.get(name).unwrap_or_default();
        let v = col
            .iter()
            .map(
                |j| if j.is_null() { Ok(None) } else { parse_ts(j).map(Some).ok_or_else(|| bad(name, "timestamp", j)) },
            )
            .collect::<Result<Vec<Option<i64>>, _>>()?;
        let a = TimestampMicrosecondArray::from(v).with_timezone("UTC");
        Ok((Field::new(out, a.data_type().clone(), true), Arc::new(a)))
    };
    let typed = |name: &str, value_type: i32| -> Result<(Field, ArrayRef), CoreError> {
        let vals = df
            .get(name)
            .unwrap_or_default()
            .iter()
            .map(|j| feature_value(name, value_type, j).map(|v| v.val))
            .collect::<Result<Vec<Option<Val>>, _>>()?;
        macro_rules! col {
            ($arr:ty, $variant:ident) => {
                Arc::new(
                    vals.into_iter()
                        .map(|v| match v {
                            Some(Val::$variant(x)) => Some(x),
                            _ => None,
                        })
                        .collect::<$arr>(),
                ) as ArrayRef
            };
        }
        let a: ArrayRef = match value_type {
            1 => col!(BinaryArray, BytesVal),
            2 => col!(StringArray, StringVal),
            3 => col!(Int32Array, Int32Val),
            4 => col!(Int64Array, Int64Val),
            5 => col!(Float64Array, DoubleVal),
            6 => col!(Float32Array, FloatVal),
            7 => col!(BooleanArray, BoolVal),
            8 => {
                let micros: Vec<Option<i64>> = vals
                    .into_iter()
                    .map(|v| match v {
                        Some(Val::UnixTimestampVal(s)) => Some(s * 1_000_000),
                        _ => None,
                    })
                    .collect();
                Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))
            }
            // Lists and the rest: refused even when every value is null, never written with a guessed type.
            other => {
                return Err(CoreError::Invalid(format!(
                    "`{name}` has type {}, which amora cannot push offline yet",
                    amora_proto::value_type_names::value_type_name(other)
                )))
            }
        };
        Ok((Field::new(name, a.data_type().clone(), true), a))
    };
    require_columns(view, df, ts_name)?;
    let mut columns = Vec::new();
    for (k, t) in &view.join_keys {
        columns.push(typed(k, *t)?);
    }
    columns.push(timestamps(ts_name, &view.event_timestamp)?);
    if let Some(c) = view.created_timestamp.as_deref().filter(|c| df.get(c).is_some() && *c != view.event_timestamp) {
        columns.push(timestamps(c, c)?);
    }
    for (f, t) in &view.features {
        columns.push(typed(f, *t)?);
    }
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| CoreError::Invalid(format!("feature view `{}`: {e}", view.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(text: &str) -> Columns {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn columns_keep_request_order_and_check_lengths() {
        let c = columns(r#"{"zeta": [1, 2], "alpha": ["a", "b"]}"#);
        assert_eq!(c.0.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["zeta", "alpha"]);
        assert_eq!(c.rows().unwrap(), 2);
        let err = columns(r#"{"a": [1], "b": [1, 2]}"#).rows().unwrap_err().to_string();
        assert!(err.contains("`a` has 1, `b` has 2"), "{err}");
    }

    #[test]
    fn entity_keys_are_typed_by_the_registry() {
        let keys = vec![("driver_id".to_string(), 4)];
        let got = entity_keys(&keys, &columns(r#"{"driver_id": [1001]}"#), 3).unwrap();
        assert_eq!(got, vec![serialize_entity_key(&[("driver_id", KeyValue::Int64(1001))], 3)]);
        let err = entity_keys(&keys, &columns(r#"{"driver_id": ["x"]}"#), 3).unwrap_err().to_string();
        assert!(err.contains("`driver_id` holds Int64"), "{err}");
        let err = entity_keys(&keys, &columns(r#"{"rider": [1]}"#), 3).unwrap_err().to_string();
        assert!(err.contains("`rider` is not a join key") && err.contains("driver_id"), "{err}");
    }

    #[test]
    fn the_byte_writer_matches_the_json_tree() {
        use crate::online::OnlineValue;
        let values = [
            Some(Val::DoubleVal(0.1)),
            Some(Val::FloatVal(0.667_892_6)),
            Some(Val::DoubleVal(f64::NEG_INFINITY)),
            Some(Val::Int64Val(-3)),
            Some(Val::Int64Val(i64::MIN)),
            Some(Val::Int32Val(7)),
            Some(Val::StringVal("a \"q\" é\n".into())),
            Some(Val::BoolVal(true)),
            Some(Val::BytesVal(vec![0, 255])),
            Some(Val::UnixTimestampVal(5)),
            None,
        ];
        let statuses = [Status::Present, Status::NotFound, Status::NullValue, Status::OutsideMaxAge];
        let rows: Vec<Vec<OnlineValue>> = (0..3)
            .map(|r| {
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| OnlineValue {
                        value: v.clone().map(|v| Value { val: Some(v) }),
                        status: statuses[(i + r) % 4],
                        event_ts: (i % 3 != 0).then_some(1_704_153_600_000_000 + (i as i64 % 2) * 1500 + r as i64),
                    })
                    .collect()
            })
            .collect();
        let request = crate::online::OnlineRequest::for_tests((0..values.len()).map(|i| format!("f{i}")).collect());
        let entities = columns(r#"{"id": [1, 2, 3], "name": ["a", "b", "c"]}"#);
        let tree = response(&request, &entities, &rows);
        let bytes: Json = serde_json::from_slice(&response_bytes(&request, &entities, &rows)).unwrap();
        assert_eq!(bytes, tree);
    }

    /// Serialized Values of every kind, and bytes prost refuses or reads as unset.
    fn encodings() -> Vec<Vec<u8>> {
        let vals = [
            Val::DoubleVal(0.1),
            Val::DoubleVal(f64::NAN),
            Val::FloatVal(0.667_892_6),
            Val::Int64Val(i64::MIN),
            Val::Int32Val(-7),
            Val::UnixTimestampVal(1_700_000_000),
            Val::StringVal("a \"q\" é".into()),
            Val::BoolVal(true),
            Val::BytesVal(vec![0, 255, 7]),
            Val::NullVal(0),
        ];
        let mut out: Vec<Vec<u8>> =
            vals.into_iter().map(|v| prost::Message::encode_to_vec(&Value { val: Some(v) })).collect();
        out.push(vec![]); // unset: null
        out.push(vec![0x72, 2, 0x09, 0x01]); // a list (field 14): skipped, so unset
        out.push(vec![0x21, 1, 2]); // a double cut short
        out.push(vec![0x12, 2, 0xff, 0xfe]); // a string that is not UTF-8
        out.push(vec![0x10, 1]); // field 2 as a varint
        let mut two = prost::Message::encode_to_vec(&Value { val: Some(Val::Int64Val(5)) });
        two.extend(prost::Message::encode_to_vec(&Value { val: Some(Val::BoolVal(false)) }));
        out.push(two); // the last of the oneof wins
        out
    }

    #[test]
    fn values_read_in_place_are_what_prost_decodes() {
        for bytes in encodings() {
            let prost: Option<Value> = prost::Message::decode(bytes.as_slice()).ok();
            let ours = decode_scalar(&bytes);
            match (&prost, ours) {
                (None, None) => {}
                (Some(Value { val: None }), Some(None)) => {}
                (Some(v), Some(Some(s))) if v.val.is_some() => {
                    let want = scalar_of(&prost);
                    // NaN is not equal to itself: compare what gets written.
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    write_value(&mut a, want);
                    write_value(&mut b, s);
                    assert_eq!(a, b, "{bytes:?}");
                }
                _ => panic!("{bytes:?}: prost {prost:?}, in place {ours:?}"),
            }
        }
    }

    #[test]
    fn the_response_from_cells_is_the_response_from_values() {
        use amora_online::{Cells, ViewRead};
        let encodings = encodings();
        let views = vec![
            ViewRead { view: "v".into(), features: vec!["a".into(), "b".into(), "c".into()] },
            ViewRead { view: "w".into(), features: vec!["d".into(), "e".into()] },
        ];
        let now = 1_704_153_600_000_000;
        let mut cells = Cells::builder(&views);
        for e in 0..12usize {
            for (v, view) in views.iter().enumerate() {
                // Missing views, fresh and stale rows (the TTLs are 0 and 60 s).
                let ts = [None, Some(now - 1_000_000), Some(now - 120_000_000), Some(now - 120_500_000)][(e + v) % 4];
                cells.push_stamp(ts);
                for f in 0..view.features.len() {
                    let i = (e * 5 + v * 3 + f) % (encodings.len() + 1);
                    cells.push(if ts.is_none() || i == encodings.len() { None } else { Some(&encodings[i]) });
                }
            }
        }
        let cells = cells.finish();
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let request = crate::online::OnlineRequest::for_tests_with(names, views, vec![0, 60]);
        let entities =
            columns(&format!(r#"{{"id": [{}]}}"#, (0..12).map(|i| i.to_string()).collect::<Vec<_>>().join(",")));
        let values = crate::online::with_statuses(&cells, &[0, 60], now);
        let want: Json = serde_json::from_slice(&response_bytes(&request, &entities, &values)).unwrap();
        let got: Json = serde_json::from_slice(&response_from_cells(&request, &entities, &cells, now)).unwrap();
        assert_eq!(got, want);
        assert_eq!(want, response(&request, &entities, &values));
        let statuses = want.to_string();
        for s in ["PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"] {
            assert!(statuses.contains(s), "{s} is covered");
        }
    }

    #[test]
    fn the_fast_timestamp_writer_matches_chrono() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases: Vec<i64> = vec![0, -1, 1, 999_999, 1_000_000, -86_400_000_000, 951_782_400_000_000];
        cases.extend([253_402_300_799_999_999, 253_402_300_800_000_000, -62_135_596_800_000_000, i64::MIN, i64::MAX]);
        for _ in 0..20_000 {
            let r = next() as i64;
            // Any instant from year 1 to 9999, whole seconds, millis and micros alike.
            let t = r.rem_euclid(315_537_897_600_000_000) - 62_135_596_800_000_000;
            cases.extend([t, t - t.rem_euclid(1000), t - t.rem_euclid(1_000_000)]);
        }
        for t in cases {
            let mut out = Vec::new();
            write_ts(&mut out, t);
            assert_eq!(String::from_utf8(out).unwrap(), format_ts(t), "{t}");
        }
    }

    #[test]
    fn timestamps_and_values_read_like_feast_writes_them() {
        assert_eq!(parse_ts(&json!("2024-01-02T00:00:00Z")), Some(1_704_153_600_000_000));
        assert_eq!(parse_ts(&json!("2024-01-02T00:00:00")), Some(1_704_153_600_000_000));
        assert_eq!(parse_ts(&json!("2024-01-02 02:00:00+02:00")), Some(1_704_153_600_000_000));
        assert_eq!(parse_ts(&json!("2024-01-02T00:00:00.5")), Some(1_704_153_600_500_000));
        assert_eq!(format_ts(1_704_153_600_500_000), "2024-01-02T00:00:00.500Z");
        assert_eq!(format_ts(1_704_153_600_000_000), "2024-01-02T00:00:00Z");
        assert_eq!(feature_value("x", 6, &json!(0.5)).unwrap().val, Some(Val::FloatVal(0.5)));
        assert_eq!(feature_value("x", 4, &json!(null)).unwrap().val, None);
        assert!(feature_value("x", 4, &json!(1.5)).is_err());
        // A float widens to the double Python prints; NaN is a string.
        let f = Some(Value { val: Some(Val::FloatVal(0.667_892_6)) });
        assert_eq!(value_json(&f).to_string(), "0.667892575263977"); // Feast's captured value
        assert_eq!(value_json(&Some(Value { val: Some(Val::DoubleVal(f64::NAN)) })), json!("NaN"));
        assert_eq!(value_json(&Some(Value { val: Some(Val::BytesVal(b"hi!?".to_vec())) })), json!("aGkhPw=="));
    }
}
