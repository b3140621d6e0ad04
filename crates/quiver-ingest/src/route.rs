//! From one record to the feature writes of every view that reads its topic.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use quiver_avro::decode::{DecodeError, Decoder};
use quiver_avro::mapping;
use quiver_avro::project::{
    ENTITY_DELETED_AVSC, FEATURE_UPSERT_AVSC, Rejection, aggregate_inputs, event_id, project,
    project_deletion, project_upsert,
};
use quiver_core::aggregate::{Contribution, Input, aggregate_features};
use quiver_core::definition::{Entity, Registry, SchemaRef, VersionedView};
use quiver_core::key::EntityKey;
use quiver_core::store::FeatureWrite;
use quiver_core::ties::{Contender, Tiebreak};
use quiver_offline::{LogColumns, LoggedEvent};

use crate::pipeline::Payload;
use crate::schema_registry::WriterSchemas;
use crate::{IngestError, WireFormat};

/// One view fed by a topic, with the reader schema its features were checked against.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) entity: Entity,
    pub(crate) view: VersionedView,
    pub(crate) decoder: Decoder,
    /// Whether the view has aggregate features, whose inputs are then projected too.
    pub(crate) aggregates: bool,
    /// The columns of the view's offline log, from its reader schema.
    pub(crate) log_columns: LogColumns,
}

/// How record values are framed, with the writer schemas of the Confluent format.
#[derive(Debug)]
pub(crate) enum Framing {
    Plain,
    Confluent(WriterSchemas),
}

impl Framing {
    pub(crate) fn new(wire_format: &WireFormat) -> Self {
        match wire_format {
            WireFormat::Plain => Framing::Plain,
            WireFormat::Confluent {
                writer_schemas,
                schema_registry,
            } => Framing::Confluent(WriterSchemas::new(writer_schemas, schema_registry.clone())),
        }
    }
}

/// The decoder of upsert commands, whose reader schema is built in.
pub(crate) fn upsert_decoder() -> Decoder {
    built_in(FEATURE_UPSERT_AVSC)
}

/// The decoder of deletion commands, whose reader schema is built in.
pub(crate) fn deletion_decoder() -> Decoder {
    built_in(ENTITY_DELETED_AVSC)
}

fn built_in(avsc: &str) -> Decoder {
    Decoder::new(Schema::parse_str(avsc).expect("the built-in schemas are valid"))
}

/// Decodes a record value framed as `framing` says.
fn decode(decoder: &Decoder, framing: &Framing, payload: &[u8]) -> Result<Avro, DeadLetterReason> {
    match framing {
        Framing::Plain => decoder.decode_bare(payload),
        Framing::Confluent(writer_schemas) => {
            decoder.decode_framed(payload, |id| writer_schemas.get(id))
        }
    }
    .map_err(DeadLetterReason::from)
}

impl From<DecodeError> for DeadLetterReason {
    fn from(error: DecodeError) -> Self {
        DeadLetterReason {
            reason: match error {
                DecodeError::Undecodable(_) => "undecodable",
                DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            },
            detail: error.to_string(),
        }
    }
}

/// Why a record went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetterReason {
    /// A stable name: `undecodable`, `unknown_schema_id`, or a projection reason.
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

impl From<Rejection> for DeadLetterReason {
    fn from(rejection: Rejection) -> Self {
        DeadLetterReason {
            reason: rejection.reason.as_str(),
            detail: rejection.detail,
        }
    }
}

