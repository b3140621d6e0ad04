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
//!
//! The per-batch rules live in `pipeline`, which knows no Kafka: this module is its Kafka
//! driver, and [`file`] its driver for Avro files.

pub mod file;
mod metrics;
mod pipeline;
mod publish;
mod route;
pub mod schema_registry;
mod tiles;

pub use metrics::IngestMetrics;
pub use schema_registry::{SchemaRegistry, SchemaRegistryError};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use quiver_core::definition::Registry;
use quiver_core::store::FeatureStore;
use quiver_kafka::KafkaConnection;
use quiver_kafka::context::LoggingContext;
use quiver_offline::OfflineLog;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::metrics::PartitionLabels;
use crate::pipeline::{
    Decoded, Inputs, Outputs, Payload, Record, Rules, Sink, SourceRecord, decode, store_batch,
};
use crate::publish::Publisher;
use crate::route::{DeadLetterReason, Framing};
use crate::tiles::{Watermarks, partition_source};

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
    /// Where every accepted event is also logged for training data; `None` logs nothing.
    pub offline_log: Option<Arc<OfflineLog>>,
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
    #[error("the offline log could not be written")]
    Log(#[from] quiver_offline::LogError),
}

/// The pause after a consumer error, so a persistent one is not logged in a tight loop.
const CONSUMER_ERROR_PAUSE: Duration = Duration::from_millis(500);

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
    let inputs_of = |registry| {
        Inputs::new(
            registry,
            schema_registry,
            config.upsert_topic.clone(),
            config.deletion_topic.clone(),
        )
    };
    let first = registry.borrow_and_update().clone();
    let mut inputs = inputs_of(first).await?;
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
    let mut topics = inputs.topics();
    subscribe(&consumer, &topics)?;
    tracing::info!(?topics, group = %config.group_id, "ingesting");
    let sink = KafkaSink {
        dead_letters: match &config.on_invalid {
            OnInvalid::DeadLetter { topic } => Some(Publisher::new(&config.kafka, topic)?),
            OnInvalid::Stop => None,
        },
        invalidations: config
            .invalidation_topic
            .as_deref()
            .map(|topic| Publisher::new(&config.kafka, topic))
            .transpose()?,
    };
    let rules = Rules {
        framing: &framing,
        stop_on_invalid: config.on_invalid == OnInvalid::Stop,
        event_time_shift_micros: 0,
        keep_events: config.offline_log.is_some(),
    };
    let outputs = Outputs::new(store, &sink, metrics).with_log(config.offline_log.as_deref());
    let (decoded_tx, mut decoded_rx) =
        tokio::sync::mpsc::channel::<Decoded<OwnedMessage>>(BATCHES_AHEAD);
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
                match inputs_of(changed).await {
                    Ok(new_inputs) => {
                        inputs = new_inputs;
                        let new_topics = inputs.topics();
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
            let decoded = decode(batch, turn, &inputs, &mut watermarks, &rules, metrics)?;
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

impl SourceRecord for OwnedMessage {
    fn record(&self) -> Record<'_> {
        Record {
            topic: self.topic(),
            partition: self.partition(),
            offset: self.offset(),
            source: Cow::Owned(partition_source(self.topic(), self.partition())),
            payload: Payload::Encoded(self.payload().unwrap_or_default()),
        }
    }
}

/// Dead letters and deletion announcements as Kafka records.
#[derive(Debug)]
struct KafkaSink {
    /// `None` when invalid records stop ingestion instead.
    dead_letters: Option<Publisher>,
    /// `None` when no invalidation topic is configured.
    invalidations: Option<Publisher>,
}

impl Sink<OwnedMessage> for KafkaSink {
    async fn dead_letter(
        &self,
        record: &OwnedMessage,
        view: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), IngestError> {
        match &self.dead_letters {
            Some(publisher) => publisher.dead_letter(record, view, reason).await,
            None => Ok(()),
        }
    }

    async fn deleted(&self, entity: &str, key: &str, command: &[u8]) -> Result<(), IngestError> {
        match &self.invalidations {
            Some(publisher) => publisher.invalidation(entity, key, command).await,
            None => Ok(()),
        }
    }
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

fn subscribe(consumer: &KafkaConsumer, topics: &[String]) -> Result<(), IngestError> {
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    Ok(consumer.subscribe(&topics)?)
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
