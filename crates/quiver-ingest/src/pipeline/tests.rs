//! The pipeline's rules on the embedded store, with records made in the test: no broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use quiver_core::aggregate::{EntityTiles, TileChanges, aggregate_feature, evaluate};
use quiver_core::apply::apply;
use quiver_core::definition::{Entity, FeatureView, Registry, Seconds, VersionedView};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::store::{
    EntityRow, FeatureStore, FeatureWrite, StoreError, StoreErrorKind, StoredValue,
};
use quiver_core::value::Value;
use quiver_embedded::EmbeddedStore;
use quiver_testkit::events::{match_event, match_event_schema, with_field};

use super::*;

const TOPIC: &str = "match-events";
const UPSERTS: &str = "upserts";
const DELETIONS: &str = "deletions";

/// A record as a test makes it: a bare Avro datum at a position of a partition.
#[derive(Debug, Clone)]
struct TestRecord {
    topic: &'static str,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

impl SourceRecord for TestRecord {
    fn record(&self) -> Record<'_> {
        Record {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            source: Cow::Owned(format!("{}/{}", self.topic, self.partition)),
            payload: Payload::Encoded(&self.payload),
        }
    }
}

/// What reached the sink: dead letters by offset, view and reason, and deleted keys.
#[derive(Debug, Default)]
struct Collected {
    dead_letters: Mutex<Vec<(i64, String, &'static str)>>,
    deleted: Mutex<Vec<(String, String)>>,
}

impl Sink<TestRecord> for Collected {
    async fn dead_letter(
        &self,
        record: &TestRecord,
        view: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), IngestError> {
        let mut dead_letters = self.dead_letters.lock().unwrap();
        dead_letters.push((record.offset, view.to_owned(), reason.reason));
        Ok(())
    }

    async fn deleted(&self, entity: &str, key: &str, _command: &[u8]) -> Result<(), IngestError> {
        let mut deleted = self.deleted.lock().unwrap();
        deleted.push((entity.to_owned(), key.to_owned()));
        Ok(())
    }
}

/// The examples' `user_activity` on an embedded store of its own, and the sample events.
struct Fixture<S> {
    _directory: tempfile::TempDir,
    store: S,
    registry: Arc<Registry>,
    schema: Schema,
    sink: Collected,
    metrics: IngestMetrics,
    /// Added to every event time, the same for every batch.
    shift_micros: i64,
}

/// The sample events are from 2026; this shift puts event 0 a minute before now, so that the
/// windows of the aggregates hold them. In whole milliseconds, as event times are.
fn shift_to_now() -> i64 {
    (now_micros() - 1_790_000_000_000_000 - 60_000_000).div_euclid(1_000) * 1_000
}

async fn fixture() -> Fixture<EmbeddedStore> {
    fixture_with(|_| {}).await
}

/// A fixture whose `user_activity` is changed by `change` before it is applied.
async fn fixture_with(change: impl FnOnce(&mut FeatureView)) -> Fixture<EmbeddedStore> {
    let directory = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&directory.path().join("quiver.redb")).unwrap();
    let mut definitions = quiver_testkit::contract::user_activity_on(TOPIC);
    change(&mut definitions.feature_views[0]);
    let registry = apply(&store, &definitions, false).await.unwrap().registry;
    Fixture {
        _directory: directory,
        store,
        registry: Arc::new(registry),
        schema: match_event_schema(),
        sink: Collected::default(),
        metrics: IngestMetrics::register(&mut Default::default()),
        shift_micros: shift_to_now(),
    }
}

impl<S: FeatureStore> Fixture<S> {
    fn event(&self, n: i64, offset: i64) -> TestRecord {
        self.record(TOPIC, offset, match_event(&self.schema, n))
    }

    fn record(&self, topic: &'static str, offset: i64, event: Avro) -> TestRecord {
        let schema = match topic {
            TOPIC => self.schema.clone(),
            UPSERTS => Schema::parse_str(quiver_avro::project::FEATURE_UPSERT_AVSC).unwrap(),
            _ => Schema::parse_str(quiver_avro::project::ENTITY_DELETED_AVSC).unwrap(),
        };
        TestRecord {
            topic,
            partition: 0,
            offset,
            payload: apache_avro::to_avro_datum(&schema, event).unwrap(),
        }
    }