/// The latest version of every view, by source topic. Views that read a Schema Registry
/// subject take their reader schema from `subjects`.
pub(crate) fn routes(
    registry: &Registry,
    subjects: &HashMap<String, Schema>,
) -> Result<HashMap<String, Vec<Arc<Route>>>, IngestError> {
    let mut routes: HashMap<String, Vec<Arc<Route>>> = HashMap::new();
    for latest in registry.latest_views() {
        let view = latest.clone();
        let name = &view.view.name;
        let entity = registry
            .entity(&view.view.entity)
            .ok_or_else(|| IngestError::Config(format!("view `{name}` names a missing entity")))?
            .clone();
        let reader = match &view.view.source.schema {
            SchemaRef::File { avsc, .. } => Schema::parse_str(avsc).map_err(|error| {
                IngestError::Config(format!(
                    "the stored schema of view `{name}` is invalid: {error}"
                ))
            })?,
            SchemaRef::Subject(subject) => {
                let schema = subjects.get(subject).ok_or_else(|| {
                    IngestError::Config(format!(
                        "feature view `{name}` reads Schema Registry subject `{subject}`; give \
                         the registry's URL (--schema-registry-url)"
                    ))
                })?;
                let problems = mapping::view_mismatches(&entity, &view.view, schema);
                if !problems.is_empty() {
                    return Err(IngestError::Config(format!(
                        "feature view `{name}` does not fit the latest schema of subject \
                         `{subject}`: {}",
                        problems.join("; ")
                    )));
                }
                schema.clone()
            }
        };
        let log_columns = LogColumns::of_schema(&reader)
            .map_err(|error| IngestError::Config(format!("feature view `{name}`: {error}")))?;
        routes
            .entry(view.view.source.topic.clone())
            .or_default()
            .push(Arc::new(Route {
                entity,
                aggregates: !aggregate_features(&view.view).is_empty(),
                view,
                decoder: Decoder::new(reader),
                log_columns,
            }));
    }
    Ok(routes)
}

/// The Schema Registry subjects the latest views read, each once.
pub(crate) fn subjects(registry: &Registry) -> Vec<String> {
    let mut subjects: Vec<String> = registry
        .latest_views()
        .into_iter()
        .filter_map(|view| match &view.view.source.schema {
            SchemaRef::Subject(subject) => Some(subject.clone()),
            SchemaRef::File { .. } => None,
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    subjects
}

impl Route {
    /// Decodes `payload` and projects it onto this route's view. A payload decoded already is
    /// resolved from its writer's schema to the view's, unless they are the same.
    pub(crate) fn write_for(
        &self,
        framing: &Framing,
        payload: Payload<'_>,
        now_micros: i64,
        keep_event: bool,
    ) -> Result<Projected, DeadLetterReason> {
        let event = match payload {
            Payload::Encoded(bytes) => Cow::Owned(decode(&self.decoder, framing, bytes)?),
            Payload::Decoded { writer, datum } => self.decoder.resolve(writer, datum)?,
        };
        let mut projected = self.project(&event, now_micros)?;
        if keep_event {
            projected.event = Some(event.into_owned());
        }
        Ok(projected)
    }

    /// Projects a decoded event onto this route's view: its feature values and, when the view
    /// has aggregates, their inputs; and its id, when the view declares one.
    fn project(&self, event: &Avro, now_micros: i64) -> Result<Projected, DeadLetterReason> {
        let write = project(&self.entity, &self.view.view, event, now_micros)?;
        let event_id = event_id(&self.view.view, event)?;
        let inputs = if self.aggregates {
            aggregate_inputs(&self.view.view, event)?
        } else {
            Vec::new()
        };
        Ok(Projected {
            write,
            event_id,
            inputs,
            event: None,
        })
    }
}

/// One event projected onto one view.
#[derive(Debug)]
pub(crate) struct Projected {
    pub(crate) write: FeatureWrite,
    /// The event's id, for a view that declares one.
    pub(crate) event_id: Option<String>,
    /// The inputs of the view's aggregates, in `aggregate_features` order; empty when it has none.
    pub(crate) inputs: Vec<Input>,
    /// The event in the view's schema, kept for the offline log when there is one.
    pub(crate) event: Option<Avro>,
}

/// What a batch gives one view, in record order: the feature writes of upsert commands, and
/// each event's feature write, with its tiebreak, and its contribution to the view's aggregates
/// when it has any.
#[derive(Debug)]
pub(crate) struct ViewBatch {
    pub(crate) route: Arc<Route>,
    /// Upserts: their event time is the command's, and they take no part in ties.
    pub(crate) upserts: Vec<FeatureWrite>,
    /// The events' writes, ordered against each other per entity before they are stored.
    pub(crate) contenders: Vec<Contender>,
    pub(crate) contributions: Vec<(EntityKey, Contribution)>,
    /// The events for the offline log, when there is one.
    pub(crate) logged: Vec<LoggedEvent>,
}

impl ViewBatch {
    pub(crate) fn new(route: Arc<Route>) -> Self {
        ViewBatch {
            route,
            upserts: Vec::new(),
            contenders: Vec::new(),
            contributions: Vec::new(),
            logged: Vec::new(),
        }
    }

    /// The batch of `route` among `batches`, added if it is not there yet.
    pub(crate) fn of<'b>(batches: &'b mut Vec<ViewBatch>, route: &Arc<Route>) -> &'b mut ViewBatch {
        match batches
            .iter()
            .position(|batch| Arc::ptr_eq(&batch.route, route))
        {
            Some(index) => &mut batches[index],
            None => {
                batches.push(ViewBatch::new(route.clone()));
                batches.last_mut().expect("just pushed")
            }
        }
    }

    /// Adds an event projected onto this view, found at `offset` of `source` and taken at
    /// `ingest_time_micros`.
    pub(crate) fn push(
        &mut self,
        projected: Projected,
        source: &str,
        offset: i64,
        ingest_time_micros: i64,
    ) {
        let Projected {
            write,
            event_id,
            inputs,
            event,
        } = projected;
        if let Some(event) = event {
            self.logged.push(LoggedEvent {
                event,
                event_time_micros: write.event_time_micros,
                ingest_time_micros,
                source: source.to_owned(),
                offset,
            });
        }
        let tiebreak = Tiebreak::of(event_id.as_deref(), offset);
        if self.route.aggregates {
            let contribution = Contribution {
                source: source.to_owned(),
                offset,
                event_time_micros: write.event_time_micros,
                event_id,
                inputs,
            };
            self.contributions.push((write.key.clone(), contribution));
        }
        self.contenders.push(Contender { write, tiebreak });
    }
}

