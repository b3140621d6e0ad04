//! The registry as stored: one JSON document, `format_version` first.

use std::collections::BTreeMap;

use quiver_core::definition::{
    Aggregate, AggregateFunction, Derivation, Entity, Feature, FeatureService, FeatureView,
    KeyField, Registry, SchemaRef, Seconds, ServiceFeature, Source, VersionedView,
};
use quiver_core::filter::{CompareOp, Filter};
use quiver_core::name::Name;
use serde::{Deserialize, Serialize};

use crate::value::StoredValue;
use crate::{FormatError, decode_json, to_json, unversioned};

/// The registry format this Quiver writes, and the newest it reads.
pub const REGISTRY_FORMAT: u32 = 1;

const WHAT: &str = "the stored registry";

#[derive(Serialize, Deserialize)]
struct RegistryDocument {
    #[serde(default = "unversioned")]
    format_version: u32,
    revision: u64,
    entities: Vec<StoredEntity>,
    feature_views: Vec<StoredVersionedView>,
    feature_services: Vec<StoredService>,
}

#[derive(Serialize, Deserialize)]
struct StoredEntity {
    name: String,
    description: String,
    keys: Vec<StoredKeyField>,
}

#[derive(Serialize, Deserialize)]
struct StoredKeyField {
    name: String,
    /// The type's definition-file spelling, such as `int64`.
    key_type: String,
}

#[derive(Serialize, Deserialize)]
struct StoredVersionedView {
    version: u32,
    view: StoredView,
}

/// Durations are whole seconds.
#[derive(Serialize, Deserialize)]
struct StoredView {
    name: String,
    entity: String,
    source: StoredSource,
    ttl: Option<u64>,
    #[serde(default)]
    allowed_lateness: Option<u64>,
    #[serde(default)]
    dedup: Option<u64>,
    description: String,
    owner: String,
    tags: BTreeMap<String, String>,
    features: Vec<StoredFeature>,
}

#[derive(Serialize, Deserialize)]
struct StoredSource {
    topic: String,
    schema: StoredSchema,
    key_fields: Vec<String>,
    event_time: String,
    #[serde(default)]
    event_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
enum StoredSchema {
    File { path: String, avsc: String },
    Subject(String),
}

#[derive(Serialize, Deserialize)]
struct StoredFeature {
    name: String,
    /// The type's definition-file spelling, such as `list<string>`.
    value_type: String,
    derivation: StoredDerivation,
    default: Option<StoredValue>,
    description: String,
    #[serde(default)]
    filter: Option<StoredFilter>,
}

#[derive(Serialize, Deserialize)]
enum StoredDerivation {
    Field(String),
    Aggregate(StoredAggregate),
}

#[derive(Serialize, Deserialize)]
struct StoredAggregate {
    function: StoredFunction,
    of: Option<String>,
    window: Option<u64>,
    #[serde(default)]
    resolution: Option<u64>,
}

#[derive(Serialize, Deserialize)]
enum StoredFunction {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
    LastK(u32),
    ApproxDistinct,
}

#[derive(Serialize, Deserialize)]
enum StoredFilter {
    All(Vec<StoredFilter>),
    Any(Vec<StoredFilter>),
    Compare {
        field: String,
        op: StoredOp,
        literal: StoredValue,
    },
    In {
        field: String,
        literals: Vec<StoredValue>,
    },
    IsNull(String),
    NotNull(String),
}

#[derive(Serialize, Deserialize)]
enum StoredOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Serialize, Deserialize)]
struct StoredService {
    name: String,
    description: String,
    features: Vec<StoredServiceFeature>,
}

#[derive(Serialize, Deserialize)]
struct StoredServiceFeature {
    view: String,
    version: Option<u32>,
    feature: String,
}

/// The registry as the online stores keep it.
pub fn encode_registry(registry: &Registry) -> Vec<u8> {
    to_json(&RegistryDocument {
        format_version: REGISTRY_FORMAT,
        revision: registry.revision,
        entities: registry.entities.iter().map(stored_entity).collect(),
        feature_views: registry
            .feature_views
            .iter()
            .map(|versioned| StoredVersionedView {
                version: versioned.version,
                view: stored_view(&versioned.view),
            })
            .collect(),
        feature_services: registry
            .feature_services
            .iter()
            .map(stored_service)
            .collect(),
    })
}

