//! One decoded Avro event becomes the feature values of one view: the entity key, the event
//! time, and a value per field-fed feature; or the reason the event cannot be used, which the
//! ingester sends to the dead-letter topic.
//!
//! Aggregate features are not projected here: their tiles are computed by the aggregation step.
//! [`project_upsert`] reads the other input shape, an upsert command (`feature_upsert.avsc`)
//! carrying values computed elsewhere, and [`project_deletion`] a deletion command
//! (`entity_deleted.avsc`) naming an entity to remove.

use apache_avro::types::Value as Avro;
use quiver_core::aggregate::Input;
use quiver_core::definition::{AggregateFunction, Derivation, Entity, FeatureView};
use quiver_core::filter::Filter;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureWrite, plausible_event_time};
use quiver_core::value::{ScalarType, Value, ValueType};
use thiserror::Error;

/// The schema of upsert commands, `schemas/feature_upsert.avsc`, built in.
pub const FEATURE_UPSERT_AVSC: &str = include_str!("../../../schemas/feature_upsert.avsc");

/// The schema of deletion commands, `schemas/entity_deleted.avsc`, built in.
pub const ENTITY_DELETED_AVSC: &str = include_str!("../../../schemas/entity_deleted.avsc");

/// Why an event was not used, as a stable name for dead-letter headers and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    MissingKey,
    WrongType,
    MissingEventTime,
    AbsurdEventTime,
    /// The view declares an event id, and the event has none.
    MissingEventId,
    /// An upsert command names a view or feature the registry does not have.
    UnknownTarget,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingKey => "missing_key",
            RejectReason::WrongType => "wrong_type",
            RejectReason::MissingEventTime => "missing_event_time",
            RejectReason::AbsurdEventTime => "absurd_event_time",
            RejectReason::MissingEventId => "missing_event_id",
            RejectReason::UnknownTarget => "unknown_target",
        }
    }
}

/// An event that cannot feed the view, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

fn reject(reason: RejectReason, detail: String) -> Rejection {
    Rejection { reason, detail }
}

/// Projects `event` onto `view`, whose entity is `entity`. `now_micros` bounds the event time.
pub fn project(
    entity: &Entity,
    view: &FeatureView,
    event: &Avro,
    now_micros: i64,
) -> Result<FeatureWrite, Rejection> {
    let mut parts = Vec::with_capacity(entity.keys.len());
    for (path, key) in view.source.key_fields.iter().zip(&entity.keys) {
        let field = lookup(event, path).ok_or_else(|| {
            reject(
                RejectReason::MissingKey,
                format!("key field `{path}` is missing or null"),
            )
        })?;
        let part = key_part(key.key_type, field).ok_or_else(|| {
            reject(
                RejectReason::WrongType,
                format!(
                    "key field `{path}` holds {}, not {}",
                    describe(field),
                    key.key_type
                ),
            )
        })?;
        parts.push(part);
    }
    let key = EntityKey::new(parts).ok_or_else(|| {
        reject(
            RejectReason::MissingKey,
            "the entity has no key field".into(),
        )
    })?;

    let event_time_micros = checked_event_time(event, &view.source.event_time, now_micros)?;

    let mut values = Vec::new();
    for feature in &view.features {
        let Derivation::Field(path) = &feature.derivation else {
            continue;
        };
        if !passes(feature.filter.as_ref(), event) {
            continue;
        }
        let Some(field) = lookup(event, path) else {
            continue;
        };
        let value = feature_value(feature.value_type, field).ok_or_else(|| {
            reject(
                RejectReason::WrongType,
                format!(
                    "feature `{}` is {}, but field `{path}` holds {}",
                    feature.name,
                    feature.value_type,
                    describe(field)
                ),
            )
        })?;
        values.push((feature.name.clone(), value));
    }
    Ok(FeatureWrite {
        key,
        event_time_micros,
        values,
    })
}