/// Decodes an upsert command and finds the route of the view it names.
pub(crate) fn upsert_write<'r>(
    decoder: &Decoder,
    routes: &'r [Arc<Route>],
    framing: &Framing,
    payload: &[u8],
    now_micros: i64,
) -> Result<(&'r Arc<Route>, FeatureWrite), DeadLetterReason> {
    let command = decode(decoder, framing, payload)?;
    let find = |name: &str| {
        routes
            .iter()
            .find(|route| route.view.view.name.as_str() == name)
            .map(|route| (&route.entity, &route.view.view))
    };
    let (view, write) = project_upsert(&command, find, now_micros)?;
    let route = routes
        .iter()
        .find(|route| route.view.view.name == view.name)
        .expect("the view was found among these routes");
    Ok((route, write))
}

/// An entity to delete from every view, read from the deletion topic.
#[derive(Debug)]
pub(crate) struct PendingDeletion {
    pub(crate) entity: Entity,
    /// Every version of every view of the entity.
    pub(crate) views: Vec<VersionedView>,
    pub(crate) key: EntityKey,
    pub(crate) event_time_micros: i64,
    /// The command as a bare Avro datum of `entity_deleted.avsc`, for the invalidation topic.
    pub(crate) datum: Vec<u8>,
}

/// Decodes a deletion command and checks it against the registry's entities.
pub(crate) fn deletion(
    decoder: &Decoder,
    registry: &Registry,
    framing: &Framing,
    payload: &[u8],
    now_micros: i64,
) -> Result<PendingDeletion, DeadLetterReason> {
    let command = decode(decoder, framing, payload)?;
    let find = |name: &str| {
        registry
            .entities
            .iter()
            .find(|entity| entity.name.as_str() == name)
    };
    let deletion = project_deletion(&command, find, now_micros)?;
    let datum = apache_avro::to_avro_datum(decoder.reader(), command.clone()).map_err(|error| {
        DeadLetterReason {
            reason: "undecodable",
            detail: format!("the command does not re-encode: {error}"),
        }
    })?;
    let views = registry
        .feature_views
        .iter()
        .filter(|view| view.view.entity == deletion.entity.name)
        .cloned()
        .collect();
    Ok(PendingDeletion {
        entity: deletion.entity.clone(),
        views,
        key: deletion.key,
        event_time_micros: deletion.event_time_micros,
        datum,
    })
}