/// A registry [`encode_registry`] stored, of this format or an older one.
pub fn decode_registry(bytes: &[u8]) -> Result<Registry, FormatError> {
    let document: RegistryDocument = decode_json(
        WHAT,
        REGISTRY_FORMAT,
        bytes,
        |document: &RegistryDocument| document.format_version,
    )?;
    Ok(Registry {
        revision: document.revision,
        entities: document
            .entities
            .into_iter()
            .map(entity)
            .collect::<Result<_, _>>()?,
        feature_views: document
            .feature_views
            .into_iter()
            .map(|stored| {
                Ok(VersionedView {
                    version: stored.version,
                    view: view(stored.view)?,
                })
            })
            .collect::<Result<_, FormatError>>()?,
        feature_services: document
            .feature_services
            .into_iter()
            .map(service)
            .collect::<Result<_, _>>()?,
    })
}

fn invalid(detail: String) -> FormatError {
    FormatError::Invalid { what: WHAT, detail }
}

fn name(text: String) -> Result<Name, FormatError> {
    text.parse()
        .map_err(|error| invalid(format!("the name `{text}`: {error}")))
}

fn stored_entity(entity: &Entity) -> StoredEntity {
    StoredEntity {
        name: entity.name.to_string(),
        description: entity.description.clone(),
        keys: entity
            .keys
            .iter()
            .map(|key| StoredKeyField {
                name: key.name.to_string(),
                key_type: key.key_type.to_string(),
            })
            .collect(),
    }
}

fn entity(stored: StoredEntity) -> Result<Entity, FormatError> {
    Ok(Entity {
        name: name(stored.name)?,
        description: stored.description,
        keys: stored
            .keys
            .into_iter()
            .map(|key| {
                Ok(KeyField {
                    name: name(key.name)?,
                    key_type: key.key_type.parse().map_err(|error| {
                        invalid(format!("the key type `{}`: {error}", key.key_type))
                    })?,
                })
            })
            .collect::<Result<_, FormatError>>()?,
    })
}

fn stored_view(view: &FeatureView) -> StoredView {
    let seconds = |duration: Option<Seconds>| duration.map(|seconds| seconds.0);
    StoredView {
        name: view.name.to_string(),
        entity: view.entity.to_string(),
        source: StoredSource {
            topic: view.source.topic.clone(),
            schema: match &view.source.schema {
                SchemaRef::File { path, avsc } => StoredSchema::File {
                    path: path.clone(),
                    avsc: avsc.clone(),
                },
                SchemaRef::Subject(subject) => StoredSchema::Subject(subject.clone()),
            },
            key_fields: view.source.key_fields.clone(),
            event_time: view.source.event_time.clone(),
            event_id: view.source.event_id.clone(),
        },
        ttl: seconds(view.ttl),
        allowed_lateness: seconds(view.allowed_lateness),
        dedup: seconds(view.dedup),
        description: view.description.clone(),
        owner: view.owner.clone(),
        tags: view.tags.clone(),
        features: view.features.iter().map(stored_feature).collect(),
    }
}

fn view(stored: StoredView) -> Result<FeatureView, FormatError> {
    let StoredSource {
        topic,
        schema,
        key_fields,
        event_time,
        event_id,
    } = stored.source;
    Ok(FeatureView {
        name: name(stored.name)?,
        entity: name(stored.entity)?,
        source: Source {
            topic,
            schema: match schema {
                StoredSchema::File { path, avsc } => SchemaRef::File { path, avsc },
                StoredSchema::Subject(subject) => SchemaRef::Subject(subject),
            },
            key_fields,
            event_time,
            event_id,
        },
        ttl: stored.ttl.map(Seconds),
        allowed_lateness: stored.allowed_lateness.map(Seconds),
        dedup: stored.dedup.map(Seconds),
        description: stored.description,
        owner: stored.owner,
        tags: stored.tags,
        features: stored
            .features
            .into_iter()
            .map(feature)
            .collect::<Result<_, _>>()?,
    })
}

fn stored_feature(feature: &Feature) -> StoredFeature {
    StoredFeature {
        name: feature.name.to_string(),
        value_type: feature.value_type.to_string(),
        derivation: match &feature.derivation {
            Derivation::Field(path) => StoredDerivation::Field(path.clone()),
            Derivation::Aggregate(aggregate) => StoredDerivation::Aggregate(StoredAggregate {
                function: stored_function(aggregate.function),
                of: aggregate.of.clone(),
                window: aggregate.window.map(|window| window.0),
                resolution: aggregate.resolution.map(|resolution| resolution.0),
            }),
        },
        default: feature.default.as_ref().map(StoredValue::from),
        description: feature.description.clone(),
        filter: feature.filter.as_ref().map(stored_filter),
    }
}

