//! How Avro fields feed features: resolving a field path and checking a feature type against the
//! field's Avro type.
//!
//! A path is dot-separated field names (`device.platform`). It reaches into nested records, also
//! through an optional union `["null", Record]`; an optional field makes the feature optional.
//! Type compatibility follows Avro's promotion rules: an `int` field can feed an `int64` or a
//! `float64` feature, never the other way round.

use apache_avro::Schema;
use apache_avro::schema::{RecordSchema, UnionSchema};
use quiver_core::definition::{Derivation, Entity, FeatureView};
use quiver_core::value::{ScalarType, ValueType};
use thiserror::Error;

/// The field a path leads to.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedField<'a> {
    /// The field's type, with an optional union's `null` branch removed.
    pub schema: &'a Schema,
    /// Whether the field, or a record on the way to it, may be null.
    pub optional: bool,
}

/// A field path that does not lead to a field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldPathError {
    #[error("field `{missing}` not found in record `{record}`; it has: {available}")]
    NotFound {
        missing: String,
        record: String,
        available: String,
    },
    #[error("`{prefix}` is {found}, not a record, so `{rest}` cannot be read from it")]
    NotARecord {
        prefix: String,
        found: String,
        rest: String,
    },
    #[error("the field path is empty")]
    Empty,
}

