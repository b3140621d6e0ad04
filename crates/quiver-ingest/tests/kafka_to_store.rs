//! The ingester end to end on the real Kafka and Cassandra: good events become feature values
//! ordered by event time, bad ones go to the dead-letter topic with their reason, deletions
//! remove entities and are announced, producers may move to a newer schema, and offsets are
//! committed once everything is stored.

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use quiver_avro::project::{ENTITY_DELETED_AVSC, FEATURE_UPSERT_AVSC};
use quiver_avro::wire;
use quiver_core::aggregate::{aggregate_features, evaluate};
use quiver_core::apply::apply;
use quiver_core::definition::{AggregateFunction, SchemaRef, Seconds};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::FeatureStore;
use quiver_core::value::Value;
use quiver_ingest::IngestConfig;
mod common;

use common::{
    INGEST_WAIT, SCHEMA_ID, WAIT, applied, config, differences, framed, ground_truth, ingest_all,
    read_country,
};
use quiver_testkit::ProducedRecord;
use quiver_testkit::contract;
use quiver_testkit::events::{self, with_field};
use rdkafka::Message;
use rdkafka::message::Headers;

const UPSERT_SCHEMA_ID: u32 = 8;
const DELETION_SCHEMA_ID: u32 = 9;
const NULLABLE_TS_SCHEMA_ID: u32 = 10;
const V2_SCHEMA_ID: u32 = 11;
const PARTITIONS: i32 = 2;
const TRACE_HEADER: &str = "traceparent";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn country(code: &str) -> Avro {
    Avro::Union(1, Box::new(Avro::String(code.into())))
}

fn match_event_avsc() -> String {
    std::fs::read_to_string(events::schema_path("match_event.avsc")).expect("the bundled schema")
}

/// `match_event.avsc` with `ts` made nullable, as a careless producer might publish it.
fn nullable_ts(avsc: &str) -> String {
    let ts = r#"{"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}"#;
    assert!(
        avsc.contains(ts),
        "the bundled schema declares ts as expected"
    );
    avsc.replace(
        ts,
        r#"{"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]"#,
    )
}

/// A command of a built-in schema, Confluent-framed with `schema_id`.
fn command(avsc: &str, schema_id: u32, fields: Vec<(&str, Avro)>) -> Vec<u8> {
    let schema = Schema::parse_str(avsc).unwrap();
    let record = Avro::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        .resolve(&schema)
        .unwrap();
    wire::encode(
        schema_id,
        &apache_avro::to_avro_datum(&schema, record).unwrap(),
    )
}

/// A dead letter's headers, as text.
fn headers(message: &rdkafka::message::OwnedMessage) -> HashMap<&str, String> {
    message
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key,
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect()
}