    async fn inputs(&self) -> Inputs {
        Inputs::new(
            self.registry.clone(),
            None,
            Some(UPSERTS.to_owned()),
            Some(DELETIONS.to_owned()),
        )
        .await
        .unwrap()
    }

    /// Decodes and stores one batch as a driver does, with invalid records sent to the sink.
    async fn ingest(&self, batch: Vec<TestRecord>) -> Result<IngestSummary, IngestError> {
        let rules = Rules {
            framing: &Framing::Plain,
            stop_on_invalid: false,
            event_time_shift_micros: self.shift_micros,
            keep_events: false,
        };
        let decoded = decode(
            batch,
            0,
            &self.inputs().await,
            &mut Watermarks::default(),
            &rules,
            &self.metrics,
        )?;
        store_batch(
            &decoded,
            &Outputs::new(&self.store, &self.sink, &self.metrics),
        )
        .await
    }

    fn view(&self) -> (Entity, VersionedView) {
        let view = self
            .registry
            .latest_view(&"user_activity".parse().unwrap())
            .unwrap()
            .clone();
        (self.registry.entities[0].clone(), view)
    }

    async fn row(&self, user: i64) -> EntityRow {
        let (entity, view) = self.view();
        self.store
            .read_entity(&entity, &view, &user_key(user))
            .await
            .unwrap()
    }

    /// The value of a field feature of `user`.
    async fn field(&self, user: i64, feature: &str) -> Option<Value> {
        let (entity, view) = self.view();
        let name: Name = feature.parse().unwrap();
        let mut values = self
            .store
            .read_features(&entity, &view, &[name], &user_key(user))
            .await
            .unwrap();
        values.pop().flatten().map(|stored| stored.value)
    }

    /// The value of an aggregate feature of `user` now.
    async fn aggregate(&self, user: i64, feature: &str) -> Option<Value> {
        let (_, view) = self.view();
        let row = self.row(user).await;
        let (feature, aggregate) =
            aggregate_feature(&view.view, &feature.parse().unwrap()).unwrap();
        evaluate(feature, aggregate, &row.tiles.tiles, now_micros()).map(|(value, _)| value)
    }
}

/// A counter of `user_activity`.
fn of_the_view(family: &Family<ViewLabels, Counter>) -> u64 {
    family
        .get_or_create(&ViewLabels {
            view: "user_activity".into(),
        })
        .get()
}

fn user_key(user: i64) -> EntityKey {
    EntityKey::new(vec![KeyPart::Int64(user)]).unwrap()
}

fn action(schema: &Schema, n: i64, symbol: &str) -> Avro {
    let Schema::Record(record) = schema else {
        panic!("a record schema")
    };
    let field = &record.fields[record.lookup["action"]];
    let Schema::Enum(symbols) = &field.schema else {
        panic!("action is an enum")
    };
    let index = symbols.symbols.iter().position(|s| s == symbol).unwrap();
    with_field(
        match_event(schema, n),
        "action",
        Avro::Enum(index as u32, symbol.to_owned()),
    )
}

#[tokio::test]
async fn a_record_feeds_the_features_and_aggregates_of_its_view() {
    let fixture = fixture().await;
    // Events 0 and 5 are user 0's, 5 the newer.
    let summary = fixture
        .ingest(vec![fixture.event(0, 0), fixture.event(5, 1)])
        .await
        .unwrap();
    assert_eq!(summary.rows_written, 2);
    assert_eq!(
        fixture.field(0, "last_action").await,
        Some(Value::String("CHAT".into())),
        "the newer event's action: event 5 is the sixth action, CHAT"
    );
    assert_eq!(
        fixture.field(0, "last_country").await,
        Some(Value::String("SE".into()))
    );
    assert_eq!(
        fixture.aggregate(0, "actions_total").await,
        Some(Value::Int64(2))
    );
    assert_eq!(
        fixture.aggregate(0, "chat_seconds_24h").await,
        Some(Value::Float64(7.5)),
        "0 s and 7.5 s of chat"
    );
    assert_eq!(
        fixture.field(1, "last_action").await,
        None,
        "user 1 had none"
    );
}

