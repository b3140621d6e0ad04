//! The ingester end to end on the real Kafka and Cassandra: good events become feature values
//! ordered by event time, bad ones go to the dead-letter topic with their reason, and offsets are
//! committed once everything is stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use quiver_avro::project::FEATURE_UPSERT_AVSC;
use quiver_avro::wire;
use quiver_core::apply::apply;
use quiver_core::definition::Registry;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::FeatureStore;
use quiver_core::value::Value;
use quiver_ingest::{IngestConfig, IngestMetrics, OnInvalid, WireFormat, run};
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_testkit::{contract, events};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const SCHEMA_ID: u32 = 7;
const UPSERT_SCHEMA_ID: u32 = 8;
const PARTITIONS: i32 = 2;

fn with_field(mut event: Avro, field: &str, value: Avro) -> Avro {
    let Avro::Record(fields) = &mut event else {
        panic!("a record")
    };
    fields
        .iter_mut()
        .find(|(name, _)| name == field)
        .expect("a field")
        .1 = value;
    event
}

fn country(code: &str) -> Avro {
    Avro::Union(1, Box::new(Avro::String(code.into())))
}

async fn read_country(store: &ScyllaStore, registry: &Registry, user: i64) -> Option<(Value, i64)> {
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

#[tokio::test]
async fn events_become_features_and_bad_ones_are_dead_lettered() {
    let topic = quiver_testkit::create_topic("ingest_matches", PARTITIONS).await;
    let dead_letter_topic = quiver_testkit::create_topic("ingest_dlq", 1).await;
    let upsert_topic = quiver_testkit::create_topic("ingest_upserts", 1).await;
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "ingest").await;
    let store = ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace,
    ))
    .await
    .expect("connects");
    let mut definitions = contract::example_definitions();
    definitions
        .feature_views
        .retain(|view| view.name.as_str() == "user_activity");
    definitions.feature_services.clear();
    definitions.feature_views[0].source.topic = topic.clone();
    // The sample events are from September 2026; without a TTL they are kept whatever today is.
    definitions.feature_views[0].ttl = None;
    let registry = apply(&store, &definitions, false)
        .await
        .expect("applies")
        .registry;

    // Users 0..5, one event per second; then a late event for user 0 from before all of them,
    // a newer one for user 1, and three records that cannot be used.
    let schema = events::match_event_schema();
    let encode = |event: Avro| {
        wire::encode(
            SCHEMA_ID,
            &apache_avro::to_avro_datum(&schema, event).unwrap(),
        )
    };
    let mut records: Vec<(i64, Vec<u8>)> = (0..20)
        .map(|n| (n % 5, encode(events::match_event(&schema, n))))
        .collect();
    // Event `n` of the sample stream, moved to another time and country.
    let moved = |n: i64, millis: i64, code: &str| {
        let event = with_field(
            events::match_event(&schema, n),
            "ts",
            Avro::TimestampMillis(millis),
        );
        with_field(event, "country", country(code))
    };
    let late = moved(0, 1_700_000_000_000, "NO");
    records.push((0, encode(late)));
    let newest = moved(1, 1_790_000_100_000, "DK");
    records.push((1, encode(newest)));
    records.push((2, b"not avro at all".to_vec()));
    records.push((3, wire::encode(99, b"\x02")));
    records.push((
        4,
        encode(with_field(
            events::match_event(&schema, 4),
            "ts",
            Avro::TimestampMillis(1_000),
        )),
    ));

    // Upsert commands, as a batch job would send them: one for user 3, one naming no real view.
    let upsert_schema = apache_avro::Schema::parse_str(FEATURE_UPSERT_AVSC).unwrap();
    let upsert = |view: &str, country: &str| {
        let command = Avro::Record(vec![
            ("feature_view".into(), Avro::String(view.into())),
            (
                "keys".into(),
                Avro::Map([("user_id".to_owned(), Avro::Long(3))].into()),
            ),
            (
                "values".into(),
                Avro::Map([("last_country".to_owned(), Avro::String(country.into()))].into()),
            ),
            (
                "event_time".into(),
                Avro::TimestampMicros(1_790_000_200_000_000),
            ),
        ])
        .resolve(&upsert_schema)
        .unwrap();
        wire::encode(
            UPSERT_SCHEMA_ID,
            &apache_avro::to_avro_datum(&upsert_schema, command).unwrap(),
        )
    };
    let upserts = [upsert("user_activity", "IS"), upsert("user_activiti", "XX")];

    let producer: FutureProducer = quiver_testkit::kafka_config().create().expect("a producer");
    for payload in &upserts {
        producer
            .send(
                FutureRecord::<(), _>::to(&upsert_topic).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("produce: {error}"));
    }
    for (user, payload) in &records {
        let key = user.to_string();
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("produce: {error}"));
    }

    let group = quiver_testkit::unique_name("ingest_group");
    let config = IngestConfig {
        brokers: quiver_testkit::kafka_brokers(),
        group_id: group.clone(),
        wire_format: WireFormat::Confluent {
            writer_schemas: HashMap::from([
                (SCHEMA_ID, schema.clone()),
                (UPSERT_SCHEMA_ID, upsert_schema.clone()),
            ]),
        },
        upsert_topic: Some(upsert_topic.clone()),
        on_invalid: OnInvalid::DeadLetter {
            topic: dead_letter_topic.clone(),
        },
        batch_size: 8,
        batch_linger: Duration::from_millis(50),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let metrics = IngestMetrics::register(&mut metrics_registry);
    let ingest = run(&config, &registry, &store, &metrics, async {
        let _ = stopped.await;
    });
    // Stop once the group has committed every record of both topics: by then each one is
    // stored or dead-lettered, since offsets are committed only after that.
    let check = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let topics = [(topic.clone(), PARTITIONS), (upsert_topic.clone(), 1)];
        while !quiver_testkit::committed_to_end(&group, &topics).await {
            assert!(
                Instant::now() < deadline,
                "the records were not all committed in time"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.send(()).expect("the ingester is running");
    };
    let (summary, ()) = tokio::join!(ingest, check);
    let summary = summary.expect("ingest ends cleanly");

    assert_eq!(summary.records, records.len() as u64 + 2);
    assert_eq!(summary.rows_written, records.len() as u64 - 3 + 1);
    assert_eq!(
        summary.dead_lettered,
        [
            ("absurd_event_time", 1),
            ("undecodable", 1),
            ("unknown_schema_id", 1),
            ("unknown_target", 1)
        ]
        .into_iter()
        .collect()
    );
    let mut exposition = String::new();
    prometheus_client::encoding::text::encode(&mut exposition, &metrics_registry).unwrap();
    for line in [
        format!(
            "quiver_ingest_records_total{{topic=\"{topic}\"}} {}",
            records.len()
        ),
        format!("quiver_ingest_records_total{{topic=\"{upsert_topic}\"}} 2"),
        format!(
            "quiver_ingest_rows_written_total{{view=\"user_activity\"}} {}",
            records.len() - 2
        ),
        "quiver_ingest_dead_letters_total{view=\"user_activity\",reason=\"undecodable\"} 1"
            .to_owned(),
        "quiver_ingest_dead_letters_total{view=\"\",reason=\"unknown_target\"} 1".to_owned(),
    ] {
        assert!(
            exposition.contains(&line),
            "`{line}` missing from:\n{exposition}"
        );
    }
    assert!(
        exposition.contains("quiver_ingest_consumer_lag{"),
        "{exposition}"
    );

    assert_eq!(
        read_country(&store, &registry, 3).await,
        Some((Value::String("IS".into()), 1_790_000_200_000_000)),
        "the upsert command set the value with its event time"
    );
    let newest_of_user_0 = (1_790_000_000_000 + 15 * 1_000) * 1_000;
    assert_eq!(
        read_country(&store, &registry, 0).await,
        Some((Value::String("SE".into()), newest_of_user_0)),
        "the late event did not overwrite the newer value"
    );
    assert_eq!(
        read_country(&store, &registry, 1).await,
        Some((Value::String("DK".into()), 1_790_000_100_000_000))
    );

    // The dead letters keep the original bytes and say why, where from, and for which view.
    let reader: BaseConsumer = quiver_testkit::kafka_config()
        .set("group.id", quiver_testkit::unique_name("dlq_reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&dead_letter_topic, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&assignment).unwrap();
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reasons.len() < 4 && Instant::now() < deadline {
        let Some(message) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("reads the dead letters");
        let headers: HashMap<&str, String> = message
            .headers()
            .expect("headers")
            .iter()
            .map(|h| {
                (
                    h.key,
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let source = &headers["quiver.source.topic"];
        assert!(source == &topic || source == &upsert_topic, "{source}");
        if source == &topic {
            assert_eq!(headers["quiver.view"], "user_activity");
        }
        assert!(!headers["quiver.detail"].is_empty());
        let payload = message.payload().unwrap();
        let original = records.iter().any(|(_, sent)| sent.as_slice() == payload)
            || upserts.iter().any(|sent| sent.as_slice() == payload);
        assert!(original, "the dead letter carries the original bytes");
        reasons.push(headers["quiver.reason"].clone());
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "absurd_event_time",
            "undecodable",
            "unknown_schema_id",
            "unknown_target"
        ]
    );
}
