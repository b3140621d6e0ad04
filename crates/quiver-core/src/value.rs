//! Feature types an ML engineer may declare, and the values a feature holds.
//!
//! Types are written in definition files as `int64`, `list<string>` or `embedding<128>`; the
//! [`FromStr`] and [`Display`](fmt::Display) impls here are the one place that spelling lives.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The types a single feature value, or an element of a list feature, can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScalarType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Bytes,
    /// Microseconds since the Unix epoch, UTC.
    Timestamp,
}

impl ScalarType {
    pub const ALL: [ScalarType; 8] = [
        ScalarType::Bool,
        ScalarType::Int32,
        ScalarType::Int64,
        ScalarType::Float32,
        ScalarType::Float64,
        ScalarType::String,
        ScalarType::Bytes,
        ScalarType::Timestamp,
    ];

    /// The spelling used in definition files.
    pub fn as_str(self) -> &'static str {
        match self {
            ScalarType::Bool => "bool",
            ScalarType::Int32 => "int32",
            ScalarType::Int64 => "int64",
            ScalarType::Float32 => "float32",
            ScalarType::Float64 => "float64",
            ScalarType::String => "string",
            ScalarType::Bytes => "bytes",
            ScalarType::Timestamp => "timestamp",
        }
    }
}

/// The declared type of a feature. Stored and shown in its definition-file spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Scalar(ScalarType),
    /// A variable-length list of one scalar type.
    List(ScalarType),
    /// A float32 vector whose length is fixed at declaration, such as a model embedding.
    Embedding {
        dimension: u32,
    },
}

/// The largest embedding accepted; larger vectors belong in a vector store, not a feature row.
pub const MAX_EMBEDDING_DIMENSION: u32 = 16_384;

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Scalar(scalar) => write!(f, "{scalar}"),
            ValueType::List(element) => write!(f, "list<{element}>"),
            ValueType::Embedding { dimension } => write!(f, "embedding<{dimension}>"),
        }
    }
}

/// Why a type name in a definition could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseTypeError {
    #[error(
        "unknown type `{0}`; expected one of bool, int32, int64, float32, float64, string, bytes, \
         timestamp, list<T> or embedding<N>"
    )]
    Unknown(String),
    #[error("`{0}`: lists hold scalar types only, such as list<int64>")]
    NestedList(String),
    #[error(
        "`{0}`: an embedding needs a dimension between 1 and {MAX_EMBEDDING_DIMENSION}, such as embedding<128>"
    )]
    BadDimension(String),
}

impl FromStr for ScalarType {
    type Err = ParseTypeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ScalarType::ALL
            .into_iter()
            .find(|scalar| scalar.as_str() == text)
            .ok_or_else(|| ParseTypeError::Unknown(text.to_owned()))
    }
}

impl FromStr for ValueType {
    type Err = ParseTypeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if let Some(inner) = generic_argument(trimmed, "list") {
            return match inner.parse::<ScalarType>() {
                Ok(element) => Ok(ValueType::List(element)),
                Err(_) if inner.parse::<ValueType>().is_ok() => {
                    Err(ParseTypeError::NestedList(trimmed.to_owned()))
                }
                Err(_) => Err(ParseTypeError::Unknown(trimmed.to_owned())),
            };
        }
        if let Some(inner) = generic_argument(trimmed, "embedding") {
            return match inner.parse::<u32>() {
                Ok(dimension) if (1..=MAX_EMBEDDING_DIMENSION).contains(&dimension) => {
                    Ok(ValueType::Embedding { dimension })
                }
                _ => Err(ParseTypeError::BadDimension(trimmed.to_owned())),
            };
        }
        trimmed.parse().map(ValueType::Scalar)
    }
}

/// `generic_argument("list<int64>", "list") == Some("int64")`.
fn generic_argument<'a>(text: &'a str, constructor: &str) -> Option<&'a str> {
    text.strip_prefix(constructor)?
        .trim_start()
        .strip_prefix('<')?
        .strip_suffix('>')
        .map(str::trim)
}

/// One feature value. Absence is not a value: a missing feature is reported by its status.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    Bytes(Vec<u8>),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    BoolList(Vec<bool>),
    Int32List(Vec<i32>),
    Int64List(Vec<i64>),
    /// Also the representation of an embedding, whose declared type fixes the length.
    Float32List(Vec<f32>),
    Float64List(Vec<f64>),
    StringList(Vec<String>),
    BytesList(Vec<Vec<u8>>),
    TimestampList(Vec<i64>),
}

impl Value {
    /// The shape of this value, ignoring an embedding's dimension.
    fn shape(&self) -> (ScalarType, bool) {
        match self {
            Value::Bool(_) => (ScalarType::Bool, false),
            Value::Int32(_) => (ScalarType::Int32, false),
            Value::Int64(_) => (ScalarType::Int64, false),
            Value::Float32(_) => (ScalarType::Float32, false),
            Value::Float64(_) => (ScalarType::Float64, false),
            Value::String(_) => (ScalarType::String, false),
            Value::Bytes(_) => (ScalarType::Bytes, false),
            Value::Timestamp(_) => (ScalarType::Timestamp, false),
            Value::BoolList(_) => (ScalarType::Bool, true),
            Value::Int32List(_) => (ScalarType::Int32, true),
            Value::Int64List(_) => (ScalarType::Int64, true),
            Value::Float32List(_) => (ScalarType::Float32, true),
            Value::Float64List(_) => (ScalarType::Float64, true),
            Value::StringList(_) => (ScalarType::String, true),
            Value::BytesList(_) => (ScalarType::Bytes, true),
            Value::TimestampList(_) => (ScalarType::Timestamp, true),
        }
    }

