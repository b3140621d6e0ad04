//! A deletion holds for aggregates on both stores, through the real Kafka: events older than a
//! deletion that arrive after it are not counted again, and newer ones start the aggregates
//! afresh.

mod common;

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use quiver_avro::project::ENTITY_DELETED_AVSC;
use quiver_avro::wire;
use quiver_core::aggregate::{EntityTiles, aggregate_features, evaluate};
use quiver_core::apply::apply;
use quiver_core::definition::Registry;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::FeatureStore;
use quiver_core::value::Value;
use quiver_embedded::EmbeddedStore;
use quiver_ingest::IngestConfig;
use quiver_testkit::contract;
use quiver_testkit::events::{self, with_field};

use common::{SCHEMA_ID, applied, config, ingest_all};

const DELETION_SCHEMA_ID: u32 = 9;
const MINUTE_MILLIS: i64 = 60_000;
const DELETED_USER: i64 = 43;
const OTHER_USER: i64 = 44;

#[tokio::test]
async fn on_cassandra_older_events_arriving_after_a_deletion_stay_deleted() {
    let topic = quiver_testkit::create_topic("deleted_aggregates", 1).await;
    let (store, registry) = applied(&topic, |_| {}).await;
    older_events_arriving_after_a_deletion_stay_deleted(&store, &registry, &topic).await;
}

#[tokio::test]
async fn on_the_embedded_store_older_events_arriving_after_a_deletion_stay_deleted() {
    let topic = quiver_testkit::create_topic("deleted_aggregates_embedded", 1).await;
    let folder = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&folder.path().join("quiver.redb")).unwrap();
    let registry = apply(&store, &contract::user_activity_on(&topic), false)
        .await
        .expect("applies")
        .registry;
    older_events_arriving_after_a_deletion_stay_deleted(&store, &registry, &topic).await;
}

/// An event of `user` at `millis` on `candidate`, Confluent-framed; the candidate makes its
/// event id, so a user's events on different candidates are different events.
fn event(schema: &Schema, user: i64, millis: i64, candidate: i64) -> (Option<String>, Vec<u8>) {
    let event = with_field(
        events::match_event(schema, candidate),
        "ts",
        Avro::Long(millis),
    );
    let event = with_field(event, "user_id", Avro::Long(user));
    let event = with_field(event, "candidate_id", Avro::Long(candidate));
    let datum = apache_avro::to_avro_datum(schema, event.resolve(schema).unwrap()).unwrap();
    (Some(user.to_string()), wire::encode(SCHEMA_ID, &datum))
}

fn deletion(user: i64, micros: i64) -> (Option<String>, Vec<u8>) {
    let schema = Schema::parse_str(ENTITY_DELETED_AVSC).unwrap();
    let keys = Avro::Map(HashMap::from([("user_id".to_owned(), Avro::Long(user))]));
    let command = Avro::Record(vec![
        ("entity".into(), Avro::String("user".into())),
        ("keys".into(), keys),
        ("event_time".into(), Avro::TimestampMicros(micros)),
    ])
    .resolve(&schema)
    .unwrap();
    let datum = apache_avro::to_avro_datum(&schema, command).unwrap();
    (None, wire::encode(DELETION_SCHEMA_ID, &datum))
}

async fn tiles_of(store: &impl FeatureStore, registry: &Registry, user: i64) -> EntityTiles {
    let view = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    let key = EntityKey::new(vec![KeyPart::Int64(user)]).unwrap();
    store
        .read_tiles(&registry.entities[0], view, &key, None)
        .await
        .expect("reads tiles")
}

/// What serving answers for `feature` of `user` now, from the stored tiles.
async fn served(
    store: &impl FeatureStore,
    registry: &Registry,
    user: i64,
    feature: &str,
    now_micros: i64,
) -> Option<Value> {
    let view = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    let tiles = tiles_of(store, registry, user).await.tiles;
    let (feature, aggregate) = aggregate_features(&view.view)
        .into_iter()
        .find(|(candidate, _)| candidate.name.as_str() == feature)
        .expect("the view has the aggregate");
    evaluate(feature, aggregate, &tiles, now_micros).map(|(value, _)| value)
}

