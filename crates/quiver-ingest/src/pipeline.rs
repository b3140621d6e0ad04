//! The per-batch rules of ingestion, whatever the records come from: decode, route, filter,
//! deduplicate, project, fold, write, dead-letter and delete.
//!
//! A driver hands a batch of records (Kafka messages in [`crate::run`], the records of an Avro
//! file in [`crate::file`]) to [`decode`], then the decoded batch to [`store_batch`], which
//! writes it with the same retries for every driver and returns once all of it is durable.
//! Nothing here knows Kafka: a record is a [`Record`] (where it came from, and its payload),
//! and what leaves the store, dead letters and deletion announcements, goes to a [`Sink`].

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use quiver_avro::decode::Decoder;
use quiver_core::aggregate::aggregate_features;
use quiver_core::definition::Registry;
use quiver_core::name::Name;
use quiver_core::store::{FeatureStore, FeatureWrite, StoreErrorKind};
use quiver_offline::{Encoded, OfflineLog};
use tokio::sync::watch;

use crate::metrics::{DeadLetterLabels, EntityLabels, TopicLabels, ViewLabels};
use crate::route::{
    DeadLetterReason, Framing, PendingDeletion, Route, ViewBatch, deletion, deletion_decoder,
    routes, upsert_decoder, upsert_write,
};
use crate::tiles::{Watermarks, store_entities};
use crate::{IngestError, IngestMetrics, IngestSummary, SchemaRegistry};

/// The longest wait between retries of a write while the store is unavailable.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// What a record carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// A value as Kafka holds it, framed as the driver's [`Framing`] says.
    Encoded(&'a [u8]),
    /// A record decoded already, in its writer's schema (an Avro file's).
    Decoded { writer: &'a Schema, datum: &'a Avro },
}

/// One record, as the pipeline sees it.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    /// The topic whose views it feeds.
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    /// Its position in the partition: a replay of the same position is not counted again.
    pub(crate) offset: i64,
    /// The partition's name in tiles and watermarks, such as `topic/3` or `file:events.avro`.
    pub(crate) source: Cow<'a, str>,
    pub(crate) payload: Payload<'a>,
}

/// A driver's record: what it keeps to dead-letter it, and the [`Record`] it gives.
pub(crate) trait SourceRecord {
    fn record(&self) -> Record<'_>;
}

/// Where what is not a feature write goes: records that cannot be used, and deletions done.
pub(crate) trait Sink<M>: Sync {
    /// Keeps a record that cannot be used, with the view it failed for (empty when none could
    /// be told) and why; durable when this returns, since the record's offset is committed next.
    fn dead_letter(
        &self,
        record: &M,
        view: &str,
        reason: &DeadLetterReason,
    ) -> impl Future<Output = Result<(), IngestError>> + Send;

    /// Announces that an entity was deleted from every view, for serving nodes' caches: the
    /// deletion command as a bare Avro datum of `entity_deleted.avsc`.
    fn deleted(
        &self,
        entity: &str,
        key: &str,
        command: &[u8],
    ) -> impl Future<Output = Result<(), IngestError>> + Send;
}

/// Where records of each topic go, as of one registry revision.
pub(crate) struct Inputs {
    pub(crate) registry: Arc<Registry>,
    pub(crate) routes: HashMap<String, Vec<Arc<Route>>>,
    all_routes: Vec<Arc<Route>>,
    upserts: Decoder,
    deletions: Decoder,
    /// The topic of upsert commands, read by no view.
    upsert_topic: Option<String>,
    /// The topic of deletion commands, read by no view.
    deletion_topic: Option<String>,
}

impl Inputs {
    /// The inputs of `registry`, with the latest schema of each subject its views read.
    pub(crate) async fn new(
        registry: Arc<Registry>,
        schema_registry: Option<&SchemaRegistry>,
        upsert_topic: Option<String>,
        deletion_topic: Option<String>,
    ) -> Result<Self, IngestError> {
        let mut subjects = HashMap::new();
        for subject in crate::route::subjects(&registry) {
            if let Some(schema_registry) = schema_registry {
                let schema = schema_registry.latest_schema(&subject).await?;
                subjects.insert(subject, schema);
            }
        }
        let routes = routes(&registry, &subjects)?;
        Ok(Inputs::of_routes(
            registry,
            routes,
            upsert_topic,
            deletion_topic,
        ))
    }

    /// Inputs that send the records of `topic` to `routes` alone, and read no commands.
    pub(crate) fn only(registry: Arc<Registry>, topic: &str, routes: Vec<Arc<Route>>) -> Self {
        let routes = HashMap::from([(topic.to_owned(), routes)]);
        Inputs::of_routes(registry, routes, None, None)
    }

