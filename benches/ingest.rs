//! End-to-end ingestion against the real Kafka and Cassandra of `scripts/services.sh up`.
//!
//! Run: `scripts/services.sh up && cargo bench -p quiver-benches --bench ingest`
//! (`QUIVER_BENCH_EVENTS` sets the stream length, 100000 by default).
//!
//! Side by side in one run, on the same events:
//! - **consume only**: rdkafka reading the topic with nothing else, the ceiling Kafka sets;
//! - **driver, concurrent single inserts** and **driver, per-partition unlogged batches**: the
//!   scylla driver writing the projected rows directly, 64 requests in flight, the two write
//!   strategies the ingester could use;
//! - **adapter**: `ScyllaStore::write_features` in 500-row batches, what the ingester calls;
//! - **end to end**: `quiver_ingest::run` from the topic to the store, committed;
//! - **end to end with the offline log**: the same, also writing every event to an offline log
//!   in a local folder (Parquet files per batch), as `--offline-log` does;
//! - **freshness** at a steady 5,000 events/s: from each event's time to the store's ack.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark's report is its standard output"
)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apache_avro::types::Value as Avro;
use futures::{StreamExt, TryStreamExt};
use quiver_avro::wire;
use quiver_core::aggregate::{EntityTiles, TileChanges};
use quiver_core::apply::apply;
use quiver_core::definition::{Entity, Registry, VersionedView};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::store::{EntityRow, FeatureStore, FeatureWrite, StoreError, StoredValue};
use quiver_core::value::Value;
use quiver_ingest::IngestMetrics;
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_testkit::{contract, events};

mod common;
use common::{BATCH_ROWS, SCHEMA_ID, ingest_config, ingest_until_committed};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};