/// The inputs `event` gives the aggregate features of `view`, in
/// [`aggregate_features`](quiver_core::aggregate::aggregate_features) order: nothing where the
/// event fails the feature's filter or lacks the aggregated field, the event itself for a
/// `count` of events, and the field's value otherwise.
pub fn aggregate_inputs(view: &FeatureView, event: &Avro) -> Result<Vec<Input>, Rejection> {
    quiver_core::aggregate::aggregate_features(view)
        .into_iter()
        .map(|(feature, aggregate)| {
            if !passes(feature.filter.as_ref(), event) {
                return Ok(Input::Nothing);
            }
            let Some(path) = &aggregate.of else {
                return Ok(Input::Event);
            };
            let Some(field) = lookup(event, path) else {
                return Ok(Input::Nothing);
            };
            let scalar = match (aggregate.function, feature.value_type) {
                // Any present value counts, and distinct values of any type are told apart.
                (AggregateFunction::Count | AggregateFunction::ApproxDistinct, _) => {
                    natural_scalar(field)
                }
                (AggregateFunction::LastK(_), ValueType::List(element)) => Some(element),
                (AggregateFunction::Sum | AggregateFunction::Avg, ValueType::Scalar(output)) => {
                    // Sums of integers stay integers; everything else adds up as floats.
                    Some(output)
                }
                (_, ValueType::Scalar(scalar)) => Some(scalar),
                _ => None,
            };
            scalar
                .and_then(|scalar| scalar_value(scalar, field))
                .map(Input::Value)
                .ok_or_else(|| {
                    reject(
                        RejectReason::WrongType,
                        format!(
                            "aggregate `{}` reads field `{path}`, which holds {}",
                            feature.name,
                            describe(field)
                        ),
                    )
                })
        })
        .collect()
}

/// Whether `event` passes `filter`; every event passes no filter. Fields are compared as their
/// natural scalar: integers as int64, floats as float64, enums and uuids as strings.
fn passes(filter: Option<&Filter>, event: &Avro) -> bool {
    filter.is_none_or(|filter| filter.matches(&|path| filter_operand(event, path)))
}

/// The value at `path` as a filter sees it; `None` when missing, null or not a scalar.
fn filter_operand(event: &Avro, path: &str) -> Option<Value> {
    let field = lookup(event, path)?;
    scalar_value(natural_scalar(field)?, field)
}

/// The id of `event` at the view's `event_id` path, as text: strings as they are, integers in
/// decimal, bytes in lower-case hex. `None` for a view that declares no event id.
pub fn event_id(view: &FeatureView, event: &Avro) -> Result<Option<String>, Rejection> {
    let Some(path) = &view.source.event_id else {
        return Ok(None);
    };
    let missing = |found: &str| {
        reject(
            RejectReason::MissingEventId,
            format!("event id field `{path}` is {found}"),
        )
    };
    let field = lookup(event, path).ok_or_else(|| missing("missing or null"))?;
    let id = match field {
        Avro::String(text) | Avro::Enum(_, text) => text.clone(),
        Avro::Uuid(uuid) => uuid.to_string(),
        Avro::Int(number) => number.to_string(),
        Avro::Long(number) => number.to_string(),
        Avro::Bytes(bytes) | Avro::Fixed(_, bytes) => {
            bytes.iter().map(|byte| format!("{byte:02x}")).collect()
        }
        other => return Err(missing(describe(other))),
    };
    Ok(Some(id))
}

/// The feature type an Avro scalar holds as it is, for counting distinct values of any type.
fn natural_scalar(value: &Avro) -> Option<ScalarType> {
    Some(match value {
        Avro::Boolean(_) => ScalarType::Bool,
        Avro::Int(_) | Avro::Long(_) => ScalarType::Int64,
        Avro::Float(_) | Avro::Double(_) => ScalarType::Float64,
        Avro::String(_) | Avro::Enum(..) | Avro::Uuid(_) => ScalarType::String,
        Avro::Bytes(_) | Avro::Fixed(..) => ScalarType::Bytes,
        Avro::TimestampMillis(_) | Avro::TimestampMicros(_) => ScalarType::Timestamp,
        _ => return None,
    })
}

/// The event time at `path`, if it is there and plausible.
fn checked_event_time(event: &Avro, path: &str, now_micros: i64) -> Result<i64, Rejection> {
    let event_time_micros = lookup(event, path)
        .and_then(event_time_micros)
        .ok_or_else(|| {
            reject(
                RejectReason::MissingEventTime,
                format!("event time field `{path}` is missing, null or not a timestamp"),
            )
        })?;
    if !plausible_event_time(event_time_micros, now_micros) {
        return Err(reject(
            RejectReason::AbsurdEventTime,
            format!(
                "event time {event_time_micros} µs since the epoch is before 2000 or more than an \
                 hour ahead of now ({now_micros} µs)"
            ),
        ));
    }
    Ok(event_time_micros)
}

