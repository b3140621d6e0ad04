//! The streaming ingester: Avro events from Kafka become feature values in the online store.
//!
//! [`run`] consumes every topic of the applied views in one consumer group and works in batches:
//! decode and project each record for every view of its topic, send the records that cannot be
//! used to the dead-letter topic (and wait until Kafka has them), write the feature values
//! (retrying while the store is unavailable), and only then commit the batch's offsets. So an
//! offset is never committed before what it carries is durable, and a crash or rebalance replays
//! at most the uncommitted batch, which the event-time-ordered writes make harmless.
//!
//! A deletion topic, when configured, carries commands that remove an entity from every view;
//! each is announced on the invalidation topic once done, for serving nodes' caches.

pub mod file;
mod metrics;
mod publish;
mod route;
pub mod schema_registry;
mod tiles;

pub use metrics::IngestMetrics;
pub use schema_registry::{SchemaRegistry, SchemaRegistryError};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apache_avro::Schema;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use quiver_core::definition::Registry;
use quiver_core::store::{FeatureStore, StoreErrorKind};
use quiver_kafka::KafkaConnection;
use quiver_kafka::context::LoggingContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::metrics::{DeadLetterLabels, EntityLabels, PartitionLabels, TopicLabels, ViewLabels};
use crate::publish::Publisher;
use crate::route::{
    DeadLetterReason, Decoder, Framing, PendingDeletion, Route, ViewBatch, deletion, routes,
    upsert_write,
};
use crate::tiles::{Watermarks, partition_source, store_tiles};

/// How record values are framed.
#[derive(Debug, Clone)]
pub enum WireFormat {
    /// Confluent wire format: writer schemas by the id in each record's header, from
    /// `writer_schemas`, else from `schema_registry`. A record with an id neither knows is
    /// dead-lettered.
    Confluent {
        writer_schemas: HashMap<u32, Schema>,
        schema_registry: Option<SchemaRegistry>,
    },
    /// Bare Avro datums written with the view's own schema.
    Plain,
}

/// What to do with a record that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnInvalid {
    /// Send it to this topic with headers naming the reason, and go on.
    DeadLetter { topic: String },
    /// Stop without committing it, so it is read again after a fix.
    Stop,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The Kafka cluster: brokers, TLS and SASL.
    pub kafka: KafkaConnection,
    /// The consumer group; ingesters sharing it split the partitions between them.
    pub group_id: String,
    pub wire_format: WireFormat,
    pub on_invalid: OnInvalid,
    /// A topic of upsert commands (`schemas/feature_upsert.avsc`) for values computed
    /// elsewhere, each naming its view; `None` reads no such topic.
    pub upsert_topic: Option<String>,
    /// A topic of deletion commands (`schemas/entity_deleted.avsc`), each removing one entity
    /// from every view; `None` reads no such topic.
    pub deletion_topic: Option<String>,
    /// Where each done deletion is announced for serving nodes' caches; `None` announces none.
    pub invalidation_topic: Option<String>,
    /// Most records per batch; a batch is also cut after `batch_linger`.
    pub batch_size: usize,
    pub batch_linger: Duration,
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngestSummary {
    pub records: u64,
    pub rows_written: u64,
    pub entities_deleted: u64,
    /// Dead-lettered records by reason.
    pub dead_lettered: BTreeMap<&'static str, u64>,
}

