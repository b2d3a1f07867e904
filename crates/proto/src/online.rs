//! Feast's online formats: entity-key serialization (v2 and v3), `feast.types.Value`,
//! the murmur3 field names and the `_ts:<view>` timestamps of its Redis layout.

use crate::messages::Timestamp;

/// `feast.types.Value`: one oneof field whose number is the value type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "value::Val", tags = "1, 2, 3, 4, 5, 6, 7, 8, 19")]
    pub val: Option<value::Val>,
}

pub mod value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Val {
        #[prost(bytes, tag = "1")]
        BytesVal(Vec<u8>),
        #[prost(string, tag = "2")]
        StringVal(String),
        #[prost(int32, tag = "3")]
        Int32Val(i32),
        #[prost(int64, tag = "4")]
        Int64Val(i64),
        #[prost(double, tag = "5")]
        DoubleVal(f64),
        #[prost(float, tag = "6")]
        FloatVal(f32),
        #[prost(bool, tag = "7")]
        BoolVal(bool),
        /// Epoch seconds.
        #[prost(int64, tag = "8")]
        UnixTimestampVal(i64),
        #[prost(int32, tag = "19")]
        NullVal(i32),
    }
}

/// A join-key value, as entity keys carry them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    String(String),
    Bytes(Vec<u8>),
    Int32(i32),
    Int64(i64),
    UnixTimestamp(i64),
}

impl KeyValue {
    fn type_tag(&self) -> u32 {
        match self {
            KeyValue::Bytes(_) => 1,
            KeyValue::String(_) => 2,
            KeyValue::Int32(_) => 3,
            KeyValue::Int64(_) => 4,
            KeyValue::UnixTimestamp(_) => 8,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            KeyValue::String(s) => s.as_bytes().to_vec(),
            KeyValue::Bytes(b) => b.clone(),
            KeyValue::Int32(v) => v.to_le_bytes().to_vec(),
            KeyValue::Int64(v) | KeyValue::UnixTimestamp(v) => v.to_le_bytes().to_vec(),
        }
    }
}