#[tokio::test]
async fn a_filter_picks_the_events_an_aggregate_counts_and_a_field_keeps() {
    let fixture = fixture().await;
    let schema = &fixture.schema;
    let batch = vec![
        fixture.record(TOPIC, 0, action(schema, 0, "LIKE")),
        fixture.record(TOPIC, 1, action(schema, 5, "PASS")),
        fixture.record(TOPIC, 2, action(schema, 10, "LIKE")),
        fixture.record(TOPIC, 3, action(schema, 15, "PASS")),
    ];
    fixture.ingest(batch).await.unwrap();
    assert_eq!(
        fixture.aggregate(0, "likes_1h").await,
        Some(Value::Int64(2))
    );
    assert_eq!(
        fixture.aggregate(0, "actions_1h").await,
        Some(Value::Int64(4))
    );
    assert_eq!(
        fixture.field(0, "last_liked_candidate").await,
        Some(Value::Int64(1_010)),
        "the candidate of the newest like (event 10), not of the newer pass"
    );
}

#[tokio::test]
async fn a_resent_event_changes_no_aggregate_and_a_replayed_batch_none_either() {
    let fixture = fixture().await;
    let first = vec![fixture.event(0, 0), fixture.event(5, 1)];
    fixture.ingest(first.clone()).await.unwrap();
    // The producer resends event 0 much later; then the first batch is replayed whole, as
    // after a crash before its commit.
    fixture.ingest(vec![fixture.event(0, 40)]).await.unwrap();
    fixture.ingest(first).await.unwrap();
    assert_eq!(
        fixture.aggregate(0, "actions_total").await,
        Some(Value::Int64(2))
    );
    assert_eq!(
        fixture.aggregate(0, "recent_candidates").await,
        Some(Value::Int64List(vec![1_005, 1_000]))
    );
    assert_eq!(
        of_the_view(&fixture.metrics.duplicate_events),
        1,
        "the resent copy, not the replays"
    );
}

/// Events 0 (a LIKE from SE) and 5 (a CHAT from NO) of user 0, both at event 0's millisecond:
/// event 5 has the greater event id.
fn tied_events<S: FeatureStore>(fixture: &Fixture<S>) -> [TestRecord; 2] {
    let at_event_0 = |n| {
        let event = match_event(&fixture.schema, n);
        let ts = match_event(&fixture.schema, 0);
        let Avro::Record(fields) = ts else {
            panic!("a record")
        };
        let (_, ts) = fields.into_iter().find(|(name, _)| name == "ts").unwrap();
        with_field(event, "ts", ts)
    };
    let country = |event, code: &str| {
        with_field(
            event,
            "country",
            Avro::Union(1, Box::new(Avro::String(code.into()))),
        )
    };
    [
        fixture.record(TOPIC, 0, country(at_event_0(0), "SE")),
        fixture.record(TOPIC, 0, country(at_event_0(5), "NO")),
    ]
}