const PARTITIONS: i32 = 4;
const USERS: i64 = 1_000;
const IN_FLIGHT: usize = 64;
const STEADY_RATE: u64 = 5_000;
const STEADY_SECONDS: u64 = 20;
const ROUNDS: usize = 4;
const PATHS: [&str; 6] = [
    "consume only (rdkafka)",
    "driver, concurrent single inserts",
    "driver, per-partition unlogged batches only",
    "adapter (ScyllaStore::write_features)",
    "end to end (quiver_ingest::run)",
    "end to end, offline log on",
];
const END_TO_END: usize = 4;

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("QUIVER_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "bench_ingest").await;
    let topic = quiver_testkit::create_topic("bench_ingest", PARTITIONS).await;
    let store = ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace.clone(),
    ))
    .await
    .expect("connects");
    let registry = apply_view(&store, &topic).await;
    let entity = registry.entities[0].clone();
    let view = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap()
        .clone();

    let schema = events::match_event_schema();
    let stream = events::shuffled_stream(&schema, events, USERS, 1);
    let records: Vec<(Option<String>, Vec<u8>)> = stream
        .iter()
        .map(|event| {
            let datum = apache_avro::to_avro_datum(&schema, event.event.clone()).unwrap();
            (
                Some(event.user.to_string()),
                wire::encode(SCHEMA_ID, &datum),
            )
        })
        .collect();
    let rows: Vec<FeatureWrite> = stream
        .iter()
        .map(|event| quiver_avro::project::project(&entity, &view.view, &event.event, now_micros()))
        .collect::<Result<_, _>>()
        .expect("the sample events project");
    quiver_testkit::produce(&topic, &records).await;
    println!(
        "{} events ({} users, {PARTITIONS} partitions), {} cores",
        records.len(),
        USERS,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm the database's write path before timing anything.
    write_singles(&session, &keyspace, &rows[..rows.len().min(10_000)]).await;

    // Rounds in turn, each starting its write paths at a different one, so a database that
    // slows as its tables grow or while it flushes slows every path alike; each path's median
    // round is reported.
    let mut rounds: Vec<Vec<Duration>> = vec![Vec::new(); PATHS.len()];
    for round in 0..ROUNDS {
        let started = Instant::now();
        consume_all(&topic, records.len()).await;
        rounds[0].push(started.elapsed());
        for turn in 0..PATHS.len() - 1 {
            let path = 1 + (round + turn) % (PATHS.len() - 1);
            let started = Instant::now();
            match path {
                1 => write_singles(&session, &keyspace, &rows).await,
                2 => write_partition_batches(&session, &keyspace, &rows).await,
                3 => {
                    for chunk in rows.chunks(BATCH_ROWS) {
                        store
                            .write_features(&entity, &view, chunk)
                            .await
                            .expect("writes");
                    }
                }
                _ => {
                    let folder = tempfile::tempdir().expect("a folder");
                    let offline_log = (path > END_TO_END).then(|| {
                        std::sync::Arc::new(
                            quiver_offline::OfflineLog::open(
                                folder.path().to_str().expect("a UTF-8 path"),
                            )
                            .expect("a log"),
                        )
                    });
                    let probe = Probe::new(&store);
                    ingest_until_committed(&registry, &probe, &topic, PARTITIONS, offline_log)
                        .await;
                    // To the last write, not to the commit check that ends the run.
                    rounds[path].push(probe.last_ack().duration_since(started));
                    continue;
                }
            }
            rounds[path].push(started.elapsed());
        }
    }
    let results: Vec<(&str, Duration)> = PATHS
        .iter()
        .zip(rounds)
        .map(|(name, mut took)| {
            took.sort();
            (*name, took[took.len() / 2])
        })
        .collect();
    let direct = results[1].1;
    let without_log = results[END_TO_END].1;
    println!("\n| path (median of {ROUNDS} rounds) | seconds | events/s | vs driver singles |");
    println!("|---|---:|---:|---:|");
    for (name, took) in &results {
        println!(
            "| {name} | {:.2} | {:.0} | {:.2} |",
            took.as_secs_f64(),
            rows.len() as f64 / took.as_secs_f64(),
            direct.as_secs_f64() / took.as_secs_f64()
        );
    }

    println!(
        "\noffline log on against off, end to end: {:.2} of the throughput",
        without_log.as_secs_f64() / results[END_TO_END + 1].1.as_secs_f64()
    );

    let (p50, p99, count) = steady_freshness(&registry, &store).await;
    println!(
        "\nfreshness at {STEADY_RATE} events/s for {STEADY_SECONDS} s ({count} rows): \
         p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
}

/// Applies the example `user_activity` view reading `topic`, with no TTL so the sample events
/// from 2026 are written whatever today is.
async fn apply_view(store: &ScyllaStore, topic: &str) -> Registry {
    apply(store, &contract::user_activity_on(topic), false)
        .await
        .expect("applies")
        .registry
}

/// A registry that never changes, as the ingester watches it.
fn fixed(registry: &Registry) -> tokio::sync::watch::Receiver<std::sync::Arc<Registry>> {
    tokio::sync::watch::channel(std::sync::Arc::new(registry.clone())).1
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

async fn consume_all(topic: &str, count: usize) {
    let consumer: StreamConsumer = quiver_testkit::kafka_config()
        .set("group.id", quiver_testkit::unique_name("bench_consume"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribes");
    let mut bytes = 0;
    for _ in 0..count {
        let message = consumer.recv().await.expect("reads");
        bytes += message.payload().map_or(0, <[u8]>::len);
    }
    std::hint::black_box(bytes);
}

/// The ingester's statement for the three string features every sample event carries.
fn insert(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.user_activity_v1 \
         (user_id, last_country, last_platform, last_action) VALUES (?, ?, ?, ?) \
         USING TIMESTAMP ? AND TTL ?"
    )
}

type InsertValues = (i64, String, String, String, i64, i32);

fn bound(row: &FeatureWrite) -> InsertValues {
    let [KeyPart::Int64(user)] = row.key.parts() else {
        panic!("user keys are one int64")
    };
    let text = |name: &str| {
        row.values
            .iter()
            .find_map(|(n, v)| match v {
                Value::String(s) if n.as_str() == name => Some(s.clone()),
                _ => None,
            })
            .expect("the sample events carry every string feature")
    };
    (
        *user,
        text("last_country"),
        text("last_platform"),
        text("last_action"),
        row.event_time_micros,
        0,
    )
}

async fn write_singles(session: &Session, keyspace: &str, rows: &[FeatureWrite]) {
    let prepared = session.prepare(insert(keyspace)).await.expect("prepares");
    futures::stream::iter(rows)
        .map(|row| session.execute_unpaged(&prepared, bound(row)))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .expect("writes");
}

/// In chunks of the ingester's batch size, one unlogged batch per user (partition) of a chunk.
async fn write_partition_batches(session: &Session, keyspace: &str, rows: &[FeatureWrite]) {
    let prepared = session.prepare(insert(keyspace)).await.expect("prepares");
    let mut batches: Vec<(Batch, Vec<InsertValues>)> = Vec::new();
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut by_user: BTreeMap<&EntityKey, Vec<InsertValues>> = BTreeMap::new();
        for row in chunk {
            by_user.entry(&row.key).or_default().push(bound(row));
        }
        for (_, values) in by_user {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in &values {
                batch.append_statement(prepared.clone());
            }
            batches.push((batch, values));
        }
    }
    futures::stream::iter(&batches)
        .map(|(batch, values)| session.batch(batch, values))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .expect("writes");
}

/// The store, noting for each written row how long after its event time the write was acked,
/// and when the last write was acked.
struct Probe<'a> {
    store: &'a ScyllaStore,
    lags_micros: Mutex<Vec<i64>>,
    last_ack: Mutex<Option<Instant>>,
}

impl<'a> Probe<'a> {
    fn new(store: &'a ScyllaStore) -> Self {
        Probe {
            store,
            lags_micros: Mutex::new(Vec::new()),
            last_ack: Mutex::new(None),
        }
    }

    fn last_ack(&self) -> Instant {
        self.last_ack
            .lock()
            .expect("not poisoned")
            .expect("something was written")
    }
}

impl FeatureStore for Probe<'_> {
    async fn write_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> Result<(), StoreError> {
        self.store.write_features(entity, view, writes).await?;
        let acked = now_micros();
        self.lags_micros
            .lock()
            .expect("not poisoned")
            .extend(writes.iter().map(|write| acked - write.event_time_micros));
        *self.last_ack.lock().expect("not poisoned") = Some(Instant::now());
        Ok(())
    }

    async fn delete_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        event_time_micros: i64,
    ) -> Result<(), StoreError> {
        self.store
            .delete_entity(entity, view, key, event_time_micros)
            .await
    }

    async fn read_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        features: &[Name],
        key: &EntityKey,
    ) -> Result<Vec<Option<StoredValue>>, StoreError> {
        self.store.read_features(entity, view, features, key).await
    }

    async fn read_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
    ) -> Result<EntityRow, StoreError> {
        self.store.read_entity(entity, view, key).await
    }

    async fn write_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        changes: &TileChanges,
    ) -> Result<(), StoreError> {
        self.store.write_tiles(entity, view, key, changes).await
    }

    async fn read_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        feature: Option<&Name>,
    ) -> Result<EntityTiles, StoreError> {
        self.store.read_tiles(entity, view, key, feature).await
    }
}

