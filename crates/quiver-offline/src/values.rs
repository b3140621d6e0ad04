//! Feature values as Arrow arrays of their declared type, and back: scalars as themselves,
//! timestamps as UTC microseconds, lists and embeddings as lists of their element, null where
//! there is no value.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    StringArray, TimestampMicrosecondArray,
};
use quiver_core::history::PointValue;
use quiver_core::value::{ScalarType, Value, ValueType};

pub(crate) const UTC: &str = "UTC";

/// One array of `cells`, of the feature type `value_type`.
pub(crate) fn value_array(value_type: ValueType, cells: &[Option<PointValue>]) -> ArrayRef {
    let values = || {
        cells
            .iter()
            .map(|cell| cell.as_ref().map(|point| &point.value))
    };
    match value_type {
        ValueType::Scalar(scalar) => scalar_array(scalar, values()),
        ValueType::List(element) => list_array(element, values()),
        ValueType::Embedding { .. } => list_array(ScalarType::Float32, values()),
    }
}

fn scalar_array<'v>(
    scalar: ScalarType,
    values: impl Iterator<Item = Option<&'v Value>>,
) -> ArrayRef {
    match scalar {
        ScalarType::Bool => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::Bool(value)) => Some(*value),
                    _ => None,
                })
                .collect::<BooleanArray>(),
        ),
        ScalarType::Int32 => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::Int32(value)) => Some(*value),
                    _ => None,
                })
                .collect::<Int32Array>(),
        ),
        ScalarType::Int64 => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::Int64(value)) => Some(*value),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        ScalarType::Float32 => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::Float32(value)) => Some(*value),
                    _ => None,
                })
                .collect::<Float32Array>(),
        ),
        ScalarType::Float64 => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::Float64(value)) => Some(*value),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
        ScalarType::String => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::String(value)) => Some(value.as_str()),
                    _ => None,
                })
                .collect::<StringArray>(),
        ),
        ScalarType::Bytes => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::Bytes(value)) => Some(value.as_slice()),
                    _ => None,
                })
                .collect::<BinaryArray>(),
        ),
        ScalarType::Timestamp => Arc::new(
            values
                .map(|value| match value {
                    Some(Value::Timestamp(value)) => Some(*value),
                    _ => None,
                })
                .collect::<TimestampMicrosecondArray>()
                .with_timezone(UTC),
        ),
    }
}

/// A list array: each value's elements appended to `items`, null for a cell without a list.
fn list_of<'v, B: ArrayBuilder>(
    items: B,
    values: impl Iterator<Item = Option<&'v Value>>,
    append: impl Fn(&mut B, &'v Value) -> bool,
) -> ArrayRef {
    let mut builder = ListBuilder::new(items);
    for value in values {
        let appended = value.is_some_and(|value| append(builder.values(), value));
        builder.append(appended);
    }
    Arc::new(builder.finish())
}

fn list_array<'v>(
    element: ScalarType,
    values: impl Iterator<Item = Option<&'v Value>>,
) -> ArrayRef {
    match element {
        ScalarType::Bool => list_of(BooleanBuilder::new(), values, |items, value| match value {
            Value::BoolList(list) => {
                list.iter().for_each(|item| items.append_value(*item));
                true
            }
            _ => false,
        }),
        ScalarType::Int32 => list_of(Int32Builder::new(), values, |items, value| match value {
            Value::Int32List(list) => {
                items.append_slice(list);
                true
            }
            _ => false,
        }),
        ScalarType::Int64 => list_of(Int64Builder::new(), values, |items, value| match value {
            Value::Int64List(list) => {
                items.append_slice(list);
                true
            }
            _ => false,
        }),
        ScalarType::Float32 => list_of(Float32Builder::new(), values, |items, value| match value {
            Value::Float32List(list) => {
                items.append_slice(list);
                true
            }
            _ => false,
        }),
        ScalarType::Float64 => list_of(Float64Builder::new(), values, |items, value| match value {
            Value::Float64List(list) => {
                items.append_slice(list);
                true
            }
            _ => false,
        }),
        ScalarType::String => list_of(StringBuilder::new(), values, |items, value| match value {
            Value::StringList(list) => {
                list.iter().for_each(|item| items.append_value(item));
                true
            }
            _ => false,
        }),
        ScalarType::Bytes => list_of(BinaryBuilder::new(), values, |items, value| match value {
            Value::BytesList(list) => {
                list.iter().for_each(|item| items.append_value(item));
                true
            }
            _ => false,
        }),
        ScalarType::Timestamp => list_of(
            TimestampMicrosecondBuilder::new().with_timezone(UTC),
            values,
            |items, value| match value {
                Value::TimestampList(list) => {
                    items.append_slice(list);
                    true
                }
                _ => false,
            },
        ),
    }
}

/// The value at `row` of an array made by [`value_array`] for `value_type`; `None` where it is
/// null or of another type.
pub(crate) fn value_at(value_type: ValueType, array: &ArrayRef, row: usize) -> Option<Value> {
    if array.is_null(row) {
        return None;
    }
    match value_type {
        ValueType::Scalar(scalar) => scalar_at(scalar, array.as_ref(), row),
        ValueType::List(element) => list_at(element, &array.as_list_opt::<i32>()?.value(row)),
        ValueType::Embedding { .. } => {
            list_at(ScalarType::Float32, &array.as_list_opt::<i32>()?.value(row))
        }
    }
}

fn scalar_at(scalar: ScalarType, array: &dyn Array, row: usize) -> Option<Value> {
    Some(match scalar {
        ScalarType::Bool => Value::Bool(array.as_boolean_opt()?.value(row)),
        ScalarType::Int32 => Value::Int32(array.as_primitive_opt::<Int32Type>()?.value(row)),
        ScalarType::Int64 => Value::Int64(array.as_primitive_opt::<Int64Type>()?.value(row)),
        ScalarType::Float32 => Value::Float32(array.as_primitive_opt::<Float32Type>()?.value(row)),
        ScalarType::Float64 => Value::Float64(array.as_primitive_opt::<Float64Type>()?.value(row)),
        ScalarType::String => Value::String(array.as_string_opt::<i32>()?.value(row).to_owned()),
        ScalarType::Bytes => Value::Bytes(array.as_binary_opt::<i32>()?.value(row).to_vec()),
        ScalarType::Timestamp => Value::Timestamp(
            array
                .as_primitive_opt::<TimestampMicrosecondType>()?
                .value(row),
        ),
    })
}

fn list_at(element: ScalarType, items: &ArrayRef) -> Option<Value> {
    let scalars = (0..items.len())
        .map(|item| scalar_at(element, items.as_ref(), item))
        .collect::<Option<Vec<Value>>>()?;
    Value::list_from_scalars(element, scalars)
}