#[tokio::test]
async fn events_at_one_millisecond_give_the_greater_event_id_every_feature_it_sets() {
    let arrivals: [(&str, &[&[usize]]); 4] = [
        ("smaller id first, one batch", &[&[0, 1]]),
        ("greater id first, one batch", &[&[1, 0]]),
        ("smaller id first, two batches", &[&[0], &[1]]),
        (
            "greater id first, two batches, then both resent",
            &[&[1], &[0], &[0, 1]],
        ),
    ];
    for (arrival, batches) in arrivals {
        let fixture = fixture().await;
        let tied = tied_events(&fixture);
        // Offsets grow in arrival order, as on a partition.
        let mut offset = 0..;
        for batch in batches.iter() {
            let records = batch
                .iter()
                .map(|index| TestRecord {
                    offset: offset.next().unwrap(),
                    ..tied[*index].clone()
                })
                .collect();
            fixture.ingest(records).await.unwrap();
        }
        let fields = [
            fixture.field(0, "last_action").await,
            fixture.field(0, "last_country").await,
            fixture.field(0, "last_liked_candidate").await,
        ];
        let expected = [
            Some(Value::String("CHAT".into())),
            Some(Value::String("NO".into())),
            // Only event 0 is a LIKE: the only event that sets it.
            Some(Value::Int64(1_000)),
        ];
        assert_eq!(fields, expected, "{arrival}");
        assert_eq!(
            fixture.aggregate(0, "recent_candidates").await,
            Some(Value::Int64List(vec![1_005, 1_000])),
            "{arrival}: last_k orders the tie the same way"
        );
        assert_eq!(
            of_the_view(&fixture.metrics.tied_events),
            1,
            "{arrival}: one event met an earlier one; the copies are remembered"
        );
        let row = fixture.row(0).await;
        let (_, view) = fixture.view();
        let event_time = |feature| {
            let position = quiver_core::read::stored_features(&view)
                .iter()
                .position(|name| name.as_str() == feature)
                .unwrap();
            row.values[position].as_ref().unwrap().event_time_micros
        };
        assert_eq!(
            event_time("last_action") / 1_000,
            event_time("last_liked_candidate") / 1_000,
            "{arrival}: both are served at the events' millisecond"
        );
    }
}

#[tokio::test]
async fn a_record_that_cannot_be_used_goes_to_the_sink_with_its_reason_and_stores_nothing() {
    let fixture = fixture().await;
    let mut garbage = fixture.event(0, 0);
    garbage.payload.truncate(5);
    let bad_upsert = TestRecord {
        topic: UPSERTS,
        partition: 0,
        offset: 1,
        payload: vec![0xff; 3],
    };
    let summary = fixture
        .ingest(vec![garbage, bad_upsert, fixture.event(6, 2)])
        .await
        .unwrap();
    assert_eq!(
        *fixture.sink.dead_letters.lock().unwrap(),
        vec![
            (0, "user_activity".to_owned(), "undecodable"),
            (1, String::new(), "undecodable"),
        ]
    );
    assert_eq!(summary.dead_lettered.get("undecodable"), Some(&2));
    assert_eq!(fixture.field(0, "last_action").await, None);
    assert_eq!(
        fixture.row(0).await.tiles.tiles,
        Vec::new(),
        "no tile counts it"
    );
    assert!(
        fixture.field(1, "last_action").await.is_some(),
        "the good record after them is stored"
    );
}

#[tokio::test]
async fn an_event_later_than_the_view_allows_is_dead_lettered_and_the_others_counted() {
    let fixture = fixture_with(|view| view.allowed_lateness = Some(Seconds(600))).await;
    // Event 1000 is 1,000 s after event 0 and 500 s after event 500.
    let batch = vec![
        fixture.event(1_000, 0),
        fixture.event(0, 1),
        fixture.event(500, 2),
    ];
    let summary = fixture.ingest(batch).await.unwrap();
    assert_eq!(
        *fixture.sink.dead_letters.lock().unwrap(),
        vec![(1, "user_activity".to_owned(), "late_event")]
    );
    assert_eq!(summary.dead_lettered.get("late_event"), Some(&1));
    assert_eq!(
        fixture.aggregate(0, "actions_total").await,
        Some(Value::Int64(2))
    );
}

#[tokio::test]
async fn stopping_on_an_invalid_record_names_where_it_is() {
    let fixture = fixture().await;
    let mut garbage = fixture.event(0, 3);
    garbage.partition = 2;
    garbage.payload.clear();
    let rules = Rules {
        framing: &Framing::Plain,
        stop_on_invalid: true,
        event_time_shift_micros: 0,
        keep_events: false,
    };
    let error = decode(
        vec![fixture.event(1, 2), garbage],
        0,
        &fixture.inputs().await,
        &mut Watermarks::default(),
        &rules,
        &fixture.metrics,
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("invalid record at match-events/2@3 (undecodable: "),
        "{message}"
    );
}

