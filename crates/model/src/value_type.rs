//! Feast's value types: the scalars and their lists, with Feast's enum numbers.

use std::fmt;

/// A scalar value type, as Feast's `ValueType.Enum` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    Bytes,
    String,
    Int32,
    Int64,
    Float64,
    Float32,
    Bool,
    UnixTimestamp,
}

/// A column or feature type: a scalar or a list of scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    Scalar(Scalar),
    List(Scalar),
}

impl Scalar {
    pub const ALL: [Scalar; 8] = [
        Scalar::Bytes,
        Scalar::String,
        Scalar::Int32,
        Scalar::Int64,
        Scalar::Float64,
        Scalar::Float32,
        Scalar::Bool,
        Scalar::UnixTimestamp,
    ];

    /// The number of this type in Feast's `ValueType.Enum`.
    pub fn feast_enum(self) -> i32 {
        match self {
            Scalar::Bytes => 1,
            Scalar::String => 2,
            Scalar::Int32 => 3,
            Scalar::Int64 => 4,
            Scalar::Float64 => 5,
            Scalar::Float32 => 6,
            Scalar::Bool => 7,
            Scalar::UnixTimestamp => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scalar::Bytes => "bytes",
            Scalar::String => "string",
            Scalar::Int32 => "int32",
            Scalar::Int64 => "int64",
            Scalar::Float64 => "float64",
            Scalar::Float32 => "float32",
            Scalar::Bool => "bool",
            Scalar::UnixTimestamp => "unix_timestamp",
        }
    }

    fn parse(s: &str) -> Option<Scalar> {
        Some(match s {
            "bytes" | "binary" => Scalar::Bytes,
            "string" | "str" | "varchar" | "text" => Scalar::String,
            "int32" | "int" | "integer" => Scalar::Int32,
            "int64" | "bigint" | "long" => Scalar::Int64,
            "float64" | "double" => Scalar::Float64,
            "float32" | "float" | "real" => Scalar::Float32,
            "bool" | "boolean" => Scalar::Bool,
            "unix_timestamp" | "timestamp" | "datetime" => Scalar::UnixTimestamp,
            _ => return None,
        })
    }
}

impl ValueType {
    /// Parses `int64`, `list<int64>`, `array<int64>`, `int64[]` or `int64_list`
    /// (case-insensitive). The error lists what is accepted.
    pub fn parse(text: &str) -> Result<ValueType, String> {
        let t = text.trim().to_ascii_lowercase();
        let inner = t
            .strip_prefix("list<")
            .or_else(|| t.strip_prefix("array<"))
            .and_then(|r| r.strip_suffix('>'))
            .or_else(|| t.strip_suffix("[]"))
            .or_else(|| t.strip_suffix("_list"));
        let parsed = match inner {
            Some(inner) => Scalar::parse(inner.trim()).map(ValueType::List),
            None => Scalar::parse(&t).map(ValueType::Scalar),
        };
        parsed.ok_or_else(|| {
            format!(
                "unknown type `{text}`; use one of {} or a list such as `list<int64>`",
                Scalar::ALL.map(Scalar::name).join(", ")
            )
        })
    }

    /// The number of this type in Feast's `ValueType.Enum` (lists are `scalar + 10`).
    pub fn feast_enum(self) -> i32 {
        match self {
            ValueType::Scalar(s) => s.feast_enum(),
            ValueType::List(s) => s.feast_enum() + 10,
        }
    }

    /// The inverse of [`ValueType::feast_enum`], for the types amora supports.
    pub fn from_feast_enum(n: i32) -> Option<ValueType> {
        let scalar = |k| Scalar::ALL.into_iter().find(|s| s.feast_enum() == k);
        match n {
            1..=8 => scalar(n).map(ValueType::Scalar),
            11..=18 => scalar(n - 10).map(ValueType::List),
            _ => None,
        }
    }

    pub fn is_timestamp(self) -> bool {
        self == ValueType::Scalar(Scalar::UnixTimestamp)
    }

    /// Whether this type may be an entity join key (Feast's serializer accepts these).
    pub fn is_join_key_type(self) -> bool {
        matches!(self, ValueType::Scalar(Scalar::String | Scalar::Bytes | Scalar::Int32 | Scalar::Int64))
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Scalar(s) => f.write_str(s.name()),
            ValueType::List(s) => write!(f, "list<{}>", s.name()),
        }
    }
}

impl serde::Serialize for ValueType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalars_and_lists() {
        assert_eq!(ValueType::parse("Float64"), Ok(ValueType::Scalar(Scalar::Float64)));
        assert_eq!(ValueType::parse("list<int64>"), Ok(ValueType::List(Scalar::Int64)));
        assert_eq!(ValueType::parse("string[]"), Ok(ValueType::List(Scalar::String)));
        assert_eq!(ValueType::parse("bool_list"), Ok(ValueType::List(Scalar::Bool)));
        assert!(ValueType::parse("decimal").unwrap_err().contains("list<int64>"));
    }

    #[test]
    fn feast_enum_round_trips() {
        for s in Scalar::ALL {
            for t in [ValueType::Scalar(s), ValueType::List(s)] {
                assert_eq!(ValueType::from_feast_enum(t.feast_enum()), Some(t));
                assert_eq!(ValueType::parse(&t.to_string()), Ok(t));
            }
        }
        // float64 stays DOUBLE (5): Amora mapped it to FLOAT and lost precision.
        assert_eq!(ValueType::Scalar(Scalar::Float64).feast_enum(), 5);
        assert_eq!(ValueType::List(Scalar::UnixTimestamp).feast_enum(), 18);
    }
}
