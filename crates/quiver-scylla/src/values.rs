//! Conversions between Quiver's values and CQL values, by declared type.

use quiver_core::key::KeyPart;
use quiver_core::value::{ScalarType, Value, ValueType};
use scylla::value::CqlValue;

pub(crate) fn key_part(part: &KeyPart) -> CqlValue {
    match part {
        KeyPart::Int32(value) => CqlValue::Int(*value),
        KeyPart::Int64(value) => CqlValue::BigInt(*value),
        KeyPart::String(value) => CqlValue::Text(value.clone()),
        KeyPart::Bytes(value) => CqlValue::Blob(value.clone()),
    }
}

fn list<T: Clone>(items: &[T], to_cql: impl Fn(T) -> CqlValue) -> CqlValue {
    CqlValue::List(items.iter().cloned().map(to_cql).collect())
}

pub(crate) fn to_cql(value: &Value) -> CqlValue {
    match value {
        Value::Bool(v) => CqlValue::Boolean(*v),
        Value::Int32(v) => CqlValue::Int(*v),
        Value::Int64(v) | Value::Timestamp(v) => CqlValue::BigInt(*v),
        Value::Float32(v) => CqlValue::Float(*v),
        Value::Float64(v) => CqlValue::Double(*v),
        Value::String(v) => CqlValue::Text(v.clone()),
        Value::Bytes(v) => CqlValue::Blob(v.clone()),
        Value::BoolList(v) => list(v, CqlValue::Boolean),
        Value::Int32List(v) => list(v, CqlValue::Int),
        Value::Int64List(v) | Value::TimestampList(v) => list(v, CqlValue::BigInt),
        Value::Float32List(v) => list(v, CqlValue::Float),
        Value::Float64List(v) => list(v, CqlValue::Double),
        Value::StringList(v) => list(v, CqlValue::Text),
        Value::BytesList(v) => list(v, CqlValue::Blob),
    }
}

/// Reads a stored CQL value back as the feature's declared type; `None` if it does not fit,
/// which means the table was written by something other than Quiver.
pub(crate) fn from_cql(value_type: ValueType, cql: CqlValue) -> Option<Value> {
    let list_items = |cql: CqlValue, element: ScalarType| match cql {
        CqlValue::List(items) => items
            .into_iter()
            .map(|item| scalar_from_cql(element, item))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    };
    match value_type {
        ValueType::Scalar(scalar) => scalar_from_cql(scalar, cql),
        ValueType::List(element) => Value::list_from_scalars(element, list_items(cql, element)?),
        ValueType::Embedding { .. } => {
            Value::list_from_scalars(ScalarType::Float32, list_items(cql, ScalarType::Float32)?)
        }
    }
}

fn scalar_from_cql(scalar: ScalarType, cql: CqlValue) -> Option<Value> {
    Some(match (scalar, cql) {
        (ScalarType::Bool, CqlValue::Boolean(v)) => Value::Bool(v),
        (ScalarType::Int32, CqlValue::Int(v)) => Value::Int32(v),
        (ScalarType::Int64, CqlValue::BigInt(v)) => Value::Int64(v),
        (ScalarType::Timestamp, CqlValue::BigInt(v)) => Value::Timestamp(v),
        (ScalarType::Float32, CqlValue::Float(v)) => Value::Float32(v),
        (ScalarType::Float64, CqlValue::Double(v)) => Value::Float64(v),
        (ScalarType::String, CqlValue::Text(v)) => Value::String(v),
        (ScalarType::Bytes, CqlValue::Blob(v)) => Value::Bytes(v),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_survives_the_round_trip() {
        let cases = [
            (ValueType::Scalar(ScalarType::Bool), Value::Bool(true)),
            (ValueType::Scalar(ScalarType::Int32), Value::Int32(-7)),
            (
                ValueType::Scalar(ScalarType::Timestamp),
                Value::Timestamp(1_790_000_000_000_000),
            ),
            (
                ValueType::Scalar(ScalarType::Bytes),
                Value::Bytes(vec![0, 255]),
            ),
            (
                ValueType::List(ScalarType::String),
                Value::StringList(vec!["a".into(), "b".into()]),
            ),
            (ValueType::List(ScalarType::Int64), Value::Int64List(vec![])),
            (
                ValueType::Embedding { dimension: 2 },
                Value::Float32List(vec![0.5, -1.0]),
            ),
        ];
        for (value_type, value) in cases {
            assert_eq!(from_cql(value_type, to_cql(&value)), Some(value));
        }
    }

    #[test]
    fn a_value_of_another_type_is_not_read_as_this_one() {
        assert_eq!(
            from_cql(
                ValueType::Scalar(ScalarType::Int64),
                CqlValue::Text("7".into())
            ),
            None
        );
    }
}
