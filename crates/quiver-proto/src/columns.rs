//! Typed reply columns (`quiver.v1.TypedValues`): one packed array per column instead of one
//! `Value` message per row, built by the server and read back by clients.

use quiver_core::value::{ScalarType, Value, ValueType};

use crate::v1 as pb;
use crate::v1::typed_values::Elements;

/// Why a typed column could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    #[error("a {found} value does not belong in a column of type {expected}")]
    WrongType {
        expected: ValueType,
        found: ValueType,
    },
    #[error("the typed column has no elements set")]
    NoElements,
    #[error("the typed column holds {found} {what} for {rows} rows")]
    WrongLength {
        what: &'static str,
        found: usize,
        rows: usize,
    },
    #[error(
        "offset {offset} of row {row} is before the previous one or past the {elements} elements"
    )]
    BadOffset {
        row: usize,
        offset: u32,
        elements: usize,
    },
}

/// The elements of a column, of one scalar type.
#[derive(Debug, Clone, PartialEq)]
enum Array {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    String(Vec<String>),
    Bytes(Vec<Vec<u8>>),
    Timestamp(Vec<i64>),
}

impl Array {
    fn with_capacity(scalar: ScalarType, capacity: usize) -> Self {
        match scalar {
            ScalarType::Bool => Array::Bool(Vec::with_capacity(capacity)),
            ScalarType::Int32 => Array::Int32(Vec::with_capacity(capacity)),
            ScalarType::Int64 => Array::Int64(Vec::with_capacity(capacity)),
            ScalarType::Float32 => Array::Float32(Vec::with_capacity(capacity)),
            ScalarType::Float64 => Array::Float64(Vec::with_capacity(capacity)),
            ScalarType::String => Array::String(Vec::with_capacity(capacity)),
            ScalarType::Bytes => Array::Bytes(Vec::with_capacity(capacity)),
            ScalarType::Timestamp => Array::Timestamp(Vec::with_capacity(capacity)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Array::Bool(array) => array.len(),
            Array::Int32(array) => array.len(),
            Array::Int64(array) | Array::Timestamp(array) => array.len(),
            Array::Float32(array) => array.len(),
            Array::Float64(array) => array.len(),
            Array::String(array) => array.len(),
            Array::Bytes(array) => array.len(),
        }
    }

    /// The type's zero, standing in for a row without a value.
    fn push_zero(&mut self) {
        match self {
            Array::Bool(array) => array.push(false),
            Array::Int32(array) => array.push(0),
            Array::Int64(array) | Array::Timestamp(array) => array.push(0),
            Array::Float32(array) => array.push(0.0),
            Array::Float64(array) => array.push(0.0),
            Array::String(array) => array.push(String::new()),
            Array::Bytes(array) => array.push(Vec::new()),
        }
    }

    /// Appends a scalar value; `false` when it is not of this array's type.
    fn push_scalar(&mut self, value: &Value) -> bool {
        match (self, value) {
            (Array::Bool(array), Value::Bool(value)) => array.push(*value),
            (Array::Int32(array), Value::Int32(value)) => array.push(*value),
            (Array::Int64(array), Value::Int64(value)) => array.push(*value),
            (Array::Float32(array), Value::Float32(value)) => array.push(*value),
            (Array::Float64(array), Value::Float64(value)) => array.push(*value),
            (Array::String(array), Value::String(value)) => array.push(value.clone()),
            (Array::Bytes(array), Value::Bytes(value)) => array.push(value.clone()),
            (Array::Timestamp(array), Value::Timestamp(value)) => array.push(*value),
            _ => return false,
        }
        true
    }

    /// Appends a list's elements; `false` when they are not of this array's type.
    fn extend_from_list(&mut self, value: &Value) -> bool {
        match (self, value) {
            (Array::Bool(array), Value::BoolList(list)) => array.extend_from_slice(list),
            (Array::Int32(array), Value::Int32List(list)) => array.extend_from_slice(list),
            (Array::Int64(array), Value::Int64List(list)) => array.extend_from_slice(list),
            (Array::Float32(array), Value::Float32List(list)) => array.extend_from_slice(list),
            (Array::Float64(array), Value::Float64List(list)) => array.extend_from_slice(list),
            (Array::String(array), Value::StringList(list)) => array.extend_from_slice(list),
            (Array::Bytes(array), Value::BytesList(list)) => array.extend_from_slice(list),
            (Array::Timestamp(array), Value::TimestampList(list)) => array.extend_from_slice(list),
            _ => return false,
        }
        true
    }

    /// Element `index` as a scalar value.
    fn scalar(&self, index: usize) -> Value {
        match self {
            Array::Bool(array) => Value::Bool(array[index]),
            Array::Int32(array) => Value::Int32(array[index]),
            Array::Int64(array) => Value::Int64(array[index]),
            Array::Float32(array) => Value::Float32(array[index]),
            Array::Float64(array) => Value::Float64(array[index]),
            Array::String(array) => Value::String(array[index].clone()),
            Array::Bytes(array) => Value::Bytes(array[index].clone()),
            Array::Timestamp(array) => Value::Timestamp(array[index]),
        }
    }

    /// Elements `range` as one list value.
    fn list(&self, range: std::ops::Range<usize>) -> Value {
        match self {
            Array::Bool(array) => Value::BoolList(array[range].to_vec()),
            Array::Int32(array) => Value::Int32List(array[range].to_vec()),
            Array::Int64(array) => Value::Int64List(array[range].to_vec()),
            Array::Float32(array) => Value::Float32List(array[range].to_vec()),
            Array::Float64(array) => Value::Float64List(array[range].to_vec()),
            Array::String(array) => Value::StringList(array[range].to_vec()),
            Array::Bytes(array) => Value::BytesList(array[range].to_vec()),
            Array::Timestamp(array) => Value::TimestampList(array[range].to_vec()),
        }
    }

    fn into_wire(self) -> Elements {
        match self {
            Array::Bool(values) => Elements::BoolValues(pb::BoolList { values }),
            Array::Int32(values) => Elements::Int32Values(pb::Int32List { values }),
            Array::Int64(values) => Elements::Int64Values(pb::Int64List { values }),
            Array::Float32(values) => Elements::Float32Values(pb::Float32List { values }),
            Array::Float64(values) => Elements::Float64Values(pb::Float64List { values }),
            Array::String(values) => Elements::StringValues(pb::StringList { values }),
            Array::Bytes(values) => Elements::BytesValues(pb::BytesList { values }),
            Array::Timestamp(values) => Elements::TimestampMicrosValues(pb::Int64List { values }),
        }
    }

    fn from_wire(elements: Elements) -> Self {
        match elements {
            Elements::BoolValues(list) => Array::Bool(list.values),
            Elements::Int32Values(list) => Array::Int32(list.values),
            Elements::Int64Values(list) => Array::Int64(list.values),
            Elements::Float32Values(list) => Array::Float32(list.values),
            Elements::Float64Values(list) => Array::Float64(list.values),
            Elements::StringValues(list) => Array::String(list.values),
            Elements::BytesValues(list) => Array::Bytes(list.values),
            Elements::TimestampMicrosValues(list) => Array::Timestamp(list.values),
        }
    }
}

/// Builds the typed array of one column, row by row.
#[derive(Debug, Clone)]
pub struct TypedColumnBuilder {
    value_type: ValueType,
    elements: Array,
    /// For a list or embedding column, where each row's elements begin, plus the end.
    offsets: Option<Vec<u32>>,
}

impl TypedColumnBuilder {
    /// A builder for a column of `value_type` with room for `rows` rows.
    pub fn new(value_type: ValueType, rows: usize) -> Self {
        let (scalar, offsets) = match value_type {
            ValueType::Scalar(scalar) => (scalar, None),
            ValueType::List(scalar) => (scalar, Some(rows)),
            ValueType::Embedding { .. } => (ScalarType::Float32, Some(rows)),
        };
        TypedColumnBuilder {
            value_type,
            elements: Array::with_capacity(scalar, rows),
            offsets: offsets.map(|rows| {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                offsets
            }),
        }
    }