    fn of_routes(
        registry: Arc<Registry>,
        routes: HashMap<String, Vec<Arc<Route>>>,
        upsert_topic: Option<String>,
        deletion_topic: Option<String>,
    ) -> Self {
        Inputs {
            all_routes: routes.values().flatten().cloned().collect(),
            routes,
            registry,
            upserts: upsert_decoder(),
            deletions: deletion_decoder(),
            upsert_topic,
            deletion_topic,
        }
    }

    /// Every topic to read, sorted.
    pub(crate) fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.routes.keys().cloned().collect();
        topics.extend(self.upsert_topic.clone());
        topics.extend(self.deletion_topic.clone());
        topics.sort();
        topics.dedup();
        topics
    }
}

/// How a batch is decoded.
#[derive(Debug)]
pub(crate) struct Rules<'a> {
    pub(crate) framing: &'a Framing,
    /// Whether the first record that cannot be used ends ingestion, instead of being sent to
    /// the sink.
    pub(crate) stop_on_invalid: bool,
    /// Added to every event time: a recorded sample replays as if live.
    pub(crate) event_time_shift_micros: i64,
    /// Whether each accepted event is kept for the offline log.
    pub(crate) keep_events: bool,
}

/// One batch, decoded and projected, waiting to be stored.
#[derive(Debug)]
pub(crate) struct Decoded<M> {
    /// The batch's place in the stream: its tiles and deletions are stored strictly in turn.
    pub(crate) turn: u64,
    /// The registry it was decoded with.
    pub(crate) registry: Arc<Registry>,
    pub(crate) views: Vec<ViewBatch>,
    pub(crate) deletions: Vec<PendingDeletion>,
    /// Records that cannot be used, with the view they failed for (empty when none could be
    /// told) and why.
    pub(crate) rejected: Vec<(M, String, DeadLetterReason)>,
    /// Per partition, the offset after the batch's last record there: what to commit.
    pub(crate) next_offsets: BTreeMap<(String, i32), i64>,
}

/// Decodes and projects every record of a batch for each view that reads its topic, and the
/// commands of the upsert and deletion topics. With [`Rules::stop_on_invalid`], the first
/// record that cannot be used ends ingestion instead.
pub(crate) fn decode<M: SourceRecord + Clone>(
    batch: Vec<M>,
    turn: u64,
    inputs: &Inputs,
    watermarks: &mut Watermarks,
    rules: &Rules<'_>,
    metrics: &IngestMetrics,
) -> Result<Decoded<M>, IngestError> {
    let now_micros = now_micros();
    let mut decoded = Decoded {
        turn,
        registry: inputs.registry.clone(),
        views: Vec::new(),
        deletions: Vec::new(),
        rejected: Vec::new(),
        next_offsets: BTreeMap::new(),
    };
    // Counted per topic here, then added to the metric once per topic, not once per record.
    let mut records_by_topic: HashMap<String, u64> = HashMap::new();
    for message in batch {
        let record = message.record();
        match records_by_topic.get_mut(record.topic) {
            Some(records) => *records += 1,
            None => {
                records_by_topic.insert(record.topic.to_owned(), 1);
            }
        }
        let next = decoded
            .next_offsets
            .entry((record.topic.to_owned(), record.partition))
            .or_default();
        *next = (*next).max(record.offset + 1);
        let mut reasons =
            decode_record(&record, inputs, watermarks, rules, now_micros, &mut decoded);
        if let Some((_, reason)) = reasons.first()
            && rules.stop_on_invalid
        {
            count_records(records_by_topic, metrics);
            return Err(IngestError::InvalidRecord {
                topic: record.topic.to_owned(),
                partition: record.partition,
                offset: record.offset,
                reason: reason.reason,
                detail: reason.detail.clone(),
            });
        }
        // The record itself goes with its last rejection, copies with the others.
        let last = reasons.pop();
        for (view, reason) in reasons {
            decoded.rejected.push((message.clone(), view, reason));
        }
        if let Some((view, reason)) = last {
            decoded.rejected.push((message, view, reason));
        }
    }
    count_records(records_by_topic, metrics);
    Ok(decoded)
}

/// Adds a batch's records, counted per topic, to the metric.
fn count_records(records_by_topic: HashMap<String, u64>, metrics: &IngestMetrics) {
    for (topic, records) in records_by_topic {
        metrics
            .records
            .get_or_create(&TopicLabels { topic })
            .inc_by(records);
    }
}