async fn older_events_arriving_after_a_deletion_stay_deleted(
    store: &impl FeatureStore,
    registry: &Registry,
    topic: &str,
) {
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let now_micros = now_millis * 1_000;
    let deleted_at = now_millis - 10 * MINUTE_MILLIS;
    let schema = events::match_event_schema();
    let deletion_topic = quiver_testkit::create_topic("deleted_aggregates_commands", 1).await;
    let dead_letters = quiver_testkit::create_topic("deleted_aggregates_dlq", 1).await;
    let group = quiver_testkit::unique_name("deleted_aggregates_group");
    let writer_schemas = HashMap::from([
        (SCHEMA_ID, schema.clone()),
        (
            DELETION_SCHEMA_ID,
            Schema::parse_str(ENTITY_DELETED_AVSC).unwrap(),
        ),
    ]);
    let config = IngestConfig {
        deletion_topic: Some(deletion_topic.clone()),
        ..config(&group, writer_schemas, &dead_letters)
    };
    // An empty topic is never committed to: each run waits for the topics it has records of.
    let (events_only, both) = (
        [(topic.to_owned(), 1)],
        [(topic.to_owned(), 1), (deletion_topic.clone(), 1)],
    );
    let count = |user| served(store, registry, user, "actions_total", now_micros);

    // Two events of user 43 before the deletion are counted; then the deletion removes them.
    let before = [
        event(&schema, DELETED_USER, deleted_at - 30 * MINUTE_MILLIS, 1),
        event(&schema, DELETED_USER, deleted_at - 20 * MINUTE_MILLIS, 2),
    ];
    quiver_testkit::produce(topic, &before).await;
    ingest_all(&config, registry, store, &events_only).await;
    assert_eq!(count(DELETED_USER).await, Some(Value::Int64(2)));
    quiver_testkit::produce(
        &deletion_topic,
        &[deletion(DELETED_USER, deleted_at * 1_000)],
    )
    .await;
    ingest_all(&config, registry, store, &both).await;
    let deleted = tiles_of(store, registry, DELETED_USER).await;
    assert!(deleted.tiles.is_empty(), "the deletion removed the tiles");
    assert_eq!(count(DELETED_USER).await, Some(Value::Int64(0)));

    // A delayed event from a minute before the deletion arrives, then a newer one.
    let after = [
        event(&schema, DELETED_USER, deleted_at - MINUTE_MILLIS, 3),
        event(&schema, OTHER_USER, deleted_at - MINUTE_MILLIS, 3),
        event(&schema, DELETED_USER, deleted_at + 5 * MINUTE_MILLIS, 4),
    ];
    quiver_testkit::produce(topic, &after).await;
    ingest_all(&config, registry, store, &both).await;

    for feature in ["actions_total", "actions_1h"] {
        assert_eq!(
            served(store, registry, DELETED_USER, feature, now_micros).await,
            Some(Value::Int64(1)),
            "{feature} counts only the event newer than the deletion"
        );
    }
    assert_eq!(
        served(
            store,
            registry,
            DELETED_USER,
            "recent_candidates",
            now_micros
        )
        .await,
        Some(Value::Int64List(vec![4])),
    );
    let stored = tiles_of(store, registry, DELETED_USER).await;
    assert_eq!(stored.deleted_through_micros, Some(deleted_at * 1_000));
    assert!(
        stored
            .tiles
            .iter()
            .all(|tile| tile.newest_event_micros > deleted_at * 1_000),
        "no tile holds an event from before the deletion: {:#?}",
        stored.tiles
    );
    assert_eq!(
        count(OTHER_USER).await,
        Some(Value::Int64(1)),
        "another user's event of the same time counts"
    );
}