    /// Appends one row: its value, or `None` for a row without one.
    pub fn push(&mut self, value: Option<&Value>) -> Result<(), ColumnError> {
        let fits = match (&mut self.offsets, value) {
            (None, None) => {
                self.elements.push_zero();
                true
            }
            (None, Some(value)) => self.elements.push_scalar(value),
            (Some(offsets), value) => {
                let fits = value.is_none_or(|value| self.elements.extend_from_list(value));
                // Elements are counted in u32 on the wire; a reply is bounded far below that.
                offsets.push(u32::try_from(self.elements.len()).unwrap_or(u32::MAX));
                fits
            }
        };
        match value {
            Some(value) if !fits => Err(ColumnError::WrongType {
                expected: self.value_type,
                found: value.value_type(),
            }),
            _ => Ok(()),
        }
    }

    /// The column as sent.
    pub fn finish(self) -> pb::TypedValues {
        pb::TypedValues {
            offsets: self.offsets.unwrap_or_default(),
            elements: Some(self.elements.into_wire()),
        }
    }
}

/// The value of each of `rows` rows of a typed column: a row without a value reads as its
/// type's zero (or an empty list); the column's statuses tell which rows have one.
pub fn typed_rows(column: pb::TypedValues, rows: usize) -> Result<Vec<Value>, ColumnError> {
    let elements = Array::from_wire(column.elements.ok_or(ColumnError::NoElements)?);
    if column.offsets.is_empty() {
        if elements.len() != rows {
            return Err(ColumnError::WrongLength {
                what: "values",
                found: elements.len(),
                rows,
            });
        }
        return Ok((0..rows).map(|row| elements.scalar(row)).collect());
    }
    if column.offsets.len() != rows + 1 {
        return Err(ColumnError::WrongLength {
            what: "offsets",
            found: column.offsets.len(),
            rows,
        });
    }
    let mut values = Vec::with_capacity(rows);
    for (row, bounds) in column.offsets.windows(2).enumerate() {
        let (start, end) = (bounds[0] as usize, bounds[1] as usize);
        if start > end || end > elements.len() || (row == 0 && start != 0) {
            return Err(ColumnError::BadOffset {
                row,
                offset: bounds[1],
                elements: elements.len(),
            });
        }
        values.push(elements.list(start..end));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value_type: &str, rows: &[Option<Value>]) -> Vec<Value> {
        let mut builder = TypedColumnBuilder::new(value_type.parse().unwrap(), rows.len());
        for row in rows {
            builder.push(row.as_ref()).unwrap();
        }
        typed_rows(builder.finish(), rows.len()).unwrap()
    }

    #[test]
    fn every_type_reads_back_row_by_row_with_zeros_where_rows_have_no_value() {
        let cases: Vec<(&str, Value, Value)> = vec![
            ("bool", Value::Bool(true), Value::Bool(false)),
            ("int32", Value::Int32(-3), Value::Int32(0)),
            ("int64", Value::Int64(1 << 40), Value::Int64(0)),
            ("float32", Value::Float32(0.5), Value::Float32(0.0)),
            ("float64", Value::Float64(-2.25), Value::Float64(0.0)),
            (
                "string",
                Value::String("SE".into()),
                Value::String(String::new()),
            ),
            (
                "bytes",
                Value::Bytes(vec![0, 255]),
                Value::Bytes(Vec::new()),
            ),
            ("timestamp", Value::Timestamp(7), Value::Timestamp(0)),
            (
                "list<bool>",
                Value::BoolList(vec![true]),
                Value::BoolList(vec![]),
            ),
            (
                "list<int32>",
                Value::Int32List(vec![1, 2]),
                Value::Int32List(vec![]),
            ),
            (
                "list<int64>",
                Value::Int64List(vec![3]),
                Value::Int64List(vec![]),
            ),
            (
                "list<float32>",
                Value::Float32List(vec![0.25]),
                Value::Float32List(vec![]),
            ),
            (
                "list<float64>",
                Value::Float64List(vec![1.5]),
                Value::Float64List(vec![]),
            ),
            (
                "list<string>",
                Value::StringList(vec!["sv".into(), "en".into()]),
                Value::StringList(vec![]),
            ),
            (
                "list<bytes>",
                Value::BytesList(vec![vec![1]]),
                Value::BytesList(vec![]),
            ),
            (
                "list<timestamp>",
                Value::TimestampList(vec![7, 8]),
                Value::TimestampList(vec![]),
            ),
            (
                "embedding<4>",
                Value::Float32List(vec![0.25; 4]),
                Value::Float32List(vec![]),
            ),
        ];
        for (value_type, value, zero) in cases {
            let rows = [Some(value.clone()), None, Some(value.clone())];
            assert_eq!(
                round_trip(value_type, &rows),
                [value.clone(), zero, value],
                "{value_type}"
            );
        }
    }

    #[test]
    fn a_value_of_another_type_is_refused_naming_both() {
        let mut builder = TypedColumnBuilder::new(ValueType::Scalar(ScalarType::Int64), 1);
        let error = builder.push(Some(&Value::String("x".into()))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a string value does not belong in a column of type int64"
        );
        let mut builder = TypedColumnBuilder::new("list<int64>".parse().unwrap(), 1);
        assert!(builder.push(Some(&Value::Int64(1))).is_err());
    }

    #[test]
    fn a_malformed_column_is_refused_not_misread() {
        let scalar = |values: Vec<i64>| pb::TypedValues {
            offsets: vec![],
            elements: Some(Elements::Int64Values(pb::Int64List { values })),
        };
        assert!(matches!(
            typed_rows(scalar(vec![1, 2]), 3),
            Err(ColumnError::WrongLength {
                found: 2,
                rows: 3,
                ..
            })
        ));
        let list = |offsets: Vec<u32>| pb::TypedValues {
            offsets,
            elements: Some(Elements::Int64Values(pb::Int64List { values: vec![1, 2] })),
        };
        assert!(matches!(
            typed_rows(list(vec![0, 3]), 1),
            Err(ColumnError::BadOffset { .. })
        ));
        assert!(matches!(
            typed_rows(list(vec![0, 2, 1]), 2),
            Err(ColumnError::BadOffset { .. })
        ));
        assert!(matches!(
            typed_rows(list(vec![1, 2]), 1),
            Err(ColumnError::BadOffset { .. })
        ));
        assert_eq!(
            typed_rows(list(vec![0, 1, 2]), 2).unwrap(),
            [Value::Int64List(vec![1]), Value::Int64List(vec![2])]
        );
        let none = pb::TypedValues {
            offsets: vec![],
            elements: None,
        };
        assert_eq!(typed_rows(none, 0), Err(ColumnError::NoElements));
    }
}
