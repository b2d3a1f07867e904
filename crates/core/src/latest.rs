//! The latest row per entity: materialization's dedup, fed batch by batch.
//!
//! Pure logic over Arrow batches: no I/O. Memory holds one encoded row per distinct
//! entity (the output), never the table; values are encoded only for rows that beat
//! the current winner, so most rows cost one key build and one hash lookup.
//!
//! Order: the greatest `(event_ts, created_ts)` wins, a null created timestamp
//! ranking below any other (Feast's `ORDER BY event_ts DESC, created_ts DESC NULLS
//! LAST`); exact ties keep the row offered first. Rows with a null join key or a
//! null event timestamp are never served, so they are skipped.

use std::collections::HashMap;

use amora_offline::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use amora_offline::arrow::compute::cast;
use amora_offline::arrow::datatypes::{DataType, TimeUnit};
use amora_online::{Values, WriteRow};
use amora_proto::online::{append_key_value, entity_key_prefix};

use crate::online::OnlineView;
use crate::CoreError;

fn invalid(m: String) -> CoreError {
    CoreError::Invalid(m)
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, CoreError> {
    batch.column_by_name(name).ok_or_else(|| invalid(format!("the table has no column `{name}`")))
}

fn cast_to(col: &ArrayRef, t: &DataType) -> Result<ArrayRef, CoreError> {
    cast(col, t).map_err(|e| invalid(e.to_string()))
}

/// A join-key column cast to its Feast type, appended to keys row by row.
enum KeyColumn {
    Bytes(BinaryArray),
    String(StringArray),
    Int32(Int32Array),
    Int64(Int64Array),
}

impl KeyColumn {
    fn new(col: &ArrayRef, value_type: i32) -> Result<KeyColumn, CoreError> {
        let c = |t: DataType| cast_to(col, &t);
        Ok(match value_type {
            1 => KeyColumn::Bytes(c(DataType::Binary)?.as_any().downcast_ref::<BinaryArray>().expect("cast").clone()),
            2 => KeyColumn::String(c(DataType::Utf8)?.as_any().downcast_ref::<StringArray>().expect("cast").clone()),
            3 => KeyColumn::Int32(c(DataType::Int32)?.as_any().downcast_ref::<Int32Array>().expect("cast").clone()),
            _ => KeyColumn::Int64(c(DataType::Int64)?.as_any().downcast_ref::<Int64Array>().expect("cast").clone()),
        })
    }

    /// Appends row `i`'s value block; false when it is null.
    fn append(&self, i: usize, out: &mut Vec<u8>) -> bool {
        match self {
            KeyColumn::Bytes(a) => a.is_valid(i) && (append_key_value(out, 1, a.value(i)), true).1,
            KeyColumn::String(a) => a.is_valid(i) && (append_key_value(out, 2, a.value(i).as_bytes()), true).1,
            KeyColumn::Int32(a) => a.is_valid(i) && (append_key_value(out, 3, &a.value(i).to_le_bytes()), true).1,
            KeyColumn::Int64(a) => a.is_valid(i) && (append_key_value(out, 4, &a.value(i).to_le_bytes()), true).1,
        }
    }
}

/// A feature column cast to its Feast type, encoded as `feast.types.Value` on demand.
struct ValueColumn {
    array: ArrayRef,
    value_type: i32,
}

impl ValueColumn {
    fn new(col: &ArrayRef, value_type: i32) -> Result<ValueColumn, CoreError> {
        let t = match value_type {
            1 => DataType::Binary,
            2 => DataType::Utf8,
            3 => DataType::Int32,
            4 => DataType::Int64,
            5 => DataType::Float64,
            6 => DataType::Float32,
            7 => DataType::Boolean,
            8 => utc_micros(),
            other => {
                return Err(invalid(format!(
                    "feature type {} cannot be materialized yet",
                    amora_proto::value_type_names::value_type_name(other)
                )))
            }
        };
        Ok(ValueColumn { array: cast_to(col, &t)?, value_type })
    }

    /// Appends row `i`'s serialized `feast.types.Value` (nothing for null), byte
    /// for byte what prost writes, without building the message.
    fn encode_into(&self, i: usize, out: &mut Vec<u8>) {
        if self.array.is_null(i) {
            return;
        }
        let a = self.array.as_any();
        let tag = |out: &mut Vec<u8>, field: u64, wire: u64| varint(out, (field << 3) | wire);
        let bytes = |out: &mut Vec<u8>, field: u64, b: &[u8]| {
            tag(out, field, 2);
            varint(out, b.len() as u64);
            out.extend_from_slice(b);
        };
        match self.value_type {
            1 => bytes(out, 1, a.downcast_ref::<BinaryArray>().expect("cast").value(i)),
            2 => bytes(out, 2, a.downcast_ref::<StringArray>().expect("cast").value(i).as_bytes()),
            3 => {
                tag(out, 3, 0);
                varint(out, i64::from(a.downcast_ref::<Int32Array>().expect("cast").value(i)) as u64);
            }
            4 => {
                tag(out, 4, 0);
                varint(out, a.downcast_ref::<Int64Array>().expect("cast").value(i) as u64);
            }
            5 => {
                tag(out, 5, 1);
                out.extend_from_slice(&a.downcast_ref::<Float64Array>().expect("cast").value(i).to_le_bytes());
            }
            6 => {
                tag(out, 6, 5);
                out.extend_from_slice(&a.downcast_ref::<Float32Array>().expect("cast").value(i).to_le_bytes());
            }
            7 => {
                tag(out, 7, 0);
                varint(out, u64::from(a.downcast_ref::<BooleanArray>().expect("cast").value(i)));
            }
            _ => {
                tag(out, 8, 0);
                let micros = a.downcast_ref::<TimestampMicrosecondArray>().expect("cast").value(i);
                varint(out, micros.div_euclid(1_000_000) as u64);
            }
        }
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) use amora_online::FxBuild;

/// An entity key stored in the table itself when short (the usual case), so a
/// lookup touches one cache line instead of chasing a pointer to compare keys.
#[derive(Clone)]
enum Key {
    Inline(u8, [u8; INLINE]),
    Heap(Vec<u8>),
}

const INLINE: usize = 46;

impl Key {
    fn new(bytes: &[u8]) -> Key {
        if bytes.len() <= INLINE {
            let mut b = [0; INLINE];
            b[..bytes.len()].copy_from_slice(bytes);
            Key::Inline(bytes.len() as u8, b)
        } else {
            Key::Heap(bytes.to_vec())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline(n, b) => &b[..*n as usize],
            Key::Heap(v) => v,
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.bytes().hash(h)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Key {}

struct Winner {
    ts: i64,
    created: Option<i64>,
    /// Each feature's serialized Value, reused in place when a newer row wins
    /// (no allocation per row).
    values: Values,
}

impl Winner {
    fn set(&mut self, ts: i64, created: Option<i64>, columns: &[ValueColumn], i: usize) {
        self.ts = ts;
        self.created = created;
        self.values.clear();
        for c in columns {
            self.values.push_with(|out| c.encode_into(i, out));
        }
    }
}

/// A batch's columns cast to the view's Feast types, ready to encode row by row.
struct Prepared {
    keys: Vec<KeyColumn>,
    ts: TimestampMicrosecondArray,
    created: Option<TimestampMicrosecondArray>,
    values: Vec<ValueColumn>,
}

impl Prepared {
    /// Row `i`'s serialized entity key (after `prefix`) into `key`; false when
    /// the row is never served (a null key or event timestamp).
    fn key(&self, prefix: &[u8], i: usize, key: &mut Vec<u8>) -> bool {
        key.clear();
        key.extend_from_slice(prefix);
        self.ts.is_valid(i) && self.keys.iter().all(|k| k.append(i, key))
    }

    fn created(&self, i: usize) -> Option<i64> {
        self.created.as_ref().and_then(|c| c.is_valid(i).then(|| c.value(i)))
    }
}

/// Turns a view's rows into online write rows: the Feast-serialized entity key
/// and each feature's serialized `feast.types.Value`.
pub struct RowEncoder {
    view: OnlineView,
    /// Join keys sorted by name (the serialized key's order), with their types.
    sorted_keys: Vec<(String, i32)>,
    prefix: Vec<u8>,
}

impl RowEncoder {
    pub fn new(view: &OnlineView, version: u32) -> RowEncoder {
        let mut sorted_keys = view.join_keys.clone();
        sorted_keys.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let names: Vec<&str> = sorted_keys.iter().map(|k| k.0.as_str()).collect();
        RowEncoder { view: view.clone(), prefix: entity_key_prefix(&names, version), sorted_keys }
    }

    /// The batch's columns by name: join keys, event timestamp, created timestamp
    /// when the view has one, features.
    fn prepare(&self, batch: &RecordBatch) -> Result<Prepared, CoreError> {
        let view = &self.view;
        let keys =
            self.sorted_keys.iter().map(|(k, t)| KeyColumn::new(column(batch, k)?, *t)).collect::<Result<_, _>>()?;
        let micros = |name: &str| -> Result<TimestampMicrosecondArray, CoreError> {
            let a = cast_to(column(batch, name)?, &utc_micros())?;
            Ok(a.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("cast").clone())
        };
        let ts = micros(&view.event_timestamp)?;
        let created = view.created_timestamp.as_deref().map(micros).transpose()?;
        let values =
            view.features.iter().map(|(f, t)| ValueColumn::new(column(batch, f)?, *t)).collect::<Result<_, _>>()?;
        Ok(Prepared { keys, ts, created, values })
    }

    /// Every served row of a batch that holds at most one row per entity (a
    /// store's latest rows), as write rows.
    pub fn write_rows(&self, batch: &RecordBatch) -> Result<Vec<WriteRow>, CoreError> {
        let p = self.prepare(batch)?;
        let mut key = Vec::with_capacity(self.prefix.len() + 32 * p.keys.len());
        let mut out = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            if p.key(&self.prefix, i, &mut key) {
                let mut values = Values::with_capacity(8 * p.values.len());
                for c in &p.values {
                    values.push_with(|out| c.encode_into(i, out));
                }
                out.push(WriteRow { entity_key: key.clone(), event_ts: p.ts.value(i), values });
            }
        }
        Ok(out)
    }
}

/// The latest row per entity key among the batches offered so far.
pub struct LatestRows {
    encoder: RowEncoder,
    winners: HashMap<Key, Winner, FxBuild>,
    offered: u64,
}

impl LatestRows {
    pub fn new(view: &OnlineView, version: u32) -> LatestRows {
        LatestRows { encoder: RowEncoder::new(view, version), winners: HashMap::default(), offered: 0 }
    }

    /// Rows offered so far, and distinct entities among them.
    pub fn counts(&self) -> (u64, usize) {
        (self.offered, self.winners.len())
    }

    /// Takes the batch's rows into account (columns as [`RowEncoder`] reads them).
    pub fn offer(&mut self, batch: &RecordBatch) -> Result<(), CoreError> {
        let p = self.encoder.prepare(batch)?;
        let values = &p.values;
        let mut key = Vec::with_capacity(self.encoder.prefix.len() + 32 * p.keys.len());
        for i in 0..batch.num_rows() {
            if !p.key(&self.encoder.prefix, i, &mut key) {
                continue; // a null key or timestamp is never served
            }
            let (t, c) = (p.ts.value(i), p.created(i));
            match self.winners.get_mut(key.as_slice()) {
                Some(w) => {
                    if (t, c) > (w.ts, w.created) {
                        w.set(t, c, values, i);
                    }
                }
                None => {
                    let mut w = Winner { ts: t, created: c, values: Values::with_capacity(16 * values.len()) };
                    w.set(t, c, values, i);
                    self.winners.insert(Key::new(&key), w);
                }
            }
        }
        self.offered += batch.num_rows() as u64;
        Ok(())
    }

    /// Folds in what another accumulator of the same view saw.
    pub fn merge(&mut self, other: LatestRows) {
        self.offered += other.offered;
        for (k, w) in other.winners {
            match self.winners.get_mut(&k) {
                Some(mine) if (w.ts, w.created) > (mine.ts, mine.created) => *mine = w,
                Some(_) => {}
                None => {
                    self.winners.insert(k, w);
                }
            }
        }
    }

    /// The winning rows, one per entity, in no particular order.
    pub fn into_rows(self) -> Vec<WriteRow> {
        self.into_chunks(usize::MAX).flatten().collect()
    }

    /// The winning rows in chunks of up to `size`, built as they are taken (the
    /// whole output never exists at once as write rows).
    pub fn into_chunks(self, size: usize) -> impl Iterator<Item = Vec<WriteRow>> + Send {
        let mut it = self.winners.into_iter();
        std::iter::from_fn(move || {
            let chunk: Vec<WriteRow> = it
                .by_ref()
                .take(size)
                .map(|(k, w)| WriteRow { entity_key: k.bytes().to_vec(), event_ts: w.ts, values: w.values })
                .collect();
            (!chunk.is_empty()).then_some(chunk)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use amora_offline::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use amora_offline::arrow::datatypes::{Field, Schema};
    use amora_proto::online::{serialize_entity_key, value::Val, KeyValue, Value};

    use super::*;

    fn view(created: bool) -> OnlineView {
        OnlineView {
            name: "v".into(),
            join_keys: vec![("user".into(), 2), ("id".into(), 4)],
            features: vec![("x".into(), 4)],
            event_timestamp: "ts".into(),
            created_timestamp: created.then(|| "created".into()),
            ttl_seconds: 0,
            location: String::new(),
            online: true,
            materialized_until: None,
            version: 0,
        }
    }

    type Row = (Option<&'static str>, i64, Option<i64>, Option<i64>, Option<i64>);

    /// Rows of (user, id, ts, created, x).
    fn batch(rows: &[Row]) -> RecordBatch {
        let ts = || TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()).with_timezone("UTC");
        let schema = Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("id", DataType::Int64, true),
            Field::new("ts", utc_micros(), true),
            Field::new("created", utc_micros(), true),
            Field::new("x", DataType::Int64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(ts()),
                Arc::new(
                    TimestampMicrosecondArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>()).with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    fn key(user: &str, id: i64) -> Vec<u8> {
        serialize_entity_key(&[("user", KeyValue::String(user.into())), ("id", KeyValue::Int64(id))], 3)
    }

    fn x_of(rows: &[WriteRow], k: &[u8]) -> Option<(i64, Option<Val>)> {
        let r = rows.iter().find(|r| r.entity_key == k)?;
        let v: Value = prost::Message::decode(r.values.iter().next().unwrap()).unwrap();
        Some((r.event_ts, v.val))
    }

    #[test]
    fn keeps_the_latest_row_per_entity_with_ties_by_created() {
        let mut l = LatestRows::new(&view(true), 3);
        l.offer(&batch(&[
            (Some("a"), 1, Some(10), Some(1), Some(100)),
            (Some("a"), 1, Some(20), None, Some(200)),
            (Some("a"), 1, Some(20), Some(5), Some(201)), // same ts, a created beats none
            (Some("a"), 1, Some(20), Some(5), Some(202)), // exact tie: the first stays
            (Some("b"), 1, Some(5), None, None),
            (None, 1, Some(99), None, Some(1)),  // null key: skipped
            (Some("c"), 2, None, None, Some(1)), // null event timestamp: skipped
        ]))
        .unwrap();
        l.offer(&batch(&[(Some("a"), 1, Some(15), Some(9), Some(150)), (Some("b"), 2, Some(1), None, Some(7))]))
            .unwrap();
        assert_eq!(l.counts(), (9, 3));
        let rows = l.into_rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(x_of(&rows, &key("a", 1)), Some((20, Some(Val::Int64Val(201)))));
        assert_eq!(x_of(&rows, &key("b", 1)), Some((5, None)));
        assert_eq!(x_of(&rows, &key("b", 2)), Some((1, Some(Val::Int64Val(7)))));
    }

    #[test]
    fn merging_partial_results_equals_one_pass() {
        let data: Vec<Row> = (0..200i64)
            .map(|i| {
                let user = ["a", "b", "c"][(i % 3) as usize];
                (Some(user), i % 7, Some((i * 37) % 50), Some(i % 4).filter(|c| *c != 0), Some(i))
            })
            .collect();
        let mut one = LatestRows::new(&view(true), 3);
        one.offer(&batch(&data)).unwrap();
        let mut parts: Vec<LatestRows> = data
            .chunks(33)
            .map(|c| {
                let mut l = LatestRows::new(&view(true), 3);
                l.offer(&batch(c)).unwrap();
                l
            })
            .collect();
        let mut merged = parts.remove(0);
        for p in parts {
            merged.merge(p);
        }
        let sorted = |mut r: Vec<WriteRow>| {
            r.sort_by(|a, b| a.entity_key.cmp(&b.entity_key));
            r
        };
        // Exact ties (same ts and created) may resolve to either row; this data has none.
        assert_eq!(sorted(one.into_rows()), sorted(merged.into_rows()));
    }

    #[test]
    fn values_encode_exactly_as_prost_does() {
        use amora_offline::arrow::array::{BooleanArray, Float32Array, Float64Array, Int32Array};
        let cols: Vec<(ArrayRef, i32, Vec<Option<Val>>)> = vec![
            (
                Arc::new(Int64Array::from(vec![Some(0), Some(-5), Some(1 << 40), None])),
                4,
                vec![Some(Val::Int64Val(0)), Some(Val::Int64Val(-5)), Some(Val::Int64Val(1 << 40)), None],
            ),
            (
                Arc::new(Int32Array::from(vec![Some(-1), Some(300), Some(0), None])),
                3,
                vec![Some(Val::Int32Val(-1)), Some(Val::Int32Val(300)), Some(Val::Int32Val(0)), None],
            ),
            (
                Arc::new(Float64Array::from(vec![Some(1.5), Some(-0.0), Some(f64::NAN), None])),
                5,
                vec![Some(Val::DoubleVal(1.5)), Some(Val::DoubleVal(-0.0)), Some(Val::DoubleVal(f64::NAN)), None],
            ),
            (
                Arc::new(Float32Array::from(vec![Some(0.25), Some(2.0), Some(0.0), None])),
                6,
                vec![Some(Val::FloatVal(0.25)), Some(Val::FloatVal(2.0)), Some(Val::FloatVal(0.0)), None],
            ),
            (
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), Some(true), None])),
                7,
                vec![Some(Val::BoolVal(true)), Some(Val::BoolVal(false)), Some(Val::BoolVal(true)), None],
            ),
            (
                Arc::new(StringArray::from(vec![Some(""), Some("héllo"), Some(&"x".repeat(200)[..]), None])),
                2,
                vec![
                    Some(Val::StringVal(String::new())),
                    Some(Val::StringVal("héllo".into())),
                    Some(Val::StringVal("x".repeat(200))),
                    None,
                ],
            ),
            (
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_500_000), Some(-1), Some(0), None])
                        .with_timezone("UTC"),
                ),
                8,
                vec![
                    Some(Val::UnixTimestampVal(1)),
                    Some(Val::UnixTimestampVal(-1)),
                    Some(Val::UnixTimestampVal(0)),
                    None,
                ],
            ),
        ];
        for (array, vt, expected) in cols {
            let col = ValueColumn::new(&array, vt).unwrap();
            for (i, e) in expected.into_iter().enumerate() {
                let mut got = Vec::new();
                col.encode_into(i, &mut got);
                assert_eq!(got, prost::Message::encode_to_vec(&Value { val: e.clone() }), "type {vt} row {i}: {e:?}");
            }
        }
    }

    #[test]
    fn without_a_created_column_the_event_time_alone_decides() {
        let mut l = LatestRows::new(&view(false), 2);
        l.offer(&batch(&[(Some("a"), 1, Some(3), Some(9), Some(1)), (Some("a"), 1, Some(4), None, Some(2))])).unwrap();
        let rows = l.into_rows();
        let k = serialize_entity_key(&[("user", KeyValue::String("a".into())), ("id", KeyValue::Int64(1))], 2);
        assert_eq!(x_of(&rows, &k), Some((4, Some(Val::Int64Val(2)))));
    }
}