/// Decodes one record into `decoded`, and says why each view that could not use it could not.
fn decode_record<M>(
    record: &Record<'_>,
    inputs: &Inputs,
    watermarks: &mut Watermarks,
    rules: &Rules<'_>,
    now_micros: i64,
    decoded: &mut Decoded<M>,
) -> Vec<(String, DeadLetterReason)> {
    let topic = Some(record.topic);
    let encoded = || match record.payload {
        Payload::Encoded(bytes) => Ok(bytes),
        Payload::Decoded { .. } => Err(DeadLetterReason {
            reason: "undecodable",
            detail: "commands are read from Kafka records only".to_owned(),
        }),
    };
    if inputs.upsert_topic.as_deref() == topic {
        let upsert = encoded().and_then(|payload| {
            upsert_write(
                &inputs.upserts,
                &inputs.all_routes,
                rules.framing,
                payload,
                now_micros,
            )
        });
        return match upsert {
            Ok((route, write)) => {
                ViewBatch::of(&mut decoded.views, route).upserts.push(write);
                Vec::new()
            }
            Err(reason) => vec![(String::new(), reason)],
        };
    }
    if inputs.deletion_topic.as_deref() == topic {
        let command = encoded().and_then(|payload| {
            deletion(
                &inputs.deletions,
                &inputs.registry,
                rules.framing,
                payload,
                now_micros,
            )
        });
        return match command {
            Ok(pending) => {
                decoded.deletions.push(pending);
                Vec::new()
            }
            Err(reason) => vec![(String::new(), reason)],
        };
    }
    let mut reasons = Vec::new();
    for route in inputs.routes.get(record.topic).into_iter().flatten() {
        let projected = route
            .write_for(rules.framing, record.payload, now_micros, rules.keep_events)
            .and_then(|mut projected| {
                projected.write.event_time_micros += rules.event_time_shift_micros;
                watermarks.admit(route, &record.source, projected.write.event_time_micros)?;
                Ok(projected)
            });
        match projected {
            Ok(projected) => ViewBatch::of(&mut decoded.views, route).push(
                projected,
                &record.source,
                record.offset,
                now_micros,
            ),
            Err(reason) => reasons.push((route.view.view.name.to_string(), reason)),
        }
    }
    reasons
}

/// Where the results of a batch go.
pub(crate) struct Outputs<'a, S, K> {
    pub(crate) store: &'a S,
    /// Where accepted events are logged for training data, if anywhere.
    pub(crate) log: Option<&'a OfflineLog>,
    pub(crate) sink: &'a K,
    pub(crate) metrics: &'a IngestMetrics,
    /// The turn of the batch whose tiles and deletions may be stored now. Batches are stored
    /// side by side, but tiles are read, folded and rewritten, so one batch's must be written
    /// before the next reads them.
    pub(crate) turns: watch::Sender<u64>,
}

impl<'a, S, K> Outputs<'a, S, K> {
    pub(crate) fn new(store: &'a S, sink: &'a K, metrics: &'a IngestMetrics) -> Self {
        Outputs {
            store,
            log: None,
            sink,
            metrics,
            turns: watch::Sender::new(0),
        }
    }

    /// The same outputs, also logging accepted events to `log`.
    pub(crate) fn with_log(self, log: Option<&'a OfflineLog>) -> Self {
        Outputs { log, ..self }
    }
}

/// Dead-letters, writes and deletes what one batch carries; everything is durable when this
/// returns `Ok`, so the batch's offsets may be committed.
pub(crate) async fn store_batch<M, S: FeatureStore, K: Sink<M>>(
    decoded: &Decoded<M>,
    outputs: &Outputs<'_, S, K>,
) -> Result<IngestSummary, IngestError> {
    let metrics = outputs.metrics;
    let mut summary = IngestSummary::default();
    for (message, view, reason) in &decoded.rejected {
        outputs.sink.dead_letter(message, view, reason).await?;
        metrics
            .dead_letters
            .get_or_create(&DeadLetterLabels {
                view: view.clone(),
                reason: reason.reason.to_owned(),
            })
            .inc();
        *summary.dead_lettered.entry(reason.reason).or_default() += 1;
    }
    for batch in &decoded.views {
        summary.rows_written += store_rows(batch, &batch.upserts, outputs).await?;
    }
    // Encoded before the batch's turn, written in it.
    let logged = match outputs.log {
        Some(_) => encode_logged(&decoded.views)?,
        None => Vec::new(),
    };
    let mut turns = outputs.turns.subscribe();
    turns
        .wait_for(|turn| *turn == decoded.turn)
        .await
        .expect("the sender lives in `outputs`");
    // In turn, since a log file that starts at or before the last one of its source replaces
    // what a replay rewrites.
    if let Some(log) = outputs.log {
        log.record_registry(&decoded.registry).await?;
        for encoded in logged {
            log.write(encoded).await?;
        }
    }
    for batch in &decoded.views {
        summary.rows_written += store_view_entities(batch, outputs).await?;
    }
    for pending in &decoded.deletions {
        delete_everywhere(outputs, pending).await?;
        summary.entities_deleted += 1;
    }
    outputs.turns.send_replace(decoded.turn + 1);
    Ok(summary)
}