/// Reads an upsert command: the view it names (looked up with `find_view`, which gives the
/// view's entity and definition), the entity key from the `keys` map, and each value of the
/// `values` map as the named feature's type.
pub fn project_upsert<'r>(
    command: &Avro,
    find_view: impl Fn(&str) -> Option<(&'r Entity, &'r FeatureView)>,
    now_micros: i64,
) -> Result<(&'r FeatureView, FeatureWrite), Rejection> {
    let view_name = match lookup(command, "feature_view") {
        Some(Avro::String(name)) => name.as_str(),
        _ => {
            return Err(reject(
                RejectReason::UnknownTarget,
                "no `feature_view` string".into(),
            ));
        }
    };
    let (entity, view) = find_view(view_name).ok_or_else(|| {
        reject(
            RejectReason::UnknownTarget,
            format!("feature view `{view_name}` is not in the registry"),
        )
    })?;
    let key = key_from_map(command, entity)?;
    let event_time_micros = checked_event_time(command, "event_time", now_micros)?;

    let Some(Avro::Map(values)) = lookup(command, "values") else {
        return Err(reject(RejectReason::WrongType, "no `values` map".into()));
    };
    let mut names: Vec<&String> = values.keys().collect();
    names.sort();
    let mut written = Vec::with_capacity(names.len());
    for name in names {
        let Some(value) = unwrap_union(&values[name]).map(unwrap_upsert_wrapper) else {
            continue;
        };
        let feature = view
            .features
            .iter()
            .find(|feature| feature.name.as_str() == name.as_str())
            .filter(|feature| matches!(feature.derivation, Derivation::Field(_)))
            .ok_or_else(|| {
                reject(
                    RejectReason::UnknownTarget,
                    format!("feature view `{view_name}` has no field-fed feature `{name}`"),
                )
            })?;
        let converted = feature_value(feature.value_type, value).ok_or_else(|| {
            reject(
                RejectReason::WrongType,
                format!(
                    "feature `{name}` is {}, but the command gives {}",
                    feature.value_type,
                    describe(value)
                ),
            )
        })?;
        written.push((feature.name.clone(), converted));
    }
    Ok((
        view,
        FeatureWrite {
            key,
            event_time_micros,
            values: written,
        },
    ))
}

/// An entity to remove, read from a deletion command.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion<'r> {
    pub entity: &'r Entity,
    pub key: EntityKey,
    /// Values with an older event time are removed; microseconds since the Unix epoch.
    pub event_time_micros: i64,
}

/// Reads a deletion command: the entity it names (looked up with `find_entity`), its key from
/// the `keys` map, and the event time of the deletion.
pub fn project_deletion<'r>(
    command: &Avro,
    find_entity: impl Fn(&str) -> Option<&'r Entity>,
    now_micros: i64,
) -> Result<Deletion<'r>, Rejection> {
    let entity = match lookup(command, "entity") {
        Some(Avro::String(name)) => find_entity(name).ok_or_else(|| {
            reject(
                RejectReason::UnknownTarget,
                format!("entity `{name}` is not in the registry"),
            )
        })?,
        _ => {
            return Err(reject(
                RejectReason::UnknownTarget,
                "no `entity` string".into(),
            ));
        }
    };
    Ok(Deletion {
        entity,
        key: key_from_map(command, entity)?,
        event_time_micros: checked_event_time(command, "event_time", now_micros)?,
    })
}

/// The key of `entity` from the `keys` map of a command, by key field name.
fn key_from_map(command: &Avro, entity: &Entity) -> Result<EntityKey, Rejection> {
    let Some(Avro::Map(keys)) = lookup(command, "keys") else {
        return Err(reject(RejectReason::MissingKey, "no `keys` map".into()));
    };
    let mut parts = Vec::with_capacity(entity.keys.len());
    for key in &entity.keys {
        let value = keys
            .get(key.name.as_str())
            .and_then(unwrap_union)
            .ok_or_else(|| {
                reject(
                    RejectReason::MissingKey,
                    format!("`keys` lacks `{}` of entity `{}`", key.name, entity.name),
                )
            })?;
        parts.push(key_part(key.key_type, value).ok_or_else(|| {
            reject(
                RejectReason::WrongType,
                format!(
                    "key `{}` holds {}, not {}",
                    key.name,
                    describe(value),
                    key.key_type
                ),
            )
        })?);
    }
    EntityKey::new(parts).ok_or_else(|| {
        reject(
            RejectReason::MissingKey,
            "the entity has no key field".into(),
        )
    })
}

/// Lists and timestamps travel in one-field records (`{items: [...]}`, `{micros: ...}`), since
/// an Avro union holds one array and one long at most.
fn unwrap_upsert_wrapper(value: &Avro) -> &Avro {
    match value {
        Avro::Record(fields) => match fields.as_slice() {
            [(name, inner)] if name == "items" || name == "micros" => inner,
            _ => value,
        },
        other => other,
    }
}