fn user_keys(entries: Vec<(&str, Avro)>) -> Avro {
    Avro::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

#[tokio::test]
async fn events_become_features_and_bad_ones_are_dead_lettered() {
    let topic = quiver_testkit::create_topic("ingest_matches", PARTITIONS).await;
    let dead_letter_topic = quiver_testkit::create_topic("ingest_dlq", 1).await;
    let upsert_topic = quiver_testkit::create_topic("ingest_upserts", 1).await;
    let deletion_topic = quiver_testkit::create_topic("ingest_deletions", 1).await;
    let invalidation_topic = quiver_testkit::create_topic("ingest_invalidations", 1).await;
    // The view's schema has a nullable `ts`, so an event can reach the projection without one.
    let (store, registry) = applied(&topic, |definitions| {
        let SchemaRef::File { avsc, .. } = &mut definitions.feature_views[0].source.schema else {
            panic!("the example reads a schema file")
        };
        *avsc = nullable_ts(avsc);
    })
    .await;

    // Users 0..5, one event per second; then a late event for user 0 from before all of them,
    // a newer one for user 1, and four records that cannot be used.
    let schema = events::match_event_schema();
    let nullable_schema = Schema::parse_str(&nullable_ts(&match_event_avsc())).unwrap();
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
    records.push((0, encode(moved(0, 1_700_000_000_000, "NO"))));
    records.push((1, encode(moved(1, 1_790_000_100_000, "DK"))));
    records.push((2, b"not avro at all".to_vec()));
    records.push((3, wire::encode(99, b"\x02")));
    records.push((4, encode(moved(4, 1_000, "SE"))));
    let without_time = with_field(events::match_event(&schema, 4), "ts", Avro::Null)
        .resolve(&nullable_schema)
        .unwrap();
    records.push((
        4,
        wire::encode(
            NULLABLE_TS_SCHEMA_ID,
            &apache_avro::to_avro_datum(&nullable_schema, without_time).unwrap(),
        ),
    ));

    // Upsert commands, as a batch job would send them: one for user 3, then one naming no real
    // view, one without the key and one with a value of the wrong type.
    let upsert = |view: &str, keys: Avro, value: Avro| {
        command(
            FEATURE_UPSERT_AVSC,
            UPSERT_SCHEMA_ID,
            vec![
                ("feature_view", Avro::String(view.into())),
                ("keys", keys),
                ("values", user_keys(vec![("last_country", value)])),
                ("event_time", Avro::TimestampMicros(1_790_000_200_000_000)),
            ],
        )
    };
    let user_3 = || user_keys(vec![("user_id", Avro::Long(3))]);
    let upserts = [
        upsert("user_activity", user_3(), Avro::String("IS".into())),
        upsert("user_activiti", user_3(), Avro::String("XX".into())),
        upsert(
            "user_activity",
            user_keys(vec![]),
            Avro::String("XX".into()),
        ),
        upsert("user_activity", user_3(), Avro::Long(5)),
    ];
    // User 2 deletes their account after all their events; a deletion of an unknown entity.
    let delete = |entity: &str| {
        command(
            ENTITY_DELETED_AVSC,
            DELETION_SCHEMA_ID,
            vec![
                ("entity", Avro::String(entity.into())),
                ("keys", user_keys(vec![("user_id", Avro::Long(2))])),
                ("event_time", Avro::TimestampMicros(1_790_000_300_000_000)),
            ],
        )
    };
    let deletions = [delete("user"), delete("usr")];

    let unkeyed = |payloads: &[Vec<u8>]| -> Vec<(Option<String>, Vec<u8>)> {
        payloads.iter().map(|p| (None, p.clone())).collect()
    };
    quiver_testkit::produce(&upsert_topic, &unkeyed(&upserts)).await;
    quiver_testkit::produce(&deletion_topic, &unkeyed(&deletions)).await;
    // Producers set headers of their own (trace context, and here a forged reason); the
    // dead letters keep the first and say what this ingester found.
    let user_keys_text: Vec<String> = records.iter().map(|(user, _)| user.to_string()).collect();
    let keyed: Vec<ProducedRecord<'_>> = records
        .iter()
        .zip(&user_keys_text)
        .map(|((_, payload), key)| ProducedRecord {
            key: Some(key),
            payload,
            headers: &[(TRACE_HEADER, TRACE), ("quiver.reason", "forged")],
        })
        .collect();
    quiver_testkit::produce_records(&topic, &keyed).await;

    let group = quiver_testkit::unique_name("ingest_group");
    let writer_schemas = HashMap::from([
        (SCHEMA_ID, schema.clone()),
        (NULLABLE_TS_SCHEMA_ID, nullable_schema),
        (
            UPSERT_SCHEMA_ID,
            Schema::parse_str(FEATURE_UPSERT_AVSC).unwrap(),
        ),
        (
            DELETION_SCHEMA_ID,
            Schema::parse_str(ENTITY_DELETED_AVSC).unwrap(),
        ),
    ]);
    let config = IngestConfig {
        upsert_topic: Some(upsert_topic.clone()),
        deletion_topic: Some(deletion_topic.clone()),
        invalidation_topic: Some(invalidation_topic.clone()),
        ..config(&group, writer_schemas, &dead_letter_topic)
    };
    let topics = [
        (topic.clone(), PARTITIONS),
        (upsert_topic.clone(), 1),
        (deletion_topic.clone(), 1),
    ];
    let (summary, exposition) = ingest_all(&config, &registry, &store, &topics).await;

    assert_eq!(summary.records, records.len() as u64 + 4 + 2);
    assert_eq!(summary.rows_written, records.len() as u64 - 4 + 1);
    assert_eq!(summary.entities_deleted, 1);
    let expected_reasons = [
        ("absurd_event_time", 1),
        ("missing_event_time", 1),
        ("missing_key", 1),
        ("undecodable", 1),
        ("unknown_schema_id", 1),
        ("unknown_target", 2),
        ("wrong_type", 1),
    ];
    assert_eq!(
        summary.dead_lettered,
        expected_reasons.into_iter().collect()
    );
    for line in [
        format!(
            "quiver_ingest_records_total{{topic=\"{topic}\"}} {}",
            records.len()
        ),
        format!("quiver_ingest_records_total{{topic=\"{upsert_topic}\"}} 4"),
        format!(
            "quiver_ingest_rows_written_total{{view=\"user_activity\"}} {}",
            records.len() - 3
        ),
        "quiver_ingest_dead_letters_total{view=\"user_activity\",reason=\"undecodable\"} 1"
            .to_owned(),
        "quiver_ingest_dead_letters_total{view=\"\",reason=\"unknown_target\"} 2".to_owned(),
        "quiver_ingest_entities_deleted_total{entity=\"user\"} 1".to_owned(),
        "quiver_ingest_freshness_seconds_count{view=\"user_activity\"}".to_owned(),
        "quiver_ingest_consumer_lag{".to_owned(),
    ] {
        assert!(
            exposition.contains(&line),
            "`{line}` missing from:\n{exposition}"
        );
    }

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
    assert_eq!(
        read_country(&store, &registry, 2).await,
        None,
        "the deleted user has no values left"
    );

    // The dead letters keep the original bytes and say why, where from, and for which view.
    let mut reasons = Vec::new();
    for message in quiver_testkit::read_topic(&dead_letter_topic, 8, WAIT) {
        let headers = headers(&message);
        let source = &headers["quiver.source.topic"];
        let payload = message.payload().unwrap();
        let original = if source == &topic {
            assert_eq!(headers["quiver.view"], "user_activity");
            assert_eq!(
                headers[TRACE_HEADER], TRACE,
                "the producer's own header is kept"
            );
            let reasons = message.headers().unwrap().iter();
            assert_eq!(
                reasons.filter(|h| h.key == "quiver.reason").count(),
                1,
                "one reason, this ingester's"
            );
            records.iter().any(|(_, sent)| sent.as_slice() == payload)
        } else if source == &upsert_topic {
            upserts.iter().any(|sent| sent.as_slice() == payload)
        } else {
            assert_eq!(source, &deletion_topic);
            deletions[1] == payload
        };
        assert!(original, "the dead letter carries the original bytes");
        assert!(!headers["quiver.detail"].is_empty());
        reasons.push(headers["quiver.reason"].clone());
    }
    reasons.sort();
    let mut expected: Vec<&str> = expected_reasons
        .iter()
        .flat_map(|(reason, count)| vec![*reason; *count as usize])
        .collect();
    expected.sort();
    assert_eq!(reasons, expected);

    // The deletion is announced for serving caches, keyed by the entity key.
    let announced = quiver_testkit::read_topic(&invalidation_topic, 1, WAIT);
    assert_eq!(announced[0].key(), Some(&b"2"[..]));
    let deleted_schema = Schema::parse_str(ENTITY_DELETED_AVSC).unwrap();
    let announcement =
        apache_avro::from_avro_datum(&deleted_schema, &mut announced[0].payload().unwrap(), None)
            .expect("a bare entity_deleted datum");
    let Avro::Record(fields) = announcement else {
        panic!("a record")
    };
    assert_eq!(
        fields[0],
        ("entity".to_owned(), Avro::String("user".into()))
    );
}

#[tokio::test]
async fn a_producer_moving_to_a_v2_schema_mid_stream_keeps_working() {
    let topic = quiver_testkit::create_topic("ingest_evolve", PARTITIONS).await;
    let dead_letter_topic = quiver_testkit::create_topic("ingest_evolve_dlq", 1).await;
    let (store, registry) = applied(&topic, |_| {}).await;

    // v2 adds a field with a default, before `country`, so field positions shift too.
    let v1 = events::match_event_schema();
    let v1_text = match_event_avsc();
    let v2_text = v1_text.replacen(
        r#"{"name": "country""#,
        r#"{"name": "referrer", "type": "string", "default": "none"}, {"name": "country""#,
        1,
    );
    assert_ne!(v1_text, v2_text, "the schema changed");
    let v2 = Schema::parse_str(&v2_text).expect("v2 parses");
    let as_v2 = |event: Avro| {
        let Avro::Record(mut fields) = event else {
            panic!("a record")
        };
        let at = fields.iter().position(|(n, _)| n == "country").unwrap();
        fields.insert(at, ("referrer".into(), Avro::String("push".into())));
        Avro::Record(fields).resolve(&v2).expect("fits v2")
    };
    // Events 0..10 with v1, then 10..20 with v2, with new countries from v2 on.
    let records: Vec<(Option<String>, Vec<u8>)> = (0..20)
        .map(|n| {
            let event = events::match_event(&v1, n);
            let payload = if n < 10 {
                wire::encode(SCHEMA_ID, &apache_avro::to_avro_datum(&v1, event).unwrap())
            } else {
                let event = with_field(event, "country", country("FI"));
                wire::encode(
                    V2_SCHEMA_ID,
                    &apache_avro::to_avro_datum(&v2, as_v2(event)).unwrap(),
                )
            };
            (Some((n % 5).to_string()), payload)
        })
        .collect();
    quiver_testkit::produce(&topic, &records).await;

    let group = quiver_testkit::unique_name("evolve_group");
    let writer_schemas = HashMap::from([(SCHEMA_ID, v1.clone()), (V2_SCHEMA_ID, v2)]);
    let config = config(&group, writer_schemas, &dead_letter_topic);
    let (summary, _) = ingest_all(&config, &registry, &store, &[(topic.clone(), PARTITIONS)]).await;

    assert_eq!(summary.dead_lettered, Default::default());
    assert_eq!(summary.rows_written, 20);
    for user in 0..5 {
        let newest = 15 + user;
        assert_eq!(
            read_country(&store, &registry, user).await,
            Some((
                Value::String("FI".into()),
                (1_790_000_000_000 + newest * 1_000) * 1_000
            )),
            "user {user} has the value of its newest event, written with v2"
        );
    }
}

#[tokio::test]
async fn a_hundred_thousand_shuffled_and_replayed_events_match_the_ground_truth() {
    const USERS: i64 = 1_000;
    const TOPIC_PARTITIONS: i32 = 4;
    let topic = quiver_testkit::create_topic("ingest_truth", TOPIC_PARTITIONS).await;
    let dead_letter_topic = quiver_testkit::create_topic("ingest_truth_dlq", 1).await;
    let (store, registry) = applied(&topic, |_| {}).await;

    let schema = events::match_event_schema();
    let stream = events::shuffled_stream(&schema, 100_000, USERS, 42);
    quiver_testkit::produce(&topic, &framed(&schema, &stream)).await;

    let group = quiver_testkit::unique_name("truth_group");
    let config = IngestConfig {
        batch_size: 500,
        batch_linger: Duration::from_millis(20),
        offline_log: None,
        ..config(
            &group,
            HashMap::from([(SCHEMA_ID, schema.clone())]),
            &dead_letter_topic,
        )
    };
    let (summary, _) = ingest_all(
        &config,
        &registry,
        &store,
        &[(topic.clone(), TOPIC_PARTITIONS)],
    )
    .await;
    assert_eq!(summary.records, stream.len() as u64);
    assert_eq!(summary.dead_lettered, Default::default());

    let truth = ground_truth(&stream);
    assert_eq!(truth.len(), USERS as usize, "every user has events");
    let wrong = differences(&store, &registry, &truth).await;
    assert!(
        wrong.is_empty(),
        "{} of {USERS} users differ from the ground truth, such as {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

#[tokio::test]
async fn a_second_ingester_joining_mid_stream_takes_partitions_without_loss() {
    const TOPIC_PARTITIONS: i32 = 4;
    let topic = quiver_testkit::create_topic("ingest_rebalance", TOPIC_PARTITIONS).await;
    let dead_letter_topic = quiver_testkit::create_topic("ingest_rebalance_dlq", 1).await;
    let (store, registry) = applied(&topic, |_| {}).await;
    let schema = events::match_event_schema();
    let stream = events::shuffled_stream(&schema, 40_000, 500, 3);
    let records = framed(&schema, &stream);
    let (early, late) = records.split_at(records.len() / 2);
    quiver_testkit::produce(&topic, early).await;

    let group = quiver_testkit::unique_name("rebalance_group");
    let config = IngestConfig {
        batch_size: 200,
        ..config(
            &group,
            HashMap::from([(SCHEMA_ID, schema.clone())]),
            &dead_letter_topic,
        )
    };
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let metrics = quiver_ingest::IngestMetrics::register(&mut metrics_registry);
    let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_second, second_stopped) = tokio::sync::oneshot::channel::<()>();
    let first = quiver_ingest::run(&config, common::fixed(&registry), &store, &metrics, async {
        let _ = first_stopped.await;
    });
    let second = async {
        // Join once the first member is well into the stream, forcing a rebalance mid-batch.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let written =
                common::view_counter(&metrics_registry, "quiver_ingest_rows_written_total");
            if written >= 2_000 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let joined =
            quiver_ingest::run(&config, common::fixed(&registry), &store, &metrics, async {
                let _ = second_stopped.await;
            });
        let check = async {
            // The rest arrives once the group has had time to rebalance, so both members
            // have records to read.
            tokio::time::sleep(Duration::from_secs(3)).await;
            quiver_testkit::produce(&topic, late).await;
            quiver_testkit::wait_until_committed(
                &group,
                &[(topic.clone(), TOPIC_PARTITIONS)],
                INGEST_WAIT,
            )
            .await;
            stop_first.send(()).expect("the first member runs");
            stop_second.send(()).expect("the second member runs");
        };
        tokio::join!(joined, check).0
    };
    let (first, second) = tokio::join!(first, second);
    let (first, second) = (first.expect("first ends"), second.expect("second ends"));
    assert!(second.records > 0, "the second member got partitions");
    assert!(
        first.records + second.records >= stream.len() as u64,
        "every record was read at least once"
    );

    let wrong = differences(&store, &registry, &ground_truth(&stream)).await;
    assert!(
        wrong.is_empty(),
        "{} users differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

#[tokio::test]
async fn a_view_applied_while_ingesting_is_picked_up_without_a_restart() {
    const PROFILE_SCHEMA_ID: u32 = 12;
    let topic = quiver_testkit::create_topic("ingest_live", 1).await;
    let profile_topic = quiver_testkit::create_topic("ingest_live_profiles", 1).await;
    let dead_letter_topic = quiver_testkit::create_topic("ingest_live_dlq", 1).await;
    let (store, registry) = applied(&topic, |_| {}).await;

    let profile_schema = Schema::parse_str(
        &std::fs::read_to_string(events::schema_path("user_profile_updated.avsc")).unwrap(),
    )
    .unwrap();
    let group = quiver_testkit::unique_name("live_group");
    let config = config(
        &group,
        HashMap::from([
            (SCHEMA_ID, events::match_event_schema()),
            (PROFILE_SCHEMA_ID, profile_schema.clone()),
        ]),
        &dead_letter_topic,
    );
    let (publish, watched) = tokio::sync::watch::channel(std::sync::Arc::new(registry.clone()));
    let metrics = quiver_ingest::IngestMetrics::register(&mut Default::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ingest = quiver_ingest::run(&config, watched, &store, &metrics, async {
        let _ = stopped.await;
    });
    let change = async {
        // Apply the examples' user_profile view too, reading a topic the ingester never heard
        // of, and publish the new registry as the registry watcher would.
        let mut definitions = contract::example_definitions();
        definitions.feature_services.clear();
        for view in &mut definitions.feature_views {
            view.ttl = None;
            view.source.topic = if view.name.as_str() == "user_activity" {
                topic.clone()
            } else {
                profile_topic.clone()
            };
        }
        let newer = apply(&store, &definitions, false)
            .await
            .expect("applies")
            .registry;
        publish.send(std::sync::Arc::new(newer)).unwrap();
        // A batch must pass for the ingester to look at the registry between batches.
        let event = events::match_event(&events::match_event_schema(), 0);
        let datum = apache_avro::to_avro_datum(&events::match_event_schema(), event).unwrap();
        quiver_testkit::produce(&topic, &[(None, wire::encode(SCHEMA_ID, &datum))]).await;

        let null = || Avro::Union(0, Box::new(Avro::Null));
        let profile = Avro::Record(vec![
            ("user_id".into(), Avro::Long(9)),
            (
                "updated_at".into(),
                Avro::TimestampMillis(1_790_000_000_000),
            ),
            ("country".into(), country("NZ")),
            ("birth_year".into(), null()),
            ("languages".into(), Avro::Array(vec![])),
            ("interests".into(), Avro::Array(vec![])),
            ("photo_count".into(), Avro::Int(0)),
            ("verified".into(), Avro::Boolean(false)),
            ("bio_embedding".into(), null()),
        ])
        .resolve(&profile_schema)
        .expect("fits the profile schema");
        let datum = apache_avro::to_avro_datum(&profile_schema, profile).unwrap();
        quiver_testkit::produce(
            &profile_topic,
            &[(None, wire::encode(PROFILE_SCHEMA_ID, &datum))],
        )
        .await;
        quiver_testkit::wait_until_committed(
            &group,
            &[(topic.clone(), 1), (profile_topic.clone(), 1)],
            WAIT,
        )
        .await;
        stop.send(()).expect("the ingester runs");
    };
    let (summary, ()) = tokio::join!(ingest, change);
    assert_eq!(summary.expect("ingests").rows_written, 2);
    let registry = quiver_core::store::OnlineStore::load_registry(&store)
        .await
        .unwrap()
        .expect("applied");
    let profile = registry
        .latest_view(&"user_profile".parse().unwrap())
        .unwrap();
    let stored = store
        .read_features(
            &registry.entities[0],
            profile,
            &["country".parse().unwrap()],
            &EntityKey::new(vec![KeyPart::Int64(9)]).unwrap(),
        )
        .await
        .unwrap()
        .remove(0)
        .map(|stored| stored.value);
    assert_eq!(stored, Some(Value::String("NZ".into())));
}

#[tokio::test]
async fn a_late_event_is_dead_lettered_and_the_others_are_aggregated() {
    let topic = quiver_testkit::create_topic("ingest_late", 1).await;
    let dead_letter_topic = quiver_testkit::create_topic("ingest_late_dlq", 1).await;
    let (store, registry) = applied(&topic, |definitions| {
        definitions.feature_views[0].allowed_lateness = Some(Seconds(600));
    })
    .await;
    let schema = events::match_event_schema();
    let minute = 60_000;
    let now_millis = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let start = now_millis() - 30 * minute;
    // Minutes after `start`: the third is 15 minutes behind the newest, the fourth 5.
    let minutes = [0, 20, 5, 15];
    let records: Vec<(Option<String>, Vec<u8>)> = minutes
        .iter()
        .enumerate()
        .map(|(n, after)| {
            let event = with_field(
                events::match_event(&schema, n as i64),
                "ts",
                Avro::TimestampMillis(start + after * minute),
            );
            let event = with_field(event, "user_id", Avro::Long(1));
            let datum = apache_avro::to_avro_datum(&schema, event).unwrap();
            (None, wire::encode(SCHEMA_ID, &datum))
        })
        .collect();
    quiver_testkit::produce(&topic, &records).await;

    let group = quiver_testkit::unique_name("ingest_late_group");
    let writer_schemas = HashMap::from([(SCHEMA_ID, schema.clone())]);
    let (summary, exposition) = ingest_all(
        &config(&group, writer_schemas, &dead_letter_topic),
        &registry,
        &store,
        &[(topic.clone(), 1)],
    )
    .await;
    assert_eq!(summary.dead_lettered.get("late_event"), Some(&1));
    let line = "quiver_ingest_dead_letters_total{view=\"user_activity\",reason=\"late_event\"} 1";
    assert!(
        exposition.contains(line),
        "`{line}` missing from:\n{exposition}"
    );

    let dead = quiver_testkit::read_topic(&dead_letter_topic, 1, WAIT);
    let headers = headers(&dead[0]);
    assert_eq!(headers["quiver.reason"], "late_event");
    assert!(
        headers["quiver.detail"].contains("900 s behind the newest event")
            && headers["quiver.detail"].contains("allows 10m"),
        "{}",
        headers["quiver.detail"]
    );
    assert_eq!(dead[0].payload(), Some(records[2].1.as_slice()));

    // The three others are counted, once each.
    let view = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    let tiles = store
        .read_tiles(
            &registry.entities[0],
            view,
            &EntityKey::new(vec![KeyPart::Int64(1)]).unwrap(),
            None,
        )
        .await
        .expect("reads tiles")
        .tiles;
    let now = now_millis() * 1_000;
    let mut counts = Vec::new();
    for (feature, aggregate) in aggregate_features(&view.view) {
        if matches!(aggregate.function, AggregateFunction::Count) {
            let value = evaluate(feature, aggregate, &tiles, now).map(|(value, _)| value);
            counts.push((feature.name.as_str(), value));
        }
    }
    let count = |n| Some(Value::Int64(n));
    assert_eq!(
        counts,
        [
            ("actions_1h", count(3)),
            ("actions_total", count(3)),
            // Of the three, event 0 is a like (the late event 2, a super like, is not counted).
            ("likes_1h", count(1)),
            ("long_chats_7d", count(0)),
            ("ranked_actions_24h", count(0)),
        ]
    );
}
