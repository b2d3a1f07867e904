//! Declared value types <-> Arrow types: what a model may produce for a declared
//! column, and the one Arrow type amora stores it as.

use std::sync::Arc;

use amora_model::{Scalar, ValueType};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

/// The Arrow type amora stores a declared type as (timestamps: UTC microseconds).
pub fn storage_type(t: ValueType) -> DataType {
    match t {
        ValueType::Scalar(s) => scalar(s),
        ValueType::List(s) => DataType::List(Arc::new(Field::new("item", scalar(s), true))),
    }
}

/// The Arrow type a source file's column is read as.
pub fn arrow_type(t: ValueType) -> DataType {
    storage_type(t)
}

fn scalar(s: Scalar) -> DataType {
    match s {
        Scalar::Bytes => DataType::Binary,
        Scalar::String => DataType::Utf8,
        Scalar::Int32 => DataType::Int32,
        Scalar::Int64 => DataType::Int64,
        Scalar::Float64 => DataType::Float64,
        Scalar::Float32 => DataType::Float32,
        Scalar::Bool => DataType::Boolean,
        Scalar::UnixTimestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

fn scalar_matches(s: Scalar, produced: &DataType) -> bool {
    use DataType::*;
    match s {
        Scalar::Bytes => matches!(produced, Binary | LargeBinary | BinaryView | FixedSizeBinary(_)),
        Scalar::String => {
            matches!(produced, Utf8 | LargeUtf8 | Utf8View)
                || matches!(produced, Dictionary(_, v) if matches!(v.as_ref(), Utf8 | LargeUtf8 | Utf8View))
        }
        Scalar::Int32 => matches!(produced, Int32 | Int16 | Int8 | UInt16 | UInt8),
        Scalar::Int64 => matches!(produced, Int64 | Int32 | Int16 | Int8 | UInt32 | UInt16 | UInt8),
        Scalar::Float64 => matches!(produced, Float64 | Float32 | Float16),
        Scalar::Float32 => matches!(produced, Float32 | Float16),
        Scalar::Bool => matches!(produced, Boolean),
        Scalar::UnixTimestamp => matches!(produced, Timestamp(_, _) | Date32 | Date64),
    }
}

/// Whether a column the engine produced may be stored as the declared type
/// without losing information (widening only: an int64 result for an int32
/// declaration is a contract error, a float32 result for float64 is not).
pub fn check_type(declared: ValueType, produced: &DataType) -> bool {
    match (declared, produced) {
        (ValueType::Scalar(s), p) => scalar_matches(s, p),
        (ValueType::List(s), DataType::List(f) | DataType::LargeList(f)) => scalar_matches(s, f.data_type()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_allows_widening_only() {
        let int32 = ValueType::Scalar(Scalar::Int32);
        let int64 = ValueType::Scalar(Scalar::Int64);
        assert!(check_type(int64, &DataType::Int32));
        assert!(!check_type(int32, &DataType::Int64));
        assert!(check_type(ValueType::Scalar(Scalar::String), &DataType::Utf8View));
        assert!(check_type(ValueType::Scalar(Scalar::UnixTimestamp), &DataType::Timestamp(TimeUnit::Nanosecond, None)));
        assert!(!check_type(ValueType::Scalar(Scalar::Float32), &DataType::Float64));
        assert!(check_type(ValueType::List(Scalar::Int64), &storage_type(ValueType::List(Scalar::Int64))));
    }
}
