//! Feature values between their wire form (`quiver.v1.Value`) and the domain's, one mapping for
//! the server and every client.

use quiver_core::value::Value;

use crate::v1 as pb;
use crate::v1::value::Kind;

/// The wire form of a value.
pub fn to_wire(value: &Value) -> pb::Value {
    into_wire(value.clone())
}

/// The wire form of a value, taking it.
pub fn into_wire(value: Value) -> pb::Value {
    let kind = match value {
        Value::Bool(v) => Kind::BoolValue(v),
        Value::Int32(v) => Kind::Int32Value(v),
        Value::Int64(v) => Kind::Int64Value(v),
        Value::Float32(v) => Kind::Float32Value(v),
        Value::Float64(v) => Kind::Float64Value(v),
        Value::String(v) => Kind::StringValue(v),
        Value::Bytes(v) => Kind::BytesValue(v),
        Value::Timestamp(v) => Kind::TimestampMicrosValue(v),
        Value::BoolList(values) => Kind::BoolListValue(pb::BoolList { values }),
        Value::Int32List(values) => Kind::Int32ListValue(pb::Int32List { values }),
        Value::Int64List(values) => Kind::Int64ListValue(pb::Int64List { values }),
        Value::Float32List(values) => Kind::Float32ListValue(pb::Float32List { values }),
        Value::Float64List(values) => Kind::Float64ListValue(pb::Float64List { values }),
        Value::StringList(values) => Kind::StringListValue(pb::StringList { values }),
        Value::BytesList(values) => Kind::BytesListValue(pb::BytesList { values }),
        Value::TimestampList(values) => Kind::TimestampListValue(pb::Int64List { values }),
    };
    pb::Value { kind: Some(kind) }
}

/// The domain value of a wire value; `None` when no kind is set.
pub fn from_wire(value: pb::Value) -> Option<Value> {
    Some(match value.kind? {
        Kind::BoolValue(v) => Value::Bool(v),
        Kind::Int32Value(v) => Value::Int32(v),
        Kind::Int64Value(v) => Value::Int64(v),
        Kind::Float32Value(v) => Value::Float32(v),
        Kind::Float64Value(v) => Value::Float64(v),
        Kind::StringValue(v) => Value::String(v),
        Kind::BytesValue(v) => Value::Bytes(v),
        Kind::TimestampMicrosValue(v) => Value::Timestamp(v),
        Kind::BoolListValue(list) => Value::BoolList(list.values),
        Kind::Int32ListValue(list) => Value::Int32List(list.values),
        Kind::Int64ListValue(list) => Value::Int64List(list.values),
        Kind::Float32ListValue(list) => Value::Float32List(list.values),
        Kind::Float64ListValue(list) => Value::Float64List(list.values),
        Kind::StringListValue(list) => Value::StringList(list.values),
        Kind::BytesListValue(list) => Value::BytesList(list.values),
        Kind::TimestampListValue(list) => Value::TimestampList(list.values),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_survives_the_round_trip() {
        let values = [
            Value::Bool(true),
            Value::Int32(-3),
            Value::Int64(1 << 40),
            Value::Float32(0.5),
            Value::Float64(-2.25),
            Value::String("SE".into()),
            Value::Bytes(vec![0, 255]),
            Value::Timestamp(1_790_000_000_000_000),
            Value::BoolList(vec![true, false]),
            Value::Int32List(vec![1, 2]),
            Value::Int64List(vec![3]),
            Value::Float32List(vec![0.25; 4]),
            Value::Float64List(vec![1.5]),
            Value::StringList(vec!["sv".into(), "en".into()]),
            Value::BytesList(vec![vec![1]]),
            Value::TimestampList(vec![7, 8]),
        ];
        for value in values {
            assert_eq!(from_wire(to_wire(&value)), Some(value.clone()));
        }
        assert_eq!(from_wire(pb::Value { kind: None }), None);
    }
}