    /// The type this value has on its own; a float32 list reads as `list<float32>`.
    pub fn value_type(&self) -> ValueType {
        match self.shape() {
            (scalar, false) => ValueType::Scalar(scalar),
            (element, true) => ValueType::List(element),
        }
    }
}

impl Value {
    /// A list value from scalar values of `element` type; `None` if one has another type.
    pub fn list_from_scalars(element: ScalarType, items: Vec<Value>) -> Option<Value> {
        macro_rules! collect {
            ($scalar:ident, $list:ident) => {
                Value::$list(
                    items
                        .into_iter()
                        .map(|item| match item {
                            Value::$scalar(inner) => Some(inner),
                            _ => None,
                        })
                        .collect::<Option<_>>()?,
                )
            };
        }
        Some(match element {
            ScalarType::Bool => collect!(Bool, BoolList),
            ScalarType::Int32 => collect!(Int32, Int32List),
            ScalarType::Int64 => collect!(Int64, Int64List),
            ScalarType::Float32 => collect!(Float32, Float32List),
            ScalarType::Float64 => collect!(Float64, Float64List),
            ScalarType::String => collect!(String, StringList),
            ScalarType::Bytes => collect!(Bytes, BytesList),
            ScalarType::Timestamp => collect!(Timestamp, TimestampList),
        })
    }
}

/// A value that does not fit the feature's declared type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("expected a value of type {expected}, got {found}")]
pub struct TypeMismatch {
    pub expected: ValueType,
    pub found: String,
}

impl ValueType {
    /// Checks that `value` can be stored under this declared type.
    pub fn check(&self, value: &Value) -> Result<(), TypeMismatch> {
        let fits = match (self, value) {
            (ValueType::Embedding { dimension }, Value::Float32List(vector)) => {
                vector.len() == *dimension as usize
            }
            (declared, value) => *declared == value.value_type(),
        };
        if fits {
            return Ok(());
        }
        let found = match value {
            Value::Float32List(vector) if matches!(self, ValueType::Embedding { .. }) => {
                format!("a float32 vector of length {}", vector.len())
            }
            other => other.value_type().to_string(),
        };
        Err(TypeMismatch {
            expected: *self,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_scalar() -> impl Strategy<Value = ScalarType> {
        proptest::sample::select(ScalarType::ALL.to_vec())
    }

    fn any_value_type() -> impl Strategy<Value = ValueType> {
        prop_oneof![
            any_scalar().prop_map(ValueType::Scalar),
            any_scalar().prop_map(ValueType::List),
            (1..=MAX_EMBEDDING_DIMENSION).prop_map(|dimension| ValueType::Embedding { dimension }),
        ]
    }

    proptest! {
        #[test]
        fn every_type_reads_back_from_its_spelling(value_type in any_value_type()) {
            prop_assert_eq!(value_type.to_string().parse::<ValueType>(), Ok(value_type));
        }
    }

    #[test]
    fn reads_the_spellings_engineers_write() {
        assert_eq!("int64".parse(), Ok(ValueType::Scalar(ScalarType::Int64)));
        assert_eq!(
            " list< string > ".parse(),
            Ok(ValueType::List(ScalarType::String))
        );
        assert_eq!(
            "embedding<64>".parse(),
            Ok(ValueType::Embedding { dimension: 64 })
        );
    }

    #[test]
    fn rejects_unknown_and_malformed_types_with_a_hint() {
        let unknown = "integer".parse::<ValueType>().unwrap_err();
        assert_eq!(unknown, ParseTypeError::Unknown("integer".into()));
        assert!(unknown.to_string().contains("int64"), "{unknown}");

        assert_eq!(
            "list<list<int64>>".parse::<ValueType>(),
            Err(ParseTypeError::NestedList("list<list<int64>>".into()))
        );
        for bad in ["embedding<0>", "embedding<x>", "embedding<100000>"] {
            assert_eq!(
                bad.parse::<ValueType>(),
                Err(ParseTypeError::BadDimension(bad.into()))
            );
        }
    }

    #[test]
    fn an_embedding_accepts_only_vectors_of_its_dimension() {
        let embedding = ValueType::Embedding { dimension: 3 };
        assert_eq!(
            embedding.check(&Value::Float32List(vec![0.1, 0.2, 0.3])),
            Ok(())
        );

        let error = embedding
            .check(&Value::Float32List(vec![0.1, 0.2]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected a value of type embedding<3>, got a float32 vector of length 2"
        );
    }

    #[test]
    fn lists_build_from_scalars_of_their_element_type_only() {
        let items = vec![Value::Int64(1), Value::Int64(2)];
        assert_eq!(
            Value::list_from_scalars(ScalarType::Int64, items.clone()),
            Some(Value::Int64List(vec![1, 2]))
        );
        assert_eq!(Value::list_from_scalars(ScalarType::Int32, items), None);
    }

    #[test]
    fn a_wrong_scalar_names_both_types() {
        let error = ValueType::Scalar(ScalarType::Int64)
            .check(&Value::String("42".into()))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected a value of type int64, got string"
        );
        assert_eq!(
            ValueType::List(ScalarType::Int64).check(&Value::Int64List(vec![1, 2])),
            Ok(())
        );
    }
}