/// The value at a dot-separated path; `None` if a field is missing or null on the way.
fn lookup<'v>(event: &'v Avro, path: &str) -> Option<&'v Avro> {
    let mut current = unwrap_union(event)?;
    for segment in path.split('.') {
        let Avro::Record(fields) = current else {
            return None;
        };
        let (_, value) = fields.iter().find(|(name, _)| name == segment)?;
        current = unwrap_union(value)?;
    }
    Some(current)
}

fn unwrap_union(value: &Avro) -> Option<&Avro> {
    match value {
        Avro::Union(_, inner) => unwrap_union(inner),
        Avro::Null => None,
        other => Some(other),
    }
}

fn event_time_micros(value: &Avro) -> Option<i64> {
    match value {
        Avro::TimestampMillis(ms) | Avro::Long(ms) => ms.checked_mul(1_000),
        Avro::TimestampMicros(us) => Some(*us),
        _ => None,
    }
}

fn key_part(key_type: ScalarType, value: &Avro) -> Option<KeyPart> {
    Some(match (key_type, value) {
        (ScalarType::Int32, Avro::Int(v)) => KeyPart::Int32(*v),
        (ScalarType::Int64, Avro::Int(v)) => KeyPart::Int64(i64::from(*v)),
        (ScalarType::Int64, Avro::Long(v)) => KeyPart::Int64(*v),
        (ScalarType::String, Avro::String(v) | Avro::Enum(_, v)) => KeyPart::String(v.clone()),
        (ScalarType::String, Avro::Uuid(v)) => KeyPart::String(v.to_string()),
        (ScalarType::Bytes, Avro::Bytes(v) | Avro::Fixed(_, v)) => KeyPart::Bytes(v.clone()),
        _ => return None,
    })
}

fn scalar_value(scalar: ScalarType, value: &Avro) -> Option<Value> {
    Some(match (scalar, value) {
        (ScalarType::Bool, Avro::Boolean(v)) => Value::Bool(*v),
        (ScalarType::Int32, Avro::Int(v)) => Value::Int32(*v),
        (ScalarType::Int64, Avro::Int(v)) => Value::Int64(i64::from(*v)),
        (ScalarType::Int64, Avro::Long(v)) => Value::Int64(*v),
        (ScalarType::Float32, Avro::Int(v)) => Value::Float32(*v as f32),
        (ScalarType::Float32, Avro::Long(v)) => Value::Float32(*v as f32),
        (ScalarType::Float32, Avro::Float(v)) => Value::Float32(*v),
        (ScalarType::Float64, Avro::Int(v)) => Value::Float64(f64::from(*v)),
        (ScalarType::Float64, Avro::Long(v)) => Value::Float64(*v as f64),
        (ScalarType::Float64, Avro::Float(v)) => Value::Float64(f64::from(*v)),
        (ScalarType::Float64, Avro::Double(v)) => Value::Float64(*v),
        (ScalarType::String, Avro::String(v) | Avro::Enum(_, v)) => Value::String(v.clone()),
        (ScalarType::String, Avro::Uuid(v)) => Value::String(v.to_string()),
        (ScalarType::Bytes, Avro::Bytes(v) | Avro::Fixed(_, v)) => Value::Bytes(v.clone()),
        (ScalarType::Timestamp, Avro::TimestampMillis(_) | Avro::TimestampMicros(_)) => {
            Value::Timestamp(event_time_micros(value)?)
        }
        _ => return None,
    })
}

/// The feature value `value` holds as a `value_type`; `None` if it does not fit.
pub fn feature_value(value_type: ValueType, value: &Avro) -> Option<Value> {
    let list = |element: ScalarType| match value {
        Avro::Array(items) => items
            .iter()
            .map(|item| scalar_value(element, unwrap_union(item)?))
            .collect::<Option<Vec<_>>>()
            .and_then(|items| Value::list_from_scalars(element, items)),
        _ => None,
    };
    match value_type {
        ValueType::Scalar(scalar) => scalar_value(scalar, value),
        ValueType::List(element) => list(element),
        ValueType::Embedding { dimension } => list(ScalarType::Float32).filter(
            |embedding| matches!(embedding, Value::Float32List(v) if v.len() == dimension as usize),
        ),
    }
}

fn describe(value: &Avro) -> &'static str {
    match value {
        Avro::Boolean(_) => "a boolean",
        Avro::Int(_) => "an int",
        Avro::Long(_) => "a long",
        Avro::Float(_) => "a float",
        Avro::Double(_) => "a double",
        Avro::String(_) | Avro::Enum(..) | Avro::Uuid(_) => "a string",
        Avro::Bytes(_) | Avro::Fixed(..) => "bytes",
        Avro::Array(_) => "an array",
        Avro::Record(_) => "a record",
        Avro::Map(_) => "a map",
        _ => "another Avro type",
    }
}