/// Serializes an entity key exactly as Feast's `serialize_entity_key` does:
/// pairs sorted by join-key name, names then values, little-endian lengths.
/// `version` is 3 (Feast's default) or 2 (Amora's).
pub fn serialize_entity_key(pairs: &[(&str, KeyValue)], version: u32) -> Vec<u8> {
    let mut sorted: Vec<&(&str, KeyValue)> = pairs.iter().collect();
    if sorted.len() > 1 {
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    let mut out = Vec::with_capacity(16 + pairs.len() * 32);
    if version >= 3 {
        out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    }
    for (name, _) in &sorted {
        out.extend_from_slice(&2u32.to_le_bytes());
        if version >= 3 {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(name.as_bytes());
    }
    for (_, v) in &sorted {
        append_key_value(&mut out, v.type_tag(), &v.bytes());
    }
    out
}

/// Appends one value block of a serialized entity key (type tag, length, bytes).
/// A key is [`entity_key_prefix`] then one block per join key, in name order:
/// writers that build keys column-wise use this to skip the per-row [`KeyValue`].
pub fn append_key_value(out: &mut Vec<u8>, type_tag: u32, bytes: &[u8]) {
    out.extend_from_slice(&type_tag.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The part of a serialized entity key before the values: what every key of
/// these join keys starts with (Feast's `serialize_entity_key_prefix`).
pub fn entity_key_prefix(join_keys: &[&str], version: u32) -> Vec<u8> {
    let mut names: Vec<&str> = join_keys.to_vec();
    names.sort_unstable();
    let mut out = Vec::new();
    if version >= 3 {
        out.extend_from_slice(&(names.len() as u32).to_le_bytes());
    }
    for n in names {
        out.extend_from_slice(&2u32.to_le_bytes());
        if version >= 3 {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(n.as_bytes());
    }
    out
}

/// Whether `key` is exactly `prefix`, `n_keys` value blocks, then `project`: a Redis
/// key of these join keys in this project (and not in one whose name ends the same).
pub fn is_key_of(key: &[u8], prefix: &[u8], n_keys: usize, project: &str) -> bool {
    let Some(mut rest) = key.strip_prefix(prefix) else { return false };
    for _ in 0..n_keys {
        let Some(len) = rest.get(4..8).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes) else { return false };
        let Some(after) = rest.get(8 + len as usize..) else { return false };
        rest = after;
    }
    rest == project.as_bytes()
}

/// The Redis key of an entity: serialized entity key followed by the project name.
pub fn redis_key(entity_key: &[u8], project: &str) -> Vec<u8> {
    let mut k = entity_key.to_vec();
    k.extend_from_slice(project.as_bytes());
    k
}

/// MurmurHash3 x86 32-bit.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let mut k = 0u32;
    for (i, b) in tail.iter().enumerate() {
        k ^= u32::from(*b) << (8 * i);
    }
    if !tail.is_empty() {
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The Redis hash field of a feature: murmur3_32(`view:feature`, seed 0), 4 bytes little-endian.
pub fn feature_field(view: &str, feature: &str) -> [u8; 4] {
    murmur3_32(format!("{view}:{feature}").as_bytes(), 0).to_le_bytes()
}

/// The Redis hash field holding a view's event timestamp.
pub fn timestamp_field(view: &str) -> Vec<u8> {
    format!("_ts:{view}").into_bytes()
}

/// A serialized `google.protobuf.Timestamp` (zero fields omitted).
pub fn encode_timestamp(micros: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_timestamp_into(micros, &mut out);
    out
}

/// [`encode_timestamp`] appended to `out`.
pub fn encode_timestamp_into(micros: i64, out: &mut Vec<u8>) {
    let t = Timestamp { seconds: micros.div_euclid(1_000_000), nanos: (micros.rem_euclid(1_000_000) * 1000) as i32 };
    prost::Message::encode(&t, out).expect("a Vec grows as needed");
}

/// The inverse of [`encode_timestamp`] (microseconds); None for bad bytes.
pub fn decode_timestamp(bytes: &[u8]) -> Option<i64> {
    let t: Timestamp = prost::Message::decode(bytes).ok()?;
    Some(t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Feast's worked example (verified against a live Redis with Feast's own functions).
    #[test]
    fn feast_worked_example() {
        let key = serialize_entity_key(&[("driver_id", KeyValue::Int64(1001))], 3);
        assert_eq!(
            hex(&redis_key(&key, "demo")),
            "0100000002000000090000006472697665725f69640400000008000000e90300000000000064656d6f"
        );
        let v2 = serialize_entity_key(&[("driver_id", KeyValue::Int64(1001))], 2);
        assert_eq!(hex(&v2), "020000006472697665725f69640400000008000000e903000000000000");
        assert_eq!(hex(&feature_field("driver_hourly_stats", "conv_rate")), "6160e3da");
        assert_eq!(hex(&feature_field("driver_hourly_stats", "acc_rate")), "fa5e58ad");
        assert_eq!(hex(&feature_field("driver_hourly_stats", "avg_daily_trips")), "18a5e5a3");
        let v = |val| Value { val: Some(val) }.encode_to_vec();
        assert_eq!(hex(&v(value::Val::FloatVal(0.5))), "350000003f");
        assert_eq!(hex(&v(value::Val::DoubleVal(0.5))), "29000000000000e03f");
        assert_eq!(hex(&v(value::Val::Int64Val(1001))), "20e907");
        assert_eq!(hex(&v(value::Val::StringVal("abc".into()))), "1203616263");
        assert_eq!(Value { val: None }.encode_to_vec(), Vec::<u8>::new(), "null is empty");
        assert_eq!(hex(&encode_timestamp(1_704_110_400_000_000)), "08c0d2caac06");
        assert_eq!(hex(&encode_timestamp(1_704_110_400_123_456)), "08c0d2caac06108094ef3a");
        assert_eq!(decode_timestamp(&encode_timestamp(1_704_110_400_123_456)), Some(1_704_110_400_123_456));
        assert_eq!(hex(&timestamp_field("driver_hourly_stats")), "5f74733a6472697665725f686f75726c795f7374617473");
    }

    #[test]
    fn multi_key_and_string_keys() {
        let k = serialize_entity_key(
            &[("driver_id", KeyValue::Int64(1001)), ("customer_id", KeyValue::String("c1".into()))],
            3,
        );
        let expected = [
            "02000000",
            "02000000",
            "0b000000",
            &hex(b"customer_id"),
            "02000000",
            "09000000",
            &hex(b"driver_id"),
            "02000000",
            "02000000",
            &hex(b"c1"),
            "04000000",
            "08000000",
            "e903000000000000",
        ]
        .concat();
        assert_eq!(hex(&k), expected);
        let u = serialize_entity_key(&[("user_id", KeyValue::String("u1".into()))], 3);
        assert_eq!(hex(&u), "010000000200000007000000757365725f696402000000020000007531");
    }

    #[test]
    fn keys_of_a_project_only() {
        let k = redis_key(&serialize_entity_key(&[("user_id", KeyValue::String("u1".into()))], 3), "health");
        let p = entity_key_prefix(&["user_id"], 3);
        assert!(is_key_of(&k, &p, 1, "health"));
        assert!(!is_key_of(&k, &p, 1, "ealth"));
        let other = redis_key(&serialize_entity_key(&[("user_id", KeyValue::String("u1".into()))], 3), "myhealth");
        assert!(!is_key_of(&other, &p, 1, "health"));
        assert!(!is_key_of(&k, &entity_key_prefix(&["driver_id"], 3), 1, "health"));
    }

    #[test]
    fn murmur3_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2e4f_f723);
    }
}
