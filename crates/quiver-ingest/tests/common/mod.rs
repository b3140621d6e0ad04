//! Set-up and checks shared by the ingester's end-to-end tests.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of these helpers"
)]

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::Schema;
use quiver_core::apply::apply;
use quiver_core::definition::{Definitions, Registry};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::FeatureStore;
use quiver_core::value::Value;
use quiver_ingest::{IngestConfig, IngestMetrics, IngestSummary, OnInvalid, WireFormat, run};
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_testkit::{contract, events};

pub(crate) const SCHEMA_ID: u32 = 7;
pub(crate) const WAIT: Duration = Duration::from_secs(60);
/// How long a test waits for a whole stream to be committed: the 100k-event streams,
/// folded into the example's ten aggregates beside other tests on two cores, take over a minute.
pub(crate) const INGEST_WAIT: Duration = Duration::from_secs(300);

/// A keyspace with the example `user_activity` view (no TTL, so the 2026 sample events are kept
/// whatever today is) reading `topic`, after `adjust` has had its say on the definitions.
pub(crate) async fn applied(
    topic: &str,
    adjust: impl FnOnce(&mut Definitions),
) -> (ScyllaStore, Registry) {
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "ingest").await;
    let store = ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace,
    ))
    .await
    .expect("connects");
    let mut definitions = contract::user_activity_on(topic);
    adjust(&mut definitions);
    let registry = apply(&store, &definitions, false)
        .await
        .expect("applies")
        .registry;
    (store, registry)
}

pub(crate) fn config(
    group: &str,
    writer_schemas: HashMap<u32, Schema>,
    dead_letters: &str,
) -> IngestConfig {
    IngestConfig {
        kafka: quiver_kafka::KafkaConnection::plaintext(quiver_testkit::kafka_brokers()),
        group_id: group.to_owned(),
        wire_format: WireFormat::Confluent {
            writer_schemas,
            schema_registry: None,
        },
        on_invalid: OnInvalid::DeadLetter {
            topic: dead_letters.to_owned(),
        },
        upsert_topic: None,
        deletion_topic: None,
        invalidation_topic: None,
        batch_size: 8,
        batch_linger: Duration::from_millis(50),
        offline_log: None,
    }
}

/// Runs the ingester until its group has committed every record of `topics`, by which time each
/// one is stored or dead-lettered; returns its summary and its metrics in the text format.
pub(crate) async fn ingest_all(
    config: &IngestConfig,
    registry: &Registry,
    store: &impl FeatureStore,
    topics: &[(String, i32)],
) -> (IngestSummary, String) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let metrics = IngestMetrics::register(&mut metrics_registry);
    let ingest = run(config, fixed(registry), store, &metrics, async {
        let _ = stopped.await;
    });
    let check = async {
        quiver_testkit::wait_until_committed(&config.group_id, topics, INGEST_WAIT).await;
        stop.send(()).expect("the ingester is running");
    };
    let (summary, ()) = tokio::join!(ingest, check);
    let mut exposition = String::new();
    prometheus_client::encoding::text::encode(&mut exposition, &metrics_registry).unwrap();
    (summary.expect("ingest ends cleanly"), exposition)
}

pub(crate) async fn read_country(
    store: &ScyllaStore,
    registry: &Registry,
    user: i64,
) -> Option<(Value, i64)> {
    let view = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    store
        .read_features(
            &registry.entities[0],
            view,
            &["last_country".parse().unwrap()],
            &EntityKey::new(vec![KeyPart::Int64(user)]).unwrap(),
        )
        .await
        .expect("reads")
        .remove(0)
        .map(|stored| (stored.value, stored.event_time_micros))
}

/// The newest country of each user by event time, with that time in microseconds: what the
/// store must hold after ingesting `stream`, computed without the ingester.
pub(crate) fn ground_truth(stream: &[events::StreamEvent]) -> HashMap<i64, (Value, i64)> {
    let mut newest: HashMap<i64, (Value, i64)> = HashMap::new();
    for event in stream {
        let micros = event.event_time_millis * 1_000;
        let entry = newest
            .entry(event.user)
            .or_insert((Value::String(event.country.into()), micros));
        if micros > entry.1 {
            *entry = (Value::String(event.country.into()), micros);
        }
    }
    newest
}

/// Users whose stored country and its event time differ from `truth`, with what is stored.
pub(crate) async fn differences(
    store: &ScyllaStore,
    registry: &Registry,
    truth: &HashMap<i64, (Value, i64)>,
) -> Vec<(i64, Option<(Value, i64)>)> {
    let mut wrong = Vec::new();
    for (user, expected) in truth {
        let stored = read_country(store, registry, *user).await;
        if stored.as_ref() != Some(expected) {
            wrong.push((*user, stored));
        }
    }
    wrong
}

/// The stream's events, Confluent-framed with [`SCHEMA_ID`] and keyed by user.
pub(crate) fn framed(
    schema: &Schema,
    stream: &[events::StreamEvent],
) -> Vec<(Option<String>, Vec<u8>)> {
    stream
        .iter()
        .map(|event| {
            let datum = apache_avro::to_avro_datum(schema, event.event.clone()).unwrap();
            (
                Some(event.user.to_string()),
                quiver_avro::wire::encode(SCHEMA_ID, &datum),
            )
        })
        .collect()
}

/// A registry that never changes, as the ingester watches it.
pub(crate) fn fixed(registry: &Registry) -> tokio::sync::watch::Receiver<std::sync::Arc<Registry>> {
    tokio::sync::watch::channel(std::sync::Arc::new(registry.clone())).1
}

/// The value of the `user_activity` sample of counter `name` (such as
/// `quiver_ingest_rows_written_total`) in `registry`; 0 before it has one.
pub(crate) fn view_counter(registry: &prometheus_client::registry::Registry, name: &str) -> u64 {
    let mut exposition = String::new();
    prometheus_client::encoding::text::encode(&mut exposition, registry).unwrap();
    let prefix = format!("{name}{{view=\"user_activity\"}} ");
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}