/// Follows `path` from the root record `root`.
pub fn resolve_path<'a>(root: &'a Schema, path: &str) -> Result<ResolvedField<'a>, FieldPathError> {
    if path.is_empty() {
        return Err(FieldPathError::Empty);
    }
    let mut current = ResolvedField {
        schema: root,
        optional: false,
    };
    let mut walked = String::new();
    for segment in path.split('.') {
        let Schema::Record(RecordSchema { name, fields, .. }) = current.schema else {
            return Err(FieldPathError::NotARecord {
                prefix: walked,
                found: avro_type_name(current.schema),
                rest: segment.to_owned(),
            });
        };
        let field = fields
            .iter()
            .find(|field| field.name == segment)
            .ok_or_else(|| FieldPathError::NotFound {
                missing: segment.to_owned(),
                record: name.name.clone(),
                available: fields
                    .iter()
                    .map(|field| field.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let (schema, optional) = strip_null(&field.schema);
        current = ResolvedField {
            schema,
            optional: current.optional || optional,
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
    }
    Ok(current)
}

/// `["null", T]` (either order) is `T`, optional; anything else is itself.
fn strip_null(schema: &Schema) -> (&Schema, bool) {
    if let Schema::Union(union) = schema
        && let [only] = non_null_variants(union).as_slice()
    {
        return (only, union.is_nullable());
    }
    (schema, false)
}

fn non_null_variants(union: &UnionSchema) -> Vec<&Schema> {
    union
        .variants()
        .iter()
        .filter(|variant| !matches!(variant, Schema::Null))
        .collect()
}

/// Checks a view against a reader schema known only at ingest time (a Schema Registry
/// subject): each key field, the event time, each field-fed feature and each filtered field must
/// resolve to a field of a fitting type. Returns one line per problem.
pub fn view_mismatches(entity: &Entity, view: &FeatureView, schema: &Schema) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check =
        |path: &str, what: String, fits: &dyn Fn(&Schema) -> bool| match resolve_path(schema, path)
        {
            Ok(field) if fits(field.schema) => {}
            Ok(field) => problems.push(format!(
                "{what}: field `{path}` is Avro {}",
                avro_type_name(field.schema)
            )),
            Err(error) => problems.push(format!("{what}: {error}")),
        };
    for (path, key) in view.source.key_fields.iter().zip(&entity.keys) {
        let key_type = ValueType::Scalar(key.key_type);
        check(path, format!("key `{}` ({key_type})", key.name), &|avro| {
            accepts(key_type, avro)
        });
    }
    check(
        &view.source.event_time,
        "the event time".into(),
        &is_event_time,
    );
    for feature in &view.features {
        if let Derivation::Field(path) = &feature.derivation {
            let value_type = feature.value_type;
            check(
                path,
                format!("feature `{}` ({value_type})", feature.name),
                &|avro| accepts(value_type, avro),
            );
        }
        for path in feature.filter.iter().flat_map(|filter| filter.fields()) {
            check(
                path,
                format!("the filter of feature `{}`", feature.name),
                &is_filterable,
            );
        }
    }
    problems
}

/// Whether values of Avro type `avro` can be stored in a feature declared as `feature`.
pub fn accepts(feature: ValueType, avro: &Schema) -> bool {
    match feature {
        ValueType::Scalar(scalar) => scalar_accepts(scalar, avro),
        ValueType::List(element) => {
            matches!(avro, Schema::Array(array) if scalar_accepts(element, &array.items))
        }
        ValueType::Embedding { .. } => {
            matches!(avro, Schema::Array(array) if matches!(*array.items, Schema::Float))
        }
    }
}

fn scalar_accepts(scalar: ScalarType, avro: &Schema) -> bool {
    match scalar {
        ScalarType::Bool => matches!(avro, Schema::Boolean),
        ScalarType::Int32 => matches!(avro, Schema::Int),
        ScalarType::Int64 => matches!(avro, Schema::Int | Schema::Long),
        ScalarType::Float32 => matches!(avro, Schema::Int | Schema::Long | Schema::Float),
        ScalarType::Float64 => matches!(
            avro,
            Schema::Int | Schema::Long | Schema::Float | Schema::Double
        ),
        ScalarType::String => matches!(avro, Schema::String | Schema::Enum(_) | Schema::Uuid),
        ScalarType::Bytes => matches!(avro, Schema::Bytes | Schema::Fixed(_)),
        ScalarType::Timestamp => matches!(avro, Schema::TimestampMillis | Schema::TimestampMicros),
    }
}

/// Whether a `where:` condition can read a field of this Avro type: a scalar other than bytes.
pub fn is_filterable(avro: &Schema) -> bool {
    matches!(
        avro,
        Schema::Boolean
            | Schema::Int
            | Schema::Long
            | Schema::Float
            | Schema::Double
            | Schema::String
            | Schema::Uuid
            | Schema::Enum(_)
            | Schema::TimestampMillis
            | Schema::TimestampMicros
    )
}

/// Whether a field can be an event time: an Avro timestamp, or a plain long read as
/// milliseconds since the epoch (the convention of Kafka record timestamps).
pub fn is_event_time(avro: &Schema) -> bool {
    matches!(
        avro,
        Schema::TimestampMillis | Schema::TimestampMicros | Schema::Long
    )
}

/// Whether a field of this Avro type can identify an event: a string, an integer, bytes or a
/// UUID (what [`crate::project::event_id`] reads).
pub fn is_identifier(avro: &Schema) -> bool {
    matches!(
        avro,
        Schema::String
            | Schema::Enum(_)
            | Schema::Uuid
            | Schema::Int
            | Schema::Long
            | Schema::Bytes
            | Schema::Fixed(_)
    )
}

/// The Avro type as a schema author would write it, for error messages.
pub fn avro_type_name(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Uuid => "string (uuid)".into(),
        Schema::TimestampMillis => "long (timestamp-millis)".into(),
        Schema::TimestampMicros => "long (timestamp-micros)".into(),
        Schema::Array(array) => format!("array<{}>", avro_type_name(&array.items)),
        Schema::Map(map) => format!("map<{}>", avro_type_name(&map.types)),
        Schema::Union(union) => format!(
            "union [{}]",
            union
                .variants()
                .iter()
                .map(avro_type_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Schema::Record(record) => format!("record {}", record.name.name),
        Schema::Enum(schema) => format!("enum {}", schema.name.name),
        Schema::Fixed(schema) => format!("fixed {}", schema.name.name),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    fn nested() -> Schema {
        schema(
            r#"{"type": "record", "name": "Event", "fields": [
                {"name": "user_id", "type": "long"},
                {"name": "country", "type": ["null", "string"]},
                {"name": "device", "type": {"type": "record", "name": "Device", "fields": [
                    {"name": "platform", "type": {"type": "enum", "name": "Platform", "symbols": ["IOS", "WEB"]}}
                ]}},
                {"name": "referrer", "type": ["null", {"type": "record", "name": "Referrer", "fields": [
                    {"name": "campaign", "type": "string"}
                ]}]}
            ]}"#,
        )
    }

    #[test]
    fn paths_reach_into_nested_and_optional_records() {
        let root = nested();
        let field = resolve_path(&root, "device.platform").unwrap();
        assert!(matches!(field.schema, Schema::Enum(_)) && !field.optional);

        let field = resolve_path(&root, "referrer.campaign").unwrap();
        assert!(matches!(field.schema, Schema::String));
        assert!(
            field.optional,
            "a field inside an optional record is optional"
        );

        let field = resolve_path(&root, "country").unwrap();
        assert!(matches!(field.schema, Schema::String) && field.optional);
    }

    #[test]
    fn bad_paths_say_what_exists() {
        let root = nested();
        let error = resolve_path(&root, "device.os").unwrap_err();
        assert_eq!(
            error.to_string(),
            "field `os` not found in record `Device`; it has: platform"
        );
        let error = resolve_path(&root, "user_id.value").unwrap_err();
        assert_eq!(
            error.to_string(),
            "`user_id` is long, not a record, so `value` cannot be read from it"
        );
    }

    /// The Avro type a producer would naturally use for each feature type.
    fn natural_avro(value_type: ValueType) -> String {
        fn scalar(scalar: ScalarType) -> &'static str {
            match scalar {
                ScalarType::Bool => r#""boolean""#,
                ScalarType::Int32 => r#""int""#,
                ScalarType::Int64 => r#""long""#,
                ScalarType::Float32 => r#""float""#,
                ScalarType::Float64 => r#""double""#,
                ScalarType::String => r#""string""#,
                ScalarType::Bytes => r#""bytes""#,
                ScalarType::Timestamp => r#"{"type": "long", "logicalType": "timestamp-micros"}"#,
            }
        }
        match value_type {
            ValueType::Scalar(s) => scalar(s).to_owned(),
            ValueType::List(s) => format!(r#"{{"type": "array", "items": {}}}"#, scalar(s)),
            ValueType::Embedding { .. } => r#"{"type": "array", "items": "float"}"#.to_owned(),
        }
    }

    fn any_value_type() -> impl Strategy<Value = ValueType> {
        let scalar = proptest::sample::select(ScalarType::ALL.to_vec());
        prop_oneof![
            scalar.clone().prop_map(ValueType::Scalar),
            scalar.prop_map(ValueType::List),
            (1u32..2048).prop_map(|dimension| ValueType::Embedding { dimension }),
        ]
    }

    fn record_with(field_type: &str) -> Schema {
        schema(&format!(
            r#"{{"type": "record", "name": "R", "fields": [{{"name": "f", "type": {field_type}}}]}}"#
        ))
    }

    proptest! {
        #[test]
        fn every_feature_type_accepts_its_natural_avro_type_also_when_optional(value_type in any_value_type()) {
            let natural = natural_avro(value_type);
            let plain = record_with(&natural);
            let field = resolve_path(&plain, "f").unwrap();
            prop_assert!(accepts(value_type, field.schema));
            prop_assert!(!field.optional);

            let optional = record_with(&format!(r#"["null", {natural}]"#));
            let field = resolve_path(&optional, "f").unwrap();
            prop_assert!(accepts(value_type, field.schema));
            prop_assert!(field.optional);
        }

        #[test]
        fn acceptance_follows_avro_promotion(from in any_value_type(), to in any_value_type()) {
            // A feature accepts another feature type's natural Avro type exactly when the types
            // are equal or Avro's promotion rules allow it: int -> long -> float -> double,
            // with int and long also promoting directly to double.
            let promotes = |from: ScalarType, to: ScalarType| {
                use ScalarType::*;
                from == to
                    || matches!(
                        (from, to),
                        (Int32, Int64 | Float32 | Float64) | (Int64, Float32 | Float64) | (Float32, Float64)
                    )
            };
            let scalar_ok = promotes;
            let expected = match (from, to) {
                (ValueType::Scalar(a), ValueType::Scalar(b)) => scalar_ok(a, b),
                (ValueType::List(a), ValueType::List(b)) => scalar_ok(a, b),
                (ValueType::Embedding { .. }, ValueType::Embedding { .. }) => true,
                (ValueType::List(ScalarType::Float32), ValueType::Embedding { .. }) => true,
                (ValueType::Embedding { .. }, ValueType::List(b)) => scalar_ok(ScalarType::Float32, b),
                _ => false,
            };
            let avro = record_with(&natural_avro(from));
            let field = resolve_path(&avro, "f").unwrap();
            prop_assert_eq!(accepts(to, field.schema), expected, "{} -> {}", from, to);
        }
    }

    #[test]
    fn a_wrong_type_is_refused() {
        assert!(!accepts(
            ValueType::Scalar(ScalarType::Int64),
            &Schema::String
        ));
        assert!(!accepts(
            ValueType::Scalar(ScalarType::Int32),
            &Schema::Long
        ));
        assert_eq!(avro_type_name(&Schema::String), "string");
    }
}