/// Produces events stamped with the current time at a steady rate while the ingester runs, and
/// returns the p50 and p99 of write ack time minus event time, in milliseconds.
async fn steady_freshness(registry: &Registry, store: &ScyllaStore) -> (f64, f64, usize) {
    let topic = quiver_testkit::create_topic("bench_steady", PARTITIONS).await;
    let mut registry = registry.clone();
    for view in &mut registry.feature_views {
        view.view.source.topic = topic.clone();
    }
    let probe = Probe::new(store);
    let group = quiver_testkit::unique_name("bench_steady");
    let config = ingest_config(&group);
    let metrics = IngestMetrics::register(&mut prometheus_client::registry::Registry::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ingest = quiver_ingest::run(&config, fixed(&registry), &probe, &metrics, async {
        let _ = stopped.await;
    });
    let schema = events::match_event_schema();
    let produce = async {
        let producer: FutureProducer = quiver_testkit::kafka_config()
            .set("linger.ms", "1")
            .create()
            .expect("a producer");
        // Give the ingester time to join its group, so no event waits for the assignment.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let per_tick = STEADY_RATE / 100;
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0_i64;
        let mut deliveries = Vec::new();
        for _ in 0..STEADY_SECONDS * 100 {
            ticks.tick().await;
            for _ in 0..per_tick {
                let event = events::with_field(
                    events::with_field(
                        events::match_event(&schema, sent),
                        "user_id",
                        Avro::Long(sent % USERS),
                    ),
                    "ts",
                    Avro::TimestampMillis(now_micros() / 1_000),
                );
                let payload = wire::encode(
                    SCHEMA_ID,
                    &apache_avro::to_avro_datum(&schema, event).unwrap(),
                );
                let key = (sent % USERS).to_string();
                let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                deliveries.push(producer.send_result(record).expect("queued"));
                sent += 1;
            }
        }
        for delivery in deliveries {
            delivery.await.expect("open").expect("delivered");
        }
        quiver_testkit::wait_until_committed(
            &group,
            &[(topic.clone(), PARTITIONS)],
            Duration::from_secs(120),
        )
        .await;
        stop.send(()).expect("the ingester runs");
    };
    let (summary, ()) = tokio::join!(ingest, produce);
    summary.expect("ingests");
    let mut lags = probe.lags_micros.lock().expect("not poisoned").clone();
    lags.sort_unstable();
    let percentile = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize] as f64 / 1_000.0;
    (percentile(0.50), percentile(0.99), lags.len())
}