#[tokio::test]
async fn an_upsert_command_writes_the_view_it_names() {
    let fixture = fixture().await;
    let command = Avro::Record(vec![
        ("feature_view".into(), Avro::String("user_activity".into())),
        (
            "keys".into(),
            Avro::Map(HashMap::from([(
                "user_id".to_owned(),
                Avro::Union(0, Box::new(Avro::Long(3))),
            )])),
        ),
        (
            "values".into(),
            Avro::Map(HashMap::from([(
                "last_country".to_owned(),
                Avro::Union(6, Box::new(Avro::String("NO".into()))),
            )])),
        ),
        ("event_time".into(), Avro::TimestampMicros(now_micros())),
    ]);
    let summary = fixture
        .ingest(vec![fixture.record(UPSERTS, 0, command)])
        .await
        .unwrap();
    assert_eq!(summary.rows_written, 1);
    assert_eq!(
        fixture.field(3, "last_country").await,
        Some(Value::String("NO".into()))
    );
}

#[tokio::test]
async fn a_deletion_command_removes_the_entity_and_is_announced() {
    let fixture = fixture().await;
    fixture
        .ingest(vec![fixture.event(2, 0), fixture.event(3, 1)])
        .await
        .unwrap();
    let command = Avro::Record(vec![
        ("entity".into(), Avro::String("user".into())),
        (
            "keys".into(),
            Avro::Map(HashMap::from([(
                "user_id".to_owned(),
                Avro::Union(0, Box::new(Avro::Long(2))),
            )])),
        ),
        ("event_time".into(), Avro::TimestampMicros(now_micros())),
    ]);
    let summary = fixture
        .ingest(vec![fixture.record(DELETIONS, 0, command)])
        .await
        .unwrap();
    assert_eq!(summary.entities_deleted, 1);
    assert_eq!(
        *fixture.sink.deleted.lock().unwrap(),
        vec![("user".to_owned(), "2".to_owned())]
    );
    assert_eq!(fixture.field(2, "last_action").await, None);
    assert_eq!(fixture.row(2).await.tiles.tiles, Vec::new());
    assert!(
        fixture.field(3, "last_action").await.is_some(),
        "user 3 stays"
    );
}

/// The embedded store, answering `Unavailable` to the first writes of values and tiles.
struct Flaky {
    store: EmbeddedStore,
    failures_left: AtomicU32,
}

impl Flaky {
    fn fail(&self) -> Result<(), StoreError> {
        let left = self.failures_left.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        self.failures_left.store(left - 1, Ordering::SeqCst);
        Err(StoreError::new(StoreErrorKind::Unavailable, "node down"))
    }
}

impl FeatureStore for Flaky {
    async fn write_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> Result<(), StoreError> {
        self.fail()?;
        self.store.write_features(entity, view, writes).await
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
        self.fail()?;
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

#[tokio::test]
async fn writes_are_retried_while_the_store_is_unavailable() {
    let Fixture {
        _directory,
        store,
        registry,
        schema,
        sink,
        metrics,
        shift_micros,
    } = fixture().await;
    let fixture = Fixture {
        _directory,
        store: Flaky {
            store,
            failures_left: AtomicU32::new(3),
        },
        registry,
        schema,
        sink,
        metrics,
        shift_micros,
    };
    let summary = fixture
        .ingest(vec![fixture.event(4, 0), fixture.event(9, 1)])
        .await
        .unwrap();
    assert_eq!(summary.rows_written, 2);
    assert_eq!(
        fixture.field(4, "last_action").await,
        Some(Value::String("MATCH".into())),
        "event 9's, the fourth action"
    );
    assert_eq!(
        fixture.aggregate(4, "actions_total").await,
        Some(Value::Int64(2))
    );
    assert_eq!(
        of_the_view(&fixture.metrics.write_retries),
        3,
        "two row writes and one tile write failed first"
    );
}