/// Each view's accepted events as offline log files.
fn encode_logged(views: &[ViewBatch]) -> Result<Vec<Encoded>, IngestError> {
    views
        .iter()
        .filter(|batch| !batch.logged.is_empty())
        .map(|batch| {
            let view = &batch.route.view;
            let folded: Vec<Name> = aggregate_features(&view.view)
                .into_iter()
                .map(|(feature, _)| feature.name.clone())
                .collect();
            Ok(Encoded::of_events(
                &view.view.name,
                view.version,
                &batch.route.log_columns,
                &folded,
                &batch.logged,
            )?)
        })
        .collect()
}

/// Writes feature values of one view; returns how many rows.
pub(crate) async fn store_rows<S: FeatureStore, K>(
    batch: &ViewBatch,
    writes: &[FeatureWrite],
    outputs: &Outputs<'_, S, K>,
) -> Result<u64, IngestError> {
    if writes.is_empty() {
        return Ok(0);
    }
    let route = &batch.route;
    let metrics = outputs.metrics;
    let labels = ViewLabels {
        view: route.view.view.name.to_string(),
    };
    let started = std::time::Instant::now();
    // Cloned: a family's guard must not be held across an await.
    let retries = metrics.write_retries.get_or_create(&labels).clone();
    retry_while_unavailable(&retries, || {
        outputs
            .store
            .write_features(&route.entity, &route.view, writes)
    })
    .await?;
    metrics
        .write_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let written_micros = now_micros();
    let freshness = metrics.freshness_seconds.get_or_create(&labels);
    for write in writes {
        freshness.observe((written_micros - write.event_time_micros) as f64 / 1e6);
    }
    metrics
        .rows_written
        .get_or_create(&labels)
        .inc_by(writes.len() as u64);
    Ok(writes.len() as u64)
}

/// Stores one view's events one entity at a time (ties settled, values written, tiles folded),
/// and counts what that did; returns how many rows were written.
async fn store_view_entities<S: FeatureStore, K>(
    batch: &ViewBatch,
    outputs: &Outputs<'_, S, K>,
) -> Result<u64, IngestError> {
    if batch.contenders.is_empty() && batch.contributions.is_empty() {
        return Ok(0);
    }
    let metrics = outputs.metrics;
    let labels = ViewLabels {
        view: batch.route.view.view.name.to_string(),
    };
    let stored = store_entities(batch, outputs).await?;
    metrics
        .tiles_written
        .get_or_create(&labels)
        .inc_by(stored.tiles);
    metrics
        .duplicate_events
        .get_or_create(&labels)
        .inc_by(stored.duplicates);
    metrics
        .events_beyond_dedup_horizon
        .get_or_create(&labels)
        .inc_by(stored.beyond_horizon);
    metrics
        .tied_events
        .get_or_create(&labels)
        .inc_by(stored.tied);
    Ok(stored.rows)
}

/// Deletes one entity from every version of every view of its entity, then announces it.
async fn delete_everywhere<M, S: FeatureStore, K: Sink<M>>(
    outputs: &Outputs<'_, S, K>,
    pending: &PendingDeletion,
) -> Result<(), IngestError> {
    for view in &pending.views {
        let labels = ViewLabels {
            view: view.view.name.to_string(),
        };
        retry_while_unavailable(
            &outputs.metrics.write_retries.get_or_create(&labels),
            || {
                outputs.store.delete_entity(
                    &pending.entity,
                    view,
                    &pending.key,
                    pending.event_time_micros,
                )
            },
        )
        .await?;
    }
    outputs
        .sink
        .deleted(
            pending.entity.name.as_str(),
            &pending.key.to_string(),
            &pending.datum,
        )
        .await?;
    outputs
        .metrics
        .entities_deleted
        .get_or_create(&EntityLabels {
            entity: pending.entity.name.to_string(),
        })
        .inc();
    tracing::info!(entity = %pending.entity.name, key = %pending.key, event_time_micros = pending.event_time_micros, "entity deleted");
    Ok(())
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_micros() as i64)
}

/// Runs a store operation, retrying with backoff while the store is unavailable, so a database
/// outage pauses ingestion instead of losing or skipping records.
pub(crate) async fn retry_while_unavailable<T, F, Fut>(
    retries: &prometheus_client::metrics::counter::Counter,
    mut operation: F,
) -> Result<T, IngestError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, quiver_core::store::StoreError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match operation().await {
            Ok(done) => return Ok(done),
            Err(error) if error.kind == StoreErrorKind::Unavailable => {
                retries.inc();
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "store unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
            }
            Err(error) => return Err(IngestError::Store(error)),
        }
    }
}