impl IngestSummary {
    fn add(&mut self, other: IngestSummary) {
        self.records += other.records;
        self.rows_written += other.rows_written;
        self.entities_deleted += other.entities_deleted;
        for (reason, count) in other.dead_lettered {
            *self.dead_lettered.entry(reason).or_default() += count;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(
        "invalid record at {topic}/{partition}@{offset} ({reason}: {detail}); stopping as \
         configured, without committing it"
    )]
    InvalidRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: &'static str,
        detail: String,
    },
    #[error(transparent)]
    SchemaRegistry(#[from] SchemaRegistryError),
    #[error("event file {0}")]
    File(String),
    #[error("the online store refused a write: {0}")]
    Store(quiver_core::store::StoreError),
}

/// The pause after a consumer error, so a persistent one is not logged in a tight loop.
const CONSUMER_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// The longest wait between retries of a write while the store is unavailable.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// The ingester's consumer, logging through `tracing` without repeating itself.
type KafkaConsumer = StreamConsumer<LoggingContext>;

/// Batches decoded ahead of those being stored: one, so decoding overlaps the writes, while a
/// slow or unavailable store stops consumption soon after.
const BATCHES_AHEAD: usize = 1;

/// Batches being stored at once: two, so the writes of one batch overlap the last writes of the
/// one before instead of waiting for them to drain.
const BATCHES_STORING: usize = 2;

/// How much librdkafka may prefetch, in KiB, beyond the batches in hand: the bound on the
/// ingester's memory while the store is slow.
const PREFETCH_KIB: &str = "16384";

/// Ingests until `shutdown` resolves, then writes the batches in hand, commits and leaves the
/// group.
///
/// Two stages run side by side, joined by a bounded queue: one reads and decodes batches, the
/// other writes them and commits their offsets, in order. When the store is slow or down the
/// queue fills, the first stage stops reading, and Kafka keeps the rest.
///
/// `registry` is watched: a new revision (a `quiver apply`, seen by a
/// `quiver_registry::RegistryWatcher`) takes effect from the next batch, subscribing to the
/// topics of new views.
pub async fn run<S: FeatureStore>(
    config: &IngestConfig,
    mut registry: watch::Receiver<Arc<Registry>>,
    store: &S,
    metrics: &IngestMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<IngestSummary, IngestError> {
    let framing = Framing::new(&config.wire_format);
    let schema_registry = match &config.wire_format {
        WireFormat::Confluent {
            schema_registry, ..
        } => schema_registry.as_ref(),
        WireFormat::Plain => None,
    };
    let first = registry.borrow_and_update().clone();
    let mut inputs = Inputs::new(first, schema_registry).await?;
    if inputs.routes.is_empty() {
        return Err(IngestError::Config(
            "the registry has no feature views; run `quiver apply` first".into(),
        ));
    }
    let consumer: Arc<KafkaConsumer> = Arc::new(
        config
            .kafka
            .client_config()
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", PREFETCH_KIB)
            .create_with_context(LoggingContext::default())?,
    );
    let mut topics = inputs.topics(config);
    subscribe(&consumer, &topics)?;
    tracing::info!(?topics, group = %config.group_id, "ingesting");
    let dead_letters = match &config.on_invalid {
        OnInvalid::DeadLetter { topic } => Some(Publisher::new(&config.kafka, topic)?),
        OnInvalid::Stop => None,
    };
    let invalidations = config
        .invalidation_topic
        .as_deref()
        .map(|topic| Publisher::new(&config.kafka, topic))
        .transpose()?;

    let outputs = Outputs {
        dead_letters: dead_letters.as_ref(),
        invalidations: invalidations.as_ref(),
        store,
        metrics,
        turns: watch::Sender::new(0),
    };
    let (decoded_tx, mut decoded_rx) = tokio::sync::mpsc::channel::<Decoded>(BATCHES_AHEAD);
    let positions = Positions::default();

    let read = async {
        // Owned by this stage, so the queue closes when it ends and the writing stage drains.
        let decoded_tx = decoded_tx;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut records = 0;
        let mut turn = 0;
        let mut watermarks = Watermarks::default();
        loop {
            let batch = tokio::select! {
                biased;
                () = &mut shutdown => break Ok::<u64, IngestError>(records),
                batch = next_batch(&consumer, config) => batch,
            };
            if registry.has_changed().unwrap_or(false) {
                let changed = registry.borrow_and_update().clone();
                match Inputs::new(changed, schema_registry).await {
                    Ok(new_inputs) => {
                        inputs = new_inputs;
                        let new_topics = inputs.topics(config);
                        if new_topics != topics {
                            subscribe(&consumer, &new_topics)?;
                            tracing::info!(topics = ?new_topics, "subscription changed with the registry");
                            topics = new_topics;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot ingest the new registry; keeping the last one");
                    }
                }
            }
            records += batch.len() as u64;
            if let Framing::Confluent(writer_schemas) = &framing {
                let ids = batch.iter().filter_map(|message| {
                    quiver_avro::wire::decode(message.payload()?)
                        .ok()
                        .map(|framed| framed.schema_id)
                });
                writer_schemas.fetch_missing(ids).await?;
            }
            let decoded = decode(
                batch,
                turn,
                &inputs,
                &mut watermarks,
                &framing,
                config,
                metrics,
            )?;
            turn += 1;
            if decoded_tx.send(decoded).await.is_err() {
                // The writing stage failed; its error is the one to report.
                break Ok(records);
            }
        }
    };
    let write = async {
        let mut summary = IngestSummary::default();
        let mut last_offsets = TopicPartitionList::new();
        // Batches being stored, oldest first: the next one's writes start while the last rows
        // of this one are still in flight, and offsets are committed strictly in batch order.
        let mut storing = FuturesOrdered::new();
        let mut queue_open = true;
        loop {
            tokio::select! {
                decoded = decoded_rx.recv(), if queue_open && storing.len() < BATCHES_STORING => {
                    match decoded {
                        Some(decoded) => storing.push_back(async {
                            let stored = store_batch(&decoded, &outputs).await;
                            (decoded.next_offsets, stored)
                        }),
                        None => queue_open = false,
                    }
                }
                Some((next_offsets, stored)) = storing.next() => {
                    summary.add(stored?);
                    last_offsets = offsets(&next_offsets)?;
                    positions.advance(&next_offsets);
                    // Asynchronous: the writes are durable already, and a commit that fails is
                    // covered by the next one or, at the end, by the synchronous one below.
                    if let Err(error) = consumer.commit(&last_offsets, CommitMode::Async) {
                        tracing::warn!(%error, "commit failed; a later commit covers it");
                    }
                }
                else => break,
            }
        }
        if last_offsets.count() > 0
            && let Err(error) = consumer.commit(&last_offsets, CommitMode::Sync)
        {
            // A rebalance took the partitions: their records are written, and the new owner
            // replays them from the last commit; the event-time writes make that harmless.
            tracing::warn!(%error, "final commit failed; the next owner replays from the last one");
        }
        Ok::<_, IngestError>(summary)
    };
    let both = async { tokio::join!(read, write) };
    let (read, write) = tokio::select! {
        both = both => both,
        never = measure_lag(&consumer, &positions, metrics) => match never {},
    };
    // The gauge ends at what this run leaves behind.
    measure_lag_once(&consumer, &positions, metrics).await;
    let mut summary = write?;
    summary.records = read?;
    tracing::info!(
        records = summary.records,
        rows = summary.rows_written,
        entities_deleted = summary.entities_deleted,
        "ingest stopped"
    );
    Ok(summary)
}

/// Waits for one record, then takes what else arrives within the linger, up to the batch size.
///
/// Consumer errors (a subscribed topic that was deleted or does not exist yet, a broker that
/// went away) are reported by librdkafka as it retries by itself, so reading goes on. Each
/// distinct error is logged once, then at growing intervals (see `quiver_kafka::context`).
async fn next_batch(consumer: &KafkaConsumer, config: &IngestConfig) -> Vec<OwnedMessage> {
    let first = loop {
        match consumer.recv().await {
            Ok(message) => break message.detach(),
            Err(error) => {
                consumer.context().warn_consumer_error(&error, "retrying");
                tokio::time::sleep(CONSUMER_ERROR_PAUSE).await;
            }
        }
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + config.batch_linger;
    while batch.len() < config.batch_size {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(message.detach()),
            Ok(Err(error)) => {
                consumer
                    .context()
                    .warn_consumer_error(&error, "cutting the batch short");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// Where records of each topic go, as of one registry revision.
struct Inputs {
    registry: Arc<Registry>,
    routes: HashMap<String, Vec<Arc<Route>>>,
    all_routes: Vec<Arc<Route>>,
    upserts: Decoder,
    deletions: Decoder,
}

impl Inputs {
    /// The inputs of `registry`, with the latest schema of each subject its views read.
    async fn new(
        registry: Arc<Registry>,
        schema_registry: Option<&SchemaRegistry>,
    ) -> Result<Self, IngestError> {
        let mut subjects = HashMap::new();
        for subject in route::subjects(&registry) {
            if let Some(schema_registry) = schema_registry {
                let schema = schema_registry.latest_schema(&subject).await?;
                subjects.insert(subject, schema);
            }
        }
        let routes = routes(&registry, &subjects)?;
        Ok(Inputs {
            all_routes: routes.values().flatten().cloned().collect(),
            routes,
            registry,
            upserts: Decoder::for_upserts(),
            deletions: Decoder::for_deletions(),
        })
    }

    /// Every topic to read, sorted.
    fn topics(&self, config: &IngestConfig) -> Vec<String> {
        let mut topics: Vec<String> = self.routes.keys().cloned().collect();
        topics.extend(config.upsert_topic.clone());
        topics.extend(config.deletion_topic.clone());
        topics.sort();
        topics.dedup();
        topics
    }
}

fn subscribe(consumer: &KafkaConsumer, topics: &[String]) -> Result<(), IngestError> {
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    Ok(consumer.subscribe(&topics)?)
}

/// Where the results of a batch go.
struct Outputs<'a, S> {
    dead_letters: Option<&'a Publisher>,
    invalidations: Option<&'a Publisher>,
    store: &'a S,
    metrics: &'a IngestMetrics,
    /// The turn of the batch whose tiles and deletions may be stored now. Batches are stored
    /// side by side, but tiles are read, folded and rewritten, so one batch's must be written
    /// before the next reads them.
    turns: watch::Sender<u64>,
}

/// One batch, decoded and projected, waiting to be stored.
struct Decoded {
    /// The batch's place in the stream: its tiles and deletions are stored strictly in turn.
    turn: u64,
    views: Vec<ViewBatch>,
    deletions: Vec<PendingDeletion>,
    /// Records to dead-letter, with the view they failed for (empty when none could be told).
    rejected: Vec<(OwnedMessage, String, DeadLetterReason)>,
    /// Per partition, the offset after the batch's last record there: what to commit.
    next_offsets: BTreeMap<(String, i32), i64>,
}

/// Decodes and projects every record of a batch for each view that reads its topic. With
/// [`OnInvalid::Stop`], the first record that cannot be used ends ingestion instead.
fn decode(
    batch: Vec<OwnedMessage>,
    turn: u64,
    inputs: &Inputs,
    watermarks: &mut Watermarks,
    framing: &Framing,
    config: &IngestConfig,
    metrics: &IngestMetrics,
) -> Result<Decoded, IngestError> {
    let now_micros = now_micros();
    let mut decoded = Decoded {
        turn,
        views: Vec::new(),
        deletions: Vec::new(),
        rejected: Vec::new(),
        next_offsets: BTreeMap::new(),
    };
    let mut rejected = Vec::new();
    // Counted per topic, then added to the metric once per topic, not once per record.
    let mut records_by_topic: HashMap<&str, u64> = HashMap::new();
    for message in &batch {
        *records_by_topic.entry(message.topic()).or_default() += 1;
    }
    for (topic, records) in records_by_topic {
        metrics
            .records
            .get_or_create(&TopicLabels {
                topic: topic.to_owned(),
            })
            .inc_by(records);
    }
    for message in batch {
        let next = decoded
            .next_offsets
            .entry((message.topic().to_owned(), message.partition()))
            .or_default();
        *next = (*next).max(message.offset() + 1);
        let payload = message.payload().unwrap_or_default();
        let topic = Some(message.topic());
        let mut reasons: Vec<(String, DeadLetterReason)> = Vec::new();
        if config.upsert_topic.as_deref() == topic {
            match upsert_write(
                &inputs.upserts,
                &inputs.all_routes,
                framing,
                payload,
                now_micros,
            ) {
                Ok((route, write)) => ViewBatch::of(&mut decoded.views, route).writes.push(write),
                Err(reason) => reasons.push((String::new(), reason)),
            }
        } else if config.deletion_topic.as_deref() == topic {
            match deletion(
                &inputs.deletions,
                &inputs.registry,
                framing,
                payload,
                now_micros,
            ) {
                Ok(pending) => decoded.deletions.push(pending),
                Err(reason) => reasons.push((String::new(), reason)),
            }
        } else {
            let source = partition_source(message.topic(), message.partition());
            for route in inputs.routes.get(message.topic()).into_iter().flatten() {
                let projected =
                    route
                        .write_for(framing, payload, now_micros)
                        .and_then(|projected| {
                            watermarks.admit(route, &source, projected.write.event_time_micros)?;
                            Ok(projected)
                        });
                match projected {
                    Ok(projected) => ViewBatch::of(&mut decoded.views, route).push(
                        projected,
                        &source,
                        message.offset(),
                    ),
                    Err(reason) => reasons.push((route.view.view.name.to_string(), reason)),
                }
            }
        }
        if let Some((_, reason)) = reasons.first()
            && config.on_invalid == OnInvalid::Stop
        {
            return Err(IngestError::InvalidRecord {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                reason: reason.reason,
                detail: reason.detail.clone(),
            });
        }
        for (view, reason) in reasons {
            rejected.push((message.clone(), view, reason));
        }
    }
    decoded.rejected = rejected;
    Ok(decoded)
}

/// Dead-letters, writes and deletes what one batch carries; everything is durable when this
/// returns `Ok`, so the batch's offsets may be committed.
async fn store_batch<S: FeatureStore>(
    decoded: &Decoded,
    outputs: &Outputs<'_, S>,
) -> Result<IngestSummary, IngestError> {
    let metrics = outputs.metrics;
    let mut summary = IngestSummary::default();
    if let Some(dead_letters) = outputs.dead_letters {
        for (message, view, reason) in &decoded.rejected {
            dead_letters.dead_letter(message, view, reason).await?;
            metrics
                .dead_letters
                .get_or_create(&DeadLetterLabels {
                    view: view.clone(),
                    reason: reason.reason.to_owned(),
                })
                .inc();
            *summary.dead_lettered.entry(reason.reason).or_default() += 1;
        }
    }
    for ViewBatch {
        route,
        writes: route_writes,
        ..
    } in &decoded.views
    {
        let labels = ViewLabels {
            view: route.view.view.name.to_string(),
        };
        let started = std::time::Instant::now();
        retry_while_unavailable(&metrics.write_retries.get_or_create(&labels), || {
            outputs
                .store
                .write_features(&route.entity, &route.view, route_writes)
        })
        .await?;
        metrics
            .write_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        let written_micros = now_micros();
        let freshness = metrics.freshness_seconds.get_or_create(&labels);
        for write in route_writes {
            freshness.observe((written_micros - write.event_time_micros) as f64 / 1e6);
        }
        metrics
            .rows_written
            .get_or_create(&labels)
            .inc_by(route_writes.len() as u64);
        summary.rows_written += route_writes.len() as u64;
    }
    let mut turns = outputs.turns.subscribe();
    turns
        .wait_for(|turn| *turn == decoded.turn)
        .await
        .expect("the sender lives in `outputs`");
    for batch in decoded
        .views
        .iter()
        .filter(|batch| !batch.contributions.is_empty())
    {
        let labels = ViewLabels {
            view: batch.route.view.view.name.to_string(),
        };
        // Cloned: a family's guard must not be held across an await.
        let retries = metrics.write_retries.get_or_create(&labels).clone();
        let stored = store_tiles(outputs.store, batch, &retries).await?;
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
    }
    for pending in &decoded.deletions {
        delete_everywhere(outputs, pending).await?;
        summary.entities_deleted += 1;
    }
    outputs.turns.send_replace(decoded.turn + 1);
    Ok(summary)
}

/// Deletes one entity from every version of every view of its entity, then announces it.
async fn delete_everywhere<S: FeatureStore>(
    outputs: &Outputs<'_, S>,
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
    if let Some(invalidations) = outputs.invalidations {
        invalidations
            .invalidation(
                pending.entity.name.as_str(),
                &pending.key.to_string(),
                &pending.datum,
            )
            .await?;
    }
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
async fn retry_while_unavailable<T, F, Fut>(
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

/// How often the lag of each partition is measured; each measurement asks the broker for the
/// partition's end offset.
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// The offset each partition is committed up to, shared by the writing stage and the lag gauge.
#[derive(Debug, Default)]
struct Positions(std::sync::Mutex<BTreeMap<(String, i32), i64>>);

impl Positions {
    fn advance(&self, next_offsets: &BTreeMap<(String, i32), i64>) {
        let mut positions = self.0.lock().expect("not poisoned");
        for (partition, offset) in next_offsets {
            positions.insert(partition.clone(), *offset);
        }
    }

    fn snapshot(&self) -> BTreeMap<(String, i32), i64> {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// Sets the lag gauge of every partition this ingester has committed, every [`LAG_REFRESH`].
/// Never returns.
async fn measure_lag(
    consumer: &Arc<KafkaConsumer>,
    positions: &Positions,
    metrics: &IngestMetrics,
) -> std::convert::Infallible {
    let mut ticks = tokio::time::interval(LAG_REFRESH);
    loop {
        ticks.tick().await;
        measure_lag_once(consumer, positions, metrics).await;
    }
}

/// Sets the lag gauge of every partition this ingester has committed: the broker round trips
/// run on the blocking pool, off the ingest path.
async fn measure_lag_once(
    consumer: &Arc<KafkaConsumer>,
    positions: &Positions,
    metrics: &IngestMetrics,
) {
    let snapshot = positions.snapshot();
    let consumer = Arc::clone(consumer);
    let measured = tokio::task::spawn_blocking(move || {
        snapshot
            .into_iter()
            .filter_map(|((topic, partition), position)| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(1))
                    .ok()?;
                Some((topic, partition, (high - position).max(0)))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (topic, partition, lag) in measured {
        metrics
            .consumer_lag
            .get_or_create(&PartitionLabels {
                topic,
                partition: i64::from(partition),
            })
            .set(lag);
    }
}

/// The offsets to commit for a batch.
fn offsets(next_offsets: &BTreeMap<(String, i32), i64>) -> Result<TopicPartitionList, IngestError> {
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next_offsets {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(offsets)
}
