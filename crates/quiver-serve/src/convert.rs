//! Between the wire types of `quiver.v1` and the domain's keys and values.

use quiver_core::definition::{Entity, VersionedView};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::value::{ScalarType, Value};
use quiver_proto::v1 as pb;
use quiver_proto::v1::key_column::Values as KeyValues;
use quiver_proto::values::from_wire;
use std::collections::HashMap;
use tonic::Status;

/// The number of entity rows a request carries, checking that every key column has it.
pub(crate) fn row_count(entities: &HashMap<String, pb::KeyColumn>) -> Result<usize, Status> {
    let mut count = None;
    for (name, column) in entities {
        let length = match &column.values {
            Some(KeyValues::Int64Values(list)) => list.values.len(),
            Some(KeyValues::Int32Values(list)) => list.values.len(),
            Some(KeyValues::StringValues(list)) => list.values.len(),
            Some(KeyValues::BytesValues(list)) => list.values.len(),
            None => {
                return Err(Status::invalid_argument(format!(
                    "entity key column `{name}` has no values"
                )));
            }
        };
        match count {
            None => count = Some(length),
            Some(rows) if rows != length => {
                return Err(Status::invalid_argument(format!(
                    "entity key columns differ in length: `{name}` has {length} rows, others {rows}"
                )));
            }
            Some(_) => {}
        }
    }
    count.ok_or_else(|| Status::invalid_argument("no entity rows given; set `entities`"))
}

/// The key of each row for `entity`, from the key columns named by its key fields.
pub(crate) fn keys(
    entity: &Entity,
    view: &VersionedView,
    entities: &HashMap<String, pb::KeyColumn>,
    rows: usize,
) -> Result<Vec<EntityKey>, Status> {
    // Not `vec![Vec::with_capacity(n); rows]`: a clone of an empty vector drops its capacity.
    let mut parts: Vec<Vec<KeyPart>> = (0..rows)
        .map(|_| Vec::with_capacity(entity.keys.len()))
        .collect();
    for field in &entity.keys {
        let column = entities.get(field.name.as_str()).ok_or_else(|| {
            Status::invalid_argument(format!(
                "feature view `{}` is read by key `{}` of entity `{}`, but no such key column \
                 was given",
                view.view.name, field.name, entity.name
            ))
        })?;
        let wrong_type = |given: &str| {
            Status::invalid_argument(format!(
                "key `{}` of entity `{}` is {}, but the request gives {given} values",
                field.name, entity.name, field.key_type
            ))
        };
        let column: Vec<KeyPart> = match (&column.values, field.key_type) {
            (Some(KeyValues::Int64Values(list)), ScalarType::Int64) => {
                list.values.iter().map(|v| KeyPart::Int64(*v)).collect()
            }
            (Some(KeyValues::Int32Values(list)), ScalarType::Int32) => {
                list.values.iter().map(|v| KeyPart::Int32(*v)).collect()
            }
            (Some(KeyValues::StringValues(list)), ScalarType::String) => list
                .values
                .iter()
                .map(|v| KeyPart::String(v.clone()))
                .collect(),
            (Some(KeyValues::BytesValues(list)), ScalarType::Bytes) => list
                .values
                .iter()
                .map(|v| KeyPart::Bytes(v.clone()))
                .collect(),
            (Some(KeyValues::Int64Values(_)), _) => return Err(wrong_type("int64")),
            (Some(KeyValues::Int32Values(_)), _) => return Err(wrong_type("int32")),
            (Some(KeyValues::StringValues(_)), _) => return Err(wrong_type("string")),
            (Some(KeyValues::BytesValues(_)), _) => return Err(wrong_type("bytes")),
            (None, _) => return Err(wrong_type("no")),
        };
        for (row, part) in parts.iter_mut().zip(column) {
            row.push(part);
        }
    }
    parts
        .into_iter()
        .map(|row| {
            EntityKey::new(row).ok_or_else(|| {
                Status::invalid_argument(format!("entity `{}` has no key fields", entity.name))
            })
        })
        .collect()
}

/// The key of one pushed row, from its key fields by name; the error says what is wrong.
pub(crate) fn row_key(
    entity: &Entity,
    mut keys: HashMap<String, pb::Value>,
) -> Result<EntityKey, String> {
    let mut parts = Vec::with_capacity(entity.keys.len());
    for field in &entity.keys {
        let value = keys.remove(field.name.as_str()).ok_or_else(|| {
            format!(
                "key field `{}` of entity `{}` is missing",
                field.name, entity.name
            )
        })?;
        let part = match (from_wire(value), field.key_type) {
            (Some(Value::Int64(v)), ScalarType::Int64) => KeyPart::Int64(v),
            (Some(Value::Int32(v)), ScalarType::Int32) => KeyPart::Int32(v),
            (Some(Value::String(v)), ScalarType::String) => KeyPart::String(v),
            (Some(Value::Bytes(v)), ScalarType::Bytes) => KeyPart::Bytes(v),
            (given, expected) => {
                return Err(format!(
                    "key field `{}` of entity `{}` is {expected}, got {}",
                    field.name,
                    entity.name,
                    given.map_or_else(|| "no value".to_owned(), |v| v.value_type().to_string())
                ));
            }
        };
        parts.push(part);
    }
    if let Some(unknown) = keys.keys().min() {
        return Err(format!(
            "`{unknown}` is not a key field of entity `{}`",
            entity.name
        ));
    }
    EntityKey::new(parts).ok_or_else(|| format!("entity `{}` has no key fields", entity.name))
}
