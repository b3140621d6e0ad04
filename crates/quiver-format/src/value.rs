//! Feature values as stored: in the embedded store's entries, in tiles, and as the registry's
//! defaults and filter literals.

use quiver_core::value::Value;
use serde::{Deserialize, Serialize};

use crate::{FormatError, to_json};

/// One value, tagged with its variant: `{"Int64": 5}`, `{"StringList": ["a"]}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum StoredValue {
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    Bytes(Vec<u8>),
    Timestamp(i64),
    BoolList(Vec<bool>),
    Int32List(Vec<i32>),
    Int64List(Vec<i64>),
    Float32List(Vec<f32>),
    Float64List(Vec<f64>),
    StringList(Vec<String>),
    BytesList(Vec<Vec<u8>>),
    TimestampList(Vec<i64>),
}

impl From<&Value> for StoredValue {
    fn from(value: &Value) -> Self {
        match value.clone() {
            Value::Bool(v) => StoredValue::Bool(v),
            Value::Int32(v) => StoredValue::Int32(v),
            Value::Int64(v) => StoredValue::Int64(v),
            Value::Float32(v) => StoredValue::Float32(v),
            Value::Float64(v) => StoredValue::Float64(v),
            Value::String(v) => StoredValue::String(v),
            Value::Bytes(v) => StoredValue::Bytes(v),
            Value::Timestamp(v) => StoredValue::Timestamp(v),
            Value::BoolList(v) => StoredValue::BoolList(v),
            Value::Int32List(v) => StoredValue::Int32List(v),
            Value::Int64List(v) => StoredValue::Int64List(v),
            Value::Float32List(v) => StoredValue::Float32List(v),
            Value::Float64List(v) => StoredValue::Float64List(v),
            Value::StringList(v) => StoredValue::StringList(v),
            Value::BytesList(v) => StoredValue::BytesList(v),
            Value::TimestampList(v) => StoredValue::TimestampList(v),
        }
    }
}

impl From<StoredValue> for Value {
    fn from(value: StoredValue) -> Self {
        match value {
            StoredValue::Bool(v) => Value::Bool(v),
            StoredValue::Int32(v) => Value::Int32(v),
            StoredValue::Int64(v) => Value::Int64(v),
            StoredValue::Float32(v) => Value::Float32(v),
            StoredValue::Float64(v) => Value::Float64(v),
            StoredValue::String(v) => Value::String(v),
            StoredValue::Bytes(v) => Value::Bytes(v),
            StoredValue::Timestamp(v) => Value::Timestamp(v),
            StoredValue::BoolList(v) => Value::BoolList(v),
            StoredValue::Int32List(v) => Value::Int32List(v),
            StoredValue::Int64List(v) => Value::Int64List(v),
            StoredValue::Float32List(v) => Value::Float32List(v),
            StoredValue::Float64List(v) => Value::Float64List(v),
            StoredValue::StringList(v) => Value::StringList(v),
            StoredValue::BytesList(v) => Value::BytesList(v),
            StoredValue::TimestampList(v) => Value::TimestampList(v),
        }
    }
}

/// A feature value as the embedded store keeps it.
pub fn encode_value(value: &Value) -> Vec<u8> {
    to_json(&StoredValue::from(value))
}

/// A value [`encode_value`] stored.
pub fn decode_value(bytes: &[u8]) -> Result<Value, FormatError> {
    serde_json::from_slice::<StoredValue>(bytes)
        .map(Value::from)
        .map_err(|source| FormatError::Malformed {
            what: "a stored value",
            supported: 1,
            source,
        })
}