fn feature(stored: StoredFeature) -> Result<Feature, FormatError> {
    Ok(Feature {
        value_type: stored
            .value_type
            .parse()
            .map_err(|error| invalid(format!("the type of feature `{}`: {error}", stored.name)))?,
        name: name(stored.name)?,
        derivation: match stored.derivation {
            StoredDerivation::Field(path) => Derivation::Field(path),
            StoredDerivation::Aggregate(aggregate) => Derivation::Aggregate(Aggregate {
                function: function(aggregate.function),
                of: aggregate.of,
                window: aggregate.window.map(Seconds),
                resolution: aggregate.resolution.map(Seconds),
            }),
        },
        default: stored.default.map(Into::into),
        description: stored.description,
        filter: stored.filter.map(filter),
    })
}

fn stored_function(function: AggregateFunction) -> StoredFunction {
    match function {
        AggregateFunction::Count => StoredFunction::Count,
        AggregateFunction::Sum => StoredFunction::Sum,
        AggregateFunction::Min => StoredFunction::Min,
        AggregateFunction::Max => StoredFunction::Max,
        AggregateFunction::Avg => StoredFunction::Avg,
        AggregateFunction::First => StoredFunction::First,
        AggregateFunction::Last => StoredFunction::Last,
        AggregateFunction::LastK(k) => StoredFunction::LastK(k),
        AggregateFunction::ApproxDistinct => StoredFunction::ApproxDistinct,
    }
}

fn function(stored: StoredFunction) -> AggregateFunction {
    match stored {
        StoredFunction::Count => AggregateFunction::Count,
        StoredFunction::Sum => AggregateFunction::Sum,
        StoredFunction::Min => AggregateFunction::Min,
        StoredFunction::Max => AggregateFunction::Max,
        StoredFunction::Avg => AggregateFunction::Avg,
        StoredFunction::First => AggregateFunction::First,
        StoredFunction::Last => AggregateFunction::Last,
        StoredFunction::LastK(k) => AggregateFunction::LastK(k),
        StoredFunction::ApproxDistinct => AggregateFunction::ApproxDistinct,
    }
}

fn stored_filter(filter: &Filter) -> StoredFilter {
    match filter {
        Filter::All(all) => StoredFilter::All(all.iter().map(stored_filter).collect()),
        Filter::Any(any) => StoredFilter::Any(any.iter().map(stored_filter).collect()),
        Filter::Compare { field, op, literal } => StoredFilter::Compare {
            field: field.clone(),
            op: match op {
                CompareOp::Eq => StoredOp::Eq,
                CompareOp::Ne => StoredOp::Ne,
                CompareOp::Lt => StoredOp::Lt,
                CompareOp::Le => StoredOp::Le,
                CompareOp::Gt => StoredOp::Gt,
                CompareOp::Ge => StoredOp::Ge,
            },
            literal: literal.into(),
        },
        Filter::In { field, literals } => StoredFilter::In {
            field: field.clone(),
            literals: literals.iter().map(StoredValue::from).collect(),
        },
        Filter::IsNull(field) => StoredFilter::IsNull(field.clone()),
        Filter::NotNull(field) => StoredFilter::NotNull(field.clone()),
    }
}

fn filter(stored: StoredFilter) -> Filter {
    match stored {
        StoredFilter::All(all) => Filter::All(all.into_iter().map(filter).collect()),
        StoredFilter::Any(any) => Filter::Any(any.into_iter().map(filter).collect()),
        StoredFilter::Compare { field, op, literal } => Filter::Compare {
            field,
            op: match op {
                StoredOp::Eq => CompareOp::Eq,
                StoredOp::Ne => CompareOp::Ne,
                StoredOp::Lt => CompareOp::Lt,
                StoredOp::Le => CompareOp::Le,
                StoredOp::Gt => CompareOp::Gt,
                StoredOp::Ge => CompareOp::Ge,
            },
            literal: literal.into(),
        },
        StoredFilter::In { field, literals } => Filter::In {
            field,
            literals: literals.into_iter().map(Into::into).collect(),
        },
        StoredFilter::IsNull(field) => Filter::IsNull(field),
        StoredFilter::NotNull(field) => Filter::NotNull(field),
    }
}

fn stored_service(service: &FeatureService) -> StoredService {
    StoredService {
        name: service.name.to_string(),
        description: service.description.clone(),
        features: service
            .features
            .iter()
            .map(|feature| StoredServiceFeature {
                view: feature.view.to_string(),
                version: feature.version,
                feature: feature.feature.to_string(),
            })
            .collect(),
    }
}

fn service(stored: StoredService) -> Result<FeatureService, FormatError> {
    Ok(FeatureService {
        name: name(stored.name)?,
        description: stored.description,
        features: stored
            .features
            .into_iter()
            .map(|feature| {
                Ok(ServiceFeature {
                    view: name(feature.view)?,
                    version: feature.version,
                    feature: name(feature.feature)?,
                })
            })
            .collect::<Result<_, FormatError>>()?,
    })
}
